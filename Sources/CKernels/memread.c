// Reading memory as fast as the core can, to measure the bandwidth that bounds decode (every weight is read once
// per token): benchmarks print a model's decode speed next to bytes-per-token ÷ this figure.
#include "ckernels.h"
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx512f")))
static uint64_t read_avx512(const uint8_t *p, size_t bytes) {
    // Four independent streams of 64-byte loads keep several cache-line requests in flight, as the matvec kernels do.
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 256 <= bytes; i += 256) {
        a = _mm512_xor_si512(a, _mm512_loadu_si512((const void *)(p + i)));
        b = _mm512_xor_si512(b, _mm512_loadu_si512((const void *)(p + i + 64)));
        c = _mm512_xor_si512(c, _mm512_loadu_si512((const void *)(p + i + 128)));
        d = _mm512_xor_si512(d, _mm512_loadu_si512((const void *)(p + i + 192)));
    }
    __m512i x = _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d));
    uint64_t lanes[8];
    _mm512_storeu_si512((void *)lanes, x);
    uint64_t s = 0;
    for (int j = 0; j < 8; j++) s ^= lanes[j];
    for (; i < bytes; i++) s ^= p[i];
    return s;
}

__attribute__((target("avx2")))
static uint64_t read_avx2(const uint8_t *p, size_t bytes) {
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 128 <= bytes; i += 128) {
        a = _mm256_xor_si256(a, _mm256_loadu_si256((const __m256i *)(p + i)));
        b = _mm256_xor_si256(b, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        c = _mm256_xor_si256(c, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        d = _mm256_xor_si256(d, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    __m256i x = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, x);
    uint64_t s = lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3];
    for (; i < bytes; i++) s ^= p[i];
    return s;
}

__attribute__((target("avx512f")))
static uint64_t read_streams_avx512(const uint8_t *p, size_t part, int streams) {
    __m512i acc[4][4];
    for (int k = 0; k < 4; k++) for (int j = 0; j < 4; j++) acc[k][j] = _mm512_setzero_si512();
    for (size_t i = 0; i < part; i += 256)
        for (int k = 0; k < streams; k++)
            for (int j = 0; j < 4; j++)
                acc[k][j] = _mm512_xor_si512(acc[k][j], _mm512_loadu_si512((const void *)(p + (size_t)k * part + i + 64 * j)));
    __m512i x = _mm512_setzero_si512();
    for (int k = 0; k < 4; k++) for (int j = 0; j < 4; j++) x = _mm512_xor_si512(x, acc[k][j]);
    uint64_t lanes[8];
    _mm512_storeu_si512((void *)lanes, x);
    uint64_t s = 0;
    for (int j = 0; j < 8; j++) s ^= lanes[j];
    return s;
}
#endif

uint64_t pl_read_memory(const void *buf, size_t bytes) {
    const uint8_t *p = (const uint8_t *)buf;
#if defined(__x86_64__)
    if (pl_has_avx512()) return read_avx512(p, bytes);
    if (pl_isa() == PL_ISA_AVX2) return read_avx2(p, bytes);
#endif
    uint64_t s = 0, v;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) { memcpy(&v, p + i, 8); s ^= v; }
    for (; i < bytes; i++) s ^= p[i];
    return s;
}

// The same read as `streams` (1–4) contiguous parts advanced in lockstep, 256 bytes of each per step: the packed
// decode kernels read three row groups at once, and several hardware prefetch streams can draw more from memory than
// one does, so a bound measured with one stream per thread can sit below what those kernels reach.
uint64_t pl_read_memory_streams(const void *buf, size_t bytes, int streams) {
    const uint8_t *p = (const uint8_t *)buf;
    if (streams < 2) return pl_read_memory(p, bytes);
    if (streams > 4) streams = 4;
    size_t part = bytes / (size_t)streams / 256 * 256;
    uint64_t s = 0;
#if defined(__x86_64__)
    if (pl_has_avx512() && part > 0) s = read_streams_avx512(p, part, streams);
    else
#endif
    for (int k = 0; k < streams; k++) s ^= pl_read_memory(p + (size_t)k * part, part);
    // What the equal parts leave over.
    return s ^ pl_read_memory(p + (size_t)streams * part, bytes - (size_t)streams * part);
}
