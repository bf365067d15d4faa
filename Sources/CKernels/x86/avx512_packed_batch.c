// Several inputs (prompt prefill) against a packed Q4_0, Q5_0 or Q8_0 matrix, AVX-512 VNNI.
//
// The one-input kernel (packed.c) turns each block of a group into unsigned bytes (nibbles split, Q5_0's 5th bits
// added by masked byte adds) right before its vpdpbusd; run once per input, that unpacking was most of the batch's
// work (and, with three groups' accumulators live, the compiler spilled registers). Here each group's blocks are
// unpacked once, a chunk at a time, into a small scratch in L1: per block 8 vectors of 16 rows × 4 unsigned bytes
// (lane l = elements 4l..4l+3 of the 16 rows: Q4/Q5's low nibbles for l < 4, high nibbles for l ≥ 4; Q8_0's
// steps as stored, offset by 128, read in place) and the 16 scales as floats. Then every input of the batch runs
// only vpdpbusd + convert + fma per lane, a few inputs at a time sharing each weight load.
//
// Arithmetic, identical to packed.c's (so to llama.cpp's and the row kernels'): the stored byte is q + o with
// o = 8 (Q4_0), 16 (Q5_0), 128 (Q8_0), so lane l's exact integer is Σ(q+o)·x − o·Σx; the input-only term −o·Σx,
// computed once per input and block, seeds vpdpbusd's accumulator. Lane l's float accumulator takes
// fma(d_w·d_x, float(S_l), acc_l) block after block, and the 8 lanes are summed as ggml's hsum_float_8.
#include "packed.h"
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>

#define VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))

// Blocks unpacked at a time: 24 × (512 B + 64 B) = 13.5 KiB of scratch, which stays in L1 with the inputs' blocks
// while the batch passes over it. Longer rows are cut in equal chunks; each input's accumulators then wait in
// `saved` between chunks, for a tile of TOKEN_TILE inputs at a time (so the scratch is refilled once per tile).
enum { CHUNK_MAX = 24, TOKEN_TILE = 32, T_MAX = 2 };

// One input's per-block terms for a chunk: the 8 lanes' seeds −o·Σx and the block's d_x as a float.
typedef struct { int32_t seed[8]; float dx; int32_t pad[7]; } XTerms;

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

// Unpacks blocks b0 ..< b0+cb of one group: Q4_0/Q5_0 quants to `w` (512 B per block), scales to `dw`.
VNNI512 static inline __attribute__((always_inline)) void unpack_chunk(
        const int type, const uint8_t *grp, int64_t b0, int64_t cb, uint8_t *w, float *dw) {
    const int64_t bb = pl_packed_block_bytes(type);
    const __m512i low4 = _mm512_set1_epi8(0x0f), sixteen = _mm512_set1_epi8(16);
    for (int64_t b = 0; b < cb; b++) {
        const uint8_t *gb = grp + (b0 + b) * bb;
        _mm512_store_ps(dw + 16 * b, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gb + pl_packed_scale_offset(type)))));
        if (type == PL_TYPE_Q8_0) continue;   // its quants are read in place
        PL_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512i v = _mm512_loadu_si512((const void *)(gb + 64 * k));
            __m512i lo = _mm512_and_si512(v, low4);
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
            if (type == PL_TYPE_Q5_0) {
                __mmask64 ml, mh;
                memcpy(&ml, gb + 256 + 16 * k, 8);
                memcpy(&mh, gb + 256 + 16 * k + 8, 8);
                lo = _mm512_mask_add_epi8(lo, ml, lo, sixteen);
                hi = _mm512_mask_add_epi8(hi, mh, hi, sixteen);
            }
            _mm512_store_si512((void *)(w + 512 * b + 64 * k), lo);
            _mm512_store_si512((void *)(w + 512 * b + 64 * (k + 4)), hi);
        }
    }
}

// The seeds and d_x of one input over cb blocks (a ymm vpdpbusd gives the 8 lanes' o·Σx at once).
VNNI512 static inline __attribute__((always_inline)) void input_terms(
        const int type, const uint8_t *x, int64_t cb, XTerms *out) {
    const int off = type == PL_TYPE_Q4_0 ? 8 : type == PL_TYPE_Q5_0 ? 16 : 128;
    const __m256i o = _mm256_set1_epi8((char)off);
    for (int64_t b = 0; b < cb; b++) {
        const uint8_t *xb = x + b * PL_Q8_0_BLOCK_BYTES;
        __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), o, _mm256_loadu_si256((const __m256i *)(xb + 2)));
        _mm256_store_si256((__m256i *)out[b].seed, _mm256_sub_epi32(_mm256_setzero_si256(), s));
        out[b].dx = _cvtsh_ss(ld16(xb));
    }
}

// T inputs over cb unpacked blocks, adding into their accumulators (acc[t][l]: lane l of input t, 16 rows).
VNNI512 static inline __attribute__((always_inline)) void tile_chunk(
        const int T, const uint8_t *w, int64_t wstride, const float *dw, const XTerms *const xt[],
        const uint8_t *const x[], int64_t cb, __m512 acc[][8]) {
    for (int64_t b = 0; b < cb; b++) {
        const uint8_t *wb = w + b * wstride;
        __m512 scale[T_MAX];
        PL_UNROLL
        for (int t = 0; t < T; t++) scale[t] = _mm512_mul_ps(_mm512_load_ps(dw + 16 * b), _mm512_set1_ps(xt[t][b].dx));
        PL_UNROLL
        for (int l = 0; l < 8; l++) {
            __m512i wl = _mm512_loadu_si512((const void *)(wb + 64 * l));
            PL_UNROLL
            for (int t = 0; t < T; t++) {
                int32_t xv;
                memcpy(&xv, x[t] + b * PL_Q8_0_BLOCK_BYTES + 2 + 4 * l, 4);
                __m512i S = _mm512_dpbusd_epi32(_mm512_set1_epi32(xt[t][b].seed[l]), wl, _mm512_set1_epi32(xv));
                acc[t][l] = _mm512_fmadd_ps(scale[t], _mm512_cvtepi32_ps(S), acc[t][l]);
            }
        }
    }
}

