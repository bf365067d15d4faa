import Foundation
import Synchronization

/// A multi-turn conversation with a model in a `ModelContainer`, which keeps the KV cache between turns.
///
/// Each turn renders the whole conversation in the model's chat template (`LanguageModel.encodeChat`: message
/// text never becomes control tokens), then feeds only the tokens after the longest prefix the KV cache already
/// holds — so turn N costs its own tokens, not the history. Edited history (`messages` set to something else)
/// costs the tokens after the first change. A cache that cannot rewind far enough (a sliding-window ring that
/// has moved on) is reset and the prompt fed whole; the reply is the same either way.
///
/// **A full context.** Before a turn the session makes room for the prompt plus `maxTokens`. With the
/// default policy, `.dropOldestTurns`, it drops the oldest exchanges from `messages` (a user message and the
/// replies that follow it; never the new message) until that fits or nothing older is left; the reply then ends
/// early (stop reason `contextFull`) if the context runs out. System messages are never dropped: not the system
/// prompt, and not one in `messages` either — leading or in the middle of the history, it stays in its place, as
/// it still instructs the model while the conversation around it goes. When the system prompt
/// and the new message alone do not leave room for one token of reply, the turn throws
/// `ChatSessionError.messageTooLong` and nothing changes. With `.error` the turn throws
/// `ChatSessionError.contextFull` instead of dropping anything.
///
/// **Cancellation.** Cancelling the task running `respond(to:)`, or the consumer of `stream(to:)`, stops
/// generation before the next token is computed. The partial reply is kept as the assistant's message, and it is
/// exactly what the caller was given: `respond(to:onChunk:)` still delivers the text held back as a possible start
/// of a stop string (with the last chunk) before it returns, while a stream's reader that has gone (its task
/// cancelled, or the stream released) can be given nothing more, so that text — and a chunk it did not take — is
/// left out of the history. (The KV cache may hold those tokens; the next turn re-feeds from where the history
/// differs.) A task cancelled while waiting for the model throws `CancellationError`.
///
/// The session is `Sendable`; its turns run one at a time (in the container's order). Settings changed while
/// a turn runs apply from the next turn; `messages` set during a turn are replaced when the turn ends.
public final class ChatSession: Sendable {
    /// What to do when the conversation no longer fits in the context.
    public enum ContextPolicy: Sendable, Equatable {
        /// Drop the oldest exchanges (keeping every system message) until the prompt plus `maxTokens` fits.
        case dropOldestTurns
        /// Throw `ChatSessionError.contextFull`.
        case error
    }

    private struct State {
        var systemPrompt: String?
        var messages: [ChatMessage]
        var sampling: SamplingParameters
        var maxTokens: Int
        var stopStrings: [String]
        var contextPolicy: ContextPolicy
        var template: ChatTemplate?
        var lastTurn: ChatTurnStats?
        var speculation: SpeculativeDecoder? = nil
    }

    /// The container whose model this session talks to.
    public let container: ModelContainer
    private let state: Mutex<State>

    /// A session on `container`.
    /// - Parameters:
    ///   - systemPrompt: the system message; nil uses the template's own default, if it has one.
    ///   - history: earlier messages ("user" / "assistant"), oldest first.
    ///   - sampling: how tokens are picked; `SamplingParameters.greedy` for deterministic replies.
    ///   - maxTokens: most tokens per reply.
    ///   - stopStrings: a reply ends before the first of these it produces (the text is not included).
    ///   - contextPolicy: what a turn does when the conversation does not fit.
    ///   - template: the chat template; nil uses the model file's (`tokenizer.chat_template`). Give one for a
    ///     model whose file has none, e.g. `ChatTemplate(template: "gemma")`.
    public init(_ container: ModelContainer, systemPrompt: String? = nil, history: [ChatMessage] = [],
                sampling: SamplingParameters = .init(), maxTokens: Int = 512, stopStrings: [String] = [],
                contextPolicy: ContextPolicy = .dropOldestTurns, template: ChatTemplate? = nil) {
        self.container = container
        state = Mutex(State(systemPrompt: systemPrompt, messages: history, sampling: sampling, maxTokens: maxTokens,
                            stopStrings: stopStrings, contextPolicy: contextPolicy, template: template, lastTurn: nil))
    }

