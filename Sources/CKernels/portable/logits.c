// Portable bodies of the element-wise work around a model's output and its FFN activation that used to run as
// Swift loops: greedy token choice over the logits, Gemma's GeGLU through ggml's GELU table. The references the
// vector bodies are tested against (Tests/CKernelsDriver).
#include "kernels_internal.h"

int64_t pl_portable_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    float value = -__builtin_inff();
    for (int64_t i = 0; i < n; i++)
        if (x[i] > value) { value = x[i]; best = i; }
    return best;
}

void pl_portable_geglu_table(float *g, const float *u, const float *table, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float x = g[i];
        if (x <= -10.0f) g[i] = 0.0f;
        else if (x >= 10.0f) g[i] = x * u[i];
        else g[i] = table[pl_f32_to_f16(x)] * u[i];
    }
}
