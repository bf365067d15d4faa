// The packed (16-row interleaved) layout of Q4_K and Q6_K matrices and its AVX-512 VNNI kernels.
//
// In the file's row layout one input meets one row's super-block at a time; decode then reads four rows far apart
// in lockstep and still reached only ~60-67% of the memory bound on Q4_K_M models. Here, as for Q4_0/Q5_0/Q8_0
// (packed.c), each super-block of a group of 16 rows is one run of bytes in which one 512-bit vpdpbusd step
// computes 4 elements of all 16 rows, so three groups far apart stream in lockstep like the other packed types.
//
// Per group of 16 rows and super-block of 256 columns (exactly the file's 16 blocks' bytes, rows past the end zero):
//   Q4_K (2304 B)  quants   32 steps s = 8j + l (j = 0..3, l = 0..7): bytes 32j+4l .. 32j+4l+3 of the file's qs for
//                           row 0, row 1, …, row 15 (64 B). Low nibbles are elements 64j+4l.. (chunk 2j, ggml lane
//                           l), high nibbles 64j+32+4l.. (chunk 2j+1, lane l).
//                  scales  the file's 12 bytes of 6-bit scales|minimums as three vectors of 16 rows × 4 bytes
//                           (bytes 0-3, 4-7, 8-11 of each row): get_scale_min_k4 then runs on 16 rows at once.
//                  d, dmin  16 f16 each.
//   Q6_K (3360 B)  quants   for j = 0..1, l = 0..7: three 64 B steps: ql bytes 64j+4l.. (chunks 4j, 4j+2), ql bytes
//                           64j+32+4l.. (chunks 4j+1, 4j+3), qh bytes 32j+4l.. (their high 2 bits), 16 rows each.
//                  scales  the 16 int8 scales as four vectors of 16 rows × 4 bytes (scales 4k .. 4k+3).
//                  d        16 f16.
//
// Arithmetic, that of pl_kq_dot_portable (so llama.cpp's x86 body): lane l of a row holds, per super-block,
// Σ_c sc(c, l) · (elements 32c+4l .. 32c+4l+3 of chunk c times the input's), in int32. Here vpdpbusd gives each
// 4-element sum D (|D| ≤ 63·128·4 < 2^15, so it is its own low 16 bits) and vpdpwssd with a vector whose 32-bit
// lanes are (scale, 0) as int16 pairs adds D·scale: the same exact integers. Float steps per super-block and lane
// are the portable body's (fma(d, L, acc) with d = d_x·d_w; Q4_K's minimums in their four lanes; Q6_K's −32 through
// the block sums), the 16 rows lane-wise, and the final sums are ggml's hsum_float_8, so outputs are bit-identical.
#include "packed.h"
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum { Q4K_GROUP_SB = 16 * 144, Q6K_GROUP_SB = 16 * 210 };

static inline int64_t group_sb_bytes(int type) { return type == PL_TYPE_Q4_K ? Q4K_GROUP_SB : Q6K_GROUP_SB; }

int pl_packed_k_owns(int type) { return type == PL_TYPE_Q4_K || type == PL_TYPE_Q6_K; }