    /// The system message sent before the conversation; nil uses the template's default (SmolLM2's, Qwen's).
    public var systemPrompt: String? {
        get { state.withLock { $0.systemPrompt } }
        set { state.withLock { $0.systemPrompt = newValue } }
    }

    /// The conversation so far, oldest first, without the system prompt: each turn appends the user's message
    /// and the reply. Set it to edit the history; the next turn re-feeds from the first change.
    public var messages: [ChatMessage] {
        get { state.withLock { $0.messages } }
        set { state.withLock { $0.messages = newValue } }
    }

    /// How tokens are picked (temperature, top-k/p, min-p, repetition penalty, seed). Each turn starts a new
    /// sampler with this seed.
    public var sampling: SamplingParameters {
        get { state.withLock { $0.sampling } }
        set { state.withLock { $0.sampling = newValue } }
    }

    /// Most tokens one reply may have (at least 1).
    public var maxTokens: Int {
        get { state.withLock { $0.maxTokens } }
        set { state.withLock { $0.maxTokens = newValue } }
    }

    /// Strings that end a reply; the reply's text stops before the first one found.
    public var stopStrings: [String] {
        get { state.withLock { $0.stopStrings } }
        set { state.withLock { $0.stopStrings = newValue } }
    }

    /// What a turn does when the conversation does not fit (see the type's documentation).
    public var contextPolicy: ContextPolicy {
        get { state.withLock { $0.contextPolicy } }
        set { state.withLock { $0.contextPolicy = newValue } }
    }

    /// Speculative decoding for the replies (same text, greedy; same distribution, sampling); nil decodes plainly.
    /// The decoder is used by one turn at a time (the container serialises turns).
    public var speculation: SpeculativeDecoder? {
        get { state.withLock { $0.speculation } }
        set { state.withLock { $0.speculation = newValue } }
    }

    /// Statistics of the last completed turn, nil before the first.
    public var lastTurn: ChatTurnStats? { state.withLock { $0.lastTurn } }

    /// Forgets the conversation (the system prompt and settings stay). The KV cache keeps what is still useful,
    /// such as the system prompt's tokens.
    public func reset() {
        state.withLock { $0.messages = [] }
    }

    /// Sends `message` as the user and returns the whole reply, which is appended to `messages` with it.
    /// Cancelling the task stops the reply before the next token and returns what was generated.
    public func respond(to message: String) async throws -> String {
        try await turn(message, receiving: { true }) { _ in true }
    }

    /// Sends `message` as the user and calls `onChunk` with each piece of the reply as it is generated (the last
    /// chunk carries the turn's statistics), in the calling task and on its actor — so main-actor code can update
    /// its state from `onChunk` — while the model runs on the container's thread; returns the whole reply once the
    /// turn has ended. Generation waits for `onChunk` as a stream waits for its reader. Cancelling the task stops
    /// the reply before the next token; `onChunk` still gets the rest of the partial reply (text held back for a
    /// possible stop string) and the statistics, and the call returns that reply after the session has recorded it.
    public func respond(to message: String, isolation: isolated (any Actor)? = #isolation,
                        onChunk: (ChatChunk) -> Void) async throws -> String {
        let handoff = ChunkHandoff<ChatChunk>()
        // The turn is a child task; this task reads its chunks, on the caller's actor. Cancelling this task cancels
        // both: the turn stops before its next token and sends its last chunk, which this loop still reads (so
        // `onChunk` has seen the whole reply the session records).
        async let reply = turn(message, into: handoff)
        do {
            while let chunk = try await handoff.nextUntilFinished() { onChunk(chunk) }
        } catch {
            _ = try? await reply
            throw error
        }
        return try await reply
    }

