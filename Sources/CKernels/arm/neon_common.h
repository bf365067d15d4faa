#ifndef POCKETLM_NEON_COMMON_H
#define POCKETLM_NEON_COMMON_H
// What the NEON bodies share: the dotprod target attribute (GCC and Clang spell it differently), f16 loads, and
// ggml's hsum_float_8 order over two float32x4 halves. AArch64 only.
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#if defined(__clang__)
#define PL_DOTPROD __attribute__((target("dotprod")))
#else
#define PL_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

// The K-quant row bodies stay functions of their own (one call per row and input): `make kernel-mca` finds each
// one's super-block loop by its symbol.
#define PL_NOINLINE __attribute__((noinline))

static inline float pl_neon_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

// The end of a K-quant super-block: its two chains of exact int32 sums (two, so the mla latency is halved) added,
// converted and accumulated with the block's scale d into the row's float lanes a0 (lo) and a1 (hi).
static inline void pl_neon_fold_chains(float32x4_t *a0, float32x4_t *a1, int32x4_t s_lo, int32x4_t t_lo,
                                       int32x4_t s_hi, int32x4_t t_hi, float d) {
    const int32x4_t lo = vaddq_s32(s_lo, t_lo), hi = vaddq_s32(s_hi, t_hi);
    *a0 = vfmaq_n_f32(*a0, vcvtq_f32_s32(lo), d);
    *a1 = vfmaq_n_f32(*a1, vcvtq_f32_s32(hi), d);
}

// ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)) for lanes a0..a3 = lo, a4..a7 = hi.
static inline float pl_neon_hsum8(float32x4_t lo, float32x4_t hi) {
    float32x4_t s = vaddq_f32(lo, hi);
    return (vgetq_lane_f32(s, 0) + vgetq_lane_f32(s, 2)) + (vgetq_lane_f32(s, 1) + vgetq_lane_f32(s, 3));
}
#endif
