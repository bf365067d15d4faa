import CKernels
import CPlatform
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The FFN step of a packed model: choose the groups (all, or the predictor's), take those in memory, wait for the
/// rest, issue the next layer's reads, compute (or, in mmap mode, compute on the map and drop what the budget cannot keep).
extension PagedFeedForward {
    /// out[r] = Wdown · act(Wgate·x[r], Wup·x[r]) (SwiGLU or GeGLU) for the `rows` inputs of pass `pass` (block `block`).
    public func forward(pass: Int, block: Int, input: UnsafeMutablePointer<Float>, rows: Int,
                        out: UnsafeMutablePointer<Float>) throws {
        let G = layout.groupsPerLayer
        if pass == 0 {
            token += 1
            // The embedding rows the forward pass just looked up through the map: out of the page cache again, so a
            // step leaves at most a batch's rows there (ProcessBudget.pageCacheBytes).
            if evicts, let e = embeddingRange { file.adviseDontNeed(offset: e.offset, length: e.length, evict: true) }
        }
        var t0 = DispatchTime.now().uptimeNanoseconds
        // Seconds since the last lap, for the I/O / management / compute split.
        func lap() -> Double {
            let t1 = DispatchTime.now().uptimeNanoseconds
            defer { t0 = t1 }
            return Double(t1 - t0) * 1e-9
        }
        stats.layerSteps += 1

        if dense {
            stats.groupsNeeded += G
            stats.groupsInMemory += G
            stats.neuronsComputed += config.intermediateSize * rows
            stats.manageSeconds += lap()
            denseLayers[block].forward(linear: linear!, activation: activation, input: input, rows: rows, out: out, g: batchG, u: batchU)
            stats.computeSeconds += lap()
            return
        }

        if options.mode == .mmap {
            let base = mapped!.base + bundleOffsets[block]
            for gi in 0..<G { location[0][gi] = UnsafeRawPointer(base + gi * layout.bundleBytes) }
            for r in 0..<rows {
                for gi in 0..<G { needed[r * G + gi] = true }
            }
            stats.groupsNeeded += G
            for gi in 0..<G { readThisStep[gi] = true }
            stats.manageSeconds += lap()
            compute(block: block, buffer: 0, input: input, rows: rows, out: out)
            stats.computeSeconds += lap()
            // A shared block's next pass (immediate layer sharing) still needs its pages.
            if block >= plan.pinnedLayers, nextBlock(after: pass) != block {
                mapped!.adviseDontNeed(offset: bundleOffsets[block], length: layout.layerBytes)
                _ = pl_drop_cached(mmapFd, Int64(bundleOffsets[block]), Int64(layout.layerBytes))
                stats.bytesRead += layout.layerBytes
            }
            stats.manageSeconds += lap()
            return
        }

        // A shared block's second pass (immediate layer sharing) uses the groups already in memory.
        let buffer: Int
        if block == lastBlock, pass > 0 {
            buffer = lastBuffer
        } else {
            buffer = pending.firstIndex(of: block) ?? freeBuffer(after: lastBuffer)
            if let other = pending[buffer], other != block {
                // A read for another block still owns this buffer (the sequence was cut short): let it land.
                try? waitReads(buffer: buffer)
                pending[buffer] = nil
            }
            if pending[buffer] != block {
                if predictors.isEmpty {
                    selectAll(rows: rows)
                } else {
                    predict(block: block, input: input, rows: rows)
                    stats.computeSeconds += lap()
                }
                issue(block: block, buffer: buffer, rows: rows)
            }
            stats.manageSeconds += lap()
            do {
                try waitReads(buffer: buffer)
            } catch {
                invalidate(buffer: buffer)
                throw error
            }
            pending[buffer] = nil
            stats.ioWaitSeconds += lap()
            lastBlock = block
            lastBuffer = buffer
        }

        // Flash: reads of the next blocks run while this one computes, when their choice does not need their input
        // (every row of whatever batch comes next needs every group). (Naive is the paper's baseline loader: each
        // layer read in full when it is reached, nothing ahead.)
        let readsAhead = options.mode == .flash && predictors.isEmpty
        if readsAhead { queueAhead(pass: pass, computing: buffer, upTo: pending.count - 1) }
        stats.manageSeconds += lap()
        compute(block: block, buffer: buffer, input: input, rows: rows, out: out)
        stats.computeSeconds += lap()
        // This buffer is free again: the block `pending.count` passes on has its reads queued behind the others', so
        // the device is never left idle between one layer's last read and the next layer's first (and it keeps
        // reading through the attention and the head, which take longer than a layer's reads).
        if readsAhead, block != nextBlock(after: pass) {
            queueAhead(pass: pass, computing: nil, upTo: pending.count)
            stats.manageSeconds += lap()
        }
    }

    /// Queues the reads of the blocks 1 ... `ahead` passes after `pass` that are not queued yet, in pass order, each
    /// into a free staging buffer (not `computing`'s), stopping at the first that finds none or, while a buffer is
    /// `computing`, that is the block computing (a block's groups are in one buffer at a time; once its compute is
    /// over, its next pass may be queued).
    func queueAhead(pass: Int, computing: Int?, upTo ahead: Int) {
        let passes = schedule.passes
        guard !passes.isEmpty else { return }
        let current = passes[pass]
        var selected = false
        for k in 1...max(1, ahead) {
            let b = passes[(pass + k) % passes.count]
            if b == current && computing != nil { break }
            if pending.contains(b) { continue }
            guard let free = pending.indices.first(where: { pending[$0] == nil && $0 != computing }) else { break }
            if !selected { selectAll(rows: maxBatch); selected = true }
            issue(block: b, buffer: free, rows: 1)
        }
    }

    /// The staging buffer a block not queued yet reads into: the next one after `buffer` with nothing queued (else
    /// the next one, whose reads are waited for first).
    func freeBuffer(after buffer: Int) -> Int {
        let n = pending.count
        for k in 1...n where pending[(buffer + k) % n] == nil { return (buffer + k) % n }
        return (buffer + 1) % n
    }


    /// The blocks whose reads are queued (or landed) for passes not yet run, by staging buffer: with flash and no
    /// predictor, the next two blocks once a pass has run.
    public var blocksInFlight: [Int] { pending.compactMap { $0 } }

    func nextBlock(after pass: Int) -> Int? {
        let passes = schedule.passes
        return pass + 1 < passes.count ? passes[pass + 1] : passes.first
    }

    func selectAll(rows: Int) {
        for i in 0..<(rows * layout.groupsPerLayer) { needed[i] = true }
    }

    /// The predictor's choice for each row: its top `keep` fraction of groups by predicted |h| mass.
    func predict(block: Int, input: UnsafeMutablePointer<Float>, rows: Int) {
        guard case .predictor(let keep) = options.sparsity else { return }
        let p = predictors[block], dim = config.hiddenSize, ffn = config.intermediateSize, G = layout.groupsPerLayer
        let k = max(1, min(G, Int((keep * Double(G)).rounded(.up))))
        for r in 0..<rows {
            let x = input + r * dim
            pl_matvec(Int32(GGMLType.f16.rawValue), p.a, dim * 2, x, scratch, Int64(dim), 0, Int64(p.rank))
            pl_matvec(Int32(GGMLType.f16.rawValue), p.b, p.rank * 2, scratch, scores, Int64(p.rank), 0, Int64(ffn))
            for gi in 0..<G {
                var s: Float = 0
                for i in layout.neurons(inGroup: gi) {
                    let v = scores[i] + p.bias[i]
                    s += p.logTarget ? expf(v) : max(v, 0)
                }
                groupScores[gi] = s
            }
            let cut = kthLargest(groupScores, count: G, k: k)
            for gi in 0..<G { needed[r * G + gi] = groupScores[gi] >= cut }
        }
    }
}
