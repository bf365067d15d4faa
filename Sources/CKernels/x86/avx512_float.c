// AVX-512 bodies of the float-input kernels: dot products and dequantization (F32, F16, BF16, Q8_0, Q4_0, Q4_1),
// F32/F16/BF16 rows against one or a few inputs over four row streams, the F32 prefill GEMM, f32 -> f16 rows. 16
// lanes per vector, so sums are reassociated against the portable body (tests bound the difference; see KernelTests).
#include "kernels_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

AVX512 static inline float f16_hw(const uint8_t *p) { return _cvtsh_ss(load_u16(p)); }

// 16 elements, or one, of an F32, F16 or BF16 row as floats (the dot product's and the few-inputs kernel's loads).
AVX512 static inline __attribute__((always_inline)) __m512 load16_as_f32(const int type, const uint8_t *p) {
    if (type == PL_TYPE_F32) return _mm512_loadu_ps((const float *)p);
    const __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return type == PL_TYPE_F16 ? _mm512_cvtph_ps(h) : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
AVX512 static inline float half_as_f32(const int type, const uint8_t *p) {
    return type == PL_TYPE_F16 ? f16_hw(p) : bf16_to_f32(load_u16(p));
}

AVX512 static inline __m512 q8_block_to_f32_lo(const int8_t *q) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)q)));
}

// Nibbles of a 4-bit block as two vectors of 16 floats: elements 0..15 (low nibbles), 16..31 (high).
AVX512 static inline void q4_block_to_f32(const uint8_t *q, __m512 *lo, __m512 *hi) {
    __m128i bytes = _mm_loadu_si128((const __m128i *)q);
    __m512i wide = _mm512_cvtepu8_epi32(bytes);
    *lo = _mm512_cvtepi32_ps(_mm512_and_si512(wide, _mm512_set1_epi32(0x0f)));
    *hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(wide, 4));
}

AVX512 float pl_avx512_dot(int type, const void *row, const float *x, int64_t n) {
    const uint8_t *p = (const uint8_t *)row;
    __m512 acc = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps();
    switch (type) {
    case PL_TYPE_F32: {
        const float *w = (const float *)row;
        int64_t i = 0;
        for (; i + 32 <= n; i += 32) {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), acc);
            acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), acc2);
        }
        float tail = 0.0f;
        for (; i < n; i++) tail += w[i] * x[i];
        return _mm512_reduce_add_ps(_mm512_add_ps(acc, acc2)) + tail;
    }
    case PL_TYPE_F16:
    case PL_TYPE_BF16: {
        int64_t i = 0;
        for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(load16_as_f32(type, p + 2 * i), _mm512_loadu_ps(x + i), acc);
        float tail = 0.0f;
        for (; i < n; i++) tail += half_as_f32(type, p + 2 * i) * x[i];
        return _mm512_reduce_add_ps(acc) + tail;
    }
    case PL_TYPE_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34) {
            const int8_t *q = (const int8_t *)(p + 2);
            __m512 d = _mm512_set1_ps(f16_hw(p));
            __m512 s = _mm512_mul_ps(q8_block_to_f32_lo(q), _mm512_loadu_ps(x + b * 32));
            s = _mm512_fmadd_ps(q8_block_to_f32_lo(q + 16), _mm512_loadu_ps(x + b * 32 + 16), s);
            acc = _mm512_fmadd_ps(d, s, acc);
        }
        return _mm512_reduce_add_ps(acc);
    case PL_TYPE_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18) {
            __m512 lo, hi;
            q4_block_to_f32(p + 2, &lo, &hi);
            __m512 eight = _mm512_set1_ps(8.0f);
            __m512 d = _mm512_set1_ps(f16_hw(p));
            __m512 s = _mm512_mul_ps(_mm512_sub_ps(lo, eight), _mm512_loadu_ps(x + b * 32));
            s = _mm512_fmadd_ps(_mm512_sub_ps(hi, eight), _mm512_loadu_ps(x + b * 32 + 16), s);
            acc = _mm512_fmadd_ps(d, s, acc);
        }
        return _mm512_reduce_add_ps(acc);
    case PL_TYPE_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, p += 20) {
            __m512 lo, hi;
            q4_block_to_f32(p + 4, &lo, &hi);
            __m512 x0 = _mm512_loadu_ps(x + b * 32), x1 = _mm512_loadu_ps(x + b * 32 + 16);
            __m512 d = _mm512_set1_ps(f16_hw(p));
            __m512 m = _mm512_set1_ps(f16_hw(p + 2));
            __m512 s = _mm512_fmadd_ps(hi, x1, _mm512_mul_ps(lo, x0));
            acc = _mm512_fmadd_ps(d, s, acc);
            acc2 = _mm512_fmadd_ps(m, _mm512_add_ps(x0, x1), acc2);
        }
        return _mm512_reduce_add_ps(_mm512_add_ps(acc, acc2));
    default: return 0.0f;
    }
}

