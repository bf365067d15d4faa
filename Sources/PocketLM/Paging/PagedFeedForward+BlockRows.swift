import CKernels
import CPlatform
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The block-rows format (every type but all-Q8_0: the other quantized types, F32, F16, BF16): the dense row kernels
/// on each group's rows.
extension PagedFeedForward {
    /// Block rows: per group in memory, the dense row kernel on its gate and up rows (neurons of groups not used stay
    /// 0, so their h is 0), SwiGLU on its neurons and its down blocks copied into the reassembled down matrix, all in
    /// one round of the threads (each takes a share of the groups, on the layer's inputs quantized once); then the
    /// dense kernel on that matrix. Rows share one pass when they use the same groups (no predictor). The row kernel
    /// and the activation quantization are Linear's, so with every neuron used the result is the ordinary file's.
    /// Float rows (F32/F16/BF16) take Linear's float kernels: a few inputs `pl_matmul_float_few` inside the round, a
    /// prompt's batch Linear itself on the whole matrix gathered from the groups before it (its batch kernels run
    /// their own threads), so the bits are again the ordinary file's, OpenBLAS's sgemm included.
    func computeBlockRows(block: Int, buffer: Int, input: UnsafeMutablePointer<Float>, rows: Int,
                                  out: UnsafeMutablePointer<Float>) {
        let dim = config.hiddenSize, ffn = config.intermediateSize, G = layout.groupsPerLayer
        let read = readThisStep + buffer * G
        let linear = linear!, down = downMatrix!
        let types = layout.types(block)
        let downBlock = types.down.blockSize, downBlockBytes = types.down.blockBytes
        let downRowBytes = layout.downRowBytes(block), sliceBytes = layout.downSliceBytes(block)
        let gateRowBytes = layout.gateRowBytes(block), upRowBytes = layout.upRowBytes(block)
        let upOffset = layout.upOffset(block), downOffset = layout.downOffset(block)
        let downWeights = WeightTensor(name: "ffn_down", type: types.down, rows: dim, columns: ffn,
                                       rowBytes: downRowBytes, data: UnsafeRawPointer(down))
        let gateType = Int32(types.gate.rawValue), upType = Int32(types.up.rawValue)
        let gateAct = pl_activation_type(gateType), upAct = pl_activation_type(upType)
        let stride = Linear.quantizedInputBytes(columns: dim)
        let shared = predictors.isEmpty
        let location = self.location[buffer], needed = self.needed
        let groupTable = downGroups, blocksPerGroup = layout.groupNeurons / downBlock
        var r0 = 0
        while r0 < rows {
            let n = shared ? rows : 1
            // One input whose down type has a gathering body: the down kernel reads the groups' slices where they
            // lie, instead of their copy into the reassembled matrix (most of a token's memory traffic besides the
            // weights themselves: every down byte written once and read again).
            let gathers = n == 1 && PagedFeedForward.gathersDown(types.down)
            let g = batchG + r0 * ffn, u = batchU + r0 * ffn
            g.initialize(repeating: 0, count: n * ffn)
            u.initialize(repeating: 0, count: n * ffn)
            let x = input + r0 * dim
            let xqGate = UnsafeRawPointer(blockRowsXq), xqUp = UnsafeRawPointer(blockRowsXq + (upAct == gateAct ? 0 : n * stride))
            func quantize(_ act: Int32, into dst: UnsafeMutableRawPointer) {
                for t in 0..<n { Linear.quantize(x + t * dim, count: dim, activation: act, into: dst + t * stride) }
            }
            if gateAct >= 0 { quantize(gateAct, into: blockRowsXq) }
            if upAct >= 0 && upAct != gateAct { quantize(upAct, into: blockRowsXq + n * stride) }
            func uses(_ gi: Int) -> Bool {
                // A group read for another row of the batch is not used by this one (as in `list(row:)`).
                location[gi] != nil && !(read[gi] && !needed[r0 * G + gi])
            }
            // A prompt's float rows, before the round: each matrix gathered whole from the groups (a group not used
            // leaves zero rows, so its neurons' outputs stay 0) and multiplied by Linear in one call, as the ordinary
            // file's matrix is. Group by group, OpenBLAS's sgemm ran other shapes, whose edges sum in another order.
            let floatBatch = n > Int(PL_FLOAT_FEW_MAX)
            if floatBatch, let matrix = floatBatchMatrix {
                for (name, type, act, rowBytes, offset, product) in [("ffn_gate", types.gate, gateAct, gateRowBytes, 0, g),
                                                                     ("ffn_up", types.up, upAct, upRowBytes, upOffset, u)]
                    where act < 0 {
                    for gi in 0..<G {
                        let neurons = layout.neurons(inGroup: gi), bytes = neurons.count * rowBytes
                        let dst = matrix + neurons.lowerBound * rowBytes
                        if uses(gi) { memcpy(dst, location[gi]! + offset, bytes) } else { memset(dst, 0, bytes) }
                    }
                    linear(WeightTensor(name: name, type: type, rows: ffn, columns: dim, rowBytes: rowBytes, data: matrix),
                           x, n: n, product, outputStride: ffn)
                }
            }
            let cache = caches[block], packedRows = pinnedRowsPacked[block]
            // A prompt's batch: rows of a type this tier packs go through the packed batch kernel, a tile at a time.
            let tiles = n > Linear.smallBatch ? batchTiles : nil, tileBytes = batchTileBytes
            let packsGate = PagedFeedForward.packsBatchTiles(types.gate), packsUp = PagedFeedForward.packsBatchTiles(types.up)
            /// out[t·ffn + r] for the group's rows r: quantized rows on the quantized inputs (a pinned group's through
            /// the packed kernel where they were packed at load, a prompt's through it packed a tile at a time), float
            /// rows (a few inputs; a batch's are done) on the inputs themselves.
            func rowProducts(_ type: Int32, _ act: Int32, _ rowsAt: UnsafeRawPointer, _ rowBytes: Int,
                             _ xq: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ count: Int, packed: Bool,
                             tile: UnsafeMutableRawPointer?) {
                if packed {
                    Linear.matmulPacked(type, rowsAt, rows: count, columns: dim, rowBytes: rowBytes, xq, stride: stride, n: n,
                                        out, ldo: ffn, 0..<count)
                } else if act >= 0, let tile {
                    Linear.matmulPackingTiles(type, rowsAt, rowBytes: rowBytes, columns: dim, xq, stride: stride, n: n, out,
                                              ldo: ffn, 0..<count, tile: tile)
                } else if act >= 0 {
                    pl_matmul_q(type, rowsAt, rowBytes, xq, stride, Int64(n), out, Int64(ffn), Int64(dim), 0, Int64(count))
                } else if !floatBatch {
                    pl_matmul_float_few(type, rowsAt, rowBytes, x, Int64(dim), Int64(n), out, Int64(ffn), Int64(dim), 0, Int64(count))
                }
            }
            let parts = pool.threadCount
            pool.run(parts: parts) { p in
                for gi in ThreadPool.share(G, granularity: 1, part: p, parts: parts) where uses(gi) {
                    let base = location[gi]!
                    let neurons = layout.neurons(inGroup: gi), lo = neurons.lowerBound
                    let packed = packedRows && cache.isPinned(group: gi), tile = tiles.map { $0 + p * tileBytes }
                    rowProducts(gateType, gateAct, base, gateRowBytes, xqGate, g + lo, neurons.count, packed: packed,
                                tile: packsGate ? tile : nil)
                    rowProducts(upType, upAct, base + upOffset, upRowBytes, xqUp, u + lo, neurons.count, packed: packed,
                                tile: packsUp ? tile : nil)
                    for t in 0..<n { activation.apply(g + t * ffn + lo, u + t * ffn + lo, count: neurons.count) }
                    if gathers { continue }
                    let first = lo / downBlock * downBlockBytes, bytes = neurons.count / downBlock * downBlockBytes
                    PagedFeedForward.copyRows(into: down + first, stride: downRowBytes, from: base + downOffset,
                                              stride: sliceBytes, bytes: bytes, rows: dim)
                }
            }
            var someGroup: UnsafeRawPointer?
            for gi in 0..<G where uses(gi) {
                stats.neuronsComputed += layout.neurons(inGroup: gi).count * n
                // (The copy path has its slices in the reassembled matrix: no table.)
                if gathers {
                    groupTable[gi] = location[gi]! + downOffset
                    someGroup = someGroup ?? groupTable[gi]
                }
            }
            if gathers, let someGroup {
                // A group not used here: its h blocks are zero, so any readable slices do (the reassembled matrix
                // held stale ones there).
                for gi in 0..<G where !uses(gi) { groupTable[gi] = someGroup }
                let xq = UnsafeMutableRawPointer(linear.quantizedInput)
                let downType = Int32(types.down.rawValue)
                Linear.quantize(g, count: ffn, activation: pl_activation_type(downType), into: xq)
                let o = out + r0 * dim, table = UnsafePointer(groupTable)
                pool.dynamicRanges(dim, granularity: 16, minimumUnits: Linear.minimumChunkUnits(rowBytes: downRowBytes)) { range in
                    _ = pl_bundle_down_groups(downType, table, Int64(blocksPerGroup), sliceBytes, xq, o, Int64(ffn),
                                              Int64(range.lowerBound), Int64(range.upperBound))
                }
            } else if let tiles, PagedFeedForward.packsBatchTiles(types.down) {
                // A prompt's batch on the reassembled matrix: the packed batch kernel.
                multiplyReassembled(types.down, UnsafeRawPointer(down), rows: dim, columns: ffn, g, n: n,
                                    xq: UnsafeMutableRawPointer(linear.quantizedInput), out + r0 * dim, tiles: tiles)
            } else {
                // (Gathering with no group used: every h is 0, and the matrix's stale contents times zero are zeros.)
                linear(downWeights, g, n: n, out + r0 * dim)
            }
            r0 += n
        }
    }

