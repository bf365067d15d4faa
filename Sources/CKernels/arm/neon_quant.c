// NEON bodies of the activation quantizers (Q8_0, Q8_1: bit-identical to the portable ones: the same max, 127/amax,
// round half to even) and of the Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 row kernels in ggml's x86 lane arithmetic (so
// bit-identical to the x86 bodies, and for Q5_x to the portable one): lane l of a 32-element block sums elements 4l..4l+3 exactly, in int32 — one sdot per
// 16 bytes where the CPU has dotprod (vdotq_s32's lane l is exactly that sum), else smull + two pairwise adds — and
// is fma'd with d_w·d_x into float lane l, two float32x4 accumulators for the 8 lanes, ending in ggml's
// hsum_float_8 order.
#include "kernels_internal.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#include "arm/neon_common.h"

void pl_neon_quantize_q8(const float *x, uint8_t *out, int64_t n, int with_sum) {
    const int bytes = with_sum ? PL_Q8_1_BLOCK_BYTES : PL_Q8_0_BLOCK_BYTES;
    const int qoff = with_sum ? 4 : 2;
    for (int64_t b = 0; b < n / 32; b++, out += bytes) {
        float32x4_t v[8];
        float32x4_t m = vdupq_n_f32(0.0f);
        PL_UNROLL
        for (int j = 0; j < 8; j++) { v[j] = vld1q_f32(x + b * 32 + 4 * j); m = vmaxq_f32(m, vabsq_f32(v[j])); }
        float amax = vmaxvq_f32(m);
        float d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32x4_t q[8];
        int32x4_t s = vdupq_n_s32(0);
        PL_UNROLL
        for (int j = 0; j < 8; j++) {
            q[j] = vcvtq_s32_f32(vrndnq_f32(vmulq_n_f32(v[j], id)));
            s = vaddq_s32(s, q[j]);
        }
        PL_UNROLL
        for (int j = 0; j < 8; j += 2) {
            int16x8_t h = vcombine_s16(vqmovn_s32(q[j]), vqmovn_s32(q[j + 1]));
            vst1_s8((int8_t *)(out + qoff + 4 * j), vqmovn_s16(h));
        }
        store_u16(out, pl_f32_to_f16(d));
        if (with_sum) store_u16(out + 2, pl_f32_to_f16(d * (float)vaddvq_s32(s)));
    }
}

// The 32 quants of a weight block as two int8x16 (elements 0..15, 16..31); Q5_x's 5th bits (bit j of qh for
// element j) become +16 through a bit test per byte.
static inline void weight_block(int type, const uint8_t *wb, int8x16_t *lo, int8x16_t *hi) {
    if (type == PL_TYPE_Q8_0) {
        *lo = vld1q_s8((const int8_t *)(wb + 2));
        *hi = vld1q_s8((const int8_t *)(wb + 18));
        return;
    }
    const int qoff = type == PL_TYPE_Q4_0 ? 2 : type == PL_TYPE_Q4_1 ? 4 : type == PL_TYPE_Q5_0 ? 6 : 8;
    uint8x16_t raw = vld1q_u8(wb + qoff);
    uint8x16_t l = vandq_u8(raw, vdupq_n_u8(0x0f)), h = vshrq_n_u8(raw, 4);
    if (type == PL_TYPE_Q5_0 || type == PL_TYPE_Q5_1) {
        uint32_t qh;
        memcpy(&qh, wb + qoff - 4, 4);
        const uint8x16_t bit = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
        uint8x16_t bl = vcombine_u8(vdup_n_u8((uint8_t)qh), vdup_n_u8((uint8_t)(qh >> 8)));
        uint8x16_t bh = vcombine_u8(vdup_n_u8((uint8_t)(qh >> 16)), vdup_n_u8((uint8_t)(qh >> 24)));
        l = vorrq_u8(l, vandq_u8(vtstq_u8(bl, bit), vdupq_n_u8(16)));
        h = vorrq_u8(h, vandq_u8(vtstq_u8(bh, bit), vdupq_n_u8(16)));
    }
    int8x16_t sl = vreinterpretq_s8_u8(l), sh = vreinterpretq_s8_u8(h);
    if (type == PL_TYPE_Q4_0) { sl = vsubq_s8(sl, vdupq_n_s8(8)); sh = vsubq_s8(sh, vdupq_n_s8(8)); }
    if (type == PL_TYPE_Q5_0) { sl = vsubq_s8(sl, vdupq_n_s8(16)); sh = vsubq_s8(sh, vdupq_n_s8(16)); }
    *lo = sl;
    *hi = sh;
}

static inline int has_min(int type) { return type == PL_TYPE_Q4_1 || type == PL_TYPE_Q5_1; }

