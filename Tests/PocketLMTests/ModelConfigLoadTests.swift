import Foundation
import Testing
import PocketLM
import CKernels

/// A GGUF file's metadata read as a model config, its tensors checked by the weight store and the transformer.
@Suite("Model config from GGUF")
struct ModelConfigLoadTests {
    typealias Kit = GGUFTestKit

    @Test("ModelConfig reads llama metadata, with defaults")
    func configReads() throws {
        try Kit.open(Kit.llamaFile(Kit.llamaMetadata())) { g throws in
            let c = try ModelConfig(gguf: g)
            #expect(c == ModelConfig(modelType: "llama", hiddenSize: 64, numHiddenLayers: 2, numAttentionHeads: 4,
                                     numKeyValueHeads: 2, intermediateSize: 128, vocabSize: 10, ropeTheta: 500000,
                                     rmsNormEps: Double(Float(1e-5)), maxPositionEmbeddings: 256))
            #expect(c.headDim == 16 && c.kvDim == 32)
        }
        let md = Kit.llamaMetadata([("llama.vocab_size", .u64(10))],
                                   removing: ["llama.attention.head_count_kv", "llama.rope.freq_base"])
        try Kit.open(Kit.llamaFile(md)) { g throws in
            let c = try ModelConfig(gguf: g)
            #expect(c.numKeyValueHeads == 4)
            #expect(c.ropeTheta == 10000)
            #expect(c.vocabSize == 10)
        }
    }

    @Test("ModelConfig rejects other architectures and bad shapes, naming the field")
    func configErrors() throws {
        try Kit.open(Kit.llamaFile(Kit.llamaMetadata([("general.architecture", .str("gpt2"))]))) { g throws in
            #expect(throws: ModelError.unsupportedArchitecture("gpt2")) { try ModelConfig(gguf: g) }
        }
        try Kit.open(Kit.llamaFile(Kit.llamaMetadata([("llama.attention.head_count", .u32(3))]))) { g throws in
            #expect(throws: ModelError.invalidConfig(field: "num_attention_heads",
                                                     reason: "3 heads do not divide hidden_size 64")) {
                try ModelConfig(gguf: g)
            }
        }
        try Kit.open(Kit.llamaFile(Kit.llamaMetadata([("llama.attention.head_count_kv", .u32(3))]))) { g throws in
            let e = #expect(throws: ModelError.self) { try ModelConfig(gguf: g) }
            guard case .invalidConfig(let field, _)? = e else { Issue.record("\(String(describing: e))"); return }
            #expect(field == "num_key_value_heads")
        }
        try Kit.open(Kit.llamaFile(Kit.llamaMetadata([("llama.rope.dimension_count", .u32(8))]))) { g throws in
            let e = #expect(throws: ModelError.self) { try ModelConfig(gguf: g) }
            guard case .unsupportedFeature(let key, _)? = e else { Issue.record("\(String(describing: e))"); return }
            #expect(key == "llama.rope.dimension_count")
        }
        try Kit.open(Kit.llamaFile(Kit.llamaMetadata(removing: ["llama.embedding_length"]))) { g throws in
            #expect(throws: GGUFError.missingMetadata("llama.embedding_length")) { try ModelConfig(gguf: g) }
        }
        try Kit.open(Kit.llamaFile(Kit.llamaMetadata([("llama.block_count", .str("two"))]))) { g throws in
            #expect(throws: GGUFError.badMetadata(key: "llama.block_count", reason: "expected an integer, found str")) {
                try ModelConfig(gguf: g)
            }
        }
    }

    @Test("MappedWeightStore checks names and shapes")
    func weightStore() throws {
        try Kit.open(Kit.llamaFile(Kit.llamaMetadata())) { g throws in
            let store = MappedWeightStore(file: g)
            #expect(store.contains("token_embd.weight"))
            #expect(!store.contains("output.weight"))
            let t = try store.tensor("token_embd.weight", shape: [64, 10])
            #expect(t.rows == 10 && t.columns == 64 && t.rowBytes == 256 && t.type == .f32)
            #expect(t.data == g.data(of: g.tensorInfo("token_embd.weight")!))
            #expect(t.row(3).loadUnaligned(fromByteOffset: 4, as: Float.self) == Float(3 * 64 + 1))
            // Trailing 1s do not matter: [64, 1] is the vector [64].
            let norm = try store.tensor("output_norm.weight", shape: [64])
            #expect(norm.rows == 1 && norm.columns == 64)

            #expect(throws: GGUFError.tensorShape(tensor: "token_embd.weight", expected: [64, 11], found: [64, 10])) {
                try store.tensor("token_embd.weight", shape: [64, 11])
            }
            #expect(throws: GGUFError.tensorShape(tensor: "token_embd.weight", expected: [10, 64], found: [64, 10])) {
                try store.tensor("token_embd.weight", shape: [10, 64])
            }
            #expect(throws: GGUFError.missingTensor("output.weight")) { try store.tensor("output.weight", shape: [64, 10]) }
            #expect(GGUFError.missingTensor("output.weight").errorDescription?.contains("'output.weight'") == true)
        }
    }

    @Test("Transformer refuses a file whose tensors do not match its config")
    func transformerShapeMismatch() throws {
        try Kit.open(Kit.llamaFile(Kit.llamaMetadata())) { g throws in
            let config = try ModelConfig(gguf: g)
            // The file has only the embedding and final norm: the first block's norm is missing.
            #expect(throws: GGUFError.missingTensor("blk.0.attn_norm.weight")) {
                try Transformer(store: MappedWeightStore(file: g), config: config, contextLength: 8)
            }
            var wrong = config
            wrong.vocabSize = 11
            #expect(throws: GGUFError.tensorShape(tensor: "token_embd.weight", expected: [64, 11], found: [64, 10])) {
                try Transformer(store: MappedWeightStore(file: g), config: wrong, contextLength: 8)
            }
        }
    }
}

/// `open(2)` for writing a new file (outside GGUFTestKit, whose own `open` would shadow it).
func ggufTestCreateFile(_ path: String) -> Int32 { open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o600) }

/// The f16 bits of a float, for scales written by tests.
func ggufTestF16Bits(_ x: Float) -> UInt16 { pl_f32_to_f16(x) }
