// The AVX2 tier's prompt kernels against its row kernels: thread CPU time of pl_matmul_q over 128 inputs, once in
// one call (the batch kernels: x86/quant_batch_body.h, x86/avx2_q8_batch.c, x86/avx2_quants_k_batch.c) and once in
// calls of 3 inputs (below PL_AVX2_BATCH_MIN_TOKENS: the row kernels), on the SmolLM2 shapes; the two outputs must be
// equal bit for bit (Q8_0's prompt kernel: equal to the portable body's instead). Then decode (one input): the row kernels against the packed-layout kernels (x86/avx2_packed.c) over 64 copies
// of each matrix (more than the caches hold), GB/s of weights, one thread, outputs equal bit for bit.
// Usage: ckernels-bench-avx2 (exits non-zero when the CPU lacks AVX2 or the outputs differ).
#include "ckernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double wall_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);   // CPU time: a shared machine deschedules us
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t state = 42;
static uint32_t next_u32(void) { state = state * 6364136223846793005ull + 1442695040888963407ull; return (uint32_t)(state >> 33); }

int main(void) {
    if (pl_isa_force_thread(PL_ISA_AVX2) != 0) { printf("this CPU lacks the avx2 tier\n"); return 1; }
    static const struct { int type; const char *name; int rows, cols, elems, bytes, d_off; } cases[] = {
        {PL_TYPE_Q8_0, "q8_0", 1536, 576, 32, 34, 0}, {PL_TYPE_Q4_1, "q4_1", 1536, 576, 32, 20, 0},
        {PL_TYPE_Q5_0, "q5_0", 1536, 576, 32, 22, 0}, {PL_TYPE_Q4_K, "q4_k", 576, 1536, 256, 144, 0},
        {PL_TYPE_Q6_K, "q6_k", 576, 1536, 256, 210, 208},
    };
    const int tokens = 128, reps = 7;
    int failed = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int rows = cases[c].rows, n = cases[c].cols;
        const size_t row_bytes = (size_t)(n / cases[c].elems * cases[c].bytes);
        uint8_t *w = malloc(row_bytes * rows);
        for (size_t i = 0; i < row_bytes * rows; i++) w[i] = (uint8_t)next_u32();
        for (int64_t b = 0; b < (int64_t)rows * (n / cases[c].elems); b++) {   // ordinary f16 scales
            uint16_t h = pl_f32_to_f16(0.01f);
            memcpy(w + b * cases[c].bytes + cases[c].d_off, &h, 2);
            if (cases[c].type == PL_TYPE_Q4_1 || cases[c].type == PL_TYPE_Q4_K) memcpy(w + b * cases[c].bytes + 2, &h, 2);
        }
        const int act = pl_activation_type(cases[c].type);
        const size_t stride = act == PL_TYPE_Q8_K ? (size_t)(n / 256 * PL_Q8_K_BLOCK_BYTES) : (size_t)(n / 32 * PL_Q8_1_BLOCK_BYTES);
        float *x = malloc(sizeof(float) * n);
        uint8_t *xq = malloc(stride * tokens);
        for (int t = 0; t < tokens; t++) {
            for (int i = 0; i < n; i++) x[i] = (float)next_u32() / 4294967296.0f - 0.5f;
            if (act == PL_TYPE_Q8_0) pl_quantize_q8_0(x, xq + t * stride, n);
            else if (act == PL_TYPE_Q8_1) pl_quantize_q8_1(x, xq + t * stride, n);
            else pl_quantize_q8_K(x, xq + t * stride, n);
        }
        float *yb = malloc(sizeof(float) * rows * tokens), *yr = malloc(sizeof(float) * rows * tokens);
        double batch = 1e9, rowk = 1e9;
        for (int r = 0; r < reps; r++) {
            double t0 = cpu_seconds();
            pl_matmul_q(cases[c].type, w, row_bytes, xq, stride, tokens, yb, rows, n, 0, rows);
            double t1 = cpu_seconds();
            for (int t = 0; t < tokens; t += 3) {
                int m = tokens - t < 3 ? tokens - t : 3;
                pl_matmul_q(cases[c].type, w, row_bytes, xq + t * stride, stride, m, yr + t * rows, rows, n, 0, rows);
            }
            double t2 = cpu_seconds();
            if (t1 - t0 < batch) batch = t1 - t0;
            if (t2 - t1 < rowk) rowk = t2 - t1;
        }
        // The same 128 inputs over the packed layout (x86/avx2_packed.c), where the type is packed.
        double tpb = 0;
        int same_p = 1;
        if (cases[c].type != PL_TYPE_Q6_K) {
            const size_t pb = pl_packed_bytes(cases[c].type, rows, n);
            uint8_t *p1 = aligned_alloc(64, (pb + 63) / 64 * 64);
            pl_pack_rows(cases[c].type, w, row_bytes, rows, n, p1, 0, (rows + 15) / 16);
            float *yp = malloc(sizeof(float) * rows * tokens);
            tpb = 1e9;
            for (int r = 0; r < reps; r++) {
                double t0 = cpu_seconds();
                pl_matmul_packed(cases[c].type, p1, rows, n, xq, stride, tokens, yp, rows, 0, rows);
                double t1 = cpu_seconds();
                if (t1 - t0 < tpb) tpb = t1 - t0;
            }
            same_p = memcmp(yp, yr, sizeof(float) * rows * tokens) == 0;   // the packed kernels: the rows' bits
            free(p1); free(yp);
        }
        failed |= !same_p;
        // Q8_0 from PL_AVX2_Q8_BLOCK_ORDER_MIN inputs: the portable body's block order (x86/avx2_q8_batch.c).
        float *yref = yr;
        if (cases[c].type == PL_TYPE_Q8_0) {
            yref = malloc(sizeof(float) * rows * tokens);
            pl_isa_force_thread(PL_ISA_PORTABLE);
            pl_matmul_q(cases[c].type, w, row_bytes, xq, stride, tokens, yref, rows, n, 0, rows);
            pl_isa_force_thread(PL_ISA_AVX2);
        }
        const int same = memcmp(yb, yref, sizeof(float) * rows * tokens) == 0;
        if (yref != yr) free(yref);
        failed |= !same;
        const double macs = (double)rows * n * tokens;
        printf("%-5s %4dx%-4d %d inputs: rows %6.1f GMAC/s, batch %6.1f GMAC/s (%.2fx)%s\n", cases[c].name, rows, n, tokens,
               macs / rowk * 1e-9, macs / batch * 1e-9, rowk / batch, same ? "" : "  OUTPUTS DIFFER");
        if (tpb > 0) printf("      %d inputs over the packed layout: %6.1f GMAC/s%s\n", tokens, macs / tpb * 1e-9, same_p ? "" : "  OUTPUTS DIFFER");
        // Decode: 64 copies (each its own rows), row kernels vs packed, wall time of the best of reps passes.
        const int copies = 64;
        const size_t pbytes = pl_packed_bytes(cases[c].type, rows, n);
        const int packs = cases[c].type != PL_TYPE_Q6_K;
        uint8_t *big = malloc(row_bytes * rows * copies), *pk = aligned_alloc(64, (pbytes + 63) / 64 * 64 * copies);
        for (int k = 0; k < copies; k++) {
            memcpy(big + row_bytes * rows * k, w, row_bytes * rows);
            if (packs) pl_pack_rows(cases[c].type, w, row_bytes, rows, n, pk + (pbytes + 63) / 64 * 64 * k, 0, (rows + 15) / 16);
        }
        float *y1 = malloc(sizeof(float) * rows * copies), *y2 = malloc(sizeof(float) * rows * copies);
        double trow = 1e9, tpk = 1e9;
        for (int r = 0; r < reps; r++) {
            double t0 = wall_seconds();
            for (int k = 0; k < copies; k++)
                pl_matmul_q(cases[c].type, big + row_bytes * rows * k, row_bytes, xq, stride, 1, y1 + rows * k, rows, n, 0, rows);
            double t1 = wall_seconds();
            for (int k = 0; packs && k < copies; k++)
                pl_matmul_packed(cases[c].type, pk + (pbytes + 63) / 64 * 64 * k, rows, n, xq, stride, 1, y2 + rows * k, rows, 0, rows);
            double t2 = wall_seconds();
            if (t1 - t0 < trow) trow = t1 - t0;
            if (t2 - t1 < tpk) tpk = t2 - t1;
        }
        const double gb = (double)row_bytes * rows * copies * 1e-9;
        if (packs) {
            const int same = memcmp(y1, y2, sizeof(float) * rows * copies) == 0;
            failed |= !same;
            printf("      decode, %d copies (%.0f MB): rows %5.1f GB/s, packed %5.1f GB/s (%.2fx)%s\n", copies, gb * 1e3,
                   gb / trow, gb / tpk, trow / tpk, same ? "" : "  OUTPUTS DIFFER");
        } else {
            printf("      decode, %d copies (%.0f MB): rows %5.1f GB/s (not packed)\n", copies, gb * 1e3, gb / trow);
        }
        free(big); free(pk); free(y1); free(y2);
        free(w); free(x); free(xq); free(yb); free(yr);
    }
    return failed;
}
