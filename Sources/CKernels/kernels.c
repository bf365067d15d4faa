#include "ckernels.h"
#include "quants_k.h"
#include <string.h>
#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// ---- scalar conversions --------------------------------------------------------------------------

float pl_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { // subnormal: renormalise
            int e = -1;
            do { e++; man <<= 1; } while ((man & 0x400) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000 | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t pl_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t man = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)half;
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t load_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

// ---- portable bodies -----------------------------------------------------------------------------

static void dequant_portable(int type, const void *src, float *dst, int64_t n) {
    const uint8_t *p = (const uint8_t *)src;
    switch (type) {
    case PL_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case PL_TYPE_F16: for (int64_t i = 0; i < n; i++) dst[i] = pl_f16_to_f32(load_u16(p + 2 * i)); break;
    case PL_TYPE_BF16: for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(load_u16(p + 2 * i)); break;
    case PL_TYPE_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34) {
            float d = pl_f16_to_f32(load_u16(p));
            const int8_t *q = (const int8_t *)(p + 2);
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * (float)q[j];
        }
        break;
    case PL_TYPE_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18) {
            float d = pl_f16_to_f32(load_u16(p));
            const uint8_t *q = p + 2;
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)((int)(q[j] & 0x0f) - 8);
                dst[b * 32 + j + 16] = d * (float)((int)(q[j] >> 4) - 8);
            }
        }
        break;
    case PL_TYPE_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, p += 20) {
            float d = pl_f16_to_f32(load_u16(p));
            float m = pl_f16_to_f32(load_u16(p + 2));
            const uint8_t *q = p + 4;
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)(q[j] & 0x0f) + m;
                dst[b * 32 + j + 16] = d * (float)(q[j] >> 4) + m;
            }
        }
        break;
    default: break;
    }
}

static float dot_portable(int type, const void *row, const float *x, int64_t n) {
    const uint8_t *p = (const uint8_t *)row;
    float sum = 0.0f;
    switch (type) {
    case PL_TYPE_F32: {
        const float *w = (const float *)row;
        for (int64_t i = 0; i < n; i++) sum += w[i] * x[i];
        break;
    }
    case PL_TYPE_F16: for (int64_t i = 0; i < n; i++) sum += pl_f16_to_f32(load_u16(p + 2 * i)) * x[i]; break;
    case PL_TYPE_BF16: for (int64_t i = 0; i < n; i++) sum += bf16_to_f32(load_u16(p + 2 * i)) * x[i]; break;
    case PL_TYPE_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34) {
            const int8_t *q = (const int8_t *)(p + 2);
            const float *xb = x + b * 32;
            float s = 0.0f;
            for (int j = 0; j < 32; j++) s += (float)q[j] * xb[j];
            sum += pl_f16_to_f32(load_u16(p)) * s;
        }
        break;
    case PL_TYPE_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18) {
            const uint8_t *q = p + 2;
            const float *xb = x + b * 32;
            float s = 0.0f;
            for (int j = 0; j < 16; j++)
                s += (float)((int)(q[j] & 0x0f) - 8) * xb[j] + (float)((int)(q[j] >> 4) - 8) * xb[j + 16];
            sum += pl_f16_to_f32(load_u16(p)) * s;
        }
        break;
    case PL_TYPE_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, p += 20) {
            const uint8_t *q = p + 4;
            const float *xb = x + b * 32;
            float s = 0.0f, xs = 0.0f;
            for (int j = 0; j < 16; j++) {
                s += (float)(q[j] & 0x0f) * xb[j] + (float)(q[j] >> 4) * xb[j + 16];
                xs += xb[j] + xb[j + 16];
            }
            sum += pl_f16_to_f32(load_u16(p)) * s + pl_f16_to_f32(load_u16(p + 2)) * xs;
        }
        break;
    default: break;
    }
    return sum;
}

// ---- AVX-512 bodies ------------------------------------------------------------------------------
#if defined(__x86_64__)
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

AVX512 static inline float f16_hw(const uint8_t *p) { return _cvtsh_ss(load_u16(p)); }

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

