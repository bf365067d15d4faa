// Streaming rate of the one-input packed kernel on Gemma 3 270M's output head (262,144 × 640 Q8_0, 178 MB) against
// a plain read of the same bytes (pl_read_memory, the probe behind the decode bound), on 2 threads each streaming
// its half: the decode kernel as shipped, and the same stream with the software prefetch it used to issue (9 lines
// per 544-byte block, 8 blocks ahead). Wall time per pass; a pass counts only if neither thread lost its core
// during it (thread CPU time ≥ 97% of its wall time), so a shared machine gives fewer passes, not wrong ones.
// Both kernels' outputs are checked bit for bit. `make kernel-bench-head`. It includes packed.c (its static stream
// functions), so that file is left out of the link.
#include "../../Sources/CKernels/packed.c"
#include "bench_two_threads.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { ROWS = 262144, COLS = 640, NB = COLS / 32, BLOCK = 544 };
static uint8_t *packed_head, *xq;
static float *y;
static int64_t group_bytes;


typedef void (*half_fn)(int64_t g0, int64_t g1, int thread);
static uint64_t sink[2];
static void plain_read(int64_t g0, int64_t g1, int t) { sink[t] ^= pl_read_memory(packed_head + g0 * group_bytes, (g1 - g0) * group_bytes); }
static void shipped(int64_t g0, int64_t g1, int t) {
    (void)t;
    pl_matmul_packed(PL_TYPE_Q8_0, packed_head, ROWS, COLS, xq, 0, 1, y, ROWS, g0 * 16, g1 * 16);
}
// The stream as it was before: three groups in lockstep, each block prefetching the block 8 ahead.
VNNI512 static void prefetched(int64_t g0, int64_t g1, int t) {
    (void)t;
    int64_t third = (g1 - g0) / 3;
    for (int64_t i = 0; i < third; i++) {
        int64_t g[3] = {g0 + i, g0 + third + i, g0 + 2 * third + i};
        const uint8_t *p[3] = {packed_head + g[0] * group_bytes, packed_head + g[1] * group_bytes, packed_head + g[2] * group_bytes};
        __m512 v[3];
        packed_group_dot3(PL_TYPE_Q8_0, 1, p, xq, NB, v);
        for (int j = 0; j < 3; j++) store_group(y, ROWS, g[j], v[j]);
    }
    for (int64_t g = g0 + 3 * third; g < g1; g++) store_group(y, ROWS, g, packed_group_dot(PL_TYPE_Q8_0, 1, packed_head + g * group_bytes, xq, NB));
}

static half_fn job;
static void run_half(int t) {
    const int64_t groups = ROWS / 16, half = groups / 2;
    job(t ? half : 0, t ? groups : half, t);
}
static double pass(half_fn f) { job = f; return bench_pass(run_half); }

int main(int argc, char **argv) {
    if (!pl_packed_supported()) { printf("SKIPPED: the packed kernel is an AVX-512 VNNI body; this CPU lacks it\n"); return 0; }
    const int passes = argc > 1 ? atoi(argv[1]) : 15;
    const size_t row_bytes = NB * 34, packed_bytes = pl_packed_bytes(PL_TYPE_Q8_0, ROWS, COLS);
    uint8_t *rows = malloc(row_bytes * ROWS);
    srand(1);
    for (size_t i = 0; i < row_bytes * ROWS; i++) rows[i] = (uint8_t)rand();
    for (int64_t r = 0; r < ROWS; r++)
        for (int b = 0; b < NB; b++) {
            uint16_t d = pl_f32_to_f16(rand() / 2147483648.0f * 0.02f);
            memcpy(rows + r * row_bytes + b * 34, &d, 2);
        }
    packed_head = aligned_alloc(4096, (packed_bytes + 4095) / 4096 * 4096);
    pl_pack_rows(PL_TYPE_Q8_0, rows, row_bytes, ROWS, COLS, packed_head, 0, ROWS / 16);
    free(rows);
    group_bytes = NB * BLOCK;
    float x[COLS];
    for (int i = 0; i < COLS; i++) x[i] = rand() / 2147483648.0f * 2 - 1;
    xq = aligned_alloc(64, 4096);
    pl_quantize_q8_0(x, xq, COLS);
    y = malloc(4 * (size_t)ROWS);
    float *first = malloc(4 * (size_t)ROWS);
    bench_start();

    const char *names[3] = {"plain read (the bound's probe)", "decode kernel (shipped)", "with the old prefetch"};
    half_fn fns[3] = {plain_read, shipped, prefetched};
    double *t[3];
    int n[3] = {0, 0, 0}, same = 1;
    for (int m = 0; m < 3; m++) t[m] = calloc(passes, sizeof(double));
    for (int tries = 0; tries < 40 * passes && (n[0] < passes || n[1] < passes || n[2] < passes); tries++)
        for (int m = 0; m < 3; m++) {   // the modes take turns, so the machine's phases reach all of them alike
            if (n[m] >= passes) continue;
            double s = pass(fns[m]);
            if (s > 0) t[m][n[m]++] = s;
            if (m == 1) memcpy(first, y, 4 * (size_t)ROWS);
            if (m == 2 && memcmp(first, y, 4 * (size_t)ROWS) != 0) same = 0;
        }
    bench_stop();
    printf("Gemma 3 270M's head, %dx%d Q8_0 packed (%.1f MB), 2 threads streaming halves:\n", ROWS, COLS, packed_bytes / 1e6);
    for (int m = 0; m < 3; m++) {
        if (!n[m]) { printf("  %-32s no pass ran unpreempted\n", names[m]); continue; }
        qsort(t[m], n[m], sizeof(double), bench_by_value);
        printf("  %-32s median %5.1f GB/s, best %5.1f GB/s (%d unpreempted passes)\n", names[m],
               packed_bytes / t[m][n[m] / 2] / 1e9, packed_bytes / t[m][0] / 1e9, n[m]);
    }
    printf("  outputs of the two kernels: %s\n", same ? "bit-identical" : "DIFFERENT");
    return same ? 0 : 1;
}
