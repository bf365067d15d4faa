// Portable bodies of the float-input kernels (dequantization, dot products against float inputs, the F32 GEMM):
// plain C, one sequential sum per output; what every CPU without a faster tier runs.
#include "kernels_internal.h"
#include <math.h>

void pl_portable_dequant(int type, const void *src, float *dst, int64_t n) {
    const uint8_t *p = (const uint8_t *)src;
    switch (type) {
    case PL_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case PL_TYPE_F16: for (int64_t i = 0; i < n; i++) dst[i] = pl_f16_to_f32(load_u16(p + 2 * i)); break;
    case PL_TYPE_BF16: for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(load_u16(p + 2 * i)); break;
    case PL_TYPE_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34) {
            float d = pl_f16_to_f32(load_u16(p));
            const int8_t *q = (const int8_t *)(p + 2);
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * (float)q[j];
        }
        break;
    case PL_TYPE_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18) {
            float d = pl_f16_to_f32(load_u16(p));
            const uint8_t *q = p + 2;
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)((int)(q[j] & 0x0f) - 8);
                dst[b * 32 + j + 16] = d * (float)((int)(q[j] >> 4) - 8);
            }
        }
        break;
    case PL_TYPE_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, p += 20) {
            float d = pl_f16_to_f32(load_u16(p));
            float m = pl_f16_to_f32(load_u16(p + 2));
            const uint8_t *q = p + 4;
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)(q[j] & 0x0f) + m;
                dst[b * 32 + j + 16] = d * (float)(q[j] >> 4) + m;
            }
        }
        break;
    default: break;
    }
}

float pl_portable_dot(int type, const void *row, const float *x, int64_t n) {
    const uint8_t *p = (const uint8_t *)row;
    float sum = 0.0f;
    switch (type) {
    case PL_TYPE_F32: {
        const float *w = (const float *)row;
        for (int64_t i = 0; i < n; i++) sum += w[i] * x[i];
        break;
    }
    case PL_TYPE_F16: for (int64_t i = 0; i < n; i++) sum += pl_f16_to_f32(load_u16(p + 2 * i)) * x[i]; break;
    case PL_TYPE_BF16: for (int64_t i = 0; i < n; i++) sum += bf16_to_f32(load_u16(p + 2 * i)) * x[i]; break;
    case PL_TYPE_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34) {
            const int8_t *q = (const int8_t *)(p + 2);
            const float *xb = x + b * 32;
            float s = 0.0f;
            for (int j = 0; j < 32; j++) s += (float)q[j] * xb[j];
            sum += pl_f16_to_f32(load_u16(p)) * s;
        }
        break;
    case PL_TYPE_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18) {
            const uint8_t *q = p + 2;
            const float *xb = x + b * 32;
            float s = 0.0f;
            for (int j = 0; j < 16; j++)
                s += (float)((int)(q[j] & 0x0f) - 8) * xb[j] + (float)((int)(q[j] >> 4) - 8) * xb[j + 16];
            sum += pl_f16_to_f32(load_u16(p)) * s;
        }
        break;
    case PL_TYPE_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, p += 20) {
            const uint8_t *q = p + 4;
            const float *xb = x + b * 32;
            float s = 0.0f, xs = 0.0f;
            for (int j = 0; j < 16; j++) {
                s += (float)(q[j] & 0x0f) * xb[j] + (float)(q[j] >> 4) * xb[j + 16];
                xs += xb[j] + xb[j + 16];
            }
            sum += pl_f16_to_f32(load_u16(p)) * s + pl_f16_to_f32(load_u16(p + 2)) * xs;
        }
        break;
    default: break;
    }
    return sum;
}

void pl_portable_matvec(int type, const uint8_t *base, size_t row_bytes, const float *x, float *y, int64_t n,
                        int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) y[r - r0] = pl_portable_dot(type, base + (size_t)r * row_bytes, x, n);
}

void pl_portable_gemm_f32(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw, int64_t K,
                          float *y, int64_t ldy, int64_t r0, int64_t r1) {
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t r = r0; r < r1; r++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc = fmaf(x[t * ldx + k], w[r * ldw + k], acc);
            y[t * ldy + r] = acc;
        }
}

void pl_portable_f32_to_f16(const float *x, uint16_t *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = pl_f32_to_f16(x[i]);
}
