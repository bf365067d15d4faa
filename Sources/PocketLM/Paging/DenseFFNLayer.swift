import CKernels
import Foundation

/// One layer of a packed file whose every group stays in memory (resident mode, or a flash budget that holds the
/// whole FFN), reassembled once at load into the ordinary file's gate, up and down matrices and packed as
/// `MappedWeightStore` packs them. It then runs the ordinary file's kernels — at its speed and bit for bit —
/// instead of two small kernels per group and a down matrix reassembled from the groups' slices every step (block
/// rows), or the bundle kernels that gather each neuron's gate, up and down column (columns: 0.6× the ordinary
/// file's decode when resident).
final class DenseFFNLayer {
    let gate: WeightTensor
    let up: WeightTensor
    let down: WeightTensor
    private var owned: [UnsafeMutableRawPointer] = []

    /// Bytes the layer keeps (the packed copies replace the row-layout ones, which are freed).
    let bytes: Int

    /// `bundles`: the layer's groups, `layout.bundleBytes` apart, as read from the file; `downScales`: the columns
    /// format's resident down block scales (f16, `intermediateSize / 32` per down row), nil for block rows.
    init(layout: FlashLayout, block: Int, bundles: UnsafeRawPointer, downScales: UnsafePointer<UInt16>?) {
        let dim = layout.hiddenSize, ffn = layout.intermediateSize, G = layout.groupsPerLayer, bb = layout.bundleBytes
        let types = layout.types(block)
        let gateRowBytes = layout.gateRowBytes(block), upRowBytes = layout.upRowBytes(block)
        let downRowBytes = layout.downRowBytes(block), sliceBytes = layout.downSliceBytes(block)
        let upOffset = layout.upOffset(block), downOffset = layout.downOffset(block)
        let downBlock = types.down.blockSize, downBlockBytes = types.down.blockBytes

        var owned: [UnsafeMutableRawPointer] = []
        var kept = 0
        /// The row-layout matrix `fill` writes, packed when the ordinary file's store would pack it (its row layout
        /// freed then: only the packed copy is read, as for the ordinary file's matrices).
        func matrix(_ name: String, _ type: GGMLType, rows: Int, columns: Int, rowBytes: Int,
                    fill: (UnsafeMutableRawPointer) -> Void) -> WeightTensor {
            guard rows > 1, MappedWeightStore.packs(type: type) else {
                let data = UnsafeMutableRawPointer.allocate(byteCount: rows * rowBytes, alignment: 64)
                fill(data)
                owned.append(data)
                kept += rows * rowBytes
                return WeightTensor(name: name, type: type, rows: rows, columns: columns, rowBytes: rowBytes, data: UnsafeRawPointer(data))
            }
            // The row layout only feeds the packing: mapped and unmapped here, not malloc'd and freed — glibc then
            // raises its mmap threshold to the freed size and later layers' buffers come from the heap, whose freed
            // chunks stay resident: budgeted SmolLM2 Q4_1 loads that kept every group peaked at 175–179 MiB in most
            // runs instead of 132–137 MiB, past budgets of 175M.
            let packedBytes = pl_packed_bytes(Int32(type.rawValue), Int64(rows), Int64(columns))
            let packed = UnsafeMutableRawPointer.allocate(byteCount: packedBytes, alignment: 64)
            let data = MappedScratch(bytes: rows * rowBytes)
            withExtendedLifetime(data) {
                fill(data.pointer)
                packMatrix(type: type, rows: rows, columns: columns, rowBytes: rowBytes, data: UnsafeRawPointer(data.pointer), into: packed)
            }
            owned.append(packed)
            kept += packedBytes
            // `data` is never read for a packed quantized matrix (Linear takes the packed copy), so it points there too.
            return WeightTensor(name: name, type: type, rows: rows, columns: columns, rowBytes: rowBytes,
                                data: UnsafeRawPointer(packed), packed: UnsafeRawPointer(packed))
        }
        if layout.format == .columns, let downScales {
            // Neuron i's bundle: gate row i, up row i, then down column i (one int8 quant per down row).
            let nb = layout.neuronBytes, gn = layout.groupNeurons
            func bundle(_ i: Int) -> UnsafeRawPointer { bundles + (i / gn) * bb + (i % gn) * nb }
            gate = matrix("ffn_gate", types.gate, rows: ffn, columns: dim, rowBytes: gateRowBytes) { dst in
                for i in 0..<ffn { (dst + i * gateRowBytes).copyMemory(from: bundle(i), byteCount: gateRowBytes) }
            }
            up = matrix("ffn_up", types.up, rows: ffn, columns: dim, rowBytes: upRowBytes) { dst in
                for i in 0..<ffn { (dst + i * upRowBytes).copyMemory(from: bundle(i) + gateRowBytes, byteCount: upRowBytes) }
            }
            down = matrix("ffn_down", types.down, rows: dim, columns: ffn, rowBytes: downRowBytes) { dst in
                ColumnsDownMatrix.writeScales(downScales, into: dst, dim: dim, ffn: ffn)
                for i in 0..<ffn {
                    ColumnsDownMatrix.writeColumn(bundle(i) + gateRowBytes + upRowBytes, neuron: i, into: dst, dim: dim, ffn: ffn)
                }
            }
        } else {
            gate = matrix("ffn_gate", types.gate, rows: ffn, columns: dim, rowBytes: gateRowBytes) { dst in
                for gi in 0..<G {
                    let n = layout.neurons(inGroup: gi)
                    (dst + n.lowerBound * gateRowBytes).copyMemory(from: bundles + gi * bb, byteCount: n.count * gateRowBytes)
                }
            }
            up = matrix("ffn_up", types.up, rows: ffn, columns: dim, rowBytes: upRowBytes) { dst in
                for gi in 0..<G {
                    let n = layout.neurons(inGroup: gi)
                    (dst + n.lowerBound * upRowBytes).copyMemory(from: bundles + gi * bb + upOffset, byteCount: n.count * upRowBytes)
                }
            }
            down = matrix("ffn_down", types.down, rows: dim, columns: ffn, rowBytes: downRowBytes) { dst in
                for gi in 0..<G {
                    let n = layout.neurons(inGroup: gi)
                    let first = n.lowerBound / downBlock * downBlockBytes, count = n.count / downBlock * downBlockBytes
                    let slices = bundles + gi * bb + downOffset
                    for r in 0..<dim {
                        (dst + r * downRowBytes + first).copyMemory(from: slices + r * sliceBytes, byteCount: count)
                    }
                }
            }
        }
        self.owned = owned
        bytes = kept
    }

