// AVX2 body of portable/logits.c's argmax: greedy decoding's pick over the vocabulary (49,152 logits for SmolLM2),
// which the scalar loop ran on one thread while the other waited for the next token (~0.4% of a 2-thread decode's
// samples, AMD EPYC, POCKETLM_ISA=avx2).
#include "kernels_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2")))

// Two passes over the logits (they are in cache after the output head wrote them): the maximum (vmaxps returns its
// second operand when the first is NaN, so a NaN never enters the running maxima), then the first index holding it —
// the scalar loop's answer, as it keeps the first strictly greater value. No value above −∞ (all −∞ or NaN): 0, as
// the scalar loop returns.
AVX2 int64_t pl_avx2_argmax(const float *x, int64_t n) {
    const __m256 neg_inf = _mm256_set1_ps(-__builtin_inff());
    __m256 m[4] = {neg_inf, neg_inf, neg_inf, neg_inf};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        PL_UNROLL
        for (int a = 0; a < 4; a++) m[a] = _mm256_max_ps(_mm256_loadu_ps(x + i + 8 * a), m[a]);
    __m256 all = _mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3]));
    float lanes[8], best = -__builtin_inff();
    _mm256_storeu_ps(lanes, all);
    for (int l = 0; l < 8; l++) if (lanes[l] > best) best = lanes[l];
    for (; i < n; i++) if (x[i] > best) best = x[i];
    if (best == -__builtin_inff()) return 0;
    const __m256 target = _mm256_set1_ps(best);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const int hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + j), target, _CMP_EQ_OQ));
        if (hit) return j + __builtin_ctz((unsigned)hit);
    }
    for (; j < n; j++) if (x[j] == best) return j;
    return 0;   // not reached: best is one of the values
}
#endif