AVX512 void pl_avx512_dequant(int type, const void *src, float *dst, int64_t n) {
    const uint8_t *p = (const uint8_t *)src;
    switch (type) {
    case PL_TYPE_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34) {
            __m512 d = _mm512_set1_ps(f16_hw(p));
            const int8_t *q = (const int8_t *)(p + 2);
            _mm512_storeu_ps(dst + b * 32, _mm512_mul_ps(d, q8_block_to_f32_lo(q)));
            _mm512_storeu_ps(dst + b * 32 + 16, _mm512_mul_ps(d, q8_block_to_f32_lo(q + 16)));
        }
        break;
    case PL_TYPE_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18) {
            __m512 lo, hi;
            q4_block_to_f32(p + 2, &lo, &hi);
            __m512 d = _mm512_set1_ps(f16_hw(p));
            __m512 eight = _mm512_set1_ps(8.0f);
            _mm512_storeu_ps(dst + b * 32, _mm512_mul_ps(d, _mm512_sub_ps(lo, eight)));
            _mm512_storeu_ps(dst + b * 32 + 16, _mm512_mul_ps(d, _mm512_sub_ps(hi, eight)));
        }
        break;
    case PL_TYPE_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, p += 20) {
            __m512 lo, hi;
            q4_block_to_f32(p + 4, &lo, &hi);
            __m512 d = _mm512_set1_ps(f16_hw(p));
            __m512 m = _mm512_set1_ps(f16_hw(p + 2));
            _mm512_storeu_ps(dst + b * 32, _mm512_fmadd_ps(d, lo, m));
            _mm512_storeu_ps(dst + b * 32 + 16, _mm512_fmadd_ps(d, hi, m));
        }
        break;
    case PL_TYPE_F16: {
        int64_t i = 0;
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 2 * i))));
        for (; i < n; i++) dst[i] = f16_hw(p + 2 * i);
        break;
    }
    default: pl_portable_dequant(type, src, dst, n); break;
    }
}


