// The packed (16-row interleaved) layout of Q8_0, Q4_0, Q4_1 and Q5_0 matrices and its AVX-512 VNNI kernels
// (Q4_K and Q6_K: packed_k.c).
//
// Per group of 16 rows and block of 32 columns (the same bytes as the file's 16 blocks):
//   quants  the 16 rows' quants interleaved 4 bytes at a time: step k holds bytes 4k..4k+3 of row 0, row 1, …,
//           row 15 (64 bytes), so one 512-bit vpdpbusd computes 4 elements of 16 rows. Q8_0: 8 steps (512 B,
//           offset by 128 to be unsigned); Q4_0/Q4_1/Q5_0: 4 steps of nibbles (256 B; low nibbles are elements
//           4k.., high nibbles 16+4k..).
//   Q5_0    the 5th bits as 8 byte masks of 64 bits (64 B): for step k, the mask of the low-nibble bytes (bit 4r+i
//           = 5th bit of element 4k+i of row r) and then of the high-nibble bytes (element 16+4k+i), so a masked
//           byte add puts them in place (ggml's qh, regrouped).
//   scales  the 16 rows' f16 d (32 B), then Q4_1's 16 f16 minimums (32 B).
// Rows past the end of the matrix are zero (scale 0). Every output is computed with exactly the operations, in
// exactly the order, of llama.cpp's AVX2/VNNI dot product (so bit-identical to pl_matmul_q's row kernels).
#include "packed.h"
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

#define packed_block_bytes pl_packed_block_bytes
#define packed_scale_offset pl_packed_scale_offset

// Decided at load by the process's tier (not a thread's forced one): the packed kernel has no other body.
int pl_packed_supported(void) {
    return pl_isa_process() == PL_ISA_AVX512 && (pl_isa_features() & PL_FEATURE_AVX512_VNNI) != 0;
}

// The AVX2 tier (and AVX-512 without VNNI) packs Q4_0, Q4_1 and Q5_0: their packed kernels (x86/avx2_packed.c) do
// less work per weight than the row kernels (measured decode Q4_x 1.04-1.5x the rows' GB/s; Q5_0 1.15x from DRAM
// once the stream is prefetched across both passes over a group, 1.27x from cache), and prefill runs the batch
// kernel (Q5_0: its scratch filled from the packed groups) as fast as on the file's rows; while Q8_0's sign trick
// costs the same per weight either way and one packed stream reads DRAM slower than the row kernel's four
// (0.5-0.77x), and Q4_K measured no faster (0.85-1.06x) (C bench, Tests/CKernelsDriver/bench_avx2_batch.c, AMD EPYC
// Zen 4, one thread, shared machine).
int pl_packed_type_supported(int type) {
    if (pl_packed_supported()) return type == PL_TYPE_Q8_0 || type == PL_TYPE_Q4_0 || type == PL_TYPE_Q4_1 ||
                                      type == PL_TYPE_Q5_0 || type == PL_TYPE_Q4_K || type == PL_TYPE_Q6_K;
#if defined(__x86_64__)
    const int tier = pl_isa_process();
    if (tier == PL_ISA_AVX2 || tier == PL_ISA_AVX512)
        return type == PL_TYPE_Q4_0 || type == PL_TYPE_Q4_1 || type == PL_TYPE_Q5_0;
#endif
    return 0;
}

int pl_packed_few_owns(int type, int64_t n_tokens, int64_t n) {
#if defined(__x86_64__)
    return (type == PL_TYPE_Q4_1 || type == PL_TYPE_Q8_0) && n_tokens >= 2 && n_tokens <= PL_PACKED_FEW_MAX &&
           n / 32 <= PL_PACKED_FEW_BLOCKS_MAX;
#else
    (void)type; (void)n_tokens; (void)n;
    return 0;
#endif
}

size_t pl_packed_bytes(int type, int64_t rows, int64_t n) {
    int64_t groups = (rows + 15) / 16;
    return (size_t)(groups * (n / 32) * packed_block_bytes(type));
}

