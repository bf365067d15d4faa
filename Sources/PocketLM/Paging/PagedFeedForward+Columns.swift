import CKernels
import CPlatform
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The columns format's down matrix rebuilt as Q8_0 rows (`dim` rows of `ffn / 32` blocks), as the ordinary file
/// has it: row r, block b holds the resident scale d_down[r][b], then the int8 quants of neurons 32b ..< 32b + 32 at
/// row r, which the bundles keep as each neuron's column. `DenseFFNLayer` builds it once at load; a prompt's batch
/// (`computeColumnsBatch`) each layer.
enum ColumnsDownMatrix {
    static let blockBytes = Int(PL_Q8_0_BLOCK_BYTES)

    /// Bytes of a row for `ffn` neurons.
    static func rowBytes(ffn: Int) -> Int { ffn / 32 * blockBytes }

    /// Every block's scale, from the resident ones (row r, block b at r·(ffn / 32) + b).
    static func writeScales(_ scales: UnsafePointer<UInt16>, into down: UnsafeMutableRawPointer, dim: Int, ffn: Int) {
        let blocks = ffn / 32, rowBytes = rowBytes(ffn: ffn)
        for r in 0..<dim {
            for b in 0..<blocks {
                down.storeBytes(of: scales[r * blocks + b], toByteOffset: r * rowBytes + b * blockBytes, as: UInt16.self)
            }
        }
    }

    /// Neuron `i`'s column (`dim` int8 quants, one per row) into element i of every row.
    static func writeColumn(_ column: UnsafeRawPointer, neuron i: Int, into down: UnsafeMutableRawPointer, dim: Int, ffn: Int) {
        let rowBytes = rowBytes(ffn: ffn), at = down + i / 32 * blockBytes + 2 + i % 32
        for r in 0..<dim { at.storeBytes(of: column.load(fromByteOffset: r, as: UInt8.self), toByteOffset: r * rowBytes, as: UInt8.self) }
    }
}

/// The columns format (Q8_0 bundles): gate/up over the bundles in memory gathered by pointer, SwiGLU, the compute
/// rules, and the down projection over the same bundles.
extension PagedFeedForward {
    func compute(block: Int, buffer: Int, input: UnsafeMutablePointer<Float>, rows: Int,
                         out: UnsafeMutablePointer<Float>) {
        if layout.format == .blockRows {
            computeBlockRows(block: block, buffer: buffer, input: input, rows: rows, out: out)
            return
        }
        let dim = config.hiddenSize, ffn = config.intermediateSize, G = layout.groupsPerLayer
        let nb = layout.neuronBytes
        let read = readThisStep + buffer * G
        // The bundles row `r` computes: every group in memory (computing it costs no read), except a group read
        // for another row of the batch, so each position computes what it would have alone.
        func list(row r: Int) -> Int {
            var n = 0
            for gi in 0..<G {
                guard let base = location[buffer][gi] else { continue }
                if read[gi] && !needed[r * G + gi] && options.mode != .mmap { continue }
                for i in layout.neurons(inGroup: gi) {
                    ptrs[n] = base + (i - gi * layout.groupNeurons) * nb
                    ids[n] = Int32(i)
                    n += 1
                }
            }
            return n
        }
        let ptrBase = UnsafePointer(ptrs)
        // A batch whose rows share one list (no per-row predictor choice) gets its gate/up from one pass over
        // the bundles, each used for every row while in cache (bit-identical to one row at a time).
        let batched = rows > 1 && predictors.isEmpty
        if batched && rows > Linear.smallBatch, let xq = columnsBatchXq, let down = downMatrix {
            computeColumnsBatch(block: block, buffer: buffer, input: input, rows: rows, out: out, tiles: batchTiles, xq: xq, down: down)
            return
        }
        if batched {
            let n = list(row: 0)
            let stride = dim / 32 * Int(PL_Q8_0_BLOCK_BYTES)
            for r in 0..<rows { pl_quantize_q8_0(input + r * dim, batchXq + r * stride, Int64(dim)) }
            let parts = min(pool.threadCount, max(1, n / 64))
            let xqc = UnsafeRawPointer(batchXq), gp = batchG, up = batchU
            pool.run(parts: parts) { part in
                let k0 = n * part / parts, k1 = n * (part + 1) / parts
                ptrBase.withMemoryRebound(to: UnsafeRawPointer?.self, capacity: n) { p in
                    pl_bundle_gate_up_batch_q8_0(p, Int64(k0), Int64(k1), xqc, stride, Int64(rows), Int64(dim), gp, up, Int64(n))
                }
            }
        }
        for r in 0..<rows {
            var n = list(row: r)
            if batched {
                g.update(from: batchG + r * n, count: n)
                u.update(from: batchU + r * n, count: n)
            } else {
                let x = input + r * dim
                pl_quantize_q8_0(x, xq, Int64(dim))
                let parts = min(pool.threadCount, max(1, n / 64))
                let xqc = UnsafeRawPointer(xq), gp = g, up = u, count = n
                pool.run(parts: parts) { part in
                    let k0 = count * part / parts, k1 = count * (part + 1) / parts
                    ptrBase.withMemoryRebound(to: UnsafeRawPointer?.self, capacity: count) { p in
                        pl_bundle_gate_up_q8_0(p, Int64(k0), Int64(k1), xqc, Int64(dim), gp, up)
                    }
                }
            }
            activation.apply(g, u, count: n)
            for i in 0..<ffn { h[i] = 0 }
            for k in 0..<n { h[Int(ids[k])] = g[k] }
            n = applyComputeRule(count: n, buffer: buffer, block: block)
            stats.neuronsComputed += n
            pl_quantize_q8_0(h, hq, Int64(ffn))
            let o = out + r * dim, scales = UnsafePointer(downScales[block]), hqc = UnsafeRawPointer(hq)
            let accBase = acc, per = accPerPart, idc = UnsafePointer(ids), count = n
            let rowParts = pool.threadCount
            pool.run(parts: rowParts) { part in
                // Rows split on 16-row boundaries so each part's vector loop stays whole.
                let r0 = min(dim, (dim / 16) * part / rowParts * 16), r1 = part == rowParts - 1 ? dim : min(dim, (dim / 16) * (part + 1) / rowParts * 16)
                guard r0 < r1 else { return }
                ptrBase.withMemoryRebound(to: UnsafeRawPointer?.self, capacity: count) { p in
                    pl_bundle_down_q8_0(p, idc, Int64(count), hqc, scales, Int64(dim), Int64(ffn),
                                        accBase + part * per, o + r0, Int64(r0), Int64(r1))
                }
            }
        }
    }

