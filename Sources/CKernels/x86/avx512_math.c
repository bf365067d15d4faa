// AVX-512 bodies of expf (glibc's, 16 lanes: bit-identical), SwiGLU and F16-cache attention (one query; a tile of a
// prompt chunk's queries).
#include "kernels_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include "expf_table.h"
#include "avx512_transpose.h"
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

// ---- expf, 16 lanes at a time, bit-identical to glibc's --------------------------------------------
// The softmax and SwiGLU call expf thousands of times per token; libm's scalar call was ~25% of attention. This is
// glibc's expf (sysdeps/ieee754/flt-32/e_expf.c, as its FMA build compiles it: the same double-precision steps,
// fused where that build fuses them, and the same table), so results do not move by a bit. Lanes glibc sends down
// its special-case path (|x| ≥ 88, inf, NaN) are recomputed by expf itself. Tested against expf on a sweep of
// every float bit pattern.
AVX512 static inline __attribute__((always_inline)) __m512d expf8_pd(__m256 x) {
    const __m512d inv_ln2_n = _mm512_castsi512_pd(_mm512_set1_epi64(0x40471547652b82fe)); // 32/ln 2
    const __m512d shift = _mm512_castsi512_pd(_mm512_set1_epi64(0x4338000000000000));     // 0x1.8p52
    const __m512d c0 = _mm512_castsi512_pd(_mm512_set1_epi64(0x3ebc6af84b912394));
    const __m512d c1 = _mm512_castsi512_pd(_mm512_set1_epi64(0x3f2ebfce50fac4f3));
    const __m512d c2 = _mm512_castsi512_pd(_mm512_set1_epi64(0x3f962e42ff0c52d6));
    const __m512i t0 = _mm512_loadu_si512((const void *)pl_expf_table), t1 = _mm512_loadu_si512((const void *)(pl_expf_table + 8));
    const __m512i t2 = _mm512_loadu_si512((const void *)(pl_expf_table + 16)), t3 = _mm512_loadu_si512((const void *)(pl_expf_table + 24));
    __m512d xd = _mm512_cvtps_pd(x);
    __m512d kd = _mm512_fmadd_pd(xd, inv_ln2_n, shift);
    __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, shift);
    __m512d r = _mm512_fmsub_pd(inv_ln2_n, xd, kd);
    __m512i lo = _mm512_permutex2var_epi64(t0, ki, t1), hi = _mm512_permutex2var_epi64(t2, ki, t3);
    __m512i t = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(ki, _mm512_set1_epi64(16)), lo, hi);
    __m512d s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64(ki, 47)));
    __m512d z = _mm512_fmadd_pd(r, c0, c1);
    __m512d r2 = _mm512_mul_pd(r, r);
    __m512d y = _mm512_fmadd_pd(r, c2, _mm512_set1_pd(1.0));
    y = _mm512_fmadd_pd(z, r2, y);
    return _mm512_mul_pd(y, s);
}

AVX512 static inline __attribute__((always_inline)) __m512 expf16(__m512 x) {
    __m256 ylo = _mm512_cvtpd_ps(expf8_pd(_mm512_castps512_ps256(x)));
    __m256 yhi = _mm512_cvtpd_ps(expf8_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1))));
    __m512 y = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(ylo)), _mm256_castps_pd(yhi), 1));
    // glibc's special cases: top 12 bits of |x| ≥ those of 88.0f (also inf and NaN).
    __m512i top = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(x), 20), _mm512_set1_epi32(0x7ff));
    __mmask16 special = _mm512_cmpge_epu32_mask(top, _mm512_set1_epi32(0x42b));
    if (__builtin_expect(special != 0, 0)) {
        float xs[16], ys[16];
        _mm512_storeu_ps(xs, x);
        _mm512_storeu_ps(ys, y);
        PL_UNROLL
        for (int i = 0; i < 16; i++) if (special >> i & 1) ys[i] = expf(xs[i]);
        y = _mm512_loadu_ps(ys);
    }
    return y;
}