// Row r (0..15) of a 16-row group of a Q4_0/Q4_1/Q5_0/Q8_0 matrix, from its file-layout bytes into the group's
// packed blocks og (zeroed first where Q5_0's masks are OR-ed in).
static void pack_group_row(int type, const uint8_t *row, int r, int64_t nb, uint8_t *og) {
    const int64_t bb = packed_block_bytes(type);
    const int steps = type == PL_TYPE_Q8_0 ? 8 : 4;   // 4-byte steps per row per block
    const int qoff = type == PL_TYPE_Q4_1 ? 4 : (type == PL_TYPE_Q5_0 ? 6 : 2);   // quants' offset inside a file block
    const int fbytes = type == PL_TYPE_Q4_0 ? 18 : type == PL_TYPE_Q4_1 ? 20 : type == PL_TYPE_Q5_0 ? 22 : 34;
    const int soff = packed_scale_offset(type);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *fb = row + b * fbytes;
        uint8_t *o = og + b * bb;
        for (int k = 0; k < steps; k++) {
            uint32_t v;
            memcpy(&v, fb + qoff + 4 * k, 4);
            // Q8_0 quants are stored offset by 128 (unsigned), as VNNI multiplies u8 by s8.
            if (type == PL_TYPE_Q8_0) v ^= 0x80808080u;
            memcpy(o + k * 64 + r * 4, &v, 4);
        }
        if (type == PL_TYPE_Q5_0) {
            uint32_t qh;
            memcpy(&qh, fb + 2, 4);
            uint64_t masks[8];
            memcpy(masks, o + 256, 64);
            PL_UNROLL
            for (int k = 0; k < 4; k++) {
                masks[2 * k] |= (uint64_t)((qh >> (4 * k)) & 15) << (4 * r);
                masks[2 * k + 1] |= (uint64_t)((qh >> (16 + 4 * k)) & 15) << (4 * r);
            }
            memcpy(o + 256, masks, 64);
        }
        memcpy(o + soff + 2 * r, fb, 2);                                   // d
        if (type == PL_TYPE_Q4_1) memcpy(o + soff + 32 + 2 * r, fb + 2, 2); // m
    }
}

void pl_pack_rows(int type, const void *w, size_t row_bytes, int64_t rows, int64_t n, void *dst, int64_t g0, int64_t g1) {
    const uint8_t *src = (const uint8_t *)w;
    if (pl_packed_k_owns(type)) { pl_pack_rows_k(type, src, row_bytes, rows, n, (uint8_t *)dst, g0, g1); return; }
    int64_t nb = n / 32, bb = packed_block_bytes(type);
    for (int64_t g = g0; g < g1; g++) {
        int valid = rows - g * 16 < 16 ? (int)(rows - g * 16) : 16;
        // Row by row: each source row is read front to back (one stream; block-major order read 16 rows in
        // step, 34 bytes at a time, and ran at ~1 GB/s on the source's cache misses), and the group's packed
        // bytes (a few KiB) take the scattered writes in cache.
        uint8_t *og = (uint8_t *)dst + (size_t)(g * nb) * bb;
        // Rows past the end stay zero (scale 0); Q5_0's high-bit masks are OR-ed together row by row.
        if (valid < 16 || type == PL_TYPE_Q5_0) memset(og, 0, (size_t)(nb * bb));
        for (int r = 0; r < valid; r++) pack_group_row(type, src + (size_t)(g * 16 + r) * row_bytes, r, nb, og);
    }
}

void pl_pack_row_list(int type, const void *const *rows, size_t offset, int64_t n_rows, int64_t n, void *dst) {
    const int64_t nb = n / 32, bb = packed_block_bytes(type);
    for (int64_t g = 0; g * 16 < n_rows; g++) {
        const int valid = n_rows - g * 16 < 16 ? (int)(n_rows - g * 16) : 16;
        uint8_t *og = (uint8_t *)dst + (size_t)(g * nb) * bb;
        if (valid < 16 || type == PL_TYPE_Q5_0) memset(og, 0, (size_t)(nb * bb));
        for (int r = 0; r < valid; r++) pack_group_row(type, (const uint8_t *)rows[g * 16 + r] + offset, r, nb, og);
    }
}

#if defined(__x86_64__)
#define VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))

