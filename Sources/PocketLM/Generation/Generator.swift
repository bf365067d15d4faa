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
    case stopToken = "stop_token"
    case maxTokens = "max_tokens"
    case contextFull = "context_full"
    case cancelled
}

public struct TokenLogit: Sendable, Codable, Equatable {
    public let id: Int
    public let logit: Float
}

/// What one generation produced and how long it took.
public struct GenerationResult: Sendable {
    public var promptTokens: [Int]
    public var tokens: [Int]
    public var text: String
    public var stopReason: StopReason
    /// Seconds spent on the prompt (prefill).
    public var promptSeconds: Double
    /// Seconds spent producing tokens after the first (decode).
    public var generationSeconds: Double
    /// From the start of prefill to the first generated token.
    public var timeToFirstToken: Double
    /// For each step, the K highest logits; the first entry is the last prompt position's.
    public var topLogits: [[TokenLogit]]

    public var promptTokensPerSecond: Double { promptSeconds > 0 ? Double(promptTokens.count) / promptSeconds : 0 }
    /// Decode speed: tokens after the first, over the time they took (the first token's cost is prefill's).
    public var generationTokensPerSecond: Double {
        tokens.count > 1 && generationSeconds > 0 ? Double(tokens.count - 1) / generationSeconds : 0
    }
}

/// Runs a prompt through a model and samples a continuation, streaming text as it is produced.
public final class Generator {
    public let model: Transformer
    public let tokenizer: any Tokenizer

    public init(model: Transformer, tokenizer: any Tokenizer) {
        self.model = model
        self.tokenizer = tokenizer
    }

    /// Generates from `prompt` (token ids, BOS included if wanted) in a fresh context. `onText` receives each
    /// complete UTF-8 piece of text as it is decoded; return false from it to stop.
    public func generate(prompt: [Int], options: GenerationOptions,
                         onText: (String) -> Bool = { _ in true }) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw ModelError.emptyPrompt }
        guard prompt.count <= model.contextLength else {
            throw GenerationError.promptTooLong(tokens: prompt.count, context: model.contextLength)
        }
        guard options.maxTokens >= 0 else { throw GenerationError.invalidParameter("max-tokens", "must be ≥ 0") }
        let sampler = try Sampler(parameters: options.sampling, vocabularySize: model.config.vocabSize)
        let stops = options.stopTokens ?? tokenizer.stopTokenIds
        var detokenizer = StreamingDetokenizer(tokenizer: tokenizer, skipSpecial: true)

        // History of every token (prompt + generated) for the repetition penalty; sized once.
        var history = [Int](repeating: 0, count: prompt.count + options.maxTokens + 1)
        for (i, t) in prompt.enumerated() { history[i] = t }
        var historyCount = prompt.count
        var generated: [Int] = []
        generated.reserveCapacity(options.maxTokens)
        var text = ""
        var tops: [[TokenLogit]] = []
        let logitsCopy = UnsafeMutableBufferPointer<Float>.allocate(capacity: model.config.vocabSize)
        defer { logitsCopy.deallocate() }

        model.reset()
        let start = DispatchTime.now().uptimeNanoseconds
        var logits = try prompt.withUnsafeBufferPointer { try model.forward($0) }
        let prefillEnd = DispatchTime.now().uptimeNanoseconds
        var firstTokenAt = prefillEnd
        var stopReason = StopReason.maxTokens

        while generated.count < options.maxTokens {
            _ = logitsCopy.initialize(from: logits)
            if options.topLogits > 0 { tops.append(Self.top(logits, options.topLogits)) }
            let next = history.withUnsafeBufferPointer { h in
                sampler.sample(logitsCopy, history: UnsafeBufferPointer(rebasing: h[0..<historyCount]))
            }
            if generated.isEmpty { firstTokenAt = DispatchTime.now().uptimeNanoseconds }
            if stops.contains(next) { stopReason = .stopToken; break }
            generated.append(next)
            history[historyCount] = next
            historyCount += 1
            let piece = detokenizer.append(next)
            text += piece
            if !piece.isEmpty && !onText(piece) { stopReason = .cancelled; break }
            if generated.count == options.maxTokens { break }
            if model.position >= model.contextLength { stopReason = .contextFull; break }
            logits = try model.decode(next)
        }
        let tail = detokenizer.flush()
        if !tail.isEmpty {
            text += tail
            _ = onText(tail)
        }
        let end = DispatchTime.now().uptimeNanoseconds
        return GenerationResult(
            promptTokens: prompt, tokens: generated, text: text, stopReason: stopReason,
            promptSeconds: Double(prefillEnd - start) / 1e9,
            generationSeconds: Double(end - firstTokenAt) / 1e9,
            timeToFirstToken: Double(firstTokenAt - start) / 1e9,
            topLogits: tops)
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
