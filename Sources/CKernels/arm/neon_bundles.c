// NEON bodies of the flash-paging bundle kernels (bundles.h). Each output is bit-identical to arm/neon_quant.c's Q8_0
// row (and so to the x86 lane arithmetic): per block 8 int32 lanes of 4 elements (sdot where the CPU has dotprod,
// else smull + pairwise adds), acc_l = fma(d_w·d_x, S_l, acc_l) in block order over two float32x4 halves,
// hsum_float_8 + 0.0f.
#include "bundles.h"
#include "kernels_internal.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#include "arm/neon_common.h"

static inline int32x4_t dot4_plain(int8x16_t a, int8x16_t c) {
    return vpaddq_s32(vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(c))), vpaddlq_s16(vmull_high_s8(a, c)));
}
PL_DOTPROD static inline int32x4_t dot4_sdot(int8x16_t a, int8x16_t c) { return vdotq_s32(vdupq_n_s32(0), a, c); }

// R rows (pointers at their first block) against one input.
#define NB_ROWS(NAME, ATTR, DOT4)                                                                                    \
ATTR static inline __attribute__((always_inline)) void NAME##_rows(const int R, const uint8_t *const *w,             \
        const uint8_t *xq, int64_t nb, float *out) {                                                                 \
    float32x4_t a0[4], a1[4];                                                                                         \
    for (int i = 0; i < R; i++) { a0[i] = vdupq_n_f32(0.0f); a1[i] = vdupq_n_f32(0.0f); }                            \
    for (int64_t b = 0; b < nb; b++) {                                                                                \
        const uint8_t *xb = xq + b * 34;                                                                              \
        int8x16_t c0 = vld1q_s8((const int8_t *)(xb + 2)), c1 = vld1q_s8((const int8_t *)(xb + 18));                 \
        const float dx = pl_neon_f16(xb);                                                                             \
        for (int i = 0; i < R; i++) {                                                                                 \
            const uint8_t *wb = w[i] + b * 34;                                                                        \
            int8x16_t lo = vld1q_s8((const int8_t *)(wb + 2)), hi = vld1q_s8((const int8_t *)(wb + 18));              \
            const float d = pl_neon_f16(wb) * dx;                                                                     \
            a0[i] = vfmaq_n_f32(a0[i], vcvtq_f32_s32(DOT4(lo, c0)), d);                                              \
            a1[i] = vfmaq_n_f32(a1[i], vcvtq_f32_s32(DOT4(hi, c1)), d);                                              \
        }                                                                                                             \
    }                                                                                                                 \
    for (int i = 0; i < R; i++) out[i] = pl_neon_hsum8(a0[i], a1[i]) + 0.0f;                                          \
}                                                                                                                     \
ATTR static void NAME##_gate_up(const void *const *bundles, int64_t k0, int64_t k1, const uint8_t *xq,              \
                                size_t xq_stride, int64_t n_tokens, int64_t nb, float *g, float *u, int64_t ldg) {    \
    const size_t rb = (size_t)nb * 34;                                                                                \
    int64_t k = k0;                                                                                                   \
    for (; k + 2 <= k1; k += 2) {                                                                                     \
        const uint8_t *b0 = (const uint8_t *)bundles[k], *b1 = (const uint8_t *)bundles[k + 1];                       \
        const uint8_t *w[4] = {b0, b0 + rb, b1, b1 + rb};                                                             \
        for (int64_t t = 0; t < n_tokens; t++) {                                                                      \
            float out[4];                                                                                             \
            NAME##_rows(4, w, xq + (size_t)t * xq_stride, nb, out);                                                   \
            g[t * ldg + k] = out[0]; u[t * ldg + k] = out[1];                                                         \
            g[t * ldg + k + 1] = out[2]; u[t * ldg + k + 1] = out[3];                                                 \
        }                                                                                                             \
    }                                                                                                                 \
    if (k < k1) {                                                                                                     \
        const uint8_t *b0 = (const uint8_t *)bundles[k];                                                              \
        const uint8_t *w[2] = {b0, b0 + rb};                                                                          \
        for (int64_t t = 0; t < n_tokens; t++) {                                                                      \
            float out[2];                                                                                             \
            NAME##_rows(2, w, xq + (size_t)t * xq_stride, nb, out);                                                   \
            g[t * ldg + k] = out[0]; u[t * ldg + k] = out[1];                                                         \
        }                                                                                                             \
    }                                                                                                                 \
}

NB_ROWS(neon, , dot4_plain)
NB_ROWS(neon_dotprod, PL_DOTPROD, dot4_sdot)

void pl_neon_bundle_gate_up(const void *const *bundles, int64_t k0, int64_t k1, const uint8_t *xq,
                            size_t xq_stride, int64_t n_tokens, int64_t nb, float *g, float *u, int64_t ldg) {
    if (pl_isa_features() & PL_FEATURE_DOTPROD) neon_dotprod_gate_up(bundles, k0, k1, xq, xq_stride, n_tokens, nb, g, u, ldg);
    else neon_gate_up(bundles, k0, k1, xq, xq_stride, n_tokens, nb, g, u, ldg);
}

// Down: rows in tiles of TILE; per block b (in order) and lane l with a listed neuron, S_l of 8 rows at a time is
// Σ_j column_j · h_j over the lane's 4 neurons (widened to int16, multiply-accumulated into int32: exact; unlisted
// neurons × 0), then fma'd into the lane's float chain. A lane with no listed neuron is skipped (fma(d, 0, acc) =
// acc). Rows past the last whole 8 go through a zeroed copy.
#define TILE 128
#define MAP_CHUNK 2048