AVX512 void pl_avx512_expf(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, expf16(_mm512_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = expf(x[i]);
}

// s[t] = expf(s[t] − mx), the softmax's exponentials (the sum stays a plain sequential loop, as before).
// Why glibc's expf and not a cheaper polynomial (the BF16 body's, within 4 ulp; ~30 of a 143 µs prompt tile at depth
// 1,570 on an Intel Xeon, 2026-12-07): tried, the f16 rounding of the probabilities turns its last-bit differences
// into ~1e-3 ones, which moved SmolLM2 Q4_1's first logits by ~0.04 — its greedy reply to "What is the capital of
// France?" starts on a near tie (25.09 vs 25.01) and flipped — and Gemma 3's and SmolLM2 Q4_K_M's perplexity past
// 0.5% of llama.cpp's (0.58%, 0.54%).
AVX512 static void softmax_exp(float *s, int64_t n, float mx) {
    int64_t t = 0;
    const __m512 m = _mm512_set1_ps(mx);
    for (; t + 16 <= n; t += 16) _mm512_storeu_ps(s + t, expf16(_mm512_sub_ps(_mm512_loadu_ps(s + t), m)));
    for (; t < n; t++) s[t] = expf(s[t] - mx);
}

AVX512 void pl_avx512_swiglu(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(g + i);
        __m512 e = expf16(_mm512_xor_ps(v, _mm512_set1_ps(-0.0f)));   // -v, exactly
        _mm512_storeu_ps(g + i, _mm512_mul_ps(_mm512_div_ps(v, _mm512_add_ps(one, e)), _mm512_loadu_ps(u + i)));
    }
    for (; i < n; i++) {
        float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

// head_dim a multiple of 16 (64 for every model here); other sizes take the portable body.
AVX512 void pl_avx512_attention(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                                    int64_t hd, float scale, float *scores, float *out) {
    __m512 qv[32];
    int64_t nv = hd / 16;
    for (int64_t c = 0; c < nv; c++)
        qv[c] = _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(q + 16 * c), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    float mx = -INFINITY;
    // One position at a time, in this order: reordering the sum moves last bits, and llama.cpp's greedy
    // continuations are only reproduced with these exact scores.
    int64_t t = 0;
    for (; t < n_ctx; t++) {
        const uint16_t *kt = k + t * stride;
        __m512 acc = _mm512_setzero_ps();
        for (int64_t c = 0; c < nv; c++)
            acc = _mm512_fmadd_ps(qv[c], _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kt + 16 * c))), acc);
        float d = _mm512_reduce_add_ps(acc) * scale;
        scores[t] = d;
        if (d > mx) mx = d;
    }
    float sum = 0.0f;
    softmax_exp(scores, n_ctx, mx);
    for (int64_t t = 0; t < n_ctx; t++) sum += scores[t];
    float inv = 1.0f / sum;
    __m512 o[32];
    for (int64_t c = 0; c < nv; c++) o[c] = _mm512_setzero_ps();
    for (int64_t t = 0; t < n_ctx; t++) {
        float p = _cvtsh_ss(_cvtss_sh(scores[t] * inv, _MM_FROUND_TO_NEAREST_INT));
        __m512 pv = _mm512_set1_ps(p);
        const uint16_t *vt = v + t * stride;
        for (int64_t c = 0; c < nv; c++)
            o[c] = _mm512_fmadd_ps(pv, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vt + 16 * c))), o[c]);
    }
    for (int64_t c = 0; c < nv; c++) _mm512_storeu_ps(out + 16 * c, o[c]);
}

