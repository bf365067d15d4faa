import Foundation
import Testing
import PocketLM

/// Speculative decoding on the real SmolLM2: the batched verify pass gives one-token decoding's logits, and
/// greedy output equals plain decoding token for token, however the drafts fall.
@Suite("Speculative decoding (SmolLM2)", .serialized)
struct SpeculativeDecodingTests {
    static func load(_ format: String = "Q4_1", context: Int? = 1024, maxBatch: Int = 256) throws -> LanguageModel {
        try LanguageModel(path: try TestPaths.model("SmolLM2-135M-Instruct.\(format).gguf"),
                          options: LoadOptions(threads: 2, contextLength: context, maxBatch: maxBatch))
    }

    /// Grounded prompts (lookup finds long runs), open-ended ones (it finds little), and one that loops.
    static let messages = [
        "Repeat this sentence exactly: The quick brown fox jumps over the lazy dog near the river bank.",
        "Fix the spelling in this text and print it: Teh weather was realy nice yesterday, so we whent to the beech.",
        "Extract the names from this list and print them one per line: Anna (Paris), Ben (Oslo), Chloe (Rome), Dan (Lima).",
        "Rewrite this function with a for loop: def total(xs): return sum(x * 2 for x in xs)",
        "What is the capital of France?",
        "Write a haiku about autumn.",
        "Count from one to twenty in words, separated by commas.",
        "Tell me three facts about the moon.",
    ]

    /// Plain greedy generation and speculative greedy generation from the same prompt: same tokens, text, stop
    /// reason, and the same positions left in the KV cache.
    static func compare(_ lm: LanguageModel, _ prompt: [Int], maxTokens: Int, decoder: SpeculativeDecoder,
                        label: String) throws -> SpeculationStats {
        let options = GenerationOptions(maxTokens: maxTokens, sampling: .greedy)
        let plain = try lm.generator().generate(prompt: prompt, options: options)
        let plainPosition = lm.transformer.position
        let generator = Generator(model: lm.transformer, tokenizer: lm.tokenizer, speculation: decoder)
        let spec = try generator.generate(prompt: prompt, options: options)
        #expect(spec.tokens == plain.tokens, "\(label): speculative tokens differ from plain")
        #expect(spec.text == plain.text, "\(label)")
        #expect(spec.stopReason == plain.stopReason, "\(label)")
        #expect(lm.transformer.position == plainPosition, "\(label): the cache holds \(lm.transformer.position) positions, plain left \(plainPosition)")
        #expect(plain.speculation == nil)
        return try #require(spec.speculation)
    }

    @Test("a verify batch gives one-token decoding's logits bit for bit (quantized weights)",
          arguments: ["Q4_1", "Q8_0", "Q4_K_M"])
    func batchEqualsDecode(format: String) throws {
        let lm = try Self.load(format, context: 256)
        let t = lm.transformer, vocab = t.config.vocabSize
        let tokens = lm.encodePrompt("The history of the lighthouse begins in 1871, when three ships were lost", parseSpecial: false)
        let split = 6
        _ = try tokens[0..<split].withUnsafeBufferPointer { try t.forward($0) }
        let batch = Array(try tokens[split...].withUnsafeBufferPointer { try t.forward($0, allLogits: true) })
        t.truncate(to: split)
        var differing = 0
        for (i, token) in tokens[split...].enumerated() {
            let one = try t.decode(token)
            for j in 0..<vocab where one[j].bitPattern != batch[i * vocab + j].bitPattern { differing += 1 }
        }
        #expect(batch.count == (tokens.count - split) * vocab)
        #expect(differing == 0, "\(format): \(differing) logits differ between the batch and one-token decoding")
    }

    @Test("float weights: the batch's sgemm rounds differently, the argmax agrees")
    func batchVsDecodeF32() throws {
        let lm = try Self.load("F32", context: 256)
        let t = lm.transformer, vocab = t.config.vocabSize
        let tokens = lm.encodePrompt("The history of the lighthouse begins in 1871, when three ships were lost", parseSpecial: false)
        _ = try tokens[0..<6].withUnsafeBufferPointer { try t.forward($0) }
        let batch = Array(try tokens[6...].withUnsafeBufferPointer { try t.forward($0, allLogits: true) })
        t.truncate(to: 6)
        var worst: Float = 0, smallestMargin = Float.infinity
        for (i, token) in tokens[6...].enumerated() {
            let one = try t.decode(token)
            let row = batch[(i * vocab)..<((i + 1) * vocab)]
            for j in 0..<vocab { worst = max(worst, abs(one[j] - batch[i * vocab + j])) }
            let top = topK(one, 2)
            smallestMargin = min(smallestMargin, one[top[0]] - one[top[1]])
            #expect(top[0] == tinyArgmax(row), "position \(i)")
        }
        print("[speculative] F32 batch vs decode: max |diff| \(worst), smallest top-2 margin \(smallestMargin)")
        // Not bit-identical (sgemm vs matvec), but far below the margins greedy decoding turns on here.
        #expect(worst > 0 && worst < 0.02, "max |diff| \(worst)")
    }

