#ifndef POCKETLM_CKERNELS_H
#define POCKETLM_CKERNELS_H
// Hot loops over quantized weights. Each kernel has a body per ISA tier (compiled with target attributes and chosen
// at run time, so the binary stays portable; see pl_isa) and a plain C body, the reference, for every CPU.
#include <stddef.h>
#include <stdint.h>

// ggml type numbers (GGUF's tensor types) understood here.
enum {
    PL_TYPE_F32 = 0,
    PL_TYPE_F16 = 1,
    PL_TYPE_Q4_0 = 2,
    PL_TYPE_Q4_1 = 3,
    PL_TYPE_Q5_0 = 6,
    PL_TYPE_Q5_1 = 7,
    PL_TYPE_Q8_0 = 8,
    PL_TYPE_Q8_1 = 9,
    PL_TYPE_Q2_K = 10,
    PL_TYPE_Q3_K = 11,
    PL_TYPE_Q4_K = 12,
    PL_TYPE_Q5_K = 13,
    PL_TYPE_Q6_K = 14,
    PL_TYPE_Q8_K = 15,   // activations only: what K-quant weights are multiplied with
    PL_TYPE_BF16 = 30,
};

/// ISA tiers: each kernel family has a body per tier, and every call runs the body of the calling thread's tier
/// (pl_isa). The portable tier (plain C) is the reference every other tier is tested against. Order on x86:
/// portable < avx2 (AVX2 + FMA + F16C) < avx512 (AVX-512 F/BW/VL/DQ; its integer kernels also need VNNI); on
/// AArch64: portable < neon (dotprod and i8mm used where present).
enum { PL_ISA_PORTABLE = 0, PL_ISA_AVX2 = 1, PL_ISA_AVX512 = 2, PL_ISA_NEON = 3 };
/// CPU features inside a tier, as bits.
enum { PL_FEATURE_AVX512_VNNI = 1, PL_FEATURE_AVX_VNNI = 2, PL_FEATURE_DOTPROD = 4, PL_FEATURE_I8MM = 8,
       PL_FEATURE_AVX512_BF16 = 16 };
/// The best tier this CPU runs, and its feature bits (detected once).
int pl_isa_best(void);
unsigned pl_isa_features(void);
/// 1 when this CPU can run `tier` (the portable tier always; never a tier of another architecture).
int pl_isa_supported(int tier);
/// Sets the process's tier (every thread without its own, pl_isa_force_thread); 0, or −1 (unchanged) when the CPU
/// lacks it. Set before loading a model: the packed layout is chosen at load by the tier then in force.
int pl_isa_select(int tier);
/// The process's tier (the best one unless pl_isa_select lowered it).
int pl_isa_process(void);
/// The tier the calling thread's kernels run.
int pl_isa(void);
/// Forces `tier` on the calling thread only (tests), or with −1 returns it to the process's; −1 when the CPU
/// lacks the tier (nothing changes then).
int pl_isa_force_thread(int tier);
/// "portable", "avx2", "avx512", "neon"; pl_isa_from_name is its inverse (−1 for any other name).
const char *pl_isa_name(int tier);
int pl_isa_from_name(const char *name);

/// 1 when the calling thread runs the AVX-512 tier.
int pl_has_avx512(void);
/// pl_isa_force_thread(PL_ISA_PORTABLE) when on, pl_isa_force_thread(−1) when off. The packed kernel has no
/// portable twin and is unaffected.
void pl_force_portable(int on);

/// Dequantizes `n` elements (a whole number of blocks) of one row. Q5_0/Q5_1 and the K-quants (Q2_K … Q6_K)
/// follow ggml's dequantize_row_* (bit-identical to gguf-py's: every product is exact in float).
void pl_dequantize_row(int type, const void *src, float *dst, int64_t n);

/// y[r - r0] = dot(row r of w, x) for rows r0 ..< r1; rows are `row_bytes` apart, each `n` elements.
void pl_matvec(int type, const void *w, size_t row_bytes, const float *x, float *y,
               int64_t n, int64_t r0, int64_t r1);

