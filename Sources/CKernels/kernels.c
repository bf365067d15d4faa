// The public kernel entry points (ckernels.h): each runs the body of the calling thread's ISA tier (isa.c), one
// file per kernel family and tier (portable/, x86/, arm/). Q5_0/Q5_1 and the K-quants dispatch in quants_k.c,
// the packed layout in packed.c, the flash-paging bundles in bundles.c.
#include "kernels_internal.h"
#include "quants_k.h"

void pl_dequantize_row(int type, const void *src, float *dst, int64_t n) {
    if (pl_kq_owns(type)) { pl_kq_dequantize_row(type, src, dst, n); return; }   // Q5_x and K-quants: quants_k.c
#if defined(__x86_64__)
    if (pl_tier_avx512()) { pl_avx512_dequant(type, src, dst, n); return; }
    if (pl_tier_avx2()) { pl_avx2_dequant(type, src, dst, n); return; }
#endif
    pl_portable_dequant(type, src, dst, n);
}

void pl_dequantize_rows(int type, const void *w, size_t row_bytes, float *dst,
                        int64_t n, int64_t r0, int64_t r1) {
    const uint8_t *base = (const uint8_t *)w;
    for (int64_t r = r0; r < r1; r++) pl_dequantize_row(type, base + (size_t)r * row_bytes, dst + (r - r0) * n, n);
}

void pl_matvec(int type, const void *w, size_t row_bytes, const float *x, float *y,
               int64_t n, int64_t r0, int64_t r1) {
#if defined(__x86_64__)
    if (pl_tier_avx512()) { pl_avx512_matvec(type, (const uint8_t *)w, row_bytes, x, y, n, r0, r1); return; }
    if (pl_tier_avx2()) { pl_avx2_matvec(type, (const uint8_t *)w, row_bytes, x, y, n, r0, r1); return; }
#elif defined(__aarch64__)
    if (pl_tier_neon()) { pl_neon_matvec(type, (const uint8_t *)w, row_bytes, x, y, n, r0, r1); return; }
#endif
    pl_portable_matvec(type, (const uint8_t *)w, row_bytes, x, y, n, r0, r1);
}

void pl_matmul_float_few(int type, const void *w, size_t row_bytes, const float *x, int64_t ldx, int64_t n_tokens,
                         float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
#if defined(__x86_64__)
    if (pl_tier_avx512() && (type == PL_TYPE_F32 || type == PL_TYPE_F16 || type == PL_TYPE_BF16)) {
        pl_avx512_matmul_float_few(type, (const uint8_t *)w, row_bytes, x, ldx, n_tokens, y, ldy, n, r0, r1);
        return;
    }
#endif
    for (int64_t t = 0; t < n_tokens; t++) pl_matvec(type, w, row_bytes, x + t * ldx, y + t * ldy + r0, n, r0, r1);
}

int pl_gemm_f32_supported(void) { return pl_tier_avx512(); }

void pl_gemm_f32(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw, int64_t K, float *y,
                 int64_t ldy, int64_t r0, int64_t r1, float *panel) {
#if defined(__x86_64__)
    if (pl_tier_avx512()) { pl_avx512_gemm_f32(x, ldx, n_tokens, w, ldw, K, y, ldy, r0, r1, panel); return; }
#endif
    (void)panel;
    pl_portable_gemm_f32(x, ldx, n_tokens, w, ldw, K, y, ldy, r0, r1);
}

int pl_activation_type(int weight_type) {
    switch (weight_type) {
    case PL_TYPE_Q8_0: case PL_TYPE_Q4_0: case PL_TYPE_Q5_0: return PL_TYPE_Q8_0;
    case PL_TYPE_Q4_1: case PL_TYPE_Q5_1: return PL_TYPE_Q8_1;
    case PL_TYPE_Q2_K: case PL_TYPE_Q3_K: case PL_TYPE_Q4_K: case PL_TYPE_Q5_K: case PL_TYPE_Q6_K: return PL_TYPE_Q8_K;
    default: return -1;
    }
}