// Sixteen horizontal sums at once: lane l of the result is the sum of v[p(l)] for p = (0 4 8 12 1 5 9 13 2 6 10 14
// 3 7 11 15), each added in _mm512_reduce_add_ps's tree order (lanes i + i+8, then i + i+4, i + i+2, i + i+1), so
// every sum has exactly the bits the intrinsic gives (checked against it in the tests, through attention).
AVX512 static inline __attribute__((always_inline)) __m512 reduce_add_16(const __m512 v[16]) {
    __m512 w[8], x[4], y[2];
    PL_UNROLL
    for (int j = 0; j < 8; j++)
        w[j] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0x44), _mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0xEE));
    PL_UNROLL
    for (int m = 0; m < 4; m++)
        x[m] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], 0x88), _mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], 0xDD));
    PL_UNROLL
    for (int p = 0; p < 2; p++) {
        __m512d a = _mm512_castps_pd(x[2 * p]), b = _mm512_castps_pd(x[2 * p + 1]);
        y[p] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    return _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x88), _mm512_shuffle_ps(y[0], y[1], 0xDD));
}

// Up to 4 query heads over one KV head (head_dim 64: 4 vectors each), each computed exactly as attention_avx512
// computes it alone; only the loads and f16 conversions of each K and V row are shared.
// n_heads is a compile-time constant at each call site, so the accumulators stay in registers.
AVX512 static inline __attribute__((always_inline)) void attention_group_body(
        const float *q, const int n_heads, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
        float scale, float *scores, float *out) {
    enum { NV = 4, HD = 64 };
    __m512 qv[4][NV];
    float mx[4], inv[4];
    PL_UNROLL
    for (int g = 0; g < n_heads; g++) {
        mx[g] = -INFINITY;
        PL_UNROLL
        for (int c = 0; c < NV; c++)
            qv[g][c] = _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(q + g * HD + 16 * c),
                                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    // Scores, 16 positions at a time: the K rows are converted once into `kf`, each head's 16 dot products
    // are summed by one transpose-and-add network (the same pairings as _mm512_reduce_add_ps, so the same
    // bits) instead of 16 horizontal reductions.
    int64_t t = 0;
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512 vscale = _mm512_set1_ps(scale);
    __m512 vmax[4];
    PL_UNROLL
    for (int g = 0; g < n_heads; g++) vmax[g] = _mm512_set1_ps(-INFINITY);
    for (; t + 16 <= n_ctx; t += 16) {
        __m512 kf[16][NV];
        PL_UNROLL
        for (int j = 0; j < 16; j++) {
            const uint16_t *kt = k + (t + j) * stride;
            // The cache is cold (a token streams ~100 MB of weights between two visits of a layer): fetch keys
            // a step ahead, and these rows' values for the second pass.
            _mm_prefetch((const char *)(kt + 16 * stride), _MM_HINT_T0);
            _mm_prefetch((const char *)(kt + 16 * stride + 32), _MM_HINT_T0);
            _mm_prefetch((const char *)(v + (t + j) * stride), _MM_HINT_T1);
            _mm_prefetch((const char *)(v + (t + j) * stride + 32), _MM_HINT_T1);
            PL_UNROLL
            for (int c = 0; c < NV; c++) kf[j][c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kt + 16 * c)));
        }
        PL_UNROLL
        for (int g = 0; g < n_heads; g++) {
            __m512 acc[16];
            PL_UNROLL
            for (int j = 0; j < 16; j++) {
                acc[j] = _mm512_setzero_ps();
                PL_UNROLL
                for (int c = 0; c < NV; c++) acc[j] = _mm512_fmadd_ps(qv[g][c], kf[j][c], acc[j]);
            }
            __m512 d = _mm512_mul_ps(_mm512_permutexvar_ps(order, reduce_add_16(acc)), vscale);
            _mm512_storeu_ps(scores + g * n_ctx + t, d);
            vmax[g] = _mm512_max_ps(vmax[g], d);
        }
    }
    PL_UNROLL
    for (int g = 0; g < n_heads; g++) mx[g] = _mm512_reduce_max_ps(vmax[g]);
    for (; t < n_ctx; t++) {
        const uint16_t *kt = k + t * stride;
        __m512 kv[NV];
        PL_UNROLL
        for (int c = 0; c < NV; c++) kv[c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kt + 16 * c)));
        PL_UNROLL
        for (int g = 0; g < n_heads; g++) {
            __m512 acc = _mm512_setzero_ps();
            PL_UNROLL
            for (int c = 0; c < NV; c++) acc = _mm512_fmadd_ps(qv[g][c], kv[c], acc);
            float d = _mm512_reduce_add_ps(acc) * scale;
            scores[g * n_ctx + t] = d;
            if (d > mx[g]) mx[g] = d;
        }
    }
    // Probabilities, rounded to f16 as llama.cpp's F16 V multiply rounds them.
    PL_UNROLL
    for (int g = 0; g < n_heads; g++) {
        float *sg = scores + g * n_ctx, sum = 0.0f;
        softmax_exp(sg, n_ctx, mx[g]);
        for (int64_t u = 0; u < n_ctx; u++) sum += sg[u];
        inv[g] = 1.0f / sum;
        int64_t u = 0;
        const __m512 vinv = _mm512_set1_ps(inv[g]);
        for (; u + 16 <= n_ctx; u += 16)
            _mm512_storeu_ps(sg + u, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_mul_ps(_mm512_loadu_ps(sg + u), vinv),
                                                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
        for (; u < n_ctx; u++) sg[u] = _cvtsh_ss(_cvtss_sh(sg[u] * inv[g], _MM_FROUND_TO_NEAREST_INT));
    }
    __m512 o[4][NV];
    PL_UNROLL
    for (int g = 0; g < n_heads; g++)
        PL_UNROLL
        for (int c = 0; c < NV; c++) o[g][c] = _mm512_setzero_ps();
    for (int64_t u = 0; u < n_ctx; u++) {
        const uint16_t *vt = v + u * stride;
        __m512 vv[NV];
        PL_UNROLL
        for (int c = 0; c < NV; c++) vv[c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vt + 16 * c)));
        PL_UNROLL
        for (int g = 0; g < n_heads; g++) {
            __m512 pv = _mm512_set1_ps(scores[g * n_ctx + u]);
            PL_UNROLL
            for (int c = 0; c < NV; c++) o[g][c] = _mm512_fmadd_ps(pv, vv[c], o[g][c]);
        }
    }
    PL_UNROLL
    for (int g = 0; g < n_heads; g++)
        PL_UNROLL
        for (int c = 0; c < NV; c++) _mm512_storeu_ps(out + g * HD + 16 * c, o[g][c]);
}

