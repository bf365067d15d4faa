// Compares every ISA tier's kernel bodies with the portable reference, on random and edge-case inputs (odd row
// counts, partial row ranges, partial blocks of tokens, extreme and zero scales, outliers). Built from the C sources
// alone, so it runs natively (x86-64: the avx2 and avx512 tiers) and cross-compiled for AArch64 under qemu-user (the
// neon tier, with and without dotprod). Usage: ckernels-driver [--require tier,tier,...]; exits non-zero when a
// comparison fails or a required tier is absent on this CPU. Prints one line per tier and its closing counts.
#include "driver.h"
#include "quants_k.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_pass, g_fail;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
float unit(void) { return (float)(next_u64() >> 40) / (float)(1 << 24); }   // [0, 1)

void check(int ok, const char *tier, const char *what, int a, int b, int c) {
    if (ok) { g_pass++; return; }
    g_fail++;
    if (g_fail <= 30) printf("FAIL [%s] %s (%d, %d, %d)\n", tier, what, a, b, c);
}

// Bytes and elements per block of the quantized types, and where their f16 scales sit.
const QType qtypes[] = {
    {PL_TYPE_Q8_0, "q8_0", 32, 34, 0, -1}, {PL_TYPE_Q4_0, "q4_0", 32, 18, 0, -1}, {PL_TYPE_Q4_1, "q4_1", 32, 20, 0, 2},
    {PL_TYPE_Q5_0, "q5_0", 32, 22, 0, -1}, {PL_TYPE_Q5_1, "q5_1", 32, 24, 0, 2}, {PL_TYPE_Q2_K, "q2_k", 256, 84, 80, 82},
    {PL_TYPE_Q3_K, "q3_k", 256, 110, 108, -1}, {PL_TYPE_Q4_K, "q4_k", 256, 144, 0, 2}, {PL_TYPE_Q5_K, "q5_k", 256, 176, 0, 2},
    {PL_TYPE_Q6_K, "q6_k", 256, 210, 208, -1},
};

static void put_f16(uint8_t *p, float f) { uint16_t h = pl_f32_to_f16(f); memcpy(p, &h, 2); }

// Random quants; scales mostly ordinary, some zero, some at f16's extremes (largest normal, subnormal).
void random_weights(const QType *t, uint8_t *w, int64_t blocks) {
    for (int64_t b = 0; b < blocks; b++) {
        uint8_t *blk = w + b * t->bytes;
        for (int i = 0; i < t->bytes; i++) blk[i] = (uint8_t)next_u64();
        if (t->type == PL_TYPE_Q8_0)   // Q8_0 quants are −127..127 (ggml never writes −128)
            for (int i = 2; i < 34; i++) if (blk[i] == 0x80) blk[i] = 0x81;
        float r = unit(), d = (unit() - 0.5f) * 0.05f;
        if (r < 0.03f) d = 0.0f;
        else if (r < 0.05f) d = 60000.0f * (unit() < 0.5f ? 1 : -1) / (t->elems == 256 ? 4096.0f : 1.0f);
        else if (r < 0.07f) d = 3e-7f;
        put_f16(blk + t->d_off, d);
        if (t->m_off >= 0) put_f16(blk + t->m_off, (unit() - 0.5f) * 0.05f);
    }
}

static void random_input(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = (unit() * 4 - 2) * (unit() < 0.05f ? 50.0f : 1.0f);
        x[i] = v;
    }
    // Edge blocks: all zero, one huge outlier, values exactly halfway between quantization steps.
    if (n >= 96) {
        memset(x, 0, 32 * sizeof(float));
        x[40] = 3e4f;
        for (int i = 64; i < 96; i++) x[i] = (float)(i - 80) * 0.5f;
    }
}

int bits_equal(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * 4) == 0; }

static int act_bytes(int act, int64_t n) {
    return act == PL_TYPE_Q8_K ? (int)(n / 256 * PL_Q8_K_BLOCK_BYTES)
         : (int)(n / 32 * (act == PL_TYPE_Q8_1 ? PL_Q8_1_BLOCK_BYTES : PL_Q8_0_BLOCK_BYTES));
}

static void quantize(int act, const float *x, uint8_t *out, int64_t n) {
    if (act == PL_TYPE_Q8_0) pl_quantize_q8_0(x, out, n);
    else if (act == PL_TYPE_Q8_1) pl_quantize_q8_1(x, out, n);
    else pl_quantize_q8_K(x, out, n);
}

