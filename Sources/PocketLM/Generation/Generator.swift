import Foundation

/// Options for one generation.
public struct GenerationOptions: Sendable {
    /// Most tokens to generate; generation also stops at a stop token or at the end of the context.
    public var maxTokens: Int = 256
    public var sampling: SamplingParameters = .init()
    /// Tokens that end generation (not emitted). Defaults to the tokenizer's EOS / end-of-turn tokens.
    public var stopTokens: Set<Int>? = nil
    /// Record the K highest logits of every step (0 = off).
    public var topLogits: Int = 0

    public init(maxTokens: Int = 256, sampling: SamplingParameters = .init(), stopTokens: Set<Int>? = nil, topLogits: Int = 0) {
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stopTokens = stopTokens
        self.topLogits = topLogits
    }
}

/// Why generation ended.
public enum StopReason: String, Sendable, Codable {
    /// The model produced a stop token (end of turn or sequence).
    case stopToken = "stop_token"
    /// The text reached one of the caller's stop strings (`ChatSession.stopStrings`).
    case stopString = "stop_string"
    /// The token limit was reached.
    case maxTokens = "max_tokens"
    /// The context has no position left for another token.
    case contextFull = "context_full"
    /// The caller stopped it: a callback returned false, or the task was cancelled.
    case cancelled
}

public struct TokenLogit: Sendable, Codable, Equatable {
    public let id: Int
    public let logit: Float
}

/// What one generation produced and how long it took.
public struct GenerationResult: Sendable {
    /// The whole prompt, including any prefix reused from the KV cache.
    public var promptTokens: [Int]
    /// The generated tokens (a stop token that ended generation is not included).
    public var tokens: [Int]
    public var text: String
    public var stopReason: StopReason
    /// Seconds spent on the prompt (prefill of the tokens not reused from the cache).
    public var promptSeconds: Double
    /// Seconds spent producing tokens after the first (decode).
    public var generationSeconds: Double
    /// From the start of prefill to the first generated token.
    public var timeToFirstToken: Double
    /// For each step, the K highest logits; the first entry is the last prompt position's.
    public var topLogits: [[TokenLogit]]
    /// Leading prompt tokens the KV cache already held, so prefill skipped them (0 for a fresh context).
    public var reusedPromptTokens: Int = 0
    /// What speculative decoding did, when the generator speculated.
    public var speculation: SpeculationStats? = nil

    /// Prompt tokens actually run through the model: the prompt after the reused prefix.
    public var prefilledTokens: Int { promptTokens.count - reusedPromptTokens }
    /// Prefill speed over the tokens actually run.
    public var promptTokensPerSecond: Double { promptSeconds > 0 ? Double(prefilledTokens) / promptSeconds : 0 }
    /// Decode speed: tokens after the first, over the time they took (the first token's cost is prefill's).
    public var generationTokensPerSecond: Double {
        tokens.count > 1 && generationSeconds > 0 ? Double(tokens.count - 1) / generationSeconds : 0
    }
}

/// One step of a generation, as `Generator.generate(prompt:reusingCachedPrefix:options:onStep:)` reports it.
public struct GenerationStep: Sendable {
    /// The token sampled at this step; nil for the final flush of bytes held back when generation ends (an
    /// unfinished UTF-8 character, which becomes U+FFFD).
    public let token: Int?
    /// The text this step completed: empty while a token holds part of a UTF-8 character, and for control tokens.
    public let text: String
}

/// Runs a prompt through a model and samples a continuation, streaming text as it is produced.
///
/// A generator is cheap: it holds the model and tokenizer, and each call allocates its sampler. It is not safe
/// to use one model from two threads at once (the model owns one KV cache); `ModelContainer` serialises access.
public final class Generator {
    public let model: Transformer
    public let tokenizer: any Tokenizer
    /// Set: tokens are drafted and verified in batches (`SpeculativeDecoder`); the output is the same.
    public var speculation: SpeculativeDecoder?

