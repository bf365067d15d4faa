// AVX2 bodies of the flash-paging bundle kernels (bundles.h), run by the AVX2 tier and by AVX-512 without VNNI (whose
// dense Q8_0 kernel is the AVX2 one). Each output is bit-identical to x86/quant_rows_body.h's Q8_0 row: per block 8
// int32 lanes of 4 elements (|w| against x with w's sign, vpmaddubsw + vpmaddwd: exact), acc_l = fma(d_w·d_x, S_l,
// acc_l) in block order, hsum_float_8 + 0.0f.
#include "bundles.h"
#include "kernels_internal.h"
#if defined(__x86_64__)
#include "x86/avx2_common.h"
#define AVX2 PL_AVX2_ATTR

AVX2 static inline float f16(const uint8_t *p) { return _cvtsh_ss(pl_bundle_ld16(p)); }

// The 8 lane sums of 32 signed bytes a against 32 signed bytes c.
AVX2 static inline __m256i lanes(__m256i a, __m256i c) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(c, a)), _mm256_set1_epi16(1));
}

// R rows (pointers at their first block) against one input: out[i] as the dense row kernel gives it.
AVX2 static inline __attribute__((always_inline)) void rows_dot(const int R, const uint8_t *const *w,
        const uint8_t *xq, int64_t nb, float *out) {
    __m256 acc[4];
    PL_UNROLL
    for (int i = 0; i < R; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *xb = xq + b * 34;
        const __m256i c = _mm256_loadu_si256((const __m256i *)(xb + 2));
        const float dx = f16(xb);
        PL_UNROLL
        for (int i = 0; i < R; i++) {
            const uint8_t *wb = w[i] + b * 34;
            __m256i s = lanes(_mm256_loadu_si256((const __m256i *)(wb + 2)), c);
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(f16(wb) * dx), _mm256_cvtepi32_ps(s), acc[i]);
        }
    }
    PL_UNROLL
    for (int i = 0; i < R; i++) out[i] = pl_avx2_hsum8(acc[i]) + 0.0f;
}

// Two bundles (four rows: four independent chains) at a time against each input in turn, while they are in L1.
AVX2 void pl_avx2_bundle_gate_up(const void *const *bundles, int64_t k0, int64_t k1, const uint8_t *xq,
                                 size_t xq_stride, int64_t n_tokens, int64_t nb, float *g, float *u, int64_t ldg) {
    const size_t rb = (size_t)nb * 34;
    int64_t k = k0;
    for (; k + 2 <= k1; k += 2) {
        const uint8_t *b0 = (const uint8_t *)bundles[k], *b1 = (const uint8_t *)bundles[k + 1];
        const uint8_t *w[4] = {b0, b0 + rb, b1, b1 + rb};
        for (int64_t t = 0; t < n_tokens; t++) {
            float out[4];
            rows_dot(4, w, xq + (size_t)t * xq_stride, nb, out);
            g[t * ldg + k] = out[0]; u[t * ldg + k] = out[1];
            g[t * ldg + k + 1] = out[2]; u[t * ldg + k + 1] = out[3];
        }
    }
    if (k < k1) {
        const uint8_t *b0 = (const uint8_t *)bundles[k];
        const uint8_t *w[2] = {b0, b0 + rb};
        for (int64_t t = 0; t < n_tokens; t++) {
            float out[2];
            rows_dot(2, w, xq + (size_t)t * xq_stride, nb, out);
            g[t * ldg + k] = out[0]; u[t * ldg + k] = out[1];
        }
    }
}

// Down (bundle_down_body.h): the 4 columns of a lane interleaved to one dword per row ([c0 c1 c2 c3]; byte unpacks
// keep the row order) give S_l of 8 rows per vpmaddubsw/vpmaddwd against h's 4 quants.
AVX2 static inline float bd_scale(uint16_t d, float dh) { return _cvtsh_ss(d) * dh; }

AVX2 static inline void bd_lane8(float *fa, const float *sc, const int8_t *const *p, const int8_t h[4], int64_t r) {
    __m128i c0 = _mm_loadl_epi64((const __m128i *)(p[0] + r)), c1 = _mm_loadl_epi64((const __m128i *)(p[1] + r));
    __m128i c2 = _mm_loadl_epi64((const __m128i *)(p[2] + r)), c3 = _mm_loadl_epi64((const __m128i *)(p[3] + r));
    __m128i a01 = _mm_unpacklo_epi8(c0, c1), a23 = _mm_unpacklo_epi8(c2, c3);
    int32_t hw;
    memcpy(&hw, h, 4);
    __m256i s = lanes(_mm256_set_m128i(_mm_unpackhi_epi16(a01, a23), _mm_unpacklo_epi16(a01, a23)), _mm256_set1_epi32(hw));
    _mm256_store_ps(fa, _mm256_fmadd_ps(_mm256_load_ps(sc), _mm256_cvtepi32_ps(s), _mm256_load_ps(fa)));
}

AVX2 static inline void bd_reduce8(float (*facc)[128], int64_t i, float o[8]) {
    __m256 a04 = _mm256_add_ps(_mm256_load_ps(facc[0] + i), _mm256_load_ps(facc[4] + i));
    __m256 a26 = _mm256_add_ps(_mm256_load_ps(facc[2] + i), _mm256_load_ps(facc[6] + i));
    __m256 a15 = _mm256_add_ps(_mm256_load_ps(facc[1] + i), _mm256_load_ps(facc[5] + i));
    __m256 a37 = _mm256_add_ps(_mm256_load_ps(facc[3] + i), _mm256_load_ps(facc[7] + i));
    _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a04, a26), _mm256_add_ps(a15, a37)), _mm256_setzero_ps()));
}

#define BD_ATTR AVX2
#define BD_FUNC pl_avx2_bundle_down
#include "bundle_down_body.h"

// Block rows' down projection from the groups' slices (x86/bundle_groups_body.h), with the dense row kernel's bits on
// this tier: vpmaddubsw + vpmaddwd by 1 (exact here, as in x86/avx2_quant.c's rows), or AVX-VNNI's vpdpbusd where the
// CPU has it (the rows' choice too; the same integers either way).
#define BG_ATTR AVX2
#define BG_NAME(f) pl_avx2_##f
#define BG_DPBUSD(acc, a, b) pl_avx2_dpbusd(acc, a, b)
#include "x86/bundle_groups_body.h"
#undef BG_ATTR
#undef BG_NAME
#undef BG_DPBUSD
#define BG_ATTR __attribute__((target("avx2,fma,f16c,avxvnni")))
#define BG_NAME(f) pl_avxvnni_##f
#define BG_DPBUSD(acc, a, b) _mm256_dpbusd_avx_epi32(acc, a, b)
#include "x86/bundle_groups_body.h"
#undef BG_ATTR
#undef BG_NAME
#undef BG_DPBUSD
#endif