// ---- Float matrix × a few inputs (a decode step over a server's slots, a speculative verify pass) ----------------
// Each output is summed exactly as pl_avx512_dot sums it alone (F32: two 16-lane accumulators over k in steps of 32,
// added, reduced, plus the tail; F16/BF16: one accumulator over steps of 16, reduced, plus the tail), so a sequence
// decoded in a batch gets a lone decode's bits; and each weight row streams from memory once for all the inputs.
// (The prompt's kernels — the F32 panel kernel below, OpenBLAS on dequantized F16/BF16 tiles — convert every weight
// for each call and sum in another order: a 2-slot decode step of SmolLM2 F32 ran slower than one slot's, 36 against
// 58 tok/s aggregate, and a sequence's logits depended on its batch.) Four rows far apart at once, as
// a one-input matvec reads them, and two inputs at a time against them while they are in L1.
AVX512 static inline __attribute__((always_inline)) void float_few_rows(const int type, const int NI,
                                                                       const uint8_t *const w[4], const float *x,
                                                                       int64_t ldx, float *y, int64_t ldy,
                                                                       const int64_t row[4], int64_t n, int prefetch) {
    enum { S = 4 };
    __m512 a[S][2], a2[S][2];
    PL_UNROLL
    for (int j = 0; j < S; j++)
        PL_UNROLL
        for (int t = 0; t < NI; t++) a[j][t] = a2[j][t] = _mm512_setzero_ps();
    int64_t k = 0;
    if (type == PL_TYPE_F32) {
        for (; k + 32 <= n; k += 32) {
            __m512 x0[2], x1[2];
            PL_UNROLL
            for (int t = 0; t < NI; t++) {
                x0[t] = _mm512_loadu_ps(x + t * ldx + k);
                x1[t] = _mm512_loadu_ps(x + t * ldx + k + 16);
            }
            PL_UNROLL
            for (int j = 0; j < S; j++) {
                if (prefetch) {
                    _mm_prefetch((const char *)(w[j] + 4 * (k + 256)), _MM_HINT_T0);
                    _mm_prefetch((const char *)(w[j] + 4 * (k + 272)), _MM_HINT_T0);
                }
                const __m512 w0 = load16_as_f32(type, w[j] + 4 * k), w1 = load16_as_f32(type, w[j] + 4 * (k + 16));
                PL_UNROLL
                for (int t = 0; t < NI; t++) {
                    a[j][t] = _mm512_fmadd_ps(w0, x0[t], a[j][t]);
                    a2[j][t] = _mm512_fmadd_ps(w1, x1[t], a2[j][t]);
                }
            }
        }
    } else {
        for (; k + 16 <= n; k += 16) {
            __m512 x0[2];
            PL_UNROLL
            for (int t = 0; t < NI; t++) x0[t] = _mm512_loadu_ps(x + t * ldx + k);
            PL_UNROLL
            for (int j = 0; j < S; j++) {
                if (prefetch && k % 32 == 0) _mm_prefetch((const char *)(w[j] + 2 * (k + 512)), _MM_HINT_T0);
                const __m512 w0 = load16_as_f32(type, w[j] + 2 * k);
                PL_UNROLL
                for (int t = 0; t < NI; t++) a[j][t] = _mm512_fmadd_ps(w0, x0[t], a[j][t]);
            }
        }
    }
    PL_UNROLL
    for (int j = 0; j < S; j++)
        PL_UNROLL
        for (int t = 0; t < NI; t++) {
            const float *xt = x + t * ldx;
            float tail = 0.0f;
            if (type == PL_TYPE_F32) {
                const float *wf = (const float *)w[j];
                for (int64_t i = k; i < n; i++) tail += wf[i] * xt[i];
                y[t * ldy + row[j]] = _mm512_reduce_add_ps(_mm512_add_ps(a[j][t], a2[j][t])) + tail;
            } else {
                for (int64_t i = k; i < n; i++) tail += half_as_f32(type, w[j] + 2 * i) * xt[i];
                y[t * ldy + row[j]] = _mm512_reduce_add_ps(a[j][t]) + tail;
            }
        }
}

// Rows r0 ..< r1; the output of row r for input t at y[t·ldy + r − y_row0].
AVX512 static inline __attribute__((always_inline)) void float_few(const int type, const uint8_t *base, size_t row_bytes,
                                                                  const float *x, int64_t ldx, int64_t n_tokens,
                                                                  float *y, int64_t ldy, int64_t y_row0, int64_t n,
                                                                  int64_t r0, int64_t r1) {
    enum { S = 4 };
    const int64_t part = (r1 - r0) / S;
    for (int64_t i = 0; i < part; i++) {
        const uint8_t *w[S];
        int64_t row[S];
        PL_UNROLL
        for (int j = 0; j < S; j++) {
            w[j] = base + (size_t)(r0 + j * part + i) * row_bytes;
            row[j] = r0 + j * part + i - y_row0;
        }
        // The first pair of inputs asks for the rows' next bytes; later pairs find these rows in L1.
        int64_t t = 0;
        for (; t + 2 <= n_tokens; t += 2) float_few_rows(type, 2, w, x + t * ldx, ldx, y + t * ldy, ldy, row, n, t == 0);
        if (t < n_tokens) float_few_rows(type, 1, w, x + t * ldx, ldx, y + t * ldy, ldy, row, n, t == 0);
    }
    for (int64_t r = r0 + S * part; r < r1; r++)
        for (int64_t t = 0; t < n_tokens; t++)
            y[t * ldy + r - y_row0] = pl_avx512_dot(type, base + (size_t)r * row_bytes, x + t * ldx, n);
}

// float_few with the type a constant in each body (F32, F16 or BF16).
AVX512 static void float_few_typed(int type, const uint8_t *base, size_t row_bytes, const float *x, int64_t ldx,
                                   int64_t n_tokens, float *y, int64_t ldy, int64_t y_row0, int64_t n, int64_t r0,
                                   int64_t r1) {
    switch (type) {
    case PL_TYPE_F32: float_few(PL_TYPE_F32, base, row_bytes, x, ldx, n_tokens, y, ldy, y_row0, n, r0, r1); break;
    case PL_TYPE_F16: float_few(PL_TYPE_F16, base, row_bytes, x, ldx, n_tokens, y, ldy, y_row0, n, r0, r1); break;
    default: float_few(PL_TYPE_BF16, base, row_bytes, x, ldx, n_tokens, y, ldy, y_row0, n, r0, r1); break;
    }
}

