import Foundation
import PocketLM
import Testing

/// Several sequences in one model: `Transformer.decodeBatch` gives each row exactly what a lone decode gives it
/// (SmolLM2 Q4_1 and F32, F16 and BF16 fixtures, and Gemma 3's sliding-window rings), and `ParallelGenerator` serves
/// concurrent requests with the texts they get alone, reuses a slot's cached prefix, bounds its queue and cancels on
/// request.
@Suite("Parallel generation", .serialized)
struct ParallelGeneratorTests {
    static let smol = "SmolLM2-135M-Instruct.Q4_1.gguf"

    static let prompts = [
        "The capital of France is",
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "Once upon a time, in a village by the sea, there lived",
        "1, 2, 3, 4, 5,",
    ]

    /// Each prompt fed into its own sequence, then `steps` greedy tokens decoded for all of them in one batch per
    /// step; every row's logits must equal, bit for bit, those of the same sequence run alone in another model.
    func checkBatchMatchesAlone(model file: String, prompts: [String], steps: Int) throws {
        try checkBatchMatchesAlone(path: try TestPaths.model(file), prompts: prompts, steps: steps)
    }

    func checkBatchMatchesAlone(path: String, prompts: [String], steps: Int) throws {
        let batched = try LanguageModel(path: path, options: LoadOptions(threads: 2, contextLength: 1024, sequences: prompts.count))
        let alone = try LanguageModel(path: path, options: LoadOptions(threads: 2, contextLength: 1024))
        let t = batched.transformer
        let vocab = batched.config.vocabSize
        var next: [Int] = []
        // Different lengths, so the rows sit at different positions.
        let encoded = prompts.map { batched.encodePrompt($0, parseSpecial: false) }
        for (s, p) in encoded.enumerated() {
            let logits = try p.withUnsafeBufferPointer { try t.forward($0, sequence: s) }
            next.append(Self.argmax(logits))
        }
        #expect(Set(encoded.map(\.count)).count > 1)
        var history = zip(encoded, next).map { $0 + [$1] }
        let sequences = Array(0..<prompts.count)
        for _ in 0..<steps {
            let logits = try next.withUnsafeBufferPointer { tok in
                try sequences.withUnsafeBufferPointer { try t.decodeBatch(tok, sequences: $0) }
            }
            let rows = (0..<prompts.count).map { Array(logits[($0 * vocab)..<(($0 + 1) * vocab)]) }
            next = rows.map { row in row.withUnsafeBufferPointer { Self.argmax($0) } }
            for s in sequences { history[s].append(next[s]) }
        }
        for s in sequences { #expect(t.position(of: s) == encoded[s].count + steps) }
        // Alone: the same tokens, one sequence at a time; the final logits compared bit for bit.
        let lastRows = try next.withUnsafeBufferPointer { tok in
            try sequences.withUnsafeBufferPointer { try t.decodeBatch(tok, sequences: $0) }
        }.map { $0 }
        for s in sequences {
            alone.transformer.reset()
            let h = history[s]
            let logits = try h.withUnsafeBufferPointer { buf in
                _ = try alone.transformer.forward(UnsafeBufferPointer(rebasing: buf[0..<encoded[s].count]))
                var last: UnsafeBufferPointer<Float>!
                for i in encoded[s].count..<h.count { last = try alone.transformer.decode(h[i]) }
                return Array(last)
            }
            let row = Array(lastRows[(s * vocab)..<((s + 1) * vocab)])
            let differing = zip(logits, row).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "sequence \(s): \(differing) of \(vocab) logits differ from a lone decode")
        }
    }