/// y[t·ldy + r] = dot(row r of w, input t) for t in 0..<n_tokens, r in r0..<r1: F32, F16 or BF16 weights against one
/// or a few inputs (a token's decode, a decode step over several sequences, a speculative verify pass; up to
/// PL_FLOAT_FEW_MAX), each output bit-identical to what pl_matvec gives that input alone, each row read once for all
/// of them (AVX-512; other tiers run pl_matvec per input). Inputs are `ldx` floats apart, each `n` long.
enum { PL_FLOAT_FEW_MAX = 8 };
void pl_matmul_float_few(int type, const void *w, size_t row_bytes, const float *x, int64_t ldx, int64_t n_tokens,
                         float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1);

/// y[t·ldy + r] = Σ_k x[t·ldx + k] · w[r·ldw + k] for t in 0..<n_tokens, r in r0..<r1: F32 weights against a batch
/// of inputs (prefill), one fma chain per output over k in order (the same on every path and thread split).
/// `panel` is scratch of 32·K floats, the calling thread's own. pl_gemm_f32_supported() says whether the fast
/// (AVX-512) body runs here; otherwise it is a plain loop (callers use OpenBLAS then).
int pl_gemm_f32_supported(void);
void pl_gemm_f32(const float *x, int64_t ldx, int64_t n_tokens, const float *w, int64_t ldw, int64_t K, float *y,
                 int64_t ldy, int64_t r0, int64_t r1, float *panel);

/// Dequantizes rows r0 ..< r1 of w into dst (row-major, `n` floats per row).
void pl_dequantize_rows(int type, const void *w, size_t row_bytes, float *dst,
                        int64_t n, int64_t r0, int64_t r1);

/// Activations quantized the way llama.cpp does before an integer dot product, so quantized models give
/// llama.cpp's numbers: Q8_0 blocks (f16 d, 32 × int8) for Q8_0/Q4_0/Q5_0 weights, Q8_1 blocks (f16 d, f16 d·Σq,
/// 32 × int8) for Q4_1/Q5_1 weights. `n` is a multiple of 32.
enum { PL_Q8_0_BLOCK_BYTES = 34, PL_Q8_1_BLOCK_BYTES = 36, PL_Q8_K_BLOCK_BYTES = 292 };
void pl_quantize_q8_0(const float *x, void *out, int64_t n);
void pl_quantize_q8_1(const float *x, void *out, int64_t n);
/// Q8_K blocks for K-quant weights, exactly ggml's quantize_row_q8_K_ref (which its x86 build also runs): per 256
/// elements a float d = max/−127 (max: the signed value of largest magnitude), 256 int8 = nearest_int(x·(−127/max))
/// capped at 127 (ties to even), and 16 int16 sums of 16 quants each (PL_Q8_K_BLOCK_BYTES = 4 + 256 + 32). An
/// all-zero block has d = 0, zero quants and zero sums. `n` is a multiple of 256. AVX2 body on x86 (both tiers),
/// scalar elsewhere.
void pl_quantize_q8_K(const float *x, void *out, int64_t n);
/// The activation format `pl_matvec_q` expects for a weight type: PL_TYPE_Q8_0 (Q8_0, Q4_0, Q5_0), PL_TYPE_Q8_1
/// (Q4_1, Q5_1), PL_TYPE_Q8_K (Q2_K … Q6_K), or -1 (float input).
int pl_activation_type(int weight_type);

/// Like pl_matvec, for quantized weights against activations already quantized by pl_quantize_q8_0/q8_1/q8_K
/// (the format pl_activation_type names).
/// Q5_0, Q5_1 and the K-quants are computed in llama.cpp's x86 arithmetic: its eight 32-bit lanes (lane l sums
/// elements 4l..4l+3 of each 32-element chunk, times their scale), fma'd into eight float lanes with the block's
/// d·d_x block after block, then ggml's hsum_float_8, and the minimum terms in ggml's order. The portable and the
/// AVX-512 VNNI bodies compute the same integers and the same float operations, so they are bit-identical.
void pl_matvec_q(int type, const void *w, size_t row_bytes, const void *xq, float *y,
                 int64_t n, int64_t r0, int64_t r1);

/// 1 when pl_matmul_q runs a vector body for `type` on this CPU and thread's AVX-512 VNNI tier (Q5_0, Q5_1, Q4_K, Q5_K,
/// Q6_K: VNNI bodies; Q2_K, Q3_K: the AVX2 ones; only with VNNI and without pl_force_portable); 0 when it runs the
/// portable body. Tests use it to know that a comparison
/// of the two paths really compares two bodies.
int pl_quant_fast_body(int type);

