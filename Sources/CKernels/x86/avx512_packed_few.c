// A few inputs (2-8: a server's decode step over its slots, a short verify pass; packed.c also runs a Q4_1 prompt,
// and a Q8_0 one over rows of ≤ 32 blocks, through it 8 tokens at a time) against a packed Q4_1 or Q8_0 matrix,
// AVX-512 VNNI.
//
// Run once per input, the one-input kernel (packed.c) loads and unpacks every block for each input, and for Q8_0
// recomputes each input's correction 128·Σx in every group; a decode step of 4 slots then costs ~4 single steps of
// arithmetic although the weights stream from memory once. Here each group of 16 rows is visited once: its blocks
// were prefetched during the previous group's passes and stay in L1 for all of this group's inputs; two inputs at
// a time share each weight load and nibble unpack (their 2 × 8 lane accumulators fill the registers); Q8_0's
// corrections are computed once per input and block, as the seed of its integer dot product. Per input and block
// what remains is llama.cpp's lane arithmetic (8 integer dots, 8 conversions, 8 fmas) and the block's scale. Every
// vector op here competes for the same two ports: on Zen 4 vpdpbusd and vfmadd share the two multiply pipes, and
// on the Xeon (Emerald Rapids) vpdpbusd, vcvtdq2ps and vfmadd each issue two a cycle, alone or mixed, and a shift
// one (a loop of each, 12 independent ops). So the kernel's time is its count of vector uops, and the ones that are
// not the lanes' arithmetic are cut: the inputs' f16 scales are floats made once per call (a broadcast from memory
// is a load), and Q4_1's high nibbles are masked in place, not shifted (below). From L2, 2 threads, 147,456 × 576
// Q4_1 against 4 inputs (`make kernel-bench-few-stream`, Xeon): 2.50 → 2.15 ms for the scales, → 2.06 with the
// nibbles. Summing each block's 8 lanes in int32 first (one conversion and fma per block) ran the 4-input Q4_1 step
// 1.85x faster from L2, but it is another float order than llama.cpp's, and it changed SmolLM2 Q4_1's greedy reply
// to "What is the capital of France?" (a low-margin first token), so this keeps the lanes.
//
// Each input's arithmetic is packed.c's (same integer sums, then per lane fma(d_w·d_x, float(S), acc) block after
// block from zero, Q4_1's minimums fma'd into their own sum, ggml's hsum_float_8 lane order at the end), so every
// output has the bits the one-input kernel gives it. The one liberty, Q4_1's high lanes as fma(d_w·d_x/16,
// float(16·S), acc), is the same fma: 16·S is exact in a float (|16·S| ≤ 240·128·4 < 2^24), the product is the
// same real number, and d_w·d_x/16 is d_w·d_x rounded then divided exactly (both f16, so ≥ 2^-48 when nonzero:
// far from f32's subnormals).
#include "packed.h"
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>

#define VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))

enum { FEW_MAX = PL_PACKED_FEW_MAX, FEW_BLOCKS_MAX = PL_PACKED_FEW_BLOCKS_MAX };

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

