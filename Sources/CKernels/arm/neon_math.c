// NEON bodies of expf (glibc's algorithm as its AArch64 build compiles it — kd rounded half away from zero by
// frinta/fcvtas, fused steps where that build fuses them — on 2 doubles at a time: bit-identical to libm's expf
// there), SwiGLU (the same operations as the portable body) and f32 -> f16 rows.
#include "kernels_internal.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>
#include "expf_table.h"

static inline float64x2_t expf2_pd(float32x2_t x) {
    const float64x2_t inv_ln2_n = vreinterpretq_f64_u64(vdupq_n_u64(0x40471547652b82fe)); // 32/ln 2
    const float64x2_t c0 = vreinterpretq_f64_u64(vdupq_n_u64(0x3ebc6af84b912394));
    const float64x2_t c1 = vreinterpretq_f64_u64(vdupq_n_u64(0x3f2ebfce50fac4f3));
    const float64x2_t c2 = vreinterpretq_f64_u64(vdupq_n_u64(0x3f962e42ff0c52d6));
    float64x2_t xd = vcvt_f64_f32(x);
    float64x2_t z = vmulq_f64(inv_ln2_n, xd);
    float64x2_t kd = vrndaq_f64(z);
    int64x2_t ki = vcvtaq_s64_f64(z);
    float64x2_t r = vnegq_f64(vfmsq_f64(kd, inv_ln2_n, xd));   // inv_ln2_n·xd − kd, fused: −(kd − inv_ln2_n·xd)
    uint64_t k0 = (uint64_t)vgetq_lane_s64(ki, 0), k1 = (uint64_t)vgetq_lane_s64(ki, 1);
    uint64x2_t t = vcombine_u64(vdup_n_u64(pl_expf_table[k0 % 32]), vdup_n_u64(pl_expf_table[k1 % 32]));
    float64x2_t s = vreinterpretq_f64_u64(vaddq_u64(t, vshlq_n_u64(vreinterpretq_u64_s64(ki), 47)));
    float64x2_t zz = vfmaq_f64(c1, c0, r);
    float64x2_t r2 = vmulq_f64(r, r);
    float64x2_t y = vfmaq_f64(vdupq_n_f64(1.0), c2, r);
    y = vfmaq_f64(y, zz, r2);
    return vmulq_f64(y, s);
}

static inline float32x4_t expf4(float32x4_t x) {
    float32x4_t y = vcombine_f32(vcvt_f32_f64(expf2_pd(vget_low_f32(x))), vcvt_f32_f64(expf2_pd(vget_high_f32(x))));
    // glibc's special cases: top 12 bits of |x| ≥ those of 88.0f (also inf and NaN).
    uint32x4_t top = vandq_u32(vshrq_n_u32(vreinterpretq_u32_f32(x), 20), vdupq_n_u32(0x7ff));
    uint32x4_t special = vcgeq_u32(top, vdupq_n_u32(0x42b));
    if (__builtin_expect(vmaxvq_u32(special) != 0, 0)) {
        float xs[4], ys[4];
        vst1q_f32(xs, x);
        vst1q_f32(ys, y);
        uint32_t sp[4];
        vst1q_u32(sp, special);
        for (int i = 0; i < 4; i++) if (sp[i]) ys[i] = expf(xs[i]);
        y = vld1q_f32(ys);
    }
    return y;
}

void pl_neon_expf(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, expf4(vld1q_f32(x + i)));
    for (; i < n; i++) y[i] = expf(x[i]);
}

void pl_neon_swiglu(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    const float32x4_t one = vdupq_n_f32(1.0f);
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(g + i);
        float32x4_t e = expf4(vnegq_f32(v));
        vst1q_f32(g + i, vmulq_f32(vdivq_f32(v, vaddq_f32(one, e)), vld1q_f32(u + i)));
    }
    for (; i < n; i++) {
        float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

void pl_neon_f32_to_f16(const float *x, uint16_t *out, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(out + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; i++) out[i] = pl_f32_to_f16(x[i]);
}
#endif