AVX512 void pl_avx512_attention_group(const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v,
                                          int64_t stride, int64_t n_ctx, float scale, float *scores, float *out) {
    switch (n_heads) {
    case 1: attention_group_body(q, 1, k, v, stride, n_ctx, scale, scores, out); break;
    case 2: attention_group_body(q, 2, k, v, stride, n_ctx, scale, scores, out); break;
    case 3: attention_group_body(q, 3, k, v, stride, n_ctx, scale, scores, out); break;
    default: attention_group_body(q, 4, k, v, stride, n_ctx, scale, scores, out); break;
    }
}
// ---- A tile of queries: consecutive positions of one prompt chunk over one KV head --------------------------------
// At depth a prompt token's attention costs about what its weights do, and the one-query kernel spends half its time
// outside the multiply-adds: converting each K and V row, reducing each dot product's 16 lanes with shuffles, and
// summing each head's probabilities in one dependent chain. Here up to PL_ATTENTION_TILE_PAIRS (query, head) pairs
// share every row: 16 K rows are converted and transposed once (kt[e] = element e of the 16 rows), so each pair's 16
// dot products are 64 fmas with a broadcast of its query element (two pairs per load of kt) and a shuffle-free add
// tree; the probability sums of 16 pairs run as one transposed vector sum; each V row is converted once per tile.
// Every pair's arithmetic is the one-query kernel's, operation for operation: lane i of its accumulator takes
// fma(q[16c+i], k[16c+i], ·) for c = 0..3 from zero, the lanes are added as _mm512_reduce_add_ps adds them
// ((i + i+8), (i + i+4), (i + i+2), (i + i+1)) and scaled, the sum runs position by position, and the output lane
// takes fma(p_t, v_t, ·) position by position. So each output is bit-identical to pl_attention_f16 alone.
enum { TILE_PAIRS = PL_ATTENTION_TILE_PAIRS, PV_PAIRS = 6, VALUE_ROWS_FLOATS = 8192 };

