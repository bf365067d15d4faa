// The kernel driver's comparisons of the flash-paging bundle kernels (see driver.c).
#include "driver.h"
#include "bundles.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// The flash-paging bundle kernels (bundles.c and its tier bodies) on each tier: gate/up bit for bit the same tier's
// pl_matvec_q on the gate and up rows; the batched gate/up (1, 3, 9 inputs) bit for bit the single-input kernel per
// input; the down projection over a subset of neurons (h zero elsewhere; every neuron; none) bit for bit the tier's
// pl_matvec_q on the down rows, for uneven row ranges (short ones keep the neuron map on the stack, odd tails).
// On a vector tier the outputs must also differ somewhere from the portable bodies' (another float order): the
// tier's own body ran, not the portable one.
static void test_bundle_down_groups(int tier, const char *name);

void test_bundles(int tier, const char *name) {
    static const int shapes[][2] = {{96, 160}, {64, 1536}, {576, 96}, {40 * 32, 64}};
    const QType *q8 = &qtypes[0];
    int gate_differs = 0, down_differs = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int dim = shapes[s][0], ffn = shapes[s][1];
        const size_t rb = (size_t)(dim / 32) * 34, drb = (size_t)(ffn / 32) * 34, bb = pl_bundle_bytes_q8_0(dim);
        uint8_t *gate = malloc(rb * ffn), *up = malloc(rb * ffn), *down = malloc(drb * dim), *arena = malloc(bb * ffn);
        uint16_t *dscale = malloc((size_t)dim * (ffn / 32) * 2);
        random_weights(q8, gate, (int64_t)ffn * dim / 32);
        random_weights(q8, up, (int64_t)ffn * dim / 32);
        random_weights(q8, down, (int64_t)ffn * dim / 32);
        for (int i = 0; i < ffn; i++) pl_bundle_pack_q8_0(gate, up, down, dim, ffn, i, arena + bb * i);
        pl_bundle_down_scales_q8_0(down, dim, ffn, dscale);
        int *order = malloc(ffn * sizeof(int));
        for (int i = 0; i < ffn; i++) order[i] = i;
        for (int i = ffn - 1; i > 0; i--) { int j = (int)(next_u64() % (uint64_t)(i + 1)), t = order[i]; order[i] = order[j]; order[j] = t; }
        const void **bundles = malloc(ffn * sizeof(void *));
        for (int k = 0; k < ffn; k++) bundles[k] = arena + bb * order[k];
        // gate/up
        enum { T = 9 };
        uint8_t *xq = random_quantized_inputs(PL_TYPE_Q8_0, dim, T, tier);
        float *wg = malloc((size_t)ffn * 4), *wu = malloc((size_t)ffn * 4), *g = malloc((size_t)T * ffn * 4),
              *u = malloc((size_t)T * ffn * 4), *pg = malloc((size_t)ffn * 4), *pu = malloc((size_t)ffn * 4);
        pl_isa_force_thread(tier);
        pl_matvec_q(PL_TYPE_Q8_0, gate, rb, xq, wg, dim, 0, ffn);
        pl_matvec_q(PL_TYPE_Q8_0, up, rb, xq, wu, dim, 0, ffn);
        static const int kr[][2] = {{0, -1}, {3, -3}, {5, 6}, {1, 4}};
        int ok = 1;
        for (int r = 0; r < 4; r++) {
            int k0 = kr[r][0], k1 = kr[r][1] < 0 ? ffn + kr[r][1] + 1 : kr[r][1];
            for (int k = 0; k < ffn; k++) g[k] = u[k] = NAN;
            pl_bundle_gate_up_q8_0(bundles, k0, k1, xq, dim, g, u);
            for (int k = 0; k < ffn; k++) {
                int in = k >= k0 && k < k1;
                if (in && (memcmp(g + k, wg + order[k], 4) || memcmp(u + k, wu + order[k], 4))) ok = 0;
                if (!in && !(isnan(g[k]) && isnan(u[k]))) ok = 0;
            }
        }
        check(ok, name, "bundle gate/up = the tier's pl_matvec_q (dim, ffn)", dim, ffn, 0);
        pl_bundle_gate_up_q8_0(bundles, 0, ffn, xq, dim, g, u);
        pl_isa_force_thread(PL_ISA_PORTABLE);
        pl_bundle_gate_up_q8_0(bundles, 0, ffn, xq, dim, pg, pu);
        pl_isa_force_thread(tier);
        if (!bits_equal(g, pg, ffn) || !bits_equal(u, pu, ffn)) gate_differs = 1;
        static const int counts[] = {1, 3, 9};
        for (int c = 0; c < 3; c++) {
            const int nt = counts[c], k0 = 1, k1 = ffn - 2;
            for (int i = 0; i < nt * ffn; i++) g[i] = u[i] = NAN;
            pl_bundle_gate_up_batch_q8_0(bundles, k0, k1, xq, (size_t)rb, nt, dim, g, u, ffn);
            int bok = 1;
            for (int t = 0; t < nt; t++) {
                pl_bundle_gate_up_q8_0(bundles, k0, k1, xq + (size_t)t * rb, dim, wg, wu);
                for (int k = 0; k < ffn; k++) {
                    int in = k >= k0 && k < k1;
                    if (in && (memcmp(g + t * ffn + k, wg + k, 4) || memcmp(u + t * ffn + k, wu + k, 4))) bok = 0;
                    if (!in && !(isnan(g[t * ffn + k]) && isnan(u[t * ffn + k]))) bok = 0;
                }
            }
            check(bok, name, "bundle gate/up batch = single input per input (dim, ffn, inputs)", dim, ffn, nt);
        }
        // down
        float *h = malloc((size_t)ffn * 4), *want = malloc((size_t)dim * 4), *got = malloc((size_t)(dim + 1) * 4), *pd = malloc((size_t)dim * 4);
        uint8_t *hq = malloc((size_t)ffn / 32 * 34);
        int32_t *ids = malloc(ffn * sizeof(int32_t));
        const void **listed = malloc(ffn * sizeof(void *));
        int32_t *acc = malloc((size_t)(ffn / 32) * dim * 4 + 64);
        for (int pat = 0; pat < 3; pat++) {   // 30 % of the neurons, all of them, none
            int n = 0;
            for (int k = 0; k < ffn; k++) {
                int i = order[k];
                int take = pat == 1 || (pat == 0 && unit() < 0.3f);
                h[i] = take ? (unit() * 2 - 1) * (unit() < 0.1f ? 8.0f : 1.0f) : 0.0f;
                if (take) { ids[n] = i; listed[n] = arena + bb * i; n++; }
            }
            pl_quantize_q8_0(h, hq, ffn);
            pl_matvec_q(PL_TYPE_Q8_0, down, drb, hq, want, ffn, 0, dim);
            static const int rr[][2] = {{0, -1}, {5, 37}, {-3, -1}, {1, -2}};
            int dok = 1;
            for (int r = 0; r < 4; r++) {
                int r0 = rr[r][0] < 0 ? dim + rr[r][0] + 1 : rr[r][0], r1 = rr[r][1] < 0 ? dim + rr[r][1] + 1 : rr[r][1];
                got[r1 - r0] = -12345.0f;
                pl_bundle_down_q8_0((const void *const *)listed, ids, n, hq, dscale, dim, ffn, acc, got, r0, r1);
                if (!bits_equal(got, want + r0, r1 - r0) || got[r1 - r0] != -12345.0f) dok = 0;
            }
            check(dok, name, "bundle down = the tier's pl_matvec_q (dim, ffn, pattern)", dim, ffn, pat);
            if (pat == 1 && tier != PL_ISA_PORTABLE) {
                pl_isa_force_thread(PL_ISA_PORTABLE);
                pl_bundle_down_q8_0((const void *const *)listed, ids, n, hq, dscale, dim, ffn, acc, pd, 0, dim);
                pl_isa_force_thread(tier);
                if (!bits_equal(pd, want, dim)) down_differs = 1;
            }
        }
        free(h); free(want); free(got); free(pd); free(hq); free(ids); free(listed); free(acc);
        free(xq); free(wg); free(wu); free(g); free(u); free(pg); free(pu);
        free(gate); free(up); free(down); free(arena); free(dscale); free(order); free(bundles);
    }
    if (tier != PL_ISA_PORTABLE) {
        check(gate_differs, name, "bundle gate/up: the tier's body ran (outputs differ somewhere from portable)", 0, 0, 0);
        check(down_differs, name, "bundle down: the tier's body ran (outputs differ somewhere from portable)", 0, 0, 0);
    }
    test_bundle_down_groups(tier, name);
    pl_isa_force_thread(-1);
}

