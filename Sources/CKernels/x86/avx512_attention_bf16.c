// AVX-512 BF16 body of attention over a BF16 KV cache: a tile of (query, head) pairs over one KV head, head_dim 64,
// 128 or 256 (SmolLM2, Qwen2.5 and Llama 3.2 use 64 or 128, Gemma 3 256), for CPUs with AVX512_BF16 (Zen 4, Sapphire
// Rapids and later).
//
// Why: at depth a prompt chunk's attention is bound by multiply-adds (a 45-token message after 1,570 cached tokens
// spends ~2.4 G of them in SmolLM2's attention), and vdpbf16ps does two per 32-bit lane where the F16 cache's f32 fma
// does one. Q·K multiplies pairs of elements (16 key rows transposed as 32-bit pairs, so a broadcast pair of q meets
// the same pair of 16 keys); P·V multiplies pairs of positions (two V rows interleaved element by element, the pair
// of probabilities broadcast). q and the probabilities are rounded to bf16 (nearest even), as llama.cpp rounds the
// inputs of its BF16 dot products; the products are exact in f32, but vdpbf16ps adds each pair in its own order, so
// the outputs are within a bound of the portable body (pl_portable_attention_tile_bf16), not bit-identical (tested).
#include "kernels_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include "avx512_transpose.h"
#define BF16T __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

// e^x in 16 lanes within 4 ulp (n = round(x·log2 e), x − n·ln 2 in two steps, a degree-6 Taylor polynomial on
// |r| ≤ ln 2 / 2, then 2^n by vscalefps): the probabilities are rounded to bf16 (8 bits) right after, so glibc's
// correctly rounded expf, which the F16 tile keeps for its bit-identity with one-query decoding, bought nothing
// here at ~20% of the tile's time; llama.cpp's softmax likewise uses a polynomial (ggml_v_expf). Inputs at or below
// −104 give 0 (e^−104 is below the smallest float), NaN stays NaN.
BF16T static inline __attribute__((always_inline)) __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);   // x when x is NaN
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// PV_PAIRS pairs' outputs stay in registers over one 64-element column slice (4 per pair); wider heads take one
// pass over the rows per slice.
enum { HD_MAX = 256, SLICE = 64, PV_PAIRS = 6 };

// The scores of NP pairs (1 or 2) for 16 key rows: kt[e·16 + j] is 32-bit pair e (elements 2e, 2e+1) of row j, q[p]
// pair p's query as E = head_dim / 2 such pairs. Lane j of r[p] = q_p·k_j · scale.
BF16T static inline __attribute__((always_inline)) void tile_scores16(const int E, const int NP, const uint32_t *const q[2],
                                                                     const float *kt, __m512 vscale, __m512 r[2]) {
    __m512 a[2][4];
    PL_UNROLL
    for (int p = 0; p < NP; p++)
        PL_UNROLL
        for (int i = 0; i < 4; i++) a[p][i] = _mm512_setzero_ps();
    PL_UNROLL
    for (int e = 0; e < E; e++) {
        const __m512bh kk = (__m512bh)_mm512_load_ps(kt + e * 16);
        PL_UNROLL
        for (int p = 0; p < NP; p++)
            a[p][e & 3] = _mm512_dpbf16_ps(a[p][e & 3], kk, (__m512bh)_mm512_set1_epi32((int)q[p][e]));
    }
    PL_UNROLL
    for (int p = 0; p < NP; p++)
        r[p] = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(a[p][0], a[p][1]), _mm512_add_ps(a[p][2], a[p][3])), vscale);
}

// Positions u and u + 1 of V into the outputs of M pairs (pb[j]: pair j's probabilities as bf16, two per 32 bits).
// Without `has_next` position u + 1 does not exist and reads as zero. With `tail`, pairs that do not see position u
// are skipped (a pair that sees u but not u + 1 has a zero probability there).
BF16T static inline __attribute__((always_inline)) void values_step(const int M, const int tail, int has_next, int64_t u,
                                                                   const uint16_t *v, int64_t stride,
                                                                   const uint16_t *const pb[PV_PAIRS],
                                                                   const int64_t *seen, __m512 o[PV_PAIRS][4]) {
    const uint16_t *v0 = v + u * stride;
    const __m512i a0 = _mm512_loadu_si512(v0), a1 = _mm512_loadu_si512(v0 + 32);
    const __m512i b0 = has_next ? _mm512_loadu_si512(v0 + stride) : _mm512_setzero_si512();
    const __m512i b1 = has_next ? _mm512_loadu_si512(v0 + stride + 32) : _mm512_setzero_si512();
    // Lane 4L + i of w[c]: element 8L + i (+4 for odd c, +32 for c ≥ 2) of rows u and u + 1, as a pair.
    const __m512bh w[4] = {(__m512bh)_mm512_unpacklo_epi16(a0, b0), (__m512bh)_mm512_unpackhi_epi16(a0, b0),
                           (__m512bh)_mm512_unpacklo_epi16(a1, b1), (__m512bh)_mm512_unpackhi_epi16(a1, b1)};
    PL_UNROLL
    for (int j = 0; j < M; j++) {
        if (tail && u >= seen[j]) continue;
        uint32_t pp;
        memcpy(&pp, pb[j] + u, 4);
        const __m512bh pv = (__m512bh)_mm512_set1_epi32((int)pp);
        PL_UNROLL
        for (int c = 0; c < 4; c++) o[j][c] = _mm512_dpbf16_ps(o[j][c], w[c], pv);
    }
}