    /// out[t·rows + r] = row r of `matrix` (`rows` × `columns` of `type`, in the file's row layout) · input t, for a
    /// prompt's batch of `n` inputs (`columns` floats each), a matrix reassembled each step (block rows' down, the
    /// columns format's down rebuilt as Q8_0 rows): the inputs quantized into `xq`, then each thread's share of the
    /// rows through the packed batch kernel, packed a tile at a time into the thread's tile, or with no `tiles` the
    /// row kernel in place — the kernels the ordinary file's matrix runs for the batch, so its bits.
    func multiplyReassembled(_ type: GGMLType, _ matrix: UnsafeRawPointer, rows: Int, columns: Int,
                             _ input: UnsafePointer<Float>, n: Int, xq: UnsafeMutableRawPointer,
                             _ out: UnsafeMutablePointer<Float>, tiles: UnsafeMutableRawPointer?) {
        let t = Int32(type.rawValue), rowBytes = type.rowBytes(columns: columns)!, tileBytes = batchTileBytes
        let stride = Linear.quantizeInputs(input, n: n, columns: columns, activation: pl_activation_type(t), into: xq, pool: pool)
        let parts = pool.threadCount
        pool.run(parts: parts) { p in
            let share = ThreadPool.share(rows, granularity: 16, part: p, parts: parts)
            if let tiles {
                Linear.matmulPackingTiles(t, matrix, rowBytes: rowBytes, columns: columns, UnsafeRawPointer(xq), stride: stride,
                                          n: n, out, ldo: rows, share, tile: tiles + p * tileBytes)
            } else if !share.isEmpty {
                pl_matmul_q(t, matrix, rowBytes, UnsafeRawPointer(xq), stride, Int64(n), out, Int64(rows), Int64(columns),
                            Int64(share.lowerBound), Int64(share.upperBound))
            }
        }
    }

