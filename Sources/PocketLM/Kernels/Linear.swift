import CKernels
import COpenBLAS

/// `output[i, r] = dot(input[i, :], w[r, :])` for i in 0..<n: every projection in the model.
///
/// Quantized weights (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K … Q6_K) stay in their blocks: the inputs are quantized to
/// Q8 blocks (Q8_0, Q8_1 or Q8_K) as llama.cpp does and multiplied by integer dot products (VNNI), rows split
/// across threads; in a batch each weight row is used for every input while it is in L1. Float weights use the
/// few-inputs kernel for one token's decode or a decode batch (up to PL_FLOAT_FEW_MAX inputs, each summed as the
/// one-input matvec sums it), and a panel kernel (F32) or OpenBLAS sgemm for a prompt (F16/BF16 dequantized a tile
/// at a time, so the stored form stays the only full copy).
public struct Linear {
    public let pool: ThreadPool
    /// Scratch for dequantized rows; its size bounds the rows per sgemm call.
    public let tile: UnsafeMutableBufferPointer<Float>
    /// Scratch for the inputs quantized to Q8_0/Q8_1/Q8_K blocks: three regions of (largest batch × widest input),
    /// so a fused call can hold the input in every activation format its matrices need.
    public let quantizedInput: UnsafeMutableRawPointer
    /// Each thread's transposed 32-row panel for the F32 batch kernel (32 × widest input floats per thread).
    let panels: UnsafeMutablePointer<Float>
    let panelFloats: Int

    /// Allocates the scratch for inputs up to `maxColumns` wide, batches up to `maxBatch`, and a tile of
    /// `tileFloats` dequantized weights. Freed by `deallocate()`.
    public init(pool: ThreadPool, maxColumns: Int, maxBatch: Int, tileFloats: Int) {
        self.pool = pool
        tile = .allocate(capacity: tileFloats)
        // One region per activation format a fused call may need at once (Q8_0, Q8_1, Q8_K).
        quantizedInput = .allocate(byteCount: 3 * maxBatch * Linear.quantizedInputBytes(columns: maxColumns), alignment: 64)
        panelFloats = 32 * maxColumns
        panels = .allocate(capacity: pool.threadCount * panelFloats)
    }

    public func deallocate() {
        tile.deallocate()
        quantizedInput.deallocate()
        panels.deallocate()
    }

    /// Bytes of `quantizedInput` needed for inputs of `columns` elements in any activation format: the larger of
    /// Q8_1 (36 bytes per 32) and Q8_K (292 per 256, for K-quant weights).
    public static func quantizedInputBytes(columns: Int) -> Int {
        max((columns + 31) / 32 * Int(PL_Q8_1_BLOCK_BYTES), (columns + 255) / 256 * Int(PL_Q8_K_BLOCK_BYTES))
    }