// ggml's x86 lane arithmetic for Q8_0/Q4_0/Q4_1 rows, which every vector tier computes (AVX-512 VNNI, AVX2, NEON with
// and without dotprod): per 32-element block, lane l sums elements 4l..4l+3 exactly in int32 and is fma'd with
// d_w·d_x into float lane l; hsum_float_8 at the end; Q4_1's d_min·s_x terms a separate fma chain added last. (The
// portable body sums each block whole and adds the blocks in order, as the flash-paging bundles do: close, not
// equal.)
static float lane_dotq(int type, const uint8_t *w, const uint8_t *xq, int64_t nb, double *mag) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, msum = 0.0f;
    *mag = 0;
    const int wb = type == PL_TYPE_Q8_0 ? 34 : type == PL_TYPE_Q4_0 ? 18 : 20;
    const int xb = type == PL_TYPE_Q4_1 ? 36 : 34;
    for (int64_t b = 0; b < nb; b++, w += wb, xq += xb) {
        const int8_t *c = (const int8_t *)(xq + (type == PL_TYPE_Q4_1 ? 4 : 2));
        int q[32];
        uint16_t h;
        if (type == PL_TYPE_Q8_0) {
            for (int j = 0; j < 32; j++) q[j] = ((const int8_t *)(w + 2))[j];
        } else {
            const uint8_t *a = w + (type == PL_TYPE_Q4_0 ? 2 : 4);
            const int off = type == PL_TYPE_Q4_0 ? 8 : 0;
            for (int j = 0; j < 16; j++) { q[j] = (a[j] & 0x0f) - off; q[j + 16] = (a[j] >> 4) - off; }
        }
        memcpy(&h, w, 2);
        float dw = pl_f16_to_f32(h);
        memcpy(&h, xq, 2);
        float d = dw * pl_f16_to_f32(h);
        for (int l = 0; l < 8; l++) {
            int32_t lane = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++) lane += q[j] * c[j];
            acc[l] = fmaf(d, (float)lane, acc[l]);
            *mag += fabs((double)d * lane);
        }
        if (type == PL_TYPE_Q4_1) {
            memcpy(&h, w + 2, 2);
            float m = pl_f16_to_f32(h);
            memcpy(&h, xq + 2, 2);
            msum = fmaf(m, pl_f16_to_f32(h), msum);
            *mag += fabs((double)m * pl_f16_to_f32(h));
        }
    }
    return (((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))) + msum;
}

static int lane_types(int type) { return type == PL_TYPE_Q8_0 || type == PL_TYPE_Q4_0 || type == PL_TYPE_Q4_1; }

// Where pl_matmul_q runs the AVX2 Q8_0 prompt kernel (x86/avx2_q8_batch.c: the portable body's block order, bit for
// bit): the avx2 tier and AVX-512 without VNNI (which runs the AVX2 bodies), from PL_AVX2_Q8_BLOCK_ORDER_MIN inputs.
static int avx2_q8_block_order(int tier, int type, int tokens) {
#if defined(__x86_64__)
    return type == PL_TYPE_Q8_0 && tokens >= PL_AVX2_Q8_BLOCK_ORDER_MIN &&
           (tier == PL_ISA_AVX2 || (tier == PL_ISA_AVX512 && !(pl_isa_features() & PL_FEATURE_AVX512_VNNI)));
#else
    (void)tier; (void)type; (void)tokens;
    return 0;
#endif
}

// ---- the comparisons, each: tier's body vs portable ----

static void test_quantize(int tier, const char *name) {
    for (int64_t n = 32; n <= 32 * 40; n += 32 * 13) {
        float *x = malloc((size_t)n * 4);
        random_input(x, n);
        for (int act = 0; act < 3; act++) {
            int a = act == 0 ? PL_TYPE_Q8_0 : act == 1 ? PL_TYPE_Q8_1 : PL_TYPE_Q8_K;
            if (a == PL_TYPE_Q8_K && n % 256) continue;
            int bytes = act_bytes(a, n);
            uint8_t *p = malloc((size_t)bytes), *f = malloc((size_t)bytes);
            pl_isa_force_thread(PL_ISA_PORTABLE); quantize(a, x, p, n);
            pl_isa_force_thread(tier); quantize(a, x, f, n);
            check(memcmp(p, f, (size_t)bytes) == 0, name, "quantize activations (type, n)", a, (int)n, 0);
            free(p); free(f);
        }
        free(x);
    }
}

// Q8_K blocks built to hit each branch: all zero; the largest magnitude negative, and tied between +a and −a (the
// first one sets the sign); values halfway between steps; a subnormal scale; a NaN and an infinity (the vector
// bodies hand those blocks to the portable one).
static void test_quantize_q8_K_edges(int tier, const char *name) {
    enum { B = 8 };
    float x[256 * B];
    random_input(x, 256 * B);
    memset(x, 0, 256 * sizeof(float));
    x[256 + 7] = -40.0f;
    x[512 + 3] = 9.0f; x[512 + 200] = -9.0f;
    x[768 + 5] = -9.0f; x[768 + 100] = 9.0f;
    for (int i = 0; i < 256; i++) x[1024 + i] = ((float)(i % 64) - 32.0f) * (2.0f / 127.0f) * 0.5f;   // halves
    x[1024] = 2.0f;
    for (int i = 0; i < 256; i++) x[1280 + i] *= 1e-39f;
    x[1536 + 17] = NAN;
    x[1792 + 99] = INFINITY;
    uint8_t p[B * PL_Q8_K_BLOCK_BYTES], f[B * PL_Q8_K_BLOCK_BYTES];
    pl_isa_force_thread(PL_ISA_PORTABLE); pl_quantize_q8_K(x, p, 256 * B);
    pl_isa_force_thread(tier); pl_quantize_q8_K(x, f, 256 * B);
    for (int b = 0; b < B; b++)
        check(memcmp(p + b * PL_Q8_K_BLOCK_BYTES, f + b * PL_Q8_K_BLOCK_BYTES, PL_Q8_K_BLOCK_BYTES) == 0, name,
              "q8_K edge block", b, 0, 0);
}

