// Several inputs (prompt prefill) against Q8_0, Q4_0, Q4_1, Q5_0 or Q5_1 rows in the file's layout, on 256-bit
// registers: the AVX2 tier's batch kernel, written once and compiled per body by the file that includes it, which
// defines:
//   QB_ATTR                  the target attribute;
//   QB_NAME(f)               the body's name for f (pl_avx2_f, pl_avxvnni_f);
//   QB_DPBUSD(acc, u8, s8)   acc + the 4-byte dot products of u8 × s8 per int32 lane (vpdpbusd, or vpmaddubsw then
//                            vpmaddwd by 1: exact here, no pair sum leaves int16 since |u8| ≤ 128, |s8| ≤ 127).
//
// The row kernels (quant_rows_body.h, avx2_quants_k.c) compute one row against one input per register: each
// output costs a scalar scale product, its broadcast and a horizontal sum, and the weight block's unpacking is
// redone per input. Here eight consecutive rows are unpacked once per group, a chunk of blocks at a time, into an
// L1 scratch that puts ggml's lane l of the eight rows in one register (lane-major: for block b and lane l, row i's
// elements 4l..4l+3 at bytes 4i..4i+3), and their scales as eight floats. Then every input runs, per block and lane,
// one broadcast of its 4 bytes, the dot product, a conversion and an fma whose scale (d_w of the 8 rows · d_x) was
// computed once per block — for a tile of QB_TILE inputs that share each weight load.
//
// Arithmetic, identical to the row kernels' (so to llama.cpp's AVX2 vec_dot and the other tiers'): lane l of row i
// is the exact int32 Σ q·x over elements 4l..4l+3 (signed quants — Q8_0, Q4_0 − 8, Q5_0 − 16 — as |q| times x with
// q's sign, ggml's mul_sum_i8_pairs; Q4_1/Q5_1 unsigned), fma'd with d_w·d_x into float lane l block after block;
// the lanes summed as ggml's hsum_float_8; Q4_1/Q5_1's m_w·s_x terms their own fma chain, added last.

#ifndef POCKETLM_QUANT_BATCH_SHARED
#define POCKETLM_QUANT_BATCH_SHARED
#include "x86/avx2_common.h"
// Shared by every body that includes this file.
enum { QB_CHUNK = 64, QB_STEP = 8, QB_TOKENS = 64, QB_TILE = 8 };

static inline int qb_signed(int type) { return type == PL_TYPE_Q8_0 || type == PL_TYPE_Q4_0 || type == PL_TYPE_Q5_0; }
static inline int qb_has_min(int type) { return type == PL_TYPE_Q4_1 || type == PL_TYPE_Q5_1; }
static inline int qb_block_bytes(int type) {
    switch (type) {
    case PL_TYPE_Q8_0: return 34;
    case PL_TYPE_Q4_0: return 18;
    case PL_TYPE_Q4_1: return 20;
    case PL_TYPE_Q5_0: return 22;
    default: return 24;   // Q5_1
    }
}
#endif

// One block of one row as 32 bytes in element order (ggml's lane l = elements 4l..4l+3 = dword l): signed quants
// for Q8_0/Q4_0/Q5_0, unsigned for Q4_1/Q5_1.
QB_ATTR static inline __attribute__((always_inline)) __m256i QB_NAME(qb_elements)(const int type, const uint8_t *wb) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    if (type == PL_TYPE_Q8_0) return _mm256_loadu_si256((const __m256i *)(wb + 2));
    const int qoff = type == PL_TYPE_Q4_0 ? 2 : type == PL_TYPE_Q4_1 ? 4 : type == PL_TYPE_Q5_0 ? 6 : 8;
    __m128i raw = _mm_loadu_si128((const __m128i *)(wb + qoff));
    __m256i e = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low4);
    if (type == PL_TYPE_Q4_0) return _mm256_sub_epi8(e, _mm256_set1_epi8(8));
    if (type == PL_TYPE_Q4_1) return e;
    uint32_t qh;
    memcpy(&qh, wb + (type == PL_TYPE_Q5_0 ? 2 : 4), 4);
    e = _mm256_or_si256(e, _mm256_and_si256(pl_avx2_bytes_from_bits(qh), _mm256_set1_epi8(16)));
    return type == PL_TYPE_Q5_0 ? _mm256_sub_epi8(e, _mm256_set1_epi8(16)) : e;
}