// The input-only terms of one block's Q5_0 and Q4_0 integer dot products, the same for every group of rows, so
// computed once per block for the three groups in lockstep: left to the compiler, the stream's prefetches kept it from
// sharing them, and each group recomputed them (half of Q5_0's vpdpbusd; from L2, one thread: Q5_0 29.6 → 34 GB/s,
// Q4_0 35 → 36.5, AMD EPYC). Q5_0: −16·Σx, Q4_0: 8·Σx, per 4 elements, the low nibbles' (k = 0..3) then the high
// ones' (4 + k). Q8_0's (its stream does not prefetch, so the compiler shares them, and holding them here spilled
// more: 57-65 vs 65-68 GB/s) are computed in packed_block_step; Q4_1 has none.
VNNI512 static inline __attribute__((always_inline)) void packed_block_corrections(int type, const uint8_t *xb, __m512i corr[8]) {
    const uint8_t *xqs = xb + 2;
    if (type != PL_TYPE_Q5_0 && type != PL_TYPE_Q4_0) return;
    const __m512i m = _mm512_set1_epi8(type == PL_TYPE_Q5_0 ? 16 : 8);
    PL_UNROLL
    for (int k = 0; k < 4; k++) {
        int32_t xl, xh;
        memcpy(&xl, xqs + 4 * k, 4);
        memcpy(&xh, xqs + 16 + 4 * k, 4);
        __m512i cl = _mm512_dpbusd_epi32(_mm512_setzero_si512(), m, _mm512_set1_epi32(xl));
        __m512i ch = _mm512_dpbusd_epi32(_mm512_setzero_si512(), m, _mm512_set1_epi32(xh));
        if (type == PL_TYPE_Q5_0) {
            cl = _mm512_sub_epi32(_mm512_setzero_si512(), cl);
            ch = _mm512_sub_epi32(_mm512_setzero_si512(), ch);
        }
        corr[k] = cl;
        corr[k + 4] = ch;
    }
}

// One block (32 columns) of one group of 16 rows against one quantized input, added into the group's accumulators.
// S[l] is, for each row, the integer dot product of the elements llama.cpp's 256-bit lane l covers (4 consecutive
// elements: 4l.. for Q8_0; for Q4/Q5 lanes 0-3 are the low nibbles 4l.., lanes 4-7 the high nibbles 16+4(l-4)..),
// so acc[l] accumulates exactly what ggml's lane l does, block after block. `corr` is the block's
// packed_block_corrections (Q5_0, Q4_0). `prefetch` (a constant at each call) is for streams from DRAM; a batch re-reads groups
// from cache and skips it.
VNNI512 static inline __attribute__((always_inline)) void packed_block_step(
        int type, const int prefetch, const uint8_t *gb, const uint8_t *xb, const __m512i corr[8], __m512 acc[8],
        __m512 *summs) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const int64_t bb = packed_block_bytes(type);
    const uint8_t *xqs = xb + (type == PL_TYPE_Q4_1 ? 4 : 2);
    // A few KiB ahead (4 Q4/Q5 blocks: measured best): the next group's first blocks when this one ends (groups are
    // consecutive in a stream). Q8_0's stream goes without (stream_prefetch).
    if (prefetch) {
        const int64_t ahead = 4 * bb;
        for (int64_t o = 0; o < bb; o += 64) _mm_prefetch((const char *)(gb + ahead + o), _MM_HINT_T0);
    }
    __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gb + packed_scale_offset(type))));
    __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(_cvtsh_ss(ld16(xb))));
    if (type == PL_TYPE_Q8_0) {
        PL_UNROLL
        for (int k = 0; k < 8; k++) {
            int32_t xv;
            memcpy(&xv, xqs + 4 * k, 4);
            __m512i xk = _mm512_set1_epi32(xv);
            // (w+128)·x − 128·Σx = w·x
            __m512i c = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), xk);
            __m512i S = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                         _mm512_loadu_si512((const void *)(gb + 64 * k)), xk), c);
            acc[k] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(S), acc[k]);
        }
        return;
    }
    PL_UNROLL
    for (int k = 0; k < 4; k++) {
        __m512i v = _mm512_loadu_si512((const void *)(gb + 64 * k));
        __m512i lo = _mm512_and_si512(v, low4);
        __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
        int32_t xl, xh;
        memcpy(&xl, xqs + 4 * k, 4);
        memcpy(&xh, xqs + 16 + 4 * k, 4);
        __m512i xlo = _mm512_set1_epi32(xl), xhi = _mm512_set1_epi32(xh);
        __m512i Sl, Sh;
        if (type == PL_TYPE_Q5_0) {
            // 5th bits: +16 where the mask says so; then (q−16)·x = q·x − 16·Σx, the second term (the input's
            // alone) seeding the dot product's accumulator.
            const __m512i sixteen = _mm512_set1_epi8(16);
            __mmask64 ml, mh;
            memcpy(&ml, gb + 256 + 16 * k, 8);
            memcpy(&mh, gb + 256 + 16 * k + 8, 8);
            lo = _mm512_mask_add_epi8(lo, ml, lo, sixteen);
            hi = _mm512_mask_add_epi8(hi, mh, hi, sixteen);
            Sl = _mm512_dpbusd_epi32(corr[k], lo, xlo);
            Sh = _mm512_dpbusd_epi32(corr[k + 4], hi, xhi);
        } else {
            Sl = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xlo);
            Sh = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, xhi);
            if (type == PL_TYPE_Q4_0) { // (q−8)·x = q·x − 8·Σx
                Sl = _mm512_sub_epi32(Sl, corr[k]);
                Sh = _mm512_sub_epi32(Sh, corr[k + 4]);
            }
        }
        acc[k] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(Sl), acc[k]);
        acc[k + 4] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(Sh), acc[k + 4]);
    }
    if (type == PL_TYPE_Q4_1) {
        __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gb + 256 + 32)));
        *summs = _mm512_fmadd_ps(mw, _mm512_set1_ps(_cvtsh_ss(ld16(xb + 2))), *summs);
    }
}