// Inputs t0 ..< t0+NI over one group's nb blocks; y[t·ldy + row] for the group's valid rows.
VNNI512 static inline __attribute__((always_inline)) void group_inputs(
        const int type, const int NI, const uint8_t *grp, int64_t nb, const uint8_t *xq, size_t xq_stride,
        int64_t t0, const int32_t (*seeds)[8], const float *xd, const float *xd16, const float *xs, float *y,
        int64_t ldy, int64_t row0, __mmask16 valid) {
    const int64_t bb = pl_packed_block_bytes(type);
    const int xbytes = type == PL_TYPE_Q4_1 ? 36 : 34, qoff = type == PL_TYPE_Q4_1 ? 4 : 2;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    __m512 acc[2][8], summs[2];
    PL_UNROLL
    for (int i = 0; i < NI; i++) {
        summs[i] = _mm512_setzero_ps();
        PL_UNROLL
        for (int l = 0; l < 8; l++) acc[i][l] = _mm512_setzero_ps();
    }
    const uint8_t *x[2];
    PL_UNROLL
    for (int i = 0; i < NI; i++) x[i] = xq + (size_t)(t0 + i) * xq_stride;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *gb = grp + b * bb;
        // The next group's block, one group ahead in every pass: a whole group's bytes in flight, arriving while
        // this group's inputs compute (a few blocks ahead left the later passes' arithmetic waiting on memory).
        // Q8_0 without them (as its one-input stream goes) measured faster in some runs and slower in others on
        // the shared machine (`make kernel-bench-few-stream`), so it keeps them.
        for (int64_t o = 0; o < bb; o += 64) _mm_prefetch((const char *)(gb + nb * bb + o), _MM_HINT_T0);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gb + pl_packed_scale_offset(type))));
        __m512 scale[2];
        PL_UNROLL
        for (int i = 0; i < NI; i++) scale[i] = _mm512_mul_ps(dw, _mm512_set1_ps(xd[(t0 + i) * nb + b]));
        if (type == PL_TYPE_Q8_0) {
            PL_UNROLL
            for (int k = 0; k < 8; k++) {
                const __m512i w = _mm512_loadu_si512((const void *)(gb + 64 * k));
                PL_UNROLL
                for (int i = 0; i < NI; i++) {
                    int32_t xv;
                    memcpy(&xv, x[i] + b * xbytes + qoff + 4 * k, 4);
                    // (w+128)·x − 128·Σx = w·x, the correction as the accumulator's seed (same integer).
                    const __m512i S = _mm512_dpbusd_epi32(_mm512_set1_epi32(seeds[(t0 + i) * nb + b][k]), w,
                                                          _mm512_set1_epi32(xv));
                    acc[i][k] = _mm512_fmadd_ps(scale[i], _mm512_cvtepi32_ps(S), acc[i][k]);
                }
            }
        } else {
            // The high nibbles stay in place (16·q, masked, no shift: shifts have one port): their dot products
            // are 16 times the lane's and their scale a 16th of it (exact: see the top).
            __m512 scale_hi[2];
            PL_UNROLL
            for (int i = 0; i < NI; i++) scale_hi[i] = _mm512_mul_ps(dw, _mm512_set1_ps(xd16[(t0 + i) * nb + b]));
            PL_UNROLL
            for (int k = 0; k < 4; k++) {
                const __m512i v = _mm512_loadu_si512((const void *)(gb + 64 * k));
                const __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_andnot_si512(low4, v);
                PL_UNROLL
                for (int i = 0; i < NI; i++) {
                    int32_t xl, xh;
                    memcpy(&xl, x[i] + b * xbytes + qoff + 4 * k, 4);
                    memcpy(&xh, x[i] + b * xbytes + qoff + 16 + 4 * k, 4);
                    const __m512i Sl = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_set1_epi32(xl));
                    const __m512i Sh = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, _mm512_set1_epi32(xh));
                    acc[i][k] = _mm512_fmadd_ps(scale[i], _mm512_cvtepi32_ps(Sl), acc[i][k]);
                    acc[i][k + 4] = _mm512_fmadd_ps(scale_hi[i], _mm512_cvtepi32_ps(Sh), acc[i][k + 4]);
                }
            }
            const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gb + 256 + 32)));
            PL_UNROLL
            for (int i = 0; i < NI; i++)
                summs[i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xs[(t0 + i) * nb + b]), summs[i]);
        }
    }
    PL_UNROLL
    for (int i = 0; i < NI; i++) {
        // ggml's hsum_float_8, lane-wise: ((l4+l0) + (l6+l2)) + ((l5+l1) + (l7+l3)), plus Q4_1's minimums.
        const __m512 r0 = _mm512_add_ps(acc[i][4], acc[i][0]), r1 = _mm512_add_ps(acc[i][5], acc[i][1]);
        const __m512 r2 = _mm512_add_ps(acc[i][6], acc[i][2]), r3 = _mm512_add_ps(acc[i][7], acc[i][3]);
        __m512 sum = _mm512_add_ps(_mm512_add_ps(r0, r2), _mm512_add_ps(r1, r3));
        if (type == PL_TYPE_Q4_1) sum = _mm512_add_ps(sum, summs[i]);
        _mm512_mask_storeu_ps(y + (t0 + i) * ldy + row0, valid, sum);
    }
}

