// NEON bodies of the Q2_K, Q3_K and Q5_K dot products against Q8_K activations (arm/neon_quants_k.c has Q4_K/Q6_K),
// and of the Q8_K activation quantizer. The dot products are bit-identical to pl_kq_dot_portable (ggml's x86 lane
// arithmetic): per 32-element chunk, lane l (l < 4: elements 4l..4l+3 of the first 16, l ≥ 4: of the second 16) is a
// 4-element dot product — one sdot per 16 bytes where the CPU has dotprod, else smull + pairwise adds — times the
// chunk's 16-group scale, summed over the chunks as exact int32; then per super-block the portable body's float
// steps: Q2_K the minimum lanes' fma, then the quants'; Q3_K one fma; Q5_K the minimums as one integer fma'd into a
// scalar added after hsum_float_8.
#include "quants_k.h"
#include "kernels_internal.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#include "arm/neon_common.h"

static inline int32x4_t dot4_plain(int8x16_t a, int8x16_t c) {
    return vpaddq_s32(vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(c))), vpaddlq_s16(vmull_high_s8(a, c)));
}
PL_DOTPROD static inline int32x4_t dot4_sdot(int8x16_t a, int8x16_t c) { return vdotq_s32(vdupq_n_s32(0), a, c); }

// Q3_K's 16 scales as int32 (pl_kq_scales_q3k's values), the form vmlaq_n_s32 takes: clang vectorizes this loop,
// which llvm-mca puts at 37.7 cycles per super-block on apple-m1 (45 with the bytes of pl_kq_scales_q3k).
static inline void q3k_scales32(const uint8_t *s, int32_t sc[16]) {
    for (int i = 0; i < 16; i++) {
        int lo = i < 8 ? (s[i] & 15) : (s[i - 8] >> 4);
        int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        sc[i] = (lo | (hi << 4)) - 32;
    }
}