/// Several quantized inputs at once (rows of `xq_stride` bytes, n_tokens of them): y[t·ldy + r] for rows
/// r0 ..< r1. Each weight row is read once and stays in L1 while every input is multiplied with it.
void pl_matmul_q(int type, const void *w, size_t row_bytes, const void *xq, size_t xq_stride, int64_t n_tokens,
                 float *y, int64_t ldy, int64_t n, int64_t r0, int64_t r1);
/// From this many inputs on, pl_matmul_q's AVX2 tier runs its batch kernels (rows unpacked once into a lane-major
/// scratch for every input: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K); below it, the row kernels. Same bits.
enum { PL_AVX2_BATCH_MIN_TOKENS = 4 };
/// Except Q8_0 from this many inputs on (a prompt; more than a speculative pass at the default draft lengths, ≤ 8):
/// there the AVX2 tier sums each block's 32 products as one int32 and adds the scaled blocks in order — the
/// portable body's arithmetic, bit for bit, not the row kernels' 8-lane one (so not one-token decoding's bits).
enum { PL_AVX2_Q8_BLOCK_ORDER_MIN = 9 };

/// Converts n floats to f16 (round to nearest even) / back.
void pl_f32_to_f16_row(const float *x, uint16_t *out, int64_t n);

/// One attention head for one query, as llama.cpp computes it with an F16 KV cache: q is rounded to f16,
/// scores = q·k_t · scale for t in 0..<n_ctx, softmax, probabilities rounded to f16, out = Σ p_t v_t.
/// k and v rows are `stride` elements apart (f16); `scores` has room for n_ctx floats.
void pl_attention_f16(const float *q, const uint16_t *k, const uint16_t *v, int64_t stride, int64_t n_ctx,
                      int64_t head_dim, float scale, float *scores, float *out);

/// pl_attention_f16 for `n_heads` query heads that share one KV head (grouped-query attention), for one query:
/// q and out hold the heads one after another (head_dim each); `scores` has room for n_heads·n_ctx floats. Each
/// K and V row is loaded and converted once for all the heads; every head's output is bit-identical to
/// pl_attention_f16 on that head alone.
void pl_attention_group_f16(const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v, int64_t stride,
                            int64_t n_ctx, int64_t head_dim, float scale, float *scores, float *out);

/// (Query, head) pairs of one tile the AVX-512 body takes at once; callers size their tiles by it. 64: each 16 key
/// rows are converted and transposed, and each V row converted, once per tile, so a bigger tile spreads that over more
/// pairs — a 343-token SmolLM2 chunk at depth 1,570 took 1.345 ms a token with 63-pair tiles against 1.449 with 30
/// (`make kernel-bench-bf16`, F16 cache, Intel Xeon 2026-12-07; 128 gained ~2% more) — and the scores of 64 pairs
/// over ~1,600 positions (400 KB) still stay in L2. (32 had measured 5–8% faster than 16 on an AMD EPYC.)
#define PL_ATTENTION_TILE_PAIRS 64
/// pl_attention_group_f16 for `n_queries` consecutive positions of one sequence (a prompt chunk) over one KV head:
/// query t's heads start at q + t·q_stride, it sees rows 0 ..< n_ctx + t of k and v (causal), and its outputs go to
/// out + t·out_stride. Each K and V row is loaded and converted once for the whole tile (AVX-512, head_dim 64, 128 or
/// 256, up to PL_ATTENTION_TILE_PAIRS pairs; other tiers run their one-query kernel per query). Every output is
/// bit-identical to pl_attention_f16 on that query and head alone. `scores` has room for
/// n_queries·n_heads·(n_ctx + n_queries − 1) floats.
void pl_attention_tile_f16(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads, const uint16_t *k,
                           const uint16_t *v, int64_t stride, int64_t n_ctx, int64_t head_dim, float scale,
                           float *scores, float *out, int64_t out_stride);