// Elements col ..< col + 64 of the outputs of pairs p0 ..< p0 + M (seen in ascending order) from their bf16
// probabilities.
BF16T static inline __attribute__((always_inline)) void tile_values(const int M, const float *scores, int64_t ld,
                                                                   int64_t p0, const int64_t *seen, const uint16_t *v,
                                                                   int64_t stride, int64_t rows, float *const *outp,
                                                                   int64_t col) {
    __m512 o[PV_PAIRS][4];
    PL_UNROLL
    for (int j = 0; j < M; j++)
        PL_UNROLL
        for (int c = 0; c < 4; c++) o[j][c] = _mm512_setzero_ps();
    const int64_t n_min = seen[p0], n_max = seen[p0 + M - 1];
    const uint16_t *pb[PV_PAIRS];
    PL_UNROLL
    for (int j = 0; j < M; j++) pb[j] = (const uint16_t *)(scores + (p0 + j) * ld);
    int64_t u = 0;
    for (; u + 1 < n_min; u += 2) values_step(M, 0, 1, u, v + col, stride, pb, seen + p0, o);
    for (; u < n_max; u += 2) values_step(M, 1, u + 1 < rows, u, v + col, stride, pb, seen + p0, o);
    // Back to element order: lanes 4L..4L+3 of o[2h] are elements 32h + 8L + 0..3, of o[2h + 1] 32h + 8L + 4..7.
    PL_UNROLL
    for (int j = 0; j < M; j++)
        PL_UNROLL
        for (int h = 0; h < 2; h++) {
            const __m512 lo = _mm512_shuffle_f32x4(o[j][2 * h], o[j][2 * h + 1], 0x44);   // o0.L0 o0.L1 o1.L0 o1.L1
            const __m512 hi = _mm512_shuffle_f32x4(o[j][2 * h], o[j][2 * h + 1], 0xEE);   // o0.L2 o0.L3 o1.L2 o1.L3
            _mm512_storeu_ps(outp[p0 + j] + col + 32 * h, _mm512_shuffle_f32x4(lo, lo, 0xD8));
            _mm512_storeu_ps(outp[p0 + j] + col + 32 * h + 16, _mm512_shuffle_f32x4(hi, hi, 0xD8));
        }
}

// Scores of every pair (at scores + p·ld), 16 rows at a time for every pair that sees any of them, and each pair's
// running maximum; E = head_dim / 2, qb[p] pair p's query as E bf16 pairs.
BF16T static inline __attribute__((always_inline)) void tile_scores(const int E, int64_t pairs, int64_t rows, int64_t ld,
                                                                   const int64_t *seen, uint32_t qb[][HD_MAX / 2],
                                                                   const uint16_t *k, int64_t stride, float scale,
                                                                   float *scores, __m512 *vmax) {
    _Alignas(64) float kt[HD_MAX / 2 * 16];
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int64_t b = 0; b < rows; b += 16) {
        const int64_t n = rows - b < 16 ? rows - b : 16;
        const uint16_t *kb = k + b * stride;
        for (int c = 0; c < E / 16; c++) {
            __m512 r[16];
            PL_UNROLL
            for (int j = 0; j < 16; j++) _mm_prefetch((const char *)(kb + (16 + j) * stride + 32 * c), _MM_HINT_T0);
            PL_UNROLL
            for (int j = 0; j < 16; j++)
                r[j] = j < n ? _mm512_loadu_ps((const float *)(kb + j * stride + 32 * c)) : _mm512_setzero_ps();
            transpose16(r);
            PL_UNROLL
            for (int e = 0; e < 16; e++) _mm512_store_ps(kt + (16 * c + e) * 16, r[e]);
        }
        const __mmask16 valid = (__mmask16)((1u << n) - 1);
        int64_t p = 0;
        while (p < pairs && seen[p] <= b) p++;
        for (; p < pairs; p += 2) {
            const int two = p + 1 < pairs;
            const uint32_t *qp[2] = {qb[p], qb[two ? p + 1 : p]};
            __m512 r[2];
            if (two) tile_scores16(E, 2, qp, kt, vscale, r); else tile_scores16(E, 1, qp, kt, vscale, r);
            for (int j = 0; j <= two; j++) {
                const int64_t own = seen[p + j] - b;
                const __mmask16 mine = own >= 16 ? valid : (__mmask16)(valid & ((1u << own) - 1));
                _mm512_mask_storeu_ps(scores + (p + j) * ld + b, valid, r[j]);
                vmax[p + j] = _mm512_mask_max_ps(vmax[p + j], mine, vmax[p + j], r[j]);
            }
        }
    }
}

