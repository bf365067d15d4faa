// AVX2 kernels over the packed layout (packed.c: Q8_0, Q4_0, Q4_1, Q5_0; packed_k.c: Q4_K), which the AVX2 tier
// repacks into at load as the AVX-512 VNNI tier does (same bytes, same packed-weight cache).
//
// Why: the row kernels (quant_rows_body.h, avx2_quants_k.c) spend per row and block a gather of the f16 scale (the
// four rows' converted and multiplied together, then a vpermps broadcast per row; Q4_1: the minimums likewise), a
// nibble unpack and a cross-lane insert, for 32 multiply-adds: decode measured compute-bound, far below the memory bound
// (perf: the row kernel ~all of the matmul time). The packed layout holds, per group of 16 rows and block, 4 bytes of
// each row per 64-byte step: a 256-bit load is lane l (elements 4l..4l+3, ggml's 256-bit lane) of 8 rows, so one
// broadcast of the input's 4 bytes feeds 8 rows, the 8 rows' scales convert with one vcvtph2ps and multiply the
// input's scale in one vmulps, and each 256-bit accumulator holds lane l of 8 rows.
//
// Arithmetic: per row, exactly ggml's AVX2 dot product (what the row kernels compute): lane l of each block is its
// exact int32 sum (vpmaddubsw + vpmaddwd; Q4_0/Q5_0's −8/−16 offsets through the input's sums, Q8_0 through the sign
// trick, both exact), fma'd with d_w·d_x into float lane l; ggml's hsum_float_8 lane-wise at the end; Q4_1's
// minimum terms a separate fma chain; Q4_K per super-block lane l = Σ_c sc_c·(chunk c's 4 elements of lane l), its
// minimums in four lanes. So every output is bit-identical to the row kernels (Tests/CKernelsDriver checks it).
// A group is two halves of 8 rows, each a pass over the blocks (8 float accumulators for the lanes: 16 rows' worth
// would spill AVX2's 16 registers); both passes find the group's lines in L1 (a group is ≤ ~28 KiB for the widths
// used here), each prefetching half of the next group (Q4_x/Q5_0; Q4_K prefetches ahead of its first pass), so the
// DRAM stream does not stop while the second pass runs.
#include "packed.h"
#include <string.h>
#if defined(__x86_64__)
#include "x86/avx2_common.h"
#define AVX2 PL_AVX2_ATTR

static inline int32_t ld32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }
static inline uint32_t ldu32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

AVX2 static inline __m256 f16x8(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

// ggml's hsum_float_8 for 8 rows lane-wise: ((l4+l0) + (l6+l2)) + ((l5+l1) + (l7+l3)).
AVX2 static inline __attribute__((always_inline)) __m256 lanes_sum(const __m256 a[8]) {
    return _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[4], a[0]), _mm256_add_ps(a[6], a[2])),
                         _mm256_add_ps(_mm256_add_ps(a[5], a[1]), _mm256_add_ps(a[7], a[3])));
}

