// An estimate for a project decision, not a kernel of the runtime: what a BF16 KV cache with AVX512_BF16 dot products
// (llama.cpp's `-ctk bf16 -ctv bf16`) would make of a prompt chunk's attention at depth, against the F16 tile
// (pl_avx512_attention_tile, llama.cpp's default F16 numerics) on the same keys and values. The prototype computes
// Q·K with vdpbf16ps over pairs of elements (keys transposed 16 rows at a time, as pairs) and P·V with vdpbf16ps over
// pairs of positions (two V rows interleaved), the softmax in f32 with the same expf; its sums are not llama.cpp's
// order, so it shows speed only, and its outputs are compared with the F16 tile's by their largest difference.
// Thread CPU time, so a shared machine distorts it little. `make kernel-bench-bf16`.
//
// It includes avx512_math.c to reuse its static helpers (transpose16, the expf), so the make target leaves that file
// out of the kernel sources it links.
#include "../../Sources/CKernels/x86/avx512_math.c"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define BF16T __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,f16c,fma")))

BF16T static inline __attribute__((always_inline)) void qk(const int NP, const uint32_t *q0, const uint32_t *q1, const float *kt, __m512 vscale, __m512 r[2]) {
    const uint32_t *qs[2] = {q0, q1};
    __m512 a[2][4];
    PL_UNROLL
    for (int p = 0; p < NP; p++) PL_UNROLL for (int i = 0; i < 4; i++) a[p][i] = _mm512_setzero_ps();
    PL_UNROLL
    for (int e = 0; e < 32; e++) {
        __m512bh kk = (__m512bh)_mm512_load_ps(kt + e * 16);
        PL_UNROLL
        for (int p = 0; p < NP; p++) a[p][e & 3] = _mm512_dpbf16_ps(a[p][e & 3], kk, (__m512bh)_mm512_set1_epi32(qs[p][e]));
    }
    PL_UNROLL
    for (int p = 0; p < NP; p++) r[p] = _mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(a[p][0], a[p][1]), _mm512_add_ps(a[p][2], a[p][3])), vscale);
}
// Positions u and u+1 of V (two rows interleaved element by element) into the outputs of M pairs; with `tail`,
// only the pairs that see position u.
BF16T static inline __attribute__((always_inline)) void pv_step(const int M, const int tail, int64_t u, const uint16_t *v,
                                                                int64_t stride, const uint16_t *const pb[6],
                                                                const int64_t *seen, __m512 o[6][4]) {
    const uint16_t *v0 = v + u * stride, *v1 = v0 + stride;
    const __m512i a0 = _mm512_loadu_si512(v0), a1 = _mm512_loadu_si512(v0 + 32);
    const __m512i b0 = _mm512_loadu_si512(v1), b1 = _mm512_loadu_si512(v1 + 32);
    const __m512bh w[4] = {(__m512bh)_mm512_unpacklo_epi16(a0, b0), (__m512bh)_mm512_unpackhi_epi16(a0, b0),
                           (__m512bh)_mm512_unpacklo_epi16(a1, b1), (__m512bh)_mm512_unpackhi_epi16(a1, b1)};
    PL_UNROLL
    for (int j = 0; j < M; j++) {
        if (tail && u >= seen[j]) continue;
        uint32_t pp;
        memcpy(&pp, pb[j] + u, 4);
        const __m512bh pvv = (__m512bh)_mm512_set1_epi32(pp);
        PL_UNROLL
        for (int c = 0; c < 4; c++) o[j][c] = _mm512_dpbf16_ps(o[j][c], w[c], pvv);
    }
}

