// AVX-512 VNNI bodies of the flash-paging bundle kernels (bundles.h): ggml's lane arithmetic, as the VNNI dense
// Q8_0 kernel computes it, 16 rows (gate/up) or 16 down rows per vector.
#include "bundles.h"
#include "kernels_internal.h"
#if defined(__x86_64__)
#include "x86/avx2_common.h"
#include <immintrin.h>
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,f16c,fma")))

VNNI static inline float f16_hw(const uint8_t *p) { return _cvtsh_ss(pl_bundle_ld16(p)); }

// Gate/up, VNNI: x86/quant_rows_body.h's dotq_tile for Q8_0, per row the very same float operations in the same order, 16 rows
// at a time. Bundles go in groups of GU_GROUP; the gate and up row of a bundle share one 512-bit register (gate in
// the low 256 bits, up in the high), so each instruction advances two rows' 8-lane chains, and the group's 8
// registers are 16 independent chains. Per row and block:
//   * the integer lane sums S_l are the same exact integers (computed as (w ⊕ 0x80)·x − 128·Σx, the packed
//     kernel's form, with Σx shared by all rows, instead of |w|·sign(x, w));
//   * the scale is the same f32 product f16(d_w)·f16(d_x) (the group's f16 scales gathered into a buffer first and
//     converted 16 rows at a time);
//   * acc_l = fma(scale, (float)S_l, acc_l) in block order, then dotq_tile's hsum256 + 0.0f.
// A group with fewer than GU_GROUP bundles (the last) repeats its last bundle in the empty slots and drops them.
#define GU_GROUP 8
#define GU_ROWS (2 * GU_GROUP)
#define GU_CHUNK 32 // blocks per pass over the group (bounds the scale buffers for large dim)

// One group of GU_GROUP bundles starting at k: its 2·GU_GROUP rows (2j = gate of bundle k+j, 2j+1 = its up; w points
// at the quants of block 0; a short last group repeats its last bundle), and the next group's bundles to prefetch
// (anywhere in memory, so no hardware prefetch across them): first cache line and line count of each.
static inline int group_rows(const void *const *bundles, int64_t k, int64_t k1, size_t rb, const uint8_t **w,
                             const char **pf, int64_t *pfl) {
    const int64_t cnt = k1 - k < GU_GROUP ? k1 - k : GU_GROUP;
    for (int j = 0; j < GU_GROUP; j++) {
        const uint8_t *bp = (const uint8_t *)bundles[k + (j < cnt ? j : cnt - 1)];
        w[2 * j] = bp + 2;
        w[2 * j + 1] = bp + rb + 2;
    }
    int npf = 0;
    for (int j = 0; j < GU_GROUP && k + GU_GROUP + j < k1; j++) {
        const uintptr_t a = (uintptr_t)bundles[k + GU_GROUP + j];
        pf[npf] = (const char *)(a & ~(uintptr_t)63);
        pfl[npf++] = (int64_t)(((a + 2 * rb - 1) >> 6) - (a >> 6) + 1);
    }
    return npf;
}