AVX512 static float dot_avx512(int type, const void *row, const float *x, int64_t n) {
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
        for (; i + 16 <= n; i += 16) {
            __m256i h = _mm256_loadu_si256((const __m256i *)(p + 2 * i));
            __m512 w = type == PL_TYPE_F16 ? _mm512_cvtph_ps(h)
                                           : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
            acc = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + i), acc);
        }
        float tail = 0.0f;
        for (; i < n; i++)
            tail += (type == PL_TYPE_F16 ? f16_hw(p + 2 * i) : bf16_to_f32(load_u16(p + 2 * i))) * x[i];
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

AVX512 static void dequant_avx512(int type, const void *src, float *dst, int64_t n) {
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
    default: dequant_portable(type, src, dst, n); break;
    }
}
#endif

// ---- dispatch ------------------------------------------------------------------------------------

static _Thread_local int g_force_portable = 0; // per thread: a test forcing the portable path cannot affect others

int pl_has_avx512(void) {
#if defined(__x86_64__)
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    }
    return cached && !g_force_portable;
#else
    return 0;
#endif
}

void pl_force_portable(int on) { g_force_portable = on; }

void pl_dequantize_row(int type, const void *src, float *dst, int64_t n) {
    if (pl_kq_owns(type)) { pl_kq_dequantize_row(type, src, dst, n); return; }   // Q5_x and K-quants: quants_k.c
#if defined(__x86_64__)
    if (pl_has_avx512()) { dequant_avx512(type, src, dst, n); return; }
#endif
    dequant_portable(type, src, dst, n);
}

#if defined(__x86_64__)
// Four F32 rows far apart at once (the quarters of the range), each summed exactly as dot_avx512 sums it: several
// weight streams keep more DRAM requests in flight than one (F32 decode reads 540 MB per token; SmolLM2 decode in
// alternating runs here: one stream 34 tok/s vs two 45, then two 40 vs four 45), and software prefetch runs ahead.
AVX512 static void matvec_f32_streams(const uint8_t *base, size_t row_bytes, const float *x, float *y, int64_t n,
                                      int64_t r0, int64_t r1) {
    enum { S = 4 };
    int64_t part = (r1 - r0) / S;
    for (int64_t i = 0; i < part; i++) {
        const float *w[S];
        __m512 a[S], a2[S];
        for (int j = 0; j < S; j++) {
            w[j] = (const float *)(base + (size_t)(r0 + j * part + i) * row_bytes);
            a[j] = _mm512_setzero_ps();
            a2[j] = _mm512_setzero_ps();
        }
        int64_t k = 0;
        for (; k + 32 <= n; k += 32) {
            __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
            for (int j = 0; j < S; j++) {
                _mm_prefetch((const char *)(w[j] + k + 256), _MM_HINT_T0);
                _mm_prefetch((const char *)(w[j] + k + 272), _MM_HINT_T0);
                a[j] = _mm512_fmadd_ps(_mm512_loadu_ps(w[j] + k), x0, a[j]);
                a2[j] = _mm512_fmadd_ps(_mm512_loadu_ps(w[j] + k + 16), x1, a2[j]);
            }
        }
        for (int j = 0; j < S; j++) {
            float tail = 0.0f;
            for (int64_t kk = k; kk < n; kk++) tail += w[j][kk] * x[kk];
            y[j * part + i] = _mm512_reduce_add_ps(_mm512_add_ps(a[j], a2[j])) + tail;
        }
    }
    for (int64_t r = r0 + S * part; r < r1; r++) y[r - r0] = dot_avx512(PL_TYPE_F32, base + (size_t)r * row_bytes, x, n);
}
#endif

void pl_matvec(int type, const void *w, size_t row_bytes, const float *x, float *y,
               int64_t n, int64_t r0, int64_t r1) {
    const uint8_t *base = (const uint8_t *)w;
#if defined(__x86_64__)
    if (pl_has_avx512()) {
        if (type == PL_TYPE_F32) { matvec_f32_streams(base, row_bytes, x, y, n, r0, r1); return; }
        for (int64_t r = r0; r < r1; r++) y[r - r0] = dot_avx512(type, base + (size_t)r * row_bytes, x, n);
        return;
    }
#endif
    for (int64_t r = r0; r < r1; r++) y[r - r0] = dot_portable(type, base + (size_t)r * row_bytes, x, n);
}