// Outputs of pairs p0 ..< p0+M from their bf16 probabilities (pairs of positions as dwords).
BF16T static inline __attribute__((always_inline)) void pv(const int M, const float *scores, int64_t ld, int64_t p0,
                                                           const int64_t *seen, const uint16_t *v, int64_t stride,
                                                           float *const *outp) {
    __m512 o[6][4];
    PL_UNROLL
    for (int j = 0; j < M; j++) PL_UNROLL for (int c = 0; c < 4; c++) o[j][c] = _mm512_setzero_ps();
    const int64_t n_min = seen[p0], n_max = seen[p0 + M - 1];
    const uint16_t *pb[6];
    PL_UNROLL
    for (int j = 0; j < M; j++) pb[j] = (const uint16_t *)(scores + (p0 + j) * ld);
    int64_t u = 0;
    for (; u + 1 < n_min; u += 2) pv_step(M, 0, u, v, stride, pb, seen + p0, o);
    for (; u < n_max; u += 2) pv_step(M, 1, u, v, stride, pb, seen + p0, o);
    for (int j = 0; j < M; j++) {
        float tmp[64];
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(tmp + 16 * c, o[j][c]);
        for (int half = 0; half < 2; half++)
            for (int L = 0; L < 4; L++)
                for (int i = 0; i < 4; i++) {
                    outp[p0 + j][32 * half + 8 * L + i] = tmp[32 * half + 4 * L + i];
                    outp[p0 + j][32 * half + 8 * L + 4 + i] = tmp[32 * half + 16 + 4 * L + i];
                }
    }
}
BF16T static void bf16_tile(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads, const uint16_t *k,
                     const uint16_t *v, int64_t stride, int64_t n_ctx, float scale, float *scores, float *out,
                     int64_t out_stride) {
    enum { HD = 64, PV = 4 };
    const int64_t pairs = n_queries * n_heads, ld = (n_ctx + n_queries - 1 + 1) & ~1;
    _Alignas(64) uint32_t qb[16][32];
    _Alignas(64) float kt[32 * 16];
    int64_t seen[16]; float *outp[16];
    __m512 vmax[16];
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t t = p / n_heads, g = p % n_heads;
        seen[p] = n_ctx + t; outp[p] = out + t * out_stride + g * HD; vmax[p] = _mm512_set1_ps(-INFINITY);
        const float *qp = q + t * q_stride + g * HD;
        for (int c = 0; c < 2; c++)
            _mm512_store_si512((void *)(qb[p] + 16 * c), (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(qp + 32 * c + 16), _mm512_loadu_ps(qp + 32 * c)));
    }
    const __m512 vscale = _mm512_set1_ps(scale);
    const int64_t nrows = n_ctx + n_queries - 1;
    for (int64_t b = 0; b < nrows; b += 16) {
        const int64_t rows = nrows - b < 16 ? nrows - b : 16;
        const uint16_t *kb = k + b * stride;
        for (int j = 0; j < 16; j++) _mm_prefetch((const char *)(kb + (16 + j) * stride), _MM_HINT_T0);
        for (int c = 0; c < 2; c++) {
            __m512 r[16];
            for (int j = 0; j < 16; j++) r[j] = j < rows ? _mm512_loadu_ps((const float *)(kb + j * stride + 32 * c)) : _mm512_setzero_ps();
            transpose16(r);
            for (int e = 0; e < 16; e++) _mm512_store_ps(kt + (16 * c + e) * 16, r[e]);
        }
        const __mmask16 valid = (__mmask16)((1u << rows) - 1);
        int64_t p = 0;
        while (p < pairs && seen[p] <= b) p++;
        for (; p < pairs; p += 2) {
            const int two = p + 1 < pairs;
            __m512 r[2];
            if (two) qk(2, qb[p], qb[p + 1], kt, vscale, r); else qk(1, qb[p], qb[p], kt, vscale, r);
            for (int j = 0; j < 1 + two; j++) {
                const int64_t own = seen[p + j] - b;
                const __mmask16 mine = own >= 16 ? valid : (__mmask16)(valid & ((1u << own) - 1));
                _mm512_mask_storeu_ps(scores + (p + j) * ld + b, valid, r[j]);
                vmax[p + j] = _mm512_mask_max_ps(vmax[p + j], mine, vmax[p + j], r[j]);
            }
        }
    }
    for (int64_t p = 0; p < pairs; p++) {
        float *sp = scores + p * ld, mx = _mm512_reduce_max_ps(vmax[p]);
        int64_t u = 0;
        __m512 vs = _mm512_setzero_ps();
        for (; u + 16 <= seen[p]; u += 16) _mm512_storeu_ps(sp + u, _mm512_sub_ps(_mm512_loadu_ps(sp + u), _mm512_set1_ps(mx)));
        for (; u < seen[p]; u++) sp[u] -= mx;
        pl_avx512_expf(sp, sp, seen[p]);
        for (u = 0; u + 16 <= seen[p]; u += 16) vs = _mm512_add_ps(vs, _mm512_loadu_ps(sp + u));
        float sum = _mm512_reduce_add_ps(vs);
        for (; u < seen[p]; u++) sum += sp[u];
        if (seen[p] & 1) sp[seen[p]] = 0.0f;
        const __m512 vinv = _mm512_set1_ps(1.0f / sum);
        uint16_t *pb = (uint16_t *)sp;
        const int64_t n2 = (seen[p] + 1) & ~1;
        for (u = 0; u < n2; u += 32) {
            __mmask16 m0 = n2 - u >= 16 ? 0xffff : (__mmask16)((1u << (n2 - u)) - 1);
            __mmask16 m1 = n2 - u >= 32 ? 0xffff : n2 - u <= 16 ? 0 : (__mmask16)((1u << (n2 - u - 16)) - 1);
            __m512 lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, sp + u), vinv), hi = _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, sp + u + 16), vinv);
            _mm512_mask_storeu_epi16(pb + u, ((__mmask32)m1 << 16) | m0, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        }
    }
    for (int64_t p0 = 0; p0 < pairs; p0 += PV) {
        const int64_t m = pairs - p0 < PV ? pairs - p0 : PV;
        switch (m) {
        case 1: pv(1, scores, ld, p0, seen, v, stride, outp); break;
        case 2: pv(2, scores, ld, p0, seen, v, stride, outp); break;
        case 3: pv(3, scores, ld, p0, seen, v, stride, outp); break;
        case 4: pv(4, scores, ld, p0, seen, v, stride, outp); break;
        case 5: pv(5, scores, ld, p0, seen, v, stride, outp); break;
        default: pv(6, scores, ld, p0, seen, v, stride, outp); break;
        }
    }
}

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static float unit(void) { return rand() / 2147483648.0f; }
static uint16_t bf16_of_f16(uint16_t h) {
    float f = pl_f16_to_f32(h);
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);   // nearest even, as ggml stores a float in bf16
}