VNNI void pl_avx512_bundle_gate_up(const void *const *bundles, int64_t k0, int64_t k1, const uint8_t *xq, int64_t nb,
                              float *g, float *u) {
    const size_t rb = (size_t)nb * 34;
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    const __m512i pidx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0); // low 8 ← row 2j, high ← 2j+1
    uint16_t sh[GU_CHUNK][GU_ROWS] __attribute__((aligned(64)));  // f16 d_w, row i of block b at sh[b][i]
    float sf[GU_CHUNK][GU_ROWS] __attribute__((aligned(64)));     // d_w · d_x
    for (int64_t k = k0; k < k1; k += GU_GROUP) {
        const int64_t cnt = k1 - k < GU_GROUP ? k1 - k : GU_GROUP;
        // rows: 2j = gate of bundle k+j, 2j+1 = its up (w points at the quants of block 0)
        const uint8_t *w[GU_ROWS];
        const char *pf[GU_GROUP];
        int64_t pfl[GU_GROUP];
        const int npf = group_rows(bundles, k, k1, rb, w, pf, pfl);
        // The next group's bundles are prefetched spread over the blocks: block b fetches line b and line b + nb
        // of each (2·rb bytes span at most 2·nb lines).
        __m512 acc2[GU_GROUP];
        for (int j = 0; j < GU_GROUP; j++) acc2[j] = _mm512_setzero_ps();
        for (int64_t c0 = 0; c0 < nb; c0 += GU_CHUNK) {
            const int64_t cn = nb - c0 < GU_CHUNK ? nb - c0 : GU_CHUNK;
            // (16-bit stores read back as vectors: no store forwarding, but the loop below starts on block 0)
            for (int64_t b = 0; b < cn; b++)
                for (int i = 0; i < GU_ROWS; i++) sh[b][i] = pl_bundle_ld16(w[i] + (c0 + b) * 34 - 2);
            for (int64_t b = 0; b < cn; b++) {
                const __m512 dx = _mm512_set1_ps(f16_hw(xq + (c0 + b) * 34));
                _mm512_store_ps(sf[b], _mm512_mul_ps(_mm512_cvtph_ps(_mm256_load_si256((const __m256i *)sh[b])), dx));
            }
            for (int64_t b = 0; b < cn; b++) {
                const int64_t bo = (c0 + b) * 34;
                for (int j = 0; j < npf; j++) {
                    const int64_t l = c0 + b;
                    if (l < pfl[j]) _mm_prefetch(pf[j] + 64 * l, _MM_HINT_T0);
                    if (l + nb < pfl[j]) _mm_prefetch(pf[j] + 64 * (l + nb), _MM_HINT_T0);
                }
                const __m512i c = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xq + bo + 2)));
                // (w + 128)·x − 128·Σx = w·x, per 4-element lane
                const __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, c));
                const __m512 sv = _mm512_load_ps(sf[b]);
                for (int j = 0; j < GU_GROUP; j++) {
                    __m512i a = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(w[2 * j] + bo))),
                                                   _mm256_loadu_si256((const __m256i *)(w[2 * j + 1] + bo)), 1);
                    a = _mm512_xor_si512(a, bias);
                    const __m512i s = _mm512_dpbusd_epi32(start, a, c);
                    const __m512 sc = _mm512_permutexvar_ps(_mm512_add_epi32(pidx, _mm512_set1_epi32(2 * j)), sv);
                    acc2[j] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), acc2[j]);
                }
            }
        }
        const float msum = 0.0f; // dotq_rows adds its (Q4_1) minimum term, 0 for Q8_0: keep the add (−0 + 0 = +0)
        for (int j = 0; j < cnt; j++) {
            g[k + j] = pl_avx2_hsum8(_mm512_castps512_ps256(acc2[j])) + msum;
            u[k + j] = pl_avx2_hsum8(_mm512_extractf32x8_ps(acc2[j], 1)) + msum;
        }
    }
}

// Batched gate/up, VNNI: per group of GU_GROUP bundles, every input in turn, each with exactly gate_up_vnni's float
// operations per row (the same f16 → f32 weight scales times f16(d_x), the same fma chains in block order, the same
// reduction), so each output is bit-identical to the single-input kernel. Inputs go two at a time (gub_tokens), each
// weight vector loaded and biased once for both. What the inputs share is done once per group: the weight scales are gathered and converted once (for rows of up to GUB_BLOCKS blocks; longer rows go in
// chunks of GUB_BLOCKS, regathered per input), and the group's rows (2·GU_GROUP·dim/32·34 bytes, 9.8 KB at dim 576)
// stay in L1 across the inputs. The next group is prefetched while the first input runs.
#define GUB_BLOCKS 128

