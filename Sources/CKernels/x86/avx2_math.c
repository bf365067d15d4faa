// AVX2 bodies of expf (glibc's algorithm on 4 doubles at a time: bit-identical to libm's expf, as the AVX-512 body),
// SwiGLU (bit-identical to the portable one) and F16-cache attention (one query; a tile of a prompt chunk's queries). Attention's q·k sums follow ggml's AVX2
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

// ---- A tile of queries: consecutive positions of one prompt chunk over one KV head --------------------------------
// The one-query kernel converts every K and V row from f16 again for each query and head, and reduces each dot
// product with its own hadd chain; at depth that is most of a prompt chunk's attention on this tier. Here blocks of
// TILE_ROWS rows are converted to floats once for the whole tile (up to PL_ATTENTION_TILE_PAIRS (query, head)
// pairs) and stay in L1 while every pair reads them, and eight rows' dot products are reduced together.
// Every pair's arithmetic is the one-query kernel's, operation for operation: ggml's 4 accumulators of 8 lanes (fma
// from zero at elements 8j..8j+7, then at 32+8j..), (s0+s2)+(s1+s3), the 128-bit halves added, two hadds (here
// across rows: each row's lanes are paired as hadd(t, t) pairs them), the scale; the sum position by position;
// fma(p_t, v_t, ·) position by position. So each output is bit-identical to pl_attention_f16 on this tier.
enum { TILE_ROWS = 64, TILE_HD = 64 };

// Rows 0 ..< rows of 64 f16 elements to floats, 64 apart; rows up to the next multiple of 8 are zeroed (they are
// computed with and masked off).
AVX2 static void rows_to_f32(const uint16_t *x, int64_t stride, int64_t rows, float *f) {
    for (int64_t j = 0; j < rows; j++) {
        // The next block's rows: the cache is cold at depth (a layer's K and V are read once per tile).
        _mm_prefetch((const char *)(x + (j + TILE_ROWS) * stride), _MM_HINT_T0);
        _mm_prefetch((const char *)(x + (j + TILE_ROWS) * stride + 32), _MM_HINT_T0);
        PL_UNROLL
        for (int c = 0; c < 8; c++) _mm256_store_ps(f + j * TILE_HD + 8 * c, ld_f16x8(x + j * stride + 8 * c));
    }
    for (int64_t j = rows; j % 8; j++)
        PL_UNROLL
        for (int c = 0; c < 8; c++) _mm256_store_ps(f + j * TILE_HD + 8 * c, _mm256_setzero_ps());
}

// dot_f16_ggml's vector before its horizontal steps, for one row of floats: lane l = (s0+s2)+(s1+s3) at lane l.
AVX2 static inline __attribute__((always_inline)) __m256 dot_lanes(const __m256 qv[8], const float *kf) {
    __m256 s[4];
    PL_UNROLL
    for (int j = 0; j < 4; j++) s[j] = _mm256_fmadd_ps(qv[j], _mm256_load_ps(kf + 8 * j), _mm256_setzero_ps());
    PL_UNROLL
    for (int j = 0; j < 4; j++) s[j] = _mm256_fmadd_ps(qv[4 + j], _mm256_load_ps(kf + 32 + 8 * j), s[j]);
    return _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
}

// Two rows' halves added (dot_f16_ggml's 128-bit step): [t of row a | t of row b].
AVX2 static inline __attribute__((always_inline)) __m256 halves2(__m256 ua, __m256 ub) {
    return _mm256_add_ps(_mm256_permute2f128_ps(ua, ub, 0x20), _mm256_permute2f128_ps(ua, ub, 0x31));
}