    /// Sends `message` as the user and streams the reply as it is generated; the last chunk carries the turn's
    /// statistics. The stream has backpressure: generation waits for the reader, never more than one chunk ahead
    /// of what has been read. Releasing the stream (leaving a `for try await` loop over it, in a function) or
    /// cancelling the task that iterates stops generation before the next token; the reply so far is kept in
    /// `messages`.
    ///
    /// The model is not held hostage by a reader that stops reading: once another task waits for the container,
    /// the turn stops waiting for this reader and runs to the end of its reply, queueing the rest for it. A loop
    /// left with `break` while the stream is still held (a stored property, or main.swift's top-level code, whose
    /// loops keep their iterators) therefore lets the next turn run after this reply ends, rather than blocking.
    public func stream(to message: String) -> AsyncThrowingStream<ChatChunk, any Error> {
        let handoff = ChunkHandoff<ChatChunk>()
        let task = Task { _ = try? await self.turn(message, into: handoff) }
        // Dropping the stream (a loop left early) releases this, which stops the turn.
        let abandoned = DeinitAction {
            handoff.cancel()
            task.cancel()
        }
        return AsyncThrowingStream {
            withExtendedLifetime(abandoned) {}
            return try await handoff.next()
        }
    }

    /// One turn whose chunks go to `handoff`'s reader, then its end (or error).
    private func turn(_ message: String, into handoff: ChunkHandoff<ChatChunk>) async throws -> String {
        do {
            let reply = try await turn(message, whenContended: { handoff.stopWaiting() },
                                       receiving: { !handoff.isCancelled }) { chunk in handoff.send(chunk) }
            handoff.finish()
            return reply
        } catch {
            handoff.finish(throwing: error)
            throw error
        }
    }