// Rows 0 ..< rows (at most 16; the rest read as zero) of 16·NV f16 elements, as kt[e·16 + j] = element e of row j.
AVX512 static inline __attribute__((always_inline)) void transpose_rows(const int NV, const uint16_t *k, int64_t stride,
                                                                       int64_t rows, float *kt) {
    PL_UNROLL
    for (int c = 0; c < NV; c++) {
        // The next block's rows, a cache line (two c) at a time.
        if (c % 2 == 0)
            PL_UNROLL
            for (int j = 0; j < 16; j++) _mm_prefetch((const char *)(k + (16 + j) * stride + 16 * c), _MM_HINT_T0);
        __m512 r[16];
        PL_UNROLL
        for (int j = 0; j < 16; j++)
            r[j] = j < rows ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(k + j * stride + 16 * c)))
                            : _mm512_setzero_ps();
        transpose16(r);
        PL_UNROLL
        for (int e = 0; e < 16; e++) _mm512_store_ps(kt + (16 * c + e) * 16, r[e]);
    }
}

// The scores of NP pairs (1 or 2) for the 16 rows of kt: lane j of r[p] = q_p·k_j · scale. Lanes i and i+8 of the
// dot products are computed together and added at once (the first step of the add tree), so only 8 sums per pair
// stay live and two pairs share every kt load. NV: head_dim / 16.
AVX512 static inline __attribute__((always_inline)) void tile_scores16(const int NV, const int NP, const float *const qf[2],
                                                                      const float *kt, __m512 vscale, __m512 r[2]) {
    __m512 b[2][8];
    PL_UNROLL
    for (int i = 0; i < 8; i++) {
        __m512 lo[2], hi[2];
        PL_UNROLL
        for (int p = 0; p < NP; p++) lo[p] = hi[p] = _mm512_setzero_ps();
        PL_UNROLL
        for (int c = 0; c < NV; c++) {
            const __m512 k0 = _mm512_load_ps(kt + (16 * c + i) * 16), k1 = _mm512_load_ps(kt + (16 * c + i + 8) * 16);
            PL_UNROLL
            for (int p = 0; p < NP; p++) {
                lo[p] = _mm512_fmadd_ps(_mm512_set1_ps(qf[p][16 * c + i]), k0, lo[p]);
                hi[p] = _mm512_fmadd_ps(_mm512_set1_ps(qf[p][16 * c + i + 8]), k1, hi[p]);
            }
        }
        PL_UNROLL
        for (int p = 0; p < NP; p++) b[p][i] = _mm512_add_ps(lo[p], hi[p]);
    }
    PL_UNROLL
    for (int p = 0; p < NP; p++) {
        PL_UNROLL
        for (int i = 0; i < 4; i++) b[p][i] = _mm512_add_ps(b[p][i], b[p][i + 4]);
        PL_UNROLL
        for (int i = 0; i < 2; i++) b[p][i] = _mm512_add_ps(b[p][i], b[p][i + 2]);
        r[p] = _mm512_mul_ps(_mm512_add_ps(b[p][0], b[p][1]), vscale);
    }
}