// Blocks b0 ..< b0+cb of rows r ..< r+valid (valid ≤ 8; missing rows zero, scale 0) into the lane-major scratch:
// w[(b·8 + l)·32 + 4i ..] = row i's elements 4l..4l+3 of block b0+b; dw[b·8 + i], mw[b·8 + i] its d and m.
QB_ATTR static inline __attribute__((always_inline)) void QB_NAME(qb_unpack)(const int type, const uint8_t *w,
        size_t row_bytes, int valid, int prefetch_next, int64_t b0, int64_t cb, uint8_t *wl, float *dw, float *mw) {
    const int bb = qb_block_bytes(type);
    for (int64_t b = 0; b < cb; b++) {
        __m256i e[8];
        uint16_t d[8], m[8];
        PL_UNROLL
        for (int i = 0; i < 8; i++) {
            if (i < valid) {
                const uint8_t *wb = w + (size_t)i * row_bytes + (b0 + b) * bb;
                // The next group's rows (unpacked after every input has run over this one's): fetched meanwhile.
                if (prefetch_next) _mm_prefetch((const char *)(wb + 8 * row_bytes + bb - 1), _MM_HINT_T0);
                e[i] = QB_NAME(qb_elements)(type, wb);
                d[i] = load_u16(wb);
                m[i] = qb_has_min(type) ? load_u16(wb + 2) : 0;
            } else {
                e[i] = _mm256_setzero_si256();
                d[i] = m[i] = 0;
            }
        }
        __m256i out[8];
        pl_avx2_transpose8_epi32(e, out);   // row i's dword l to dword i of register l
        uint8_t *o = wl + b * 256;
        PL_UNROLL
        for (int l = 0; l < 8; l++) _mm256_store_si256((__m256i *)(o + 32 * l), out[l]);
        _mm256_store_ps(dw + 8 * b, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)d)));
        if (qb_has_min(type)) _mm256_store_ps(mw + 8 * b, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)m)));
    }
}

// The same scratch from the packed Q5_0 layout (packed.c; the AVX2 tier's decode form of Q5_0): half h (rows 8h..8h+7)
// of the group at grp, blocks b0 ..< b0+cb. A packed step k of a half is already lane k (low nibbles) and lane 4+k
// (high nibbles) of its 8 rows in this order, and its 5th-bit masks are in the same byte order: no transpose.
QB_ATTR static inline __attribute__((always_inline)) void QB_NAME(qb_unpack_packed_q5_0)(const uint8_t *grp, int h,
        int64_t b0, int64_t cb, uint8_t *wl, float *dw) {
    const __m256i sixteen = _mm256_set1_epi8(16);
    for (int64_t b = 0; b < cb; b++) {
        const uint8_t *gb = grp + (b0 + b) * (16 * 22);
        uint8_t *o = wl + b * 256;
        PL_UNROLL
        for (int k = 0; k < 4; k++) {
            __m256i lo, hi;
            pl_avx2_packed_q5_0_step(gb, k, h, &lo, &hi);
            _mm256_store_si256((__m256i *)(o + 32 * k), _mm256_sub_epi8(lo, sixteen));
            _mm256_store_si256((__m256i *)(o + 32 * (k + 4)), _mm256_sub_epi8(hi, sixteen));
        }
        _mm256_store_ps(dw + 8 * b, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gb + 320 + 16 * h))));
    }
}

