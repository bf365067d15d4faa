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

/// Prompt lookup: the drafts are what followed the earlier occurrence of the history that matches its latest
/// tokens longest (at most `longestNgram`, at least `shortestNgram`; the latest such occurrence on a tie), in the
/// prompt or in the text generated so far.
///
/// Costs no model: tasks that quote their input (repeat, correct, summarise or extract from a source text, edit
/// code) accept long runs; open-ended text accepts few, and the decoder's adaptive length then stops drafting.
/// llama.cpp's `llama-lookup` and Hugging Face's `prompt_lookup_num_tokens` are the same idea.
///
/// Why the longest match and at least two tokens: a summary or an edit quotes its source in short runs, and the
/// place in the source it is quoting is the one that agrees with the most recent tokens; a single matching token
/// (a space, a comma) guesses wrong more often than not, and a rejected pass costs more than a plain step.
/// Replaying the configs/speculation answers offline, this drafts ~10% more tokens per pass on summaries than
/// "the latest occurrence of the last 3, 2 or 1 tokens".
public final class PromptLookupDrafter: SpeculativeDrafter {
    public let longestNgram: Int
    public let shortestNgram: Int

    public init(longestNgram: Int = 12, shortestNgram: Int = 2) throws {
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
        guard limit > 0, let match = Self.longestMatch(history, longest: longestNgram), match.length >= shortestNgram
        else { return 0 }
        let start = match.start
        let count = min(limit, history.count - start)
        for i in 0..<count { drafts[i] = history[start + i] }
        return count
    }

    /// The earlier occurrence that agrees with the end of `h` for the most tokens (at most `longest`; the latest
    /// on a tie): where its continuation starts, and how many tokens agree. Nil when the last token never
    /// occurred before.
    static func longestMatch(_ h: UnsafeBufferPointer<Int>, longest: Int) -> (start: Int, length: Int)? {
        let count = h.count
        guard count >= 2 else { return nil }
        let last = h[count - 1]
        var best: (start: Int, length: Int)?
        var j = count - 2
        while j >= 0 {
            if h[j] == last {
                var n = 1
                while n < longest && n <= j && h[j - n] == h[count - 1 - n] { n += 1 }
                if n > (best?.length ?? 0) {
                    best = (j + 1, n)
                    if n == longest { break }
                }
            }
            j -= 1
        }
        return best
    }
}