// ---- F32 matrix × several inputs (prompt prefill with float weights) ---------------------------------
// Outer-product form: 32 weight rows are transposed into a k-major panel (in L2), then 8 inputs at a time are
// multiplied with it, 16 accumulators (8 inputs × 32 rows) in registers, one fma chain per output over k in
// order. Each output is computed by one thread in the same order whatever the split, so results do not depend
// on the thread count.
#if defined(__x86_64__)
// r[i][j] ← r[j][i] for a 16×16 block of floats (four rounds of two-source permutes, each swapping the
// off-diagonal s×s sub-blocks, s = 8, 4, 2, 1).
AVX512 static inline __attribute__((always_inline)) void transpose16x16(__m512 r[16]) {
    for (int s = 8; s >= 1; s /= 2) {
        int idx_lo[16], idx_hi[16];
        for (int l = 0; l < 16; l++) {
            // lo row i (bit s of i clear) takes its own lanes with bit s clear, then partner's lanes (l - s);
            // hi row takes partner's lanes with bit s set (l + s) and its own lanes with bit s set.
            idx_lo[l] = (l & s) ? 16 + (l - s) : l;
            idx_hi[l] = (l & s) ? l + 16 : l + s;
        }
        __m512i il = _mm512_loadu_si512((const void *)idx_lo), ih = _mm512_loadu_si512((const void *)idx_hi);
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
    for (int t = 0; t < T; t++) {
        c0[t] = k0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, y + t * ldy);
        c1[t] = k0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m1, y + t * ldy + 16);
    }
    for (int64_t k = k0; k < k1; k++) {
        __m512 p0 = _mm512_loadu_ps(panel + k * 32), p1 = _mm512_loadu_ps(panel + k * 32 + 16);
        for (int t = 0; t < T; t++) {
            __m512 xb = _mm512_set1_ps(x[t * ldx + k]);
            c0[t] = _mm512_fmadd_ps(xb, p0, c0[t]);
            c1[t] = _mm512_fmadd_ps(xb, p1, c1[t]);
        }
    }
    for (int t = 0; t < T; t++) {
        _mm512_mask_storeu_ps(y + t * ldy, m0, c0[t]);
        _mm512_mask_storeu_ps(y + t * ldy + 16, m1, c1[t]);
    }
}

AVX512 static void gemm_f32_avx512(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw,
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
#endif

int pl_gemm_f32_supported(void) { return pl_has_avx512(); }

void pl_gemm_f32(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw, int64_t K, float *y,
                 int64_t ldy, int64_t r0, int64_t r1, float *panel) {
#if defined(__x86_64__)
    if (pl_has_avx512()) { gemm_f32_avx512(x, ldx, n_tokens, w, ldw, K, y, ldy, r0, r1, panel); return; }
#endif
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t r = r0; r < r1; r++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc = fmaf(x[t * ldx + k], w[r * ldw + k], acc);
            y[t * ldy + r] = acc;
        }
}

void pl_dequantize_rows(int type, const void *w, size_t row_bytes, float *dst,
                        int64_t n, int64_t r0, int64_t r1) {
    const uint8_t *base = (const uint8_t *)w;
    for (int64_t r = r0; r < r1; r++) pl_dequantize_row(type, base + (size_t)r * row_bytes, dst + (r - r0) * n, n);
}

// ---- quantized activations and integer dot products (llama.cpp's numerics) -------------------------

int pl_activation_type(int weight_type) {
    switch (weight_type) {
    case PL_TYPE_Q8_0: case PL_TYPE_Q4_0: case PL_TYPE_Q5_0: return PL_TYPE_Q8_0;
    case PL_TYPE_Q4_1: case PL_TYPE_Q5_1: return PL_TYPE_Q8_1;
    case PL_TYPE_Q2_K: case PL_TYPE_Q3_K: case PL_TYPE_Q4_K: case PL_TYPE_Q5_K: case PL_TYPE_Q6_K: return PL_TYPE_Q8_K;
    default: return -1;
    }
}