// T inputs over cb blocks of the scratch, lane by lane: acc[t] (the 8 rows' lane l of input t) runs its fma chain
// over the blocks in order, starting from `saved` (or zero) and left there. x[t] points at input t's first block
// of the chunk, scale[t·QB_STEP + b] at d_w·d_x of block b (8 rows).
QB_ATTR static inline __attribute__((always_inline)) void QB_NAME(qb_tile)(const int type, const int T,
        const uint8_t *wl, const __m256 *scale, const uint8_t *const *x, int64_t cb, int first, __m256 (*saved)[8]) {
    const int xbytes = qb_has_min(type) ? PL_Q8_1_BLOCK_BYTES : PL_Q8_0_BLOCK_BYTES;
    const int xoff = qb_has_min(type) ? 4 : 2;
    PL_UNROLL
    for (int l = 0; l < 8; l++) {
        __m256 acc[QB_TILE];
        PL_UNROLL
        for (int t = 0; t < T; t++) acc[t] = first ? _mm256_setzero_ps() : saved[t][l];
        for (int64_t b = 0; b < cb; b++) {
            const __m256i wv = _mm256_load_si256((const __m256i *)(wl + b * 256 + 32 * l));
            const __m256i wa = qb_signed(type) ? _mm256_sign_epi8(wv, wv) : wv;
            PL_UNROLL
            for (int t = 0; t < T; t++) {
                // vbroadcastss: a load alone (vpbroadcastd from memory measured slower here)
                __m256i xb = _mm256_castps_si256(_mm256_broadcast_ss((const float *)(x[t] + b * xbytes + xoff + 4 * l)));
                if (qb_signed(type)) xb = _mm256_sign_epi8(xb, wv);
                __m256i S = QB_DPBUSD(_mm256_setzero_si256(), wa, xb);
                acc[t] = _mm256_fmadd_ps(scale[t * QB_STEP + b], _mm256_cvtepi32_ps(S), acc[t]);
            }
        }
        PL_UNROLL
        for (int t = 0; t < T; t++) saved[t][l] = acc[t];
    }
}

// Inputs t ..< t+T against blocks b0 ..< b0+cb of the unpacked scratch (block sb0 + b of the row), in steps of
// QB_STEP blocks (their scales and the inputs' blocks stay in L1). dx[i·QB_CHUNK + b], sx[…]: input t+i's d and s of
// block sb0 + b as floats.
QB_ATTR static inline __attribute__((always_inline)) void QB_NAME(qb_inputs)(const int type, const int T, int64_t t,
        const uint8_t *xq, size_t xq_stride, const uint8_t *wl, const float *dw, const float *mw, const float *dx,
        const float *sx, int64_t sb0, int64_t cb, __m256 (*saved)[8], __m256 *msaved) {
    const int xbytes = qb_has_min(type) ? PL_Q8_1_BLOCK_BYTES : PL_Q8_0_BLOCK_BYTES;
    __m256 scale[QB_TILE * QB_STEP];
    for (int64_t c0 = 0; c0 < cb; c0 += QB_STEP) {
        const int64_t n = cb - c0 < QB_STEP ? cb - c0 : QB_STEP;
        const uint8_t *x[QB_TILE];
        PL_UNROLL
        for (int i = 0; i < T; i++) {
            x[i] = xq + (size_t)(t + i) * xq_stride + (sb0 + c0) * xbytes;
            const float *dxi = dx + i * QB_CHUNK + c0, *sxi = sx + i * QB_CHUNK + c0;
            __m256 ms = msaved[i];
            for (int64_t b = 0; b < n; b++) {
                scale[i * QB_STEP + b] = _mm256_mul_ps(_mm256_load_ps(dw + 8 * (c0 + b)), _mm256_broadcast_ss(dxi + b));
                if (qb_has_min(type))   // fused, as ggml's FMA build computes m_w·s_x + summs
                    ms = _mm256_fmadd_ps(_mm256_load_ps(mw + 8 * (c0 + b)), _mm256_broadcast_ss(sxi + b), ms);
            }
            msaved[i] = ms;
        }
        QB_NAME(qb_tile)(type, T, wl + c0 * 256, scale, x, n, sb0 + c0 == 0, saved);
    }
}

