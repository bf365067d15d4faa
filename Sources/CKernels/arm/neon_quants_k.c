// NEON bodies of the Q4_K and Q6_K dot products against Q8_K activations, bit-identical to pl_kq_dot_portable (ggml's
// x86 lane arithmetic): per 32-element chunk, lane l (l < 4: elements 4l..4l+3 of the first 16, l ≥ 4: of the
// second 16) is a 4-element dot product — one sdot per 16 bytes, or smull + pairwise adds — times the chunk's scale,
// summed over the chunks as exact int32; then one fma per lane per super-block, two float32x4 halves for the 8
// lanes, ggml's hsum_float_8, and the minimum terms in ggml's order.
#include "quants_k.h"
#include "kernels_internal.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#include "arm/neon_common.h"

static inline int32x4_t dot4_plain(int8x16_t a, int8x16_t c) {
    return vpaddq_s32(vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(c))), vpaddlq_s16(vmull_high_s8(a, c)));
}
PL_DOTPROD static inline int32x4_t dot4_sdot(int8x16_t a, int8x16_t c) { return vdotq_s32(vdupq_n_s32(0), a, c); }

#define NK_BODY(NAME, ATTR, DOT4)                                                                                    \
ATTR PL_NOINLINE static float NAME##_q4k(const uint8_t *w, const uint8_t *xq, int64_t nsb) {                          \
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f), am = vdupq_n_f32(0.0f);                               \
    const uint8x16_t low4 = vdupq_n_u8(0x0f);                                                                         \
    for (int64_t sb = 0; sb < nsb; sb++, w += 144, xq += PL_Q8_K_BLOCK_BYTES) {                                       \
        float yd;                                                                                                     \
        memcpy(&yd, xq, 4);                                                                                           \
        const int8_t *xs = (const int8_t *)(xq + 4);                                                                  \
        int16_t bs[16];                                                                                               \
        memcpy(bs, xq + 260, 32);                                                                                     \
        uint8_t sc[8], mn[8];                                                                                         \
        pl_kq_scales_mins_k4(w + 4, sc, mn);                                                                          \
        int32_t pm[4];                                                                                                \
        PL_UNROLL                                                                                                     \
        for (int m = 0; m < 4; m++)                                                                                   \
            pm[m] = mn[2 * m] * (bs[4 * m] + bs[4 * m + 1]) + mn[2 * m + 1] * (bs[4 * m + 2] + bs[4 * m + 3]);        \
        float dmin = -yd * pl_neon_f16(w + 2);                                                                        \
        am = vfmaq_n_f32(am, vcvtq_f32_s32(vld1q_s32(pm)), dmin);                                                     \
        int32x4_t s_lo = vdupq_n_s32(0), s_hi = vdupq_n_s32(0), t_lo = s_lo, t_hi = s_lo;                             \
        PL_UNROLL                                                                                                     \
        for (int j = 0; j < 4; j++) {                                                                                 \
            uint8x16_t v0 = vld1q_u8(w + 16 + 32 * j), v1 = vld1q_u8(w + 32 + 32 * j);                                \
            const int8_t *xl = xs + 64 * j, *xh = xs + 64 * j + 32;                                                   \
            int8x16_t l0 = vreinterpretq_s8_u8(vandq_u8(v0, low4)), l1 = vreinterpretq_s8_u8(vandq_u8(v1, low4));     \
            int8x16_t h0 = vreinterpretq_s8_u8(vshrq_n_u8(v0, 4)), h1 = vreinterpretq_s8_u8(vshrq_n_u8(v1, 4));       \
            s_lo = vmlaq_n_s32(s_lo, DOT4(l0, vld1q_s8(xl)), sc[2 * j]);                                              \
            s_hi = vmlaq_n_s32(s_hi, DOT4(l1, vld1q_s8(xl + 16)), sc[2 * j]);                                         \
            t_lo = vmlaq_n_s32(t_lo, DOT4(h0, vld1q_s8(xh)), sc[2 * j + 1]);                                          \
            t_hi = vmlaq_n_s32(t_hi, DOT4(h1, vld1q_s8(xh + 16)), sc[2 * j + 1]);                                     \
        }                                                                                                             \
        float d = yd * pl_neon_f16(w);                                                                                \
        pl_neon_fold_chains(&a0, &a1, s_lo, t_lo, s_hi, t_hi, d);                                                     \
    }                                                                                                                 \
    float m = (vgetq_lane_f32(am, 0) + vgetq_lane_f32(am, 2)) + (vgetq_lane_f32(am, 1) + vgetq_lane_f32(am, 3));      \
    return pl_neon_hsum8(a0, a1) + m;                                                                                 \
}                                                                                                                     \
/* Q6_K: quants unsigned (0..63), the −32 taken off through the block sums, as ggml's x86 body does. */               \
ATTR PL_NOINLINE static float NAME##_q6k(const uint8_t *w, const uint8_t *xq, int64_t nsb) {                          \
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);                                                       \
    const uint8x16_t low4 = vdupq_n_u8(0x0f), three = vdupq_n_u8(3);                                                  \
    for (int64_t sb = 0; sb < nsb; sb++, w += 210, xq += PL_Q8_K_BLOCK_BYTES) {                                       \
        float yd;                                                                                                     \
        memcpy(&yd, xq, 4);                                                                                           \
        const int8_t *xs = (const int8_t *)(xq + 4);                                                                  \
        const int8_t *sc = (const int8_t *)(w + 192);                                                                 \
        int16_t bs[16];                                                                                               \
        memcpy(bs, xq + 260, 32);                                                                                     \
        int32_t corr[8];                                                                                              \
        PL_UNROLL                                                                                                     \
        for (int l = 0; l < 8; l++) corr[l] = 32 * (sc[2 * l] * bs[2 * l] + sc[2 * l + 1] * bs[2 * l + 1]);           \
        int32x4_t s_lo = vnegq_s32(vld1q_s32(corr)), s_hi = vnegq_s32(vld1q_s32(corr + 4));                           \
        int32x4_t t_lo = vdupq_n_s32(0), t_hi = t_lo;                                                                 \
        PL_UNROLL                                                                                                     \
        for (int h = 0; h < 2; h++)                                                                                   \
            PL_UNROLL                                                                                                 \
            for (int half = 0; half < 2; half++) {                                                                    \
                const uint8_t *ql = w + 64 * h + 16 * half;                                                           \
                uint8x16_t l0 = vld1q_u8(ql), l1 = vld1q_u8(ql + 32), qh = vld1q_u8(w + 128 + 32 * h + 16 * half);    \
                uint8x16_t q[4];                                                                                      \
                q[0] = vorrq_u8(vandq_u8(l0, low4), vshlq_n_u8(vandq_u8(qh, three), 4));                              \
                q[1] = vorrq_u8(vandq_u8(l1, low4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 2), three), 4));               \
                q[2] = vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 4), three), 4));                \
                q[3] = vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(qh, 6), 4));                                 \
                PL_UNROLL                                                                                             \
                for (int k = 0; k < 4; k++) {                                                                         \
                    int32x4_t dp = DOT4(vreinterpretq_s8_u8(q[k]), vld1q_s8(xs + 128 * h + 32 * k + 16 * half));      \
                    int s = sc[8 * h + 2 * k + half];                                                                 \
                    if (half) { if (k & 1) t_hi = vmlaq_n_s32(t_hi, dp, s); else s_hi = vmlaq_n_s32(s_hi, dp, s); }   \
                    else if (k & 1) t_lo = vmlaq_n_s32(t_lo, dp, s); else s_lo = vmlaq_n_s32(s_lo, dp, s);            \
                }                                                                                                     \
            }                                                                                                         \
        float d = yd * pl_neon_f16(w + 208);                                                                          \
        pl_neon_fold_chains(&a0, &a1, s_lo, t_lo, s_hi, t_hi, d);                                                     \
    }                                                                                                                 \
    return pl_neon_hsum8(a0, a1);                                                                                     \
}                                                                                                                     \
ATTR static void NAME##_matmul(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,     \
                               int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {          \
    for (int64_t r = r0; r < r1; r++)                                                                                 \
        for (int64_t t = 0; t < n_tokens; t++) {                                                                      \
            const uint8_t *row = w + (size_t)r * row_bytes, *x = xq + (size_t)t * xq_stride;                          \
            y[t * ldy + r] = type == PL_TYPE_Q4_K ? NAME##_q4k(row, x, n / 256) : NAME##_q6k(row, x, n / 256);        \
        }                                                                                                             \
}

NK_BODY(neon_k, , dot4_plain)
NK_BODY(neon_k_dotprod, PL_DOTPROD, dot4_sdot)

int pl_kq_neon_owns(int type) { return type == PL_TYPE_Q4_K || type == PL_TYPE_Q6_K; }

void pl_kq_matmul_neon(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                       int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    if (pl_isa_features() & PL_FEATURE_DOTPROD) neon_k_dotprod_matmul(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1);
    else neon_k_matmul(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1);
}
#endif
