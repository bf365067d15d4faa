// Prompts (PL_AVX2_Q8_BLOCK_ORDER_MIN inputs and more) against Q8_0 rows on the AVX2 tier: each block's 32 products
// summed as one int32 by vpmaddwd on int16, the scaled blocks added in the portable body's order, so every output is
// bit-identical to pl_portable_matmul_q — not to the row kernels, which compute ggml's 8-lane arithmetic (fewer
// inputs, a speculative verify pass included, still run that one: quant_batch_body.h).
//
// Why: the lane arithmetic costs, per 4 elements of 8 rows and per input, vpsignb + vpmaddubsw + vpmaddwd + vcvtdq2ps
// + vfmadd, four of them on the two pipes Zen 4 multiplies on: ~2.0 cycles per 32 multiply-adds, most of a prompt's
// time. Its conversion and fma per lane cannot go while the lanes are kept, so at best an exact rewrite of the
// integer part leaves three. Here the weights (once per 64-row group, chunk of blocks and token tile) and the inputs
// (once per token tile and chunk, for every row) are widened to int16: the same 32 multiply-adds are two vpmaddwd
// and two vpaddd, no sign step, and the float work (conversion, scale, add) is once per block and 8 rows. Measured
// 1536×576 over 128 inputs, one thread: 47.9 → ~71 GMAC/s (AMD EPYC Zen 4, shared machine).
//
// Layout: a block's 32 quants widened into two 16-bit registers per 4-byte lane l, E (elements 4l, 4l+2) and
// O (4l+1, 4l+3), by shifts within each 16-bit word (no cross-lane shuffle). Weights: 8 rows lane-major (row i's
// pair in dword i, pl_avx2_transpose8_epi32); inputs: the pair of lane l in dword l, broadcast by a load. vpmaddwd
// of E and O with the input's E and O pairs, summed over the 8 lanes, is row i's exact int32 block sum in dword i
// (|sum| ≤ 32·128·128 < 2^24: exact as a float too; a −128 quant is exact here).
//
// Arithmetic, the portable body's (portable/quant.c): y = Σ_b (float)s_b · (d_w,b · d_x,b), the products rounded
// and added block after block from 0, no fused multiply-add. The float sum lives in y between chunks of blocks
// (the same order: only its storage changes).
#include "kernels_internal.h"
#if defined(__x86_64__)
#include "x86/avx2_common.h"
#define AVX2 PL_AVX2_ATTR

// Tokens per tile; row groups of QB8_HALVES × 8 rows (one input's register tile: 8 int32 block sums, the input's two
// broadcast pairs, temporaries; the weights are memory operands, loaded once per input and lane from L1); blocks per
// chunk at most (the group's widened weights, QB8_CHUNK × QB8_BLOCK = 16 KiB, and the tile's widened inputs, 16 KiB,
// fit L1 together).
enum { QB8_TOKENS = 64, QB8_HALVES = 8, QB8_ROWS = 8 * QB8_HALVES, QB8_BLOCK = 512 * QB8_HALVES, QB8_CHUNK = 32 / QB8_HALVES };

// One register of int8 quants to the E/O int16 pairs: E = the sign-extended even bytes (each word's low byte shifted
// up and back), O = the odd bytes (each word shifted down).
AVX2 static inline __attribute__((always_inline)) void qb8_widen(__m256i v, __m256i *e, __m256i *o) {
    *e = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);
    *o = _mm256_srai_epi16(v, 8);
}