// ggml's hsum_float_8, lane-wise for 16 rows: ((l4+l0) + (l6+l2)) + ((l5+l1) + (l7+l3)), plus Q4_1's minimums.
VNNI512 static inline __attribute__((always_inline)) __m512 packed_group_sum(int type, const __m512 acc[8], __m512 summs) {
    __m512 r0 = _mm512_add_ps(acc[4], acc[0]), r1 = _mm512_add_ps(acc[5], acc[1]);
    __m512 r2 = _mm512_add_ps(acc[6], acc[2]), r3 = _mm512_add_ps(acc[7], acc[3]);
    __m512 sum = _mm512_add_ps(_mm512_add_ps(r0, r2), _mm512_add_ps(r1, r3));
    return type == PL_TYPE_Q4_1 ? _mm512_add_ps(sum, summs) : sum;
}

static inline int activation_block_bytes(int type) { return type == PL_TYPE_Q4_1 ? 36 : 34; }

// One group of 16 rows against one quantized input.
VNNI512 static inline __attribute__((always_inline)) __m512 packed_group_dot(
        int type, const int prefetch, const uint8_t *grp, const uint8_t *xq, int64_t nb) {
    __m512 acc[8], summs = _mm512_setzero_ps();
    PL_UNROLL
    for (int l = 0; l < 8; l++) acc[l] = _mm512_setzero_ps();
    const int64_t bb = packed_block_bytes(type);
    const int xbytes = activation_block_bytes(type);
    for (int64_t b = 0; b < nb; b++) {
        __m512i corr[8];
        packed_block_corrections(type, xq + b * xbytes, corr);
        packed_block_step(type, prefetch, grp + b * bb, xq + b * xbytes, corr, acc, &summs);
    }
    return packed_group_sum(type, acc, summs);
}

// Three groups against one input, block by block in lockstep: each result is computed exactly as packed_group_dot
// computes it, but the input's broadcasts (and Q4_0/Q5_0's input-only corrections) serve all three. For one token
// the groups are far apart, so the core streams weights from three places at once, which keeps more memory
// requests in flight (measured on this machine's 2 threads, GB/s from DRAM: one stream 17-19, two 20-23, three
// 23-27, for Q4_1 and Q8_0 alike; four would spill the 32 accumulators).
VNNI512 static inline __attribute__((always_inline)) void packed_group_dot3(
        int type, const int prefetch, const uint8_t *const g[3], const uint8_t *xq, int64_t nb, __m512 y[3]) {
    __m512 a[3][8], s[3];
    PL_UNROLL
    for (int i = 0; i < 3; i++) {
        s[i] = _mm512_setzero_ps();
        PL_UNROLL
        for (int l = 0; l < 8; l++) a[i][l] = _mm512_setzero_ps();
    }
    const int64_t bb = packed_block_bytes(type);
    const int xbytes = activation_block_bytes(type);
    for (int64_t k = 0; k < nb; k++) {
        __m512i corr[8];
        packed_block_corrections(type, xq + k * xbytes, corr);
        PL_UNROLL
        for (int i = 0; i < 3; i++) packed_block_step(type, prefetch, g[i] + k * bb, xq + k * xbytes, corr, a[i], &s[i]);
    }
    PL_UNROLL
    for (int i = 0; i < 3; i++) y[i] = packed_group_sum(type, a[i], s[i]);
}

