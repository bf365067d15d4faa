// Q5_0, Q5_1 and the K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): dequantization, Q8_K activations and the
// portable dot products, in llama.cpp's arithmetic.
//
// What "llama.cpp's arithmetic" means here: ggml's x86 build multiplies these weights by its AVX2 vec_dot bodies
// (ggml-cpu/arch/x86/quants.c). Their integer parts are exact, so any order gives the same integers; what fixes the
// float result is which elements each of the eight 32-bit lanes sums and the order of the float operations. In every
// one of these bodies lane l of a 32-element chunk holds elements 4l .. 4l+3 (the pairwise madd of 32 bytes), the
// lanes are scaled and fma'd into an 8-lane float accumulator block after block, and the row's result is ggml's
// hsum_float_8 of it (plus, for Q5_1/Q4_K/Q5_K, the minimum terms in their own order). The portable bodies below
// compute exactly those lanes with plain integers and the same float operations (fmaf where ggml fuses), so they are
// llama.cpp's numbers on any CPU, and the AVX-512 bodies (x86/avx512_quants_k.c) are checked bit for bit against them.
#include "quants_k.h"
#include "kernels_internal.h"
#include <math.h>
#include <string.h>

// Fusions are written out (fmaf); nothing else may be contracted, or the portable and vector bodies would differ.
#pragma STDC FP_CONTRACT OFF

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline float f16(const uint8_t *p) { return pl_f16_to_f32(ld16(p)); }

int pl_kq_owns(int type) {
    switch (type) {
    case PL_TYPE_Q5_0: case PL_TYPE_Q5_1: case PL_TYPE_Q2_K: case PL_TYPE_Q3_K: case PL_TYPE_Q4_K:
    case PL_TYPE_Q5_K: case PL_TYPE_Q6_K: return 1;
    default: return 0;
    }
}

int pl_kq_block_bytes(int type) {
    switch (type) {
    case PL_TYPE_Q5_0: return 22;   // f16 d, u32 qh (5th bits), 16 B nibbles
    case PL_TYPE_Q5_1: return 24;   // f16 d, f16 m, u32 qh, 16 B nibbles
    case PL_TYPE_Q2_K: return 84;   // 16 B scales|mins, 64 B 2-bit quants, f16 d, f16 dmin
    case PL_TYPE_Q3_K: return 110;  // 32 B high bits, 64 B 2-bit quants, 12 B 6-bit scales, f16 d
    case PL_TYPE_Q4_K: return 144;  // f16 d, f16 dmin, 12 B 6-bit scales|mins, 128 B nibbles
    case PL_TYPE_Q5_K: return 176;  // f16 d, f16 dmin, 12 B scales|mins, 32 B high bits, 128 B nibbles
    case PL_TYPE_Q6_K: return 210;  // 128 B low nibbles, 64 B high 2 bits, 16 int8 scales, f16 d
    default: return 0;
    }
}

int pl_kq_block_elems(int type) { return type == PL_TYPE_Q5_0 || type == PL_TYPE_Q5_1 ? 32 : 256; }

// ---- decoding a block into integers ---------------------------------------------------------------

// Q4_K/Q5_K: 8 six-bit scales and 8 six-bit minimums packed in 12 bytes (ggml's get_scale_min_k4).
static void scale_min_k4(const uint8_t *s, int sc[8], int mn[8]) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            sc[j] = s[j] & 63;
            mn[j] = s[j + 4] & 63;
        } else {
            sc[j] = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
            mn[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
    }
}

// Q3_K: 16 six-bit scales (low 4 bits in bytes 0..7, two nibbles each; high 2 bits in bytes 8..11), minus 32.
static void scales_q3k(const uint8_t *s, int sc[16]) {
    for (int i = 0; i < 16; i++) {
        int lo = i < 8 ? (s[i] & 15) : (s[i - 8] >> 4);
        int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        sc[i] = (lo | (hi << 4)) - 32;
    }
}

