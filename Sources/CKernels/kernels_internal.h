#ifndef POCKETLM_KERNELS_INTERNAL_H
#define POCKETLM_KERNELS_INTERNAL_H
// Private interface between the public entry points (kernels.c: each picks the body of the thread's ISA tier, see
// isa.c) and the bodies, one file per kernel family and tier: portable/ (the reference every tier is tested
// against), x86/ (AVX-512, AVX2), arm/ (NEON).
#include "ckernels.h"
#include <string.h>

// Full unrolling of the small fixed-count loops over accumulators (rows of a tile, lanes, streams), so their arrays
// live in registers: clang does it at -O3 by itself, not at -O2 (SwiftPM's release level for C), and a kernel whose
// accumulators spill runs ~20% slower (the packed Q4_1 prefill measured here).
#if defined(__clang__)
#define PL_UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define PL_UNROLL _Pragma("GCC unroll 16")
#else
#define PL_UNROLL
#endif

static inline uint16_t load_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline void store_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/// The tier kernels run on the calling thread (pl_isa()), read once per call.
static inline int pl_tier_avx512(void) { return pl_isa() == PL_ISA_AVX512; }
/// The AVX2 tier (AVX2 + FMA + F16C).
static inline int pl_tier_avx2(void) { return pl_isa() == PL_ISA_AVX2; }
/// AVX-512 with VNNI: the tier of the integer (vpdpbusd) bodies and the packed layout.
static inline int pl_tier_avx512_vnni(void) {
    return pl_isa() == PL_ISA_AVX512 && (pl_isa_features() & PL_FEATURE_AVX512_VNNI);
}

// ---- portable (plain C) ----
void pl_portable_dequant(int type, const void *src, float *dst, int64_t n);
float pl_portable_dot(int type, const void *row, const float *x, int64_t n);
void pl_portable_matvec(int type, const uint8_t *base, size_t row_bytes, const float *x, float *y, int64_t n,
                        int64_t r0, int64_t r1);
void pl_portable_gemm_f32(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw, int64_t K,
                          float *y, int64_t ldy, int64_t r0, int64_t r1);
void pl_portable_f32_to_f16(const float *x, uint16_t *out, int64_t n);
void pl_portable_quantize_q8(const float *x, uint8_t *out, int64_t n, int with_sum);
float pl_portable_dotq(int type, const uint8_t *w, const uint8_t *xq, int64_t nb);
void pl_portable_matmul_q(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                          int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1);
void pl_portable_expf(const float *x, float *y, int64_t n);
void pl_portable_swiglu(float *g, const float *u, int64_t n);
int64_t pl_portable_argmax(const float *x, int64_t n);
void pl_portable_geglu_table(float *g, const float *u, const float *table, int64_t n);
void pl_portable_attention(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                           int64_t hd, float scale, float *scores, float *out);
void pl_portable_attention_tile(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads,
                                const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx, int64_t hd,
                                float scale, float *scores, float *out, int64_t out_stride);
void pl_portable_attention_tile_bf16(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads,
                                     const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx, int64_t hd,
                                     float scale, float *scores, float *out, int64_t out_stride);

#if defined(__x86_64__)
// ---- AVX-512 (F, BW, VL, DQ; the quantized row kernels also VNNI) ----
void pl_avx512_dequant(int type, const void *src, float *dst, int64_t n);
float pl_avx512_dot(int type, const void *row, const float *x, int64_t n);
void pl_avx512_matvec(int type, const uint8_t *base, size_t row_bytes, const float *x, float *y, int64_t n,
                      int64_t r0, int64_t r1);
void pl_avx512_matmul_float_few(int type, const uint8_t *base, size_t row_bytes, const float *x, int64_t ldx,
                                int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1);
void pl_avx512_gemm_f32(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw, int64_t K,
                        float *y, int64_t ldy, int64_t r0, int64_t r1, float *panel);