VNNI512 static inline __attribute__((always_inline)) void store_group(float *y, int64_t rows, int64_t g, __m512 v) {
    int64_t r = g * 16, valid = rows - r < 16 ? rows - r : 16;
    _mm512_mask_storeu_ps(y + r, (__mmask16)((1u << valid) - 1), v);
}

// Whether the one-input stream prefetches ahead in software. Q8_0's does not: its 9 prefetches per 544-byte block
// and stream held up the loads they were meant to feed, and the hardware prefetchers follow three plain streams as
// fast as memory delivers them (Gemma 3's 262,144 × 640 head, C bench on 2 threads, AMD EPYC Zen 4, shared machine,
// unpreempted passes: 34 GB/s with the prefetches, 48-50 without, a plain read of the same bytes 46-48). The 4-bit
// types' smaller blocks still gain from theirs (Q4_1 40 vs 30 GB/s, Q5_0 44 vs 32; Q4_0 about even).
static inline int stream_prefetch(int type) { return type != PL_TYPE_Q8_0; }

// Groups g0 ..< g1 against one input, as three streams (the thirds of the range) in lockstep.
VNNI512 static inline __attribute__((always_inline)) void matvec_packed_streams(
        int type, const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *x, float *y, int64_t g0, int64_t g1) {
    const int64_t gbytes = nb * packed_block_bytes(type);
    const int prefetch = stream_prefetch(type);
    int64_t third = (g1 - g0) / 3;
    for (int64_t i = 0; i < third; i++) {
        int64_t g[3] = {g0 + i, g0 + third + i, g0 + 2 * third + i};
        const uint8_t *p[3] = {packed + g[0] * gbytes, packed + g[1] * gbytes, packed + g[2] * gbytes};
        __m512 v[3];
        packed_group_dot3(type, prefetch, p, x, nb, v);
        PL_UNROLL
        for (int j = 0; j < 3; j++) store_group(y, rows, g[j], v[j]);
    }
    for (int64_t g = g0 + 3 * third; g < g1; g++) store_group(y, rows, g, packed_group_dot(type, prefetch, packed + g * gbytes, x, nb));
}

// Several inputs: three neighbouring groups at a time (in L1/L2 while every input passes over them), each input
// against all three in lockstep so its broadcasts and corrections are shared.
VNNI512 static inline __attribute__((always_inline)) void matmul_packed_batch(
        int type, const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq, size_t xq_stride,
        int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1) {
    const int64_t gbytes = nb * packed_block_bytes(type);
    int64_t g = g0;
    for (; g + 3 <= g1; g += 3) {
        const uint8_t *p[3] = {packed + g * gbytes, packed + (g + 1) * gbytes, packed + (g + 2) * gbytes};
        for (int64_t t = 0; t < n_tokens; t++) {
            __m512 v[3];
            packed_group_dot3(type, 0, p, xq + (size_t)t * xq_stride, nb, v);
            PL_UNROLL
            for (int j = 0; j < 3; j++) store_group(y + t * ldy, rows, g + j, v[j]);
        }
    }
    for (; g < g1; g++)
        for (int64_t t = 0; t < n_tokens; t++)
            store_group(y + t * ldy, rows, g, packed_group_dot(type, 0, packed + g * gbytes, xq + (size_t)t * xq_stride, nb));
}

// Q4_1 against more inputs than the few-inputs kernel takes at once: that kernel (two inputs sharing each unpacked
// block, scales made once per call, no shifts) over chunks of its maximum, for a span of groups that stays in L2
// while every chunk passes over it. Same bits as the one-input kernel. Q8_0 too where a group's blocks are at most
// 32 (17 KiB, in L1 beside the inputs'): 128 inputs, one thread, Intel Xeon, against x86/avx512_packed_batch.c —
// 1,536 rows × 576 columns 1.35 → 1.12 ms, × 896 2.21 → 1.76, × 1,024 2.49 → 2.08; at 576 × 1,536 (48 blocks)
// 1.34 → 1.40, so wider rows keep the batch kernel.
static inline int few_chunks_owns(int type, int64_t nb) {
    return (type == PL_TYPE_Q4_1 || (type == PL_TYPE_Q8_0 && nb <= 32)) && nb <= PL_PACKED_FEW_BLOCKS_MAX;
}