// One or two inputs (ntok, a constant after inlining) against the group's rows w; outputs for the first input at
// g[j], u[j] (j < cnt), the second at g[ldg + j], u[ldg + j]. Per input exactly gate_up_vnni's float operations.
VNNI static inline __attribute__((always_inline)) void
gub_tokens(const uint8_t *const *w, const uint8_t *x0, const uint8_t *x1, const int ntok, int64_t nb, int one_chunk,
           int first, uint16_t (*sh)[GU_ROWS], float (*sw)[GU_ROWS], const char *const *pf, const int64_t *pfl,
           int npf, float *g, float *u, int64_t ldg, int cnt) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    const __m512i pidx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512 acc0[GU_GROUP], acc1[GU_GROUP];
    for (int j = 0; j < GU_GROUP; j++) acc0[j] = acc1[j] = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < nb; c0 += GUB_BLOCKS) {
        const int64_t cn = nb - c0 < GUB_BLOCKS ? nb - c0 : GUB_BLOCKS;
        if (first || !one_chunk) {
            for (int64_t b = 0; b < cn; b++)
                for (int i = 0; i < GU_ROWS; i++) sh[b][i] = pl_bundle_ld16(w[i] + (c0 + b) * 34 - 2);
            for (int64_t b = 0; b < cn; b++)
                _mm512_store_ps(sw[b], _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)sh[b])));
        }
        for (int64_t b = 0; b < cn; b++) {
            const int64_t bo = (c0 + b) * 34;
            if (first) {
                for (int j = 0; j < npf; j++) {
                    const int64_t l = c0 + b;
                    if (l < pfl[j]) _mm_prefetch(pf[j] + 64 * l, _MM_HINT_T0);
                    if (l + nb < pfl[j]) _mm_prefetch(pf[j] + 64 * (l + nb), _MM_HINT_T0);
                }
            }
            const __m512 swb = _mm512_load_ps(sw[b]);
            const __m512i c0v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x0 + bo + 2)));
            const __m512i st0 = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, c0v));
            // gate_up_vnni's scale: f32(d_w) · f32(d_x), one rounding
            const __m512 sv0 = _mm512_mul_ps(swb, _mm512_set1_ps(f16_hw(x0 + bo)));
            __m512i c1v = c0v, st1 = st0;
            __m512 sv1 = sv0;
            if (ntok == 2) {
                c1v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x1 + bo + 2)));
                st1 = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, c1v));
                sv1 = _mm512_mul_ps(swb, _mm512_set1_ps(f16_hw(x1 + bo)));
            }
            for (int j = 0; j < GU_GROUP; j++) {
                __m512i a = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(w[2 * j] + bo))),
                                               _mm256_loadu_si256((const __m256i *)(w[2 * j + 1] + bo)), 1);
                a = _mm512_xor_si512(a, bias);
                const __m512i pj = _mm512_add_epi32(pidx, _mm512_set1_epi32(2 * j));
                acc0[j] = _mm512_fmadd_ps(_mm512_permutexvar_ps(pj, sv0), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(st0, a, c0v)), acc0[j]);
                if (ntok == 2)
                    acc1[j] = _mm512_fmadd_ps(_mm512_permutexvar_ps(pj, sv1), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(st1, a, c1v)), acc1[j]);
            }
        }
    }
    const float msum = 0.0f;
    for (int j = 0; j < cnt; j++) {
        g[j] = pl_avx2_hsum8(_mm512_castps512_ps256(acc0[j])) + msum;
        u[j] = pl_avx2_hsum8(_mm512_extractf32x8_ps(acc0[j], 1)) + msum;
        if (ntok == 2) {
            g[ldg + j] = pl_avx2_hsum8(_mm512_castps512_ps256(acc1[j])) + msum;
            u[ldg + j] = pl_avx2_hsum8(_mm512_extractf32x8_ps(acc1[j], 1)) + msum;
        }
    }
}

VNNI void pl_avx512_bundle_gate_up_batch(const void *const *bundles, int64_t k0, int64_t k1, const uint8_t *xq,
                                    size_t xq_stride, int64_t n_tokens, int64_t nb, float *g, float *u, int64_t ldg) {
    const size_t rb = (size_t)nb * 34;
    uint16_t sh[GUB_BLOCKS][GU_ROWS] __attribute__((aligned(64)));  // f16 d_w, row i of block b at sh[b][i]
    float sw[GUB_BLOCKS][GU_ROWS] __attribute__((aligned(64)));     // f32 d_w
    const int one_chunk = nb <= GUB_BLOCKS;
    for (int64_t k = k0; k < k1; k += GU_GROUP) {
        const int64_t cnt = k1 - k < GU_GROUP ? k1 - k : GU_GROUP;
        const uint8_t *w[GU_ROWS];
        const char *pf[GU_GROUP];
        int64_t pfl[GU_GROUP];
        const int npf = group_rows(bundles, k, k1, rb, w, pf, pfl);
        // Two inputs at a time (each weight vector loaded once for both), the last one alone when n_tokens is odd.
        for (int64_t t = 0; t < n_tokens; t += 2) {
            const uint8_t *x0 = xq + (size_t)t * xq_stride;
            if (t + 1 < n_tokens)
                gub_tokens(w, x0, x0 + xq_stride, 2, nb, one_chunk, t == 0, sh, sw, pf, pfl, npf, g + t * ldg + k,
                           u + t * ldg + k, ldg, (int)cnt);
            else
                gub_tokens(w, x0, x0, 1, nb, one_chunk, t == 0, sh, sw, pf, pfl, npf, g + t * ldg + k, u + t * ldg + k,
                           ldg, (int)cnt);
        }
    }
}