// sums[j] = Σ_{u < n} s[j·ld + u] for the m ≤ 16 pairs j, each in position order (0 + s_0 + s_1 + …, as the
// one-query kernel's loop adds them): each 16 positions of the 16 pairs transposed so lane j holds pair j's, then
// added position after position — one vector add per position for all the pairs, where summing each pair's row
// on its own took a scalar load and insert per score (~15% of the tile's time at depth).
AVX512 static inline __attribute__((always_inline)) void tile_sums(const float *s, int64_t ld, int64_t m, int64_t n,
                                                                  float *sums) {
    __m512 acc = _mm512_setzero_ps();
    int64_t u = 0;
    for (; u + 16 <= n; u += 16) {
        __m512 r[16];
        PL_UNROLL
        for (int j = 0; j < 16; j++) r[j] = j < m ? _mm512_loadu_ps(s + j * ld + u) : _mm512_setzero_ps();
        transpose16(r);
        PL_UNROLL
        for (int e = 0; e < 16; e++) acc = _mm512_add_ps(acc, r[e]);
    }
    _Alignas(64) float a[16];
    _mm512_store_ps(a, acc);
    for (int64_t j = 0; j < m; j++) {
        float sum = a[j];
        for (int64_t t = u; t < n; t++) sum += s[j * ld + t];
        sums[j] = sum;
    }
}

// Elements col ..< col + 64 of the outputs of M pairs (p0 ..< p0+M): o = Σ_u p_u v_u over each pair's own positions
// (n_seen[j]; all see n_common), for positions u0 ..< u1 of them: each output slice starts from zero at u0 = 0 and
// otherwise from what the previous positions left in `out`, so each element's sum runs position by position
// whatever the slice and however the positions are cut. Row u of the values is at v + (u − v_row0)·v_stride: VF
// (float rows, already converted) or f16 rows converted here.
AVX512 static inline __attribute__((always_inline)) void tile_values(
        const float *s, int64_t ld, const int M, const int VF, const void *v, int64_t v_stride, int64_t v_row0,
        int64_t u0, int64_t u1, int64_t n_common, const int64_t *n_seen, float *const *out, int64_t col) {
    __m512 o[PV_PAIRS][4];
    PL_UNROLL
    for (int j = 0; j < M; j++)
        PL_UNROLL
        for (int c = 0; c < 4; c++) o[j][c] = u0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(out[j] + col + 16 * c);
    int64_t n_max = 0;
    PL_UNROLL
    for (int j = 0; j < M; j++) if (n_seen[j] > n_max) n_max = n_seen[j];
    if (u1 > n_max) u1 = n_max;
    for (int64_t u = u0; u < u1; u++) {
        __m512 vv[4];
        if (VF) {
            const float *vt = (const float *)v + (u - v_row0) * v_stride + col;
            PL_UNROLL
            for (int c = 0; c < 4; c++) vv[c] = _mm512_load_ps(vt + 16 * c);
        } else {
            const uint16_t *vt = (const uint16_t *)v + (u - v_row0) * v_stride + col;
            PL_UNROLL
            for (int c = 0; c < 4; c++) vv[c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vt + 16 * c)));
        }
        if (u < n_common) {
            PL_UNROLL
            for (int j = 0; j < M; j++) {
                __m512 pv = _mm512_set1_ps(s[j * ld + u]);
                PL_UNROLL
                for (int c = 0; c < 4; c++) o[j][c] = _mm512_fmadd_ps(pv, vv[c], o[j][c]);
            }
        } else {
            PL_UNROLL
            for (int j = 0; j < M; j++) {
                if (u >= n_seen[j]) continue;
                __m512 pv = _mm512_set1_ps(s[j * ld + u]);
                PL_UNROLL
                for (int c = 0; c < 4; c++) o[j][c] = _mm512_fmadd_ps(pv, vv[c], o[j][c]);
            }
        }
    }
    PL_UNROLL
    for (int j = 0; j < M; j++)
        PL_UNROLL
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(out[j] + col + 16 * c, o[j][c]);
}

