import Foundation

/// Perplexity over a text, as llama.cpp's llama-perplexity defines it: non-overlapping windows of `window`
/// tokens, each from an empty cache, scoring only the second half of each window.
public struct PerplexityEvaluator {
    public let model: LanguageModel

    public init(model: LanguageModel) { self.model = model }

    public struct Result: Codable, Sendable {
        public let perplexity: Double
        /// Standard error of the perplexity estimate (delta method on the mean NLL).
        public let standardError: Double
        public let meanNLL: Double
        public let scoredTokens: Int
        public let windows: Int
        public let context: Int
        public let fileTokens: Int
        public let seconds: Double
    }

    public func evaluate(text: String, window: Int,
                         progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws -> Result {
        let bos = model.tokenizer.addBos ? model.tokenizer.bosTokenId : nil
        return try Self.evaluate(transformer: model.transformer, tokens: model.encodePrompt(text, parseSpecial: false),
                                 window: window, bos: bos, progress: progress)
    }

    /// Perplexity of `tokens` under any forward pass (e.g. one running another layer schedule).
    /// `bos` replaces each window's first token when the model starts sequences with one, as llama.cpp does.
    public static func evaluate(transformer t: Transformer, tokens: [Int], window: Int, bos: Int? = nil,
                                progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws -> Result {
        let start = Date()
        guard window <= t.contextLength else { throw ModelError.contextOverflow(needed: window, context: t.contextLength) }
        let windows = tokens.count / window
        guard windows >= 1 else {
            throw GenerationError.invalidParameter("context", "the text has \(tokens.count) tokens, fewer than one window of \(window)")
        }
        let vocab = t.config.vocabSize
        let first = window / 2
        var nllSum = 0.0, nllSquares = 0.0
        var scored = 0
        for w in 0..<windows {
            var chunk = Array(tokens[(w * window)..<((w + 1) * window)])
            // llama.cpp starts each window with BOS when the model uses one.
            if let bos { chunk[0] = bos }
            t.reset()
            var pos = 0
            while pos < window {
                let end = min(window, pos + t.maxBatch)
                let logits = try chunk[pos..<end].withUnsafeBufferPointer { try t.forward($0, allLogits: true) }
                // Logits at position i predict token i + 1; score predictions for positions first..<window-1.
                // (A batch may end before the scored half begins: windows longer than two batches.)
                for i in stride(from: max(pos, first), to: min(end, window - 1), by: 1) {
                    let row = UnsafeBufferPointer(rebasing: logits[((i - pos) * vocab)..<((i - pos + 1) * vocab)])
                    var maxLogit = -Float.infinity
                    for v in row where v > maxLogit { maxLogit = v }
                    var sum = 0.0
                    for v in row { sum += exp(Double(v - maxLogit)) }
                    let nll = -(Double(row[chunk[i + 1]] - maxLogit) - log(sum))
                    nllSum += nll
                    nllSquares += nll * nll
                    scored += 1
                }
                pos = end
            }
            progress(w + 1, windows, exp(nllSum / Double(scored)))
        }
        let mean = nllSum / Double(scored)
        let variance = max(0, nllSquares / Double(scored) - mean * mean)
        let ppl = exp(mean)
        let stderr = ppl * (variance / Double(max(1, scored - 1))).squareRoot()
        return Result(perplexity: ppl, standardError: stderr, meanNLL: mean, scoredTokens: scored, windows: windows,
                      context: window, fileTokens: tokens.count, seconds: Date().timeIntervalSince(start))
    }
}
