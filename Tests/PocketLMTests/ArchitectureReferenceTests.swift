import Foundation
import Testing
import PocketLM

/// Gemma 3 270M (Q4_K_M), SmolLM2 requantized to Q4_K_M, the Llama 3 / linear / YaRN RoPE variants and a qwen2 model
/// against llama.cpp's recorded outputs (weights-tools/reference/gemma3-270m-llamacpp.json and
/// llamacpp-variants.json; the model files come from `make fetch variants`).
///
/// Tolerances (weights-tools/reference/README.md): prompt ids exact; for files whose activations are quantized to Q8
/// before every product (any quantized weights), top-1 at the last prompt position equal unless llama.cpp's own
/// top-1/top-2 margin there is under 0.35 and greedy ids equal up to the first step whose margin is under 0.35 (Q8
/// activations turn last-bit float differences into whole quantization steps); for F32 files the top-5 ids equal,
/// their logits within 0.05, and greedy ids equal up to the first margin under 0.1.
@Suite("Architectures vs llama.cpp", .serialized)
struct ArchitectureReferenceTests {
    struct Case {
        let file: String
        let name: String
        let tokens: [Int]
        let top5Ids: [Int]
        let top5Logits: [Double]
        let greedyIds: [Int]
        let greedyMargins: [Double]
    }

    static func referenceURL(_ name: String) -> URL {
        TestPaths.repoRoot.appendingPathComponent("weights-tools/reference/\(name)")
    }