// `tokens` random inputs of `n` elements quantized to `act` blocks (act_bytes(act, n) apart) on `tier`, which stays
// forced for the calling thread; the caller frees them.
uint8_t *random_quantized_inputs(int act, int64_t n, int tokens, int tier) {
    float *x = malloc((size_t)(n * tokens) * 4);
    random_input(x, n * tokens);
    int stride = act_bytes(act, n);
    uint8_t *xq = malloc((size_t)stride * tokens);
    pl_isa_force_thread(tier);
    for (int i = 0; i < tokens; i++) quantize(act, x + i * n, xq + i * stride, n);
    free(x);
    return xq;
}

// The K-quant and Q5_x types each vector tier has its own body for (the comparisons above are bit for bit, so they
// cannot tell a tier body from the portable one): a type that loses its body fails here instead of passing on the
// portable path.
static void test_tier_claims(int tier, const char *name) {
    static const int types[] = {PL_TYPE_Q5_0, PL_TYPE_Q5_1, PL_TYPE_Q2_K, PL_TYPE_Q3_K, PL_TYPE_Q4_K, PL_TYPE_Q5_K, PL_TYPE_Q6_K};
    for (int i = 0; i < 7; i++) {
        int t = types[i], owned = 0;
#if defined(__x86_64__)
        if (tier == PL_ISA_AVX2 || tier == PL_ISA_AVX512) owned = pl_kq_avx2_owns(t) || pl_kq_avx2_low_owns(t);
#elif defined(__aarch64__)
        if (t == PL_TYPE_Q5_0 || t == PL_TYPE_Q5_1) continue;   // NEON runs arm/neon_quant.c's Q5_x rows (quants_k.c)
        if (tier == PL_ISA_NEON) owned = pl_kq_neon_owns(t) || pl_kq_neon_low_owns(t);
#endif
        check(owned, name, "the tier has its own body for the type", t, 0, 0);
    }
}

static void test_matmul_q(int tier, const char *name) {
    static const int shapes[][2] = {{1, 256}, {7, 512}, {37, 768}, {16, 2304}, {5, 1536}};
    for (size_t ti = 0; ti < sizeof qtypes / sizeof qtypes[0]; ti++) {
        const QType *t = &qtypes[ti];
        int act = pl_activation_type(t->type);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int rows = shapes[s][0];
            int64_t n = shapes[s][1];
            size_t row_bytes = (size_t)(n / t->elems * t->bytes);
            uint8_t *w = malloc(row_bytes * rows);
            random_weights(t, w, n / t->elems * rows);
            // 1: decode; 3: a few; 5, 9, 19: the AVX2 batch kernel's tiles of 8, 2 and 1 inputs; 70: past its 64-input tile
            // (Q8_0 from 9 inputs: the AVX2 prompt kernel, test_avx2_q8_prompt).
            static const int token_counts[] = {1, 3, 5, 9, 19, 70};
            for (size_t tc = 0; tc < sizeof token_counts / sizeof token_counts[0]; tc++) {
                int tokens = token_counts[tc], stride = act_bytes(act, n);
                uint8_t *xq = random_quantized_inputs(act, n, tokens, PL_ISA_PORTABLE);
                float *yp = malloc((size_t)rows * tokens * 4), *yf = malloc((size_t)rows * tokens * 4);
                pl_matmul_q(t->type, w, row_bytes, xq, (size_t)stride, tokens, yp, rows, n, 0, rows);
                pl_isa_force_thread(tier);
                // Split into uneven row ranges, as threads do.
                int cut = rows / 3;
                pl_matmul_q(t->type, w, row_bytes, xq, (size_t)stride, tokens, yf, rows, n, 0, cut);
                pl_matmul_q(t->type, w, row_bytes, xq, (size_t)stride, tokens, yf, rows, n, cut, rows);
                if (avx2_q8_block_order(tier, t->type, tokens)) {
                    check(bits_equal(yp, yf, (int64_t)rows * tokens), name, "q8_0 prompt kernel = portable", rows, (int)n, tokens);
                } else if (lane_types(t->type)) {
                    // Bit for bit against the lane arithmetic; near the portable sum (another order of the same terms).
                    int ok = 1, near = 1;
                    for (int r = 0; r < rows; r++)
                        for (int i = 0; i < tokens; i++) {
                            double mag;
                            float want = lane_dotq(t->type, w + r * row_bytes, xq + i * stride, n / 32, &mag);
                            float got = yf[i * rows + r], ref = yp[i * rows + r];
                            if (memcmp(&want, &got, 4) != 0) ok = 0;
                            // Two float sums of the same exact block terms: each within (blocks + 8)·ε·Σ|terms|.
                            if (!(fabs((double)got - ref) <= 2.0 * (double)(n / 32 + 8) * 6e-8 * mag + 1e-30)) near = 0;
                        }
                    check(ok, name, t->name, rows, (int)n, tokens);
                    check(near, name, "lane-arithmetic rows near the portable sum", t->type, rows, tokens);
                } else {
                    check(bits_equal(yp, yf, (int64_t)rows * tokens), name, t->name, rows, (int)n, tokens);
                }
                if (tokens == 1) {   // pl_matvec_q on a row range alone
                    float *yv = malloc((size_t)rows * 4);
                    pl_matvec_q(t->type, w, row_bytes, xq, yv, n, cut, rows);
                    check(bits_equal(yf + cut, yv, rows - cut), name, "matvec_q row range", t->type, rows, cut);
                    free(yv);
                }
                free(xq); free(yp); free(yf);
            }
            free(w);
        }
    }
}