#define NKL_BODY(NAME, ATTR, DOT4)                                                                                   \
/* Chunk c's 32 quants (q0: elements 0..15, q1: 16..31) against x, scaled by the 16-groups' scales s and t. */       \
ATTR static inline __attribute__((always_inline)) void NAME##_chunk(int32x4_t *lo, int32x4_t *hi, int8x16_t q0,       \
        int8x16_t q1, const int8_t *x, int32_t s, int32_t t) {                                                        \
    *lo = vmlaq_n_s32(*lo, DOT4(q0, vld1q_s8(x)), s);                                                                 \
    *hi = vmlaq_n_s32(*hi, DOT4(q1, vld1q_s8(x + 16)), t);                                                            \
}                                                                                                                     \
ATTR PL_NOINLINE static float NAME##_q2k(const uint8_t *w, const uint8_t *xq, int64_t nsb) {                          \
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);                                                       \
    const uint8x16_t three = vdupq_n_u8(3);                                                                           \
    for (int64_t sb = 0; sb < nsb; sb++, w += 84, xq += PL_Q8_K_BLOCK_BYTES) {                                        \
        float yd;                                                                                                     \
        memcpy(&yd, xq, 4);                                                                                           \
        const int8_t *xs = (const int8_t *)(xq + 4);                                                                  \
        int16_t bs[16];                                                                                               \
        memcpy(bs, xq + 260, 32);                                                                                     \
        int32_t m[8], sc[16];                                                                                         \
        PL_UNROLL                                                                                                     \
        for (int g = 0; g < 16; g++) sc[g] = w[g] & 15;                                                               \
        PL_UNROLL                                                                                                     \
        for (int l = 0; l < 8; l++) m[l] = (w[2 * l] >> 4) * bs[2 * l] + (w[2 * l + 1] >> 4) * bs[2 * l + 1];         \
        const float d = yd * pl_neon_f16(w + 80), dmin = -yd * pl_neon_f16(w + 82);                                   \
        a0 = vfmaq_n_f32(a0, vcvtq_f32_s32(vld1q_s32(m)), dmin);                                                      \
        a1 = vfmaq_n_f32(a1, vcvtq_f32_s32(vld1q_s32(m + 4)), dmin);                                                  \
        int32x4_t s_lo = vdupq_n_s32(0), s_hi = vdupq_n_s32(0), t_lo = s_lo, t_hi = s_lo;                             \
        PL_UNROLL                                                                                                     \
        for (int j = 0; j < 2; j++) {                                                                                 \
            const uint8x16_t v0 = vld1q_u8(w + 16 + 32 * j), v1 = vld1q_u8(w + 32 + 32 * j);                          \
            PL_UNROLL                                                                                                 \
            for (int k = 0; k < 4; k++) {                                                                             \
                const int c = 4 * j + k;                                                                              \
                const int8x16_t sh = vdupq_n_s8((int8_t)(-2 * k));                                                    \
                int8x16_t q0 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v0, sh), three));                                \
                int8x16_t q1 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v1, sh), three));                                \
                NAME##_chunk(k & 1 ? &t_lo : &s_lo, k & 1 ? &t_hi : &s_hi, q0, q1, xs + 32 * c, sc[2 * c], sc[2 * c + 1]); \
            }                                                                                                         \
        }                                                                                                             \
        pl_neon_fold_chains(&a0, &a1, s_lo, t_lo, s_hi, t_hi, d);                                                     \
    }                                                                                                                 \
    return pl_neon_hsum8(a0, a1);                                                                                     \
}                                                                                                                     \
/* Q3_K: q = low 2 bits − 4 where the high bit is clear (−4..3). */                                                   \
ATTR PL_NOINLINE static float NAME##_q3k(const uint8_t *w, const uint8_t *xq, int64_t nsb) {                          \
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);                                                       \
    const uint8x16_t three = vdupq_n_u8(3), four = vdupq_n_u8(4);                                                     \
    for (int64_t sb = 0; sb < nsb; sb++, w += 110, xq += PL_Q8_K_BLOCK_BYTES) {                                       \
        float yd;                                                                                                     \
        memcpy(&yd, xq, 4);                                                                                           \
        const int8_t *xs = (const int8_t *)(xq + 4);                                                                  \
        int32_t sc[16];                                                                                               \
        q3k_scales32(w + 96, sc);                                                                                     \
        const uint8x16_t h0 = vld1q_u8(w), h1 = vld1q_u8(w + 16);                                                     \
        int32x4_t s_lo = vdupq_n_s32(0), s_hi = vdupq_n_s32(0), t_lo = s_lo, t_hi = s_lo;                             \
        PL_UNROLL                                                                                                     \
        for (int j = 0; j < 2; j++) {                                                                                 \
            const uint8x16_t v0 = vld1q_u8(w + 32 + 32 * j), v1 = vld1q_u8(w + 48 + 32 * j);                          \
            PL_UNROLL                                                                                                 \
            for (int k = 0; k < 4; k++) {                                                                             \
                const int c = 4 * j + k;                                                                              \
                const int8x16_t sh = vdupq_n_s8((int8_t)(-2 * k));                                                    \
                const uint8x16_t bit = vdupq_n_u8((uint8_t)(1 << c));                                                 \
                uint8x16_t l0 = vandq_u8(vshlq_u8(v0, sh), three), l1 = vandq_u8(vshlq_u8(v1, sh), three);            \
                uint8x16_t m0 = vandq_u8(vceqq_u8(vandq_u8(h0, bit), vdupq_n_u8(0)), four);                           \
                uint8x16_t m1 = vandq_u8(vceqq_u8(vandq_u8(h1, bit), vdupq_n_u8(0)), four);                           \
                int8x16_t q0 = vsubq_s8(vreinterpretq_s8_u8(l0), vreinterpretq_s8_u8(m0));                            \
                int8x16_t q1 = vsubq_s8(vreinterpretq_s8_u8(l1), vreinterpretq_s8_u8(m1));                            \
                NAME##_chunk(k & 1 ? &t_lo : &s_lo, k & 1 ? &t_hi : &s_hi, q0, q1, xs + 32 * c, sc[2 * c], sc[2 * c + 1]); \
            }                                                                                                         \
        }                                                                                                             \
        const float d = yd * pl_neon_f16(w + 108);                                                                    \
        pl_neon_fold_chains(&a0, &a1, s_lo, t_lo, s_hi, t_hi, d);                                                     \
    }                                                                                                                 \
    return pl_neon_hsum8(a0, a1);                                                                                     \
}                                                                                                                     \
ATTR PL_NOINLINE static float NAME##_q5k(const uint8_t *w, const uint8_t *xq, int64_t nsb) {                          \
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);                                                       \
    float summs = 0.0f;                                                                                               \
    const uint8x16_t low4 = vdupq_n_u8(0x0f), one = vdupq_n_u8(1);                                                    \
    for (int64_t sb = 0; sb < nsb; sb++, w += 176, xq += PL_Q8_K_BLOCK_BYTES) {                                       \
        float yd;                                                                                                     \
        memcpy(&yd, xq, 4);                                                                                           \
        const int8_t *xs = (const int8_t *)(xq + 4);                                                                  \
        int16_t bs[16];                                                                                               \
        memcpy(bs, xq + 260, 32);                                                                                     \
        uint8_t sc[8], mn[8];                                                                                         \
        pl_kq_scales_mins_k4(w + 4, sc, mn);                                                                          \
        int32_t pm = 0;                                                                                               \
        PL_UNROLL                                                                                                     \
        for (int g = 0; g < 8; g++) pm += mn[g] * (bs[2 * g] + bs[2 * g + 1]);                                        \
        summs = fmaf(-yd * pl_neon_f16(w + 2), (float)pm, summs);                                                     \
        const uint8x16_t qh0 = vld1q_u8(w + 16), qh1 = vld1q_u8(w + 32);                                              \
        int32x4_t s_lo = vdupq_n_s32(0), s_hi = vdupq_n_s32(0), t_lo = s_lo, t_hi = s_lo;                             \
        PL_UNROLL                                                                                                     \
        for (int j = 0; j < 4; j++) {                                                                                 \
            const uint8x16_t v0 = vld1q_u8(w + 48 + 32 * j), v1 = vld1q_u8(w + 64 + 32 * j);                          \
            const int8x16_t sl = vdupq_n_s8((int8_t)(-2 * j)), sh = vdupq_n_s8((int8_t)(-2 * j - 1));                 \
            uint8x16_t l0 = vorrq_u8(vandq_u8(v0, low4), vshlq_n_u8(vandq_u8(vshlq_u8(qh0, sl), one), 4));            \
            uint8x16_t l1 = vorrq_u8(vandq_u8(v1, low4), vshlq_n_u8(vandq_u8(vshlq_u8(qh1, sl), one), 4));            \
            uint8x16_t g0 = vorrq_u8(vshrq_n_u8(v0, 4), vshlq_n_u8(vandq_u8(vshlq_u8(qh0, sh), one), 4));             \
            uint8x16_t g1 = vorrq_u8(vshrq_n_u8(v1, 4), vshlq_n_u8(vandq_u8(vshlq_u8(qh1, sh), one), 4));             \
            NAME##_chunk(&s_lo, &s_hi, vreinterpretq_s8_u8(l0), vreinterpretq_s8_u8(l1), xs + 64 * j, sc[2 * j], sc[2 * j]); \
            NAME##_chunk(&t_lo, &t_hi, vreinterpretq_s8_u8(g0), vreinterpretq_s8_u8(g1), xs + 64 * j + 32, sc[2 * j + 1], sc[2 * j + 1]); \
        }                                                                                                             \
        const float d = yd * pl_neon_f16(w);                                                                          \
        pl_neon_fold_chains(&a0, &a1, s_lo, t_lo, s_hi, t_hi, d);                                                     \
    }                                                                                                                 \
    return pl_neon_hsum8(a0, a1) + summs;                                                                             \
}                                                                                                                     \
ATTR static void NAME##_matmul(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,     \
                               int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {          \
    for (int64_t r = r0; r < r1; r++)                                                                                 \
        for (int64_t t = 0; t < n_tokens; t++) {                                                                      \
            const uint8_t *row = w + (size_t)r * row_bytes, *x = xq + (size_t)t * xq_stride;                          \
            y[t * ldy + r] = type == PL_TYPE_Q2_K ? NAME##_q2k(row, x, n / 256)                                       \
                           : type == PL_TYPE_Q3_K ? NAME##_q3k(row, x, n / 256) : NAME##_q5k(row, x, n / 256);        \
        }                                                                                                             \
}