    /// Whether the down projection of one input runs on the groups' slices in place (`pl_bundle_down_groups`) for
    /// this down type on this CPU; else the slices are copied into the reassembled matrix first.
    static func gathersDown(_ type: GGMLType) -> Bool {
        pl_bundle_down_groups_runs(Int32(type.rawValue)) != 0
    }

    /// Copies `rows` runs of `bytes` bytes, `srcStride` apart, to runs `dstStride` apart: a group's down slices into the
    /// reassembled down matrix. A slice is one or a few blocks (20 bytes for a 32-neuron Q4_1 group, 30 layers × 48
    /// groups × 576 rows of them per token), where a library call per run costs more than the copy: short runs are
    /// copied inline in 4- or 2-byte words.
    static func copyRows(into dst: UnsafeMutableRawPointer, stride dstStride: Int, from src: UnsafeRawPointer,
                         stride srcStride: Int, bytes: Int, rows: Int) {
        func words<W: FixedWidthInteger>(_: W.Type) {
            let n = bytes / MemoryLayout<W>.size
            for r in 0..<rows {
                let d = dst + r * dstStride, s = src + r * srcStride
                for k in 0..<n {
                    d.storeBytes(of: s.loadUnaligned(fromByteOffset: k * MemoryLayout<W>.size, as: W.self),
                                 toByteOffset: k * MemoryLayout<W>.size, as: W.self)
                }
            }
        }
        if bytes >= 64 {
            for r in 0..<rows { (dst + r * dstStride).copyMemory(from: src + r * srcStride, byteCount: bytes) }
        } else if bytes % 8 == 0 {
            words(UInt64.self)
        } else if bytes % 4 == 0 {
            words(UInt32.self)
        } else if bytes % 2 == 0 {
            words(UInt16.self)
        } else {
            for r in 0..<rows { (dst + r * dstStride).copyMemory(from: src + r * srcStride, byteCount: bytes) }
        }
    }
}
