#ifndef POCKETLM_QUANTS_K_X86_H
#define POCKETLM_QUANTS_K_X86_H
// What the K-quant VNNI bodies share (x86/avx512_quants_k.c: one input; x86/avx512_quants_k_batch.c: several): the target attribute
// and the lane arithmetic that keeps their float order llama.cpp's. x86-64 only.
#include <immintrin.h>
#include "kernels_internal.h"
#include <stdint.h>
#include <string.h>

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,f16c,fma")))

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

// ggml's hsum_float_8.
VNNI static inline float hsum8v(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The 8 llama lanes of a zmm of 16 int32 lanes, each a 4-element sum of one of two 32-element chunks.
VNNI static inline __m256i fold16(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

#endif
