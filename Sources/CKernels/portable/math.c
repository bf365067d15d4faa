// Portable bodies of the elementwise math (expf, SwiGLU) and of F16- and BF16-cache attention: libm's expf, sequential sums.
#include "kernels_internal.h"
#include <math.h>

void pl_portable_expf(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
}

void pl_portable_swiglu(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = g[i];
        g[i] = v / (1.0f + expf(-v)) * u[i];
    }
}

// One query's attention over a cache of f16 (bf16 = 0) or bf16 (bf16 = 1) rows; q and the probabilities are
// rounded to the cache's type, as llama.cpp rounds a dot product's input to the weight's vec_dot type.
static inline float cache_to_f32(uint16_t h, int bf16) { return bf16 ? bf16_to_f32(h) : pl_f16_to_f32(h); }
static inline float round_to_cache(float x, int bf16) {
    return bf16 ? bf16_to_f32(pl_f32_to_bf16(x)) : pl_f16_to_f32(pl_f32_to_f16(x));
}

static inline void attention_body(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                                  int64_t hd, float scale, float *scores, float *out, int bf16) {
    float qh[512];
    for (int64_t j = 0; j < hd; j++) qh[j] = round_to_cache(q[j], bf16);
    float mx = -INFINITY;
    for (int64_t t = 0; t < n_ctx; t++) {
        const uint16_t *kt = k + t * stride;
        float d = 0.0f;
        for (int64_t j = 0; j < hd; j++) d += qh[j] * cache_to_f32(kt[j], bf16);
        d *= scale;
        scores[t] = d;
        if (d > mx) mx = d;
    }
    float sum = 0.0f;
    for (int64_t t = 0; t < n_ctx; t++) { float e = expf(scores[t] - mx); scores[t] = e; sum += e; }
    float inv = 1.0f / sum;
    for (int64_t j = 0; j < hd; j++) out[j] = 0.0f;
    for (int64_t t = 0; t < n_ctx; t++) {
        float p = round_to_cache(scores[t] * inv, bf16);
        const uint16_t *vt = v + t * stride;
        for (int64_t j = 0; j < hd; j++) out[j] += p * cache_to_f32(vt[j], bf16);
    }
}

void pl_portable_attention(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                           int64_t hd, float scale, float *scores, float *out) {
    attention_body(q, k, v, stride, n_ctx, hd, scale, scores, out, 0);
}

// The reference of a tile: each (query, head) alone, query t over its first n_ctx + t rows.
static inline void tile_body(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads, const uint16_t *k,
                             const uint16_t *v, int64_t stride, int64_t n_ctx, int64_t hd, float scale, float *scores,
                             float *out, int64_t out_stride, int bf16) {
    for (int64_t t = 0; t < n_queries; t++)
        for (int64_t g = 0; g < n_heads; g++)
            attention_body(q + t * q_stride + g * hd, k, v, stride, n_ctx + t, hd, scale, scores,
                           out + t * out_stride + g * hd, bf16);
}

void pl_portable_attention_tile(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads,
                                const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx, int64_t hd,
                                float scale, float *scores, float *out, int64_t out_stride) {
    tile_body(q, q_stride, n_queries, n_heads, k, v, stride, n_ctx, hd, scale, scores, out, out_stride, 0);
}

void pl_portable_attention_tile_bf16(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads,
                                     const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx, int64_t hd,
                                     float scale, float *scores, float *out, int64_t out_stride) {
    tile_body(q, q_stride, n_queries, n_heads, k, v, stride, n_ctx, hd, scale, scores, out, out_stride, 1);
}