// A super-block as integers: q[e] the quant of element e (offsets applied: Q3_K −4..3, Q6_K −32..31; Q2_K/Q4_K/Q5_K
// unsigned, their minimums apart), sc[g] the scale of element group g of 16, mn[g] the minimum (Q2_K per 16;
// Q4_K/Q5_K per 32, in mn[0..7]). Layouts as ggml's dequantize_row_q*_K.
static void decode_k(int type, const uint8_t *b, int8_t q[256], int sc[16], int mn[16]) {
    switch (type) {
    case PL_TYPE_Q2_K: {
        const uint8_t *qs = b + 16;
        for (int g = 0; g < 16; g++) { sc[g] = b[g] & 15; mn[g] = b[g] >> 4; }
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 4; k++)
                for (int i = 0; i < 32; i++) q[128 * j + 32 * k + i] = (int8_t)((qs[32 * j + i] >> (2 * k)) & 3);
        break;
    }
    case PL_TYPE_Q3_K: {
        const uint8_t *hm = b, *qs = b + 32;
        scales_q3k(b + 96, sc);
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 4; k++)
                for (int i = 0; i < 32; i++) {
                    int lo = (qs[32 * j + i] >> (2 * k)) & 3;
                    int hbit = (hm[i] >> (4 * j + k)) & 1;   // set: no offset; clear: −4
                    q[128 * j + 32 * k + i] = (int8_t)(lo - (hbit ? 0 : 4));
                }
        break;
    }
    case PL_TYPE_Q4_K:
    case PL_TYPE_Q5_K: {
        int s8[8];
        scale_min_k4(b + 4, s8, mn);
        for (int g = 0; g < 16; g++) sc[g] = s8[g / 2];
        const uint8_t *qh = b + 16, *qs = type == PL_TYPE_Q4_K ? b + 16 : b + 48;
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < 32; i++) {
                int lo = qs[32 * j + i] & 15, hi = qs[32 * j + i] >> 4;
                if (type == PL_TYPE_Q5_K) {
                    lo |= ((qh[i] >> (2 * j)) & 1) << 4;
                    hi |= ((qh[i] >> (2 * j + 1)) & 1) << 4;
                }
                q[64 * j + i] = (int8_t)lo;
                q[64 * j + 32 + i] = (int8_t)hi;
            }
        break;
    }
    case PL_TYPE_Q6_K: {
        const uint8_t *ql = b, *qh = b + 128;
        for (int g = 0; g < 16; g++) sc[g] = (int8_t)b[192 + g];
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < 32; i++) {
                const uint8_t *l = ql + 64 * j;
                const uint8_t h = qh[32 * j + i];
                q[128 * j + i] = (int8_t)(((l[i] & 15) | ((h & 3) << 4)) - 32);
                q[128 * j + 32 + i] = (int8_t)(((l[32 + i] & 15) | (((h >> 2) & 3) << 4)) - 32);
                q[128 * j + 64 + i] = (int8_t)(((l[i] >> 4) | (((h >> 4) & 3) << 4)) - 32);
                q[128 * j + 96 + i] = (int8_t)(((l[32 + i] >> 4) | (((h >> 6) & 3) << 4)) - 32);
            }
        break;
    }
    default: break;
    }
}

// Q5_0/Q5_1: the 32 five-bit quants of a block (unsigned 0..31): nibble j / j−16, 5th bit = bit j of qh.
static void decode_q5(const uint8_t *qh4, const uint8_t *qs, int8_t q[32]) {
    uint32_t qh = ld32(qh4);
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((qs[j] & 15) | (((qh >> j) & 1) << 4));
        q[j + 16] = (int8_t)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
    }
}

// ---- dequantization (gguf-py's and ggml's formulas; every product below is exact in float, so the only rounding
// is the final subtraction or addition, as in both references) ----------------------------------------------------