    /// Several projections of the same input (Q, K, V; or gate and up) in one parallel step: the input is
    /// quantized once per activation format the matrices need (Q8_0 for Q8_0/Q4_0/Q5_0, Q8_1 for Q4_1, Q8_K for
    /// K-quants: a Q4_K_M file mixes them) and the threads meet once instead of once per matrix, whether the
    /// matrices are packed or run the row kernels on the file's rows (the AVX2 tier's Q8_0 and K-quants: one call
    /// per matrix took 3 + 1 rounds for Q, K, V and their follow-ups, 2 + 1 for gate and up, 150 more rendezvous per
    /// SmolLM2 token). Falls back to one call per matrix for float weights or unequal widths.
    ///
    /// `then(m, rows)` runs on the thread that computed rows `rows` of matrix m (0, 1, 2) for every input, right
    /// after it did, so element-wise work on those rows (RoPE, the KV-cache store, SwiGLU) needs no extra round
    /// of the threads. When all the matrices have the same row count they are split alike, so rows of matrix 1
    /// are also done in matrix 0 when `then(1, rows)` runs.
    public func fused(_ input: UnsafePointer<Float>, n: Int,
                      _ w0: WeightTensor, _ o0: UnsafeMutablePointer<Float>,
                      _ w1: WeightTensor, _ o1: UnsafeMutablePointer<Float>,
                      _ w2: WeightTensor? = nil, _ o2: UnsafeMutablePointer<Float>? = nil,
                      then: (Int, Range<Int>) -> Void = { _, _ in }) {
        let cols = w0.columns
        let act0 = pl_activation_type(Int32(w0.type.rawValue)), act1 = pl_activation_type(Int32(w1.type.rawValue))
        let act2 = w2.map { pl_activation_type(Int32($0.type.rawValue)) } ?? act0
        func fits(_ w: WeightTensor) -> Bool {
            pl_activation_type(Int32(w.type.rawValue)) >= 0 && w.columns == cols
        }
        guard fits(w0), fits(w1), w2.map(fits) ?? true else {
            self(w0, input, n: n, o0)
            self(w1, input, n: n, o1)
            if let w2, let o2 { self(w2, input, n: n, o2) }
            // The follow-ups in one round of the threads, each on the rows the fused path would give it.
            let parts = pool.threadCount
            pool.run(parts: parts) { p in
                for m in 0..<3 {
                    let rows = m == 0 ? w0.rows : m == 1 ? w1.rows : (w2?.rows ?? 0)
                    let share = ThreadPool.share(rows, granularity: 16, part: p, parts: parts)
                    if !share.isEmpty { then(m, share) }
                }
            }
            return
        }
        // Each distinct format once, in its own region of the scratch (at most three formats, three regions).
        let stride = Linear.quantizedInputBytes(columns: cols)
        let regionBytes = n * stride
        // Matrix m reads the region of the first matrix with its format (no arrays: this runs every layer).
        func region(_ a: Int32) -> Int { a == act0 ? 0 : (a == act1 ? 1 : 2) }
        let base = UnsafeRawPointer(quantizedInput)
        quantizeInputs(input, n: n, columns: cols, activation: act0, into: quantizedInput)
        if region(act1) == 1 { quantizeInputs(input, n: n, columns: cols, activation: act1, into: quantizedInput + regionBytes) }
        if w2 != nil, region(act2) == 2 {
            quantizeInputs(input, n: n, columns: cols, activation: act2, into: quantizedInput + 2 * regionBytes)
        }
        let xqs = (base, base + region(act1) * regionBytes, base + region(act2) * regionBytes)
        if n == 1 {
            fusedDecode(w0, o0, xqs.0, w1, o1, xqs.1, w2, o2, xqs.2, stride: stride, then: then)
            return
        }
        let parts = pool.threadCount
        pool.run(parts: parts) { p in
            func share(_ m: Int, _ w: WeightTensor, _ o: UnsafeMutablePointer<Float>, _ xq: UnsafeRawPointer) {
                let rows = ThreadPool.share(w.rows, granularity: 16, part: p, parts: parts)
                if !rows.isEmpty {
                    Linear.matmulQuantized(w, xq, stride: stride, n: n, o, ldo: w.rows, rows)
                    then(m, rows)
                }
            }
            share(0, w0, o0, xqs.0)
            share(1, w1, o1, xqs.1)
            if let w2, let o2 { share(2, w2, o2, xqs.2) }
        }
    }