VNNI512 static void matmul_few_chunks(int type, const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq,
                                      size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1) {
    const int64_t span = 256 * 1024 / (nb * packed_block_bytes(type)) + 1;
    for (int64_t s = g0; s < g1; s += span) {
        const int64_t e = s + span < g1 ? s + span : g1;
        for (int64_t t = 0; t < n_tokens; t += PL_PACKED_FEW_MAX) {
            const int64_t n = n_tokens - t < PL_PACKED_FEW_MAX ? n_tokens - t : PL_PACKED_FEW_MAX;
            pl_packed_matmul_few(type, packed, rows, nb, xq + (size_t)t * xq_stride, xq_stride, n, y + t * ldy, ldy, s, e);
        }
    }
}

VNNI512 static void matmul_packed_vnni(int type, const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq,
                                       size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1) {
    // One instantiation per type (and per one/several inputs), so each inner loop is specialised.
#define PL_PACKED_CASE(T)                                                                                   \
    case T:                                                                                                 \
        if (n_tokens == 1) matvec_packed_streams(T, packed, rows, nb, xq, y, g0, g1);                       \
        else if (pl_packed_few_owns(T, n_tokens, nb * 32))                                                  \
            pl_packed_matmul_few(T, packed, rows, nb, xq, xq_stride, n_tokens, y, ldy, g0, g1);             \
        else if (few_chunks_owns(T, nb))                                                                    \
            matmul_few_chunks(T, packed, rows, nb, xq, xq_stride, n_tokens, y, ldy, g0, g1);                \
        else if (pl_packed_batch_owns(T))                                                                   \
            pl_packed_matmul_batch(T, packed, rows, nb, xq, xq_stride, n_tokens, y, ldy, g0, g1);           \
        else matmul_packed_batch(T, packed, rows, nb, xq, xq_stride, n_tokens, y, ldy, g0, g1);             \
        break;
    switch (type) {
    PL_PACKED_CASE(PL_TYPE_Q4_0)
    PL_PACKED_CASE(PL_TYPE_Q4_1)
    PL_PACKED_CASE(PL_TYPE_Q5_0)
    PL_PACKED_CASE(PL_TYPE_Q8_0)
    default: break;
    }
#undef PL_PACKED_CASE
}
#endif

void pl_matmul_packed(int type, const void *packed, int64_t rows, int64_t n, const void *xq, size_t xq_stride,
                      int64_t n_tokens, float *y, int64_t ldy, int64_t r0, int64_t r1) {
    // Only packed where pl_packed_type_supported() said so (an x86 CPU with AVX2): the portable switch (which applies to
    // the row-layout kernels) does not apply here. The AVX-512 VNNI bodies run on that tier (and for a thread forced
    // portable on a CPU that has it, as before), the AVX2 ones otherwise: POCKETLM_ISA=avx2, a test forcing it, an
    // AVX2 CPU, an AVX-512 CPU without VNNI.
#if defined(__x86_64__)
    const int vnni512 = pl_isa_best() == PL_ISA_AVX512 && (pl_isa_features() & PL_FEATURE_AVX512_VNNI);
    const int tier = pl_isa();
    if (!(vnni512 && (tier == PL_ISA_AVX512 || tier == PL_ISA_PORTABLE)) && pl_avx2_packed_owns(type)) {
        pl_avx2_matmul_packed(type, (const uint8_t *)packed, rows, n, (const uint8_t *)xq, xq_stride, n_tokens, y, ldy,
                              r0 / 16, (r1 + 15) / 16);
        return;
    }
    if (pl_packed_k_owns(type)) {
        pl_matmul_packed_k(type, (const uint8_t *)packed, rows, n, (const uint8_t *)xq, xq_stride, n_tokens, y, ldy,
                           r0 / 16, (r1 + 15) / 16);
        return;
    }
    matmul_packed_vnni(type, (const uint8_t *)packed, rows, n / 32, (const uint8_t *)xq, xq_stride, n_tokens, y, ldy,
                       r0 / 16, (r1 + 15) / 16);
#endif
}