void pl_kq_dequantize_row(int type, const void *src, float *dst, int64_t n) {
    const uint8_t *p = (const uint8_t *)src;
    const int bb = pl_kq_block_bytes(type), be = pl_kq_block_elems(type);
    for (int64_t b = 0; b < n / be; b++, p += bb, dst += be) {
        if (type == PL_TYPE_Q5_0 || type == PL_TYPE_Q5_1) {
            int8_t q[32];
            int off = type == PL_TYPE_Q5_0 ? 2 : 4;
            decode_q5(p + off, p + off + 4, q);
            float d = f16(p);
            if (type == PL_TYPE_Q5_0) for (int j = 0; j < 32; j++) dst[j] = d * (float)(q[j] - 16);
            else { float m = f16(p + 2); for (int j = 0; j < 32; j++) dst[j] = d * (float)q[j] + m; }
            continue;
        }
        int8_t q[256];
        int sc[16], mn[16];
        decode_k(type, p, q, sc, mn);
        switch (type) {
        case PL_TYPE_Q2_K: {
            float d = f16(p + 80), dmin = f16(p + 82);
            for (int e = 0; e < 256; e++) dst[e] = (d * (float)sc[e / 16]) * (float)q[e] - dmin * (float)mn[e / 16];
            break;
        }
        case PL_TYPE_Q3_K: {
            float d = f16(p + 108);
            for (int e = 0; e < 256; e++) dst[e] = (d * (float)sc[e / 16]) * (float)q[e];
            break;
        }
        case PL_TYPE_Q4_K: case PL_TYPE_Q5_K: {
            float d = f16(p), dmin = f16(p + 2);
            for (int e = 0; e < 256; e++) dst[e] = (d * (float)sc[e / 16]) * (float)q[e] - dmin * (float)mn[e / 32];
            break;
        }
        case PL_TYPE_Q6_K: {
            float d = f16(p + 208);
            for (int e = 0; e < 256; e++) dst[e] = (d * (float)sc[e / 16]) * (float)q[e];
            break;
        }
        default: break;
        }
    }
}

// ---- Q8_K activations (ggml's quantize_row_q8_K_ref, which is also what its x86 build runs) ----------------------

// ggml's nearest_int: adding 1.5·2^23 rounds to the nearest integer, ties to even, for |x| < 2^22.
static inline int nearest_int(float x) {
    float v = x + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

void pl_quantize_q8_K(const float *x, void *out, int64_t n) {
    uint8_t *p = (uint8_t *)out;
#if defined(__x86_64__)
    const int avx2 = pl_tier_avx2() || pl_tier_avx512();   // the AVX2 body serves both x86 tiers
#elif defined(__aarch64__)
    const int neon = pl_tier_neon();
#endif
    for (int64_t b = 0; b < n / 256; b++, x += 256, p += PL_Q8_K_BLOCK_BYTES) {
#if defined(__x86_64__)
        if (avx2 && pl_avx2_quantize_q8_K_block(x, p)) continue;
#elif defined(__aarch64__)
        if (neon && pl_neon_quantize_q8_K_block(x, p)) continue;   // arm/neon_quants_k_low.c
#endif
        int8_t *qs = (int8_t *)(p + 4);
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; j++) {
            float a = fabsf(x[j]);
            if (a > amax) { amax = a; max = x[j]; }   // the signed value of the first largest magnitude
        }
        int16_t bsums[16] = {0};
        float d = 0.0f;
        if (amax == 0.0f) {
            memset(qs, 0, 256);
        } else {
            const float iscale = -127.0f / max;
            for (int j = 0; j < 256; j++) {
                int v = nearest_int(iscale * x[j]);
                qs[j] = (int8_t)(v < 127 ? v : 127);
            }
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int i = 0; i < 16; i++) s += qs[16 * g + i];
                bsums[g] = (int16_t)s;
            }
            d = 1.0f / iscale;
        }
        memcpy(p, &d, 4);
        memcpy(p + 260, bsums, 32);
    }
}

// ---- portable dot products ----------------------------------------------------------------------------------