// Pair p = t·n_heads + g: query t's head g, which sees rows 0 ..< n_ctx + t. Scores of pair p at scores + p·ld, ld the
// rows rounded up to even (the probabilities are packed in place as bf16 pairs).
BF16T void pl_avx512_attention_tile_bf16(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads,
                                         const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                                         int64_t head_dim, float scale, float *scores, float *out, int64_t out_stride) {
    const int64_t pairs = n_queries * n_heads, rows = n_ctx + n_queries - 1, ld = (rows + 1) & ~(int64_t)1;
    _Alignas(64) uint32_t qb[PL_ATTENTION_TILE_PAIRS][HD_MAX / 2];
    int64_t seen[PL_ATTENTION_TILE_PAIRS];
    float *outp[PL_ATTENTION_TILE_PAIRS];
    __m512 vmax[PL_ATTENTION_TILE_PAIRS];
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t t = p / n_heads, g = p % n_heads;
        seen[p] = n_ctx + t;
        outp[p] = out + t * out_stride + g * head_dim;
        vmax[p] = _mm512_set1_ps(-INFINITY);
        const float *qp = q + t * q_stride + g * head_dim;
        for (int64_t c = 0; c < head_dim / 32; c++)
            _mm512_store_si512((void *)(qb[p] + 16 * c),
                               (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(qp + 32 * c + 16), _mm512_loadu_ps(qp + 32 * c)));
    }
    switch (head_dim) {
    case 64: tile_scores(32, pairs, rows, ld, seen, qb, k, stride, scale, scores, vmax); break;
    case 128: tile_scores(64, pairs, rows, ld, seen, qb, k, stride, scale, scores, vmax); break;
    default: tile_scores(128, pairs, rows, ld, seen, qb, k, stride, scale, scores, vmax); break;
    }
    // Softmax (exp16 and the sum in one pass over the scores), then the probabilities rounded to bf16 and packed in
    // place, two per 32 bits; a pair that sees an odd number of rows gets a zero probability after its last.
    for (int64_t p = 0; p < pairs; p++) {
        float *sp = scores + p * ld;
        const int64_t n = seen[p];
        const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax[p]));
        __m512 vs = _mm512_setzero_ps();
        for (int64_t u = 0; u < n; u += 16) {
            const __mmask16 m = n - u >= 16 ? 0xffff : (__mmask16)((1u << (n - u)) - 1);
            const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, sp + u), mx));
            _mm512_mask_storeu_ps(sp + u, m, e);
            vs = _mm512_mask_add_ps(vs, m, vs, e);
        }
        const float sum = _mm512_reduce_add_ps(vs);
        if (n & 1) sp[n] = 0.0f;
        const __m512 vinv = _mm512_set1_ps(1.0f / sum);
        uint16_t *pb = (uint16_t *)sp;
        const int64_t n2 = (n + 1) & ~(int64_t)1;
        // Each store lands below the floats still to be read (2 bytes per value written, 4 read).
        for (int64_t u = 0; u < n2; u += 32) {
            const __mmask16 m0 = n2 - u >= 16 ? 0xffff : (__mmask16)((1u << (n2 - u)) - 1);
            const __mmask16 m1 = n2 - u >= 32 ? 0xffff : n2 - u <= 16 ? 0 : (__mmask16)((1u << (n2 - u - 16)) - 1);
            const __m512 lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, sp + u), vinv);
            const __m512 hi = _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, sp + u + 16), vinv);
            _mm512_mask_storeu_epi16(pb + u, ((__mmask32)m1 << 16) | m0, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    }
    // Values, PV_PAIRS pairs and one 64-element column slice per pass over the rows.
    for (int64_t p0 = 0; p0 < pairs; p0 += PV_PAIRS) {
        const int64_t m = pairs - p0 < PV_PAIRS ? pairs - p0 : PV_PAIRS;
        for (int64_t col = 0; col < head_dim; col += SLICE)
            switch (m) {
            case 1: tile_values(1, scores, ld, p0, seen, v, stride, rows, outp, col); break;
            case 2: tile_values(2, scores, ld, p0, seen, v, stride, rows, outp, col); break;
            case 3: tile_values(3, scores, ld, p0, seen, v, stride, rows, outp, col); break;
            case 4: tile_values(4, scores, ld, p0, seen, v, stride, rows, outp, col); break;
            case 5: tile_values(5, scores, ld, p0, seen, v, stride, rows, outp, col); break;
            default: tile_values(6, scores, ld, p0, seen, v, stride, rows, outp, col); break;
            }
    }
}
#endif