AVX512 void pl_avx512_matmul_float_few(int type, const uint8_t *base, size_t row_bytes, const float *x, int64_t ldx,
                                       int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    float_few_typed(type, base, row_bytes, x, ldx, n_tokens, y, ldy, 0, n, r0, r1);
}

// One float input: F32/F16/BF16 rows go through the few-inputs body with a single input — four rows far apart at
// once, each summed exactly as pl_avx512_dot sums it: several weight streams keep more DRAM requests in flight than
// one (F32 decode reads 540 MB per token; SmolLM2 decode in alternating runs here: one stream 34 tok/s vs two 45,
// then two 40 vs four 45; F16, one row at a time before: 62-70 tok/s vs 99-104), and software prefetch runs ahead.
AVX512 void pl_avx512_matvec(int type, const uint8_t *base, size_t row_bytes, const float *x, float *y, int64_t n,
                             int64_t r0, int64_t r1) {
    if (type == PL_TYPE_F32 || type == PL_TYPE_F16 || type == PL_TYPE_BF16) {
        float_few_typed(type, base, row_bytes, x, 0, 1, y, 0, r0, n, r0, r1);
        return;
    }
    // Quantized rows against a float input, one row at a time.
    for (int64_t r = r0; r < r1; r++) y[r - r0] = pl_avx512_dot(type, base + (size_t)r * row_bytes, x, n);
}

// ---- F32 matrix × several inputs (prompt prefill with float weights) ---------------------------------
// Outer-product form: 32 weight rows are transposed into a k-major panel (in L2), then 8 inputs at a time are
// multiplied with it, 16 accumulators (8 inputs × 32 rows) in registers, one fma chain per output over k in
// order. Each output is computed by one thread in the same order whatever the split, so results do not depend
// on the thread count.
// r[i][j] ← r[j][i] for a 16×16 block of floats (four rounds of two-source permutes, each swapping the
// off-diagonal s×s sub-blocks, s = 8, 4, 2, 1).
AVX512 static inline __attribute__((always_inline)) void transpose16x16(__m512 r[16]) {
    for (int s = 8; s >= 1; s /= 2) {
        int idx_lo[16], idx_hi[16];
        PL_UNROLL
        for (int l = 0; l < 16; l++) {
            // lo row i (bit s of i clear) takes its own lanes with bit s clear, then partner's lanes (l - s);
            // hi row takes partner's lanes with bit s set (l + s) and its own lanes with bit s set.
            idx_lo[l] = (l & s) ? 16 + (l - s) : l;
            idx_hi[l] = (l & s) ? l + 16 : l + s;
        }
        __m512i il = _mm512_loadu_si512((const void *)idx_lo), ih = _mm512_loadu_si512((const void *)idx_hi);
        PL_UNROLL
        for (int i = 0; i < 16; i++) {
            if (i & s) continue;
            __m512 a = r[i], b = r[i + s];
            r[i] = _mm512_permutex2var_ps(a, il, b);
            r[i + s] = _mm512_permutex2var_ps(a, ih, b);
        }
    }
}

// One tile: T inputs × 32 rows over k in k0 ..< k1, continuing the fma chains from y when k0 > 0 (so splitting k
// into chunks leaves every output's chain, and its bits, unchanged).
AVX512 static inline __attribute__((always_inline)) void gemm_f32_tile(
        const float *x, int64_t ldx, const int T, const float *panel, int64_t k0, int64_t k1, float *y, int64_t ldy,
        __mmask16 m0, __mmask16 m1) {
    __m512 c0[8], c1[8];
    PL_UNROLL
    for (int t = 0; t < T; t++) {
        c0[t] = k0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, y + t * ldy);
        c1[t] = k0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m1, y + t * ldy + 16);
    }
    for (int64_t k = k0; k < k1; k++) {
        __m512 p0 = _mm512_loadu_ps(panel + k * 32), p1 = _mm512_loadu_ps(panel + k * 32 + 16);
        PL_UNROLL
        for (int t = 0; t < T; t++) {
            __m512 xb = _mm512_set1_ps(x[t * ldx + k]);
            c0[t] = _mm512_fmadd_ps(xb, p0, c0[t]);
            c1[t] = _mm512_fmadd_ps(xb, p1, c1[t]);
        }
    }
    PL_UNROLL
    for (int t = 0; t < T; t++) {
        _mm512_mask_storeu_ps(y + t * ldy, m0, c0[t]);
        _mm512_mask_storeu_ps(y + t * ldy + 16, m1, c1[t]);
    }
}