// ggml's hsum_float_8: ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)).
static inline float hsum8(const float a[8]) {
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

// Lane sums of one super-block: L[l] = Σ over elements e with (e mod 32) in 4l..4l+3 of sc[e/16]·q[e]·x[e].
static void lanes_k(const int8_t q[256], const int sc[16], const int8_t *x, int32_t L[8]) {
    for (int l = 0; l < 8; l++) L[l] = 0;
    for (int c = 0; c < 8; c++)
        for (int l = 0; l < 8; l++) {
            int e = 32 * c + 4 * l, s = 0;
            for (int t = 0; t < 4; t++) s += q[e + t] * x[e + t];
            L[l] += sc[e / 16] * s;
        }
}

float pl_kq_dot_portable(int type, const uint8_t *w, const uint8_t *xq, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (type == PL_TYPE_Q5_0 || type == PL_TYPE_Q5_1) {
        const int q51 = type == PL_TYPE_Q5_1;
        float summs = 0.0f;
        for (int64_t b = 0; b < n / 32; b++, w += q51 ? 24 : 22, xq += q51 ? 36 : 34) {
            int8_t q[32];
            decode_q5(w + (q51 ? 4 : 2), w + (q51 ? 8 : 6), q);
            const int8_t *x = (const int8_t *)(xq + (q51 ? 4 : 2));
            int32_t S[8];
            for (int l = 0; l < 8; l++) {
                S[l] = 0;   // Q5_0's −16 offset is inside the integer sum, as ggml's signed bytes have it
                for (int t = 0; t < 4; t++) S[l] += (q[4 * l + t] - (q51 ? 0 : 16)) * x[4 * l + t];
            }
            if (q51) {
                // ggml: summs += m·s (contracted to an fma by its build), acc = fma(q, dx·dy, acc)
                summs = fmaf(f16(w + 2), f16(xq + 2), summs);
                float dd = f16(w) * f16(xq);
                for (int l = 0; l < 8; l++) acc[l] = fmaf((float)S[l], dd, acc[l]);
            } else {
                float dd = f16(w) * f16(xq);
                for (int l = 0; l < 8; l++) acc[l] = fmaf(dd, (float)S[l], acc[l]);
            }
        }
        return q51 ? hsum8(acc) + summs : hsum8(acc);
    }
    const int bb = pl_kq_block_bytes(type);
    float accm[4] = {0, 0, 0, 0}, summs = 0.0f;
    for (int64_t b = 0; b < n / 256; b++, w += bb, xq += PL_Q8_K_BLOCK_BYTES) {
        float yd;
        memcpy(&yd, xq, 4);
        const int8_t *x = (const int8_t *)(xq + 4);
        int16_t bs[16];
        memcpy(bs, xq + 260, 32);
        int8_t q[256];
        int sc[16], mn[16];
        int32_t L[8];
        decode_k(type, w, q, sc, mn);
        if (type == PL_TYPE_Q6_K)   // unsigned quants: see the Q6_K case below
            for (int e = 0; e < 256; e++) q[e] = (int8_t)(q[e] + 32);
        lanes_k(q, sc, x, L);
        switch (type) {
        case PL_TYPE_Q2_K: {
            float d = yd * f16(w + 80), dmin = -yd * f16(w + 82);
            // ggml adds the minimums' lanes (mins[2l]·bsums[2l] + mins[2l+1]·bsums[2l+1]) first, then the quants'.
            for (int l = 0; l < 8; l++) acc[l] = fmaf(dmin, (float)(mn[2 * l] * bs[2 * l] + mn[2 * l + 1] * bs[2 * l + 1]), acc[l]);
            for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)L[l], acc[l]);
            break;
        }
        case PL_TYPE_Q3_K: {
            float d = yd * f16(w + 108);
            for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)L[l], acc[l]);
            break;
        }
        case PL_TYPE_Q6_K: {
            // ggml's current x86 Q6_K body multiplies the unsigned quants (0..63) and takes the −32 offset off
            // afterwards through the block sums: lane l loses 32·(sc[2l]·bsums[2l] + sc[2l+1]·bsums[2l+1]). The
            // total is the same, but the lanes (so the float result) are not those of (q−32) multiplied directly.
            // Checked bit for bit against the peer venv's libggml-cpu (ggml 0.25.3) through ctypes.
            float d = yd * f16(w + 208);
            for (int l = 0; l < 8; l++) {
                int32_t lane = L[l] - 32 * (sc[2 * l] * bs[2 * l] + sc[2 * l + 1] * bs[2 * l + 1]);
                acc[l] = fmaf(d, (float)lane, acc[l]);
            }
            break;
        }
        case PL_TYPE_Q4_K: case PL_TYPE_Q5_K: {
            float d = yd * f16(w), dmin = -yd * f16(w + 2);
            // Minimums against the 32-element sums of x (pairs of bsums), four lanes of two sub-blocks each.
            int32_t pm[4];
            for (int m = 0; m < 4; m++)
                pm[m] = mn[2 * m] * (bs[4 * m] + bs[4 * m + 1]) + mn[2 * m + 1] * (bs[4 * m + 2] + bs[4 * m + 3]);
            if (type == PL_TYPE_Q4_K) {
                for (int m = 0; m < 4; m++) accm[m] = fmaf(dmin, (float)pm[m], accm[m]);
            } else {
                // Q5_K sums the four lanes as integers first, then summs += dmin·sum (fused by ggml's build).
                summs = fmaf(dmin, (float)(pm[0] + pm[1] + pm[2] + pm[3]), summs);
            }
            for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)L[l], acc[l]);
            break;
        }
        default: break;
        }
    }
    if (type == PL_TYPE_Q4_K) return hsum8(acc) + ((accm[0] + accm[2]) + (accm[1] + accm[3]));
    if (type == PL_TYPE_Q5_K) return hsum8(acc) + summs;
    return hsum8(acc);
}

