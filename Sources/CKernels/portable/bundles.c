// Portable bodies of the flash-paging bundle kernels (bundles.h): the float steps of portable/quant.c's Q8_0 dot
// product — per block the whole integer sum s, sum += (float)s · (d_w · d_x) in block order.
// Never call these from a function with a target attribute: inlined there, `sum += a * b` could become an fma.
#include "bundles.h"
#include "kernels_internal.h"

#pragma STDC FP_CONTRACT OFF

static float dot_q8_0(const uint8_t *w, const uint8_t *xq, int64_t nb) {
    float sum = 0.0f;
    for (int64_t b = 0; b < nb; b++, w += 34, xq += 34) {
        const int8_t *a = (const int8_t *)(w + 2), *c = (const int8_t *)(xq + 2);
        int s = 0;
        for (int j = 0; j < 32; j++) s += a[j] * c[j];
        sum += (float)s * (pl_f16_to_f32(pl_bundle_ld16(w)) * pl_f16_to_f32(pl_bundle_ld16(xq)));
    }
    return sum;
}

// Each bundle's two rows against every input while they are in L1 (pl_matmul_q's order).
void pl_portable_bundle_gate_up(const void *const *bundles, int64_t k0, int64_t k1, const uint8_t *xq,
                                size_t xq_stride, int64_t n_tokens, int64_t nb, float *g, float *u, int64_t ldg) {
    const size_t rb = (size_t)nb * 34;
    for (int64_t k = k0; k < k1; k++) {
        const uint8_t *bp = (const uint8_t *)bundles[k];
        for (int64_t t = 0; t < n_tokens; t++) {
            const uint8_t *x = xq + (size_t)t * xq_stride;
            g[t * ldg + k] = dot_q8_0(bp, x, nb);
            u[t * ldg + k] = dot_q8_0(bp + rb, x, nb);
        }
    }
}

void pl_bundle_build_map(int32_t *map, int64_t c0, int64_t c1, const int32_t *ids, int64_t n) {
    for (int64_t i = 0; i < c1 - c0; i++) map[i] = -1;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = ids[k];
        if (i >= c0 && i < c1) map[i - c0] = (int32_t)k;
    }
}

// Block sums acc[b·rows + (r − r0)] = Σ_{listed i in block b} q_down[r][i]·q_h[i] (exact int32), then the portable
// float combination per row.
void pl_portable_bundle_down(const void *const *bundles, const int32_t *ids, int64_t n, const uint8_t *hq,
                             const uint16_t *down_scale, int64_t dim, int64_t ffn, int32_t *acc, float *out,
                             int64_t r0, int64_t r1) {
    const int64_t nb = ffn / 32, rows = r1 - r0;
    const size_t col_off = (size_t)(dim / 32) * 34 * 2;
    memset(acc, 0, (size_t)(nb * rows) * sizeof(int32_t));
    for (int64_t k = 0; k < n; k++) {
        const int64_t i = ids[k];
        const int32_t q = ((const int8_t *)hq)[(i / 32) * 34 + 2 + i % 32];
        if (q == 0) continue;
        const int8_t *col = (const int8_t *)bundles[k] + col_off + r0;
        int32_t *a = acc + (i / 32) * rows;
        for (int64_t t = 0; t < rows; t++) a[t] += (int32_t)col[t] * q;
    }
    // Blocks in chunks whose h scales are converted once; each row's running sum waits in out between chunks.
    float dh[64];
    for (int64_t b0 = 0; b0 < nb; b0 += 64) {
        const int64_t bn = nb - b0 < 64 ? nb - b0 : 64;
        for (int64_t j = 0; j < bn; j++) dh[j] = pl_f16_to_f32(pl_bundle_ld16(hq + (b0 + j) * 34));
        for (int64_t r = r0; r < r1; r++) {
            const uint16_t *ds = down_scale + r * nb + b0;
            const int32_t *a = acc + b0 * rows + (r - r0);
            float sum = b0 == 0 ? 0.0f : out[r - r0];
            for (int64_t j = 0; j < bn; j++) sum += (float)a[j * rows] * (pl_f16_to_f32(ds[j]) * dh[j]);
            out[r - r0] = sum;
        }
    }
}
