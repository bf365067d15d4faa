// AVX2 bodies of expf (glibc's algorithm on 4 doubles at a time: bit-identical to libm's expf, as the AVX-512 body),
// SwiGLU (bit-identical to the portable one) and F16-cache attention. Attention's q·k sums follow ggml's AVX2
// ggml_vec_dot_f16 (4 accumulators of 8 lanes over 32 elements per step, then its reduction), as llama.cpp's AVX2
// build computes them, so they differ from the AVX-512 and portable sums in the last bits (tests bound it).
#include "kernels_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include "expf_table.h"
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline __m256d expf4_pd(__m128 x) {
    const __m256d inv_ln2_n = _mm256_castsi256_pd(_mm256_set1_epi64x(0x40471547652b82fe)); // 32/ln 2
    const __m256d shift = _mm256_castsi256_pd(_mm256_set1_epi64x(0x4338000000000000));     // 0x1.8p52
    const __m256d c0 = _mm256_castsi256_pd(_mm256_set1_epi64x(0x3ebc6af84b912394));
    const __m256d c1 = _mm256_castsi256_pd(_mm256_set1_epi64x(0x3f2ebfce50fac4f3));
    const __m256d c2 = _mm256_castsi256_pd(_mm256_set1_epi64x(0x3f962e42ff0c52d6));
    __m256d xd = _mm256_cvtps_pd(x);
    __m256d kd = _mm256_fmadd_pd(xd, inv_ln2_n, shift);
    __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, shift);
    __m256d r = _mm256_fmsub_pd(inv_ln2_n, xd, kd);
    __m256i t = _mm256_i64gather_epi64((const long long *)pl_expf_table, _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8);
    __m256d s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64(ki, 47)));
    __m256d z = _mm256_fmadd_pd(r, c0, c1);
    __m256d r2 = _mm256_mul_pd(r, r);
    __m256d y = _mm256_fmadd_pd(r, c2, _mm256_set1_pd(1.0));
    y = _mm256_fmadd_pd(z, r2, y);
    return _mm256_mul_pd(y, s);
}

AVX2 static inline __m256 expf8(__m256 x) {
    __m128 lo = _mm256_cvtpd_ps(expf4_pd(_mm256_castps256_ps128(x)));
    __m128 hi = _mm256_cvtpd_ps(expf4_pd(_mm256_extractf128_ps(x, 1)));
    __m256 y = _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
    // glibc's special cases: top 12 bits of |x| ≥ those of 88.0f (also inf and NaN).
    __m256i top = _mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(x), 20), _mm256_set1_epi32(0x7ff));
    int special = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(top, _mm256_set1_epi32(0x42a))));
    if (__builtin_expect(special != 0, 0)) {
        float xs[8], ys[8];
        _mm256_storeu_ps(xs, x);
        _mm256_storeu_ps(ys, y);
        PL_UNROLL
        for (int i = 0; i < 8; i++) if (special >> i & 1) ys[i] = expf(xs[i]);
        y = _mm256_loadu_ps(ys);
    }
    return y;
}

AVX2 void pl_avx2_expf(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, expf8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = expf(x[i]);
}

AVX2 static void softmax_exp(float *s, int64_t n, float mx) {
    int64_t t = 0;
    const __m256 m = _mm256_set1_ps(mx);
    for (; t + 8 <= n; t += 8) _mm256_storeu_ps(s + t, expf8(_mm256_sub_ps(_mm256_loadu_ps(s + t), m)));
    for (; t < n; t++) s[t] = expf(s[t] - mx);
}

AVX2 void pl_avx2_swiglu(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        __m256 e = expf8(_mm256_xor_ps(v, _mm256_set1_ps(-0.0f)));   // -v, exactly
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) {
        float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

AVX2 static inline __m256 ld_f16x8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

// ggml's AVX2 f16 dot of hd (a multiple of 32) elements against q already converted to floats.
AVX2 static inline float dot_f16_ggml(const __m256 *qv, const uint16_t *kt, int64_t hd) {
    __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < hd; i += 32)
        PL_UNROLL
        for (int j = 0; j < 4; j++) s[j] = _mm256_fmadd_ps(qv[i / 8 + j], ld_f16x8(kt + i + 8 * j), s[j]);
    s[0] = _mm256_add_ps(s[0], s[2]);
    s[1] = _mm256_add_ps(s[1], s[3]);
    s[0] = _mm256_add_ps(s[0], s[1]);
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(s[0]), _mm256_extractf128_ps(s[0], 1));
    t = _mm_hadd_ps(t, t);
    t = _mm_hadd_ps(t, t);
    return _mm_cvtss_f32(t);
}

// head_dim a multiple of 32, at most 512; other sizes take the portable body.
AVX2 void pl_avx2_attention(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                            int64_t hd, float scale, float *scores, float *out) {
    __m256 qv[64];
    int64_t nv = hd / 8;
    for (int64_t c = 0; c < nv; c++)
        qv[c] = _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(q + 8 * c), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    float mx = -INFINITY;
    for (int64_t t = 0; t < n_ctx; t++) {
        const uint16_t *kt = k + t * stride;
        if (t + 4 < n_ctx) _mm_prefetch((const char *)(kt + 4 * stride), _MM_HINT_T0);
        float d = dot_f16_ggml(qv, kt, hd) * scale;
        scores[t] = d;
        if (d > mx) mx = d;
    }
    float sum = 0.0f;
    softmax_exp(scores, n_ctx, mx);
    for (int64_t t = 0; t < n_ctx; t++) sum += scores[t];
    float inv = 1.0f / sum;
    __m256 o[64];
    for (int64_t c = 0; c < nv; c++) o[c] = _mm256_setzero_ps();
    for (int64_t t = 0; t < n_ctx; t++) {
        float p = _cvtsh_ss(_cvtss_sh(scores[t] * inv, _MM_FROUND_TO_NEAREST_INT));
        __m256 pv = _mm256_set1_ps(p);
        const uint16_t *vt = v + t * stride;
        for (int64_t c = 0; c < nv; c++) o[c] = _mm256_fmadd_ps(pv, ld_f16x8(vt + 8 * c), o[c]);
    }
    for (int64_t c = 0; c < nv; c++) _mm256_storeu_ps(out + 8 * c, o[c]);
}

AVX2 void pl_avx2_f32_to_f16(const float *x, uint16_t *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) out[i] = pl_f32_to_f16(x[i]);
}
#endif
