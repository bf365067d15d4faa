import CKernels
import Foundation

/// Random Q8_0 weights for any `ModelConfig`, generated in memory: for measuring shapes whose trained weights we
/// do not have (the MobileLLM family) without writing a file first. Matrices hold random int8 quants with
/// scales chosen so activations stay O(1); norms are 1. Deterministic per seed.
public final class RandomWeightStore: WeightStore, @unchecked Sendable {
    public let config: ModelConfig
    public let seed: UInt64
    private var tensors: [String: (shape: [Int], rows: Int, columns: Int, data: UnsafeMutableRawPointer, packed: UnsafeMutableRawPointer?)] = [:]
    private let arena = WeightArena()
    private let lock = NSLock()

    public init(config: ModelConfig, seed: UInt64 = 1) throws {
        try config.validate()
        guard config.hiddenSize % 32 == 0, config.intermediateSize % 32 == 0 else {
            throw ModelError.invalidConfig(field: "hidden_size", reason: "Q8_0 needs hidden and FFN sizes that are multiples of 32")
        }
        self.config = config
        self.seed = seed
    }

    deinit {
        for t in tensors.values {
            t.data.deallocate()
        }
    }

    /// Every tensor a llama-style model of this config has, with its ggml shape.
    public var tensorShapes: [String: [Int]] {
        let d = config.hiddenSize, kv = config.kvDim, f = config.intermediateSize
        var shapes: [String: [Int]] = ["token_embd.weight": [d, config.vocabSize], "output_norm.weight": [d]]
        if !config.tiedEmbeddings { shapes["output.weight"] = [d, config.vocabSize] }
        for i in 0..<config.numHiddenLayers {
            let p = "blk.\(i)."
            shapes[p + "attn_norm.weight"] = [d]
            shapes[p + "ffn_norm.weight"] = [d]
            shapes[p + "attn_q.weight"] = [d, d]
            shapes[p + "attn_k.weight"] = [d, kv]
            shapes[p + "attn_v.weight"] = [d, kv]
            shapes[p + "attn_output.weight"] = [d, d]
            shapes[p + "ffn_gate.weight"] = [d, f]
            shapes[p + "ffn_up.weight"] = [d, f]
            shapes[p + "ffn_down.weight"] = [f, d]
        }
        return shapes
    }

    public func contains(_ name: String) -> Bool { tensorShapes[name] != nil }

    public func tensor(_ name: String, shape: [Int]) throws(GGUFError) -> WeightTensor {
        guard let expected = tensorShapes[name] else { throw .missingTensor(name) }
        guard expected == shape else { throw .tensorShape(tensor: name, expected: shape, found: expected) }
        lock.lock()
        defer { lock.unlock() }
        let columns = shape[0], rows = shape.count > 1 ? shape[1] : 1
        if let t = tensors[name] { return view(name, t.rows, t.columns, t.data, t.packed) }
        var rng = SplitMix64(seed: seed &+ Self.stableHash(name))
        if rows == 1 {
            // A norm: all ones, F32.
            let data = UnsafeMutableRawPointer.allocate(byteCount: columns * 4, alignment: 64)
            data.bindMemory(to: Float.self, capacity: columns).initialize(repeating: 1, count: columns)
            tensors[name] = (shape, rows, columns, data, nil)
            return view(name, rows, columns, data, nil)
        }
        // Q8_0 blocks: f16 scale, 32 random int8 quants in [-127, 127]; the scale makes each row's
        // weights ~N(0, 1/columns) in magnitude so a projection keeps activations O(1).
        let rowBytes = columns / 32 * 34
        let data = UnsafeMutableRawPointer.allocate(byteCount: rows * rowBytes, alignment: 64)
        let scale = pl_f32_to_f16(Float(1.7 / Double(columns).squareRoot() / 73.0))
        for r in 0..<rows {
            let row = data + r * rowBytes
            for b in 0..<(columns / 32) {
                let block = row + b * 34
                block.storeBytes(of: scale, as: UInt16.self)
                var i = 0
                while i < 32 {
                    let bits = rng.next()
                    for k in 0..<8 where i + k < 32 {
                        let byte = UInt8(truncatingIfNeeded: bits >> (8 * UInt64(k)))
                        block.storeBytes(of: byte == 0x80 ? 0x81 : byte, toByteOffset: 2 + i + k, as: UInt8.self)
                    }
                    i += 8
                }
            }
        }
        var packed: UnsafeMutableRawPointer?
        if MappedWeightStore.tierPacks(.q8_0) {
            let dst = arena.allocate(pl_packed_bytes(Int32(GGMLType.q8_0.rawValue), Int64(rows), Int64(columns)))
            packMatrix(type: .q8_0, rows: rows, columns: columns, rowBytes: rowBytes, data: UnsafeRawPointer(data), into: dst)
            packed = dst
        }
        tensors[name] = (shape, rows, columns, data, packed)
        return view(name, rows, columns, data, packed)
    }

    private func view(_ name: String, _ rows: Int, _ columns: Int, _ data: UnsafeMutableRawPointer,
                      _ packed: UnsafeMutableRawPointer?) -> WeightTensor {
        let type: GGMLType = rows == 1 ? .f32 : .q8_0
        return WeightTensor(name: name, type: type, rows: rows, columns: columns, rowBytes: type.rowBytes(columns: columns)!,
                            data: UnsafeRawPointer(data), packed: packed.map(UnsafeRawPointer.init))
    }

    /// FNV-1a: a hash that is the same in every process (Swift's hashValue is seeded per run).
    static func stableHash(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }
}