// ---- Q8_0, Q4_0, Q4_1, Q5_0 ------------------------------------------------------------------------------------
// Half h (rows 8h..8h+7) of one group against one input, all nb blocks.
AVX2 static inline __attribute__((always_inline)) __m256 half_dot(const int type, const int prefetch,
        const uint8_t *grp, const int h, const uint8_t *xq, int64_t nb) {
    __m256 acc[8], summs = _mm256_setzero_ps();
    PL_UNROLL
    for (int l = 0; l < 8; l++) acc[l] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    const int64_t bb = pl_packed_block_bytes(type);
    const int soff = pl_packed_scale_offset(type);
    const int xbytes = type == PL_TYPE_Q4_1 ? 36 : 34, qoff = type == PL_TYPE_Q4_1 ? 4 : 2;
    const int64_t gbytes = nb * bb;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *gb = grp + b * bb, *xb = xq + b * xbytes, *xs = xb + qoff;
        // The next group, half of it in each pass, as half_dot_q5_0 does (ahead of the first pass only, Q4_1 read
        // DRAM at half its in-cache speed).
        if (prefetch)
            for (int64_t o = 0; o < bb / 2; o += 64)
                _mm_prefetch((const char *)(grp + gbytes + (h * nb + b) * (bb / 2) + o), _MM_HINT_T0);
        const __m256 scale = _mm256_mul_ps(f16x8(gb + soff + 16 * h), _mm256_set1_ps(_cvtsh_ss(ld16(xb))));
        if (type == PL_TYPE_Q8_0) {
            const __m256i flip = _mm256_set1_epi8((char)0x80);
            PL_UNROLL
            for (int k = 0; k < 8; k++) {
                // Stored offset by 128 (VNNI's u8 side); back to signed, then ggml's |w| · (x with w's sign).
                __m256i w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(gb + 64 * k + 32 * h)), flip);
                __m256i xk = _mm256_set1_epi32(ld32(xs + 4 * k));
                __m256i S = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xk, w)), ones);
                acc[k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(S), acc[k]);
            }
            continue;
        }
        PL_UNROLL
        for (int k = 0; k < 4; k++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(gb + 64 * k + 32 * h));
            __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
            __m256i xl = _mm256_set1_epi32(ld32(xs + 4 * k)), xh = _mm256_set1_epi32(ld32(xs + 16 + 4 * k));
            __m256i pl = _mm256_maddubs_epi16(lo, xl), ph;
            if (type == PL_TYPE_Q5_0) {
                // 5th bits (this half's 32 bits of the step's masks) to +16; then (q−16)·x = q·x − 16·x pairwise
                // (exact in int16: |pair| ≤ 2·16·128).
                const __m256i sixteen = _mm256_set1_epi8(16);
                lo = _mm256_or_si256(lo, _mm256_and_si256(pl_avx2_bytes_from_bits(ldu32(gb + 256 + 16 * k + 4 * h)), sixteen));
                hi = _mm256_or_si256(hi, _mm256_and_si256(pl_avx2_bytes_from_bits(ldu32(gb + 256 + 16 * k + 8 + 4 * h)), sixteen));
                pl = _mm256_sub_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(sixteen, xl));
                ph = _mm256_sub_epi16(_mm256_maddubs_epi16(hi, xh), _mm256_maddubs_epi16(sixteen, xh));
            } else if (type == PL_TYPE_Q4_0) {
                const __m256i eight = _mm256_set1_epi8(8);
                pl = _mm256_sub_epi16(pl, _mm256_maddubs_epi16(eight, xl));
                ph = _mm256_sub_epi16(_mm256_maddubs_epi16(hi, xh), _mm256_maddubs_epi16(eight, xh));
            } else {
                ph = _mm256_maddubs_epi16(hi, xh);
            }
            acc[k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(_mm256_madd_epi16(pl, ones)), acc[k]);
            acc[k + 4] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(_mm256_madd_epi16(ph, ones)), acc[k + 4]);
        }
        if (type == PL_TYPE_Q4_1)   // fused, as ggml's FMA build computes d_min·s_x + summs
            summs = _mm256_fmadd_ps(f16x8(gb + soff + 32 + 16 * h), _mm256_set1_ps(_cvtsh_ss(ld16(xb + 2))), summs);
    }
    __m256 s = lanes_sum(acc);
    return type == PL_TYPE_Q4_1 ? _mm256_add_ps(s, summs) : s;
}

// ---- Q5_0 --------------------------------------------------------------------------------------------------------
// Half h of one group against one input. Decode of Q5_0 is bound by instructions on Zen 4 (its row kernel ran ~12
// GB/s from cache or DRAM, where Q8_0's reaches the memory bound), chiefly on the two pipes vpmaddubsw, vpmaddwd and
// vfmadd share: here a 4-byte lane of 8 rows costs one of each. The −16 offset comes off the int32 lane as 16·(the
// input's 4 elements of that lane), made per block for all 8 lanes (one vpmaddubsw + vpmaddwd) a chunk of blocks
// ahead, stored, and broadcast to the rows by a load — instead of a second vpmaddubsw per lane (the packed kernel's
// old way) or a lane permute per lane; exact either way, so the same int32 sums.
enum { Q5_CORR_CHUNK = 32 };