#define NQ_BODY(NAME, ATTR, DOT4)                                                                                   \
ATTR static inline __attribute__((always_inline)) void NAME##_rows(int type, const int R, const uint8_t *w,           \
        size_t row_bytes, const uint8_t *xq, int64_t nb, float *out) {                                              \
    float32x4_t a0[4], a1[4];                                                                                         \
    float msum[4] = {0, 0, 0, 0};                                                                                     \
    for (int i = 0; i < R; i++) { a0[i] = vdupq_n_f32(0.0f); a1[i] = vdupq_n_f32(0.0f); }                            \
    const int wbytes = type == PL_TYPE_Q8_0 ? 34 : type == PL_TYPE_Q4_0 ? 18 : type == PL_TYPE_Q4_1 ? 20            \
                     : type == PL_TYPE_Q5_0 ? 22 : 24;                                                                \
    const int xbytes = has_min(type) ? 36 : 34, xoff = has_min(type) ? 4 : 2;                                        \
    for (int64_t b = 0; b < nb; b++) {                                                                                \
        const uint8_t *xb = xq + b * xbytes;                                                                          \
        int8x16_t c0 = vld1q_s8((const int8_t *)(xb + xoff)), c1 = vld1q_s8((const int8_t *)(xb + xoff + 16));       \
        float dx = pl_neon_f16(xb), sx = has_min(type) ? pl_neon_f16(xb + 2) : 0.0f;                                 \
        for (int i = 0; i < R; i++) {                                                                                 \
            const uint8_t *wb = w + (size_t)i * row_bytes + b * wbytes;                                               \
            int8x16_t lo, hi;                                                                                         \
            weight_block(type, wb, &lo, &hi);                                                                         \
            float d = pl_neon_f16(wb) * dx;                                                                           \
            a0[i] = vfmaq_n_f32(a0[i], vcvtq_f32_s32(DOT4(lo, c0)), d);                                              \
            a1[i] = vfmaq_n_f32(a1[i], vcvtq_f32_s32(DOT4(hi, c1)), d);                                              \
            if (has_min(type)) msum[i] = fmaf(pl_neon_f16(wb + 2), sx, msum[i]);                                     \
        }                                                                                                             \
    }                                                                                                                 \
    for (int i = 0; i < R; i++) out[i] = pl_neon_hsum8(a0[i], a1[i]) + msum[i];                                       \
}                                                                                                                     \
ATTR void pl_##NAME##_matmul_q(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,    \
                                int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1) {        \
    float out[4];                                                                                                     \
    int64_t r = r0;                                                                                                   \
    for (; r + 4 <= r1; r += 4)                                                                                       \
        for (int64_t t = 0; t < n_tokens; t++) {                                                                      \
            const uint8_t *x = xq + (size_t)t * xq_stride;                                                            \
            switch (type) {                                                                                           \
            case PL_TYPE_Q4_1: NAME##_rows(PL_TYPE_Q4_1, 4, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break; \
            case PL_TYPE_Q4_0: NAME##_rows(PL_TYPE_Q4_0, 4, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break; \
            case PL_TYPE_Q5_0: NAME##_rows(PL_TYPE_Q5_0, 4, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break; \
            case PL_TYPE_Q5_1: NAME##_rows(PL_TYPE_Q5_1, 4, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break; \
            default: NAME##_rows(PL_TYPE_Q8_0, 4, w + (size_t)r * row_bytes, row_bytes, x, nb, out); break;          \
            }                                                                                                         \
            for (int i = 0; i < 4; i++) y[t * ldy + r + i] = out[i];                                                  \
        }                                                                                                             \
    for (; r < r1; r++)                                                                                               \
        for (int64_t t = 0; t < n_tokens; t++) {                                                                      \
            NAME##_rows(type, 1, w + (size_t)r * row_bytes, row_bytes, xq + (size_t)t * xq_stride, nb, out);         \
            y[t * ldy + r] = out[0];                                                                                  \
        }                                                                                                             \
}

// Plain NEON (ARMv8.0): 8 int16 products per smull, two pairwise widening adds give the 4-element sums.
static inline int32x4_t dot4_neon(int8x16_t a, int8x16_t c) {
    int32x4_t p0 = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(c)));
    int32x4_t p1 = vpaddlq_s16(vmull_high_s8(a, c));
    return vpaddq_s32(p0, p1);
}
NQ_BODY(neon, , dot4_neon)

// ARMv8.2 dotprod: sdot's lane l is the sum of bytes 4l..4l+3 of the products.
PL_DOTPROD static inline int32x4_t dot4_sdot(int8x16_t a, int8x16_t c) { return vdotq_s32(vdupq_n_s32(0), a, c); }
NQ_BODY(neon_dotprod, PL_DOTPROD, dot4_sdot)
#endif