void pl_neon_bundle_down(const void *const *bundles, const int32_t *ids, int64_t n, const uint8_t *hq,
                         const uint16_t *down_scale, int64_t dim, int64_t ffn, int32_t *acc, float *out,
                         int64_t r0, int64_t r1) {
    const int64_t nb = ffn / 32;
    const size_t col_off = (size_t)(dim / 32) * 34 * 2;
    int32_t stack_map[MAP_CHUNK];
    int32_t *map = acc;   // the caller's scratch holds the whole map when it is large enough
    int64_t chunk = ffn, built = -1;
    if (nb * (r1 - r0) < ffn) { map = stack_map; chunk = MAP_CHUNK; }
    float facc[8][TILE] __attribute__((aligned(16)));
    float sc[TILE] __attribute__((aligned(16)));
    int8_t tail[4][8];
    for (int64_t t0 = r0; t0 < r1; t0 += TILE) {
        const int64_t tr = r1 - t0 < TILE ? r1 - t0 : TILE, whole = tr / 8 * 8, padded = (tr + 7) / 8 * 8;
        for (int l = 0; l < 8; l++) for (int64_t i = 0; i < padded; i++) facc[l][i] = 0.0f;
        for (int64_t c0 = 0; c0 < ffn; c0 += chunk) {
            const int64_t c1 = c0 + chunk < ffn ? c0 + chunk : ffn;
            if (built != c0) { pl_bundle_build_map(map, c0, c1, ids, n); built = c0; }
            for (int64_t b = c0 / 32; b < c1 / 32; b++) {
                const int32_t *mb = map + (b * 32 - c0);
                uint32_t listed = 0;
                for (int j = 0; j < 32; j++) listed |= (uint32_t)(mb[j] >= 0) << j;
                if (!listed) continue;
                const uint8_t *hb = hq + b * 34;
                const float dh = pl_neon_f16(hb);
                for (int64_t i = 0; i < tr; i++) {
                    uint16_t s = down_scale[(t0 + i) * nb + b];
                    sc[i] = pl_neon_f16((const uint8_t *)&s) * dh;
                }
                for (int64_t z = tr; z < padded; z++) sc[z] = 0.0f;
                for (int l = 0; l < 8; l++) {
                    const unsigned nib = (listed >> (4 * l)) & 15u;
                    if (!nib) continue;
                    const int32_t *ml = mb + 4 * l;
                    const int8_t *any = (const int8_t *)bundles[ml[__builtin_ctz(nib)]] + col_off;
                    const int8_t *p[4];
                    int16_t hv[4];
                    for (int j = 0; j < 4; j++) {
                        p[j] = ml[j] >= 0 ? (const int8_t *)bundles[ml[j]] + col_off : any;
                        hv[j] = ml[j] >= 0 ? (int8_t)hb[2 + 4 * l + j] : 0;   // unlisted slots × 0
                    }
                    float *fa = facc[l];
                    for (int64_t i = 0; i < padded; i += 8) {
                        const int8_t *q[4] = {p[0] + t0 + i, p[1] + t0 + i, p[2] + t0 + i, p[3] + t0 + i};
                        if (i + 8 > tr) {
                            memset(tail, 0, sizeof tail);
                            for (int j = 0; j < 4; j++) { memcpy(tail[j], q[j], (size_t)(tr - i)); q[j] = tail[j]; }
                        }
                        int32x4_t s0 = vdupq_n_s32(0), s1 = vdupq_n_s32(0);
                        for (int j = 0; j < 4; j++) {
                            int16x8_t c = vmovl_s8(vld1_s8(q[j]));
                            s0 = vmlal_n_s16(s0, vget_low_s16(c), hv[j]);
                            s1 = vmlal_high_n_s16(s1, c, hv[j]);
                        }
                        vst1q_f32(fa + i, vfmaq_f32(vld1q_f32(fa + i), vld1q_f32(sc + i), vcvtq_f32_s32(s0)));
                        vst1q_f32(fa + i + 4, vfmaq_f32(vld1q_f32(fa + i + 4), vld1q_f32(sc + i + 4), vcvtq_f32_s32(s1)));
                    }
                }
            }
        }
        // hsum_float_8 of each row's 8 lanes, 4 rows at a time; + 0.0f as the dense kernel adds its minimum term.
        for (int64_t i = 0; i < padded; i += 4) {
            float32x4_t a04 = vaddq_f32(vld1q_f32(facc[0] + i), vld1q_f32(facc[4] + i));
            float32x4_t a26 = vaddq_f32(vld1q_f32(facc[2] + i), vld1q_f32(facc[6] + i));
            float32x4_t a15 = vaddq_f32(vld1q_f32(facc[1] + i), vld1q_f32(facc[5] + i));
            float32x4_t a37 = vaddq_f32(vld1q_f32(facc[3] + i), vld1q_f32(facc[7] + i));
            float32x4_t v = vaddq_f32(vaddq_f32(vaddq_f32(a04, a26), vaddq_f32(a15, a37)), vdupq_n_f32(0.0f));
            float o[4];
            vst1q_f32(o, v);
            const int64_t m = tr - i < 4 ? tr - i : 4;
            if (m > 0) memcpy(out + (t0 - r0) + i, o, (size_t)m * 4);
        }
    }
}
#endif