NKL_BODY(neon_kl, , dot4_plain)
NKL_BODY(neon_kl_dotprod, PL_DOTPROD, dot4_sdot)

int pl_kq_neon_low_owns(int type) { return type == PL_TYPE_Q2_K || type == PL_TYPE_Q3_K || type == PL_TYPE_Q5_K; }

void pl_kq_matmul_neon_low(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                           int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
    if (pl_isa_features() & PL_FEATURE_DOTPROD) neon_kl_dotprod_matmul(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1);
    else neon_kl_matmul(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1);
}

// One Q8_K block (256 floats, see pl_quantize_q8_K), bit-identical to the portable one: the first element of largest
// magnitude, iscale = −127/max, each product iscale·x rounded once to float and then to the nearest integer, ties to
// even (fcvtns, as ggml's nearest_int for |v| < 2^22), capped at 127; block sums of 16; d = 1/iscale. Returns 0
// (nothing written) for a block with a NaN or an infinity, or so tiny that −127/max overflows: the portable body
// handles those.
int pl_neon_quantize_q8_K_block(const float *x, uint8_t *out) {
    float32x4_t m = vdupq_n_f32(0.0f);
    uint32x4_t bad = vdupq_n_u32(0);
    for (int j = 0; j < 256; j += 4) {
        float32x4_t v = vld1q_f32(x + j);
        m = vmaxq_f32(m, vabsq_f32(v));
        bad = vorrq_u32(bad, vmvnq_u32(vceqq_f32(v, v)));   // NaN
    }
    if (vmaxvq_u32(bad)) return 0;
    const float amax = vmaxvq_f32(m);
    if (!isfinite(amax)) return 0;
    int8_t *qs = (int8_t *)(out + 4);
    int16_t bsums[16];
    float d = 0.0f;
    if (amax == 0.0f) {
        memset(qs, 0, 256);
        memset(bsums, 0, sizeof bsums);
    } else {
        int first = 0;
        while (fabsf(x[first]) != amax) first++;
        const float iscale = -127.0f / x[first];
        if (!isfinite(iscale)) return 0;
        const int32x4_t cap = vdupq_n_s32(127);
        for (int g = 0; g < 16; g++) {
            int32x4_t q[4];
            for (int k = 0; k < 4; k++) q[k] = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + 16 * g + 4 * k), iscale)), cap);
            int16x8_t h0 = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1])), h1 = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
            vst1q_s8(qs + 16 * g, vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1)));
            bsums[g] = (int16_t)vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3])));
        }
        d = 1.0f / iscale;
    }
    memcpy(out, &d, 4);
    memcpy(out + 260, bsums, 32);
    return 1;
}
#endif