// ggml's hsum_float_8, lane-wise for 16 rows: ((l4+l0) + (l6+l2)) + ((l5+l1) + (l7+l3)).
VNNI512 static inline __attribute__((always_inline)) __m512 lanes_sum(const __m512 a[8]) {
    __m512 r0 = _mm512_add_ps(a[4], a[0]), r1 = _mm512_add_ps(a[5], a[1]);
    __m512 r2 = _mm512_add_ps(a[6], a[2]), r3 = _mm512_add_ps(a[7], a[3]);
    return _mm512_add_ps(_mm512_add_ps(r0, r2), _mm512_add_ps(r1, r3));
}

// Inputs t ..< t+T of one chunk: accumulators from zero (first chunk) or `saved`, then to `saved` or, after the
// last chunk, summed into y (the group's valid rows only).
VNNI512 static inline __attribute__((always_inline)) void run_inputs(
        const int type, const int T, int64_t t, int64_t t0, const uint8_t *w, int64_t wstride, const float *dw,
        const uint8_t *xq, size_t xq_stride, int64_t b0, int64_t cb, int first, int last, XTerms xterms[][CHUNK_MAX],
        __m512 (*saved)[8], float *y, int64_t ldy, int64_t row0, __mmask16 valid) {
    __m512 acc[T_MAX][8];
    const uint8_t *x[T_MAX];
    const XTerms *xt[T_MAX];
    PL_UNROLL
    for (int i = 0; i < T; i++) {
        x[i] = xq + (size_t)(t + i) * xq_stride + b0 * PL_Q8_0_BLOCK_BYTES;
        input_terms(type, x[i], cb, xterms[i]);
        xt[i] = xterms[i];
        PL_UNROLL
        for (int l = 0; l < 8; l++) acc[i][l] = first ? _mm512_setzero_ps() : saved[t + i - t0][l];
    }
    tile_chunk(T, w, wstride, dw, xt, x, cb, acc);
    PL_UNROLL
    for (int i = 0; i < T; i++) {
        if (last) _mm512_mask_storeu_ps(y + (t + i) * ldy + row0, valid, lanes_sum(acc[i]));
        else for (int l = 0; l < 8; l++) saved[t + i - t0][l] = acc[i][l];
    }
}

VNNI512 static inline __attribute__((always_inline)) void matmul_batch(
        const int type, const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq, size_t xq_stride,
        int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1) {
    _Alignas(64) uint8_t wbuf[CHUNK_MAX * 512];
    _Alignas(64) float dw[CHUNK_MAX * 16];
    _Alignas(64) XTerms xterms[T_MAX][CHUNK_MAX];
    __m512 saved[TOKEN_TILE][8];
    const int64_t bb = pl_packed_block_bytes(type);
    const int64_t chunks = (nb + CHUNK_MAX - 1) / CHUNK_MAX, csize = (nb + chunks - 1) / chunks;
    // One chunk: the scratch is filled once per group for the whole batch (no accumulators to keep).
    const int64_t tile = chunks == 1 ? n_tokens : TOKEN_TILE;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *grp = packed + g * nb * bb;
        const int64_t row0 = g * 16, nvalid = rows - row0 < 16 ? rows - row0 : 16;
        const __mmask16 valid = (__mmask16)((1u << nvalid) - 1);
        for (int64_t t0 = 0; t0 < n_tokens; t0 += tile) {
            const int64_t t1 = t0 + tile < n_tokens ? t0 + tile : n_tokens;
            for (int64_t c = 0; c < chunks; c++) {
                const int64_t b0 = c * csize, cb = nb - b0 < csize ? nb - b0 : csize;
                unpack_chunk(type, grp, b0, cb, wbuf, dw);
                const uint8_t *w = type == PL_TYPE_Q8_0 ? grp + b0 * bb : wbuf;
                const int64_t wstride = type == PL_TYPE_Q8_0 ? bb : 512;
                const int first = c == 0, last = c == chunks - 1;
                int64_t t = t0;
                for (; t + T_MAX <= t1; t += T_MAX)
                    run_inputs(type, T_MAX, t, t0, w, wstride, dw, xq, xq_stride, b0, cb, first, last, xterms, saved, y,
                               ldy, row0, valid);
                for (; t < t1; t++)
                    run_inputs(type, 1, t, t0, w, wstride, dw, xq, xq_stride, b0, cb, first, last, xterms, saved, y, ldy,
                               row0, valid);
            }
        }
    }
}

// One instantiation per type, so each inner loop is specialised.
VNNI512 void pl_packed_matmul_batch(int type, const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq,
                                    size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1) {
    switch (type) {
    case PL_TYPE_Q4_0: matmul_batch(PL_TYPE_Q4_0, packed, rows, nb, xq, xq_stride, n_tokens, y, ldy, g0, g1); break;
    case PL_TYPE_Q5_0: matmul_batch(PL_TYPE_Q5_0, packed, rows, nb, xq, xq_stride, n_tokens, y, ldy, g0, g1); break;
    case PL_TYPE_Q8_0: matmul_batch(PL_TYPE_Q8_0, packed, rows, nb, xq, xq_stride, n_tokens, y, ldy, g0, g1); break;
    default: break;
    }
}
#endif