AVX2 static inline __attribute__((always_inline)) __m256 half_dot_q5_0(const int prefetch, const uint8_t *grp,
        const int h, const uint8_t *xq, int64_t nb) {
    __m256 acc[8];
    PL_UNROLL
    for (int l = 0; l < 8; l++) acc[l] = _mm256_setzero_ps();
    const __m256i sixteen = _mm256_set1_epi8(16), ones = _mm256_set1_epi16(1);
    const int64_t bb = pl_packed_block_bytes(PL_TYPE_Q5_0);
    const int soff = pl_packed_scale_offset(PL_TYPE_Q5_0);
    const int64_t gbytes = nb * bb;
    _Alignas(32) int32_t corr[Q5_CORR_CHUNK * 8];
    for (int64_t b0 = 0; b0 < nb; b0 += Q5_CORR_CHUNK) {
        const int64_t cb = nb - b0 < Q5_CORR_CHUNK ? nb - b0 : Q5_CORR_CHUNK;
        for (int64_t b = 0; b < cb; b++) {
            const __m256i c = _mm256_loadu_si256((const __m256i *)(xq + (b0 + b) * PL_Q8_0_BLOCK_BYTES + 2));
            _mm256_store_si256((__m256i *)(corr + 8 * b), _mm256_madd_epi16(_mm256_maddubs_epi16(sixteen, c), ones));
        }
        for (int64_t b = 0; b < cb; b++) {
            const uint8_t *gb = grp + (b0 + b) * bb, *xb = xq + (b0 + b) * PL_Q8_0_BLOCK_BYTES, *xs = xb + 2;
            const int32_t *cr = corr + 8 * b;
            // The next group (gbytes on), half of it in each pass: the stream from DRAM keeps going while the second
            // pass runs from L1 (prefetching only ahead of the first pass left memory idle half the time: ~12 GB/s).
            if (prefetch)
                for (int64_t o = 0; o < bb / 2; o += 64)
                    _mm_prefetch((const char *)(grp + gbytes + (h * nb + b0 + b) * (bb / 2) + o), _MM_HINT_T0);
            const __m256 scale = _mm256_mul_ps(f16x8(gb + soff + 16 * h), _mm256_set1_ps(_cvtsh_ss(ld16(xb))));
            PL_UNROLL
            for (int k = 0; k < 4; k++) {
                __m256i lo, hi;
                pl_avx2_packed_q5_0_step(gb, k, h, &lo, &hi);
                const __m256i sl = _mm256_sub_epi32(
                    _mm256_madd_epi16(_mm256_maddubs_epi16(lo, pl_avx2_broadcast32(xs + 4 * k)), ones), pl_avx2_broadcast32(cr + k));
                const __m256i sh = _mm256_sub_epi32(
                    _mm256_madd_epi16(_mm256_maddubs_epi16(hi, pl_avx2_broadcast32(xs + 16 + 4 * k)), ones), pl_avx2_broadcast32(cr + 4 + k));
                acc[k] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sl), acc[k]);
                acc[k + 4] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sh), acc[k + 4]);
            }
        }
    }
    return lanes_sum(acc);
}

// ---- Q4_K --------------------------------------------------------------------------------------------------------
// vpshufb control: in every 32-bit lane, bytes b0..b3 of that lane (−1: zero).
AVX2 static inline __m256i pick(int b0, int b1, int b2, int b3) {
    int b[4] = {b0, b1, b2, b3};
    int32_t d[4];
    for (int k = 0; k < 4; k++) {
        uint32_t v = 0;
        for (int i = 0; i < 4; i++) v |= (uint32_t)(b[i] < 0 ? 0x80 : 4 * k + b[i]) << (8 * i);
        d[k] = (int32_t)v;
    }
    __m128i c = _mm_loadu_si128((const __m128i *)d);
    return _mm256_set_m128i(c, c);
}

enum { Q4K_GROUP_SB = 16 * 144 };