/// Attention over a BF16 KV cache (llama.cpp's `--cache-type-k bf16 --cache-type-v bf16`): as the F16 kernels above
/// but with keys and values stored as bf16, and q and the probabilities rounded to bf16 where llama.cpp rounds them to
/// the BF16 dot product's input type. The portable body sums as pl_attention_f16's does; the AVX-512 tier on a CPU
/// with AVX512_BF16 (head_dim 64, 128 or 256, up to PL_ATTENTION_TILE_PAIRS pairs) multiplies pairs of elements with vdpbf16ps,
/// whose sums run in another order, so its outputs are within a tested bound of the portable ones, not bit-identical;
/// other tiers run the portable body. The tile's `scores` needs room for n_queries·n_heads·(n_ctx + n_queries) floats.
void pl_attention_group_bf16(const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v, int64_t stride,
                             int64_t n_ctx, int64_t head_dim, float scale, float *scores, float *out);
void pl_attention_tile_bf16(const float *q, int64_t q_stride, int64_t n_queries, int64_t n_heads, const uint16_t *k,
                            const uint16_t *v, int64_t stride, int64_t n_ctx, int64_t head_dim, float scale,
                            float *scores, float *out, int64_t out_stride);
/// 1 when the BF16 attention runs the vdpbf16ps body on this thread's tier and CPU (tests say which body they compared).
int pl_attention_bf16_fast_body(void);
/// Converts n floats to bf16, round to nearest even (NaN stays NaN), as ggml stores a float in bf16.
void pl_f32_to_bf16_row(const float *x, uint16_t *out, int64_t n);
uint16_t pl_f32_to_bf16(float f);

/// Interleaved ("packed") layout for quantized matrices, for the VNNI kernel (packed.c): rows in groups of 16; for
/// each group and block, the 16 rows' quants are interleaved 4 bytes at a time (so one 512-bit integer dot product
/// step computes 4 elements of 16 rows), then (Q5_0) the 5th bits regrouped as byte masks of those steps, then the
/// 16 rows' f16 scales (and Q4_1 minimums). Same bytes per block as the file; rows past the end are zero. Each output is computed with exactly the
/// operations, in exactly the order, of llama.cpp's AVX2/VNNI dot product, so results are bit-identical to
/// pl_matmul_q's.
/// 1 when this CPU runs the packed kernel (AVX-512 VNNI); 0 means keep matrices in the file's layout.
int pl_packed_supported(void);
/// 1 when this process packs `type` at load: every packed type on AVX-512 VNNI; Q4_0/Q4_1 on the AVX2 tier
/// (x86/avx2_packed.c; its other packed kernels serve threads forced to AVX2 over an AVX-512 process's matrices).
int pl_packed_type_supported(int type);
/// Q4_K and Q6_K are packed per super-block (256 columns): the 16 rows' quants interleaved 4 bytes at a time, then
/// their scales regrouped as vectors of 16 rows (packed_k.c); their inputs are Q8_K blocks.
/// Bytes of the packed form of a `rows` × `n` matrix of `type` (Q8_0, Q4_0, Q4_1, Q5_0, Q4_K or Q6_K).
size_t pl_packed_bytes(int type, int64_t rows, int64_t n);
/// Packs row groups g0 ..< g1 (16 rows each) of w into dst (the whole packed buffer).
void pl_pack_rows(int type, const void *w, size_t row_bytes, int64_t rows, int64_t n, void *dst, int64_t g0, int64_t g1);
/// pl_pack_rows of `n_rows` rows that each sit at their own address (rows[r] + offset), into dst from its first group:
/// a paged FFN's rows, group after group of the file's (each its own read buffer), fill whole 16-row groups even
/// where a group's neuron count is not a multiple of 16 (the columns format's). Q4_0, Q4_1, Q5_0 and Q8_0.
void pl_pack_row_list(int type, const void *const *rows, size_t offset, int64_t n_rows, int64_t n, void *dst);
/// pl_matmul_q over a packed matrix: rows r0 ..< r1, both multiples of 16 (r1 may be `rows`, the true row count).
void pl_matmul_packed(int type, const void *packed, int64_t rows, int64_t n, const void *xq, size_t xq_stride,
                      int64_t n_tokens, float *y, int64_t ldy, int64_t r0, int64_t r1);
/// 1 when pl_matmul_packed computes `n_tokens` inputs of a `type` matrix `n` columns wide in one pass over each
/// group of rows (Q4_1 and Q8_0, 2-8 inputs: a decode step of a few sequences), each weight block loaded once for
/// all of them; 0 when the caller should rather run it input by input over rows it keeps in cache.
int pl_packed_few_owns(int type, int64_t n_tokens, int64_t n);

