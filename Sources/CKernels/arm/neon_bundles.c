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

// Down (bundle_down_body.h): S_l of 8 rows is Σ_j column_j · h_j, the columns widened to int16 and multiply-
// accumulated into int32 (exact).
static inline float bd_scale(uint16_t d, float dh) { return pl_neon_f16((const uint8_t *)&d) * dh; }

static inline void bd_lane8(float *fa, const float *sc, const int8_t *const *p, const int8_t h[4], int64_t r) {
    int32x4_t s0 = vdupq_n_s32(0), s1 = vdupq_n_s32(0);
    for (int j = 0; j < 4; j++) {
        int16x8_t c = vmovl_s8(vld1_s8(p[j] + r));
        s0 = vmlal_n_s16(s0, vget_low_s16(c), h[j]);
        s1 = vmlal_high_n_s16(s1, c, h[j]);
    }
    vst1q_f32(fa, vfmaq_f32(vld1q_f32(fa), vld1q_f32(sc), vcvtq_f32_s32(s0)));
    vst1q_f32(fa + 4, vfmaq_f32(vld1q_f32(fa + 4), vld1q_f32(sc + 4), vcvtq_f32_s32(s1)));
}

static inline void bd_reduce8(float (*facc)[128], int64_t i, float o[8]) {
    for (int k = 0; k < 8; k += 4) {
        float32x4_t a04 = vaddq_f32(vld1q_f32(facc[0] + i + k), vld1q_f32(facc[4] + i + k));
        float32x4_t a26 = vaddq_f32(vld1q_f32(facc[2] + i + k), vld1q_f32(facc[6] + i + k));
        float32x4_t a15 = vaddq_f32(vld1q_f32(facc[1] + i + k), vld1q_f32(facc[5] + i + k));
        float32x4_t a37 = vaddq_f32(vld1q_f32(facc[3] + i + k), vld1q_f32(facc[7] + i + k));
        vst1q_f32(o + k, vaddq_f32(vaddq_f32(vaddq_f32(a04, a26), vaddq_f32(a15, a37)), vdupq_n_f32(0.0f)));
    }
}

#define BD_ATTR
#define BD_FUNC pl_neon_bundle_down
#include "bundle_down_body.h"
#endif