AVX2 static inline __attribute__((always_inline)) __m256 half_dot_q4k(const int prefetch, const uint8_t *grp,
        const int h, const uint8_t *xq, int64_t nsb) {
    __m256 acc[8], accm[4];
    PL_UNROLL
    for (int l = 0; l < 8; l++) acc[l] = _mm256_setzero_ps();
    PL_UNROLL
    for (int m = 0; m < 4; m++) accm[m] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m256i c3f = _mm256_set1_epi32(0x3f3f3f3f), c0f = _mm256_set1_epi32(0x0f0f0f0f), c03 = _mm256_set1_epi32(0x03030303);
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *o = grp + sb * Q4K_GROUP_SB, *xb = xq + sb * PL_Q8_K_BLOCK_BYTES;
        const uint8_t *pf = o + Q4K_GROUP_SB;   // the stream's next super-block, a line per step
        if (prefetch)
            for (int i = 2048; i < Q4K_GROUP_SB; i += 64) _mm_prefetch((const char *)(pf + i), _MM_HINT_T0);
        float yd;
        memcpy(&yd, xb, 4);
        int16_t bs[16];
        memcpy(bs, xb + 260, 32);
        // get_scale_min_k4 on 8 rows: bytes 0-3 of s0/s1 are scales 0-3/4-7, of m0/m1 minimums 0-3/4-7.
        const __m256i u0 = _mm256_loadu_si256((const __m256i *)(o + 2048 + 32 * h));
        const __m256i u1 = _mm256_loadu_si256((const __m256i *)(o + 2112 + 32 * h));
        const __m256i u2 = _mm256_loadu_si256((const __m256i *)(o + 2176 + 32 * h));
        const __m256i s0 = _mm256_and_si256(u0, c3f);
        const __m256i s1 = _mm256_or_si256(_mm256_and_si256(u2, c0f), _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u0, 6), c03), 4));
        const __m256i m0 = _mm256_and_si256(u1, c3f);
        const __m256i m1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), c0f),
                                           _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u1, 6), c03), 4));
        // Minimums: lane m = mn[2m]·(bs[4m]+bs[4m+1]) + mn[2m+1]·(bs[4m+2]+bs[4m+3]) (ggml's madd on hadd'ed sums).
        const __m256 dmin = _mm256_mul_ps(_mm256_set1_ps(-yd), f16x8(o + 2272 + 16 * h));
        PL_UNROLL
        for (int m = 0; m < 4; m++) {
            __m256i pair = _mm256_shuffle_epi8(m < 2 ? m0 : m1, pick(2 * (m % 2), -1, 2 * (m % 2) + 1, -1));
            int16_t p0 = (int16_t)(bs[4 * m] + bs[4 * m + 1]), p1 = (int16_t)(bs[4 * m + 2] + bs[4 * m + 3]);
            __m256i pm = _mm256_madd_epi16(pair, _mm256_set1_epi32((int32_t)(uint16_t)p0 | ((int32_t)(uint16_t)p1 << 16)));
            accm[m] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(pm), accm[m]);
        }
        __m256i L[8];
        PL_UNROLL
        for (int l = 0; l < 8; l++) L[l] = _mm256_setzero_si256();
        PL_UNROLL
        for (int j = 0; j < 4; j++) {
            // Chunk c's scale as an (sc, sc) int16 pair per row: vpmaddwd of the pair sums gives sc·(4-element sum).
            const __m256i Sl = _mm256_shuffle_epi8(j < 2 ? s0 : s1, pick((2 * j) % 4, -1, (2 * j) % 4, -1));
            const __m256i Sh = _mm256_shuffle_epi8(j < 2 ? s0 : s1, pick((2 * j + 1) % 4, -1, (2 * j + 1) % 4, -1));
            PL_UNROLL
            for (int l = 0; l < 8; l++) {
                if (prefetch) _mm_prefetch((const char *)(pf + 64 * (8 * j + l)), _MM_HINT_T0);
                __m256i v = _mm256_loadu_si256((const __m256i *)(o + 64 * (8 * j + l) + 32 * h));
                __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                __m256i xl = _mm256_set1_epi32(ld32(xb + 4 + 64 * j + 4 * l));
                __m256i xh = _mm256_set1_epi32(ld32(xb + 4 + 64 * j + 32 + 4 * l));
                L[l] = _mm256_add_epi32(L[l], _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), Sl),
                                                               _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), Sh)));
            }
        }
        const __m256 d = _mm256_mul_ps(_mm256_set1_ps(yd), f16x8(o + 2240 + 16 * h));
        PL_UNROLL
        for (int l = 0; l < 8; l++) acc[l] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(L[l]), acc[l]);
    }
    const __m256 mins = _mm256_add_ps(_mm256_add_ps(accm[0], accm[2]), _mm256_add_ps(accm[1], accm[3]));
    return _mm256_add_ps(lanes_sum(acc), mins);
}