static inline void store_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

// As ggml's x86 SIMD path does it (the reference ran that path): scale by 127/amax, round half to even.
static void quantize_block(const float *x, int8_t *q, float *d_out, int *sum_out) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) { float a = fabsf(x[j]); if (a > amax) amax = a; }
    float d = amax / 127.0f;
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < 32; j++) { q[j] = (int8_t)nearbyintf(x[j] * id); sum += q[j]; }
    *d_out = d;
    *sum_out = sum;
}

#if defined(__x86_64__)
// The same quantization, 32 lanes at a time (identical results: max, 127/amax, round half to even).
AVX512 static void quantize_blocks_avx512(const float *x, uint8_t *out, int64_t n, int with_sum) {
    const int bytes = with_sum ? PL_Q8_1_BLOCK_BYTES : PL_Q8_0_BLOCK_BYTES;
    const int qoff = with_sum ? 4 : 2;
    for (int64_t b = 0; b < n / 32; b++, out += bytes) {
        __m512 v0 = _mm512_loadu_ps(x + b * 32), v1 = _mm512_loadu_ps(x + b * 32 + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m512 mul = _mm512_set1_ps(id);
        __m512i q0 = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v0, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v1, mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm_storeu_si128((__m128i *)(out + qoff), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(out + qoff + 16), _mm512_cvtsepi32_epi8(q1));
        store_u16(out, pl_f32_to_f16(d));
        if (with_sum) {
            int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            store_u16(out + 2, pl_f32_to_f16(d * (float)sum));
        }
    }
}
#endif

void pl_quantize_q8_0(const float *x, void *out, int64_t n) {
#if defined(__x86_64__)
    if (pl_has_avx512()) { quantize_blocks_avx512(x, (uint8_t *)out, n, 0); return; }
#endif
    uint8_t *p = (uint8_t *)out;
    for (int64_t b = 0; b < n / 32; b++, p += PL_Q8_0_BLOCK_BYTES) {
        float d; int sum;
        quantize_block(x + b * 32, (int8_t *)(p + 2), &d, &sum);
        store_u16(p, pl_f32_to_f16(d));
    }
}

void pl_quantize_q8_1(const float *x, void *out, int64_t n) {
#if defined(__x86_64__)
    if (pl_has_avx512()) { quantize_blocks_avx512(x, (uint8_t *)out, n, 1); return; }
#endif
    uint8_t *p = (uint8_t *)out;
    for (int64_t b = 0; b < n / 32; b++, p += PL_Q8_1_BLOCK_BYTES) {
        float d; int sum;
        quantize_block(x + b * 32, (int8_t *)(p + 4), &d, &sum);
        store_u16(p, pl_f32_to_f16(d));
        store_u16(p + 2, pl_f32_to_f16(d * (float)sum));
    }
}

static float dotq_portable(int type, const uint8_t *w, const uint8_t *xq, int64_t nb) {
    float sum = 0.0f;
    switch (type) {
    case PL_TYPE_Q8_0:
        for (int64_t b = 0; b < nb; b++, w += 34, xq += 34) {
            const int8_t *a = (const int8_t *)(w + 2), *c = (const int8_t *)(xq + 2);
            int s = 0;
            for (int j = 0; j < 32; j++) s += a[j] * c[j];
            sum += (float)s * (pl_f16_to_f32(load_u16(w)) * pl_f16_to_f32(load_u16(xq)));
        }
        break;
    case PL_TYPE_Q4_0:
        for (int64_t b = 0; b < nb; b++, w += 18, xq += 34) {
            const uint8_t *a = w + 2;
            const int8_t *c = (const int8_t *)(xq + 2);
            int s = 0;
            for (int j = 0; j < 16; j++) s += ((a[j] & 0x0f) - 8) * c[j] + ((a[j] >> 4) - 8) * c[j + 16];
            sum += (float)s * (pl_f16_to_f32(load_u16(w)) * pl_f16_to_f32(load_u16(xq)));
        }
        break;
    case PL_TYPE_Q4_1:
        for (int64_t b = 0; b < nb; b++, w += 20, xq += 36) {
            const uint8_t *a = w + 4;
            const int8_t *c = (const int8_t *)(xq + 4);
            int s = 0;
            for (int j = 0; j < 16; j++) s += (a[j] & 0x0f) * c[j] + (a[j] >> 4) * c[j + 16];
            sum += (float)s * (pl_f16_to_f32(load_u16(w)) * pl_f16_to_f32(load_u16(xq)))
                 + pl_f16_to_f32(load_u16(w + 2)) * pl_f16_to_f32(load_u16(xq + 2));
        }
        break;
    default: break;
    }
    return sum;
}

#if defined(__x86_64__)
#define AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,f16c,fma")))

AVX512VNNI static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}