// The AVX2 Q8_0 prompt kernel (x86/avx2_q8_batch.c) against the portable body, bit for bit: row counts that are not
// multiples of its 8-row halves or 64-row groups, row ranges starting and ending inside them (as uneven thread
// splits would), 1 to 72 blocks (its chunks of 4: equal splits and a partial one), inputs across its 64-input tile
// (9: the first count it runs; 64, 65, 131), an output stride wider than the rows (the columns between untouched),
// and quants of −128 (ggml never writes them; a file may): exact in its int16 products. At 8 inputs, one below its
// threshold, the rows keep the row kernels' lane arithmetic.
static void test_avx2_q8_prompt(int tier, const char *name) {
    if (!avx2_q8_block_order(tier, PL_TYPE_Q8_0, PL_AVX2_Q8_BLOCK_ORDER_MIN)) return;
    const QType *t = &qtypes[0];
    static const int shapes[][2] = {{1, 32}, {7, 96}, {65, 288}, {130, 576}, {203, 2304}};
    static const int token_counts[] = {8, 9, 64, 65, 131};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int rows = shapes[si][0], n = shapes[si][1], ldy = rows + 3;
        const size_t row_bytes = (size_t)(n / 32 * 34);
        uint8_t *w = malloc(row_bytes * rows);
        random_weights(t, w, (int64_t)n / 32 * rows);
        for (int r = 0; r < rows; r += 5) w[(size_t)r * row_bytes + 2 + r % 32] = 0x80;   // −128
        for (size_t ti = 0; ti < sizeof token_counts / sizeof token_counts[0]; ti++) {
            const int tokens = token_counts[ti], stride = n / 32 * 34;
            uint8_t *xq = random_quantized_inputs(PL_TYPE_Q8_0, n, tokens, PL_ISA_PORTABLE);
            float *yp = malloc((size_t)ldy * tokens * 4), *yf = malloc((size_t)ldy * tokens * 4);
            for (int i = 0; i < ldy * tokens; i++) yp[i] = yf[i] = -12345.0f;
            pl_isa_force_thread(PL_ISA_PORTABLE);
            pl_matmul_q(PL_TYPE_Q8_0, w, row_bytes, xq, (size_t)stride, tokens, yp, ldy, n, 0, rows);
            pl_isa_force_thread(tier);
            // Three ranges cut inside halves and groups.
            const int a = rows / 3 | 1, b = rows > 70 ? rows - 67 : rows;
            pl_matmul_q(PL_TYPE_Q8_0, w, row_bytes, xq, (size_t)stride, tokens, yf, ldy, n, 0, a < rows ? a : rows);
            if (a < b) pl_matmul_q(PL_TYPE_Q8_0, w, row_bytes, xq, (size_t)stride, tokens, yf, ldy, n, a, b);
            if (a < rows && b < rows) pl_matmul_q(PL_TYPE_Q8_0, w, row_bytes, xq, (size_t)stride, tokens, yf, ldy, n, a > b ? a : b, rows);
            int untouched = 1;
            for (int i = 0; i < tokens; i++)
                for (int c = rows; c < ldy; c++) if (yf[i * ldy + c] != -12345.0f) untouched = 0;
            check(untouched, name, "q8_0 prompt kernel leaves the stride's other columns (rows, n, inputs)", rows, n, tokens);
            if (tokens >= PL_AVX2_Q8_BLOCK_ORDER_MIN) {
                check(bits_equal(yp, yf, (int64_t)ldy * tokens), name, "q8_0 prompt kernel = portable (rows, n, inputs)", rows, n, tokens);
            } else {
                // Below the threshold: the lane arithmetic (where no quant is −128: ggml's sign trick assumes it absent
                // from the input side only, so it is exact here too).
                int ok = 1;
                for (int r = 0; r < rows; r++)
                    for (int i = 0; i < tokens; i++) {
                        double mag;
                        float want = lane_dotq(PL_TYPE_Q8_0, w + r * row_bytes, xq + i * stride, n / 32, &mag);
                        if (memcmp(&want, &yf[i * ldy + r], 4) != 0) ok = 0;
                    }
                check(ok, name, "q8_0 below the prompt kernel's threshold: lane arithmetic (rows, n, inputs)", rows, n, tokens);
            }
            free(xq); free(yp); free(yf);
        }
        free(w);
    }
    pl_isa_force_thread(-1);
}

