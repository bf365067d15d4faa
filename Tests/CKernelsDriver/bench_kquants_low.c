// CPU time of the Q2_K, Q3_K, Q5_K (and for comparison Q4_K) one-input row kernels on each x86 tier against the
// portable body, one 1536×2304 matrix (L2-sized: the kernels' arithmetic, not DRAM), best of 7 runs of 20; each
// tier's output checked bit for bit against the portable one. A benchmark (`make kernel-bench-kquants`), not a test.
#include "ckernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

int main(void) {
    static const struct { int type, bytes, d_off, m_off; const char *name; } types[] = {
        {PL_TYPE_Q2_K, 84, 80, 82, "q2_k"}, {PL_TYPE_Q3_K, 110, 108, -1, "q3_k"},
        {PL_TYPE_Q5_K, 176, 0, 2, "q5_k"}, {PL_TYPE_Q4_K, 144, 0, 2, "q4_k"},
    };
    enum { ROWS = 1536, N = 2304 };
    static const int tiers[] = {PL_ISA_PORTABLE, PL_ISA_AVX2, PL_ISA_AVX512, PL_ISA_NEON};
    float *x = malloc(N * 4), *ref = malloc(ROWS * 4), *y = malloc(ROWS * 4);
    for (int i = 0; i < N; i++) x[i] = (float)((i * 7919) % 200 - 100) / 50.0f;
    uint8_t *xq = malloc(N / 256 * PL_Q8_K_BLOCK_BYTES);
    int bad = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const size_t rb = (size_t)N / 256 * types[ti].bytes;
        uint8_t *w = malloc(rb * ROWS);
        for (size_t i = 0; i < rb * ROWS; i++) w[i] = (uint8_t)((i * 2654435761u) >> 13);
        const uint16_t h = pl_f32_to_f16(0.01f);
        for (int r = 0; r < ROWS; r++)
            for (int b = 0; b < N / 256; b++) {
                uint8_t *blk = w + r * rb + b * types[ti].bytes;
                memcpy(blk + types[ti].d_off, &h, 2);
                if (types[ti].m_off >= 0) memcpy(blk + types[ti].m_off, &h, 2);
            }
        for (size_t k = 0; k < sizeof tiers / sizeof tiers[0]; k++) {
            if (pl_isa_force_thread(tiers[k]) != 0) continue;
            pl_quantize_q8_K(x, xq, N);
            double best = 1e9;
            for (int rep = 0; rep < 7; rep++) {
                double t0 = now();
                for (int it = 0; it < 20; it++) pl_matvec_q(types[ti].type, w, rb, xq, y, N, 0, ROWS);
                double t = (now() - t0) / 20;
                if (t < best) best = t;
            }
            if (tiers[k] == PL_ISA_PORTABLE) memcpy(ref, y, ROWS * 4);
            int same = memcmp(ref, y, ROWS * 4) == 0;
            bad += !same;
            printf("%s %-8s %7.3f ms per %dx%d matvec (%5.1f GB/s of weights)%s\n", types[ti].name, pl_isa_name(tiers[k]),
                   best * 1e3, ROWS, N, (double)rb * ROWS / best / 1e9, same ? "" : "  DIFFERS FROM PORTABLE");
        }
        pl_isa_force_thread(-1);
        free(w);
    }
    free(x); free(ref); free(y); free(xq);
    return bad ? 1 : 0;
}