    /// A prompt's batch, every neuron in memory computed, through the kernels the ordinary file's prompt runs, so its
    /// bits on every tier: per group in memory its gate and up rows (a bundle's rows, `neuronBytes` apart), the
    /// activation, and its down columns written into a reassembled Q8_0 down matrix (the resident scales, the columns'
    /// int8 quants); then that matrix, h quantized per row over the whole layer (neurons not in memory are 0, so the
    /// matrix's stale blocks there add exact zeros). On AVX-512 VNNI (`tiles`: the ordinary file's Q8_0 matrices are
    /// packed at load there) the rows go through the packed batch kernel, a thread's neurons packed in runs of up to 64
    /// across its groups (a group's 36 neurons alone filled three 16-row groups, 48 rows computed for 36); ~2.5× the
    /// bundle kernels' speed for a 298-token SmolLM2 Q8_0 prompt. Elsewhere the row kernel runs on the bundles' rows in
    /// place: the bundle kernels give one-token decoding's bits, but the AVX2 tier's prompt kernel sums in another order
    /// (`PL_AVX2_Q8_BLOCK_ORDER_MIN`), so a paged prompt there gave other logits than the ordinary file (SmolLM2 Q8_0's
    /// top logit 30.119 against 30.146) at half its speed.
    func computeColumnsBatch(block: Int, buffer: Int, input: UnsafeMutablePointer<Float>, rows: Int,
                             out: UnsafeMutablePointer<Float>, tiles: UnsafeMutableRawPointer?, xq: UnsafeMutableRawPointer,
                             down: UnsafeMutableRawPointer) {
        let dim = config.hiddenSize, ffn = config.intermediateSize, G = layout.groupsPerLayer
        let nb = layout.neuronBytes, rowBytes = layout.gateRowBytes(block), columnOffset = 2 * rowBytes
        let q8 = Int32(GGMLType.q8_0.rawValue), act = pl_activation_type(q8)
        let read = readThisStep + buffer * G, location = self.location[buffer], needed = self.needed
        let mmap = options.mode == .mmap
        func uses(_ gi: Int) -> Bool { location[gi] != nil && !(read[gi] && !needed[gi] && !mmap) }
        let xStride = Linear.quantizeInputs(input, n: rows, columns: dim, activation: act, into: xq, pool: pool)
        let g = batchG, u = batchU, tileBytes = batchTileBytes
        g.initialize(repeating: 0, count: rows * ffn)
        u.initialize(repeating: 0, count: rows * ffn)
        ColumnsDownMatrix.writeScales(downScales[block], into: down, dim: dim, ffn: ffn)
        let parts = pool.threadCount, groupNeurons = layout.groupNeurons, tileRows = Linear.packingTileRows
        let xqc = UnsafeRawPointer(xq)
        // The activation and the down columns of neurons first ..< first + count, neuron first + j's bundle at bundle(j).
        func finish(first: Int, count: Int, bundle: (Int) -> UnsafeRawPointer) {
            for t in 0..<rows { activation.apply(g + t * ffn + first, u + t * ffn + first, count: count) }
            for j in 0..<count {
                ColumnsDownMatrix.writeColumn(bundle(j) + columnOffset, neuron: first + j, into: down, dim: dim, ffn: ffn)
            }
        }
        pool.run(parts: parts) { p in
            let groups = ThreadPool.share(G, granularity: 1, part: p, parts: parts)
            guard let tiles else {
                // The row kernel on each group's rows where they lie.
                for gi in groups where uses(gi) {
                    let base = UnsafeRawPointer(location[gi]!), neurons = layout.neurons(inGroup: gi)
                    let lo = neurons.lowerBound, n = Int64(neurons.count)
                    pl_matmul_q(q8, base, nb, xqc, xStride, Int64(rows), g + lo, Int64(ffn), Int64(dim), 0, n)
                    pl_matmul_q(q8, base + rowBytes, nb, xqc, xStride, Int64(rows), u + lo, Int64(ffn), Int64(dim), 0, n)
                    finish(first: lo, count: neurons.count) { base + $0 * nb }
                }
                return
            }
            let tile = tiles + p * tileBytes
            withUnsafeTemporaryAllocation(of: UnsafeRawPointer?.self, capacity: tileRows) { bundles in
                let list = bundles.baseAddress!
                var count = 0, first = 0   // the run: neurons first ..< first + count, list[j] neuron first + j's bundle
                func flush() {
                    guard count > 0 else { return }
                    Linear.matmulPackingRowList(q8, list, offset: 0, count: count, columns: dim, xqc, stride: xStride,
                                                n: rows, g + first, ldo: ffn, tile: tile)
                    Linear.matmulPackingRowList(q8, list, offset: rowBytes, count: count, columns: dim, xqc, stride: xStride,
                                                n: rows, u + first, ldo: ffn, tile: tile)
                    finish(first: first, count: count) { list[$0]! }
                    count = 0
                }
                for gi in groups {
                    guard uses(gi) else { flush(); continue }
                    let base = UnsafeRawPointer(location[gi]!)
                    for i in layout.neurons(inGroup: gi) {
                        if count == 0 { first = i }
                        list[count] = base + (i - gi * groupNeurons) * nb
                        count += 1
                        if count == tileRows { flush() }
                    }
                }
                flush()
            }
        }
        for gi in 0..<G where uses(gi) { stats.neuronsComputed += layout.neurons(inGroup: gi).count * rows }
        multiplyReassembled(.q8_0, UnsafeRawPointer(down), rows: dim, columns: ffn, g, n: rows, xq: xq, out, tiles: tiles)
    }