    public init(model: Transformer, tokenizer: any Tokenizer, speculation: SpeculativeDecoder? = nil) {
        self.model = model
        self.tokenizer = tokenizer
        self.speculation = speculation
    }

    /// Generates from `prompt` (token ids, BOS included if wanted) in a fresh context. `onText` receives each
    /// complete UTF-8 piece of text as it is decoded; return false from it to stop.
    public func generate(prompt: [Int], options: GenerationOptions,
                         onText: (String) -> Bool = { _ in true }) throws -> GenerationResult {
        try generate(prompt: prompt, reusingCachedPrefix: 0, options: options) { step in
            guard step.token != nil else {
                _ = onText(step.text)   // the final flush: nothing left to stop
                return true
            }
            return step.text.isEmpty || onText(step.text)
        }
    }

    /// Generates from `prompt`, reusing the first `cachedPrefix` tokens the model's KV cache already holds.
    ///
    /// The caller vouches that the cache holds exactly `prompt[0..<cachedPrefix]` at positions `0..<cachedPrefix`
    /// (it knows what it fed: see `GenerationResult` for what a generation leaves in the cache). The cache is
    /// truncated to that prefix and only the rest of the prompt is fed — at least its last token, whose logits
    /// start generation. When the cache cannot rewind that far (a sliding-window ring has already overwritten
    /// positions it needs) it is reset and the whole prompt is fed. With `cachedPrefix` 0 this is exactly
    /// `generate(prompt:options:onText:)`. `GenerationResult.reusedPromptTokens` reports the prefix reused.
    ///
    /// `onStep` is called after every sampled token that does not end generation (even when it completes no
    /// text) and once more with `token` nil if held-back bytes remain at the end; return false to stop before
    /// the next token is computed (stop reason `cancelled`).
    ///
    /// Afterwards the cache holds the prompt followed by every generated token except the last one, which was
    /// sampled but not fed — unless generation ended at a stop token, when it holds them all (the stop token
    /// itself is not fed). `model.position` is the count either way.
    public func generate(prompt: [Int], reusingCachedPrefix cachedPrefix: Int, options: GenerationOptions,
                         onStep: (GenerationStep) -> Bool) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw ModelError.emptyPrompt }
        guard prompt.count <= model.contextLength else {
            throw GenerationError.promptTooLong(tokens: prompt.count, context: model.contextLength)
        }
        guard options.maxTokens >= 0 else { throw GenerationError.invalidParameter("max-tokens", "must be ≥ 0") }
        let sampler = try Sampler(parameters: options.sampling, vocabularySize: model.config.vocabSize)
        let stops = options.stopTokens ?? tokenizer.stopTokenIds
        var detokenizer = StreamingDetokenizer(tokenizer: tokenizer, skipSpecial: true)

        // History of every token (prompt + generated) for the repetition penalty, with room for the drafts a
        // speculative pass writes after it; sized once.
        // Generation ends when the context is full, so a token limit past it ("as many as fit") sizes no more.
        let spec = speculation
        let most = min(options.maxTokens, model.generationRoom(after: prompt.count))
        var history = [Int](repeating: 0, count: prompt.count + most + 1 + (spec?.maxDraft ?? 0))
        for (i, t) in prompt.enumerated() { history[i] = t }
        var historyCount = prompt.count
        var generated: [Int] = []
        generated.reserveCapacity(most)
        var text = ""
        var tops: [[TokenLogit]] = []
        let logitsCopy = UnsafeMutableBufferPointer<Float>.allocate(capacity: model.config.vocabSize)
        defer { logitsCopy.deallocate() }

        // At least the last prompt token is fed: its logits start generation.
        var reused = max(0, min(cachedPrefix, prompt.count - 1, model.position))
        if reused == 0 || !model.truncate(to: reused) {
            reused = 0
            model.reset()
        }
        try spec?.begin(model: model, sampling: options.sampling)
        let start = DispatchTime.now().uptimeNanoseconds
        let logits = try prompt[reused...].withUnsafeBufferPointer { try model.forward($0) }
        let prefillEnd = DispatchTime.now().uptimeNanoseconds
        var firstTokenAt = prefillEnd
        var stopReason = StopReason.maxTokens
        let recordTops = options.topLogits > 0
        func record(_ row: UnsafeBufferPointer<Float>) { if recordTops { tops.append(Self.top(row, options.topLogits)) } }

        // Each token is sampled, emitted, and only then fed (with any drafts), so the cache never holds the last.
        if options.maxTokens > 0 {
            record(logits)
            _ = logitsCopy.initialize(from: logits)
            var pending = history.withUnsafeBufferPointer { h in
                sampler.sample(logitsCopy, history: UnsafeBufferPointer(rebasing: h[0..<historyCount]))
            }
            firstTokenAt = DispatchTime.now().uptimeNanoseconds
            /// Emits `token`; false when generation ends with it (or before it, at a stop token).
            func emit(_ token: Int) -> Bool {
                if stops.contains(token) { stopReason = .stopToken; return false }
                generated.append(token)
                history[historyCount] = token
                historyCount += 1
                let piece = detokenizer.append(token)
                text += piece
                if !onStep(GenerationStep(token: token, text: piece)) { stopReason = .cancelled; return false }
                return generated.count < options.maxTokens
            }
            generation: while emit(pending) {
                if model.position >= model.contextLength { stopReason = .contextFull; break }
                guard let spec else {
                    let logits = try model.decode(pending)
                    record(logits)
                    _ = logitsCopy.initialize(from: logits)
                    pending = history.withUnsafeBufferPointer { h in
                        sampler.sample(logitsCopy, history: UnsafeBufferPointer(rebasing: h[0..<historyCount]))
                    }
                    continue
                }
                // Drafts leave room for the token after them, in the budget and in the context.
                let limit = min(options.maxTokens - generated.count - 1, model.contextLength - model.position - 1)
                let count = historyCount
                let (accepted, next) = try history.withUnsafeMutableBufferPointer { h in
                    try spec.step(model: model, sampler: sampler, history: h.baseAddress!, count: count, limit: limit,
                                  scratch: logitsCopy, onRow: record)
                }
                for i in 0..<accepted {
                    // emit writes the accepted draft over itself at history[historyCount].
                    guard emit(history[count + i]) else {
                        // The cache holds what was generated before this token (all of it at a stop token).
                        try history.withUnsafeBufferPointer { h in
                            try SpeculativeDecoder.rewind(model, to: count + i, history: h.baseAddress!)
                        }
                        break generation
                    }
                }
                pending = next
            }
        }
        let tail = detokenizer.flush()
        if !tail.isEmpty {
            text += tail
            _ = onStep(GenerationStep(token: nil, text: tail))
        }
        let end = DispatchTime.now().uptimeNanoseconds
        return GenerationResult(
            promptTokens: prompt, tokens: generated, text: text, stopReason: stopReason,
            promptSeconds: Double(prefillEnd - start) / 1e9,
            generationSeconds: Double(end - firstTokenAt) / 1e9,
            timeToFirstToken: Double(firstTokenAt - start) / 1e9,
            topLogits: tops, reusedPromptTokens: reused, speculation: spec?.stats)
    }

    static func top(_ logits: UnsafeBufferPointer<Float>, _ k: Int) -> [TokenLogit] {
        var best: [TokenLogit] = []
        best.reserveCapacity(k + 1)
        for i in 0..<logits.count {
            let v = logits[i]
            if best.count == k, let last = best.last, v <= last.logit { continue }
            var pos = best.count
            while pos > 0 && best[pos - 1].logit < v { pos -= 1 }
            best.insert(TokenLogit(id: i, logit: v), at: pos)
            if best.count > k { best.removeLast() }
        }
        return best
    }
}