/// y[i] = expf(x[i]), bit-identical to glibc's expf (16 lanes at a time on AVX-512).
void pl_expf_row(const float *x, float *y, int64_t n);
/// g[i] = silu(g[i]) · u[i] (SwiGLU) = g / (1 + expf(−g)) · u, with glibc's expf (as pl_expf_row), as the reference
/// computation uses.
void pl_swiglu(float *g, const float *u, int64_t n);
/// g[i] = gelu(g[i]) · u[i] (GeGLU) with ggml's tabulated GELU: `table` holds gelu of every f16 bit pattern (65,536
/// floats), looked up at g's f16 rounding for −10 < g < 10; at or below −10 the result is 0, at or above 10 it is g·u.
void pl_geglu_table(float *g, const float *u, const float *table, int64_t n);
/// The index of the largest of x[0 ..< n]: the first if several are equal; NaNs never win; 0 if none is above −∞.
int64_t pl_argmax(const float *x, int64_t n);

/// A spin-wait hint (x86 `pause`): lets the sibling hyper-thread run and saves power while a thread polls.
void pl_cpu_relax(void);

float pl_f16_to_f32(uint16_t h);
uint16_t pl_f32_to_f16(float f);

/// Row-column bundles (the flash-paging layout of a Q8_0 SwiGLU FFN): everything neuron i of the FFN needs, in one
/// contiguous run of bytes, so a sparse FFN reads only the neurons it computes. For hidden size `dim` and FFN size
/// `ffn` (both multiples of 32), neuron i's bundle is pl_bundle_bytes_q8_0(dim) bytes:
///   [gate row i]    dim/32 Q8_0 blocks (f16 d, 32 × int8) = dim/32·34 bytes, exactly as in the file;
///   [up row i]      the same;
///   [down column i] dim int8: for r in 0..<dim, the quant of element (r, i) of the down matrix (dim rows × ffn
///                   columns, Q8_0 rows), i.e. quant i%32 of block i/32 of down row r.
/// The down matrix's f16 block scales are not in the bundles; they stay resident, row-major:
/// down_scale[r·(ffn/32) + b] = d of block b of down row r (pl_bundle_down_scales_q8_0).
/// Results follow the dense kernels of the same path (VNNI, or portable when the CPU lacks VNNI or
/// pl_force_portable is on) operation for operation, so they are bit-identical to pl_matvec_q / pl_matmul_packed.
size_t pl_bundle_bytes_q8_0(int64_t dim);   /* 2*(dim/32)*34 + dim */
/// Writes neuron i's bundle from row-layout gate/up/down Q8_0 matrices (gate, up: ffn rows of dim; down: dim rows of
/// ffn), i.e. the packer's job.
void pl_bundle_pack_q8_0(const void *gate, const void *up, const void *down, int64_t dim, int64_t ffn, int64_t i,
                         void *bundle);
/// Extracts the down scales: down_scale[r·(ffn/32) + b] for r in 0..<dim, b in 0..<ffn/32.
void pl_bundle_down_scales_q8_0(const void *down, int64_t dim, int64_t ffn, uint16_t *down_scale);
/// g[k] = dot(gate row of bundles[k], x), u[k] = dot(up row of bundles[k], x) for k in k0..<k1 (g and u are indexed
/// by k itself, not k − k0); xq is x (dim floats) quantized by pl_quantize_q8_0.
/// Bit-identical to pl_matvec_q(PL_TYPE_Q8_0, ...) on the same row.
void pl_bundle_gate_up_q8_0(const void *const *bundles, int64_t k0, int64_t k1, const void *xq, int64_t dim,
                            float *g, float *u);