    /// The exact/threshold rules: drop neurons by their computed |h|. Returns the neurons kept (the list is
    /// compacted). Counts what an oracle would have read: the groups with a kept neuron that were not in memory.
    func applyComputeRule(count n: Int, buffer: Int, block: Int) -> Int {
        let cut: Float
        switch options.sparsity {
        case .none, .predictor: return n
        case .threshold(let t): cut = Float(t)
        case .exact(let keep):
            for k in 0..<n { absH[k] = abs(g[k]) }
            let want = max(1, min(n, Int((keep * Double(config.intermediateSize)).rounded(.up))))
            cut = kthLargest(absH, count: n, k: want)
        }
        let G = layout.groupsPerLayer
        var kept = 0
        var lastGroup = -1
        let read = readThisStep + buffer * G
        for k in 0..<n {
            let i = Int(ids[k])
            if abs(g[k]) >= cut {
                ptrs[kept] = ptrs[k]
                ids[kept] = ids[k]
                kept += 1
                let gi = i / layout.groupNeurons
                if gi != lastGroup {
                    lastGroup = gi
                    if read[gi] || options.mode == .naive || options.mode == .mmap { stats.oracleBytes += layout.bundleBytes }
                }
            } else {
                h[i] = 0
            }
        }
        return kept
    }

    /// The k-th largest of `count` values (quickselect on a scratch copy; allocates nothing).
    func kthLargest(_ v: UnsafeMutablePointer<Float>, count: Int, k: Int) -> Float {
        for i in 0..<count { scratch[i] = v[i] }
        var lo = 0, hi = count - 1
        let target = k - 1
        while lo < hi {
            let pivot = scratch[(lo + hi) / 2]
            var i = lo, j = hi
            while i <= j {
                while scratch[i] > pivot { i += 1 }
                while scratch[j] < pivot { j -= 1 }
                if i <= j { scratch.swapAt(i, j); i += 1; j -= 1 }
            }
            if target <= j { hi = j } else if target >= i { lo = i } else { break }
        }
        return scratch[target]
    }
}

private extension UnsafeMutablePointer where Pointee == Float {
    func swapAt(_ i: Int, _ j: Int) {
        let t = self[i]; self[i] = self[j]; self[j] = t
    }
}