// R rows against one quantized input at once: the input block is loaded and its scale converted once for all
// R rows, and R independent accumulator chains keep the FMA units busy (one row alone is latency-bound).
AVX512VNNI static inline __attribute__((always_inline)) void dotq_rows(
        int type, const int R, const uint8_t *w, size_t row_bytes, const uint8_t *xq, int64_t nb, float *out) {
    __m256 acc[4];
    float msum[4] = {0, 0, 0, 0};
    for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    if (type == PL_TYPE_Q4_1) {
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *xb = xq + b * 36;
            __m256i c = _mm256_loadu_si256((const __m256i *)(xb + 4));
            float dx = f16_hw(xb), sx = f16_hw(xb + 2);
            for (int i = 0; i < R; i++) {
                const uint8_t *wb = w + (size_t)i * row_bytes + b * 20;
                __m128i raw = _mm_loadu_si128((const __m128i *)(wb + 4));
                __m256i a = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low4);
                __m256i sum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, c);
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(f16_hw(wb) * dx), _mm256_cvtepi32_ps(sum), acc[i]);
                msum[i] += f16_hw(wb + 2) * sx;
            }
        }
    } else if (type == PL_TYPE_Q4_0) {
        const __m256i eight = _mm256_set1_epi8(8);
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *xb = xq + b * 34;
            __m256i c = _mm256_loadu_si256((const __m256i *)(xb + 2));
            // Σ(q−8)·c = Σq·c − 8·Σc; the second term is shared by all rows.
            __m256i csum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), eight, c);
            float dx = f16_hw(xb);
            for (int i = 0; i < R; i++) {
                const uint8_t *wb = w + (size_t)i * row_bytes + b * 18;
                __m128i raw = _mm_loadu_si128((const __m128i *)(wb + 2));
                __m256i a = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low4);
                __m256i sum = _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), a, c), csum);
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(f16_hw(wb) * dx), _mm256_cvtepi32_ps(sum), acc[i]);
            }
        }
    } else { // Q8_0 × Q8_0: |w| against x with w's sign moved onto it, so the products fit u8·s8.
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *xb = xq + b * 34;
            __m256i c = _mm256_loadu_si256((const __m256i *)(xb + 2));
            float dx = f16_hw(xb);
            for (int i = 0; i < R; i++) {
                const uint8_t *wb = w + (size_t)i * row_bytes + b * 34;
                __m256i a = _mm256_loadu_si256((const __m256i *)(wb + 2));
                __m256i sum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(a, a), _mm256_sign_epi8(c, a));
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(f16_hw(wb) * dx), _mm256_cvtepi32_ps(sum), acc[i]);
            }
        }
    }
    for (int i = 0; i < R; i++) out[i] = hsum256(acc[i]) + msum[i];
}

