// AVX-512 bodies of expf (glibc's, 16 lanes: bit-identical), SwiGLU and F16-cache attention.
#include "kernels_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include "expf_table.h"
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

// ---- expf, 16 lanes at a time, bit-identical to glibc's --------------------------------------------
// The softmax and SwiGLU call expf thousands of times per token; libm's scalar call was ~25% of attention. This is
// glibc's expf (sysdeps/ieee754/flt-32/e_expf.c, as its FMA build compiles it: the same double-precision steps,
// fused where that build fuses them, and the same table), so results do not move by a bit. Lanes glibc sends down
// its special-case path (|x| ≥ 88, inf, NaN) are recomputed by expf itself. Tested against expf on a sweep of
// every float bit pattern.
AVX512 static inline __m512d expf8_pd(__m256 x) {
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

AVX512 static inline __m512 expf16(__m512 x) {
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
#endif