// SmolLM2-135M's attention (30 layers x 3 KV heads, head_dim 64, 3 query heads each): a chunk of `chunk` tokens at
// `depth`, tiles of 5 queries, KV head by KV head.
static void run(int depth, int chunk, int reps) {
    enum { L = 30, H = 3, G = 3, HD = 64, T = 5 };
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
    float *s = aligned_alloc(64, 4 * (size_t)16 * (cap + 64));
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
                            pl_avx512_attention_tile(q + r * qd + h * G * HD, qd, n, G, K + off, V + off, HD, depth + r + 1,
                                                     0.125f, s, o[0] + r * qd + h * G * HD, qd);
                        else
                            bf16_tile(q + r * qd + h * G * HD, qd, n, G, Kb + off, Vb + off, HD, depth + r + 1, 0.125f, s,
                                      o[1] + r * qd + h * G * HD, qd);
                    }
                }
            t[mode] += cpu_seconds() - t0;
        }
    double md = 0;
    for (int i = 0; i < chunk * qd; i++) md = fmax(md, fabs(o[0][i] - o[1][i]));
    printf("%4d-token chunk at depth %4d: F16 tile %.3f ms/token, BF16 prototype %.3f ms/token (%.2fx); largest output "
           "difference %.2g\n", chunk, depth, t[0] * 1e3 / chunk / reps, t[1] * 1e3 / chunk / reps, t[0] / t[1], md);
    free(K); free(V); free(Kb); free(Vb); free(q); free(o[0]); free(o[1]); free(s);
}

int main(void) {
    if (!pl_isa_supported(PL_ISA_AVX512) || !__builtin_cpu_supports("avx512bf16")) {
        printf("SKIPPED: this CPU lacks AVX-512 with AVX512_BF16\n");
        return 0;
    }
    run(30, 45, 20);
    run(1570, 45, 4);
    run(30, 343, 3);
    run(1570, 343, 1);
    return 0;
}