AVX512VNNI static void matmul_q_vnni(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                                     int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1) {
    float out[4];
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        for (int64_t t = 0; t < n_tokens; t++) {
            const uint8_t *x = xq + (size_t)t * xq_stride;
            switch (type) {
            case PL_TYPE_Q4_1: dotq_rows(PL_TYPE_Q4_1, 4, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            case PL_TYPE_Q4_0: dotq_rows(PL_TYPE_Q4_0, 4, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            default: dotq_rows(PL_TYPE_Q8_0, 4, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            }
            for (int i = 0; i < 4; i++) y[t * ldy + r + i] = out[i];
        }
    }
    for (; r < r1; r++) {
        for (int64_t t = 0; t < n_tokens; t++) {
            const uint8_t *x = xq + (size_t)t * xq_stride;
            switch (type) {
            case PL_TYPE_Q4_1: dotq_rows(PL_TYPE_Q4_1, 1, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            case PL_TYPE_Q4_0: dotq_rows(PL_TYPE_Q4_0, 1, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            default: dotq_rows(PL_TYPE_Q8_0, 1, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;
            }
            y[t * ldy + r] = out[0];
        }
    }
}
static int has_vnni(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }
    return cached && !g_force_portable;
}
#endif

void pl_matmul_q(int type, const void *w, size_t row_bytes, const void *xq, size_t xq_stride, int64_t n_tokens,
                 float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    const uint8_t *base = (const uint8_t *)w;
    const uint8_t *x = (const uint8_t *)xq;
    if (pl_kq_owns(type)) { pl_kq_matmul(type, base, row_bytes, x, xq_stride, n_tokens, y, ldy, n, r0, r1); return; }
    int64_t nb = n / 32;
#if defined(__x86_64__)
    if (has_vnni()) {
        matmul_q_vnni(type, base, row_bytes, x, xq_stride, n_tokens, y, ldy, nb, r0, r1);
        return;
    }
#endif
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = 0; t < n_tokens; t++)
            y[t * ldy + r] = dotq_portable(type, base + (size_t)r * row_bytes, x + (size_t)t * xq_stride, nb);
}

void pl_matvec_q(int type, const void *w, size_t row_bytes, const void *xq, float *y,
                 int64_t n, int64_t r0, int64_t r1) {
    // y holds rows r0 ..< r1 only: shift it so matmul's y[r] lands at y[r - r0].
    pl_matmul_q(type, w, row_bytes, xq, 0, 1, y - r0, 0, n, r0, r1);
}

#if defined(__x86_64__)
AVX512 static void f32_to_f16_avx512(const float *x, uint16_t *out, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) out[i] = pl_f32_to_f16(x[i]);
}
#endif

void pl_f32_to_f16_row(const float *x, uint16_t *out, int64_t n) {
#if defined(__x86_64__)
    if (pl_has_avx512()) { f32_to_f16_avx512(x, out, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) out[i] = pl_f32_to_f16(x[i]);
}

// ---- expf, 16 lanes at a time, bit-identical to glibc's --------------------------------------------
// The softmax and SwiGLU call expf thousands of times per token; libm's scalar call was ~25% of attention. This is
// glibc's expf (sysdeps/ieee754/flt-32/e_expf.c, as its FMA build compiles it: the same double-precision steps,
// fused where that build fuses them, and the same table), so results do not move by a bit. Lanes glibc sends down
// its special-case path (|x| ≥ 88, inf, NaN) are recomputed by expf itself. Tested against expf on a sweep of
// every float bit pattern.
#if defined(__x86_64__)
static const uint64_t expf_table[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
};

AVX512 static inline __m512d expf8_pd(__m256 x) {
    const __m512d inv_ln2_n = _mm512_castsi512_pd(_mm512_set1_epi64(0x40471547652b82fe)); // 32/ln 2
    const __m512d shift = _mm512_castsi512_pd(_mm512_set1_epi64(0x4338000000000000));     // 0x1.8p52
    const __m512d c0 = _mm512_castsi512_pd(_mm512_set1_epi64(0x3ebc6af84b912394));
    const __m512d c1 = _mm512_castsi512_pd(_mm512_set1_epi64(0x3f2ebfce50fac4f3));
    const __m512d c2 = _mm512_castsi512_pd(_mm512_set1_epi64(0x3f962e42ff0c52d6));
    const __m512i t0 = _mm512_loadu_si512((const void *)expf_table), t1 = _mm512_loadu_si512((const void *)(expf_table + 8));
    const __m512i t2 = _mm512_loadu_si512((const void *)(expf_table + 16)), t3 = _mm512_loadu_si512((const void *)(expf_table + 24));
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
        for (int i = 0; i < 16; i++) if (special >> i & 1) ys[i] = expf(xs[i]);
        y = _mm512_loadu_ps(ys);
    }
    return y;
}

AVX512 static void expf_avx512(const float *x, float *y, int64_t n) {
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

AVX512 static void swiglu_avx512(float *g, const float *u, int64_t n) {
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
#endif

void pl_expf_row(const float *x, float *y, int64_t n) {
#if defined(__x86_64__)
    if (pl_has_avx512()) { expf_avx512(x, y, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
}

void pl_swiglu(float *g, const float *u, int64_t n) {
#if defined(__x86_64__)
    if (pl_has_avx512()) { swiglu_avx512(g, u, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) {
        float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

static void attention_portable(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                               int64_t hd, float scale, float *scores, float *out) {
    float qh[512];
    for (int64_t j = 0; j < hd; j++) qh[j] = pl_f16_to_f32(pl_f32_to_f16(q[j]));
    float mx = -INFINITY;
    for (int64_t t = 0; t < n_ctx; t++) {
        const uint16_t *kt = k + t * stride;
        float d = 0.0f;
        for (int64_t j = 0; j < hd; j++) d += qh[j] * pl_f16_to_f32(kt[j]);
        d *= scale;
        scores[t] = d;
        if (d > mx) mx = d;
    }
    float sum = 0.0f;
    for (int64_t t = 0; t < n_ctx; t++) { float e = expf(scores[t] - mx); scores[t] = e; sum += e; }
    float inv = 1.0f / sum;
    for (int64_t j = 0; j < hd; j++) out[j] = 0.0f;
    for (int64_t t = 0; t < n_ctx; t++) {
        float p = pl_f16_to_f32(pl_f32_to_f16(scores[t] * inv));
        const uint16_t *vt = v + t * stride;
        for (int64_t j = 0; j < hd; j++) out[j] += p * pl_f16_to_f32(vt[j]);
    }
}

#if defined(__x86_64__)
// head_dim a multiple of 16 (64 for every model here); other sizes take the portable body.
AVX512 static void attention_avx512(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
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
#endif

#if defined(__x86_64__)
// Sixteen horizontal sums at once: lane l of the result is the sum of v[p(l)] for p = (0 4 8 12 1 5 9 13 2 6 10 14
// 3 7 11 15), each added in _mm512_reduce_add_ps's tree order (lanes i + i+8, then i + i+4, i + i+2, i + i+1), so
// every sum has exactly the bits the intrinsic gives (checked against it in the tests, through attention).
AVX512 static inline __attribute__((always_inline)) __m512 reduce_add_16(const __m512 v[16]) {
    __m512 w[8], x[4], y[2];
    for (int j = 0; j < 8; j++)
        w[j] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0x44), _mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0xEE));
    for (int m = 0; m < 4; m++)
        x[m] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], 0x88), _mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], 0xDD));
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
    for (int g = 0; g < n_heads; g++) {
        mx[g] = -INFINITY;
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
    for (int g = 0; g < n_heads; g++) vmax[g] = _mm512_set1_ps(-INFINITY);
    for (; t + 16 <= n_ctx; t += 16) {
        __m512 kf[16][NV];
        for (int j = 0; j < 16; j++) {
            const uint16_t *kt = k + (t + j) * stride;
            // The cache is cold (a token streams ~100 MB of weights between two visits of a layer): fetch keys
            // a step ahead, and these rows' values for the second pass.
            _mm_prefetch((const char *)(kt + 16 * stride), _MM_HINT_T0);
            _mm_prefetch((const char *)(kt + 16 * stride + 32), _MM_HINT_T0);
            _mm_prefetch((const char *)(v + (t + j) * stride), _MM_HINT_T1);
            _mm_prefetch((const char *)(v + (t + j) * stride + 32), _MM_HINT_T1);
            for (int c = 0; c < NV; c++) kf[j][c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kt + 16 * c)));
        }
        for (int g = 0; g < n_heads; g++) {
            __m512 acc[16];
            for (int j = 0; j < 16; j++) {
                acc[j] = _mm512_setzero_ps();
                for (int c = 0; c < NV; c++) acc[j] = _mm512_fmadd_ps(qv[g][c], kf[j][c], acc[j]);
            }
            __m512 d = _mm512_mul_ps(_mm512_permutexvar_ps(order, reduce_add_16(acc)), vscale);
            _mm512_storeu_ps(scores + g * n_ctx + t, d);
            vmax[g] = _mm512_max_ps(vmax[g], d);
        }
    }
    for (int g = 0; g < n_heads; g++) mx[g] = _mm512_reduce_max_ps(vmax[g]);
    for (; t < n_ctx; t++) {
        const uint16_t *kt = k + t * stride;
        __m512 kv[NV];
        for (int c = 0; c < NV; c++) kv[c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(kt + 16 * c)));
        for (int g = 0; g < n_heads; g++) {
            __m512 acc = _mm512_setzero_ps();
            for (int c = 0; c < NV; c++) acc = _mm512_fmadd_ps(qv[g][c], kv[c], acc);
            float d = _mm512_reduce_add_ps(acc) * scale;
            scores[g * n_ctx + t] = d;
            if (d > mx[g]) mx[g] = d;
        }
    }
    // Probabilities, rounded to f16 as llama.cpp's F16 V multiply rounds them.
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
    for (int g = 0; g < n_heads; g++)
        for (int c = 0; c < NV; c++) o[g][c] = _mm512_setzero_ps();
    for (int64_t u = 0; u < n_ctx; u++) {
        const uint16_t *vt = v + u * stride;
        __m512 vv[NV];
        for (int c = 0; c < NV; c++) vv[c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vt + 16 * c)));
        for (int g = 0; g < n_heads; g++) {
            __m512 pv = _mm512_set1_ps(scores[g * n_ctx + u]);
            for (int c = 0; c < NV; c++) o[g][c] = _mm512_fmadd_ps(pv, vv[c], o[g][c]);
        }
    }
    for (int g = 0; g < n_heads; g++)
        for (int c = 0; c < NV; c++) _mm512_storeu_ps(out + g * HD + 16 * c, o[g][c]);
}

