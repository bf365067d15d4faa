// CPU time of a prompt chunk's attention at depth over a BF16 KV cache (pl_attention_tile_bf16: vdpbf16ps on a CPU
// with AVX512_BF16) against the F16 cache's tile (pl_attention_tile_f16, llama.cpp's default numerics), on the same
// keys and values (the BF16 ones rounded from the F16 ones), with the outputs' largest difference and each kernel's
// multiply-adds per second as a share of the core's peak (the F16 tile computes in f32 fma, the BF16 one in
// vdpbf16ps). Thread CPU time, so a shared machine distorts it little. `make kernel-bench-bf16`; a benchmark, not part of `make test`.
#include "ckernels.h"
#include <math.h>
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
static uint16_t bf16_of_f16(uint16_t h) {
    return pl_f32_to_bf16(pl_f16_to_f32(h));
}

// A model's attention shape: layers, KV heads, query heads per KV head, head_dim. Its tiles take as many queries as
// the model runs (Transformer.attentionTileQueries: PL_ATTENTION_TILE_PAIRS / group).
struct shape { const char *name; int L, H, G, HD; };
static const struct shape SMOLLM2 = {"SmolLM2-135M (30 layers x 3 KV heads x 3, head_dim 64)", 30, 3, 3, 64};
// Gemma 3 270M's global layers see the whole depth (its sliding-window layers see 512 positions at most): its 3 global
// layers' one KV head with 4 query heads, head_dim 256.
static const struct shape GEMMA3 = {"Gemma 3 270M's 3 global layers (1 KV head x 4, head_dim 256)", 3, 1, 4, 256};

// This thread's multiply-add peak of `kind` (pl_multiply_add_probe; the best of 5 passes of ~20 ms, the bound the
// kernels are measured against), per second.
static double peak(int kind) {
    double best = 0;
    for (int i = 0; i < 5; i++) {
        int64_t macs;
        const double t0 = cpu_seconds();
        volatile float sink = pl_multiply_add_probe(kind, 5000000, &macs);
        (void)sink;
        const double rate = macs / (cpu_seconds() - t0);
        if (rate > best) best = rate;
    }
    return best;
}
static double peak_f32, peak_bf16;

// A chunk of `chunk` tokens at `depth`, tiles of m.T queries, KV head by KV head.
static void run(struct shape m, int depth, int chunk, int reps) {
    const int L = m.L, H = m.H, G = m.G, HD = m.HD, T = PL_ATTENTION_TILE_PAIRS / m.G;
    const float scale = 1.0f / sqrtf((float)HD);
    const int cap = depth + chunk + 1, qd = G * H * HD;
    const size_t per = (size_t)cap * HD;
    uint16_t *K = malloc(2 * per * L * H), *V = malloc(2 * per * L * H);
    uint16_t *Kb = malloc(2 * per * L * H), *Vb = malloc(2 * per * L * H);
    for (size_t i = 0; i < per * L * H; i++) {
        K[i] = pl_f32_to_f16((unit() - 0.5f) * 4);
        V[i] = pl_f32_to_f16(unit() - 0.5f);
        Kb[i] = bf16_of_f16(K[i]);
        Vb[i] = bf16_of_f16(V[i]);
    }
    float *q = malloc(4 * (size_t)chunk * qd), *o[2] = {malloc(4 * (size_t)chunk * qd), malloc(4 * (size_t)chunk * qd)};
    float *s = aligned_alloc(64, 4 * (size_t)PL_ATTENTION_TILE_PAIRS * (cap + 64));
    for (int i = 0; i < chunk * qd; i++) q[i] = unit() * 2 - 1;
    double t[2] = {0, 0};
    for (int rep = 0; rep < reps; rep++)
        for (int mode = 0; mode < 2; mode++) {
            const double t0 = cpu_seconds();
            for (int l = 0; l < L; l++)
                for (int h = 0; h < H; h++) {
                    const size_t off = (size_t)(l * H + h) * per;
                    for (int r = 0; r < chunk; r += T) {
                        const int n = chunk - r < T ? chunk - r : T;
                        if (mode == 0)
                            pl_attention_tile_f16(q + r * qd + h * G * HD, qd, n, G, K + off, V + off, HD, depth + r + 1,
                                                  HD, scale, s, o[0] + r * qd + h * G * HD, qd);
                        else
                            pl_attention_tile_bf16(q + r * qd + h * G * HD, qd, n, G, Kb + off, Vb + off, HD, depth + r + 1,
                                                   HD, scale, s, o[1] + r * qd + h * G * HD, qd);
                    }
                }
            t[mode] += cpu_seconds() - t0;
        }
    double md = 0;
    for (int i = 0; i < chunk * qd; i++) md = fmax(md, fabs(o[0][i] - o[1][i]));
    // Multiply-adds: each query's heads times head_dim, for its scores and again for its values, over every position
    // it sees.
    double macs = 0;
    for (int r = 0; r < chunk; r++) macs += 2.0 * L * H * G * HD * (depth + r + 1);
    printf("%4d-token chunk at depth %4d: F16 cache %.3f ms/token, BF16 cache %.3f ms/token (%.2fx); largest output "
           "difference %.2g\n", chunk, depth, t[0] * 1e3 / chunk / reps, t[1] * 1e3 / chunk / reps, t[0] / t[1], md);
    printf("    %.1f G multiply-adds/s = %.0f%% of the f32 fma peak; %.1f G/s = %.0f%% of the vdpbf16ps peak\n",
           macs * reps / t[0] / 1e9, 100 * macs * reps / t[0] / peak_f32, macs * reps / t[1] / 1e9,
           100 * macs * reps / t[1] / peak_bf16);
    free(K); free(V); free(Kb); free(Vb); free(q); free(o[0]); free(o[1]); free(s);
}

int main(void) {
    if (!pl_attention_bf16_fast_body()) {
        printf("SKIPPED: this CPU lacks AVX-512 with AVX512_BF16 (the BF16 cache runs the portable body)\n");
        return 0;
    }
    peak_f32 = peak(PL_PROBE_F32_FMA);
    peak_bf16 = peak(PL_PROBE_BF16_DOT);
    printf("one thread's multiply-add peak: %.1f G/s f32 fma, %.1f G/s bf16 dot (vdpbf16ps)\n", peak_f32 / 1e9,
           peak_bf16 / 1e9);
    printf("%s\n", SMOLLM2.name);
    run(SMOLLM2, 30, 45, 20);
    run(SMOLLM2, 1570, 45, 4);
    run(SMOLLM2, 30, 343, 3);
    run(SMOLLM2, 1570, 343, 1);
    printf("%s\n", GEMMA3.name);
    run(GEMMA3, 1570, 45, 4);
    run(GEMMA3, 1570, 343, 1);
    return 0;
}
