import CKernels
import Foundation
import Testing
import PocketLM

/// What each architecture reads from a file, and what it refuses: anything that changes the math and is not
/// implemented is an error naming the key or tensor, never a silently different model.
@Suite("Architectures")
struct ArchitectureTests {
    typealias Kit = GGUFTestKit

    static func configError(_ overrides: [(String, GGUFTestValue)]) throws -> ModelError? {
        try Kit.open(Kit.llamaFile(Kit.llamaMetadata(overrides))) { g -> ModelError? in
            do {
                _ = try ModelConfig(gguf: g)
                return nil
            } catch let e as ModelError {
                return e
            }
        }
    }

    @Test("unimplemented keys are refused, naming the key", arguments: [
        ("llama.rope.scaling.type", GGUFTestValue.str("longrope")),
        ("llama.final_logit_softcapping", .f32(30)),
        ("llama.attn_logit_softcapping", .f32(50)),
        ("llama.expert_count", .u32(8)),
        ("llama.attention.scale", .f32(0.1)),
    ])
    func refusedKeys(key: String, value: GGUFTestValue) throws {
        let e = try #require(try Self.configError([(key, value)]), "\(key) was accepted")
        guard case .unsupportedFeature(let named, _) = e else { Issue.record("\(e)"); return }
        #expect(named == key)
        #expect(e.errorDescription?.contains(key) == true)
    }

    @Test("RoPE scaling keys as llama.cpp reads them: linear (factor or the older scale_linear), yarn, none")
    func ropeScalingKeys() throws {
        func scaling(_ overrides: [(String, GGUFTestValue)]) throws -> ModelConfig.RopeScaling? {
            try Kit.open(Kit.llamaFile(Kit.llamaMetadata(overrides))) { g in try ModelConfig(gguf: g).ropeScaling }
        }
        #expect(try scaling([("llama.rope.scaling.type", .str("linear")), ("llama.rope.scaling.factor", .f32(4))])
                == .init(ropeType: "linear", factor: 4))
        #expect(try scaling([("llama.rope.scale_linear", .f32(2))]) == .init(ropeType: "linear", factor: 2))
        #expect(try scaling([("llama.rope.scaling.type", .str("none")), ("llama.rope.scaling.factor", .f32(4))]) == nil)
        let yarn = try #require(try scaling([("llama.rope.scaling.type", .str("yarn")), ("llama.rope.scaling.factor", .f32(4)),
                                             ("llama.rope.scaling.original_context_length", .u32(128))]))
        #expect(yarn.ropeType == "yarn" && yarn.factor == 4 && yarn.originalMaxPositionEmbeddings == 128)
        let e = try #require(try Self.configError([("llama.rope.scaling.type", .str("yarn")),
                                                   ("llama.rope.scaling.yarn_log_multiplier", .f32(0.1))]))
        #expect(e == .unsupportedFeature(key: "llama.rope.scaling.yarn_log_multiplier", reason: "a YaRN variant PocketLM does not implement"))
    }

    @Test("YaRN's ramp and magnitude are ggml's: SmolLM2 ×4 from 8192 corrects pairs 10–20, cos/sin × 1.1386")
    func yarnParameters() {
        var s = ModelConfig.RopeScaling(ropeType: "yarn", factor: 4)
        s.originalMaxPositionEmbeddings = 8192
        let rope = RotaryEmbedding(dimensions: 64, base: 100000, scaling: s, frequencyFactors: nil, contextLength: 32768)
        #expect(rope.correctionDims.low == 10 && rope.correctionDims.high == 20)
        #expect(abs(rope.magnitude - 1.1386294) < 1e-6)
        // Position 0 has angle 0 everywhere: cos = magnitude, sin = 0.
        var c = [Float](repeating: 0, count: 32), sn = [Float](repeating: 1, count: 32)
        rope.table(start: 0, rows: 1, cos: &c, sin: &sn)
        #expect(c.allSatisfy { $0 == rope.magnitude } && sn.allSatisfy { $0 == 0 })
    }

    @Test("a tensor the architecture does not use is refused at load, naming it")
    func unexpectedTensor() throws {
        let source = try GGUFFile(path: try TestPaths.fixture("tiny-f32.gguf"))
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("extra-\(UUID().uuidString).gguf").path
        defer { unlink(path) }
        let extra = [Float](repeating: 1, count: 64)
        let decls = source.tensors.map { GGUFWriter.TensorDeclaration(name: $0.name, shape: $0.shape, type: $0.type) }
            + [.init(name: "blk.0.attn_sinks.weight", shape: [64], type: .f32)]
        let w = try GGUFWriter(path: path, metadata: source.metadataKeys.map { ($0, source.metadata[$0]!) }, tensors: decls)
        for t in source.tensors { try w.write(UnsafeRawBufferPointer(start: source.data(of: t), count: t.byteCount)) }
        try extra.withUnsafeBytes { try w.write($0) }
        try w.finish()
        #expect(throws: ModelError.unexpectedTensor(name: "blk.0.attn_sinks.weight", architecture: "llama")) {
            try LanguageModel(path: path)
        }
    }

    @Test("Gemma 3 layers: every 6th global, the rest a 512-position window with RoPE base 10 000")
    func gemmaLayers() throws {
        let g = try GGUFFile(path: try TestPaths.model("gemma-3-270m-q4_k_m.gguf"))
        let c = try ModelConfig(gguf: g)
        #expect((0..<18).filter { !c.isSlidingLayer($0) } == [5, 11, 17])
        #expect(c.slidingWindow == 512 && c.ropeLocalBaseFreq == 10000 && c.ropeTheta == 1_000_000)
        #expect(c.headDim == 256 && c.queryDim == 1024 && c.hiddenSize == 640)
        #expect(Architectures.all["gemma3"]!.traits.activation == .geluTanh)
    }

    @Test("a sliding-window ring is contiguous for any window and rewinds only as far as it still holds")
    func ring() throws {
        let cache = try KVCache(kinds: [.sliding(window: 4, ringSize: 6), .global], capacity: 64, kvHeads: 1, headDim: 2)
        for p in 0..<20 {
            let v: [Float] = [Float(p), Float(-p)]
            cache.store(v, count: 2, slot: 0, head: 0, position: p, column: 0, values: false)
            let first = cache.firstVisible(slot: 0, position: p)
            #expect(first == max(0, p - 3))
            let base = cache.keys(slot: 0, head: 0) + cache.row(slot: 0, position: first) * 2
            // Every visible position, read as one contiguous run from the window's first row.
            for (i, q) in (first...p).enumerated() { #expect(pl_f16_to_f32(base[2 * i]) == Float(q), "position \(q) at \(p)") }
        }
        #expect(cache.bytesPerToken == 2 * 1 * 2 * 2)
        #expect(cache.canRewind(from: 20, to: 18) && !cache.canRewind(from: 20, to: 10))
    }
}