AVX512 static void attention_group_avx512(const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v,
                                          int64_t stride, int64_t n_ctx, float scale, float *scores, float *out) {
    switch (n_heads) {
    case 1: attention_group_body(q, 1, k, v, stride, n_ctx, scale, scores, out); break;
    case 2: attention_group_body(q, 2, k, v, stride, n_ctx, scale, scores, out); break;
    case 3: attention_group_body(q, 3, k, v, stride, n_ctx, scale, scores, out); break;
    default: attention_group_body(q, 4, k, v, stride, n_ctx, scale, scores, out); break;
    }
}
#endif

void pl_attention_group_f16(const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v, int64_t stride,
                            int64_t n_ctx, int64_t head_dim, float scale, float *scores, float *out) {
#if defined(__x86_64__)
    if (pl_has_avx512() && head_dim == 64) {
        for (int64_t g0 = 0; g0 < n_heads; g0 += 4) {
            int64_t m = n_heads - g0 < 4 ? n_heads - g0 : 4;
            attention_group_avx512(q + g0 * head_dim, m, k, v, stride, n_ctx, scale, scores, out + g0 * head_dim);
        }
        return;
    }
#endif
    for (int64_t g = 0; g < n_heads; g++)
        pl_attention_f16(q + g * head_dim, k, v, stride, n_ctx, head_dim, scale, scores, out + g * head_dim);
}

void pl_attention_f16(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                      int64_t head_dim, float scale, float *scores, float *out) {
#if defined(__x86_64__)
    if (pl_has_avx512() && head_dim % 16 == 0 && head_dim <= 512) {
        attention_avx512(q, k, v, stride, n_ctx, head_dim, scale, scores, out);
        return;
    }
#endif
    if (head_dim <= 512) attention_portable(q, k, v, stride, n_ctx, head_dim, scale, scores, out);
}



void pl_cpu_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// The packed (16-row interleaved) layout and its kernels are in packed.c.