void pl_pack_rows_k(int type, const uint8_t *src, size_t row_bytes, int64_t rows, int64_t n, uint8_t *dst,
                    int64_t g0, int64_t g1) {
    const int64_t nsb = n / 256, gb = group_sb_bytes(type);
    const int fb = type == PL_TYPE_Q4_K ? 144 : 210;
    for (int64_t g = g0; g < g1; g++) {
        int valid = rows - g * 16 < 16 ? (int)(rows - g * 16) : 16;
        // Row by row (each source row read front to back, the group's packed bytes taking the scattered writes in
        // cache), as pl_pack_rows does: reading 16 rows in step ran on the source's cache misses.
        if (valid < 16) memset(dst + (size_t)(g * nsb) * gb, 0, (size_t)(nsb * gb));   // rows past the end: zero
        for (int r = 0; r < valid; r++) {
            for (int64_t sb = 0; sb < nsb; sb++) {
                uint8_t *o = dst + (size_t)(g * nsb + sb) * gb;
                const uint8_t *b = src + (size_t)(g * 16 + r) * row_bytes + sb * fb;
                if (type == PL_TYPE_Q4_K) {
                    PL_UNROLL
                    for (int s = 0; s < 32; s++) memcpy(o + 64 * s + 4 * r, b + 16 + 4 * s, 4);   // 32j+4l = 4s
                    PL_UNROLL
                    for (int k = 0; k < 3; k++) memcpy(o + 2048 + 64 * k + 4 * r, b + 4 + 4 * k, 4);
                    memcpy(o + 2240 + 2 * r, b, 2);
                    memcpy(o + 2272 + 2 * r, b + 2, 2);
                } else {
                    PL_UNROLL
                    for (int j = 0; j < 2; j++)
                        PL_UNROLL
                        for (int l = 0; l < 8; l++) {
                            uint8_t *st = o + 192 * (8 * j + l) + 4 * r;
                            memcpy(st, b + 64 * j + 4 * l, 4);
                            memcpy(st + 64, b + 64 * j + 32 + 4 * l, 4);
                            memcpy(st + 128, b + 128 + 32 * j + 4 * l, 4);
                        }
                    PL_UNROLL
                    for (int k = 0; k < 4; k++) memcpy(o + 3072 + 64 * k + 4 * r, b + 192 + 4 * k, 4);
                    memcpy(o + 3328 + 2 * r, b + 208, 2);
                }
            }
        }
    }
}

#if defined(__x86_64__)
#define VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))

// Per group: the 8 lanes' float accumulators (16 rows each) and Q4_K's 4 minimum lanes.
typedef struct { __m512 acc[8], accm[4]; } KAcc;

// vpshufb control picking, in every 32-bit lane, bytes b0 and b1 of that lane into bytes p0/p1 (others zero).
// `b` < 0 leaves the byte zero.
VNNI512 static inline __m512i pick(int p0b, int p1b, int p2b, int p3b) {
    int32_t d[4];
    PL_UNROLL
    for (int k = 0; k < 4; k++) {
        int b[4] = {p0b, p1b, p2b, p3b};
        uint32_t v = 0;
        PL_UNROLL
        for (int i = 0; i < 4; i++) v |= (uint32_t)(b[i] < 0 ? 0x80 : 4 * k + b[i]) << (8 * i);
        d[k] = (int32_t)v;
    }
    return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)d));
}

