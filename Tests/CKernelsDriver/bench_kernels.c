// CPU-time figures of the serving kernels (README "serve"), timed by the thread's CPU clock so a shared machine
// distorts them little: a prompt chunk's attention at depth on each x86 tier (one-query kernel per query vs the
// tile) and a decode step of 4 slots through a Q4_1 FFN matrix and the Q8_0 output head (one-input kernel per input
// vs the few-inputs kernel). Each pair is also checked bit for bit. `make kernel-bench`.
#include "ckernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static float unit(void) { return rand() / 2147483648.0f; }

// SmolLM2-135M's attention: 30 layers × 3 KV heads of head_dim 64, 3 query heads each; a 60-token chunk at depth.
static int attention(int depth, int tier) {
    enum { L = 30, H = 3, G = 3, HD = 64, CHUNK = 60, T = 5 };
    const int cap = depth + CHUNK, qd = G * H * HD;
    const size_t per = (size_t)cap * HD;
    uint16_t *K = malloc(2 * per * L * H), *V = malloc(2 * per * L * H);
    for (size_t i = 0; i < per * L * H; i++) { K[i] = pl_f32_to_f16(unit() - 0.5f); V[i] = pl_f32_to_f16(unit() - 0.5f); }
    float *q = malloc(4 * (size_t)CHUNK * qd), *o1 = malloc(4 * (size_t)CHUNK * qd), *o2 = malloc(4 * (size_t)CHUNK * qd);
    float *s = malloc(4 * (size_t)T * G * cap);
    for (int i = 0; i < CHUNK * qd; i++) q[i] = unit() * 2 - 1;
    double t[2];
    for (int mode = 0; mode < 2; mode++) {
        float *out = mode ? o2 : o1;
        double t0 = cpu_seconds();
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++) {
                const uint16_t *k = K + (size_t)(l * H + h) * per, *v = V + (size_t)(l * H + h) * per;
                if (mode == 0)
                    for (int r = 0; r < CHUNK; r++)
                        pl_attention_group_f16(q + r * qd + h * G * HD, G, k, v, HD, depth + r + 1, HD, 0.125f, s,
                                               out + r * qd + h * G * HD);
                else
                    for (int r = 0; r < CHUNK; r += T)
                        pl_attention_tile_f16(q + r * qd + h * G * HD, qd, CHUNK - r < T ? CHUNK - r : T, G, k, v, HD,
                                              depth + r + 1, HD, 0.125f, s, out + r * qd + h * G * HD, qd);
            }
        t[mode] = cpu_seconds() - t0;
    }
    int same = memcmp(o1, o2, 4 * (size_t)CHUNK * qd) == 0;
    printf("attention (%s tier), %d-token chunk at depth %d (30 layers x 3 KV heads, tiles of %d queries): one-query "
           "kernel %.2f ms/token, tile %.2f ms/token (%.2fx), %s\n", pl_isa_name(tier), CHUNK, depth, T,
           t[0] * 1e3 / CHUNK, t[1] * 1e3 / CHUNK, t[0] / t[1], same ? "bit-identical" : "DIFFERENT");
    free(K); free(V); free(q); free(o1); free(o2); free(s);
    return same;
}

// 4 inputs × a packed matrix: one call per input (the one-input kernel) vs one call for all (few-inputs kernel).
static int few_inputs(int type, int rows, int n, int reps, const char *what) {
    enum { T = 4 };
    const int fb = type == PL_TYPE_Q4_1 ? 20 : 34;
    const size_t rb = (size_t)n / 32 * fb;
    uint8_t *w = malloc(rb * rows);
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < n / 32; b++) {
            uint8_t *p = w + r * rb + b * fb;
            for (int i = 0; i < fb; i++) p[i] = (uint8_t)rand();
            uint16_t d = pl_f32_to_f16(unit() * 0.02f), m = pl_f32_to_f16(-unit() * 0.1f);
            memcpy(p, &d, 2);
            if (type == PL_TYPE_Q4_1) memcpy(p + 2, &m, 2);
        }
    const size_t pb = pl_packed_bytes(type, rows, n);
    uint8_t *pk = aligned_alloc(64, (pb + 63) / 64 * 64);
    pl_pack_rows(type, w, rb, rows, n, pk, 0, (rows + 15) / 16);
    const size_t xs = (size_t)n / 32 * 36 + 64;
    uint8_t *xq = malloc(xs * T);
    float *x = malloc(4 * (size_t)n), *y1 = malloc(4 * (size_t)rows * T), *y2 = malloc(4 * (size_t)rows * T);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < n; i++) x[i] = unit() * 2 - 1;
        if (type == PL_TYPE_Q4_1) pl_quantize_q8_1(x, xq + t * xs, n); else pl_quantize_q8_0(x, xq + t * xs, n);
    }
    double t0 = cpu_seconds();
    for (int r = 0; r < reps; r++)
        for (int t = 0; t < T; t++) pl_matmul_packed(type, pk, rows, n, xq + t * xs, xs, 1, y1 + t * rows, rows, 0, rows);
    double one = cpu_seconds() - t0;
    t0 = cpu_seconds();
    for (int r = 0; r < reps; r++) pl_matmul_packed(type, pk, rows, n, xq, xs, T, y2, rows, 0, rows);
    double few = cpu_seconds() - t0;
    int same = memcmp(y1, y2, 4 * (size_t)rows * T) == 0;
    printf("%s, %dx%d, 4 inputs: one-input kernel per input %.1f us, few-inputs kernel %.1f us (%.2fx), %s\n", what,
           rows, n, one * 1e6 / reps, few * 1e6 / reps, one / few, same ? "bit-identical" : "DIFFERENT");
    free(w); free(pk); free(xq); free(x); free(y1); free(y2);
    return same;
}

int main(void) {
    int ok = 1;
    // The attention tile on each x86 tier this CPU has (AVX2: the one-query kernel has no grouped-head form there).
    for (int tier = PL_ISA_AVX2; tier <= PL_ISA_AVX512; tier++) {
        if (!pl_isa_supported(tier)) continue;
        pl_isa_force_thread(tier);
        ok &= attention(1570, tier);
    }
    pl_isa_force_thread(-1);
    if (!pl_packed_supported()) {
        printf("SKIPPED: the few-inputs kernels are AVX-512 (VNNI) bodies; this CPU lacks it\n");
        return ok ? 0 : 1;
    }
    ok &= few_inputs(PL_TYPE_Q4_1, 1536, 576, 300, "Q4_1 FFN matrix (from cache)");
    ok &= few_inputs(PL_TYPE_Q8_0, 4096, 576, 100, "Q8_0 output head, 4096 of its rows");
    return ok ? 0 : 1;
}