// The dot products of 8 rows (kf, 64 floats apart) with qv: lane j = row j, each with dot_f16_ggml's bits.
AVX2 static inline __attribute__((always_inline)) __m256 dot8(const __m256 qv[8], const float *kf) {
    __m256 h[2];
    PL_UNROLL
    for (int half = 0; half < 2; half++) {
        const float *r = kf + 4 * half * TILE_HD;
        __m256 t01 = halves2(dot_lanes(qv, r), dot_lanes(qv, r + TILE_HD));
        __m256 t23 = halves2(dot_lanes(qv, r + 2 * TILE_HD), dot_lanes(qv, r + 3 * TILE_HD));
        h[half] = _mm256_hadd_ps(t01, t23);   // per 128-bit lane: rows (4·half, 4·half+2) | (4·half+1, 4·half+3)
    }
    // [r0 r2 r4 r6 | r1 r3 r5 r7], each (t1+t0) + (t3+t2) as hadd(hadd(t, t)) adds them; back to row order.
    return _mm256_permutevar8x32_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// How many of the block's rows b ..< b + rows a pair that sees rows 0 ..< seen reads.
static inline int64_t rows_seen(int64_t seen, int64_t b, int64_t rows) {
    return seen <= b ? 0 : seen - b < rows ? seen - b : rows;
}

// head_dim 64, n_queries · n_heads ≤ PL_ATTENTION_TILE_PAIRS (kernels.c checks). Pair p = t·n_heads + g: query t's
// head g, which sees rows 0 ..< n_ctx + t; its scores at scores + p·ld.
AVX2 void pl_avx2_attention_tile(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads,
                                 const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx, float scale,
                                 float *scores, float *out, int64_t out_stride) {
    const int64_t pairs = n_queries * n_heads, ld = n_ctx + n_queries - 1;
    _Alignas(32) float qf[PL_ATTENTION_TILE_PAIRS][TILE_HD];
    _Alignas(32) float o[PL_ATTENTION_TILE_PAIRS][TILE_HD];
    _Alignas(32) float rf[TILE_ROWS * TILE_HD];
    int64_t seen[PL_ATTENTION_TILE_PAIRS];
    float sums[PL_ATTENTION_TILE_PAIRS];
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t t = p / n_heads, g = p % n_heads;
        seen[p] = n_ctx + t;
        PL_UNROLL
        for (int c = 0; c < 8; c++) {
            _mm256_store_ps(qf[p] + 8 * c, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(q + t * q_stride + g * TILE_HD + 8 * c),
                                                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
            _mm256_store_ps(o[p] + 8 * c, _mm256_setzero_ps());
        }
    }
    // Scores: each block of K rows converted once, then every pair that sees any of them, 8 rows at a time.
    const __m256 vscale = _mm256_set1_ps(scale);
    for (int64_t b = 0; b < ld; b += TILE_ROWS) {
        const int64_t rows = ld - b < TILE_ROWS ? ld - b : TILE_ROWS;
        rows_to_f32(k + b * stride, stride, rows, rf);
        for (int64_t p = 0; p < pairs; p++) {
            const int64_t n = rows_seen(seen[p], b, rows);
            if (n == 0) continue;
            __m256 qv[8];
            PL_UNROLL
            for (int c = 0; c < 8; c++) qv[c] = _mm256_load_ps(qf[p] + 8 * c);
            float *sp = scores + p * ld + b;
            int64_t j = 0;
            for (; j + 8 <= n; j += 8) _mm256_storeu_ps(sp + j, _mm256_mul_ps(dot8(qv, rf + j * TILE_HD), vscale));
            if (j < n) {
                float last[8];
                _mm256_storeu_ps(last, _mm256_mul_ps(dot8(qv, rf + j * TILE_HD), vscale));
                for (int64_t u = j; u < n; u++) sp[u] = last[u - j];
            }
        }
    }
    // Softmax: the maximum (order-free), glibc's expf, each sum in position order, probabilities rounded to f16.
    for (int64_t p = 0; p < pairs; p++) {
        float *sp = scores + p * ld;
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        int64_t u = 0;
        for (; u + 8 <= seen[p]; u += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(sp + u));
        float lanes[8], mx = -INFINITY;
        _mm256_storeu_ps(lanes, vmax);
        for (int i = 0; i < 8; i++) if (lanes[i] > mx) mx = lanes[i];
        for (; u < seen[p]; u++) if (sp[u] > mx) mx = sp[u];
        softmax_exp(sp, seen[p], mx);
    }
    // The sums of 4 pairs at once (4 independent chains, each in position order), over the positions all pairs see.
    for (int64_t p0 = 0; p0 < pairs; p0 += 4) {
        const int64_t m = pairs - p0 < 4 ? pairs - p0 : 4;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        const float *s0 = scores + p0 * ld, *s1 = s0 + (m > 1) * ld, *s2 = s0 + (m > 2) * 2 * ld, *s3 = s0 + (m > 3) * 3 * ld;
        for (int64_t u = 0; u < n_ctx; u++) {
            acc[0] += s0[u]; acc[1] += s1[u]; acc[2] += s2[u]; acc[3] += s3[u];
        }
        for (int64_t j = 0; j < m; j++) sums[p0 + j] = acc[j];
    }
    for (int64_t p = 0; p < pairs; p++) {
        float *sp = scores + p * ld, sum = sums[p];
        for (int64_t u = n_ctx; u < seen[p]; u++) sum += sp[u];
        const float inv = 1.0f / sum;
        const __m256 vinv = _mm256_set1_ps(inv);
        int64_t u = 0;
        for (; u + 8 <= seen[p]; u += 8)
            _mm256_storeu_ps(sp + u, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(sp + u), vinv),
                                                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
        for (; u < seen[p]; u++) sp[u] = _cvtsh_ss(_cvtss_sh(sp[u] * inv, _MM_FROUND_TO_NEAREST_INT));
    }
    // Values: each block of V rows converted once; every pair's 8 accumulators run over its rows of the block.
    const int64_t n_max = seen[pairs - 1];
    for (int64_t b = 0; b < n_max; b += TILE_ROWS) {
        const int64_t rows = n_max - b < TILE_ROWS ? n_max - b : TILE_ROWS;
        rows_to_f32(v + b * stride, stride, rows, rf);
        for (int64_t p = 0; p < pairs; p++) {
            const int64_t n = rows_seen(seen[p], b, rows);
            if (n == 0) continue;
            const float *sp = scores + p * ld + b;
            __m256 acc[8];
            PL_UNROLL
            for (int c = 0; c < 8; c++) acc[c] = _mm256_load_ps(o[p] + 8 * c);
            for (int64_t u = 0; u < n; u++) {
                const __m256 pv = _mm256_broadcast_ss(sp + u);
                PL_UNROLL
                for (int c = 0; c < 8; c++) acc[c] = _mm256_fmadd_ps(pv, _mm256_load_ps(rf + u * TILE_HD + 8 * c), acc[c]);
            }
            PL_UNROLL
            for (int c = 0; c < 8; c++) _mm256_store_ps(o[p] + 8 * c, acc[c]);
        }
    }
    for (int64_t p = 0; p < pairs; p++) {
        float *dst = out + (p / n_heads) * out_stride + (p % n_heads) * TILE_HD;
        PL_UNROLL
        for (int c = 0; c < 8; c++) _mm256_storeu_ps(dst + 8 * c, _mm256_load_ps(o[p] + 8 * c));
    }
}

AVX2 void pl_avx2_f32_to_f16(const float *x, uint16_t *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) out[i] = pl_f32_to_f16(x[i]);
}
#endif