// The values of pairs p0 ..< p0+m (m ≤ PV_PAIRS), positions u0 ..< u1, every 64-element column slice.
AVX512 static inline __attribute__((always_inline)) void tile_values_pairs(
        const float *s, int64_t ld, int64_t m, const int VF, const void *v, int64_t v_stride, int64_t v_row0,
        int64_t u0, int64_t u1, int64_t n_common, const int64_t *n_seen, float *const *out, int64_t hd) {
    for (int64_t col = 0; col < hd; col += 64)
        switch (m) {
        case 1: tile_values(s, ld, 1, VF, v, v_stride, v_row0, u0, u1, n_common, n_seen, out, col); break;
        case 2: tile_values(s, ld, 2, VF, v, v_stride, v_row0, u0, u1, n_common, n_seen, out, col); break;
        case 3: tile_values(s, ld, 3, VF, v, v_stride, v_row0, u0, u1, n_common, n_seen, out, col); break;
        case 4: tile_values(s, ld, 4, VF, v, v_stride, v_row0, u0, u1, n_common, n_seen, out, col); break;
        case 5: tile_values(s, ld, 5, VF, v, v_stride, v_row0, u0, u1, n_common, n_seen, out, col); break;
        default: tile_values(s, ld, 6, VF, v, v_stride, v_row0, u0, u1, n_common, n_seen, out, col); break;
        }
}