VNNI512 static inline __attribute__((always_inline)) void matmul_few(
        const int type, const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq, size_t xq_stride,
        int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1, int32_t (*seeds)[8], const float *xd,
        const float *xd16, const float *xs) {
    const int64_t gbytes = nb * pl_packed_block_bytes(type);
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *grp = packed + g * gbytes;
        const int64_t row0 = g * 16, nvalid = rows - row0 < 16 ? rows - row0 : 16;
        const __mmask16 valid = (__mmask16)((1u << nvalid) - 1);
        int64_t t = 0;
        for (; t + 2 <= n_tokens; t += 2)
            group_inputs(type, 2, grp, nb, xq, xq_stride, t, seeds, xd, xd16, xs, y, ldy, row0, valid);
        if (t < n_tokens) group_inputs(type, 1, grp, nb, xq, xq_stride, t, seeds, xd, xd16, xs, y, ldy, row0, valid);
    }
}

VNNI512 void pl_packed_matmul_few(int type, const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq,
                                  size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1) {
    // Each input's block scales d (and Q4_1's d·Σq) as floats, once per call rather than once per group: the f16
    // conversion and its broadcast were ~7 of the ~40 vector uops of a block and input, and every vector op of
    // this kernel shares the two ports that run its vpdpbusd, conversions and fmas (measured on the Xeon and on
    // Zen 4). From memory the broadcast is a load. Same values, so the same bits.
    float xd[FEW_MAX * FEW_BLOCKS_MAX], xd16[FEW_MAX * FEW_BLOCKS_MAX], xs[FEW_MAX * FEW_BLOCKS_MAX];
    const int xbytes = type == PL_TYPE_Q4_1 ? PL_Q8_1_BLOCK_BYTES : PL_Q8_0_BLOCK_BYTES;
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *xb = xq + (size_t)t * xq_stride + b * xbytes;
            xd[t * nb + b] = _cvtsh_ss(ld16(xb));
            if (type != PL_TYPE_Q4_1) continue;
            xd16[t * nb + b] = xd[t * nb + b] / 16;
            xs[t * nb + b] = _cvtsh_ss(ld16(xb + 2));
        }
    if (type == PL_TYPE_Q4_1) {
        matmul_few(PL_TYPE_Q4_1, packed, rows, nb, xq, xq_stride, n_tokens, y, ldy, g0, g1, NULL, xd, xd16, xs);
        return;
    }
    // Q8_0: each input's per-block, per-lane seeds −128·Σx (a ymm dpbusd gives the 8 lanes' sums at once).
    _Alignas(32) int32_t seeds[FEW_MAX * FEW_BLOCKS_MAX][8];
    const __m256i o = _mm256_set1_epi8((char)0x80);
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *xb = xq + (size_t)t * xq_stride + b * PL_Q8_0_BLOCK_BYTES;
            const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), o, _mm256_loadu_si256((const __m256i *)(xb + 2)));
            _mm256_store_si256((__m256i *)seeds[t * nb + b], _mm256_sub_epi32(_mm256_setzero_si256(), s));
        }
    matmul_few(PL_TYPE_Q8_0, packed, rows, nb, xq, xq_stride, n_tokens, y, ldy, g0, g1, seeds, xd, xd16, xs);
}
#endif