// Block rows' down projection from the groups' slices (pl_bundle_down_groups), Q4_0/Q4_1/Q8_0: on the x86 vector tiers
// it runs (returns 1) and gives row for row the bits of the same tier's pl_matmul_q on the reassembled matrix, for any
// row split, writing nothing outside its rows; the groups' buffers lie in reverse order and one group's entry points
// at another's slices. On AVX2 both bodies are compared (vpmaddubsw, and AVX-VNNI's where the CPU has it: the
// dispatcher takes only one of them). Elsewhere it returns 0 and writes nothing.
static void test_bundle_down_groups(int tier, const char *name) {
    const QType *types[] = {&qtypes[1], &qtypes[2], &qtypes[0]};
    for (int ti = 0; ti < 3; ti++) {
        for (int spg = 1; spg <= 3; spg += 2) {
            const QType *t = types[ti];
            const int rows = 70, blocks = 4 * spg, cols = 32 * blocks, rb = blocks * t->bytes, slice = spg * t->bytes;
            const int act = pl_activation_type(t->type), groups = blocks / spg;
            uint8_t *w = malloc((size_t)rows * rb), *arena = malloc((size_t)rows * rb);
            random_weights(t, w, (int64_t)rows * blocks);
            uint8_t *xq = random_quantized_inputs(act, cols, 1, tier);
            float want[70], got[71];
            pl_matmul_q(t->type, w, rb, xq, 0, 1, want, rows, cols, 0, rows);
            const void *table[12];
            for (int g = 0; g < groups; g++) {
                uint8_t *base = arena + (size_t)(groups - 1 - g) * rows * slice;
                for (int r = 0; r < rows; r++) memcpy(base + (size_t)r * slice, w + (size_t)r * rb + (size_t)g * slice, slice);
                table[g] = base;
            }
            const int vector_tier = tier == PL_ISA_AVX2 || tier == PL_ISA_AVX512;
            check(pl_bundle_down_groups_runs(t->type) == vector_tier, name, "bundle down groups runs on the x86 vector tiers (type, blocks per group)", t->type, spg, 0);
            static const int splits[][2] = {{0, 70}, {0, 33}, {33, 70}, {5, 6}, {64, 70}};
            int ok = 1;
            for (int s = 0; s < 5; s++) {
                const int r0 = splits[s][0], r1 = splits[s][1];
                for (int r = 0; r <= rows; r++) got[r] = NAN;
                const int ran = pl_bundle_down_groups(t->type, table, spg, slice, xq, got, cols, r0, r1);
                if (ran != vector_tier) ok = 0;
                for (int r = 0; r <= rows; r++) {
                    const int in = ran && r >= r0 && r < r1;
                    if (in ? memcmp(got + r, want + r, 4) != 0 : !isnan(got[r])) ok = 0;
                }
            }
            check(ok, name, "bundle down groups = the tier's pl_matmul_q on the reassembled rows (type, blocks per group)", t->type, spg, 0);
#if defined(__x86_64__)
            if (tier == PL_ISA_AVX2) {
                // Both AVX2 bodies, whichever the dispatcher takes on this CPU.
                for (int r = 0; r < rows; r++) got[r] = NAN;
                pl_avx2_bundle_down_groups(t->type, (const uint8_t *const *)table, spg, slice, xq, got, blocks, 0, rows);
                check(bits_equal(got, want, rows), name, "bundle down groups, vpmaddubsw body = pl_matmul_q (type, blocks per group)", t->type, spg, 0);
                if (pl_isa_features() & PL_FEATURE_AVX_VNNI) {
                    for (int r = 0; r < rows; r++) got[r] = NAN;
                    pl_avxvnni_bundle_down_groups(t->type, (const uint8_t *const *)table, spg, slice, xq, got, blocks, 0, rows);
                    check(bits_equal(got, want, rows), name, "bundle down groups, AVX-VNNI body = pl_matmul_q (type, blocks per group)", t->type, spg, 0);
                }
            }
#endif
            free(w); free(arena); free(xq);
        }
    }
}