// The packed layout (pl_pack_rows, pl_matmul_packed) on the x86 tiers: every output bit for bit what the same tier's
// row kernel gives (the packed kernels compute ggml's lane arithmetic, as the row kernels do), for decode (1 input),
// a few inputs and a batch, rows not a multiple of 16 (the last group partly zero), the groups split unevenly as
// threads split them. On the avx2 tier this exercises x86/avx2_packed.c, on avx512 packed.c / packed_k.c (VNNI).
static void test_matmul_packed(int tier, const char *name) {
#if defined(__x86_64__)
    if (tier != PL_ISA_AVX2 && tier != PL_ISA_AVX512) return;
    if (tier == PL_ISA_AVX512 && !(pl_isa_features() & PL_FEATURE_AVX512_VNNI)) return;   // its packed bodies need VNNI
    static const int types[] = {PL_TYPE_Q8_0, PL_TYPE_Q4_0, PL_TYPE_Q4_1, PL_TYPE_Q5_0, PL_TYPE_Q4_K};
    // 2304 columns: 72 blocks, past the batch kernel's 64-block chunk and the Q5_0 kernel's 32-block chunk of
    // corrections; 70 inputs: past the batch kernel's 64-input tile; 485 rows: 31 groups, so each half of the split
    // spans more groups than Q4_1's chunked prompt kernel keeps in L2 at once (12 at 72 blocks).
    static const int shapes[][2] = {{7, 256}, {16, 512}, {37, 768}, {40, 1536}, {24, 2304}, {485, 2304}};
    static const int token_counts[] = {1, 2, 3, 4, 5, 8, 9, 70};   // 2-8: the few-inputs kernel (Q4_1, Q8_0)
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const QType *t = NULL;
        for (size_t q = 0; q < sizeof qtypes / sizeof qtypes[0]; q++) if (qtypes[q].type == types[ti]) t = &qtypes[q];
        int act = pl_activation_type(t->type);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int rows = shapes[s][0];
            int64_t n = shapes[s][1];
            size_t row_bytes = (size_t)(n / t->elems * t->bytes);
            uint8_t *w = malloc(row_bytes * rows);
            random_weights(t, w, n / t->elems * rows);
            size_t pbytes = pl_packed_bytes(t->type, rows, n);
            uint8_t *packed = aligned_alloc(64, (pbytes + 63) / 64 * 64);
            int64_t groups = (rows + 15) / 16;
            pl_pack_rows(t->type, w, row_bytes, rows, n, packed, 0, groups);
            if (t->type != PL_TYPE_Q4_K) {
                // pl_pack_row_list: the same rows, each at its own address (here in reverse order behind a 5-byte
                // offset, as a paged FFN's bundles sit in their groups' buffers), packed to the same bytes.
                uint8_t *scattered = malloc((row_bytes + 5) * rows), *listed = aligned_alloc(64, (pbytes + 63) / 64 * 64);
                const void **pointers = malloc(sizeof(void *) * rows);
                for (int r = 0; r < rows; r++) {
                    uint8_t *at = scattered + (size_t)(rows - 1 - r) * (row_bytes + 5);
                    memcpy(at + 5, w + (size_t)r * row_bytes, row_bytes);
                    pointers[r] = at;
                }
                memset(listed, 0xA5, pbytes);   // every byte written, the last group's padding rows too
                pl_pack_row_list(t->type, pointers, 5, rows, n, listed);
                check(memcmp(packed, listed, pbytes) == 0, name, "row list = pack_rows", t->type, rows, 0);
                free(scattered); free(listed); free(pointers);
            }
            for (size_t tc = 0; tc < sizeof token_counts / sizeof token_counts[0]; tc++) {
                int tokens = token_counts[tc], stride = act_bytes(act, n);
                uint8_t *xq = random_quantized_inputs(act, n, tokens, tier);
                float *yr = malloc((size_t)rows * tokens * 4), *yp = malloc((size_t)rows * tokens * 4);
                // The row kernel, one input at a time (the AVX2 Q8_0 prompt kernel computes another order).
                for (int i = 0; i < tokens; i++)
                    pl_matmul_q(t->type, w, row_bytes, xq + (size_t)i * stride, (size_t)stride, 1, yr + (size_t)i * rows, rows, n, 0, rows);
                int64_t cut = groups / 2 * 16;   // whole groups, as Linear hands them out
                if (cut > 0) pl_matmul_packed(t->type, packed, rows, n, xq, (size_t)stride, tokens, yp, rows, 0, cut);
                pl_matmul_packed(t->type, packed, rows, n, xq, (size_t)stride, tokens, yp, rows, cut, rows);
                check(bits_equal(yr, yp, (int64_t)rows * tokens), name, "packed = rows", t->type, rows, tokens);
                free(xq); free(yr); free(yp);
            }
            free(w); free(packed);
        }
    }
    pl_isa_force_thread(-1);
#else
    (void)tier; (void)name;
#endif
}

