import Foundation

/// One generation asked of a `ParallelGenerator`: a prompt as tokens and how to continue it.
public struct GenerationRequest: Sendable {
    /// The whole prompt (BOS and chat template included, as the model should see it).
    public var prompt: [Int]
    /// How tokens are picked; each request gets its own sampler seeded from `sampling.seed`.
    public var sampling: SamplingParameters
    /// Most tokens to generate (at least 1).
    public var maxTokens: Int
    /// The reply ends before the first of these strings it produces (the string is not included).
    public var stopStrings: [String]
    /// Tokens that end generation (not emitted); nil uses the tokenizer's end-of-generation tokens.
    public var stopTokens: Set<Int>?

    public init(prompt: [Int], sampling: SamplingParameters = .greedy, maxTokens: Int = 256,
                stopStrings: [String] = [], stopTokens: Set<Int>? = nil) {
        self.prompt = prompt
        self.sampling = sampling
        self.maxTokens = maxTokens
        self.stopStrings = stopStrings
        self.stopTokens = stopTokens
    }
}

/// What a `ParallelGenerator` reports for a request, in order: `started` once its prompt is in a slot's KV cache,
/// then `text` pieces, then `finished`.
public enum GenerationEvent: Sendable, Equatable {
    /// The prompt has been fed; `cachedTokens` of it were already in the slot's KV cache (not fed again).
    case started(promptTokens: Int, cachedTokens: Int)
    /// A piece of the reply and the tokens that produced it. A token that completes no text (part of a UTF-8
    /// character, or text that may begin a stop string) travels with the piece whose text it completes.
    case text(String, tokenIds: [Int])
    /// The reply has ended.
    case finished(GenerationSummary)
}

/// How a request's generation went.
public struct GenerationSummary: Sendable, Equatable {
    /// Tokens of the prompt.
    public var promptTokens: Int
    /// Leading prompt tokens reused from the slot's KV cache.
    public var cachedTokens: Int
    /// Tokens generated (a stop token is not counted).
    public var generatedTokens: Int
    /// Why the reply ended.
    public var stopReason: StopReason
    /// Seconds from admission to a slot to the first generated token.
    public var timeToFirstToken: Double
    /// Seconds the request waited for a free slot.
    public var queueSeconds: Double
    /// Seconds from the first generated token to the last.
    public var decodeSeconds: Double
    /// What speculative decoding did for the request (nil when the generator does not speculate).
    public var speculation: SpeculationStats?
}

/// Why a `ParallelGenerator` did not take a request.
public enum ParallelGeneratorError: Error, LocalizedError, Equatable, Sendable {
    /// Every slot is busy and the waiting queue is full; try again later.
    case queueFull(limit: Int)
    /// The generator is shutting down and takes no new requests.
    case shuttingDown
    /// The prompt is empty.
    case emptyPrompt
    /// The prompt leaves no room in the context for a generated token.
    case promptTooLong(tokens: Int, context: Int)
    /// The token limit is below 1.
    case invalidMaxTokens(Int)

    public var errorDescription: String? {
        switch self {
        case .queueFull(let limit): "all slots are busy and \(limit) requests are already waiting"
        case .shuttingDown: "the generator is shutting down"
        case .emptyPrompt: "the prompt is empty"
        case .promptTooLong(let t, let c): "the prompt is \(t) tokens but the context holds \(c), including at least one generated token"
        case .invalidMaxTokens(let m): "the token limit must be at least 1, found \(m)"
        }
    }
}
