import Foundation
import Testing
import PocketLM

/// Layer sharing: a model whose blocks run in a schedule must equal the physically unrolled model whose file
/// holds the duplicated blocks — in a batch and token by token, which is what proves each executed pass has
/// its own KV-cache slot.
@Suite("Layer schedules")
struct LayerScheduleTests {
    @Test("schedules list the passes in order")
    func passes() throws {
        #expect(try LayerSchedule(strategy: .none, blocks: 3).passes == [0, 1, 2])
        #expect(try LayerSchedule(strategy: .immediate, repeats: 2, blocks: 3).passes == [0, 0, 1, 1, 2, 2])
        #expect(try LayerSchedule(strategy: .repeatAll, repeats: 2, blocks: 3).passes == [0, 1, 2, 0, 1, 2])
        #expect(try LayerSchedule(strategy: .reverse, repeats: 2, blocks: 3).passes == [0, 1, 2, 2, 1, 0])
        #expect(try LayerSchedule(strategy: .immediate, repeats: 3, blocks: 2).passes == [0, 0, 0, 1, 1, 1])
        #expect(throws: ModelError.self) { try LayerSchedule(strategy: .immediate, repeats: 0, blocks: 2) }
    }

    static func logits(_ model: LanguageModel, _ tokens: [Int]) throws -> (batch: [Float], stepwise: [Float]) {
        let t = model.transformer
        t.reset()
        let batch = Array(try tokens.withUnsafeBufferPointer { try t.forward($0, allLogits: true) })
        t.reset()
        var stepwise: [Float] = []
        for token in tokens { stepwise += Array(try t.decode(token)) }
        return (batch, stepwise)
    }

    @Test("shared model equals its unrolled twin, prefill and decode",
          arguments: [(LayerSchedule.Strategy.immediate, "tiny-ls-unrolled.gguf"),
                      (.repeatAll, "tiny-unrolled-repeat-all.gguf"),
                      (.reverse, "tiny-unrolled-reverse.gguf")])
    func sharedEqualsUnrolled(strategy: LayerSchedule.Strategy, unrolledFile: String) throws {
        let options = LoadOptions(threads: 2, contextLength: 64, layerSchedule: (strategy, 2))
        let shared = try LanguageModel(path: try TestPaths.fixture("tiny-ls.gguf"), options: options)
        let unrolled = try LanguageModel(path: try TestPaths.fixture(unrolledFile),
                                         options: LoadOptions(threads: 2, contextLength: 64))
        #expect(shared.transformer.schedule.passes.count == 4)
        #expect(shared.transformer.cache.slots == 4)
        #expect(unrolled.transformer.schedule.passes == [0, 1, 2, 3])
        let tokens = shared.encodePrompt("the quick brown fox jumps over the lazy dog", parseSpecial: false)
        #expect(tokens.count >= 8)
        let a = try Self.logits(shared, tokens), b = try Self.logits(unrolled, tokens)
        #expect(a.batch.map(\.bitPattern) == b.batch.map(\.bitPattern), "\(strategy) batch")
        let vocab = shared.config.vocabSize
        let lastA = Array(a.stepwise.suffix(vocab)), lastB = Array(b.stepwise.suffix(vocab))
        #expect(lastA.map(\.bitPattern) == lastB.map(\.bitPattern), "\(strategy) token by token")
        #expect(a.stepwise.map(\.bitPattern) == b.stepwise.map(\.bitPattern))
    }

    @Test("the file's recorded schedule is used unless overridden")
    func recordedSchedule() throws {
        let ls = try LanguageModel(path: try TestPaths.fixture("tiny-ls.gguf"), options: LoadOptions(threads: 1, contextLength: 32))
        #expect(ls.transformer.schedule.passes == [0, 0, 1, 1])
        let plain = try LanguageModel(path: try TestPaths.fixture("tiny-ls.gguf"),
                                      options: LoadOptions(threads: 1, contextLength: 32, layerSchedule: (.none, 1)))
        #expect(plain.transformer.schedule.passes == [0, 1])
        // A shared pass is a different model from running each block once.
        let tokens = ls.encodePrompt("hello world", parseSpecial: false)
        let a = try Self.logits(ls, tokens).batch, b = try Self.logits(plain, tokens).batch
        #expect(a != b)
    }

    @Test("configs: parameter counts equal the MobileLLM paper's table")
    func configCounts() throws {
        let expected = ["mobilellm-125m": 124_635_456, "mobilellm-350m": 345_355_200, "mobilellm-600m": 603_188_352,
                        "mobilellm-1b": 1_005_461_760, "mobilellm-1.5b": 1_511_188_800,
                        "mobilellm-ls-125m": 124_635_456, "mobilellm-ls-350m": 345_355_200]
        for (name, count) in expected {
            let c = try ModelConfig.load(configFile: TestPaths.repoRoot.appendingPathComponent("configs/\(name).json").path)
            let f = try c.footprint()
            #expect(f.parameters == count, "\(name)")
            #expect(f.effectiveLayers == c.numHiddenLayers * (name.contains("-ls-") ? 2 : 1), "\(name)")
            #expect(f.kvCacheBytesPerToken == 2 * f.effectiveLayers * c.kvDim * 2)
        }
        let smol = try ModelConfig.load(configFile: TestPaths.repoRoot.appendingPathComponent("configs/smollm2-135m.json").path)
        #expect(try smol.footprint().parameters == 134_515_008)
        // The real file's Q4_1 bytes are not a single format; its F32 twin's tensor bytes are.
        let f32 = try GGUFFile(path: try TestPaths.model("SmolLM2-135M-Instruct.F32.gguf"))
        #expect(try smol.footprint().weightBytes["f32"] == f32.tensors.reduce(0) { $0 + $1.byteCount })
    }

    @Test("bad configs name the field")
    func badConfigs() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let base: [String: Any] = ["model_type": "mobilellm", "hidden_size": 576, "num_hidden_layers": 30,
                                   "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 1536,
                                   "vocab_size": 32000, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
                                   "max_position_embeddings": 2048]
        func check(_ change: [String: Any], _ field: String) throws {
            var c = base
            for (k, v) in change { c[k] = v }
            let url = dir.appendingPathComponent("\(field).json")
            try JSONSerialization.data(withJSONObject: c).write(to: url)
            do {
                _ = try ModelConfig.load(configFile: url.path)
                Issue.record("config with bad \(field) loaded")
            } catch let ModelError.invalidConfig(f, _) {
                #expect(f == field)
            }
        }
        try check(["num_attention_heads": 7], "num_attention_heads")
        try check(["num_key_value_heads": 2], "num_key_value_heads")
        try check(["layer_schedule": ["strategy": "sideways", "repeats": 2]], "layer_schedule.strategy")
        try check(["layer_schedule": ["strategy": "immediate", "repeats": 0]], "layer_schedule.repeats")
        var missing = base
        missing.removeValue(forKey: "hidden_size")
        let url = dir.appendingPathComponent("missing.json")
        try JSONSerialization.data(withJSONObject: missing).write(to: url)
        #expect(throws: ModelError.invalidConfig(field: "hidden_size", reason: "missing from \(url.path)")) {
            try ModelConfig.load(configFile: url.path)
        }
    }
}