static void quantize_q8(const float *x, void *out, int64_t n, int with_sum) {
#if defined(__x86_64__)
    if (pl_tier_avx512()) { pl_avx512_quantize_q8(x, (uint8_t *)out, n, with_sum); return; }
    if (pl_tier_avx2()) { pl_avx2_quantize_q8(x, (uint8_t *)out, n, with_sum); return; }
#elif defined(__aarch64__)
    if (pl_tier_neon()) { pl_neon_quantize_q8(x, (uint8_t *)out, n, with_sum); return; }
#endif
    pl_portable_quantize_q8(x, (uint8_t *)out, n, with_sum);
}

void pl_quantize_q8_0(const float *x, void *out, int64_t n) { quantize_q8(x, out, n, 0); }
void pl_quantize_q8_1(const float *x, void *out, int64_t n) { quantize_q8(x, out, n, 1); }

void pl_matmul_q(int type, const void *w, size_t row_bytes, const void *xq, size_t xq_stride, int64_t n_tokens,
                 float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    const uint8_t *base = (const uint8_t *)w;
    const uint8_t *x = (const uint8_t *)xq;
    if (pl_kq_owns(type)) { pl_kq_matmul(type, base, row_bytes, x, xq_stride, n_tokens, y, ldy, n, r0, r1); return; }
#if defined(__x86_64__)
    int tier = pl_isa();
    unsigned features = pl_isa_features();
    if (tier == PL_ISA_AVX512 && (features & PL_FEATURE_AVX512_VNNI)) {
        pl_avx512_matmul_q(type, base, row_bytes, x, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
        return;
    }
    if (tier == PL_ISA_AVX2 || tier == PL_ISA_AVX512) {   // AVX-512 without VNNI runs the AVX2 body
        if (n_tokens >= PL_AVX2_BATCH_MIN && pl_avx2_batch_owns(type)) {
            if (features & PL_FEATURE_AVX_VNNI) pl_avxvnni_matmul_batch(type, base, row_bytes, x, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
            else pl_avx2_matmul_batch(type, base, row_bytes, x, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
            return;
        }
        if (features & PL_FEATURE_AVX_VNNI) pl_avxvnni_matmul_q(type, base, row_bytes, x, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
        else pl_avx2_matmul_q(type, base, row_bytes, x, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
        return;
    }
#elif defined(__aarch64__)
    if (pl_tier_neon()) {
        if (pl_isa_features() & PL_FEATURE_DOTPROD) pl_neon_dotprod_matmul_q(type, base, row_bytes, x, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
        else pl_neon_matmul_q(type, base, row_bytes, x, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
        return;
    }
#endif
    pl_portable_matmul_q(type, base, row_bytes, x, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
}

void pl_matvec_q(int type, const void *w, size_t row_bytes, const void *xq, float *y,
                 int64_t n, int64_t r0, int64_t r1) {
    // y holds rows r0 ..< r1 only: shift it so matmul's y[r] lands at y[r - r0].
    pl_matmul_q(type, w, row_bytes, xq, 0, 1, y - r0, 0, n, r0, r1);
}

void pl_f32_to_f16_row(const float *x, uint16_t *out, int64_t n) {
#if defined(__x86_64__)
    if (pl_tier_avx512()) { pl_avx512_f32_to_f16(x, out, n); return; }
    if (pl_tier_avx2()) { pl_avx2_f32_to_f16(x, out, n); return; }
#elif defined(__aarch64__)
    if (pl_tier_neon()) { pl_neon_f32_to_f16(x, out, n); return; }
#endif
    pl_portable_f32_to_f16(x, out, n);
}

void pl_expf_row(const float *x, float *y, int64_t n) {
#if defined(__x86_64__)
    if (pl_tier_avx512()) { pl_avx512_expf(x, y, n); return; }
    if (pl_tier_avx2()) { pl_avx2_expf(x, y, n); return; }
#elif defined(__aarch64__)
    if (pl_tier_neon()) { pl_neon_expf(x, y, n); return; }
#endif
    pl_portable_expf(x, y, n);
}

void pl_swiglu(float *g, const float *u, int64_t n) {
#if defined(__x86_64__)
    if (pl_tier_avx512()) { pl_avx512_swiglu(g, u, n); return; }
    if (pl_tier_avx2()) { pl_avx2_swiglu(g, u, n); return; }
#elif defined(__aarch64__)
    if (pl_tier_neon()) { pl_neon_swiglu(g, u, n); return; }
#endif
    pl_portable_swiglu(g, u, n);
}

void pl_geglu_table(float *g, const float *u, const float *table, int64_t n) {
#if defined(__x86_64__)
    if (pl_tier_avx512()) { pl_avx512_geglu_table(g, u, table, n); return; }
#endif
    pl_portable_geglu_table(g, u, table, n);
}

int64_t pl_argmax(const float *x, int64_t n) {
#if defined(__x86_64__)
    if (pl_tier_avx512()) return pl_avx512_argmax(x, n);
    if (pl_tier_avx2()) return pl_avx2_argmax(x, n);
#endif
    return pl_portable_argmax(x, n);
}

void pl_attention_group_f16(const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v, int64_t stride,
                            int64_t n_ctx, int64_t head_dim, float scale, float *scores, float *out) {
#if defined(__x86_64__)
    if (pl_tier_avx512() && head_dim == 64) {
        for (int64_t g0 = 0; g0 < n_heads; g0 += 4) {
            int64_t m = n_heads - g0 < 4 ? n_heads - g0 : 4;
            pl_avx512_attention_group(q + g0 * head_dim, m, k, v, stride, n_ctx, scale, scores, out + g0 * head_dim);
        }
        return;
    }
    // Wider heads (Qwen2.5's 128, Gemma 3's 256): a tile of one query, up to PL_ATTENTION_TILE_PAIRS heads sharing
    // each K and V row (the tile gives pl_attention_f16's bits per head).
    if (pl_tier_avx512() && (head_dim == 128 || head_dim == 256)) {
        for (int64_t g0 = 0; g0 < n_heads; g0 += PL_ATTENTION_TILE_PAIRS) {
            int64_t m = n_heads - g0 < PL_ATTENTION_TILE_PAIRS ? n_heads - g0 : PL_ATTENTION_TILE_PAIRS;
            pl_avx512_attention_tile(q + g0 * head_dim, 0, 1, m, k, v, stride, n_ctx, head_dim, scale, scores,
                                     out + g0 * head_dim, 0);
        }
        return;
    }
    // The AVX2 tile as a tile of one query: each K and V row converted once for the group's heads, 8 rows' dot
    // products reduced together; each head's output the one-query kernel's bits (1.26-1.40x less CPU time than a
    // pass per head for SmolLM2's 3-head groups at depths 64-512, AMD EPYC Zen 4).
    if (pl_tier_avx2() && head_dim == 64 && n_heads <= PL_ATTENTION_TILE_PAIRS) {
        pl_avx2_attention_tile(q, head_dim * n_heads, 1, n_heads, k, v, stride, n_ctx, scale, scores, out, head_dim * n_heads);
        return;
    }
#endif
    for (int64_t g = 0; g < n_heads; g++)
        pl_attention_f16(q + g * head_dim, k, v, stride, n_ctx, head_dim, scale, scores, out + g * head_dim);
}

void pl_attention_tile_f16(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads, const uint16_t *k,
                           const uint16_t *v, int64_t stride, int64_t n_ctx, int64_t head_dim, float scale,
                           float *scores, float *out, int64_t out_stride) {
    if (n_queries <= 0 || n_heads <= 0 || n_ctx <= 0) return;
#if defined(__x86_64__)
    if (pl_tier_avx512() && (head_dim == 64 || head_dim == 128 || head_dim == 256) &&
        n_queries * n_heads <= PL_ATTENTION_TILE_PAIRS) {
        pl_avx512_attention_tile(q, q_stride, n_queries, n_heads, k, v, stride, n_ctx, head_dim, scale, scores, out,
                                 out_stride);
        return;
    }
    if (pl_tier_avx2() && head_dim == 64 && n_queries * n_heads <= PL_ATTENTION_TILE_PAIRS) {
        pl_avx2_attention_tile(q, q_stride, n_queries, n_heads, k, v, stride, n_ctx, scale, scores, out, out_stride);
        return;
    }
#endif
    if (pl_isa() == PL_ISA_PORTABLE) {
        pl_portable_attention_tile(q, q_stride, n_queries, n_heads, k, v, stride, n_ctx, head_dim, scale, scores, out,
                                   out_stride);
        return;
    }
    // Other tiers: their one-query kernels, query by query.
    for (int64_t t = 0; t < n_queries; t++)
        pl_attention_group_f16(q + t * q_stride, n_heads, k, v, stride, n_ctx + t, head_dim, scale, scores,
                               out + t * out_stride);
}

int pl_attention_bf16_fast_body(void) {
#if defined(__x86_64__)
    return pl_tier_avx512() && (pl_isa_features() & PL_FEATURE_AVX512_BF16) != 0;
#else
    return 0;
#endif
}

void pl_attention_tile_bf16(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads, const uint16_t *k,
                            const uint16_t *v, int64_t stride, int64_t n_ctx, int64_t head_dim, float scale,
                            float *scores, float *out, int64_t out_stride) {
    if (n_queries <= 0 || n_heads <= 0 || n_ctx <= 0 || head_dim > 512) return;
#if defined(__x86_64__)
    if ((head_dim == 64 || head_dim == 128 || head_dim == 256) && n_queries * n_heads <= PL_ATTENTION_TILE_PAIRS &&
        pl_attention_bf16_fast_body()) {
        pl_avx512_attention_tile_bf16(q, q_stride, n_queries, n_heads, k, v, stride, n_ctx, head_dim, scale, scores, out,
                                      out_stride);
        return;
    }
#endif
    pl_portable_attention_tile_bf16(q, q_stride, n_queries, n_heads, k, v, stride, n_ctx, head_dim, scale, scores, out,
                                    out_stride);
}

void pl_attention_group_bf16(const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v, int64_t stride,
                             int64_t n_ctx, int64_t head_dim, float scale, float *scores, float *out) {
    // One query is a tile of one query; the tile body takes up to PL_ATTENTION_TILE_PAIRS heads at a time.
    for (int64_t g0 = 0; g0 < n_heads; g0 += PL_ATTENTION_TILE_PAIRS) {
        const int64_t m = n_heads - g0 < PL_ATTENTION_TILE_PAIRS ? n_heads - g0 : PL_ATTENTION_TILE_PAIRS;
        pl_attention_tile_bf16(q + g0 * head_dim, 0, 1, m, k, v, stride, n_ctx, head_dim, scale, scores, out + g0 * head_dim, 0);
    }
}

void pl_attention_f16(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                      int64_t head_dim, float scale, float *scores, float *out) {
#if defined(__x86_64__)
    if (pl_tier_avx512() && head_dim % 16 == 0 && head_dim <= 512) {
        pl_avx512_attention(q, k, v, stride, n_ctx, head_dim, scale, scores, out);
        return;
    }
    if (pl_tier_avx2() && head_dim % 32 == 0 && head_dim <= 512) {
        pl_avx2_attention(q, k, v, stride, n_ctx, head_dim, scale, scores, out);
        return;
    }
#elif defined(__aarch64__)
    if (pl_tier_neon() && head_dim % 16 == 0 && head_dim <= 512) {
        pl_neon_attention(q, k, v, stride, n_ctx, head_dim, scale, scores, out);
        return;
    }
#endif
    if (head_dim <= 512) pl_portable_attention(q, k, v, stride, n_ctx, head_dim, scale, scores, out);
}

void pl_cpu_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
