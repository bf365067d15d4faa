import Foundation
import Testing
import PocketLM

/// Checkpoints in Hugging Face's layout (rotate-half RoPE), converted by weights-tools/convert_hf.py, must give in
/// Swift the logits of a float64 forward pass computed straight from the HF weights in HF's convention: that is
/// what proves the converter's Q/K permutation (and MobileLLM's tying and layer-sharing flags) end to end.
@Suite("Hugging Face conversion")
struct HFConversionTests {
    struct Expected: Decodable { let tokens: [Int]; let logits: [[Double]] }

    @Test("converted checkpoints match HF's own forward pass", arguments: ["hf-mobilellm-ls", "hf-llama-untied"])
    func matchesHF(name: String) throws {
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: try TestPaths.fixture("\(name).hf.json"))))
        let gguf = try GGUFFile(path: try TestPaths.fixture("\(name).gguf"))
        let config = try ModelConfig(gguf: gguf)
        let schedule = try LanguageModel.schedule(in: gguf, blocks: config.numHiddenLayers)
        #expect(schedule.passes == (name.contains("-ls") ? [0, 0, 1, 1] : [0, 1]))
        #expect(gguf.tensorInfo("output.weight") == nil || name.contains("untied"))
        let model = try Transformer(store: MappedWeightStore(file: gguf), config: config, schedule: schedule,
                                    contextLength: 32, threads: 2)
        let logits = try expected.tokens.withUnsafeBufferPointer { try model.forward($0, allLogits: true) }
        var maxDiff = 0.0
        for (i, row) in expected.logits.enumerated() {
            for (j, e) in row.enumerated() { maxDiff = max(maxDiff, abs(Double(logits[i * config.vocabSize + j]) - e)) }
        }
        // F32 weights; the only rounding is the F16 KV cache (llama.cpp's default), ~1e-2 at most on these logits.
        // A missing Q/K permutation or a wrong tie/schedule moves them by whole units.
        #expect(maxDiff < 0.03, "max |Δlogit| = \(maxDiff)")
    }
}
