// Multiply-adds per second that one core retires when nothing else holds it up: the compute bound of work that is
// not memory-bound, as a prompt chunk's attention at depth is (every key and value row serves a tile of queries from
// cache, so the multiply-adds are the cost). Benchmarks print it beside such figures as memread.c's bandwidth is
// printed beside decode.
//
// Independent accumulator chains (more than the multiply-add latency × issue width of any core we run on), each
// instruction at the tier's full vector width: F32 fma (vfmadd231ps zmm/ymm, NEON fmla), and on CPUs with
// AVX512_BF16 vdpbf16ps (two bf16 products per 32-bit lane), the instruction the BF16 KV cache's attention uses.
#include "kernels_internal.h"
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

enum { CHAINS = 12 };

#if defined(__x86_64__)
__attribute__((target("avx512f")))
static float fma_avx512(int64_t steps) {
    __m512 a[CHAINS];
    for (int i = 0; i < CHAINS; i++) a[i] = _mm512_set1_ps((float)i);
    const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-7f);
    for (int64_t s = 0; s < steps; s++)
        PL_UNROLL
        for (int i = 0; i < CHAINS; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
    float sum = 0;
    for (int i = 0; i < CHAINS; i++) sum += _mm512_reduce_add_ps(a[i]);
    return sum;
}

__attribute__((target("avx2,fma")))
static float fma_avx2(int64_t steps) {
    __m256 a[CHAINS];
    for (int i = 0; i < CHAINS; i++) a[i] = _mm256_set1_ps((float)i);
    const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-7f);
    for (int64_t s = 0; s < steps; s++)
        PL_UNROLL
        for (int i = 0; i < CHAINS; i++) a[i] = _mm256_fmadd_ps(a[i], x, y);
    float lanes[8], sum = 0;
    for (int i = 0; i < CHAINS; i++) {
        _mm256_storeu_ps(lanes, a[i]);
        for (int j = 0; j < 8; j++) sum += lanes[j];
    }
    return sum;
}

__attribute__((target("avx512f,avx512bw,avx512bf16")))
static float dot_bf16_avx512(int64_t steps) {
    __m512 a[CHAINS];
    for (int i = 0; i < CHAINS; i++) a[i] = _mm512_set1_ps((float)i);
    // 1.0 and 2^-20 as bf16 pairs: each step adds 2^-19 per lane, nothing overflows.
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3580);
    for (int64_t s = 0; s < steps; s++)
        PL_UNROLL
        for (int i = 0; i < CHAINS; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);
    float sum = 0;
    for (int i = 0; i < CHAINS; i++) sum += _mm512_reduce_add_ps(a[i]);
    return sum;
}
#endif

#if defined(__aarch64__)
static float fma_neon(int64_t steps) {
    // 16 chains: Apple's cores issue four 128-bit fmla a cycle at a latency of 3–4.
    float32x4_t a[16];
    for (int i = 0; i < 16; i++) a[i] = vdupq_n_f32((float)i);
    const float32x4_t x = vdupq_n_f32(0.999f), y = vdupq_n_f32(1e-7f);
    for (int64_t s = 0; s < steps; s++)
        PL_UNROLL
        for (int i = 0; i < 16; i++) a[i] = vfmaq_f32(y, a[i], x);
    float sum = 0;
    for (int i = 0; i < 16; i++) sum += vaddvq_f32(a[i]);
    return sum;
}
#endif

static float fma_portable(int64_t steps) {
    float a[CHAINS];
    for (int i = 0; i < CHAINS; i++) a[i] = (float)i;
    for (int64_t s = 0; s < steps; s++)
        for (int i = 0; i < CHAINS; i++) a[i] = a[i] * 0.999f + 1e-7f;
    float sum = 0;
    for (int i = 0; i < CHAINS; i++) sum += a[i];
    return sum;
}

float pl_multiply_add_probe(int kind, int64_t steps, int64_t *multiply_adds) {
    *multiply_adds = 0;
    if (steps <= 0) return 0;
    if (kind == PL_PROBE_BF16_DOT) {
#if defined(__x86_64__)
        if (pl_attention_bf16_fast_body()) {
            *multiply_adds = steps * CHAINS * 32;
            return dot_bf16_avx512(steps);
        }
#endif
        return 0;
    }
    if (kind != PL_PROBE_F32_FMA) return 0;
#if defined(__x86_64__)
    if (pl_has_avx512()) {
        *multiply_adds = steps * CHAINS * 16;
        return fma_avx512(steps);
    }
    if (pl_isa() == PL_ISA_AVX2) {
        *multiply_adds = steps * CHAINS * 8;
        return fma_avx2(steps);
    }
#elif defined(__aarch64__)
    if (pl_isa() == PL_ISA_NEON) {
        *multiply_adds = steps * 16 * 4;
        return fma_neon(steps);
    }
#endif
    *multiply_adds = steps * CHAINS;
    return fma_portable(steps);
}
