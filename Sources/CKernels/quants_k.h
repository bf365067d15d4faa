#ifndef POCKETLM_QUANTS_K_H
#define POCKETLM_QUANTS_K_H
// Private interface between kernels.c's dispatch and the Q5_0/Q5_1/K-quant kernels (quants_k.c: portable
// reference; x86/avx512_quants_k.c: AVX-512 VNNI bodies; x86/avx512_quants_k_batch.c: several-input bodies).
#include "ckernels.h"
#include <string.h>

/// Q4_K/Q5_K's 8 six-bit scales and 8 six-bit minimums from their 12 packed bytes (ggml's get_scale_min_k4, four at
/// a time in 32-bit words), for the vector bodies.
static inline void pl_kq_scales_mins_k4(const uint8_t *packed, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t u[3];
    memcpy(u, packed, 12);
    uint32_t s0 = u[0] & 0x3f3f3f3f, s1 = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
    uint32_t m0 = u[1] & 0x3f3f3f3f, m1 = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
    memcpy(sc, &s0, 4); memcpy(sc + 4, &s1, 4); memcpy(mn, &m0, 4); memcpy(mn + 4, &m1, 4);
}

/// 1 for Q5_0, Q5_1, Q2_K … Q6_K: the types these files own.
int pl_kq_owns(int type);
/// Q3_K's 16 six-bit scales minus 32 from their 12 packed bytes (low 4 bits in bytes 0..7, two nibbles each; high 2
/// bits in bytes 8..11), four at a time in 32-bit words, for the vector bodies.
static inline void pl_kq_scales_q3k(const uint8_t *packed, int8_t sc[16]) {
    uint32_t a[4];
    memcpy(a, packed, 12);
    const uint32_t t = a[2], m2 = 0x0f0f0f0f, m1 = 0x03030303;
    a[2] = ((a[0] >> 4) & m2) | (((t >> 4) & m1) << 4);
    a[3] = ((a[1] >> 4) & m2) | (((t >> 6) & m1) << 4);
    a[0] = (a[0] & m2) | ((t & m1) << 4);
    a[1] = (a[1] & m2) | (((t >> 2) & m1) << 4);
    // − 32 per byte without borrows between them: the top bit set first, cleared after (every byte is 0..63)
    for (int i = 0; i < 4; i++) a[i] = ((a[i] | 0x80808080u) - 0x20202020u) ^ 0x80808080u;
    memcpy(sc, a, 16);
}

/// Bytes of one file block and elements per block of an owned type.
int pl_kq_block_bytes(int type);
int pl_kq_block_elems(int type);

void pl_kq_dequantize_row(int type, const void *src, float *dst, int64_t n);
void pl_kq_matmul(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                  int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1);

/// One row against one quantized input, portable: the reference every fast body must equal bit for bit.
float pl_kq_dot_portable(int type, const uint8_t *w, const uint8_t *xq, int64_t n);

#if defined(__x86_64__)
/// 1 when the AVX-512 VNNI bodies run here (and the caller has not forced the portable path).
int pl_kq_fast(void);
/// Rows r0 ..< r1 against n_tokens inputs, VNNI bodies; each output bit-identical to pl_kq_dot_portable.
void pl_kq_matmul_vnni(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                       int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1);
/// Rows r0 ..< r1 of a Q4_K/Q6_K matrix held as super-block columns in separate buffers (block b of row r at
/// groups[b / spg] + r·slice_bytes + (b mod spg)·block bytes), one input: the bits of pl_kq_matmul_vnni on the matrix.
void pl_kq_matmul_groups_vnni(int type, const uint8_t *const *groups, int64_t spg, size_t slice_bytes,
                              const uint8_t *xq, float *y, int64_t n, int64_t r0, int64_t r1);
/// 1 for the types x86/avx512_quants_k_batch.c has a several-input body for (Q4_K, Q6_K).
int pl_kq_batch_owns(int type);
/// pl_kq_matmul_vnni for several inputs (prefill): each super-block unpacked once for a tile of inputs.
void pl_kq_matmul_batch_vnni(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                             int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1);
/// 1 for the types x86/avx2_quants_k.c has an AVX2 body for (Q5_0, Q5_1, Q4_K, Q6_K).
int pl_kq_avx2_owns(int type);
/// Rows r0 ..< r1 against n_tokens inputs, AVX2 bodies; each output bit-identical to pl_kq_dot_portable.
void pl_kq_matmul_avx2(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                       int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1);
/// Q4_K/Q6_K against several inputs (x86/avx2_quants_k_batch.c): eight rows unpacked once for every input;
/// bit-identical to pl_kq_matmul_avx2's rows.
void pl_kq_matmul_batch_avx2(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                             int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1);
/// 1 for the types x86/avx2_quants_k_low.c has an AVX2 body for (Q2_K, Q3_K, Q5_K).
int pl_kq_avx2_low_owns(int type);
/// Rows r0 ..< r1 against n_tokens inputs, AVX2 bodies of Q2_K/Q3_K/Q5_K; bit-identical to pl_kq_dot_portable.
void pl_kq_matmul_avx2_low(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                           int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1);
#endif
#if defined(__aarch64__)
/// 1 for the types arm/neon_quants_k.c has a NEON body for (Q4_K, Q6_K).
int pl_kq_neon_owns(int type);
/// Rows r0 ..< r1 against n_tokens inputs, NEON bodies (sdot where the CPU has dotprod); bit-identical to the portable.
void pl_kq_matmul_neon(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                       int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1);
/// 1 for the types arm/neon_quants_k_low.c has a NEON body for (Q2_K, Q3_K, Q5_K).
int pl_kq_neon_low_owns(int type);
/// Rows r0 ..< r1 against n_tokens inputs, NEON bodies of Q2_K/Q3_K/Q5_K; bit-identical to the portable.
void pl_kq_matmul_neon_low(int type, const uint8_t *w, size_t row_bytes, const uint8_t *xq, size_t xq_stride,
                           int64_t n_tokens, float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1);
/// One Q8_K block of pl_quantize_q8_K (bit-identical); 0 (nothing written) for a block with a NaN or an infinity or
/// whose −127/max overflows (the portable body's cases).
int pl_neon_quantize_q8_K_block(const float *x, uint8_t *out);
#endif

#endif
