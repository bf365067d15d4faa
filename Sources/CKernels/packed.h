#ifndef POCKETLM_PACKED_H
#define POCKETLM_PACKED_H
// Private interface between packed.c (the 16-row interleaved layout, packing, one-input and Q4_1 kernels) and
// x86/avx512_packed_batch.c (several inputs over Q4_0/Q5_0/Q8_0, each block unpacked once for a tile of inputs).
#include "ckernels.h"
#include "kernels_internal.h"

static inline int64_t pl_packed_block_bytes(int type) {
    switch (type) {
    case PL_TYPE_Q4_0: return 16 * 18;  // 256 B quants + 32 B scales
    case PL_TYPE_Q4_1: return 16 * 20;  // 256 B quants + 32 B scales + 32 B minimums
    case PL_TYPE_Q5_0: return 16 * 22;  // 256 B quants + 64 B 5th-bit masks + 32 B scales
    case PL_TYPE_Q8_0: return 16 * 34;  // 512 B quants + 32 B scales
    // K-quants are packed per super-block of 256 columns (packed_k.c); per 32 columns that is an eighth of it.
    case PL_TYPE_Q4_K: return 16 * 144 / 8;
    case PL_TYPE_Q6_K: return 16 * 210 / 8;
    default: return 0;
    }
}

// Where the group's f16 scales start inside a packed block.
static inline int pl_packed_scale_offset(int type) {
    return type == PL_TYPE_Q8_0 ? 512 : (type == PL_TYPE_Q5_0 ? 320 : 256);
}

/// 1 for Q4_K and Q6_K, whose packed layout and kernels are packed_k.c's.
int pl_packed_k_owns(int type);
/// pl_pack_rows for Q4_K/Q6_K.
void pl_pack_rows_k(int type, const uint8_t *src, size_t row_bytes, int64_t rows, int64_t n, uint8_t *dst,
                    int64_t g0, int64_t g1);

#if defined(__x86_64__)
/// pl_matmul_packed for Q4_K/Q6_K over groups g0 ..< g1 (Q8_K inputs).
void pl_matmul_packed_k(int type, const uint8_t *packed, int64_t rows, int64_t n, const uint8_t *xq,
                        size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1);
/// 1 for the types x86/avx512_packed_batch.c computes several inputs of (Q4_0, Q5_0, Q8_0: Q8_0 activations).
static inline int pl_packed_batch_owns(int type) {
    return type == PL_TYPE_Q4_0 || type == PL_TYPE_Q5_0 || type == PL_TYPE_Q8_0;
}
/// Groups g0 ..< g1 of a packed matrix against n_tokens (> 1) inputs; outputs bit-identical to packed.c's.
void pl_packed_matmul_batch(int type, const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq,
                            size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1);
/// Inputs and blocks per row pl_packed_matmul_few takes (8 × 256 blocks of Q8_0 seeds: 64 KiB of its stack).
#define PL_PACKED_FEW_MAX 8
#define PL_PACKED_FEW_BLOCKS_MAX 256
/// Groups g0 ..< g1 of a packed Q4_1 or Q8_0 matrix against 2-8 inputs (pl_packed_few_owns), each group visited
/// once for all of them (x86/avx512_packed_few.c); outputs bit-identical to packed.c's one-input kernel.
void pl_packed_matmul_few(int type, const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq,
                          size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1);
/// The AVX2 (and AVX-VNNI) batch kernel (x86/quant_batch_body.h) over groups g0 ..< g1 of a packed Q5_0 matrix.
void pl_avx2_matmul_batch_packed_q5_0(const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq,
                                      size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1);
void pl_avxvnni_matmul_batch_packed_q5_0(const uint8_t *packed, int64_t rows, int64_t nb, const uint8_t *xq,
                                         size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0,
                                         int64_t g1);
/// 1 for the packed types x86/avx2_packed.c computes (every type the library packs: Q8_0, Q4_0, Q4_1, Q5_0, Q4_K).
int pl_avx2_packed_owns(int type);
/// The AVX2 tier's pl_matmul_packed over groups g0 ..< g1, any number of inputs; bit-identical to the row kernels.
void pl_avx2_matmul_packed(int type, const uint8_t *packed, int64_t rows, int64_t n, const uint8_t *xq,
                           size_t xq_stride, int64_t n_tokens, float *y, int64_t ldy, int64_t g0, int64_t g1);
#endif
#endif