// Blocks b0 ..< b0+cb of the 8 rows of half h at w (the first `valid` of them; the others zero) to
// wl[b·QB8_BLOCK + 64·(QB8_HALVES·l + h) ..] (E of lane l, then O) and their scales dw[QB8_ROWS·b + 8h + i].
AVX2 static inline __attribute__((always_inline)) void qb8_unpack_weights(const uint8_t *w, size_t row_bytes,
        int valid, int prefetch_next, int64_t b0, int64_t cb, int h, uint8_t *wl, float *dw) {
    for (int64_t b = 0; b < cb; b++) {
        __m256i e[8], out[8];
        uint16_t d[8];
        PL_UNROLL
        for (int i = 0; i < 8; i++) {
            if (i < valid) {
                const uint8_t *wb = w + (size_t)i * row_bytes + (size_t)(b0 + b) * PL_Q8_0_BLOCK_BYTES;
                // The next group's rows (unpacked after every input has run over this one's): fetched meanwhile.
                if (prefetch_next) _mm_prefetch((const char *)(wb + QB8_ROWS * row_bytes + PL_Q8_0_BLOCK_BYTES - 1), _MM_HINT_T0);
                e[i] = _mm256_loadu_si256((const __m256i *)(wb + 2));
                d[i] = load_u16(wb);
            } else {
                e[i] = _mm256_setzero_si256();
                d[i] = 0;
            }
        }
        pl_avx2_transpose8_epi32(e, out);
        uint8_t *o = wl + b * QB8_BLOCK;
        PL_UNROLL
        for (int l = 0; l < 8; l++) {
            __m256i ev, ov;
            qb8_widen(out[l], &ev, &ov);
            _mm256_store_si256((__m256i *)(o + 64 * (QB8_HALVES * l + h)), ev);
            _mm256_store_si256((__m256i *)(o + 64 * (QB8_HALVES * l + h) + 32), ov);
        }
        _mm256_store_ps(dw + QB8_ROWS * b + 8 * h, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)d)));
    }
}

// Inputs t0 ..< t1, blocks b0 ..< b0+cb to xw[((t − t0)·QB8_CHUNK + b)·64 ..] (E then O, lane l's pair in dword l)
// and their scales dx[(t − t0)·QB8_CHUNK + b].
AVX2 static inline void qb8_widen_inputs(const uint8_t *xq, size_t xq_stride, int64_t t0, int64_t t1, int64_t b0,
                                         int64_t cb, uint8_t *xw, float *dx) {
    for (int64_t t = t0; t < t1; t++) {
        const uint8_t *x = xq + (size_t)t * xq_stride + (size_t)b0 * PL_Q8_0_BLOCK_BYTES;
        uint8_t *o = xw + (size_t)(t - t0) * QB8_CHUNK * 64;
        float *d = dx + (t - t0) * QB8_CHUNK;
        for (int64_t b = 0; b < cb; b++, x += PL_Q8_0_BLOCK_BYTES) {
            __m256i ev, ov;
            qb8_widen(_mm256_loadu_si256((const __m256i *)(x + 2)), &ev, &ov);
            _mm256_store_si256((__m256i *)(o + 64 * b), ev);
            _mm256_store_si256((__m256i *)(o + 64 * b + 32), ov);
            d[b] = _cvtsh_ss(load_u16(x));
        }
    }
}

// One input (xw, dx: its widened blocks and scales) over the cb blocks of the first H halves of the group's scratch:
// y[i] (row i of the group) gets each block's (float)s · (d_w·d_x) added in block order, from 0 when first, else
// from what y holds. The last half's rows under `last` only are read and written (all of them when `full`).
AVX2 static inline __attribute__((always_inline)) void qb8_input(const int H, const int full, const uint8_t *wl,
        const float *dw, const uint8_t *xw, const float *dx, int64_t cb, int first, float *y, __m256i last) {
    __m256 f[QB8_HALVES];
    PL_UNROLL
    for (int h = 0; h < H; h++)
        f[h] = first ? _mm256_setzero_ps() : full || h < H - 1 ? _mm256_loadu_ps(y + 8 * h) : _mm256_maskload_ps(y + 8 * h, last);
    for (int64_t b = 0; b < cb; b++) {
        const uint8_t *wb = wl + b * QB8_BLOCK, *xb = xw + b * 64;
        __m256i s[QB8_HALVES];
        PL_UNROLL
        for (int l = 0; l < 8; l++) {
            const __m256i xe = pl_avx2_broadcast32(xb + 4 * l), xo = pl_avx2_broadcast32(xb + 32 + 4 * l);
            PL_UNROLL
            for (int h = 0; h < H; h++) {
                const __m256i *wv = (const __m256i *)(wb + 64 * (QB8_HALVES * l + h));
                const __m256i p = _mm256_add_epi32(_mm256_madd_epi16(_mm256_load_si256(wv), xe),
                                                   _mm256_madd_epi16(_mm256_load_si256(wv + 1), xo));
                s[h] = l == 0 ? p : _mm256_add_epi32(s[h], p);
            }
        }
        const __m256 d = _mm256_broadcast_ss(dx + b);
        PL_UNROLL
        for (int h = 0; h < H; h++)
            f[h] = _mm256_add_ps(f[h], _mm256_mul_ps(_mm256_cvtepi32_ps(s[h]),
                                                     _mm256_mul_ps(_mm256_load_ps(dw + QB8_ROWS * b + 8 * h), d)));
    }
    PL_UNROLL
    for (int h = 0; h < H; h++) {
        // vmaskmovps stores are slow on AMD: only for a partial half
        if (full || h < H - 1) _mm256_storeu_ps(y + 8 * h, f[h]);
        else _mm256_maskstore_ps(y + 8 * h, last, f[h]);
    }
}

