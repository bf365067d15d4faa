#ifndef POCKETLM_QUANTS_K_X86_H
#define POCKETLM_QUANTS_K_X86_H
// What the K-quant VNNI bodies share (x86/avx512_quants_k.c: one input; x86/avx512_quants_k_batch.c: several): the target attribute
// and the lane arithmetic that keeps their float order llama.cpp's. x86-64 only.
#include <immintrin.h>
#include "kernels_internal.h"
#include "x86/avx2_common.h"
#include <stdint.h>
#include <string.h>

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,f16c,fma")))

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

// The 8 llama lanes of a zmm of 16 int32 lanes, each a 4-element sum of one of two 32-element chunks.
VNNI static inline __m256i fold16(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

#endif
