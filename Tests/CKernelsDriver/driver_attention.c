// The kernel driver's attention checks (F16 cache: one query, a prompt chunk's tile; BF16 cache), each tier against
// the portable body.
#include "driver.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

void test_attention(int tier, const char *name) {
    static const int dims[] = {64, 128, 32, 80, 256};
    for (int di = 0; di < 5; di++) {
        int hd = dims[di];
        for (int n_ctx = 1; n_ctx <= 70; n_ctx += 23) {
            int heads = 3, stride = hd + 8;
            uint16_t *k = malloc((size_t)n_ctx * stride * 2), *v = malloc((size_t)n_ctx * stride * 2);
            float *q = malloc((size_t)heads * hd * 4), *s = malloc((size_t)heads * n_ctx * 4);
            float *op = malloc((size_t)heads * hd * 4), *of = malloc((size_t)heads * hd * 4);
            for (int i = 0; i < n_ctx * stride; i++) { k[i] = pl_f32_to_f16(unit() * 2 - 1); v[i] = pl_f32_to_f16(unit() * 2 - 1); }
            for (int i = 0; i < heads * hd; i++) q[i] = (unit() * 2 - 1) * 3;
            pl_isa_force_thread(PL_ISA_PORTABLE);
            pl_attention_group_f16(q, heads, k, v, stride, n_ctx, hd, 0.125f, s, op);
            pl_isa_force_thread(tier);
            pl_attention_group_f16(q, heads, k, v, stride, n_ctx, hd, 0.125f, s, of);
            // Scores are summed in another order (and probabilities rounded to f16 from them): outputs are convex
            // combinations of |v| ≤ 1, so an absolute bound.
            int ok = 1;
            for (int i = 0; i < heads * hd; i++) if (!(fabsf(op[i] - of[i]) <= 2e-3f)) ok = 0;
            check(ok, name, "attention within 2e-3 (head_dim, n_ctx)", hd, n_ctx, 0);
            // A group of heads (the AVX2 tier runs it as a one-query tile) is each head's one-query kernel, bit for bit.
            float *o1 = malloc((size_t)heads * hd * 4);
            for (int g = 0; g < heads; g++) pl_attention_f16(q + g * hd, k, v, stride, n_ctx, hd, 0.125f, s, o1 + g * hd);
            check(bits_equal(of, o1, heads * hd), name, "attention group = one-query kernel per head (head_dim, n_ctx)", hd, n_ctx, 0);
            free(o1);
            free(k); free(v); free(q); free(s); free(op); free(of);
        }
    }
}

// A tile of consecutive queries (pl_attention_tile_f16): on each tier, every (query, head) bit for bit what that
// tier's one-query kernel gives it alone, and within the one-query bound of the portable reference tile. Depths up
// to 150 cross several of the AVX2 tile's 64-row blocks, with queries whose rows end inside a block.
void test_attention_tile(int tier, const char *name) {
    static const int dims[] = {64, 32, 128, 256};
    // Up to PL_ATTENTION_TILE_PAIRS pairs (SmolLM2's 21 × 3, Gemma 3's 16 × 4, Qwen2.5's 9 × 7): past 6 pairs the
    // AVX-512 body converts the V rows once into a buffer of 8192 floats (128, 64, 32 rows at head_dim 64, 128, 256)
    // that its passes share, so depths up to 150 also cross that buffer's chunks.
    static const int shapes[][2] = {{4, 3}, {5, 3}, {1, 3}, {16, 1}, {6, 3}, {2, 2}, {10, 3}, {8, 4}, {32, 1},
                                    {21, 3}, {16, 4}, {9, 7}, {64, 1}};
    for (int di = 0; di < 4; di++)
        for (int si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++)
            for (int n_ctx = 1; n_ctx <= 150; n_ctx += n_ctx < 79 ? 13 : 71) {
                int hd = dims[di], T = shapes[si][0], G = shapes[si][1], stride = hd + 8, rows = n_ctx + T - 1;
                int qs = G * hd + 3, n_out = T * qs;
                uint16_t *k = malloc((size_t)rows * stride * 2), *v = malloc((size_t)rows * stride * 2);
                float *q = malloc((size_t)n_out * 4), *s = malloc((size_t)T * G * rows * 4);
                float *op = malloc((size_t)n_out * 4), *of = malloc((size_t)n_out * 4), *o1 = malloc((size_t)n_out * 4);
                for (int i = 0; i < rows * stride; i++) { k[i] = pl_f32_to_f16(unit() * 2 - 1); v[i] = pl_f32_to_f16(unit() * 2 - 1); }
                for (int i = 0; i < n_out; i++) { q[i] = (unit() * 2 - 1) * 3; op[i] = of[i] = o1[i] = 0.0f; }
                pl_isa_force_thread(PL_ISA_PORTABLE);
                pl_attention_tile_f16(q, qs, T, G, k, v, stride, n_ctx, hd, 0.125f, s, op, qs);
                pl_isa_force_thread(tier);
                pl_attention_tile_f16(q, qs, T, G, k, v, stride, n_ctx, hd, 0.125f, s, of, qs);
                for (int t = 0; t < T; t++)
                    for (int g = 0; g < G; g++)
                        pl_attention_f16(q + t * qs + g * hd, k, v, stride, n_ctx + t, hd, 0.125f, s, o1 + t * qs + g * hd);
                int ok = 1;
                for (int i = 0; i < n_out; i++) if (!(fabsf(op[i] - of[i]) <= 2e-3f)) ok = 0;
                check(ok, name, "attention tile within 2e-3 of the portable tile (head_dim, queries, n_ctx)", hd, T, n_ctx);
                check(bits_equal(of, o1, n_out), name, "attention tile = one-query kernel per (query, head) (head_dim, queries, n_ctx)",
                      hd, T, n_ctx);
                free(k); free(v); free(q); free(s); free(op); free(of); free(o1);
            }
}