// The inputs' block scales d (and Q8_1's s) as floats, for inputs t0 ..< t1 and blocks b0 ..< b0+cb:
// dx[(t − t0)·QB_CHUNK + b] (converted once per call and token tile, not once per group of rows).
QB_ATTR static inline __attribute__((always_inline)) void QB_NAME(qb_x_scales)(const int type, const uint8_t *xq,
        size_t xq_stride, int64_t t0, int64_t t1, int64_t b0, int64_t cb, float *dx, float *sx) {
    const int xbytes = qb_has_min(type) ? PL_Q8_1_BLOCK_BYTES : PL_Q8_0_BLOCK_BYTES;
    for (int64_t t = t0; t < t1; t++) {
        const uint8_t *x = xq + (size_t)t * xq_stride + b0 * xbytes;
        for (int64_t b = 0; b < cb; b++) {
            dx[(t - t0) * QB_CHUNK + b] = _cvtsh_ss(load_u16(x + b * xbytes));
            if (qb_has_min(type)) sx[(t - t0) * QB_CHUNK + b] = _cvtsh_ss(load_u16(x + b * xbytes + 2));
        }
    }
}

// ggml's hsum_float_8, lane-wise for 8 rows: ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)).
QB_ATTR static inline __m256 QB_NAME(qb_lanes_sum)(const __m256 a[8]) {
    __m256 r0 = _mm256_add_ps(a[0], a[4]), r1 = _mm256_add_ps(a[1], a[5]);
    __m256 r2 = _mm256_add_ps(a[2], a[6]), r3 = _mm256_add_ps(a[3], a[7]);
    return _mm256_add_ps(_mm256_add_ps(r0, r2), _mm256_add_ps(r1, r3));
}

// packed (Q5_0 only): w is the packed layout and r0 a multiple of 16; otherwise rows in the file's layout.
QB_ATTR static inline __attribute__((always_inline)) void QB_NAME(qb_matmul)(const int type, const int packed,
        const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride, int64_t n_tokens, float *y,
        int64_t ldy, int64_t nb, int64_t r0, int64_t r1) {
    _Alignas(32) uint8_t wl[QB_CHUNK * 256];
    _Alignas(32) float dw[QB_CHUNK * 8], mw[QB_CHUNK * 8];
    _Alignas(32) float dx[QB_TOKENS * QB_CHUNK], sx[QB_TOKENS * QB_CHUNK];
    __m256 saved[QB_TOKENS][8], msaved[QB_TOKENS];
    // Rows up to QB_CHUNK blocks long: the inputs' scales are converted once per token tile, for every group.
    const int one_chunk = nb <= QB_CHUNK;
    for (int64_t t0 = 0; t0 < n_tokens; t0 += QB_TOKENS) {
        const int64_t t1 = n_tokens - t0 < QB_TOKENS ? n_tokens : t0 + QB_TOKENS;
        if (one_chunk) QB_NAME(qb_x_scales)(type, xq, xq_stride, t0, t1, 0, nb, dx, sx);
        for (int64_t r = r0; r < r1; r += 8) {
            const int valid = r1 - r < 8 ? (int)(r1 - r) : 8;
            const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            const uint8_t *wr = packed ? w : w + (size_t)r * row_bytes;
            for (int64_t t = t0; t < t1; t++) msaved[t - t0] = _mm256_setzero_ps();
            for (int64_t sb0 = 0; sb0 < nb; sb0 += QB_CHUNK) {
                const int64_t cb = nb - sb0 < QB_CHUNK ? nb - sb0 : QB_CHUNK;
                if (packed) QB_NAME(qb_unpack_packed_q5_0)(w + (size_t)(r / 16 * nb) * (16 * 22), (int)(r / 8 % 2), sb0, cb, wl, dw);
                else QB_NAME(qb_unpack)(type, wr, row_bytes, valid, r + 16 <= r1, sb0, cb, wl, dw, mw);
                if (!one_chunk) QB_NAME(qb_x_scales)(type, xq, xq_stride, t0, t1, sb0, cb, dx, sx);
                int64_t t = t0;
#define QB_RUN(T)                                                                                                  \
    QB_NAME(qb_inputs)(type, T, t, xq, xq_stride, wl, dw, mw, dx + (t - t0) * QB_CHUNK, sx + (t - t0) * QB_CHUNK,  \
                       sb0, cb, saved + (t - t0), msaved + (t - t0))
                for (; t + QB_TILE <= t1; t += QB_TILE) QB_RUN(QB_TILE);
                for (; t + 2 <= t1; t += 2) QB_RUN(2);
                for (; t < t1; t++) QB_RUN(1);
#undef QB_RUN
            }
            for (int64_t t = t0; t < t1; t++) {
                __m256 v = QB_NAME(qb_lanes_sum)(saved[t - t0]);
                if (qb_has_min(type)) v = _mm256_add_ps(v, msaved[t - t0]);
                // vmaskmovps stores are slow on AMD: only for a partial group
                if (valid == 8) _mm256_storeu_ps(y + t * ldy + r, v);
                else _mm256_maskstore_ps(y + t * ldy + r, mask, v);
            }
        }
    }
}

