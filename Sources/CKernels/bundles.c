// Sparse SwiGLU FFN over row-column bundles (the flash-paging layout; see ckernels.h): the layout (bundle bytes,
// packing, the resident down scales) and the entry points, each running the body of the calling thread's ISA tier
// (bundles.h): AVX-512 VNNI, AVX2 (which AVX-512 without VNNI also runs, as the dense Q8_0 kernel does), NEON, or
// portable — always the tier whose dense Q8_0 kernel pl_matmul_q runs, so outputs are bit-identical to it.
#include "bundles.h"
#include "kernels_internal.h"
#include "quants_k.h"

size_t pl_bundle_bytes_q8_0(int64_t dim) { return (size_t)(2 * (dim / 32) * 34 + dim); }

void pl_bundle_pack_q8_0(const void *gate, const void *up, const void *down, int64_t dim, int64_t ffn, int64_t i,
                         void *bundle) {
    const size_t rb = (size_t)(dim / 32) * 34;       // gate/up row bytes
    const size_t drb = (size_t)(ffn / 32) * 34;      // down row bytes
    uint8_t *o = (uint8_t *)bundle;
    memcpy(o, (const uint8_t *)gate + (size_t)i * rb, rb);
    memcpy(o + rb, (const uint8_t *)up + (size_t)i * rb, rb);
    const uint8_t *d = (const uint8_t *)down + (size_t)(i / 32) * 34 + 2 + (size_t)(i % 32);
    uint8_t *col = o + 2 * rb;
    for (int64_t r = 0; r < dim; r++) col[r] = d[(size_t)r * drb];
}

void pl_bundle_down_scales_q8_0(const void *down, int64_t dim, int64_t ffn, uint16_t *down_scale) {
    const int64_t nb = ffn / 32;
    const uint8_t *p = (const uint8_t *)down;
    for (int64_t r = 0; r < dim; r++)
        for (int64_t b = 0; b < nb; b++) down_scale[r * nb + b] = pl_bundle_ld16(p + (size_t)(r * nb + b) * 34);
}

void pl_bundle_gate_up_q8_0(const void *const *bundles, int64_t k0, int64_t k1, const void *xq, int64_t dim,
                            float *g, float *u) {
    if (k1 <= k0) return;
    const uint8_t *x = (const uint8_t *)xq;
#if defined(__x86_64__)
    if (pl_tier_avx512_vnni()) { pl_avx512_bundle_gate_up(bundles, k0, k1, x, dim / 32, g, u); return; }
    if (pl_tier_avx2() || pl_tier_avx512()) { pl_avx2_bundle_gate_up(bundles, k0, k1, x, 0, 1, dim / 32, g, u, 0); return; }
#elif defined(__aarch64__)
    if (pl_tier_neon()) { pl_neon_bundle_gate_up(bundles, k0, k1, x, 0, 1, dim / 32, g, u, 0); return; }
#endif
    pl_portable_bundle_gate_up(bundles, k0, k1, x, 0, 1, dim / 32, g, u, 0);
}

void pl_bundle_gate_up_batch_q8_0(const void *const *bundles, int64_t k0, int64_t k1, const void *xq, size_t xq_stride,
                                  int64_t n_tokens, int64_t dim, float *g, float *u, int64_t ldg) {
    if (k1 <= k0 || n_tokens <= 0) return;
    const uint8_t *x = (const uint8_t *)xq;
#if defined(__x86_64__)
    if (pl_tier_avx512_vnni()) { pl_avx512_bundle_gate_up_batch(bundles, k0, k1, x, xq_stride, n_tokens, dim / 32, g, u, ldg); return; }
    if (pl_tier_avx2() || pl_tier_avx512()) { pl_avx2_bundle_gate_up(bundles, k0, k1, x, xq_stride, n_tokens, dim / 32, g, u, ldg); return; }
#elif defined(__aarch64__)
    if (pl_tier_neon()) { pl_neon_bundle_gate_up(bundles, k0, k1, x, xq_stride, n_tokens, dim / 32, g, u, ldg); return; }
#endif
    pl_portable_bundle_gate_up(bundles, k0, k1, x, xq_stride, n_tokens, dim / 32, g, u, ldg);
}

void pl_bundle_down_q8_0(const void *const *bundles, const int32_t *ids, int64_t n, const void *hq,
                         const uint16_t *down_scale, int64_t dim, int64_t ffn, int32_t *acc, float *out,
                         int64_t r0, int64_t r1) {
    if (r1 <= r0) return;
    const uint8_t *h = (const uint8_t *)hq;
#if defined(__x86_64__)
    if (pl_tier_avx512_vnni()) { pl_avx512_bundle_down(bundles, ids, n, h, down_scale, dim, ffn, acc, out, r0, r1); return; }
    if (pl_tier_avx2() || pl_tier_avx512()) { pl_avx2_bundle_down(bundles, ids, n, h, down_scale, dim, ffn, acc, out, r0, r1); return; }
#elif defined(__aarch64__)
    if (pl_tier_neon()) { pl_neon_bundle_down(bundles, ids, n, h, down_scale, dim, ffn, acc, out, r0, r1); return; }
#endif
    pl_portable_bundle_down(bundles, ids, n, h, down_scale, dim, ffn, acc, out, r0, r1);
}

int pl_bundle_down_groups_runs(int type) {
#if defined(__x86_64__)
    if (type == PL_TYPE_Q4_K || type == PL_TYPE_Q6_K) return pl_kq_fast();
    // The dense kernel these must equal (pl_matmul_q) is x86/quant_rows_body.h's row body on both vector tiers (VNNI
    // on AVX-512 VNNI, AVX2's or AVX-VNNI's elsewhere: the same bits).
    const int tier = pl_isa();
    return (type == PL_TYPE_Q4_0 || type == PL_TYPE_Q4_1 || type == PL_TYPE_Q8_0) &&
           (tier == PL_ISA_AVX512 || tier == PL_ISA_AVX2);
#else
    (void)type;
    return 0;
#endif
}

int pl_bundle_down_groups(int type, const void *const *groups, int64_t blocks_per_group, size_t slice_bytes,
                          const void *xq, float *y, int64_t n, int64_t r0, int64_t r1) {
    if (!pl_bundle_down_groups_runs(type) || blocks_per_group < 1) return 0;
#if defined(__x86_64__)
    if (type == PL_TYPE_Q4_K || type == PL_TYPE_Q6_K)
        pl_kq_matmul_groups_vnni(type, (const uint8_t *const *)groups, blocks_per_group, slice_bytes, (const uint8_t *)xq,
                                 y, n, r0, r1);
    else if (pl_tier_avx512_vnni())
        pl_avx512_bundle_down_groups(type, (const uint8_t *const *)groups, blocks_per_group, slice_bytes,
                                     (const uint8_t *)xq, y, n / 32, r0, r1);
    else if (pl_isa_features() & PL_FEATURE_AVX_VNNI)
        pl_avxvnni_bundle_down_groups(type, (const uint8_t *const *)groups, blocks_per_group, slice_bytes,
                                      (const uint8_t *)xq, y, n / 32, r0, r1);
    else
        pl_avx2_bundle_down_groups(type, (const uint8_t *const *)groups, blocks_per_group, slice_bytes,
                                   (const uint8_t *)xq, y, n / 32, r0, r1);
#endif
    return 1;
}