AVX512 void pl_avx512_gemm_f32(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw,
                                   int64_t K, float *y, int64_t ldy, int64_t r0, int64_t r1, float *panel) {
    enum { KC = 128 };   // a 16 KB slice of the panel stays in L1 while every input block passes over it
    for (int64_t rb = r0; rb < r1; rb += 32) {
        int64_t nr = r1 - rb < 32 ? r1 - rb : 32;
        // panel[k·32 + j] = w[rb + j][k], rows past r1 zero: 16×16 blocks transposed in registers.
        for (int64_t k0 = 0; k0 < K; k0 += 16) {
            int64_t nk = K - k0 < 16 ? K - k0 : 16;
            __mmask16 km = (__mmask16)(nk == 16 ? 0xffff : (1u << nk) - 1);
            for (int64_t j0 = 0; j0 < 32; j0 += 16) {
                __m512 r[16];
                PL_UNROLL
                for (int j = 0; j < 16; j++)
                    r[j] = j0 + j < nr ? _mm512_maskz_loadu_ps(km, w + (rb + j0 + j) * ldw + k0) : _mm512_setzero_ps();
                transpose16x16(r);
                for (int64_t k = 0; k < nk; k++) _mm512_storeu_ps(panel + (k0 + k) * 32 + j0, r[k]);
            }
        }
        __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1);
        __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xffff : nr <= 16 ? 0 : (1u << (nr - 16)) - 1);
        // While this panel is multiplied, the next one's rows are fetched from memory a few lines per tile
        // (otherwise the transpose waits for DRAM: a quarter of the time, measured).
        int64_t next_rows = r1 - (rb + 32) < 32 ? r1 - (rb + 32) : 32;
        int64_t line_per_row = (K * 4 + 63) / 64, pf_lines = next_rows > 0 ? next_rows * line_per_row : 0;
        int64_t tiles = ((K + KC - 1) / KC) * ((n_tokens + 7) / 8), pf_per_tile = (pf_lines + tiles - 1) / tiles, pf = 0;
        for (int64_t kc = 0; kc < K; kc += KC) {
            int64_t ke = K - kc < KC ? K : kc + KC;
            int64_t t = 0;
            for (; t + 8 <= n_tokens; t += 8) {
                for (int64_t i = 0; i < pf_per_tile && pf < pf_lines; i++, pf++)
                    _mm_prefetch((const char *)(w + (rb + 32 + pf / line_per_row) * ldw) + (pf % line_per_row) * 64, _MM_HINT_T1);
                gemm_f32_tile(x + t * ldx, ldx, 8, panel, kc, ke, y + t * ldy + rb, ldy, m0, m1);
            }
            const float *xt = x + t * ldx;
            float *yt = y + t * ldy + rb;
            switch (n_tokens - t) {
            case 1: gemm_f32_tile(xt, ldx, 1, panel, kc, ke, yt, ldy, m0, m1); break;
            case 2: gemm_f32_tile(xt, ldx, 2, panel, kc, ke, yt, ldy, m0, m1); break;
            case 3: gemm_f32_tile(xt, ldx, 3, panel, kc, ke, yt, ldy, m0, m1); break;
            case 4: gemm_f32_tile(xt, ldx, 4, panel, kc, ke, yt, ldy, m0, m1); break;
            case 5: gemm_f32_tile(xt, ldx, 5, panel, kc, ke, yt, ldy, m0, m1); break;
            case 6: gemm_f32_tile(xt, ldx, 6, panel, kc, ke, yt, ldy, m0, m1); break;
            case 7: gemm_f32_tile(xt, ldx, 7, panel, kc, ke, yt, ldy, m0, m1); break;
            default: break;
            }
        }
    }
}

AVX512 void pl_avx512_f32_to_f16(const float *x, uint16_t *out, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) out[i] = pl_f32_to_f16(x[i]);
}
#endif
