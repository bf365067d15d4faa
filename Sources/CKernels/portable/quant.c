// Portable bodies of the activation quantizers (Q8_0, Q8_1) and the Q8_0/Q4_0/Q4_1 integer dot products: per block
// an exact integer sum, then one sequential float sum over blocks.
#include "kernels_internal.h"
#include <math.h>

// As ggml's x86 SIMD path does it (the reference ran that path): scale by 127/amax, round half to even.
static void quantize_block(const float *x, int8_t *q, float *d_out, int *sum_out) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) { float a = fabsf(x[j]); if (a > amax) amax = a; }
    float d = amax / 127.0f;
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < 32; j++) { q[j] = (int8_t)nearbyintf(x[j] * id); sum += q[j]; }
    *d_out = d;
    *sum_out = sum;
}

void pl_portable_quantize_q8(const float *x, uint8_t *p, int64_t n, int with_sum) {
    const int bytes = with_sum ? PL_Q8_1_BLOCK_BYTES : PL_Q8_0_BLOCK_BYTES;
    for (int64_t b = 0; b < n / 32; b++, p += bytes) {
        float d; int sum;
        quantize_block(x + b * 32, (int8_t *)(p + (with_sum ? 4 : 2)), &d, &sum);
        store_u16(p, pl_f32_to_f16(d));
        if (with_sum) store_u16(p + 2, pl_f32_to_f16(d * (float)sum));
    }
}

float pl_portable_dotq(int type, const uint8_t *w, const uint8_t *xq, int64_t nb) {
    float sum = 0.0f;
    switch (type) {
    case PL_TYPE_Q8_0:
        for (int64_t b = 0; b < nb; b++, w += 34, xq += 34) {
            const int8_t *a = (const int8_t *)(w + 2), *c = (const int8_t *)(xq + 2);
            int s = 0;
            for (int j = 0; j < 32; j++) s += a[j] * c[j];
            sum += (float)s * (pl_f16_to_f32(load_u16(w)) * pl_f16_to_f32(load_u16(xq)));
        }
        break;
    case PL_TYPE_Q4_0:
        for (int64_t b = 0; b < nb; b++, w += 18, xq += 34) {
            const uint8_t *a = w + 2;
            const int8_t *c = (const int8_t *)(xq + 2);
            int s = 0;
            for (int j = 0; j < 16; j++) s += ((a[j] & 0x0f) - 8) * c[j] + ((a[j] >> 4) - 8) * c[j + 16];
            sum += (float)s * (pl_f16_to_f32(load_u16(w)) * pl_f16_to_f32(load_u16(xq)));
        }
        break;
    case PL_TYPE_Q4_1:
        for (int64_t b = 0; b < nb; b++, w += 20, xq += 36) {
            const uint8_t *a = w + 4;
            const int8_t *c = (const int8_t *)(xq + 4);
            int s = 0;
            for (int j = 0; j < 16; j++) s += (a[j] & 0x0f) * c[j] + (a[j] >> 4) * c[j + 16];
            sum += (float)s * (pl_f16_to_f32(load_u16(w)) * pl_f16_to_f32(load_u16(xq)))
                 + pl_f16_to_f32(load_u16(w + 2)) * pl_f16_to_f32(load_u16(xq + 2));
        }
        break;
    default: break;
    }
    return sum;
}

void pl_portable_matmul_q(int type, const uint8_t *base, size_t row_bytes, const uint8_t *x, size_t xq_stride,
                          int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = 0; t < n_tokens; t++)
            y[t * ldy + r] = pl_portable_dotq(type, base + (size_t)r * row_bytes, x + (size_t)t * xq_stride, nb);
}