    /// `fused` for one input (a decoded token), with the rows claimed in chunks as the threads go
    /// (`ThreadPool.dynamicRanges`) instead of in fixed halves. Matrices of equal row count (gate and up) are taken
    /// together, a chunk of rows of each, so `then(1, rows)` still finds those rows of matrix 0 done; otherwise the
    /// chunks run over the matrices one after another (Q, then K, then V).
    private func fusedDecode(_ w0: WeightTensor, _ o0: UnsafeMutablePointer<Float>, _ x0: UnsafeRawPointer,
                             _ w1: WeightTensor, _ o1: UnsafeMutablePointer<Float>, _ x1: UnsafeRawPointer,
                             _ w2: WeightTensor?, _ o2: UnsafeMutablePointer<Float>?, _ x2: UnsafeRawPointer,
                             stride: Int, then: (Int, Range<Int>) -> Void) {
        func compute(_ m: Int, _ w: WeightTensor, _ o: UnsafeMutablePointer<Float>, _ xq: UnsafeRawPointer, _ rows: Range<Int>) {
            Linear.matmulQuantized(w, xq, stride: stride, n: 1, o, ldo: w.rows, rows)
            then(m, rows)
        }
        let rows2 = w2?.rows ?? w0.rows
        let groupBytes = 16 * (w0.rowBytes + w1.rowBytes + (w2?.rowBytes ?? 0))
        if w0.rows == w1.rows && rows2 == w0.rows {
            pool.dynamicRanges(w0.rows, granularity: 16, minimumUnits: Linear.minimumChunkBytes / groupBytes) { rows in
                compute(0, w0, o0, x0, rows)
                compute(1, w1, o1, x1, rows)
                if let w2, let o2 { compute(2, w2, o2, x2, rows) }
            }
            return
        }
        // One row space: matrix 0's rows, then matrix 1's, then matrix 2's (each a whole number of 16-row groups).
        let g0 = (w0.rows + 15) / 16 * 16, g1 = (w1.rows + 15) / 16 * 16
        let total = g0 + g1 + (w2 == nil ? 0 : (rows2 + 15) / 16 * 16)
        pool.dynamicRanges(total, granularity: 16, minimumUnits: 3 * Linear.minimumChunkBytes / groupBytes) { span in
            func part(_ m: Int, _ w: WeightTensor, _ o: UnsafeMutablePointer<Float>, _ xq: UnsafeRawPointer, from offset: Int) {
                let lo = max(span.lowerBound - offset, 0), hi = min(span.upperBound - offset, w.rows)
                if lo < hi { compute(m, w, o, xq, lo..<hi) }
            }
            part(0, w0, o0, x0, from: 0)
            part(1, w1, o1, x1, from: g0)
            if let w2, let o2 { part(2, w2, o2, x2, from: g0 + g1) }
        }
    }

    /// The smallest chunk of weights a thread claims in a decode step's dynamic split: small enough that the last
    /// chunks even out the threads (~10 µs of streaming), large enough that each chunk's start — claiming it, the
    /// kernel's set-up, its three weight streams ramping up from cold — stays small against its streaming. Chosen
    /// by alternating runs on a quiet machine (AMD EPYC, 2 threads, 6 rounds; 64 KiB chunks and a quarter of the rest
    /// per thread before): Gemma 3 270M decode +10%, SmolLM2 Q4_1 +15%; 512 KiB helped Gemma more and SmolLM2 less,
    /// 32 KiB lost on both.
    static let minimumChunkBytes = 256 << 10

    /// `minimumChunkBytes` in 16-row units of a matrix whose rows are `rowBytes` long: the `minimumUnits` of a decode
    /// step's dynamic split over its rows.
    static func minimumChunkUnits(rowBytes: Int) -> Int { minimumChunkBytes / max(1, 16 * rowBytes) }

    /// One input of `count` floats quantized into `dst` in the activation format `act` (`pl_activation_type` of the
    /// weights it meets): Q8_0, Q8_K, else Q8_1.
    @inline(__always)
    static func quantize(_ x: UnsafePointer<Float>, count: Int, activation act: Int32, into dst: UnsafeMutableRawPointer) {
        switch act {
        case Int32(PL_TYPE_Q8_0): pl_quantize_q8_0(x, dst, Int64(count))
        case Int32(PL_TYPE_Q8_K): pl_quantize_q8_K(x, dst, Int64(count))
        default: pl_quantize_q8_1(x, dst, Int64(count))
        }
    }

    /// Quantizes `n` inputs into `dst` (default: `quantizedInput`) as Q8_0, Q8_1 or Q8_K blocks; returns the bytes
    /// per input.
    @discardableResult
    private func quantizeInputs(_ input: UnsafePointer<Float>, n: Int, columns cols: Int, activation act: Int32,
                                into dst: UnsafeMutableRawPointer? = nil) -> Int {
        Linear.quantizeInputs(input, n: n, columns: cols, activation: act, into: dst ?? quantizedInput, pool: pool)
    }