    /// One turn: `deliver` hands each chunk to the caller and returns false when the caller has gone (the chunk
    /// was not delivered); `receiving` says whether the caller still takes chunks. Generation stops when the task
    /// is cancelled or the caller has gone, and the reply recorded is the text delivered. `whenContended` is called
    /// if another task starts waiting for the model during the turn.
    private func turn(_ message: String, whenContended: (@Sendable () -> Void)? = nil, receiving: () -> Bool,
                      deliver: (ChatChunk) -> Bool) async throws -> String {
        try await container.withCache { lm, cached in
            if let whenContended { container.whenContended(whenContended) }
            let settings = state.withLock { $0 }
            guard settings.maxTokens >= 1 else {
                throw ChatSessionError.invalidMaxTokens(settings.maxTokens)
            }
            // Refused here, before the cache is touched: a failed generation resets it.
            try settings.sampling.validate()
            let template = try settings.template ?? lm.chatTemplate()
            let user = ChatMessage(role: "user", content: message)
            let system = settings.systemPrompt.map { [ChatMessage(role: "system", content: $0)] } ?? []
            let context = lm.transformer.contextLength
            var history = settings.messages
            var prompt = template.tokens(for: system + history + [user], addGenerationPrompt: true, tokenizer: lm.tokenizer)
            var dropped = 0
            // Compared by subtraction: a limit of Int.max ("as many as fit") must not overflow.
            while settings.maxTokens > context - prompt.count {
                guard settings.contextPolicy == .dropOldestTurns else {
                    throw ChatSessionError.contextFull(promptTokens: prompt.count, maxTokens: settings.maxTokens,
                                                       context: context)
                }
                // The oldest exchange: the first non-system message up to the next user message, less the system
                // messages in it, which stay where they are.
                guard let first = history.firstIndex(where: { $0.role != "system" }) else { break }
                var end = first + 1
                while end < history.count && history[end].role != "user" { end += 1 }
                let kept = history[first..<end].filter { $0.role == "system" }
                dropped += end - first - kept.count
                history.replaceSubrange(first..<end, with: kept)
                prompt = template.tokens(for: system + history + [user], addGenerationPrompt: true, tokenizer: lm.tokenizer)
            }
            guard prompt.count < context else {
                throw ChatSessionError.messageTooLong(promptTokens: prompt.count, context: context)
            }

            let common = ChatSession.commonPrefix(prompt, cached)
            let options = GenerationOptions(maxTokens: min(settings.maxTokens, context), sampling: settings.sampling)
            let start = DispatchTime.now().uptimeNanoseconds
            func elapsed() -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
            var matcher = StopStringMatcher(settings.stopStrings)
            var reply = ""
            var pendingIds: [Int] = []
            var stoppedByString = false
            var pagingBefore: PagingStats?
            let result: GenerationResult
            do {
                // Anything the cache holds past the common prefix is about to be dropped or overwritten.
                cached = Array(cached.prefix(common))
                pagingBefore = lm.transformer.feedForward?.stats
                let generator = lm.generator()
                generator.speculation = settings.speculation
                result = try generator.generate(prompt: prompt, reusingCachedPrefix: common, options: options) { step in
                    if let t = step.token { pendingIds.append(t) }
                    let (text, stop) = matcher.append(step.text)
                    if !text.isEmpty {
                        // Text the caller never received is not part of the reply it knows.
                        guard deliver(ChatChunk(text: text, tokenIds: pendingIds, elapsed: elapsed(), stats: nil)) else {
                            return false
                        }
                        reply += text
                        pendingIds = []
                    }
                    if stop {
                        stoppedByString = true
                        return false
                    }
                    return step.token == nil || (!Task.isCancelled && receiving())
                }
            } catch {
                lm.transformer.reset()
                cached = []
                throw error
            }
            cached = Array((prompt + result.tokens).prefix(lm.transformer.position))
            // Text held back for a stop string that did not come belongs to the reply, and goes with the last chunk
            // — unless the caller has gone and can never be given it.
            let tail = stoppedByString || !receiving() ? "" : matcher.finish()
            reply += tail
            let stats = ChatTurnStats(
                promptTokens: prompt.count, reusedTokens: result.reusedPromptTokens,
                generatedTokens: result.tokens.count, droppedMessages: dropped, cachedTokens: cached.count,
                stopReason: stoppedByString ? .stopString : result.stopReason,
                prefillSeconds: result.promptSeconds, timeToFirstToken: result.timeToFirstToken,
                decodeSeconds: result.generationSeconds,
                paging: pagingBefore.flatMap { before in lm.transformer.feedForward.map { $0.stats - before } })
            state.withLock {
                $0.messages = history + [user, ChatMessage(role: "assistant", content: reply)]
                $0.lastTurn = stats
            }
            // A caller that goes between the check above and here has left after the turn ended, as one that
            // leaves with chunks still queued.
            _ = deliver(ChatChunk(text: tail, tokenIds: pendingIds, elapsed: elapsed(), stats: stats))
            return reply
        }
    }

    /// Length of the longest common prefix of `a` and `b`.
    static func commonPrefix(_ a: [Int], _ b: [Int]) -> Int {
        let n = min(a.count, b.count)
        var i = 0
        while i < n && a[i] == b[i] { i += 1 }
        return i
    }
}

/// A piece of a streamed reply.
public struct ChatChunk: Sendable {
    /// The text this chunk adds (empty only on the last chunk when nothing was held back).
    public var text: String
    /// The tokens that produced `text`. A token that completes no text (part of a UTF-8 character, or text that
    /// may begin a stop string) travels with the chunk whose text it completes.
    public var tokenIds: [Int]
    /// Seconds from the start of the turn (once the model was free) to this chunk.
    public var elapsed: Double
    /// The turn's statistics, on the last chunk only.
    public var stats: ChatTurnStats?
}

