import CKernels
import Foundation
import Testing
import PocketLM

/// Flash paging of every architecture PocketLM runs: a tiny random qwen2 (Q/K/V biases, NEOX RoPE, untied head) and
/// gemma3 (GeGLU, per-head Q/K norms, sandwich norms, sliding window) model, in the columns (Q8_0) and block-rows
/// (Q4_1) formats, packed and run paged, computes the unpacked file's logits bit for bit; an untied model's input
/// embedding stays on storage, one row read per token.
@Suite("Flash paging architectures", .serialized)
struct FlashArchitectureTests {
    /// A tiny llama fixture rewritten as `arch`: its keys under `arch.`, and the tensors the architecture adds with
    /// random values (qwen2: Q/K/V biases and an untied `output.weight`; gemma3: Q/K norms, post-attention and
    /// post-FFN norms, a 4-position sliding window so the 12-token prompt slides).
    static func derived(_ fixture: String, as arch: String) throws -> String {
        let out = FlashPagingTests.scratch(fixture.replacingOccurrences(of: ".gguf", with: ".\(arch).gguf"))
        if FileManager.default.fileExists(atPath: out) { return out }
        let source = try GGUFFile(path: try TestPaths.fixture(fixture))
        let config = try ModelConfig(gguf: source)
        var metadata: [(String, GGUFValue)] = source.metadataKeys.compactMap { key in
            guard let value = source.metadata[key] else { return nil }
            if key == "general.architecture" { return (key, .string(arch)) }
            return (key.hasPrefix("llama.") ? arch + key.dropFirst("llama".count) : key, value)
        }
        if arch == "gemma3" { metadata.append(("gemma3.attention.sliding_window", .uint32(4))) }
        var rng = SplitMix64(seed: UInt64(arch.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) }))
        // Values in [lo, lo + span): biases around 0, norm weights around 1.
        func floats(_ n: Int, _ lo: Float, _ span: Float) -> [Float] { (0..<n).map { _ in lo + span * Float(rng.nextUnit()) } }
        var extra: [(GGUFWriter.TensorDeclaration, [UInt8])] = []
        func add(_ name: String, _ values: [Float]) {
            extra.append((.init(name: name, shape: [values.count], type: .f32), values.withUnsafeBytes { Array($0) }))
        }
        let hd = config.headDim
        for l in 0..<config.numHiddenLayers {
            let p = "blk.\(l)."
            if arch == "qwen2" {
                add(p + "attn_q.bias", floats(config.queryDim, -0.5, 1))
                add(p + "attn_k.bias", floats(config.kvDim, -0.5, 1))
                add(p + "attn_v.bias", floats(config.kvDim, -0.5, 1))
            } else {
                add(p + "attn_q_norm.weight", floats(hd, 0.5, 1))
                add(p + "attn_k_norm.weight", floats(hd, 0.5, 1))
                add(p + "post_attention_norm.weight", floats(config.hiddenSize, 0.5, 1))
                add(p + "post_ffw_norm.weight", floats(config.hiddenSize, 0.5, 1))
            }
        }
        if arch == "qwen2", let embedding = source.tensorInfo("token_embd.weight") {
            // The head as a tensor of its own (the embedding's bytes reversed: same type, other values).
            let bytes = Array(UnsafeRawBufferPointer(start: source.data(of: embedding), count: embedding.byteCount))
            let rowBytes = embedding.byteCount / embedding.rows
            let rows = (0..<embedding.rows).reversed().flatMap { bytes[$0 * rowBytes..<($0 + 1) * rowBytes] }
            extra.append((.init(name: "output.weight", shape: embedding.shape, type: embedding.type), rows))
        }
        let declarations = source.tensors.map { GGUFWriter.TensorDeclaration(name: $0.name, shape: $0.shape, type: $0.type) }
            + extra.map(\.0)
        let w = try GGUFWriter(path: out + ".tmp", metadata: metadata, tensors: declarations)
        for t in source.tensors { try w.write(UnsafeRawBufferPointer(start: source.data(of: t), count: t.byteCount)) }
        for (_, bytes) in extra { try bytes.withUnsafeBytes { try w.write($0) } }
        try w.finish()
        try FileManager.default.moveItem(atPath: out + ".tmp", toPath: out)
        return out
    }

    static func packed(_ fixture: String, as arch: String) throws -> (source: String, packed: String) {
        let source = try derived(fixture, as: arch)
        let out = source.replacingOccurrences(of: ".gguf", with: ".packed.gguf")
        if !FileManager.default.fileExists(atPath: out) {
            _ = try FlashPacker.pack(source: source, output: out, bundleBytes: 4096)
        }
        return (source, out)
    }

    @Test("qwen2 and gemma3, columns (Q8_0) and block rows (Q4_1): packed and paged, the unpacked file's logits bit for bit in every mode, and its greedy tokens",
          arguments: [("tiny-q8_0.gguf", "qwen2"), ("tiny-q4_1.gguf", "qwen2"), ("tiny-q8_0.gguf", "gemma3"), ("tiny-q4_1.gguf", "gemma3")])
    func packedEqualsOriginal(fixture: String, arch: String) throws {
        let (source, path) = try Self.packed(fixture, as: arch)
        #expect(try ModelConfig(gguf: GGUFFile(path: path)).modelType == arch)
        let original = try FlashPagingTests.logits(source, FlashPagingTests.tokens)
        for paging in [PagingOptions.resident, PagingOptions(mode: .flash), PagingOptions(mode: .flash, window: 2),
                       PagingOptions(mode: .naive), PagingOptions(mode: .mmap), PagingOptions(mode: .flash, memoryBudget: 1 << 40)] {
            let packed = try FlashPagingTests.logits(path, FlashPagingTests.tokens, paging: paging)
            let differing = zip(packed, original).filter { $0 != $1 }.count
            #expect(packed.count == original.count && differing == 0, "\(arch) \(fixture) \(paging.mode): \(differing) logits differ")
        }
        // Greedy generation through the Generator, as `pocketlm run --temperature 0` does it.
        func greedy(_ p: String, _ paging: PagingOptions?) throws -> [Int] {
            let lm = try LanguageModel(path: p, options: LoadOptions(threads: 2, contextLength: 64, paging: paging))
            let t = lm.transformer
            var ids: [Int] = []
            var logits = Array(try FlashPagingTests.tokens.withUnsafeBufferPointer { try t.forward($0, allLogits: false) })
            for _ in 0..<8 {
                let next = logits.indices.max { logits[$0] < logits[$1] }!
                ids.append(next)
                logits = Array(try t.decode(next))
            }
            return ids
        }
        #expect(try greedy(path, PagingOptions(mode: .flash)) == greedy(source, nil))
    }

    @Test("an untied model's input embedding stays on storage: not resident, one row's 4 KiB blocks read per token; a tied one's is the head and stays")
    func untiedEmbeddingOnStorage() throws {
        let (_, path) = try Self.packed("tiny-q4_1.gguf", as: "qwen2")
        let file = try GGUFFile(path: path)
        let embedding = try #require(file.tensorInfo("token_embd.weight"))
        let lm = try LanguageModel(path: path, options: LoadOptions(threads: 2, contextLength: 64, paging: PagingOptions(mode: .flash)))
        let ffn = try #require(lm.transformer.feedForward)
        let rows = try #require(ffn.storageEmbedding)
        #expect(rows.rows == embedding.rows && rows.rowBytes == embedding.byteCount / embedding.rows)
        // Resident: every tensor the forward pass keeps but the embedding (and the FFN's bundles).
        let resident = file.tensors.filter { !$0.name.hasSuffix(".ffn_bundles") && $0.name != "token_embd.weight" }
            .reduce(0) { $0 + $1.byteCount }
        #expect(ffn.plan.residentBytes == resident)
        let align = FlashLayout.ioAlignment
        func blocks(_ token: Int) -> Int {
            let start = embedding.fileOffset + token * rows.rowBytes
            return ((start + rows.rowBytes + align - 1) / align - start / align) * align
        }
        var expected = rows.bytesRead
        for token in [5, 300, 5, 393] {
            _ = try lm.transformer.decode(token)
            expected += blocks(token)
            #expect(rows.bytesRead == expected, "token \(token)")
        }
        // A tied model (the fixture as llama) needs its embedding whole as the head: resident, no storage reads.
        let tied = try LanguageModel(path: try FlashPagingTests.packed("tiny-q4_1.gguf"),
                                     options: LoadOptions(threads: 2, contextLength: 64, paging: PagingOptions(mode: .flash)))
        #expect(tied.transformer.feedForward?.storageEmbedding == nil)
        // Under a budget a tied embedding's file pages are dropped after each step's lookups only where the head
        // reads the store's packed copy; a head used in place (F16 here; Q8_0 or a K-quant on AVX2) multiplies
        // straight from those pages every token, and dropping them cost AVX2's SmolLM2 Q8_0 13x its decode.
        for fixture in ["tiny-q4_1.gguf", "tiny-f16.gguf"] {
            let lm = try LanguageModel(path: try FlashPagingTests.packed(fixture),
                                       options: LoadOptions(threads: 2, contextLength: 64,
                                                            paging: PagingOptions(mode: .flash, memoryBudget: 1 << 40)))
            // (The store packs a Q4_1 head on every x86 tier; F16 never.)
            let headPacked = fixture == "tiny-q4_1.gguf" && pl_packed_type_supported(Int32(PL_TYPE_Q4_1)) != 0
            #expect(lm.transformer.feedForward?.dropsEmbeddingPages == headPacked, "\(fixture)")
        }
    }

    @Test("pack refuses what it cannot run, naming it: an architecture PocketLM does not run, an FFN type it does not compute")
    func refusals() throws {
        let source = try GGUFFile(path: try TestPaths.fixture("tiny-q8_0.gguf"))
        let path = FlashPagingTests.scratch("phi3.gguf")
        let metadata: [(String, GGUFValue)] = source.metadataKeys.map { key in
            (key == "general.architecture" ? key : key, key == "general.architecture" ? .string("phi3") : source.metadata[key]!)
        }
        let w = try GGUFWriter(path: path, metadata: metadata,
                               tensors: source.tensors.map { .init(name: $0.name, shape: $0.shape, type: $0.type) })
        for t in source.tensors { try w.write(UnsafeRawBufferPointer(start: source.data(of: t), count: t.byteCount)) }
        try w.finish()
        #expect(throws: ModelError.unsupportedArchitecture("phi3")) {
            try FlashPacker.pack(source: path, output: FlashPagingTests.scratch("phi3.packed.gguf"))
        }
        // blk.0.ffn_gate as IQ4_NL (a type ggml defines and PocketLM does not multiply with), its bytes zeros.
        let iq = FlashPagingTests.scratch("iq4_nl-gate.gguf")
        let declarations: [GGUFWriter.TensorDeclaration] = source.tensors.map {
            .init(name: $0.name, shape: $0.shape, type: $0.name == "blk.0.ffn_gate.weight" ? .iq4_nl : $0.type)
        }
        let iqWriter = try GGUFWriter(path: iq, metadata: source.metadataKeys.map { ($0, source.metadata[$0]!) },
                                      tensors: declarations)
        for (t, d) in zip(source.tensors, declarations) {
            if d.type == t.type {
                try iqWriter.write(UnsafeRawBufferPointer(start: source.data(of: t), count: t.byteCount))
            } else {
                let zeros = [UInt8](repeating: 0, count: t.shape[1] * t.shape[0] / 32 * GGMLType.iq4_nl.blockBytes)
                try zeros.withUnsafeBytes { try iqWriter.write($0) }
            }
        }
        try iqWriter.finish()
        #expect(throws: PagingError.unsupportedWeights(tensor: "blk.0.ffn_gate.weight", type: "IQ4_NL")) {
            try FlashPacker.pack(source: iq, output: FlashPagingTests.scratch("iq4_nl-gate.packed.gguf"))
        }
    }
}