/// Rows r0 ..< r1 of a Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 matrix against n_tokens quantized inputs; each output bit-identical
/// to the row kernels'.
QB_ATTR void QB_NAME(matmul_batch)(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                                   int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1) {
    switch (type) {   // one instantiation per type, so each inner loop is specialised
    case PL_TYPE_Q8_0:
        // A prompt: x86/avx2_q8_batch.c (int16 block sums in the portable body's order, ~1.5× this body's speed).
        // Up to PL_AVX2_Q8_BLOCK_ORDER_MIN − 1 inputs (a speculative verify pass at the default draft lengths) this
        // body's lane arithmetic, so such a pass gives one-token decoding's bits.
        if (n_tokens >= PL_AVX2_Q8_BLOCK_ORDER_MIN) pl_avx2_matmul_batch_q8_0(w, row_bytes, xq, xq_stride, n_tokens, y, ldy, nb, r0, r1);
        else QB_NAME(qb_matmul)(PL_TYPE_Q8_0, 0, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, nb, r0, r1);
        break;
    case PL_TYPE_Q4_0: QB_NAME(qb_matmul)(PL_TYPE_Q4_0, 0, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, nb, r0, r1); break;
    case PL_TYPE_Q4_1: QB_NAME(qb_matmul)(PL_TYPE_Q4_1, 0, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, nb, r0, r1); break;
    case PL_TYPE_Q5_0: QB_NAME(qb_matmul)(PL_TYPE_Q5_0, 0, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, nb, r0, r1); break;
    case PL_TYPE_Q5_1: QB_NAME(qb_matmul)(PL_TYPE_Q5_1, 0, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, nb, r0, r1); break;
    default: break;
    }
}

/// Groups g0 ..< g1 of a packed Q5_0 matrix (packed.c's layout) against n_tokens quantized inputs: the batch kernel
/// above, its scratch filled from the packed groups; each output bit-identical to the row kernels'.
QB_ATTR void QB_NAME(matmul_batch_packed_q5_0)(const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq,
                                               size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0,
                                               int64_t g1) {
    const int64_t r1 = g1 * 16 < rows ? g1 * 16 : rows;
    QB_NAME(qb_matmul)(PL_TYPE_Q5_0, 1, packed, 0, xq, xq_stride, n_tokens, y, ldy, nb, g0 * 16, r1);
}