// One Q4_K super-block of one group against T inputs (1, or 2 in a batch: the unpacking serves both), their Q8_K
// blocks xb[t], accumulated into a[t].
VNNI512 static inline __attribute__((always_inline)) void q4k_group_sb(const int T, const int prefetch, const uint8_t *o,
                                                                      const uint8_t *const xb[2], KAcc *const a[2]) {
    const uint8_t *pf = o + Q4K_GROUP_SB;   // the stream's next super-block, one line per step (not in bursts)
    if (prefetch)
        for (int i = 2048; i < Q4K_GROUP_SB; i += 64) _mm_prefetch((const char *)(pf + i), _MM_HINT_T0);
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    // get_scale_min_k4 on 16 rows: bytes 0-3 of s0/s1 are scales 0-3/4-7, of m0/m1 minimums 0-3/4-7.
    const __m512i u0 = _mm512_loadu_si512((const void *)(o + 2048)), u1 = _mm512_loadu_si512((const void *)(o + 2112));
    const __m512i u2 = _mm512_loadu_si512((const void *)(o + 2176));
    const __m512i c3f = _mm512_set1_epi32(0x3f3f3f3f), c0f = _mm512_set1_epi32(0x0f0f0f0f), c03 = _mm512_set1_epi32(0x03030303);
    __m512i s0 = _mm512_and_si512(u0, c3f);
    __m512i s1 = _mm512_or_si512(_mm512_and_si512(u2, c0f), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), c03), 4));
    __m512i m0 = _mm512_and_si512(u1, c3f);
    __m512i m1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), c0f),
                                 _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), c03), 4));
    const __m512 dmw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(o + 2272)));
    // Minimums: pm[m] = mn[2m]·(bs[4m]+bs[4m+1]) + mn[2m+1]·(bs[4m+2]+bs[4m+3]), by vpmaddwd on (mn, mn') pairs.
    PL_UNROLL
    for (int t = 0; t < T; t++) {
        float yd;
        memcpy(&yd, xb[t], 4);
        int16_t bs[16];
        memcpy(bs, xb[t] + 260, 32);
        __m512 dmin = _mm512_mul_ps(_mm512_set1_ps(-yd), dmw);
        PL_UNROLL
        for (int m = 0; m < 4; m++) {
            __m512i pair = _mm512_shuffle_epi8(m < 2 ? m0 : m1, pick(2 * (m % 2), -1, 2 * (m % 2) + 1, -1));
            int16_t p0 = (int16_t)(bs[4 * m] + bs[4 * m + 1]), p1 = (int16_t)(bs[4 * m + 2] + bs[4 * m + 3]);
            __m512i pm = _mm512_madd_epi16(pair, _mm512_set1_epi32((int32_t)(uint16_t)p0 | ((int32_t)(uint16_t)p1 << 16)));
            a[t]->accm[m] = _mm512_fmadd_ps(dmin, _mm512_cvtepi32_ps(pm), a[t]->accm[m]);
        }
    }
    __m512i S[8];   // chunk c's scale as (sc, 0) int16 pairs
    PL_UNROLL
    for (int c = 0; c < 8; c++) S[c] = _mm512_shuffle_epi8(c < 4 ? s0 : s1, pick(c % 4, -1, -1, -1));
    __m512i L[2][8];
    PL_UNROLL
    for (int t = 0; t < T; t++)
        PL_UNROLL
        for (int l = 0; l < 8; l++) L[t][l] = _mm512_setzero_si512();
    PL_UNROLL
    for (int j = 0; j < 4; j++)
        PL_UNROLL
        for (int l = 0; l < 8; l++) {
            if (prefetch) _mm_prefetch((const char *)(pf + 64 * (8 * j + l)), _MM_HINT_T0);
            __m512i v = _mm512_loadu_si512((const void *)(o + 64 * (8 * j + l)));
            __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
            PL_UNROLL
            for (int t = 0; t < T; t++) {
                int32_t xl, xh;
                memcpy(&xl, xb[t] + 4 + 64 * j + 4 * l, 4);
                memcpy(&xh, xb[t] + 4 + 64 * j + 32 + 4 * l, 4);
                __m512i Dl = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_set1_epi32(xl));
                __m512i Dh = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, _mm512_set1_epi32(xh));
                L[t][l] = _mm512_dpwssd_epi32(L[t][l], Dl, S[2 * j]);
                L[t][l] = _mm512_dpwssd_epi32(L[t][l], Dh, S[2 * j + 1]);
            }
        }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(o + 2240)));
    PL_UNROLL
    for (int t = 0; t < T; t++) {
        float yd;
        memcpy(&yd, xb[t], 4);
        __m512 d = _mm512_mul_ps(_mm512_set1_ps(yd), dw);
        PL_UNROLL
        for (int l = 0; l < 8; l++) a[t]->acc[l] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(L[t][l]), a[t]->acc[l]);
    }
}