    /// `n` inputs of `cols` floats quantized into `xq` (in the activation format `act`), one input every
    /// `quantizedInputBytes(columns:)` (returned); a batch's spread over `pool`'s threads.
    @discardableResult
    static func quantizeInputs(_ input: UnsafePointer<Float>, n: Int, columns cols: Int, activation act: Int32,
                               into xq: UnsafeMutableRawPointer, pool: ThreadPool) -> Int {
        let stride = Linear.quantizedInputBytes(columns: cols)
        let body = { (range: Range<Int>) in
            for i in range { Linear.quantize(input + i * cols, count: cols, activation: act, into: xq + i * stride) }
        }
        // A few inputs (a server's decode step over its slots, a verify pass) are quantized on this thread: a
        // row takes well under a microsecond, less than a round of the threads costs, and a step of 4 slots would
        // otherwise add 4 rounds per layer (121 per step for SmolLM2), each one a rendezvous a descheduled thread holds up.
        if n <= Linear.smallBatch { body(0..<n) } else { pool.parallelRanges(n, body) }
        return stride
    }

    /// Inputs up to this many (a server's decode batch, a speculative verify pass): Q4_1 and Q8_0 matrices run the
    /// few-inputs kernel (`pl_packed_few_owns`: each group of rows visited once, each weight block loaded and unpacked
    /// once for two inputs, Q8_0's input corrections computed once per call); other types run the one-input kernel,
    /// one input after another over a tile of the thread's rows small enough for L2 (`smallBatchBytes`): the first
    /// input streams the tile from memory, the others find it in L2, so the weights are read from memory once. The
    /// batch kernel unpacks each group once for all inputs, which pays off only for larger batches (measured: 4
    /// inputs 1.6× one input's throughput through it, 2.6× this way). Each input gets the bits a lone decode gives it.
    static let smallBatch = 8
    static let smallBatchBytes = 512 << 10

    /// out[i, r] for rows `range` of a quantized matrix and `n` quantized inputs: its packed kernel when it is packed,
    /// else the row kernel on the file's rows (what `callAsFunction` runs for it alone, so the same bits).
    @inline(__always)
    static func matmulQuantized(_ w: WeightTensor, _ xq: UnsafeRawPointer, stride: Int, n: Int,
                                _ out: UnsafeMutablePointer<Float>, ldo: Int, _ range: Range<Int>) {
        let type = Int32(w.type.rawValue)
        if let packed = w.packed {
            matmulPacked(type, packed, rows: w.rows, columns: w.columns, rowBytes: w.rowBytes, xq, stride: stride, n: n,
                         out, ldo: ldo, range)
        } else {
            pl_matmul_q(type, w.data, w.rowBytes, xq, stride, Int64(n), out, Int64(ldo), Int64(w.columns),
                        Int64(range.lowerBound), Int64(range.upperBound))
        }
    }

    /// Rows of the file's layout packed at a time by `matmulPackingTiles`.
    static let packingTileRows = 64

    /// Bytes of one `matmulPackingTiles` tile of a `type` matrix `columns` wide.
    static func packingTileBytes(type: GGMLType, columns: Int) -> Int {
        pl_packed_bytes(Int32(type.rawValue), Int64(packingTileRows), Int64(columns))
    }

