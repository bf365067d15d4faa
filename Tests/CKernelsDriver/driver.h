#ifndef POCKETLM_CKERNELS_DRIVER_H
#define POCKETLM_CKERNELS_DRIVER_H
// What the kernel driver's files share (driver.c: the comparisons and main; driver_bundles.c: the bundle kernels;
// driver_attention.c: attention).
#include "ckernels.h"
#include <stdint.h>

/// Counts a comparison; prints the first 30 failures with the tier and what was compared.
void check(int ok, const char *tier, const char *what, int a, int b, int c);
/// The driver's deterministic random numbers: 64 bits, and uniform in [0, 1).
uint64_t next_u64(void);
float unit(void);
int bits_equal(const float *a, const float *b, int64_t n);

/// Bytes and elements per block of the quantized types, and where their f16 scales sit (qtypes[0] is Q8_0).
typedef struct { int type; const char *name; int elems, bytes; int d_off, m_off; } QType;
extern const QType qtypes[10];
/// Random quants; scales mostly ordinary, some zero, some at f16's extremes.
void random_weights(const QType *t, uint8_t *w, int64_t blocks);
/// `tokens` random inputs of `n` elements quantized to `act` on `tier` (left forced for the thread); caller frees.
uint8_t *random_quantized_inputs(int act, int64_t n, int tokens, int tier);

void test_bundles(int tier, const char *name);
void test_attention(int tier, const char *name);
void test_attention_tile(int tier, const char *name);
void test_attention_bf16(int tier, const char *name);
#endif