// One Q6_K super-block of one group against T inputs (as q4k_group_sb).
VNNI512 static inline __attribute__((always_inline)) void q6k_group_sb(const int T, const int prefetch, const uint8_t *o,
                                                                      const uint8_t *const xb[2], KAcc *const a[2]) {
    const uint8_t *pf = o + Q6K_GROUP_SB;
    if (prefetch)
        for (int i = 3072; i < Q6K_GROUP_SB; i += 64) _mm_prefetch((const char *)(pf + i), _MM_HINT_T0);
    const __m512i low4 = _mm512_set1_epi8(0x0f), bits45 = _mm512_set1_epi8(0x30);
    __m512i sv[4];
    PL_UNROLL
    for (int k = 0; k < 4; k++) sv[k] = _mm512_loadu_si512((const void *)(o + 3072 + 64 * k));
    // Scale g as a signed int16 in the low half of each 32-bit lane: its byte into the high byte, arithmetic shift.
    __m512i S[16];
    PL_UNROLL
    for (int g = 0; g < 16; g++) S[g] = _mm512_srai_epi16(_mm512_shuffle_epi8(sv[g / 4], pick(-1, g % 4, -1, -1)), 8);
    // The −32 offset through the block sums: lane l starts at −32·(sc[2l]·bs[2l] + sc[2l+1]·bs[2l+1]).
    __m512i L[2][8];
    PL_UNROLL
    for (int l = 0; l < 8; l++) {
        __m512i pair = _mm512_srai_epi16(_mm512_shuffle_epi8(sv[l / 2], pick(-1, 2 * (l % 2), -1, 2 * (l % 2) + 1)), 8);
        PL_UNROLL
        for (int t = 0; t < T; t++) {
            int32_t bsp;
            memcpy(&bsp, xb[t] + 260 + 4 * l, 4);
            L[t][l] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(_mm512_madd_epi16(pair, _mm512_set1_epi32(bsp)), 5));
        }
    }
    PL_UNROLL
    for (int j = 0; j < 2; j++)
        PL_UNROLL
        for (int l = 0; l < 8; l++) {
            const uint8_t *st = o + 192 * (8 * j + l);
            if (prefetch)
                PL_UNROLL
                for (int i = 0; i < 192; i += 64) _mm_prefetch((const char *)(pf + 192 * (8 * j + l) + i), _MM_HINT_T0);
            __m512i A = _mm512_loadu_si512((const void *)st), B = _mm512_loadu_si512((const void *)(st + 64));
            __m512i H = _mm512_loadu_si512((const void *)(st + 128));
            __m512i q[4];
            q[0] = _mm512_ternarylogic_epi32(_mm512_and_si512(A, low4), _mm512_slli_epi16(H, 4), bits45, 0xF8);
            q[1] = _mm512_ternarylogic_epi32(_mm512_and_si512(B, low4), _mm512_slli_epi16(H, 2), bits45, 0xF8);
            q[2] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(A, 4), low4), H, bits45, 0xF8);
            q[3] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(B, 4), low4), _mm512_srli_epi16(H, 2), bits45, 0xF8);
            PL_UNROLL
            for (int t = 0; t < T; t++)
                PL_UNROLL
                for (int k = 0; k < 4; k++) {
                    int32_t xv;
                    memcpy(&xv, xb[t] + 4 + 128 * j + 32 * k + 4 * l, 4);
                    __m512i D = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[k], _mm512_set1_epi32(xv));
                    L[t][l] = _mm512_dpwssd_epi32(L[t][l], D, S[8 * j + 2 * k + (l >= 4)]);
                }
        }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(o + 3328)));
    PL_UNROLL
    for (int t = 0; t < T; t++) {
        float yd;
        memcpy(&yd, xb[t], 4);
        __m512 d = _mm512_mul_ps(_mm512_set1_ps(yd), dw);
        PL_UNROLL
        for (int l = 0; l < 8; l++) a[t]->acc[l] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(L[t][l]), a[t]->acc[l]);
    }
}

VNNI512 static inline __attribute__((always_inline)) void kacc_zero(KAcc *a) {
    PL_UNROLL
    for (int l = 0; l < 8; l++) a->acc[l] = _mm512_setzero_ps();
    PL_UNROLL
    for (int m = 0; m < 4; m++) a->accm[m] = _mm512_setzero_ps();
}