    static func json(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: referenceURL(name))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func gemmaCases() throws -> [Case] {
        let records = try #require(try json("gemma3-270m-llamacpp.json")["records"] as? [[String: Any]])
        return try records.map { r in
            Case(file: try #require(r["model_file"] as? String), name: try #require(r["kind"] as? String),
                 tokens: try #require(r["tokens"] as? [Int]), top5Ids: try #require(r["top5_ids"] as? [Int]),
                 top5Logits: try #require(r["top5_logits"] as? [Double]), greedyIds: try #require(r["greedy_ids"] as? [Int]),
                 greedyMargins: try #require(r["greedy_margins"] as? [Double]))
        }
    }

    static func variantCases(_ file: String, from reference: String = "llamacpp-variants.json") throws -> [Case] {
        let records = try #require(try json(reference)["records"] as? [[String: Any]])
        return try records.filter { $0["model_file"] as? String == file }.map { r in
            Case(file: file, name: try #require(r["prompt_name"] as? String), tokens: try #require(r["tokens"] as? [Int]),
                 top5Ids: try #require(r["last_pos_top5_ids"] as? [Int]),
                 top5Logits: try #require(r["last_pos_top5_logits"] as? [Double]),
                 greedyIds: try #require(r["greedy_ids"] as? [Int]),
                 greedyMargins: try #require(r["greedy_top1_top2_margin"] as? [Double]))
        }
    }

    /// Runs every case of one file through the model and checks it against llama.cpp's record.
    static func check(_ cases: [Case], quantized: Bool, kvCacheType: KVCache.ElementType = .f16) throws {
        let file = try #require(cases.first?.file)
        let model = try LanguageModel(path: try TestPaths.model(file),
                                      options: .init(threads: 2, kvCacheType: kvCacheType, contextLength: 1024))
        let t = model.transformer
        let threshold = quantized ? 0.35 : 0.1
        for c in cases {
            t.reset()
            var logits = try c.tokens.withUnsafeBufferPointer { try t.forward($0) }
            let top5 = topK(logits, 5)
            let margin = c.top5Logits[0] - c.top5Logits[1]
            if quantized {
                if margin >= threshold { #expect(top5[0] == c.top5Ids[0], "\(file) \(c.name): top-1 \(top5) vs \(c.top5Ids)") }
            } else {
                #expect(top5 == c.top5Ids, "\(file) \(c.name): top-5")
                for (id, expected) in zip(c.top5Ids, c.top5Logits) {
                    #expect(abs(Double(logits[id]) - expected) <= 0.05, "\(file) \(c.name): logit of \(id) \(logits[id]) vs \(expected)")
                }
            }
            // Greedy, fed back one token at a time, up to the first step too close to call.
            let decisive = c.greedyMargins.firstIndex { $0 < threshold } ?? c.greedyIds.count
            var produced: [Int] = []
            for step in 0..<decisive {
                let next = topK(logits, 1)[0]
                produced.append(next)
                if next != c.greedyIds[step] { break }
                logits = try t.decode(next)
            }
            #expect(produced == Array(c.greedyIds[0..<decisive]), "\(file) \(c.name): greedy")
        }
    }

    @Test("Gemma 3 270M Q4_K_M: prompt ids, top-1 and greedy ids, including an 881-token prompt past the 512 window")
    func gemma() throws {
        let cases = try Self.gemmaCases()
        #expect(cases.count == 4 && cases.contains { $0.tokens.count > 512 })
        let model = try LanguageModel(path: try TestPaths.model("gemma-3-270m-q4_k_m.gguf"), options: .init(threads: 2))
        let records = try #require(try Self.json("gemma3-270m-llamacpp.json")["records"] as? [[String: Any]])
        for (c, r) in zip(cases, records) {
            let prompt = try #require(r["prompt"] as? String)
            #expect(model.encodePrompt(prompt, parseSpecial: false) == c.tokens, "gemma prompt ids of \(c.name)")
        }
        try Self.check(cases, quantized: true)
    }

    @Test("Gemma 3 270M perplexity on GPL-2 (windows of 1024) within 0.5% of llama.cpp's")
    func gemmaPerplexity() throws {
        let reference = try #require((try Self.json("gemma3-270m-llamacpp.json")["perplexity"] as? [[String: Any]])?.first)
        let expected = try #require(reference["perplexity"] as? Double)
        let model = try LanguageModel(path: try TestPaths.model("gemma-3-270m-q4_k_m.gguf"), options: .init(threads: 2, contextLength: 1024))
        let text = try String(contentsOfFile: "/usr/share/common-licenses/GPL-2", encoding: .utf8)
        let result = try PerplexityEvaluator(model: model).evaluate(text: text, window: 1024)
        #expect(result.scoredTokens == reference["scored_tokens"] as? Int)
        #expect(abs(result.perplexity / expected - 1) < 0.005, "perplexity \(result.perplexity) vs llama.cpp \(expected)")
    }

    /// llama.cpp run with `type_k = type_v = bf16` (weights-tools/record_kv_cache_refs.py), against our BF16 cache;
    /// the same tolerances as the F16 cache's records.
    @Test("SmolLM2 F32 and Q4_1 with a BF16 KV cache vs llama.cpp's BF16 cache, including a 718-token prompt",
          arguments: ["SmolLM2-135M-Instruct.F32.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"])
    func bf16Cache(file: String) throws {
        let cases = try Self.variantCases(file, from: "kv-cache-bf16-llamacpp.json")
        #expect(cases.count == 4 && cases.contains { $0.tokens.count > 700 })
        try Self.check(cases, quantized: !file.contains("F32"), kvCacheType: .bf16)
    }

    /// Gemma's heads are 256 wide and five of its six layers slide a 512-position window: the BF16 cache's tile and
    /// one-query paths at that width, against llama.cpp's perplexity with the same cache type.
    @Test("Gemma 3 270M perplexity with a BF16 KV cache within 0.5% of llama.cpp's BF16 cache")
    func gemmaBF16Perplexity() throws {
        try Self.checkPerplexity(try #require(try Self.json("kv-cache-bf16-llamacpp.json")["perplexity"] as? [String: Any]),
                                 kvCacheType: .bf16)
    }

    @Test("SmolLM2 Q4_K_M (Q4_K, Q5_0, Q6_K, Q8_0 tensors from llama.cpp's quantizer)")
    func smolQ4KM() throws {
        try Self.check(try Self.variantCases("SmolLM2-135M-Instruct.Q4_K_M.gguf"), quantized: true)
    }

    @Test("SmolLM2 Q4_K_M perplexity on GPL-3 (windows of 512) within 0.5% of llama.cpp's")
    func smolQ4KMPerplexity() throws {
        try Self.checkPerplexity(try #require(try Self.json("llamacpp-variants.json")["perplexity"] as? [String: Any]))
    }

    /// llama-perplexity's number recorded as {model_file, text, n_ctx, perplexity, scored_tokens}: ours over the same
    /// windows within 0.5%, with the same count of scored tokens.
    static func checkPerplexity(_ reference: [String: Any], kvCacheType: KVCache.ElementType = .f16) throws {
        let expected = try #require(reference["perplexity"] as? Double)
        let file = try #require(reference["model_file"] as? String), textFile = try #require(reference["text"] as? String)
        let window = try #require(reference["n_ctx"] as? Int)
        let model = try LanguageModel(path: try TestPaths.model(file),
                                      options: .init(threads: 2, kvCacheType: kvCacheType, contextLength: window))
        let result = try PerplexityEvaluator(model: model).evaluate(text: try String(contentsOfFile: textFile, encoding: .utf8), window: window)
        #expect(result.scoredTokens == reference["scored_tokens"] as? Int)
        #expect(abs(result.perplexity / expected - 1) < 0.005, "\(file): perplexity \(result.perplexity) vs llama.cpp \(expected)")
    }

    @Test("Llama 3 rope_freqs, linear and YaRN RoPE scaling, and qwen2 (biases, NEOX RoPE, untied head), F32",
          arguments: ["SmolLM2-135M-Instruct.rope-llama3.F32.gguf", "SmolLM2-135M-Instruct.rope-linear4.F32.gguf",
                      "SmolLM2-135M-Instruct.rope-yarn4.F32.gguf", "qwen2-random-8l.F32.gguf"])
    func floatVariants(file: String) throws {
        let cases = try Self.variantCases(file)
        #expect(cases.count == 4 && cases.contains { $0.tokens.count > 700 })
        try Self.check(cases, quantized: false)
    }
}
