#ifndef POCKETLM_BUNDLES_H
#define POCKETLM_BUNDLES_H
// Private interface between bundles.c (the flash-paging bundle entry points: layout, and the choice of body by the
// thread's ISA tier) and the bodies: portable/bundles.c, x86/avx512_bundles.c (AVX-512 VNNI), x86/avx2_bundles.c
// (AVX2, also AVX-512 without VNNI), arm/neon_bundles.c. Each body computes, operation for operation, the float
// steps of the dense Q8_0 kernel (pl_matmul_q) of its tier, so a model run through bundles equals the dense run:
//   * portable: per 32-element block the whole integer sum s, sum += (float)s · (d_w · d_x) in block order;
//   * AVX-512 VNNI, AVX2, NEON: ggml's x86 lane arithmetic — per block 8 int32 lanes of 4 consecutive elements, each
//     lane its own chain acc_l = fma(d_w·d_x, S_l, acc_l) over the blocks in order, then hsum_float_8
//     ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)) + 0.0f (the dense kernel's Q4_1 minimum term, 0 for Q8_0).
// The integer sums are exact, so how they are computed is free.
#include "ckernels.h"
#include <string.h>

static inline uint16_t pl_bundle_ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/// map[i − c0] = k with ids[k] = i, or −1, for neurons c0 ..< c1 (the down bodies' neuron → bundle index).
void pl_bundle_build_map(int32_t *map, int64_t c0, int64_t c1, const int32_t *ids, int64_t n);

/// The down bodies' neuron → bundle map for rows r0 ..< r1: in the caller's scratch acc when it holds ffn entries
/// (built once), else in `stack` (MAP_CHUNK entries) a chunk of neurons at a time. Returns the map, *chunk its span.
enum { PL_BUNDLE_MAP_CHUNK = 2048 };
static inline int32_t *pl_bundle_map_home(int32_t *acc, int32_t *stack, int64_t ffn, int64_t r0, int64_t r1,
                                          int64_t *chunk) {
    if ((ffn / 32) * (r1 - r0) < ffn) { *chunk = PL_BUNDLE_MAP_CHUNK; return stack; }
    *chunk = ffn;
    return acc;
}

/// Bit j set when neuron 32b + j is listed (mb = the map at block b's first neuron).
static inline uint32_t pl_bundle_listed(const int32_t *mb) {
    uint32_t listed = 0;
    for (int j = 0; j < 32; j++) listed |= (uint32_t)(mb[j] >= 0) << j;
    return listed;
}

/// Lane l of block b (neurons 4l .. 4l+3, nib = their listed bits, ml = the map at the first): the 4 down columns
/// (an unlisted neuron borrows a listed one's column) and h's 4 quants from its block hb, 0 for unlisted neurons.
static inline void pl_bundle_lane(const void *const *bundles, const int32_t *ml, unsigned nib, size_t col_off,
                                  const uint8_t *hb, int l, const int8_t *p[4], int8_t h[4]) {
    const int8_t *any = (const int8_t *)bundles[ml[__builtin_ctz(nib)]] + col_off;
    for (int j = 0; j < 4; j++) {
        p[j] = ml[j] >= 0 ? (const int8_t *)bundles[ml[j]] + col_off : any;
        h[j] = ml[j] >= 0 ? (int8_t)hb[2 + 4 * l + j] : 0;
    }
}

/// Gate/up against n_tokens inputs (xq_stride bytes apart): g[t·ldg + k], u[t·ldg + k] for k in k0 ..< k1.
/// nb = dim / 32. The single-input entry point is n_tokens = 1.
void pl_portable_bundle_gate_up(const void *const *bundles, int64_t k0, int64_t k1, const uint8_t *xq,
                                size_t xq_stride, int64_t n_tokens, int64_t nb, float *g, float *u, int64_t ldg);
/// The down projection over the listed bundles for rows r0 ..< r1 (ckernels.h's pl_bundle_down_q8_0).
void pl_portable_bundle_down(const void *const *bundles, const int32_t *ids, int64_t n, const uint8_t *hq,
                             const uint16_t *down_scale, int64_t dim, int64_t ffn, int32_t *acc, float *out,
                             int64_t r0, int64_t r1);
#if defined(__x86_64__)
void pl_avx512_bundle_gate_up(const void *const *bundles, int64_t k0, int64_t k1, const uint8_t *xq, int64_t nb,
                              float *g, float *u);
void pl_avx512_bundle_gate_up_batch(const void *const *bundles, int64_t k0, int64_t k1, const uint8_t *xq,
                                    size_t xq_stride, int64_t n_tokens, int64_t nb, float *g, float *u, int64_t ldg);
void pl_avx512_bundle_down(const void *const *bundles, const int32_t *ids, int64_t n, const uint8_t *hq,
                           const uint16_t *down_scale, int64_t dim, int64_t ffn, int32_t *acc, float *out,
                           int64_t r0, int64_t r1);
/// Block rows, Q4_0/Q4_1/Q8_0: the down projection of one input from the groups' slices (ckernels.h's
/// pl_bundle_down_groups; nb = blocks per row).
void pl_avx512_bundle_down_groups(int type, const uint8_t *const *groups, int64_t spg, size_t slice_bytes,
                                  const uint8_t *xq, float *y, int64_t nb, int64_t r0, int64_t r1);
/// The same for the AVX2 tier (and AVX-512 without VNNI), with AVX-VNNI's dot product where the CPU has it.
void pl_avx2_bundle_down_groups(int type, const uint8_t *const *groups, int64_t spg, size_t slice_bytes,
                                const uint8_t *xq, float *y, int64_t nb, int64_t r0, int64_t r1);
void pl_avxvnni_bundle_down_groups(int type, const uint8_t *const *groups, int64_t spg, size_t slice_bytes,
                                   const uint8_t *xq, float *y, int64_t nb, int64_t r0, int64_t r1);
void pl_avx2_bundle_gate_up(const void *const *bundles, int64_t k0, int64_t k1, const uint8_t *xq,
                            size_t xq_stride, int64_t n_tokens, int64_t nb, float *g, float *u, int64_t ldg);
void pl_avx2_bundle_down(const void *const *bundles, const int32_t *ids, int64_t n, const uint8_t *hq,
                         const uint16_t *down_scale, int64_t dim, int64_t ffn, int32_t *acc, float *out,
                         int64_t r0, int64_t r1);
#endif
#if defined(__aarch64__)
void pl_neon_bundle_gate_up(const void *const *bundles, int64_t k0, int64_t k1, const uint8_t *xq,
                            size_t xq_stride, int64_t n_tokens, int64_t nb, float *g, float *u, int64_t ldg);
void pl_neon_bundle_down(const void *const *bundles, const int32_t *ids, int64_t n, const uint8_t *hq,
                         const uint16_t *down_scale, int64_t dim, int64_t ffn, int32_t *acc, float *out,
                         int64_t r0, int64_t r1);
#endif
#endif