/// Down projection over the listed neurons: out[r − r0] for rows r0..<r1 = dot(down row r, h) where h is zero
/// outside the listed neurons, computed as the dense kernel does: Σ_b d_down[r][b] · d_h[b] · Σ_{listed i in block b}
/// q_down[r][i] · q_h[i], where hq is h (ffn floats, unlisted neurons must be 0) quantized by pl_quantize_q8_0 and
/// ids[k] is the neuron of bundles[k] (k in 0..<n, any order, no duplicates).
/// acc is scratch of (ffn/32)·(r1−r0) int32 (any contents; the caller's own per thread when threads split rows).
/// The integer sums are exact and the float combination follows the dense kernel of the same path (on VNNI CPUs
/// ggml's 8 lanes of 4 elements per block, each its own fma chain, then its lane reduction), so when every
/// neuron is listed the result is bit-identical to pl_matvec_q(PL_TYPE_Q8_0, down, ..., hq, ...) (and thus to the
/// packed kernel) for those rows; with some unlisted it equals the dense kernel against the same hq (zeros there).
/// Unlisted 4-neuron groups are skipped, which matches the dense result whenever d_down·d_h is finite (always, for
/// a well-formed model). No allocation; about 21 KB of stack (VNNI body).
void pl_bundle_down_q8_0(const void *const *bundles, const int32_t *ids, int64_t n, const void *hq,
                         const uint16_t *down_scale, int64_t dim, int64_t ffn, int32_t *acc, float *out,
                         int64_t r0, int64_t r1);

/// pl_bundle_gate_up_q8_0 for n_tokens inputs at once (prompt prefill: the same bundle list for every input). Input t
/// is the row of xq_stride bytes at xq + t·xq_stride, each quantized by pl_quantize_q8_0; outputs g[t·ldg + k],
/// u[t·ldg + k] for k in k0..<k1, t in 0..<n_tokens (nothing else is written). Each bundle is read once and used for
/// every input while it is in cache (VNNI: 8 bundles at a time); every output is bit-identical to
/// pl_bundle_gate_up_q8_0 on that input alone (same path choice, pl_force_portable included).
void pl_bundle_gate_up_batch_q8_0(const void *const *bundles, int64_t k0, int64_t k1, const void *xq, size_t xq_stride,
                                  int64_t n_tokens, int64_t dim, float *g, float *u, int64_t ldg);

/// Block-rows bundles (a file's groups of whole blocks of neurons): the down projection of one input straight from
/// the groups' down slices, no reassembled matrix. Block b of down row r lies at
/// groups[b / blocks_per_group] + r·slice_bytes + (b mod blocks_per_group)·(the type's block bytes); y[r] for rows
/// r0..<r1 = dot(down row r, h), h (n floats) quantized into xq by the quantizer pl_matmul_q takes for `type`
/// (pl_activation_type: Q8_K for Q4_K/Q6_K, Q8_1 for Q4_1, Q8_0 for Q4_0/Q8_0). Every entry must point to readable
/// slices (a group whose neurons are unused: any group's, its h blocks are zero). Returns 0 and writes nothing where
/// no such body runs (a type other than Q4_0/Q4_1/Q8_0/Q4_K/Q6_K, Q4_K/Q6_K below AVX-512 VNNI, the others below
/// AVX2, or a thread forced to the portable tier): the caller then reassembles the matrix. Otherwise row for row the
/// bits of pl_matmul_q on the reassembled matrix.
int pl_bundle_down_groups(int type, const void *const *groups, int64_t blocks_per_group, size_t slice_bytes,
                          const void *xq, float *y, int64_t n, int64_t r0, int64_t r1);
/// Whether pl_bundle_down_groups runs for `type` on this thread (1) or returns 0.
int pl_bundle_down_groups_runs(int type);

/// Reads `bytes` of memory (several 64-byte streams at once where the CPU has AVX-512) and returns their XOR, so the
/// reads cannot be optimised away: the memory-bandwidth probe behind benchmarks' decode bound.
uint64_t pl_read_memory(const void *buf, size_t bytes);
/// The same bytes read as `streams` (1–4) equal contiguous parts in lockstep (the XOR is the same).
uint64_t pl_read_memory_streams(const void *buf, size_t bytes, int streams);

/// What pl_multiply_add_probe runs: F32 fused multiply-adds at the calling thread's tier's vector width, or bf16 pair
/// dot products (vdpbf16ps, the BF16 KV cache's attention) where the CPU has them.
enum { PL_PROBE_F32_FMA = 0, PL_PROBE_BF16_DOT = 1 };
/// `steps` rounds of independent multiply-add chains of `kind` on the calling thread; *multiply_adds is set to the
/// multiply-adds done (0 when the CPU lacks `kind`). Returns their sum, so the work cannot be optimised away: the
/// compute-peak probe behind benchmarks' compute bounds.
float pl_multiply_add_probe(int kind, int64_t steps, int64_t *multiply_adds);

#endif