// Attention over a BF16 cache (pl_attention_tile_bf16 / _group_bf16) against the portable body. Where the tier runs
// the vdpbf16ps body (AVX-512 with AVX512_BF16) its pair sums run in another order, and a probability near a bf16
// rounding boundary can round the other way: at most one bf16 step (2^-8 relative) of each p_t·v_t, with |v| ≤ 1, so
// 4e-3 absolute. Elsewhere the tier runs the portable body, and the comparison says so instead of claiming a check.
void test_attention_bf16(int tier, const char *name) {
    pl_isa_force_thread(tier);
    const int fast = pl_attention_bf16_fast_body();
    printf("tier %s: BF16-cache attention runs the %s\n", name,
           fast ? "vdpbf16ps body" : "portable body (no AVX512_BF16 on this tier or CPU): not compared");
    // Conversions: nearest even at ties, overflow to infinity, NaN kept.
    const float in[] = {1.0f, 1.00390625f, 1.01171875f, -2.5f, 3.4028235e38f, INFINITY, 1e-40f, 0.0f};
    const uint16_t want[] = {0x3f80, 0x3f80, 0x3f82, 0xc020, 0x7f80, 0x7f80, 0x0001, 0x0000};
    int conv = 1;
    for (int i = 0; i < 8; i++) if (pl_f32_to_bf16(in[i]) != want[i]) conv = 0;
    uint16_t nan16 = pl_f32_to_bf16(NAN);
    check(conv && (nan16 & 0x7f80) == 0x7f80 && (nan16 & 0x7f) != 0, name, "f32 to bf16 rounding", 0, 0, 0);
    if (!fast) return;
    float largest = 0.0f;
    // Head sizes 64 (SmolLM2), 128 (Qwen2.5, Llama 3.2 3B) and 256 (Gemma 3); the wider ones on fewer shapes.
    static const int shapes[][3] = {{4, 3, 64}, {5, 3, 64}, {1, 3, 64}, {16, 1, 64}, {1, 16, 64}, {2, 2, 64}, {3, 5, 64},
                                    {5, 3, 128}, {1, 4, 128}, {4, 1, 256}, {1, 4, 256}, {3, 5, 256},
                                    {10, 3, 64}, {32, 1, 64}, {8, 4, 256}, {21, 3, 64}, {16, 4, 256}, {9, 7, 128}};
    for (int si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++)
        for (int n_ctx = 1; n_ctx <= 150; n_ctx += n_ctx < 40 ? 7 : 53) {
            int hd = shapes[si][2], T = shapes[si][0], G = shapes[si][1], stride = hd + 8, rows = n_ctx + T - 1;
            int qs = G * hd + 3, n_out = T * qs;
            uint16_t *k = malloc((size_t)(rows + 1) * stride * 2), *v = malloc((size_t)(rows + 1) * stride * 2);
            float *q = malloc((size_t)n_out * 4), *s = malloc((size_t)T * G * (rows + 1) * 4);
            float *op = malloc((size_t)n_out * 4), *of = malloc((size_t)n_out * 4);
            for (int i = 0; i < (rows + 1) * stride; i++) {
                k[i] = pl_f32_to_bf16(unit() * 2 - 1);
                // The row past the last is never read: NaN there would show.
                v[i] = i >= rows * stride ? 0x7fc0 : pl_f32_to_bf16(unit() * 2 - 1);
            }
            for (int i = 0; i < n_out; i++) { q[i] = (unit() * 2 - 1) * 3; op[i] = of[i] = 0.0f; }
            pl_isa_force_thread(PL_ISA_PORTABLE);
            pl_attention_tile_bf16(q, qs, T, G, k, v, stride, n_ctx, hd, 0.125f, s, op, qs);
            pl_isa_force_thread(tier);
            pl_attention_tile_bf16(q, qs, T, G, k, v, stride, n_ctx, hd, 0.125f, s, of, qs);
            int ok = 1;
            for (int i = 0; i < n_out; i++) {
                if (!(fabsf(op[i] - of[i]) <= 4e-3f)) ok = 0;
                if (fabsf(op[i] - of[i]) > largest) largest = fabsf(op[i] - of[i]);
            }
            char what[96];
            snprintf(what, sizeof what, "bf16 attention tile, head_dim %d, within 4e-3 of the portable body (queries, heads, n_ctx)", hd);
            check(ok, name, what, T, G, n_ctx);
            if (T == 1) {
                pl_isa_force_thread(tier);
                pl_attention_group_bf16(q, G, k, v, stride, n_ctx, hd, 0.125f, s, of);
                ok = 1;
                for (int i = 0; i < G * hd; i++) if (!(fabsf(op[i] - of[i]) <= 4e-3f)) ok = 0;
                check(ok, name, "bf16 attention, one query, within 4e-3 of the portable body (heads, n_ctx, head_dim)", G, n_ctx, hd);
            }
            free(k); free(v); free(q); free(s); free(op); free(of);
        }
    printf("tier %s: BF16-cache attention, largest difference from the portable body %.2g\n", name, largest);
}