/// What one chat turn cost.
public struct ChatTurnStats: Sendable, Equatable {
    /// Tokens of the turn's whole prompt (system prompt, history, the new message, the assistant's opener).
    public var promptTokens: Int
    /// Leading prompt tokens the KV cache already held (not fed again).
    public var reusedTokens: Int
    /// Tokens of the reply (a stop token is not counted).
    public var generatedTokens: Int
    /// User and assistant messages dropped from the start of the history to make room (system messages are kept;
    /// `ChatSession.ContextPolicy`).
    public var droppedMessages: Int
    /// Tokens the KV cache holds after the turn.
    public var cachedTokens: Int
    /// Why the reply ended.
    public var stopReason: StopReason
    /// Seconds spent feeding the prompt tokens that were not reused.
    public var prefillSeconds: Double
    /// Seconds from the start of the prefill to the first reply token.
    public var timeToFirstToken: Double
    /// Seconds spent producing the reply's tokens after the first.
    public var decodeSeconds: Double
    /// What the turn read from storage, for a model that pages its FFN (nil otherwise).
    public var paging: PagingStats? = nil

    /// Prompt tokens fed this turn: `promptTokens - reusedTokens`.
    public var prefilledTokens: Int { promptTokens - reusedTokens }
    /// Prefill speed over the tokens fed this turn.
    public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(prefilledTokens) / prefillSeconds : 0 }
    /// Decode speed: tokens after the first over the time they took.
    public var decodeTokensPerSecond: Double {
        generatedTokens > 1 && decodeSeconds > 0 ? Double(generatedTokens - 1) / decodeSeconds : 0
    }
}

/// Why a chat turn could not run.
public enum ChatSessionError: Error, LocalizedError, Equatable, Sendable {
    /// The system prompt and the new message alone fill the context, leaving no room for a reply.
    case messageTooLong(promptTokens: Int, context: Int)
    /// The conversation plus the reply's token limit does not fit and the policy is `.error`.
    case contextFull(promptTokens: Int, maxTokens: Int, context: Int)
    /// The reply's token limit is below 1.
    case invalidMaxTokens(Int)

    public var errorDescription: String? {
        switch self {
        case .messageTooLong(let p, let c):
            "the message (with the system prompt and chat template) is \(p) tokens, but the context holds \(c) including the reply"
        case .contextFull(let p, let m, let c):
            "the conversation is \(p) tokens and a reply of up to \(m) more does not fit in the context of \(c) tokens"
        case .invalidMaxTokens(let m): "the reply's token limit must be at least 1, found \(m)"
        }
    }
}

/// Holds back streamed text that may be the start of a stop string, and finds the first stop string.
struct StopStringMatcher {
    let stops: [String]
    private var pending = ""

    init(_ stops: [String]) {
        self.stops = stops.filter { !$0.isEmpty }
    }

    /// Adds `text`; returns what can be emitted now and whether a stop string was reached (then the text before
    /// it is returned and the rest dropped).
    mutating func append(_ text: String) -> (text: String, stop: Bool) {
        guard !stops.isEmpty else { return (text, false) }
        pending += text
        var earliest: Range<String.Index>?
        for stop in stops {
            if let r = pending.range(of: stop), earliest.map({ r.lowerBound < $0.lowerBound }) ?? true { earliest = r }
        }
        if let r = earliest {
            defer { pending = "" }
            return (String(pending[..<r.lowerBound]), true)
        }
        // Hold back the longest end of the text that begins a stop string.
        var hold = 0
        for stop in stops {
            var k = min(stop.count - 1, pending.count)
            while k > hold {
                if pending.hasSuffix(stop.prefix(k)) {
                    hold = k
                    break
                }
                k -= 1
            }
        }
        let cut = pending.index(pending.endIndex, offsetBy: -hold)
        defer { pending = String(pending[cut...]) }
        return (String(pending[..<cut]), false)
    }

    /// What is still held back (no stop string followed it).
    mutating func finish() -> String {
        defer { pending = "" }
        return pending
    }
}