void pl_avx512_f32_to_f16(const float *x, uint16_t *out, int64_t n);
void pl_avx512_quantize_q8(const float *x, uint8_t *out, int64_t n, int with_sum);
void pl_avx512_matmul_q(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                        int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1);
void pl_avx512_expf(const float *x, float *y, int64_t n);
void pl_avx512_swiglu(float *g, const float *u, int64_t n);
int64_t pl_avx512_argmax(const float *x, int64_t n);
int64_t pl_avx2_argmax(const float *x, int64_t n);
void pl_avx512_geglu_table(float *g, const float *u, const float *table, int64_t n);
void pl_avx512_attention(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                         int64_t hd, float scale, float *scores, float *out);
void pl_avx512_attention_group(const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v,
                               int64_t stride, int64_t n_ctx, float scale, float *scores, float *out);
/// head_dim 64, 128 or 256.
void pl_avx512_attention_tile(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads,
                              const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx, int64_t head_dim,
                              float scale, float *scores, float *out, int64_t out_stride);
/// pl_attention_tile_bf16's vdpbf16ps body (x86/avx512_attention_bf16.c): head_dim 64, 128 or 256, pairs ≤
/// PL_ATTENTION_TILE_PAIRS, on a CPU with AVX512_BF16 only.
void pl_avx512_attention_tile_bf16(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads,
                                   const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                                   int64_t head_dim, float scale, float *scores, float *out, int64_t out_stride);

// ---- AVX2 + FMA + F16C (AVX-VNNI where present) ----
void pl_avx2_quantize_q8(const float *x, uint8_t *out, int64_t n, int with_sum);
/// One Q8_K block of pl_quantize_q8_K (bit-identical); 0 (nothing written) for a block with a NaN or an
/// infinity or whose −127/max overflows (the portable body's cases).
int pl_avx2_quantize_q8_K_block(const float *x, uint8_t *out);
void pl_avx2_matmul_q(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                      int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1);
void pl_avx2_dequant(int type, const void *src, float *dst, int64_t n);
void pl_avx2_matvec(int type, const uint8_t *base, size_t row_bytes, const float *x, float *y, int64_t n,
                    int64_t r0, int64_t r1);
void pl_avx2_f32_to_f16(const float *x, uint16_t *out, int64_t n);
void pl_avx2_expf(const float *x, float *y, int64_t n);
void pl_avx2_swiglu(float *g, const float *u, int64_t n);
void pl_avx2_attention(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                       int64_t hd, float scale, float *scores, float *out);
void pl_avx2_attention_tile(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads,
                            const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx, float scale,
                            float *scores, float *out, int64_t out_stride);
void pl_avxvnni_matmul_q(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                         int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1);
/// Several inputs against Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 rows (x86/quant_batch_body.h): eight rows unpacked once into a
/// lane-major scratch for every input; bit-identical to the row kernels. From PL_AVX2_BATCH_MIN inputs on (ckernels.h).
enum { PL_AVX2_BATCH_MIN = PL_AVX2_BATCH_MIN_TOKENS };
static inline int pl_avx2_batch_owns(int type) {
    return type == PL_TYPE_Q8_0 || type == PL_TYPE_Q4_0 || type == PL_TYPE_Q4_1 || type == PL_TYPE_Q5_0 ||
           type == PL_TYPE_Q5_1;
}
void pl_avx2_matmul_batch(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                          int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1);
void pl_avxvnni_matmul_batch(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                             int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1);
#endif

#if defined(__aarch64__)
// ---- NEON (dotprod where present) ----
void pl_neon_quantize_q8(const float *x, uint8_t *out, int64_t n, int with_sum);
void pl_neon_matmul_q(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                      int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1);
void pl_neon_dotprod_matmul_q(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                              int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1);
void pl_neon_expf(const float *x, float *y, int64_t n);
void pl_neon_swiglu(float *g, const float *u, int64_t n);
void pl_neon_f32_to_f16(const float *x, uint16_t *out, int64_t n);
void pl_neon_matvec(int type, const uint8_t *base, size_t row_bytes, const float *x, float *y, int64_t n,
                    int64_t r0, int64_t r1);
void pl_neon_attention(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                       int64_t hd, float scale, float *scores, float *out);
#endif
/// The NEON tier.
static inline int pl_tier_neon(void) { return pl_isa() == PL_ISA_NEON; }

#endif