    /// out[i, r] for rows `range` of a quantized matrix in the file's row layout (a type this tier packs) and a batch
    /// of `n` quantized inputs, through the packed batch kernel: `packingTileRows` rows at a time packed into `tile`
    /// first. Rows that come and go (a paged FFN's groups, read per step) are never packed at load; for a prompt's
    /// batch AVX-512 VNNI's packed kernel is ~3× the row kernel's speed, and packing a tile costs one pass over its
    /// rows, shared by every input. The packed kernel gives the row kernel's bits.
    static func matmulPackingTiles(_ type: Int32, _ w: UnsafeRawPointer, rowBytes: Int, columns: Int,
                                   _ xq: UnsafeRawPointer, stride: Int, n: Int, _ out: UnsafeMutablePointer<Float>,
                                   ldo: Int, _ range: Range<Int>, tile: UnsafeMutableRawPointer) {
        var r0 = range.lowerBound
        while r0 < range.upperBound {
            let rows = min(range.upperBound - r0, packingTileRows)
            pl_pack_rows(type, w + r0 * rowBytes, rowBytes, Int64(rows), Int64(columns), tile, 0, Int64((rows + 15) / 16))
            pl_matmul_packed(type, tile, Int64(rows), Int64(columns), xq, stride, Int64(n), out + r0, Int64(ldo), 0, Int64(rows))
            r0 += rows
        }
    }

    /// `matmulPackingTiles` for `count` (≤ `packingTileRows`) rows that each sit at their own address, `rows[r] +
    /// offset` (a paged FFN's rows, group after group, each group its own buffer): packed into one tile together, so
    /// groups whose row counts are not multiples of 16 still fill the packed kernel's 16-row groups.
    static func matmulPackingRowList(_ type: Int32, _ rows: UnsafePointer<UnsafeRawPointer?>, offset: Int, count: Int,
                                     columns: Int, _ xq: UnsafeRawPointer, stride: Int, n: Int,
                                     _ out: UnsafeMutablePointer<Float>, ldo: Int, tile: UnsafeMutableRawPointer) {
        pl_pack_row_list(type, rows, offset, Int64(count), Int64(columns), tile)
        pl_matmul_packed(type, tile, Int64(count), Int64(columns), xq, stride, Int64(n), out, Int64(ldo), 0, Int64(count))
    }

    /// out[i, r] for rows `range` of a packed matrix and `n` quantized inputs.
    @inline(__always)
    static func matmulPacked(_ type: Int32, _ packed: UnsafeRawPointer, rows: Int, columns: Int, rowBytes: Int,
                             _ xq: UnsafeRawPointer, stride: Int, n: Int, _ out: UnsafeMutablePointer<Float>, ldo: Int,
                             _ range: Range<Int>) {
        if n > 1 && n <= smallBatch && pl_packed_few_owns(type, Int64(n), Int64(columns)) == 0 {
            // Tiles of whole 16-row groups (the packed layout's unit).
            let tile = max(16, smallBatchBytes / max(1, rowBytes) / 16 * 16)
            var r0 = range.lowerBound
            while r0 < range.upperBound {
                let r1 = min(range.upperBound, r0 + tile)
                for i in 0..<n {
                    pl_matmul_packed(type, packed, Int64(rows), Int64(columns), xq + i * stride, stride, 1, out + i * ldo,
                                     Int64(ldo), Int64(r0), Int64(r1))
                }
                r0 = r1
            }
            return
        }
        pl_matmul_packed(type, packed, Int64(rows), Int64(columns), xq, stride, Int64(n), out, Int64(ldo),
                         Int64(range.lowerBound), Int64(range.upperBound))
    }

