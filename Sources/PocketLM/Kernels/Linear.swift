import CKernels
import COpenBLAS

/// `output[i, r] = dot(input[i, :], w[r, :])` for i in 0..<n: every projection in the model.
///
/// One vector (decode) streams the quantized rows once through the C matvec kernel, split across threads.
/// Several vectors (prefill) are compute-bound, so the weights are dequantized tile by tile into `tile` and
/// multiplied by OpenBLAS sgemm: the quantized form stays the only copy in memory.
public struct Linear {
    public let pool: ThreadPool
    /// Scratch for dequantized rows; its size bounds the rows per sgemm call.
    public let tile: UnsafeMutableBufferPointer<Float>
    /// Scratch for the inputs quantized to Q8_0/Q8_1 (room for the largest batch × widest input).
    public let quantizedInput: UnsafeMutableRawPointer

    public init(pool: ThreadPool, tile: UnsafeMutableBufferPointer<Float>, quantizedInput: UnsafeMutableRawPointer) {
        self.pool = pool
        self.tile = tile
        self.quantizedInput = quantizedInput
    }

    /// Bytes of `quantizedInput` needed for inputs of `columns` elements.
    public static func quantizedInputBytes(columns: Int) -> Int { (columns + 31) / 32 * Int(PL_Q8_1_BLOCK_BYTES) }

    public func callAsFunction(_ w: WeightTensor, _ input: UnsafePointer<Float>, n: Int,
                               _ output: UnsafeMutablePointer<Float>, outputStride: Int? = nil) {
        let rows = w.rows, cols = w.columns
        let ldo = outputStride ?? rows
        let type = Int32(w.type.rawValue)
        if n == 1 {
            // Quantized weights: quantize the input once (as llama.cpp does) and use integer dot products.
            let act = pl_activation_type(type)
            if act >= 0 {
                if act == Int32(GGMLType.q8_0.rawValue) {
                    pl_quantize_q8_0(input, quantizedInput, Int64(cols))
                } else {
                    pl_quantize_q8_1(input, quantizedInput, Int64(cols))
                }
                let xq = UnsafeRawPointer(quantizedInput)
                pool.parallelRanges(rows, granularity: 16) { range in
                    pl_matvec_q(type, w.data, w.rowBytes, xq, output + range.lowerBound,
                                Int64(cols), Int64(range.lowerBound), Int64(range.upperBound))
                }
                return
            }
            pool.parallelRanges(rows, granularity: 16) { range in
                pl_matvec(type, w.data, w.rowBytes, input, output + range.lowerBound,
                          Int64(cols), Int64(range.lowerBound), Int64(range.upperBound))
            }
            return
        }
        if w.type == .f32 {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(rows), Int32(cols), 1,
                        input, Int32(cols), w.data.assumingMemoryBound(to: Float.self), Int32(cols),
                        0, output, Int32(ldo))
            return
        }
        // Quantized weights in a batch: llama.cpp multiplies them with Q8-quantized activations, integer dot
        // products, in prefill as in decode. Doing the same keeps our prompt's KV cache equal to the reference's,
        // so greedy continuations agree token for token (sgemm on dequantized tiles drifts by ~0.3 logits).
        let act = pl_activation_type(type)
        if act >= 0 {
            let stride = Linear.quantizedInputBytes(columns: cols)
            let xq = quantizedInput
            pool.parallelRanges(n) { range in
                for i in range {
                    if act == Int32(GGMLType.q8_0.rawValue) {
                        pl_quantize_q8_0(input + i * cols, xq + i * stride, Int64(cols))
                    } else {
                        pl_quantize_q8_1(input + i * cols, xq + i * stride, Int64(cols))
                    }
                }
            }
            let xqc = UnsafeRawPointer(xq)
            pool.parallelRanges(rows, granularity: 16) { range in
                pl_matmul_q(type, w.data, w.rowBytes, xqc, stride, Int64(n), output, Int64(ldo), Int64(cols),
                            Int64(range.lowerBound), Int64(range.upperBound))
            }
            return
        }
        let tileRows = max(1, min(rows, tile.count / cols))
        var r0 = 0
        while r0 < rows {
            let r1 = min(rows, r0 + tileRows)
            let base = tile.baseAddress!
            let start = r0
            pool.parallelRanges(r1 - r0, granularity: 8) { range in
                pl_dequantize_rows(type, w.data, w.rowBytes, base + range.lowerBound * cols, Int64(cols),
                                   Int64(start + range.lowerBound), Int64(start + range.upperBound))
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(r1 - r0), Int32(cols), 1,
                        input, Int32(cols), base, Int32(cols), 0, output + r0, Int32(ldo))
            r0 = r1
        }
    }
}

/// Sets how many threads OpenBLAS uses for prefill; matches the runtime's own pool so they never oversubscribe.
public func setBLASThreads(_ n: Int) {
    openblas_set_num_threads(Int32(max(1, n)))
}

/// The OpenBLAS kernel family in use (e.g. "Haswell", "SkylakeX", "Prescott"), for `bench` and `inspect`.
public func blasCoreName() -> String {
    guard let p = openblas_get_corename() else { return "unknown" }
    return String(cString: p)
}
