/// Proposes tokens that a `SpeculativeDecoder` verifies with one batched pass of the target model.
///
/// A drafter only guesses: whatever it proposes, the decoder keeps exactly the target model's output (greedy: its
/// argmax; sampling: its distribution, by the rejection rule). Good guesses make a pass yield several tokens.
public protocol SpeculativeDrafter: AnyObject {
    /// Starts a generation: `sampling` is how the target picks tokens (a drafter that draws from a distribution
    /// draws the same way; greedy when the temperature is 0).
    func begin(sampling: SamplingParameters) throws

    /// Writes up to `limit` tokens predicted to follow `history` into `drafts` and returns how many (0: no
    /// guess). `history` is every token so far, prompt and generated; its last token is the one the target is
    /// about to be fed.
    func propose(after history: UnsafeBufferPointer<Int>, limit: Int, into drafts: UnsafeMutablePointer<Int>) throws -> Int

    /// Whether the last proposal's tokens were drawn from distributions (`draftProbability` gives them); false
    /// when each draft is a fixed guess, a point mass on the token.
    var drawsFromDistribution: Bool { get }

    /// The probability the distribution of draft `index` of the last proposal gave `token`.
    func draftProbability(of token: Int, at index: Int) -> Float
}

/// Prompt lookup: the drafts are what followed the latest earlier occurrence of the history's last n tokens
/// (n from `longestNgram` down to `shortestNgram`), in the prompt or in the text generated so far.
///
/// Costs no model: tasks that quote their input (repeat, correct, summarise or extract from a source text, edit
/// code) accept long runs; open-ended text accepts few, and the decoder's adaptive length then stops drafting.
/// llama.cpp's `llama-lookup` and Hugging Face's `prompt_lookup_num_tokens` are the same idea.
public final class PromptLookupDrafter: SpeculativeDrafter {
    public let longestNgram: Int
    public let shortestNgram: Int

    public init(longestNgram: Int = 3, shortestNgram: Int = 1) throws {
        guard shortestNgram >= 1, longestNgram >= shortestNgram else {
            throw GenerationError.invalidParameter("n-gram sizes", "need 1 ≤ shortest ≤ longest, found \(shortestNgram)…\(longestNgram)")
        }
        self.longestNgram = longestNgram
        self.shortestNgram = shortestNgram
    }

    public func begin(sampling: SamplingParameters) throws {}

    public var drawsFromDistribution: Bool { false }

    public func draftProbability(of token: Int, at index: Int) -> Float { 0 }

    public func propose(after history: UnsafeBufferPointer<Int>, limit: Int, into drafts: UnsafeMutablePointer<Int>) throws -> Int {
        let length = history.count
        guard limit > 0 else { return 0 }
        var n = min(longestNgram, length - 1)
        while n >= shortestNgram {
            if let start = Self.latestMatch(history, ngram: n) {
                let count = min(limit, length - start)
                for i in 0..<count { drafts[i] = history[start + i] }
                return count
            }
            n -= 1
        }
        return 0
    }

    /// Where the continuation of the latest earlier occurrence of the last `n` tokens starts, or nil.
    static func latestMatch(_ h: UnsafeBufferPointer<Int>, ngram n: Int) -> Int? {
        let length = h.count, key = length - n
        var j = key - 1
        while j >= 0 {
            var i = 0
            while i < n && h[j + i] == h[key + i] { i += 1 }
            if i == n { return j + n }
            j -= 1
        }
        return nil
    }
}
