#ifndef POCKETLM_AVX2_COMMON_H
#define POCKETLM_AVX2_COMMON_H
// Helpers shared by the AVX2 bodies (row and batch kernels, every 256-bit tier that includes them).
#include "kernels_internal.h"
#include <immintrin.h>

#define PL_AVX2_ATTR __attribute__((target("avx2,fma,f16c")))

/// ggml's hsum_float_8: (lanes 0–3 + lanes 4–7), then pairs, then the two halves (float addition commutes, so the
/// operand order of the first add does not matter). Every 256-bit tier's row sums end here.
PL_AVX2_ATTR static inline float pl_avx2_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// acc + the 4-byte dot products of u8 a × s8 b per int32 lane, as vpdpbusd gives them: vpmaddubsw then vpmaddwd by 1,
/// exact wherever no pair sum leaves int16 (the row kernels' |a| ≤ 128, |b| ≤ 127).
PL_AVX2_ATTR static inline __m256i pl_avx2_dpbusd(__m256i acc, __m256i a, __m256i b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
}

/// The 4 bytes at p in every dword by vbroadcastss from memory: a load alone, where a broadcast from a register
/// takes a shuffle pipe. Written as asm because clang turns _mm256_broadcast_ss feeding integer instructions, or a
/// broadcast of a value it still holds in a register, into an instruction that does.
PL_AVX2_ATTR static inline __m256i pl_avx2_broadcast32(const void *p) {
    __m256 v;
    __asm__("vbroadcastss %1, %0" : "=x"(v) : "m"(*(const float *)p));
    return _mm256_castps_si256(v);
}

/// pl_avx2_bytes_from_bits of the 32-bit word at p, its broadcast a load: byte j of the word's copy moved to byte
/// j/8 (vpshufb), bit j%8 kept, compared with itself: one constant fewer than ggml's or-then-compare-with-ones.
PL_AVX2_ATTR static inline __m256i pl_avx2_bytes_from_bits_at(const uint8_t *p) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
    return _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(pl_avx2_broadcast32(p), shuf), bit), bit);
}

/// Step k of half h (rows 8h..8h+7) of a packed Q5_0 block at gb (packed.c's layout): lane k (low nibbles) and lane
/// 4+k (high nibbles) of the 8 rows as unsigned 5-bit quants (0..31), the 5th bits from the step's masks.
PL_AVX2_ATTR static inline __attribute__((always_inline)) void pl_avx2_packed_q5_0_step(const uint8_t *gb, int k, int h,
                                                                                       __m256i *lo, __m256i *hi) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), sixteen = _mm256_set1_epi8(16);
    const __m256i v = _mm256_loadu_si256((const __m256i *)(gb + 64 * k + 32 * h));
    const __m256i l = _mm256_and_si256(v, low4), u = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    *lo = _mm256_or_si256(l, _mm256_and_si256(pl_avx2_bytes_from_bits_at(gb + 256 + 16 * k + 4 * h), sixteen));
    *hi = _mm256_or_si256(u, _mm256_and_si256(pl_avx2_bytes_from_bits_at(gb + 256 + 16 * k + 8 + 4 * h), sixteen));
}

/// Byte j = 0xff where bit j of the 32-bit word is set (ggml's bytes_from_bits_32).
PL_AVX2_ATTR static inline __m256i pl_avx2_bytes_from_bits(uint32_t bits) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/// 8×8 transpose of dwords: dword l of e[i] to dword i of out[l] (eight rows' 4-byte lanes to one register per
/// lane, the batch kernels' lane-major scratch).
PL_AVX2_ATTR static inline __attribute__((always_inline)) void pl_avx2_transpose8_epi32(const __m256i e[8], __m256i out[8]) {
    __m256i t[8], u[8];
    PL_UNROLL
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(e[i], e[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(e[i], e[i + 1]);
    }
    PL_UNROLL
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    PL_UNROLL
    for (int l = 0; l < 4; l++) {
        out[l] = _mm256_permute2x128_si256(u[l], u[l + 4], 0x20);
        out[l + 4] = _mm256_permute2x128_si256(u[l], u[l + 4], 0x31);
    }
}
/// Several Q8_0 inputs against rows r0 ..< r1 of a Q8_0 matrix (x86/avx2_q8_batch.c): the AVX2 batch kernels' Q8_0
/// body from PL_AVX2_Q8_BLOCK_ORDER_MIN inputs on (ckernels.h), each output bit-identical to the portable body's
/// (pl_portable_matmul_q).
void pl_avx2_matmul_batch_q8_0(const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                               int64_t n_tokens, float *y, int64_t ldy, int64_t nb, int64_t r0, int64_t r1);
#endif
