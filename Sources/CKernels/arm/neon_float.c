// NEON bodies of the float-input kernels (F32, F16, BF16 dot products and matvec: four 4-lane accumulators over 16
// elements per step) and of F16-cache attention (q·k in four 4-lane chains, softmax with the glibc-exact expf, V
// accumulated per element as every tier does). Sums are reassociated against the portable body (tests bound it).
#include "kernels_internal.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>

static inline float32x4_t load4(int type, const uint8_t *p, int64_t i) {
    switch (type) {
    case PL_TYPE_F16: return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)(p + 2 * i))));
    case PL_TYPE_BF16: return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)(p + 2 * i)), 16));
    default: return vld1q_f32((const float *)p + i);
    }
}

static inline float scalar_at(int type, const uint8_t *p, int64_t i) {
    switch (type) {
    case PL_TYPE_F16: return pl_f16_to_f32(load_u16(p + 2 * i));
    case PL_TYPE_BF16: return bf16_to_f32(load_u16(p + 2 * i));
    default: return ((const float *)p)[i];
    }
}

static inline __attribute__((always_inline)) float dot(int type, const uint8_t *row, const float *x, int64_t n) {
    float32x4_t a[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        PL_UNROLL
        for (int j = 0; j < 4; j++) a[j] = vfmaq_f32(a[j], load4(type, row, i + 4 * j), vld1q_f32(x + i + 4 * j));
    float tail = 0.0f;
    for (; i < n; i++) tail += scalar_at(type, row, i) * x[i];
    return vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3]))) + tail;
}

void pl_neon_matvec(int type, const uint8_t *base, size_t row_bytes, const float *x, float *y, int64_t n,
                    int64_t r0, int64_t r1) {
    switch (type) {
    case PL_TYPE_F32: for (int64_t r = r0; r < r1; r++) y[r - r0] = dot(PL_TYPE_F32, base + (size_t)r * row_bytes, x, n); break;
    case PL_TYPE_F16: for (int64_t r = r0; r < r1; r++) y[r - r0] = dot(PL_TYPE_F16, base + (size_t)r * row_bytes, x, n); break;
    case PL_TYPE_BF16: for (int64_t r = r0; r < r1; r++) y[r - r0] = dot(PL_TYPE_BF16, base + (size_t)r * row_bytes, x, n); break;
    default: pl_portable_matvec(type, base, row_bytes, x, y, n, r0, r1); break;
    }
}

// head_dim a multiple of 16, at most 512; other sizes take the portable body.
void pl_neon_attention(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                       int64_t hd, float scale, float *scores, float *out) {
    float qh[512];
    // q rounded to f16, as llama.cpp's F16 cache multiplies it
    for (int64_t j = 0; j < hd; j += 4) vst1q_f32(qh + j, vcvt_f32_f16(vcvt_f16_f32(vld1q_f32(q + j))));
    float mx = -INFINITY;
    for (int64_t t = 0; t < n_ctx; t++) {
        float d = dot(PL_TYPE_F16, (const uint8_t *)(k + t * stride), qh, hd) * scale;
        scores[t] = d;
        if (d > mx) mx = d;
    }
    for (int64_t t = 0; t < n_ctx; t++) scores[t] -= mx;
    pl_neon_expf(scores, scores, n_ctx);
    float sum = 0.0f;
    for (int64_t t = 0; t < n_ctx; t++) sum += scores[t];
    float inv = 1.0f / sum;
    float32x4_t o[128];
    for (int64_t c = 0; c < hd / 4; c++) o[c] = vdupq_n_f32(0.0f);
    for (int64_t t = 0; t < n_ctx; t++) {
        float p = pl_f16_to_f32(pl_f32_to_f16(scores[t] * inv));
        const uint16_t *vt = v + t * stride;
        for (int64_t c = 0; c < hd / 4; c++) o[c] = vfmaq_n_f32(o[c], vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(vt + 4 * c))), p);
    }
    for (int64_t c = 0; c < hd / 4; c++) vst1q_f32(out + 4 * c, o[c]);
}
#endif
