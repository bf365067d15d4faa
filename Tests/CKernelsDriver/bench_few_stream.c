// A serve step's few-inputs kernel streaming its weights from DRAM (x86/avx512_packed_few.c, 4 inputs) against the
// same kernel over one L2-sized matrix again and again (its arithmetic alone), a plain read of the same bytes (the
// memory bound) and the one-input kernel (a lone slot's step), on 2 threads each taking half the groups: how well
// the kernel overlaps its arithmetic with the stream. Q4_1 (SmolLM2's layers) and Q8_0 (its output head), 144 Ki rows
// × 576 columns (53 and 90 MB, past Zen 4's 32 MB L3; a CPU with a larger L3, such as the 260 MB Xeons this machine
// also runs on, serves part of the "stream" from it). Wall time per pass, the median and best of the passes in which neither
// thread lost its core (bench_two_threads.h). Outputs of the few-inputs kernel are checked against the one-input
// kernel's bit for bit. `make kernel-bench-few-stream`.
#include "ckernels.h"
#include "bench_two_threads.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { COLS = 576, NB = COLS / 32, ROWS = 144 * 1024, CACHE_ROWS = 1536, T = 4, PASSES = 15 };
static int type;
static uint8_t *packed, *xq;
static float *y;
static size_t xs;
static int64_t group_bytes;
static uint64_t sink[2];

typedef void (*half_fn)(int64_t g0, int64_t g1, int t);
static void plain_read(int64_t g0, int64_t g1, int t) { sink[t] ^= pl_read_memory(packed + g0 * group_bytes, (g1 - g0) * group_bytes); }
static void one_input(int64_t g0, int64_t g1, int t) {
    (void)t;
    pl_matmul_packed(type, packed, ROWS, COLS, xq, xs, 1, y, ROWS, g0 * 16, g1 * 16);
}
static void few_stream(int64_t g0, int64_t g1, int t) {
    (void)t;
    pl_matmul_packed(type, packed, ROWS, COLS, xq, xs, T, y, ROWS, g0 * 16, g1 * 16);
}
// As many groups as the stream's half, over the thread's own first CACHE_ROWS rows (in L2) again and again.
static void few_cache(int64_t g0, int64_t g1, int t) {
    for (int64_t g = g0; g < g1; g += CACHE_ROWS / 16)
        pl_matmul_packed(type, packed + (size_t)t * (CACHE_ROWS / 16) * group_bytes, CACHE_ROWS, COLS, xq, xs, T,
                         y + (size_t)t * CACHE_ROWS, ROWS, 0, CACHE_ROWS);
}
static half_fn job;
static void run_half(int t) { const int64_t half = ROWS / 32; job(t ? half : 0, t ? 2 * half : half, t); }

static int bench_type(int ty) {
    type = ty;
    const int fb = type == PL_TYPE_Q4_1 ? 20 : 34;
    const size_t rb = (size_t)NB * fb;
    uint8_t *w = malloc(rb * ROWS);
    srand(1);
    for (size_t i = 0; i < rb * ROWS; i++) w[i] = (uint8_t)rand();
    for (int64_t r = 0; r < ROWS; r++)
        for (int b = 0; b < NB; b++) {
            uint16_t d = pl_f32_to_f16(rand() / 2147483648.0f * 0.02f), m = pl_f32_to_f16(-rand() / 2147483648.0f * 0.1f);
            memcpy(w + r * rb + b * fb, &d, 2);
            if (type == PL_TYPE_Q4_1) memcpy(w + r * rb + b * fb + 2, &m, 2);
        }
    const size_t pb = pl_packed_bytes(type, ROWS, COLS);
    group_bytes = (int64_t)(pb / (ROWS / 16));
    packed = aligned_alloc(4096, (pb + 4095) / 4096 * 4096);
    pl_pack_rows(type, w, rb, ROWS, COLS, packed, 0, ROWS / 16);
    free(w);
    xs = (size_t)NB * 36 + 64;
    xq = malloc(xs * T);
    float x[COLS];
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < COLS; i++) x[i] = rand() / 1073741824.0f - 1;
        if (type == PL_TYPE_Q4_1) pl_quantize_q8_1(x, xq + t * xs, COLS); else pl_quantize_q8_0(x, xq + t * xs, COLS);
    }
    y = malloc(sizeof(float) * ROWS * T);
    // Bit for bit: the few-inputs kernel against one lone call per input.
    float *lone = malloc(sizeof(float) * ROWS * T);
    for (int t = 0; t < T; t++) pl_matmul_packed(type, packed, ROWS, COLS, xq + t * xs, xs, 1, lone + (size_t)t * ROWS, ROWS, 0, ROWS);
    pl_matmul_packed(type, packed, ROWS, COLS, xq, xs, T, y, ROWS, 0, ROWS);
    const int same = memcmp(lone, y, sizeof(float) * ROWS * T) == 0;
    free(lone);
    const char *names[] = {"plain read", "one-input kernel, 1 input", "few-inputs kernel, 4 inputs", "the same from L2 (arithmetic)"};
    half_fn fns[] = {plain_read, one_input, few_stream, few_cache};
    enum { M = 4 };
    double times[M][PASSES];
    int n[M] = {0};
    for (int p = 0; p < PASSES; p++)
        for (int m = 0; m < M; m++) {   // modes alternate within each pass
            job = fns[m];
            const double s = bench_pass(run_half);
            if (s > 0) times[m][n[m]++] = s;
        }
    printf("%s, %d x %d packed (%.1f MB), 2 threads; few-inputs = one-input per input: %s\n",
           type == PL_TYPE_Q4_1 ? "Q4_1" : "Q8_0", ROWS, COLS, pb / 1e6, same ? "bit-identical" : "DIFFERENT");
    for (int m = 0; m < M; m++) {
        if (!n[m]) { printf("  %-31s no unpreempted pass\n", names[m]); continue; }
        qsort(times[m], n[m], sizeof(double), bench_by_value);
        printf("  %-31s %6.3f ms median, %6.3f best (%2d passes): %5.1f GB/s of weights\n", names[m],
               times[m][n[m] / 2] * 1e3, times[m][0] * 1e3, n[m], pb / times[m][n[m] / 2] / 1e9);
    }
    free(packed); free(xq); free(y);
    return same;
}

int main(void) {
    if (!pl_packed_supported()) { printf("SKIPPED: the few-inputs kernel is an AVX-512 VNNI body; this CPU lacks it\n"); return 0; }
    bench_start();
    int ok = bench_type(PL_TYPE_Q4_1);
    ok &= bench_type(PL_TYPE_Q8_0);
    bench_stop();
    return ok ? 0 : 1;
}