    public func callAsFunction(_ w: WeightTensor, _ input: UnsafePointer<Float>, n: Int,
                               _ output: UnsafeMutablePointer<Float>, outputStride: Int? = nil) {
        let rows = w.rows, cols = w.columns
        let ldo = outputStride ?? rows
        let type = Int32(w.type.rawValue)
        // Quantized weights: llama.cpp multiplies them with activations quantized to Q8 blocks, by integer dot
        // products, in prefill as in decode. Doing exactly that keeps our prompt's KV cache equal to the
        // reference's, so greedy continuations agree token for token. (Dequantized tiles through sgemm, even
        // with the inputs rounded through Q8, drift by up to ~0.9 logits after 30 layers: each layer's
        // re-quantization of the activations amplifies last-bit differences.)
        let act = pl_activation_type(type)
        if act >= 0 {
            let stride = quantizeInputs(input, n: n, columns: cols, activation: act)
            let xqc = UnsafeRawPointer(quantizedInput)
            let minimumUnits = Linear.minimumChunkUnits(rowBytes: w.rowBytes)
            if let packed = w.packed {
                if n == 1 {
                    // A decoded token: chunks claimed as the threads go (the output head is most of a token's time).
                    pool.dynamicRanges(rows, granularity: 16, minimumUnits: minimumUnits) { range in
                        Linear.matmulPacked(type, packed, rows: rows, columns: cols, rowBytes: w.rowBytes, xqc, stride: stride,
                                            n: 1, output, ldo: ldo, range)
                    }
                    return
                }
                pool.parallelRanges(rows, granularity: 16) { range in
                    Linear.matmulPacked(type, packed, rows: rows, columns: cols, rowBytes: w.rowBytes, xqc, stride: stride, n: n,
                                        output, ldo: ldo, range)
                }
                return
            }
            let body = { (range: Range<Int>) in
                pl_matmul_q(type, w.data, w.rowBytes, xqc, stride, Int64(n), output, Int64(ldo), Int64(cols),
                            Int64(range.lowerBound), Int64(range.upperBound))
            }
            if n == 1 {
                pool.dynamicRanges(rows, granularity: 16, minimumUnits: minimumUnits, body)
            } else {
                pool.parallelRanges(rows, granularity: 16, body)
            }
            return
        }
        if n <= Int(PL_FLOAT_FEW_MAX) {
            // One token's decode, or a decode step over a few sequences: each output with a lone decode's bits,
            // each row read once.
            pool.parallelRanges(rows, granularity: 16) { range in
                pl_matmul_float_few(type, w.data, w.rowBytes, input, Int64(cols), Int64(n), output, Int64(ldo),
                                    Int64(cols), Int64(range.lowerBound), Int64(range.upperBound))
            }
            return
        }
        if w.type == .f32 && pl_gemm_f32_supported() != 0 {
            // Our AVX-512 kernel: ~2× OpenBLAS's when its kernels are AVX2 (Debian's 0.3.21 on this CPU, or
            // OPENBLAS_CORETYPE=Haswell), and a result that does not depend on the thread count.
            let weights = w.data.assumingMemoryBound(to: Float.self)
            let panels = self.panels, panelFloats = self.panelFloats
            let parts = pool.threadCount
            pool.run(parts: parts) { p in
                // 32-row panels; a part's index picks its panel scratch.
                let share = ThreadPool.share(rows, granularity: 32, part: p, parts: parts)
                if !share.isEmpty {
                    pl_gemm_f32(input, Int64(cols), Int64(n), weights, Int64(cols), Int64(cols), output, Int64(ldo),
                                Int64(share.lowerBound), Int64(share.upperBound), panels + p * panelFloats)
                }
            }
            return
        }
        // OpenBLAS's thread count is one setting for the process, and its sums' last bits follow its thread split:
        // set it to this pool's count at each call, so another model's load (or an app's own BLAS use) in between
        // cannot change this model's prompt logits.
        setBLASThreads(pool.threadCount)
        if w.type == .f32 {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(rows), Int32(cols), 1,
                        input, Int32(cols), w.data.assumingMemoryBound(to: Float.self), Int32(cols),
                        0, output, Int32(ldo))
            return
        }
        // Float weights (F16/BF16): dequantize a tile of rows at a time and multiply with sgemm.
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

/// Sets how many threads OpenBLAS uses, for the whole process. `Linear` sets it to its pool's count before each
/// sgemm (so they never oversubscribe, and a prompt's bits do not depend on who set it last).
public func setBLASThreads(_ n: Int) {
    openblas_set_num_threads(Int32(max(1, n)))
}

/// The OpenBLAS kernel family in use (e.g. "Haswell", "SkylakeX", "Prescott"), for `bench` and `inspect`.
public func blasCoreName() -> String {
    guard let p = openblas_get_corename() else { return "unknown" }
    return String(cString: p)
}