    static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        for i in 1..<logits.count where logits[i] > logits[best] { best = i }
        return best
    }

    @Test("SmolLM2: a decode batch of 4 sequences equals each sequence decoded alone, bit for bit")
    func batchEqualsAloneSmol() throws {
        try checkBatchMatchesAlone(model: Self.smol, prompts: Self.prompts, steps: 6)
    }

    /// Float weights: the batch's projections run the few-inputs kernel, whose sums are the one-input kernel's (the
    /// prompt's kernels sum in another order, which let a sequence's logits depend on its batch).
    @Test("SmolLM2 F32: a decode batch of 4 sequences equals each sequence decoded alone, bit for bit")
    func batchEqualsAloneF32() throws {
        try checkBatchMatchesAlone(model: "SmolLM2-135M-Instruct.F32.gguf", prompts: Self.prompts, steps: 3)
    }

    @Test("F16 and BF16 weights: a decode batch equals each sequence decoded alone, bit for bit",
          arguments: ["tiny-f16.gguf", "tiny-bf16.gguf"])
    func batchEqualsAloneHalf(fixture: String) throws {
        try checkBatchMatchesAlone(path: try TestPaths.fixture(fixture), prompts: Self.prompts, steps: 4)
    }

    /// More sequences than the few-inputs kernels take (`Transformer.decodeBatchRows`): past it the prompt's kernels
    /// (sgemm for float weights, the AVX2 tier's block-order Q8_0 kernel) summed in another order, so a row depended
    /// on how many others shared its step.
    @Test("12 sequences in one decode batch: each still equals the sequence decoded alone, bit for bit",
          arguments: ["tiny-f16.gguf", "tiny-q8_0.gguf"])
    func batchOfTwelveEqualsAlone(fixture: String) throws {
        let prompts = (0..<12).map { "\(Self.prompts[$0 % 4]) \(String(repeating: "and ", count: $0 / 4))" }
        try checkBatchMatchesAlone(path: try TestPaths.fixture(fixture), prompts: prompts, steps: 3)
    }

    @Test("Gemma 3 (sliding-window rings per sequence): a decode batch equals each sequence alone")
    func batchEqualsAloneGemma() throws {
        try checkBatchMatchesAlone(model: "gemma-3-270m-q4_k_m.gguf", prompts: Array(Self.prompts.prefix(3)), steps: 4)
    }

    @Test("decodeBatch refuses a repeated sequence, an unknown one and a full context")
    func decodeBatchRefusesBadRows() throws {
        let lm = try LanguageModel(path: try TestPaths.model(Self.smol), options: LoadOptions(threads: 2, contextLength: 8, sequences: 2))
        let t = lm.transformer
        func batch(_ tokens: [Int], _ seqs: [Int]) throws {
            _ = try tokens.withUnsafeBufferPointer { tok in try seqs.withUnsafeBufferPointer { try t.decodeBatch(tok, sequences: $0) } }
        }
        #expect(throws: ModelError.self) { try batch([1, 2], [0, 0]) }
        #expect(throws: ModelError.self) { try batch([1], [2]) }
        #expect(throws: ModelError.self) { try LanguageModel(path: try TestPaths.model(Self.smol), options: LoadOptions(sequences: 0)) }
        let eight = [Int](repeating: 1, count: 8)
        _ = try eight.withUnsafeBufferPointer { try t.forward($0, sequence: 1) }
        #expect(throws: ModelError.contextOverflow(needed: 9, context: 8)) { try batch([1, 1], [0, 1]) }
        // Sequence 0 is untouched by sequence 1's work.
        #expect(t.position(of: 0) == 0 && t.position(of: 1) == 8)
    }

    // MARK: - ParallelGenerator

    static func generator(slots: Int, queue: Int = 16, context: Int = 1024) throws -> ParallelGenerator {
        let lm = try LanguageModel(path: try TestPaths.model(smol), options: LoadOptions(threads: 2, contextLength: context, sequences: slots))
        return ParallelGenerator(model: lm, queueLimit: queue)
    }

    /// Everything a request produced.
    struct Outcome {
        var text = ""
        var ids: [Int] = []
        var started: (prompt: Int, cached: Int)?
        var summary: GenerationSummary?
    }

    static func collect(_ handle: GenerationHandle) async throws -> Outcome {
        var o = Outcome()
        for try await e in handle.events {
            switch e {
            case .started(let p, let c): o.started = (p, c)
            case .text(let t, let ids): o.text += t; o.ids += ids
            case .finished(let s): o.summary = s
            }
        }
        return o
    }

    /// Runs `body` while the generator's thread runs, then shuts it down and waits for it.
    static func running<R>(_ g: ParallelGenerator, _ body: () async throws -> R) async throws -> R {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await g.run() }
            defer { g.shutdown() }
            return try await body()
        }
    }

    /// The greedy text `Generator` gives `prompt` in a fresh single-sequence model.
    static func aloneText(_ prompt: [Int], maxTokens: Int) throws -> (String, [Int]) {
        let lm = try LanguageModel(path: try TestPaths.model(smol), options: LoadOptions(threads: 2, contextLength: 1024))
        let r = try lm.generator().generate(prompt: prompt, options: GenerationOptions(maxTokens: maxTokens, sampling: .greedy))
        return (r.text, r.tokens)
    }

    @Test("6 concurrent greedy requests on 3 slots get the texts they get alone")
    func concurrentRequestsMatchLoneOnes() async throws {
        let g = try Self.generator(slots: 3)
        let lm = try LanguageModel(path: try TestPaths.model(Self.smol), options: LoadOptions(threads: 1, contextLength: 64))
        let prompts = (Self.prompts + ["The quick brown fox", "Water boils at"]).map { lm.encodePrompt($0, parseSpecial: false) }
        let maxTokens = [24, 16, 30, 12, 20, 8]
        let outcomes = try await Self.running(g) {
            try await withThrowingTaskGroup(of: (Int, Outcome).self) { group in
                for (i, p) in prompts.enumerated() {
                    let handle = try g.submit(GenerationRequest(prompt: p, sampling: .greedy, maxTokens: maxTokens[i]))
                    group.addTask { (i, try await Self.collect(handle)) }
                }
                var all = [Outcome](repeating: Outcome(), count: prompts.count)
                for try await (i, o) in group { all[i] = o }
                return all
            }
        }
        for (i, o) in outcomes.enumerated() {
            let (text, tokens) = try Self.aloneText(prompts[i], maxTokens: maxTokens[i])
            #expect(o.text == text, "request \(i)")
            #expect(o.ids == tokens, "request \(i)")
            let s = try #require(o.summary)
            #expect(s.promptTokens == prompts[i].count && s.generatedTokens == tokens.count)
            #expect(s.stopReason == (tokens.count == maxTokens[i] ? .maxTokens : .stopToken))
        }
        #expect(g.load.running == 0 && g.load.waiting == 0)
    }

    @Test("a request that extends an earlier one reuses its slot's cache and replies as a fresh context does")
    func prefixReuse() async throws {
        let g = try Self.generator(slots: 2)
        let lm = try LanguageModel(path: try TestPaths.model(Self.smol), options: LoadOptions(threads: 1, contextLength: 64))
        let first = lm.encodePrompt("The three primary colours are", parseSpecial: false)
        let (o1, o2, other) = try await Self.running(g) {
            let o1 = try await Self.collect(try g.submit(GenerationRequest(prompt: first, maxTokens: 12)))
            // Another request in between takes the other slot, not the one holding `first`.
            let other = try await Self.collect(try g.submit(GenerationRequest(prompt: lm.encodePrompt("Paris is", parseSpecial: false), maxTokens: 4)))
            let second = first + o1.ids + lm.tokenizer.encode(" Which one is the warmest?", parseSpecial: false)
            let o2 = try await Self.collect(try g.submit(GenerationRequest(prompt: second, maxTokens: 12)))
            return (o1, o2, other)
        }
        #expect(o1.summary?.cachedTokens == 0)
        #expect(other.summary?.cachedTokens == 0)
        let s2 = try #require(o2.summary)
        // All of the first prompt and its reply is reused, but for a last token sampled at the limit (never fed).
        let unfed = o1.summary?.stopReason == .maxTokens ? 1 : 0
        #expect(s2.cachedTokens == first.count + o1.ids.count - unfed)
        let second = first + o1.ids + lm.tokenizer.encode(" Which one is the warmest?", parseSpecial: false)
        let (text, _) = try Self.aloneText(second, maxTokens: 12)
        #expect(o2.text == text)
    }

    @Test("past the slots and the queue, submit throws queueFull; a cancelled request frees its slot")
    func queueBoundAndCancel() async throws {
        let g = try Self.generator(slots: 1, queue: 1)
        let lm = try LanguageModel(path: try TestPaths.model(Self.smol), options: LoadOptions(threads: 1, contextLength: 64))
        let p = lm.encodePrompt("Count from one to one hundred: one, two,", parseSpecial: false)
        try await Self.running(g) {
            let long = try g.submit(GenerationRequest(prompt: p, maxTokens: 400))
            let waiting = try g.submit(GenerationRequest(prompt: p, maxTokens: 3))
            #expect(throws: ParallelGeneratorError.queueFull(limit: 1)) { try g.submit(GenerationRequest(prompt: p, maxTokens: 3)) }
            // Read a few pieces of the long one, then cancel it.
            var pieces = 0
            for try await e in long.events {
                if case .text = e { pieces += 1 }
                if pieces == 3 { long.cancel() }
            }
            let w = try await Self.collect(waiting)
            #expect(w.summary?.generatedTokens == 3)
            #expect(g.load.running == 0)
        }
        #expect(throws: ParallelGeneratorError.shuttingDown) { try g.submit(GenerationRequest(prompt: p)) }
        #expect(throws: ParallelGeneratorError.emptyPrompt) { try g.submit(GenerationRequest(prompt: [])) }
    }

    @Test("bad requests are refused at submit: too long for the context, a token limit below 1")
    func badRequests() throws {
        let g = try Self.generator(slots: 1, context: 16)
        #expect(throws: ParallelGeneratorError.promptTooLong(tokens: 16, context: 16)) {
            try g.submit(GenerationRequest(prompt: [Int](repeating: 1, count: 16)))
        }
        #expect(throws: ParallelGeneratorError.invalidMaxTokens(0)) { try g.submit(GenerationRequest(prompt: [1], maxTokens: 0)) }
    }

    @Test("a token limit far past the context (Int.max) generates until the context is full, as the largest limit that fits does")
    func tokenLimitPastTheContext() async throws {
        // It used to reserve prompt + limit tokens of history up front: Int.max overflowed, 10^14 failed to allocate.
        let context = 24
        let g = try Self.generator(slots: 1, context: context)
        let lm = try LanguageModel(path: try TestPaths.model(Self.smol), options: LoadOptions(threads: 1, contextLength: context))
        let prompt = lm.encodePrompt("The capital of France is", parseSpecial: false)
        // The last token is sampled, never fed: a full context has given prompt.count + fits - 1 rows of logits.
        let fits = context - prompt.count + 1
        let expected = try lm.generator().generate(prompt: prompt, options: GenerationOptions(maxTokens: fits + 1, sampling: .greedy))
        try #require(expected.stopReason == .contextFull && expected.tokens.count == fits, "\(expected.stopReason)")
        let limits = [Int.max, 100_000_000_000_000]
        for limit in limits {
            let alone = try lm.generator().generate(prompt: prompt, options: GenerationOptions(maxTokens: limit, sampling: .greedy))
            #expect(alone.tokens == expected.tokens && alone.stopReason == .contextFull)
        }
        try await Self.running(g) {
            for limit in limits {
                let o = try await Self.collect(try g.submit(GenerationRequest(prompt: prompt, maxTokens: limit)))
                #expect(o.ids == expected.tokens && o.text == expected.text)
                #expect(o.summary?.stopReason == .contextFull && o.summary?.generatedTokens == fits)
            }
        }
    }

    @Test("with a speculative decoder: greedy texts equal plain decoding alone, drafts are accepted, and a request cut inside a run of accepted drafts leaves a cache the next turn reuses")
    func speculation() async throws {
        let lm = try LanguageModel(path: try TestPaths.model(Self.smol), options: LoadOptions(threads: 2, contextLength: 1024, sequences: 2))
        let g = try ParallelGenerator(model: lm, queueLimit: 4,
                                      speculation: SpeculativeDecoder(drafter: PromptLookupDrafter(), maxDraft: 8))
        let vocab = try LanguageModel(path: try TestPaths.model(Self.smol), options: LoadOptions(threads: 1, contextLength: 64))
        let line = "one two three four five six seven eight nine ten."
        let repeating = vocab.encodePrompt("\(line) \(line) \(line) one two", parseSpecial: false)
        let other = vocab.encodePrompt("The three primary colours are", parseSpecial: false)
        let (alone, cut, next, pair) = try await Self.running(g) {
            let alone = try await Self.collect(try g.submit(GenerationRequest(prompt: repeating, maxTokens: 40)))
            // Cut by the token limit a few tokens into the repetition (inside a run of accepted drafts).
            let cut = try await Self.collect(try g.submit(GenerationRequest(prompt: repeating, maxTokens: 5)))
            let extended = repeating + cut.ids + vocab.tokenizer.encode(" eleven", parseSpecial: false)
            let next = try await Self.collect(try g.submit(GenerationRequest(prompt: extended, maxTokens: 20)))
            // Two at once decode as a batch, without drafts.
            let a = try g.submit(GenerationRequest(prompt: repeating, maxTokens: 24))
            let b = try g.submit(GenerationRequest(prompt: other, maxTokens: 24))
            return (alone, cut, next, (try await Self.collect(a), try await Self.collect(b)))
        }
        let (text, tokens) = try Self.aloneText(repeating, maxTokens: 40)
        #expect(alone.text == text && alone.ids == tokens)
        let stats = try #require(alone.summary?.speculation)
        #expect(stats.verifyPasses > 0 && stats.accepted > 0)
        #expect(stats.verifyPasses + stats.plainSteps + stats.accepted == tokens.count - 1 + (alone.summary?.stopReason == .stopToken ? 1 : 0))
        #expect(cut.ids == Array(tokens.prefix(5)))
        let extended = repeating + cut.ids + vocab.tokenizer.encode(" eleven", parseSpecial: false)
        // All of the cut request's prompt and reply is reused but its last token (sampled at the limit, never fed).
        #expect(next.summary?.cachedTokens == repeating.count + 4)
        #expect(next.text == (try Self.aloneText(extended, maxTokens: 20)).0)
        #expect(pair.0.text == (try Self.aloneText(repeating, maxTokens: 24)).0)
        #expect(pair.1.text == (try Self.aloneText(other, maxTokens: 24)).0)

        let small = try LanguageModel(path: try TestPaths.model(Self.smol), options: LoadOptions(threads: 1, contextLength: 64))
        let tooLong = try SpeculativeDecoder(drafter: PromptLookupDrafter(), maxDraft: small.transformer.maxBatch)
        do {
            _ = try ParallelGenerator(model: small, speculation: tooLong)
            Issue.record("a draft length past the model's batch was accepted")
        } catch {
            #expect(error is SpeculationError)
        }
    }
}