    deinit { for p in owned { p.deallocate() } }

    /// out = Wdown · act(Wgate·x, Wup·x) for `rows` inputs, as Transformer runs an ordinary file's FFN (the
    /// activation on each thread's own rows right after its gate and up rows); `g` and `u` hold rows × ffn floats.
    func forward(linear: Linear, activation: GatedActivation, input: UnsafeMutablePointer<Float>, rows n: Int,
                 out: UnsafeMutablePointer<Float>, g: UnsafeMutablePointer<Float>, u: UnsafeMutablePointer<Float>) {
        let ffn = gate.rows
        linear.fused(input, n: n, gate, g, up, u) { m, rows in
            guard m == 1 else { return }
            for t in 0..<n { activation.apply(g + t * ffn + rows.lowerBound, u + t * ffn + rows.lowerBound, count: rows.count) }
        }
        linear(down, g, n: n, out)
    }
}

/// Anonymous memory mapped for one use and unmapped when dropped, bypassing malloc.
private final class MappedScratch {
    let pointer: UnsafeMutableRawPointer
    private let bytes: Int

    init(bytes: Int) {
        self.bytes = max(1, bytes)
        guard let p = mmap(nil, self.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            fatalError("out of memory: \(bytes) bytes to reassemble a layer")
        }
        pointer = p
    }

    deinit { munmap(pointer, bytes) }
}