static void test_float_kernels(int tier, const char *name) {
    static const int types[] = {PL_TYPE_F32, PL_TYPE_F16, PL_TYPE_BF16};
    for (int ti = 0; ti < 3; ti++) {
        int type = types[ti], es = type == PL_TYPE_F32 ? 4 : 2;
        for (int64_t n = 1; n <= 600; n += 73) {
            int rows = 11;
            uint8_t *w = malloc((size_t)(n * rows * es));
            float *x = malloc((size_t)n * 4), *wf = malloc((size_t)(n * rows) * 4);
            random_input(x, n);
            for (int64_t i = 0; i < n * rows; i++) {
                float v = unit() * 2 - 1;
                if (type == PL_TYPE_F32) memcpy(w + 4 * i, &v, 4);
                else if (type == PL_TYPE_F16) put_f16(w + 2 * i, v);
                else { uint32_t b; memcpy(&b, &v, 4); uint16_t h = (uint16_t)(b >> 16); memcpy(w + 2 * i, &h, 2); }
            }
            float *yp = malloc(rows * 4), *yf = malloc(rows * 4);
            pl_isa_force_thread(PL_ISA_PORTABLE);
            pl_matvec(type, w, (size_t)(n * es), x, yp, n, 0, rows);
            pl_dequantize_rows(type, w, (size_t)(n * es), wf, n, 0, rows);
            pl_isa_force_thread(tier);
            pl_matvec(type, w, (size_t)(n * es), x, yf, n, 0, rows);
            // Summation order differs between tiers: bound by n·ε·Σ|w·x| (each partial sum rounds once).
            int ok = 1;
            for (int r = 0; r < rows; r++) {
                double mag = 0;
                for (int64_t k = 0; k < n; k++) mag += fabs((double)wf[r * n + k] * x[k]);
                if (fabs((double)yp[r] - yf[r]) > (double)n * 1.2e-7 * mag + 1e-30) ok = 0;
            }
            check(ok, name, "matvec float weights within n·eps·sum|wx| (type, n)", type, (int)n, 0);
            float *df = malloc((size_t)(n * rows) * 4);
            pl_dequantize_rows(type, w, (size_t)(n * es), df, n, 0, rows);
            check(bits_equal(wf, df, n * rows), name, "dequantize float rows", type, (int)n, 0);
            free(w); free(x); free(wf); free(yp); free(yf); free(df);
        }
    }
    // Quantized dequantization: the same products d·q (+ m) on every tier.
    for (size_t ti = 0; ti < sizeof qtypes / sizeof qtypes[0]; ti++) {
        const QType *t = &qtypes[ti];
        int64_t n = 768;
        uint8_t *w = malloc((size_t)(n / t->elems * t->bytes));
        random_weights(t, w, n / t->elems);
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        pl_isa_force_thread(PL_ISA_PORTABLE); pl_dequantize_row(t->type, w, a, n);
        pl_isa_force_thread(tier); pl_dequantize_row(t->type, w, b, n);
        int ok = 1;
        // Q4_1 is d·q + m: fused on the vector tiers, so one rounding apart at most.
        for (int64_t i = 0; i < n; i++)
            if (t->type == PL_TYPE_Q4_1 ? fabsf(a[i] - b[i]) > 1.2e-7f * (fabsf(a[i]) + fabsf(b[i])) + 1e-38f
                                        : memcmp(a + i, b + i, 4) != 0) ok = 0;
        check(ok, name, t->name, -1, (int)n, 0);
        free(w); free(a); free(b);
    }
}

static void test_math(int tier, const char *name) {
    enum { N = 4099 };
    float *x = malloc(N * 4), *a = malloc(N * 4), *b = malloc(N * 4), *u = malloc(N * 4);
    for (int i = 0; i < N; i++) { x[i] = (unit() - 0.5f) * 200.0f; u[i] = unit() * 4 - 2; }
    x[0] = 88.7f; x[1] = -104.0f; x[2] = 0.0f; x[3] = -0.0f; x[4] = INFINITY; x[5] = -INFINITY; x[6] = 1e-40f;
    pl_isa_force_thread(PL_ISA_PORTABLE); pl_expf_row(x, a, N);
    pl_isa_force_thread(tier); pl_expf_row(x, b, N);
    check(bits_equal(a, b, N), name, "expf row (libm's bits)", N, 0, 0);
    // A sweep of bit patterns across the whole float range.
    for (uint32_t s = 0; s < 64; s++) {
        for (int i = 0; i < N; i++) { uint32_t bitsv = (uint32_t)(next_u64() >> 32); memcpy(x + i, &bitsv, 4); if (isnan(x[i])) x[i] = 1.0f; }
        pl_isa_force_thread(PL_ISA_PORTABLE); pl_expf_row(x, a, N);
        pl_isa_force_thread(tier); pl_expf_row(x, b, N);
        check(bits_equal(a, b, N), name, "expf random bit patterns", (int)s, 0, 0);
    }
    for (int i = 0; i < N; i++) x[i] = (unit() - 0.5f) * 40.0f;
    memcpy(a, x, N * 4); memcpy(b, x, N * 4);
    pl_isa_force_thread(PL_ISA_PORTABLE); pl_swiglu(a, u, N);
    pl_isa_force_thread(tier); pl_swiglu(b, u, N);
    check(bits_equal(a, b, N), name, "swiglu", N, 0, 0);
    uint16_t *hp = malloc(N * 2), *hf = malloc(N * 2);
    pl_isa_force_thread(PL_ISA_PORTABLE); pl_f32_to_f16_row(x, hp, N);
    pl_isa_force_thread(tier); pl_f32_to_f16_row(x, hf, N);
    check(memcmp(hp, hf, N * 2) == 0, name, "f32 -> f16 row", N, 0, 0);
    free(x); free(a); free(b); free(u); free(hp); free(hf);
    // The memory-bandwidth probe: the same XOR however many streams read the bytes (odd lengths leave a tail).
    pl_isa_force_thread(tier);
    uint8_t *mem = malloc(100003);
    for (int i = 0; i < 100003; i++) mem[i] = (uint8_t)next_u64();
    for (int len = 1; len <= 100003; len += len < 600 ? 97 : 33331)
        for (int streams = 1; streams <= 5; streams++)
            check(pl_read_memory_streams(mem, (size_t)len, streams) == pl_read_memory(mem, (size_t)len), name,
                  "read_memory_streams XOR (bytes, streams)", len, streams, 0);
    free(mem);
}