// ---- dispatch ----------------------------------------------------------------------------------------------

void pl_kq_matmul(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                  int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1) {
#if defined(__x86_64__)
    // Q2_K/Q3_K have no VNNI body; Q5_K's one-input VNNI path is its batch body with tiles of one input, 10% slower
    // than the AVX2 row body (make kernel-bench-kquants): the AVX2 bodies serve (the same bits on every path).
    if (pl_kq_fast() && (type == PL_TYPE_Q2_K || type == PL_TYPE_Q3_K || (type == PL_TYPE_Q5_K && n_tokens == 1))) {
        pl_kq_matmul_avx2_low(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1);
        return;
    }
    if (pl_kq_fast()) { pl_kq_matmul_vnni(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1); return; }
    int tier = pl_isa();
    if ((tier == PL_ISA_AVX2 || tier == PL_ISA_AVX512) && pl_kq_avx2_low_owns(type)) {   // x86/avx2_quants_k_low.c
        pl_kq_matmul_avx2_low(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1);
        return;
    }
    if ((tier == PL_ISA_AVX2 || tier == PL_ISA_AVX512) && pl_kq_avx2_owns(type)) {
        pl_kq_matmul_avx2(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1);
        return;
    }
#elif defined(__aarch64__)
    if (pl_isa() == PL_ISA_NEON && (type == PL_TYPE_Q5_0 || type == PL_TYPE_Q5_1)) {   // arm/neon_quant.c
        if (pl_isa_features() & PL_FEATURE_DOTPROD) pl_neon_dotprod_matmul_q(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
        else pl_neon_matmul_q(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n / 32, r0, r1);
        return;
    }
    if (pl_isa() == PL_ISA_NEON && pl_kq_neon_low_owns(type)) {   // arm/neon_quants_k_low.c
        pl_kq_matmul_neon_low(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1);
        return;
    }
    if (pl_isa() == PL_ISA_NEON && pl_kq_neon_owns(type)) {
        pl_kq_matmul_neon(type, w, row_bytes, xq, xq_stride, n_tokens, y, ldy, n, r0, r1);
        return;
    }
#endif
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = 0; t < n_tokens; t++)
            y[t * ldy + r] = pl_kq_dot_portable(type, w + (size_t)r * row_bytes, xq + (size_t)t * xq_stride, n);
}