// ---- drivers -------------------------------------------------------------------------------------------------------
AVX2 static inline void store_half(float *y, int64_t rows, int64_t r, __m256 v) {
    if (rows - r >= 8) { _mm256_storeu_ps(y + r, v); return; }
    float t[8];
    _mm256_storeu_ps(t, v);
    memcpy(y + r, t, sizeof(float) * (size_t)(rows - r));
}

// Groups g0 ..< g1 against n_tokens inputs: group after group (one stream: its blocks are consecutive), each half
// against every input while the group is in L1; the first input's passes prefetch the next group.
AVX2 static inline __attribute__((always_inline)) void matmul_groups(const int type, const uint8_t *packed,
        int64_t rows, int64_t n, const uint8_t *xq, size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy,
        int64_t g0, int64_t g1) {
    const int kq = type == PL_TYPE_Q4_K;
    const int64_t nb = kq ? n / 256 : n / 32;
    const int64_t gbytes = kq ? nb * Q4K_GROUP_SB : nb * pl_packed_block_bytes(type);
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *grp = packed + g * gbytes;
        for (int h = 0; h < 2 && g * 16 + 8 * h < rows; h++)
            for (int64_t t = 0; t < n_tokens; t++) {
                const uint8_t *x = xq + (size_t)t * xq_stride;
                __m256 v = kq ? (h == 0 && t == 0 ? half_dot_q4k(1, grp, h, x, nb) : half_dot_q4k(0, grp, h, x, nb))
                         : type == PL_TYPE_Q5_0
                              ? (t == 0 ? half_dot_q5_0(1, grp, h, x, nb) : half_dot_q5_0(0, grp, h, x, nb))
                              : (t == 0 ? half_dot(type, 1, grp, h, x, nb) : half_dot(type, 0, grp, h, x, nb));
                store_half(y + t * ldy, rows, g * 16 + 8 * h, v);
            }
    }
}

int pl_avx2_packed_owns(int type) {
    return type == PL_TYPE_Q8_0 || type == PL_TYPE_Q4_0 || type == PL_TYPE_Q4_1 || type == PL_TYPE_Q5_0 ||
           type == PL_TYPE_Q4_K;
}

AVX2 void pl_avx2_matmul_packed(int type, const uint8_t *packed, int64_t rows, int64_t n, const uint8_t *xq,
                                size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1) {
    switch (type) {   // one instantiation per type, so each inner loop is specialised
    case PL_TYPE_Q8_0: matmul_groups(PL_TYPE_Q8_0, packed, rows, n, xq, xq_stride, n_tokens, y, ldy, g0, g1); break;
    case PL_TYPE_Q4_0: matmul_groups(PL_TYPE_Q4_0, packed, rows, n, xq, xq_stride, n_tokens, y, ldy, g0, g1); break;
    case PL_TYPE_Q4_1: matmul_groups(PL_TYPE_Q4_1, packed, rows, n, xq, xq_stride, n_tokens, y, ldy, g0, g1); break;
    case PL_TYPE_Q5_0:
        // Several inputs: the batch kernel, its scratch filled from the packed groups (each input over half_dot_q5_0
        // ran at half its speed).
        if (n_tokens >= PL_AVX2_BATCH_MIN) {
            if (pl_isa_features() & PL_FEATURE_AVX_VNNI)
                pl_avxvnni_matmul_batch_packed_q5_0(packed, rows, n / 32, xq, xq_stride, n_tokens, y, ldy, g0, g1);
            else pl_avx2_matmul_batch_packed_q5_0(packed, rows, n / 32, xq, xq_stride, n_tokens, y, ldy, g0, g1);
        } else {
            matmul_groups(PL_TYPE_Q5_0, packed, rows, n, xq, xq_stride, n_tokens, y, ldy, g0, g1);
        }
        break;
    case PL_TYPE_Q4_K: matmul_groups(PL_TYPE_Q4_K, packed, rows, n, xq, xq_stride, n_tokens, y, ldy, g0, g1); break;
    default: break;
    }
}
#endif