// head_dim HD = 16·NV (64, 128 or 256), n_queries · n_heads ≤ TILE_PAIRS (kernels.c checks). Pair p = t·n_heads + g:
// query t's head g, which sees rows 0 ..< n_ctx + t; its scores at scores + p·ld.
AVX512 static inline __attribute__((always_inline)) void attention_tile_body(
        const int NV, const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads, const uint16_t *k,
        const uint16_t *v, int64_t stride, int64_t n_ctx, float scale, float *scores, float *out, int64_t out_stride) {
    const int HD = 16 * NV;
    const int64_t pairs = n_queries * n_heads, ld = n_ctx + n_queries - 1;
    _Alignas(64) float qf[TILE_PAIRS][256];
    _Alignas(64) float kt[256 * 16];
    int64_t seen[TILE_PAIRS];
    float *outp[TILE_PAIRS], mx[TILE_PAIRS], sums[TILE_PAIRS];
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t t = p / n_heads, g = p % n_heads;
        seen[p] = n_ctx + t;
        outp[p] = out + t * out_stride + g * HD;
        for (int c = 0; c < NV; c++)
            _mm512_store_ps(qf[p] + 16 * c, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(q + t * q_stride + g * HD + 16 * c),
                                                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
    }
    // Scores, 16 rows at a time for every pair that sees any of them.
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int64_t b = 0; b < ld; b += 16) {
        const int64_t rows = ld - b < 16 ? ld - b : 16;
        const uint16_t *kb = k + b * stride;
        // transpose_rows prefetches the next block's keys: the cache is cold at depth (a layer's K and V are read
        // once per tile).
        transpose_rows(NV, kb, stride, rows, kt);
        const __mmask16 valid = (__mmask16)((1u << rows) - 1);
        // Pairs two at a time; later pairs see more rows, so the pairs that see any of these form a tail.
        int64_t p = 0;
        while (p < pairs && seen[p] <= b) p++;
        for (; p < pairs; p += 2) {
            __m512 r[2];
            const float *qp[2] = {qf[p], qf[p + 1 < pairs ? p + 1 : p]};
            if (p + 1 < pairs) {
                tile_scores16(NV, 2, qp, kt, vscale, r);
                _mm512_mask_storeu_ps(scores + (p + 1) * ld + b, valid, r[1]);
            } else {
                tile_scores16(NV, 1, qp, kt, vscale, r);
            }
            _mm512_mask_storeu_ps(scores + p * ld + b, valid, r[0]);
        }
    }
    // Softmax: the maximum (order-free), glibc's expf, the sums (8 chains at a time), probabilities rounded to f16.
    for (int64_t p = 0; p < pairs; p++) {
        float *sp = scores + p * ld;
        __m512 vmax = _mm512_set1_ps(-INFINITY);
        int64_t u = 0;
        for (; u + 16 <= seen[p]; u += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(sp + u));
        mx[p] = _mm512_reduce_max_ps(vmax);
        for (; u < seen[p]; u++) if (sp[u] > mx[p]) mx[p] = sp[u];
        softmax_exp(sp, seen[p], mx[p]);
    }
    for (int64_t p0 = 0; p0 < pairs; p0 += 16)
        tile_sums(scores + p0 * ld, ld, pairs - p0 < 16 ? pairs - p0 : 16, n_ctx, sums + p0);
    for (int64_t p = 0; p < pairs; p++) {
        float *sp = scores + p * ld, sum = sums[p];
        for (int64_t u = n_ctx; u < seen[p]; u++) sum += sp[u];
        const float inv = 1.0f / sum;
        const __m512 vinv = _mm512_set1_ps(inv);
        int64_t u = 0;
        for (; u + 16 <= seen[p]; u += 16)
            _mm512_storeu_ps(sp + u, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_mul_ps(_mm512_loadu_ps(sp + u), vinv),
                                                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
        for (; u < seen[p]; u++) sp[u] = _cvtsh_ss(_cvtss_sh(sp[u] * inv, _MM_FROUND_TO_NEAREST_INT));
    }
    // Values, PV_PAIRS pairs and one 64-element column slice per pass over the rows. With more pairs than one pass
    // takes, the V rows are converted to f32 once, VALUE_ROWS_FLOATS at a time into an L1-sized buffer that every
    // pass then reads: converting them in each pass cost a quarter of the pass's multiply pipe (4 conversions,
    // 2 uops each, beside 24 fmas a position), and the passes are about a third of a SmolLM2 tile's time at depth.
    if (pairs <= PV_PAIRS) {
        tile_values_pairs(scores, ld, pairs, 0, v, stride, 0, 0, ld, n_ctx, seen, outp, HD);
    } else {
        _Alignas(64) float vf[VALUE_ROWS_FLOATS];
        const int64_t chunk = VALUE_ROWS_FLOATS / HD;
        for (int64_t u0 = 0; u0 < ld; u0 += chunk) {
            const int64_t u1 = ld - u0 < chunk ? ld : u0 + chunk;
            for (int64_t u = u0; u < u1; u++) {
                // The rows come from L3 at depth (a layer's V is read once per tile): ask for them a few rows ahead.
                PL_UNROLL
                for (int c = 0; c < NV; c += 2) _mm_prefetch((const char *)(v + (u + 8) * stride + 16 * c), _MM_HINT_T0);
                PL_UNROLL
                for (int c = 0; c < NV; c++)
                    _mm512_store_ps(vf + (u - u0) * HD + 16 * c,
                                    _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(v + u * stride + 16 * c))));
            }
            for (int64_t p0 = 0; p0 < pairs; p0 += PV_PAIRS)
                tile_values_pairs(scores + p0 * ld, ld, pairs - p0 < PV_PAIRS ? pairs - p0 : PV_PAIRS, 1, vf, HD, u0,
                                  u0, u1, n_ctx, seen + p0, outp + p0, HD);
        }
    }
}

AVX512 void pl_avx512_attention_tile(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads,
                                     const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx, int64_t head_dim,
                                     float scale, float *scores, float *out, int64_t out_stride) {
    switch (head_dim) {
    case 64: attention_tile_body(4, q, q_stride, n_queries, n_heads, k, v, stride, n_ctx, scale, scores, out, out_stride); break;
    case 128: attention_tile_body(8, q, q_stride, n_queries, n_heads, k, v, stride, n_ctx, scale, scores, out, out_stride); break;
    default: attention_tile_body(16, q, q_stride, n_queries, n_heads, k, v, stride, n_ctx, scale, scores, out, out_stride); break;
    }
}
#endif