// Inputs 0 ..< n of the tile over a group of H halves (the last one partial unless full).
AVX2 static inline __attribute__((always_inline)) void qb8_inputs(const int H, const int full, const uint8_t *wl,
        const float *dw, const uint8_t *xw, const float *dx, int64_t n, int64_t cb, int first, float *y, int64_t ldy,
        __m256i last) {
    for (int64_t t = 0; t < n; t++)
        qb8_input(H, full, wl, dw, xw + (size_t)t * QB8_CHUNK * 64, dx + t * QB8_CHUNK, cb, first, y + t * ldy, last);
}

/// Rows r0 ..< r1 of a Q8_0 matrix against n_tokens Q8_0 inputs, each output bit-identical to the portable body's.
AVX2 void pl_avx2_matmul_batch_q8_0(const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                                    int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1) {
    _Alignas(32) uint8_t xw[QB8_TOKENS * QB8_CHUNK * 64];
    _Alignas(32) uint8_t wl[QB8_CHUNK * QB8_BLOCK];
    _Alignas(32) float dx[QB8_TOKENS * QB8_CHUNK], dw[QB8_CHUNK * QB8_ROWS];
    // Chunks of equal size (18 blocks: 9 + 9, not 16 + 2), each at most QB8_CHUNK.
    const int64_t chunks = (nb + QB8_CHUNK - 1) / QB8_CHUNK;
    const int64_t csize = chunks > 0 ? (nb + chunks - 1) / chunks : 0;
    for (int64_t t0 = 0; t0 < n_tokens; t0 += QB8_TOKENS) {
        const int64_t t1 = n_tokens - t0 < QB8_TOKENS ? n_tokens : t0 + QB8_TOKENS;
        for (int64_t b0 = 0; b0 < nb; b0 += csize) {
            const int64_t cb = nb - b0 < csize ? nb - b0 : csize;
            qb8_widen_inputs(xq, xq_stride, t0, t1, b0, cb, xw, dx);
            for (int64_t r = r0; r < r1; r += QB8_ROWS) {
                const int valid = r1 - r < QB8_ROWS ? (int)(r1 - r) : QB8_ROWS;
                const int halves = (valid + 7) / 8, tail = valid - 8 * (halves - 1);
                for (int h = 0; h < halves; h++)
                    qb8_unpack_weights(w + (size_t)(r + 8 * h) * row_bytes, row_bytes, h < halves - 1 ? 8 : tail,
                                       r + QB8_ROWS + 8 * h + 8 <= r1, b0, cb, h, wl, dw);
                float *yr = y + t0 * ldy + r;
                const int64_t n = t1 - t0;
                if (valid == QB8_ROWS) {
                    qb8_inputs(QB8_HALVES, 1, wl, dw, xw, dx, n, cb, b0 == 0, yr, ldy, _mm256_setzero_si256());
                    continue;
                }
                // The range's last group: as many halves as it has rows for, the last one masked if partial.
                const __m256i last = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                switch (halves) {
#define QB8_PART(H) case H: qb8_inputs(H, 0, wl, dw, xw, dx, n, cb, b0 == 0, yr, ldy, last); break;
                QB8_PART(1) QB8_PART(2) QB8_PART(3) QB8_PART(4) QB8_PART(5) QB8_PART(6) QB8_PART(7)
#undef QB8_PART
                default: break;
                }
            }
        }
    }
}
#endif