    /// A verify pass (`decodeRun`) of more tokens than the few-inputs kernels take: 8 rows a pass, so even float
    /// weights, whose batch kernel is sgemm (above), and the AVX2 tier's Q8_0 (its prompt kernel) give decoding's bits.
    @Test("a verify pass of 15 tokens gives one-token decoding's logits bit for bit (F32, and Q8_0 on every tier)",
          arguments: ["F32", "Q8_0"])
    func verifyRunEqualsDecode(format: String) throws {
        let lm = try Self.load(format, context: 256)
        let t = lm.transformer, vocab = t.config.vocabSize
        let tokens = lm.encodePrompt("The history of the lighthouse begins in 1871, when three ships were lost off the cape in one winter storm",
                                     parseSpecial: false)
        let split = 6
        try #require(tokens.count - split >= 15)
        _ = try tokens[0..<split].withUnsafeBufferPointer { try t.forward($0) }
        let run = Array(try tokens[split..<(split + 15)].withUnsafeBufferPointer { try t.decodeRun($0) })
        #expect(t.position == split + 15)
        t.truncate(to: split)
        var differing = 0
        for (i, token) in tokens[split..<(split + 15)].enumerated() {
            let one = try t.decode(token)
            for j in 0..<vocab where one[j].bitPattern != run[i * vocab + j].bitPattern { differing += 1 }
        }
        #expect(differing == 0, "\(format): \(differing) logits differ between the verify pass and one-token decoding")
    }

