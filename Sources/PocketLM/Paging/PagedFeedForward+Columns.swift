import CKernels
import CPlatform
import Foundation
#if canImport(Glibc)
import Glibc
#endif

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