// Down projection, VNNI. Rows are processed in tiles of TILE rows, each tile in subtiles of 64 rows. For one lane
// group (4 consecutive neurons 4g..4g+3, which is exactly what ggml's integer lane l = g%8 of block g/8 covers),
// the 4 columns' 64 bytes are interleaved to [c0 c1 c2 c3] per row and one vpdpbusd per 16 rows gives S_l of those
// rows directly. The interleave (unpack within 128-bit lanes) leaves the rows permuted inside a subtile: vector q
// (0..3), element 4L+m holds row 16L + 4q + m. Scales and float accumulators use the same order; the output is
// un-permuted when stored.
#define TILE 256
#define MAP_CHUNK 2048

// Byte j = 0xff when bit j of the index is set: keeps the quants of the listed neurons of a group.
static const uint32_t nibble_bytes[16] = {
    0x00000000u, 0x000000ffu, 0x0000ff00u, 0x0000ffffu, 0x00ff0000u, 0x00ff00ffu, 0x00ffff00u, 0x00ffffffu,
    0xff000000u, 0xff0000ffu, 0xff00ff00u, 0xff00ffffu, 0xffff0000u, 0xffff00ffu, 0xffffff00u, 0xffffffffu,
};

VNNI void pl_avx512_bundle_down(const void *const *bundles, const int32_t *ids, int64_t n, const uint8_t *hq,
                           const uint16_t *down_scale, int64_t dim, int64_t ffn, int32_t *acc, float *out,
                           int64_t r0, int64_t r1) {
    const int64_t nb = ffn / 32, rows = r1 - r0;
    const size_t col_off = (size_t)(dim / 32) * 34 * 2;
    // Neuron → bundle map: in the caller's scratch when it is large enough (r1 − r0 ≥ 32), built once; otherwise
    // (a single short tile) in chunks on the stack.
    int32_t stack_map[MAP_CHUNK];
    int32_t *map = acc;
    int64_t chunk = ffn;
    if (nb * rows < ffn) { map = stack_map; chunk = MAP_CHUNK; }
    int64_t built = -1;

    float facc[8][TILE] __attribute__((aligned(64)));  // the 8 lanes' fma chains, permuted row order
    float sc4[4][TILE] __attribute__((aligned(64)));   // d_down[r][b] · d_h[b] for the current block (or 4 blocks)
    int32_t rowoff[TILE] __attribute__((aligned(64))); // r·nb (index of row r's scales), permuted row order
    __mmask16 valid[TILE / 16];

    const __m512i bias = _mm512_set1_epi8((char)0x80);
    const int quad = nb % 4 == 0;
    // 16-bit element 4j+c of g0 (j < 8) / g1 (j ≥ 8) is row j's scale of block b4+c
    const __m512i quad_idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                              60, 56, 52, 48, 44, 40, 36, 32, 28, 24, 20, 16, 12, 8, 4, 0);
    const __m512i lane_row = _mm512_set_epi32(51, 50, 49, 48, 35, 34, 33, 32, 19, 18, 17, 16, 3, 2, 1, 0);

    for (int64_t t0 = r0; t0 < r1; t0 += TILE) {
        int64_t sc_quad = -1;
        const int64_t tr = r1 - t0 < TILE ? r1 - t0 : TILE;
        const int64_t nsub = (tr + 63) / 64;
        for (int64_t v = 0; v < 4 * nsub; v++) {
            // vector v = 4s + q: element 4L+m is row t0 + 64s + 16L + 4q + m
            __m512i row = _mm512_add_epi32(lane_row, _mm512_set1_epi32((int)(64 * (v / 4) + 4 * (v % 4))));
            valid[v] = _mm512_cmplt_epi32_mask(row, _mm512_set1_epi32((int)tr));
            row = _mm512_add_epi32(row, _mm512_set1_epi32((int)t0));
            _mm512_store_si512((void *)(rowoff + 16 * v), _mm512_mullo_epi32(row, _mm512_set1_epi32((int)nb)));
            for (int l = 0; l < 8; l++) _mm512_store_ps(facc[l] + 16 * v, _mm512_setzero_ps());
        }
        for (int64_t c0 = 0; c0 < ffn; c0 += chunk) {
            const int64_t c1 = c0 + chunk < ffn ? c0 + chunk : ffn;
            if (built != c0) { pl_bundle_build_map(map, c0, c1, ids, n); built = c0; }
            for (int64_t b = c0 / 32; b < c1 / 32; b++) {
                const int32_t *mb = map + (b * 32 - c0);
                const __m512i none = _mm512_set1_epi32(-1);
                const uint32_t listed = (uint32_t)_mm512_cmpgt_epi32_mask(_mm512_loadu_si512((const void *)mb), none) |
                                        (uint32_t)_mm512_cmpgt_epi32_mask(_mm512_loadu_si512((const void *)(mb + 16)), none) << 16;
                if (!listed) continue;
                const uint8_t *hb = hq + b * 34;
                const float *sc;
                if (quad) { // scales of blocks b4..b4+3 at once: one 64-bit gather element holds a row's 4 scales
                    const int64_t b4 = b & ~(int64_t)3;
                    if (sc_quad != b4) {
                        sc_quad = b4;
                        __m512 dxc[4];
                        for (int c = 0; c < 4; c++) dxc[c] = _mm512_set1_ps(f16_hw(hq + (b4 + c) * 34));
                        for (int64_t v = 0; v < 4 * nsub; v++) {
                            __m512i q4 = _mm512_srli_epi32(_mm512_add_epi32(_mm512_load_si512((const void *)(rowoff + 16 * v)),
                                                                            _mm512_set1_epi32((int)b4)), 2);
                            __m512i g0 = _mm512_mask_i32gather_epi64(_mm512_setzero_si512(), (__mmask8)valid[v],
                                                                     _mm512_castsi512_si256(q4), (const void *)down_scale, 8);
                            __m512i g1 = _mm512_mask_i32gather_epi64(_mm512_setzero_si512(), (__mmask8)(valid[v] >> 8),
                                                                     _mm512_extracti64x4_epi64(q4, 1), (const void *)down_scale, 8);
                            for (int c = 0; c < 4; c++) {
                                __m512i w = _mm512_permutex2var_epi16(g0, _mm512_add_epi16(quad_idx, _mm512_set1_epi16((short)c)), g1);
                                _mm512_store_ps(sc4[c] + 16 * v, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(w)), dxc[c]));
                            }
                        }
                    }
                    sc = sc4[b & 3];
                } else {
                    const __m512 dx = _mm512_set1_ps(f16_hw(hb));
                    for (int64_t v = 0; v < 4 * nsub; v++) {
                        __m512i idx = _mm512_add_epi32(_mm512_load_si512((const void *)(rowoff + 16 * v)), _mm512_set1_epi32((int)b));
                        // 32-bit words holding the f16 scales (dim·nb is even, so no word runs past the array)
                        __m512i wd = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid[v], _mm512_srli_epi32(idx, 1),
                                                                 (const void *)down_scale, 4);
                        wd = _mm512_srlv_epi32(wd, _mm512_slli_epi32(_mm512_and_si512(idx, _mm512_set1_epi32(1)), 4));
                        _mm512_store_ps(sc4[0] + 16 * v, _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(wd)), dx));
                    }
                    sc = sc4[0];
                }
                for (int l = 0; l < 8; l++) {
                    const unsigned nib = (listed >> (4 * l)) & 15u;
                    if (!nib) continue; // S_l = 0 for every row: fma(d, 0, acc) = acc
                    const int32_t *ml = mb + 4 * l;
                    const uint8_t *p[4];
                    const uint8_t *any = (const uint8_t *)bundles[ml[__builtin_ctz(nib)]] + col_off;
                    for (int j = 0; j < 4; j++) p[j] = ml[j] >= 0 ? (const uint8_t *)bundles[ml[j]] + col_off : any;
                    {   // the columns of the group two ahead (these are anywhere in memory: no hardware prefetch)
                        const int64_t ga = b * 32 + 4 * (l + 2);
                        if (ga + 4 <= c1) {
                            for (int j = 0; j < 4; j++) {
                                const int32_t ka = map[ga - c0 + j];
                                if (ka < 0) continue;
                                const char *a = (const char *)bundles[ka] + col_off + t0;
                                for (int64_t o = 0; o < tr + 63; o += 64) _mm_prefetch(a + o, _MM_HINT_T0);
                            }
                        }
                    }
                    uint32_t qw;
                    memcpy(&qw, hb + 2 + 4 * l, 4);
                    const __m512i xk = _mm512_set1_epi32((int)(qw & nibble_bytes[nib])); // unlisted slots × 0
                    // (q + 128)·h − 128·Σh = q·h: start each dot product from −128·Σh
                    const __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(),
                                                           _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, xk));
                    float *fa = facc[l];
                    for (int64_t s = 0; s < nsub; s++) {
                        const int64_t r = t0 + 64 * s, left = r1 - r;
                        const __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
                        __m512i c0v = _mm512_maskz_loadu_epi8(m, p[0] + r), c1v = _mm512_maskz_loadu_epi8(m, p[1] + r);
                        __m512i c2v = _mm512_maskz_loadu_epi8(m, p[2] + r), c3v = _mm512_maskz_loadu_epi8(m, p[3] + r);
                        __m512i a01l = _mm512_unpacklo_epi8(c0v, c1v), a01h = _mm512_unpackhi_epi8(c0v, c1v);
                        __m512i a23l = _mm512_unpacklo_epi8(c2v, c3v), a23h = _mm512_unpackhi_epi8(c2v, c3v);
                        __m512i z0 = _mm512_xor_si512(_mm512_unpacklo_epi16(a01l, a23l), bias);
                        __m512i z1 = _mm512_xor_si512(_mm512_unpackhi_epi16(a01l, a23l), bias);
                        __m512i z2 = _mm512_xor_si512(_mm512_unpacklo_epi16(a01h, a23h), bias);
                        __m512i z3 = _mm512_xor_si512(_mm512_unpackhi_epi16(a01h, a23h), bias);
                        float *f = fa + 64 * s;
                        const float *d = sc + 64 * s;
                        _mm512_store_ps(f, _mm512_fmadd_ps(_mm512_load_ps(d), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, z0, xk)), _mm512_load_ps(f)));
                        _mm512_store_ps(f + 16, _mm512_fmadd_ps(_mm512_load_ps(d + 16), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, z1, xk)), _mm512_load_ps(f + 16)));
                        _mm512_store_ps(f + 32, _mm512_fmadd_ps(_mm512_load_ps(d + 32), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, z2, xk)), _mm512_load_ps(f + 32)));
                        _mm512_store_ps(f + 48, _mm512_fmadd_ps(_mm512_load_ps(d + 48), _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(start, z3, xk)), _mm512_load_ps(f + 48)));
                    }
                }
            }
        }
        // Lane reduction as hsum256 does it, for 16 rows at a time, then un-permute: output vector L of a subtile
        // (rows 16L..16L+15) is the 128-bit chunk L of each of the 4 vectors q.
        for (int64_t s = 0; s < nsub; s++) {
            __m512 z[4];
            for (int q = 0; q < 4; q++) {
                const int64_t o = 64 * s + 16 * q;
                __m512 a04 = _mm512_add_ps(_mm512_load_ps(facc[0] + o), _mm512_load_ps(facc[4] + o));
                __m512 a26 = _mm512_add_ps(_mm512_load_ps(facc[2] + o), _mm512_load_ps(facc[6] + o));
                __m512 a15 = _mm512_add_ps(_mm512_load_ps(facc[1] + o), _mm512_load_ps(facc[5] + o));
                __m512 a37 = _mm512_add_ps(_mm512_load_ps(facc[3] + o), _mm512_load_ps(facc[7] + o));
                z[q] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a04, a26), _mm512_add_ps(a15, a37)), _mm512_setzero_ps());
            }
            __m512 t0v = _mm512_shuffle_f32x4(z[0], z[1], 0x44), t1v = _mm512_shuffle_f32x4(z[2], z[3], 0x44);
            __m512 t2v = _mm512_shuffle_f32x4(z[0], z[1], 0xee), t3v = _mm512_shuffle_f32x4(z[2], z[3], 0xee);
            __m512 v[4] = {_mm512_shuffle_f32x4(t0v, t1v, 0x88), _mm512_shuffle_f32x4(t0v, t1v, 0xdd),
                           _mm512_shuffle_f32x4(t2v, t3v, 0x88), _mm512_shuffle_f32x4(t2v, t3v, 0xdd)};
            for (int L = 0; L < 4; L++) {
                const int64_t r = t0 + 64 * s + 16 * L, left = r1 - r;
                if (left <= 0) break;
                const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
                _mm512_mask_storeu_ps(out + (r - r0), m, v[L]);
            }
        }
    }
}

#define BG_ATTR VNNI
#define BG_NAME(f) pl_avx512_##f
#define BG_DPBUSD(acc, a, b) _mm256_dpbusd_epi32(acc, a, b)
#include "x86/bundle_groups_body.h"
#undef BG_ATTR
#undef BG_NAME
#undef BG_DPBUSD
#endif