    @Test("greedy lookup speculation equals plain decoding on many prompts (Q4_1 and Q8_0)", arguments: ["Q4_1", "Q8_0"])
    func greedyLookup(format: String) throws {
        let lm = try Self.load(format)
        let decoder = try SpeculativeDecoder(drafter: PromptLookupDrafter(), maxDraft: 8)
        var total = SpeculationStats()
        for message in Self.messages {
            let prompt = try lm.encodeChat(messages: [ChatMessage(role: "user", content: message)])
            let s = try Self.compare(lm, prompt, maxTokens: 48, decoder: decoder, label: message)
            total.verifyPasses += s.verifyPasses
            total.drafted += s.drafted
            total.accepted += s.accepted
        }
        // The drafts were really verified, and some rejected: both paths ran.
        #expect(total.verifyPasses > 10 && total.accepted > 20 && total.accepted < total.drafted,
                "\(total.verifyPasses) passes, \(total.accepted) of \(total.drafted) accepted")
    }

    @Test("greedy lookup across chunk boundaries: a batch of 8, prompts in chunks, drafts filling whole batches")
    func chunkBoundaries() throws {
        let lm = try Self.load("Q4_1", context: 512, maxBatch: 8)
        let decoder = try SpeculativeDecoder(drafter: PromptLookupDrafter(), maxDraft: 7)
        #expect(throws: SpeculationError.invalidDraftLength(8, maxBatch: 8)) {
            try Generator(model: lm.transformer, tokenizer: lm.tokenizer,
                          speculation: SpeculativeDecoder(drafter: PromptLookupDrafter(), maxDraft: 8))
                .generate(prompt: [1, 2, 3], options: GenerationOptions(maxTokens: 2, sampling: .greedy))
        }
        for message in Self.messages.prefix(4) {
            let prompt = try lm.encodeChat(messages: [ChatMessage(role: "user", content: message)])
            #expect(prompt.count > 8)
            let s = try Self.compare(lm, prompt, maxTokens: 40, decoder: decoder, label: "batch 8: " + message)
            #expect(s.passesByDraftCount.count == 8)
        }
    }

    @Test("the token limit and a full context cut a run of accepted drafts exactly where plain decoding stops")
    func limits() throws {
        let lm = try Self.load("Q4_1", context: 120)
        let decoder = try SpeculativeDecoder(drafter: PromptLookupDrafter(), maxDraft: 8)
        let prompt = try lm.encodeChat(messages: [ChatMessage(role: "user", content: Self.messages[0])])
        for maxTokens in [1, 2, 5, 13, 17] {
            _ = try Self.compare(lm, prompt, maxTokens: maxTokens, decoder: decoder, label: "max \(maxTokens)")
        }
        // The context ends mid-answer: both stop with contextFull at the same token.
        let long = try lm.encodeChat(messages: [ChatMessage(role: "user", content: Self.messages[6])])
        let room = 120 - long.count + 1
        let options = GenerationOptions(maxTokens: room, sampling: .greedy)
        let plain = try lm.generator().generate(prompt: long, options: options)
        let spec = try Generator(model: lm.transformer, tokenizer: lm.tokenizer, speculation: decoder)
            .generate(prompt: long, options: options)
        #expect(spec.tokens == plain.tokens)
        #expect(spec.stopReason == plain.stopReason)
    }

    @Test("a second turn reuses the cache a speculative turn left, as after plain decoding")
    func reuseAfterSpeculation() throws {
        let lm = try Self.load("Q4_1", context: 512)
        let decoder = try SpeculativeDecoder(drafter: PromptLookupDrafter(), maxDraft: 6)
        let generator = Generator(model: lm.transformer, tokenizer: lm.tokenizer, speculation: decoder)
        let first = [ChatMessage(role: "user", content: Self.messages[2])]
        let options = GenerationOptions(maxTokens: 40, sampling: .greedy)
        let p1 = try lm.encodeChat(messages: first)
        let r1 = try generator.generate(prompt: p1, options: options)
        let cached = Array((p1 + r1.tokens).prefix(lm.transformer.position))
        let second = first + [ChatMessage(role: "assistant", content: r1.text), ChatMessage(role: "user", content: "Now in reverse order.")]
        let p2 = try lm.encodeChat(messages: second)
        var common = 0
        while common < min(cached.count, p2.count) && cached[common] == p2[common] { common += 1 }
        #expect(common > p1.count)
        var steps: [Int] = []
        let r2 = try generator.generate(prompt: p2, reusingCachedPrefix: common, options: options) { step in
            if let t = step.token { steps.append(t) }
            return true
        }
        #expect(r2.reusedPromptTokens == common)
        let fresh = try lm.generator().generate(prompt: p2, options: options)
        #expect(r2.tokens == fresh.tokens)
        #expect(steps == r2.tokens)
    }

    @Test("stopping from the step callback inside a run of accepted drafts leaves the cache as plain decoding does")
    func cancelInsideRun() throws {
        let lm = try Self.load("Q4_1", context: 512)
        let prompt = try lm.encodeChat(messages: [ChatMessage(role: "user", content: Self.messages[0])])
        let options = GenerationOptions(maxTokens: 40, sampling: .greedy)
        for stopAfter in [2, 5, 8] {
            var seen = 0
            let plain = try lm.generator().generate(prompt: prompt, reusingCachedPrefix: 0, options: options) { _ in
                seen += 1
                return seen < stopAfter
            }
            let plainPosition = lm.transformer.position
            seen = 0
            let generator = Generator(model: lm.transformer, tokenizer: lm.tokenizer,
                                      speculation: try SpeculativeDecoder(drafter: PromptLookupDrafter(), maxDraft: 8))
            let spec = try generator.generate(prompt: prompt, reusingCachedPrefix: 0, options: options) { _ in
                seen += 1
                return seen < stopAfter
            }
            #expect(spec.stopReason == .cancelled && plain.stopReason == .cancelled,
                    "stop after \(stopAfter): \(spec.stopReason) \(plain.stopReason) \(spec.tokens) \(plain.tokens)")
            #expect(spec.tokens == plain.tokens)
            #expect(lm.transformer.position == plainPosition)
        }
    }

    @Test("greedy drafts from a layer-truncated SmolLM2 (weights-tools/make_draft_model.py) give plain decoding's text")
    func draftModel() throws {
        let lm = try Self.load("Q4_1", context: 512)
        let draft = try LanguageModel(path: try TestPaths.model("SmolLM2-135M-Instruct.draft26.Q4_1.gguf"),
                                      options: LoadOptions(threads: 2, contextLength: 512))
        #expect(draft.config.numHiddenLayers == 26)
        let drafter = DraftModelDrafter(model: draft.transformer)
        try drafter.check(target: lm.transformer)
        let decoder = try SpeculativeDecoder(drafter: drafter, maxDraft: 4)
        var total = SpeculationStats()
        for message in [Self.messages[1], Self.messages[5], Self.messages[7]] {
            let prompt = try lm.encodeChat(messages: [ChatMessage(role: "user", content: message)])
            let s = try Self.compare(lm, prompt, maxTokens: 32, decoder: decoder, label: "draft model: " + message)
            total.drafted += s.drafted
            total.accepted += s.accepted
        }
        #expect(total.accepted > 0 && total.accepted < total.drafted, "\(total.accepted) of \(total.drafted) accepted")
    }
}