// ggml's hsum_float_8 lane-wise, plus (Q4_K) the minimums as the portable body adds them.
VNNI512 static inline __attribute__((always_inline)) __m512 kacc_sum(const int type, const KAcc *a) {
    const __m512 *c = a->acc;
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c[0], c[4]), _mm512_add_ps(c[2], c[6])),
                             _mm512_add_ps(_mm512_add_ps(c[1], c[5]), _mm512_add_ps(c[3], c[7])));
    if (type != PL_TYPE_Q4_K) return s;
    const __m512 *m = a->accm;
    return _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(m[0], m[2]), _mm512_add_ps(m[1], m[3])));
}

// One group against T inputs (1 or 2, a constant at each call), super-block after super-block.
VNNI512 static inline __attribute__((always_inline)) void group_dot(const int type, const int T, const int prefetch,
        const uint8_t *grp, const uint8_t *x0, const uint8_t *x1, int64_t nsb, __m512 out[2]) {
    KAcc acc[2];
    KAcc *const a[2] = {&acc[0], &acc[1]};
    PL_UNROLL
    for (int t = 0; t < T; t++) kacc_zero(a[t]);
    const int64_t gb = group_sb_bytes(type);
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *const xb[2] = {x0 + sb * PL_Q8_K_BLOCK_BYTES, x1 + sb * PL_Q8_K_BLOCK_BYTES};
        if (type == PL_TYPE_Q4_K) q4k_group_sb(T, prefetch, grp + sb * gb, xb, a);
        else q6k_group_sb(T, prefetch, grp + sb * gb, xb, a);
    }
    PL_UNROLL
    for (int t = 0; t < T; t++) out[t] = kacc_sum(type, a[t]);
}

VNNI512 static inline __attribute__((always_inline)) void store_group(float *y, int64_t rows, int64_t g, __m512 v) {
    int64_t r = g * 16, valid = rows - r < 16 ? rows - r : 16;
    _mm512_mask_storeu_ps(y + r, (__mmask16)((1u << valid) - 1), v);
}

VNNI512 static inline __attribute__((always_inline)) void matmul_k(const int type, const uint8_t *packed, int64_t rows,
        int64_t nsb, const uint8_t *xq, size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1) {
    const int64_t gbytes = nsb * group_sb_bytes(type);
    __m512 v[2];
    if (n_tokens == 1) {
        // One input: one stream, group after group. Three groups far apart in lockstep (as packed.c does) measured
        // slower here (C driver, 64 copies of 576x1536 from DRAM, one thread: Q6_K 17 vs 29 GB/s, Q4_K 29 vs 33):
        // a group's super-block is 2.3-3.3 KiB, so one stream already keeps many lines in flight, while three
        // groups' accumulators spill.
        for (int64_t g = g0; g < g1; g++) {
            group_dot(type, 1, 1, packed + g * gbytes, xq, xq, nsb, v);
            store_group(y, rows, g, v[0]);
        }
        return;
    }
    // Several inputs: a group (≤ 27 KiB for 2048 columns: in L1/L2) against every input, two at a time so each
    // unpacked weight vector serves both.
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *grp = packed + g * gbytes;
        int64_t t = 0;
        for (; t + 2 <= n_tokens; t += 2) {
            group_dot(type, 2, 0, grp, xq + (size_t)t * xq_stride, xq + (size_t)(t + 1) * xq_stride, nsb, v);
            store_group(y + t * ldy, rows, g, v[0]);
            store_group(y + (t + 1) * ldy, rows, g, v[1]);
        }
        if (t < n_tokens) {
            group_dot(type, 1, 0, grp, xq + (size_t)t * xq_stride, xq + (size_t)t * xq_stride, nsb, v);
            store_group(y + t * ldy, rows, g, v[0]);
        }
    }
}

VNNI512 void pl_matmul_packed_k(int type, const uint8_t *packed, int64_t rows, int64_t n, const uint8_t *xq,
                                size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1) {
    if (type == PL_TYPE_Q4_K) matmul_k(PL_TYPE_Q4_K, packed, rows, n / 256, xq, xq_stride, n_tokens, y, ldy, g0, g1);
    else matmul_k(PL_TYPE_Q6_K, packed, rows, n / 256, xq, xq_stride, n_tokens, y, ldy, g0, g1);
}
#endif