// Greedy choice over logits and Gemma's GeGLU (portable/logits.c and its vector bodies). The argmax cases plant the
// answer, so the portable body is checked against it too: ties (the first wins), NaNs (never win), all −∞ (0), the
// maximum in the tail past the last whole vector, lengths around the vector and unroll widths.
static void test_logits(int tier, const char *name) {
    static const int lengths[] = {1, 2, 15, 16, 17, 63, 64, 65, 127, 1000, 4099, 262144};
    float *x = malloc(262144 * 4);
    for (int li = 0; li < 12; li++) {
        int n = lengths[li];
        for (int trial = 0; trial < 6; trial++) {
            for (int i = 0; i < n; i++) x[i] = (unit() - 0.5f) * 30.0f;
            int at = (int)(next_u64() % (uint64_t)n);
            if (trial == 1) at = n - 1;                     // in the tail
            if (trial == 2) at = 0;
            x[at] = 100.0f;
            if (trial == 3 && at + 1 < n) x[n - 1] = 100.0f;     // a later tie
            if (trial == 4) for (int i = 0; i < n; i += 3) if (i != at) x[i] = NAN;
            int expect = at;
            if (trial == 5) { for (int i = 0; i < n; i++) x[i] = -INFINITY; expect = 0; if (n > 3) x[2] = NAN; }
            pl_isa_force_thread(PL_ISA_PORTABLE); int64_t a = pl_argmax(x, n);
            pl_isa_force_thread(tier); int64_t b = pl_argmax(x, n);
            check(a == expect && b == expect, name, "argmax (n, trial, index)", n, trial, (int)b);
        }
    }
    // ggml's table: gelu of each f16 value, rounded to f16.
    float *table = malloc(65536 * 4);
    for (int h = 0; h < 65536; h++) {
        float v = pl_f16_to_f32((uint16_t)h);
        float y = 0.5f * v * (1.0f + tanhf(0.79788456080286535587989211986876f * v * (1.0f + 0.044715f * v * v)));
        table[h] = pl_f16_to_f32(pl_f32_to_f16(y));
    }
    enum { N = 1003 };
    float g[N], u[N], a[N], b[N];
    for (int i = 0; i < N; i++) { g[i] = (unit() - 0.5f) * 26.0f; u[i] = (unit() - 0.5f) * 8.0f; }
    const float edges[] = {-10.0f, 10.0f, -9.999999f, 9.999999f, 0.0f, -0.0f, 1e-30f, -6e-8f, 65520.0f, -1e30f, INFINITY, -INFINITY};
    for (int i = 0; i < 12; i++) g[i] = edges[i];
    for (int len = 1; len <= N; len += len < 40 ? 1 : 241) {
        memcpy(a, g, sizeof g); memcpy(b, g, sizeof g);
        pl_isa_force_thread(PL_ISA_PORTABLE); pl_geglu_table(a, u, table, len);
        pl_isa_force_thread(tier); pl_geglu_table(b, u, table, len);
        check(bits_equal(a, b, N), name, "geglu through the GELU table (n)", len, 0, 0);
    }
    // Independent of either body: a value inside the range looks its f16 rounding up; the clamps.
    pl_isa_force_thread(tier);
    float gx[3] = {0.5f, -11.0f, 12.0f}, ux[3] = {2.0f, 3.0f, 0.5f};
    pl_geglu_table(gx, ux, table, 3);
    check(gx[0] == table[pl_f32_to_f16(0.5f)] * 2.0f && gx[1] == 0.0f && gx[2] == 6.0f, name, "geglu values", 0, 0, 0);
    free(x); free(table);
}

static void test_gemm(int tier, const char *name) {
    int K = 96, rows = 45, tokens = 11;
    float *x = malloc((size_t)tokens * K * 4), *w = malloc((size_t)rows * K * 4);
    float *yp = malloc((size_t)tokens * rows * 4), *yf = malloc((size_t)tokens * rows * 4), *panel = malloc((size_t)32 * K * 4);
    random_input(x, (int64_t)tokens * K);
    for (int i = 0; i < rows * K; i++) w[i] = unit() * 2 - 1;
    pl_isa_force_thread(PL_ISA_PORTABLE); pl_gemm_f32(x, K, tokens, w, K, K, yp, rows, 0, rows, panel);
    pl_isa_force_thread(tier); pl_gemm_f32(x, K, tokens, w, K, K, yf, rows, 0, rows, panel);
    check(bits_equal(yp, yf, (int64_t)tokens * rows), name, "gemm_f32 (one fma chain per output)", rows, K, tokens);
    free(x); free(w); free(yp); free(yf); free(panel);
}

// A few inputs against F32, F16 and BF16 rows (pl_matmul_float_few, a decode batch): on each tier every output bit for
// bit what pl_matvec gives that input alone, over a sub-range of rows (a thread's share; rows not a multiple of the
// AVX-512 body's four streams), widths with and without a tail past its 16- and 32-element steps, 1 to 8 inputs; the
// outputs outside the range stay untouched.
static void test_matmul_float_few(int tier, const char *name) {
    static const int types[] = {PL_TYPE_F32, PL_TYPE_F16, PL_TYPE_BF16};
    static const int widths[] = {96, 100, 576, 7};
    for (int ti = 0; ti < 3; ti++)
        for (int wi = 0; wi < 4; wi++)
            for (int tokens = 1; tokens <= PL_FLOAT_FEW_MAX; tokens++) {
                const int type = types[ti], K = widths[wi], rows = 45, r0 = 3, r1 = 42, ldx = K + 5, ldy = rows + 2;
                const size_t row_bytes = (size_t)K * (type == PL_TYPE_F32 ? 4 : 2);
                float *x = malloc((size_t)tokens * ldx * 4), *wf = malloc((size_t)rows * K * 4);
                uint16_t *wh = malloc((size_t)rows * K * 2);
                float *few = malloc((size_t)tokens * ldy * 4), *alone = malloc((size_t)tokens * ldy * 4);
                random_input(x, (int64_t)tokens * ldx);
                for (int i = 0; i < rows * K; i++) {
                    wf[i] = unit() * 2 - 1;
                    wh[i] = type == PL_TYPE_F16 ? pl_f32_to_f16(wf[i]) : pl_f32_to_bf16(wf[i]);
                }
                const void *w = type == PL_TYPE_F32 ? (const void *)wf : (const void *)wh;
                for (int i = 0; i < tokens * ldy; i++) few[i] = alone[i] = -7.0f;
                pl_isa_force_thread(tier);
                pl_matmul_float_few(type, w, row_bytes, x, ldx, tokens, few, ldy, K, r0, r1);
                for (int t = 0; t < tokens; t++) pl_matvec(type, w, row_bytes, x + t * ldx, alone + t * ldy + r0, K, r0, r1);
                check(bits_equal(few, alone, (int64_t)tokens * ldy), name,
                      "matmul_float_few = matvec per input, rows outside the range untouched (type, width, inputs)",
                      type, K, tokens);
                free(x); free(wf); free(wh); free(few); free(alone);
            }
}

int main(int argc, char **argv) {
    const char *require = argc > 2 && strcmp(argv[1], "--require") == 0 ? argv[2] : "";
    unsigned f = pl_isa_features();
    printf("CPU: best tier %s, features:%s%s%s%s%s\n", pl_isa_name(pl_isa_best()), f & PL_FEATURE_AVX512_VNNI ? " avx512-vnni" : "",
           f & PL_FEATURE_AVX_VNNI ? " avx-vnni" : "", f & PL_FEATURE_AVX512_BF16 ? " avx512-bf16" : "",
           f & PL_FEATURE_DOTPROD ? " dotprod" : "", f & PL_FEATURE_I8MM ? " i8mm" : "");
    char req[256];
    snprintf(req, sizeof req, "%s", require);
    for (char *tok = strtok(req, ","); tok; tok = strtok(NULL, ",")) {
        if (strcmp(tok, "avx512-bf16") == 0) {   // a feature, not a tier: the BF16-cache attention body
            if (!(f & PL_FEATURE_AVX512_BF16)) {
                printf("FAIL: required feature avx512-bf16 is absent on this CPU: its attention body was not tested\n");
                g_fail++;
            }
            continue;
        }
        int t = pl_isa_from_name(tok);
        if (t < 0 || !pl_isa_supported(t)) {
            printf("FAIL: required tier %s is absent on this CPU: its bodies were not tested\n", tok);
            g_fail++;
        }
    }
    for (int tier = PL_ISA_AVX2; tier <= PL_ISA_NEON; tier++) {
        if (!pl_isa_supported(tier)) continue;
        const char *name = pl_isa_name(tier);
        int before = g_fail, pass0 = g_pass;
        test_quantize(tier, name);
        test_quantize_q8_K_edges(tier, name);
        test_tier_claims(tier, name);
        test_matmul_q(tier, name);
        test_avx2_q8_prompt(tier, name);
        test_matmul_packed(tier, name);
        test_bundles(tier, name);
        test_float_kernels(tier, name);
        test_math(tier, name);
        test_logits(tier, name);
        test_attention(tier, name);
        test_attention_tile(tier, name);
        test_attention_bf16(tier, name);
        test_gemm(tier, name);
        test_matmul_float_few(tier, name);
        pl_isa_force_thread(-1);
        printf("tier %s vs portable: %d checks, %d failed\n", name, g_pass - pass0 + g_fail - before, g_fail - before);
    }
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
