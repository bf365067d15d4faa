import Dispatch
import Foundation
import Synchronization

/// Generates for many requests at once on one model: up to `slotCount` requests run side by side, and every
/// step decodes one token of each of them as one batch, so the weights stream from memory once for all of them
/// (decode is memory-bound: four slots cost little more than one).
///
/// Each slot is one of the model's sequences (`LoadOptions.sequences`) with its own KV cache, and remembers the
/// tokens that cache holds. A new request goes to the free slot whose cache shares the longest prefix with its
/// prompt (ties: the slot idle longest) and feeds only the tokens after that prefix, so a conversation that
/// comes back with one more turn costs that turn, not its history. Prompts are fed a chunk (`maxBatch` tokens)
/// per step between decode steps, so a long prompt delays the other slots by a chunk at a time, not whole.
///
/// Requests beyond the slots wait in a first-in, first-out queue of at most `queueLimit`; past it `submit`
/// throws `ParallelGeneratorError.queueFull`. `GenerationHandle.cancel()`, or ending the iteration of a request's
/// events (or cancelling the task that iterates them), cancels the request before its next token. A row's result does not depend on what
/// else is in the batch (`Transformer.decodeBatch`), so a greedy request gives the same text alone or in company.
///
/// With a `SpeculativeDecoder`, a step in which one request alone is decoding drafts tokens and verifies them
/// in one pass (the same output; see `SpeculativeDecoder`); with several decoding, their batch already streams the
/// weights once for all of them, and they decode a token each.
///
/// The model runs on one thread the generator owns while `run()` is awaited (not on Swift's cooperative pool: a
/// step blocks its thread for milliseconds). `shutdown()` stops taking requests; `run()` returns once every
/// accepted request has finished.
public final class ParallelGenerator: Sendable {
    /// Requests that generate at the same time (the model's sequences).
    public let slotCount: Int
    /// Requests that may wait for a slot; more are refused.
    public let queueLimit: Int
    /// Tokens each slot's context holds.
    public let contextLength: Int
    /// The model's tokenizer (immutable, safe to use from any task).
    public let tokenizer: any Tokenizer

    /// Touched only by the generation thread.
    nonisolated(unsafe) private let model: LanguageModel
    nonisolated(unsafe) private let slots: [Slot]
    /// Drafts for a request decoding alone; with scratch for its history (room for the drafts after it) and for
    /// a row of logits, the job it last began, and how much of that job's history the scratch already holds.
    private let speculation: SpeculativeDecoder?
    nonisolated(unsafe) private let speculationHistory: UnsafeMutableBufferPointer<Int>
    nonisolated(unsafe) private let speculationLogits: UnsafeMutableBufferPointer<Float>
    nonisolated(unsafe) private var speculatingJob: UInt64 = 0
    nonisolated(unsafe) private var speculationHistoryCount = 0
    private let state = Mutex(State())
    /// Signalled when there is something for an idle generation thread to do.
    private let wake = DispatchSemaphore(value: 0)

    private struct Waiting {
        let id: UInt64
        let request: GenerationRequest
        let continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation
        let enqueued: UInt64
    }

    private struct State {
        var waiting: [Waiting] = []
        var cancelled: Set<UInt64> = []
        var nextId: UInt64 = 0
        var running = 0
        var draining = false
    }

    /// Takes ownership of `model`, which must hold one sequence per slot (`LoadOptions.sequences`).
    public convenience init(model: sending LanguageModel, queueLimit: Int = 64) {
        self.init(model: model, queueLimit: queueLimit, speculating: nil)
    }

    /// Takes ownership of `model` (one sequence per slot) and of `speculation`, which drafts for a request
    /// decoding alone. Throws when a pass of its drafts does not fit the model's batch.
    public convenience init(model: sending LanguageModel, queueLimit: Int = 64, speculation: SpeculativeDecoder) throws {
        guard speculation.maxDraft + 1 <= model.transformer.maxBatch else {
            throw SpeculationError.invalidDraftLength(speculation.maxDraft, maxBatch: model.transformer.maxBatch)
        }
        self.init(model: model, queueLimit: queueLimit, speculating: speculation)
    }

    private init(model: sending LanguageModel, queueLimit: Int, speculating: SpeculativeDecoder?) {
        self.model = model
        slotCount = model.transformer.sequenceCount
        self.queueLimit = max(0, queueLimit)
        contextLength = model.transformer.contextLength
        tokenizer = model.tokenizer
        slots = (0..<model.transformer.sequenceCount).map(Slot.init)
        speculation = speculating
        speculationHistory = .allocate(capacity: speculating.map { model.transformer.contextLength + $0.maxDraft + 1 } ?? 0)
        speculationLogits = .allocate(capacity: speculating == nil ? 0 : model.config.vocabSize)
    }

    deinit {
        speculationHistory.deallocate()
        speculationLogits.deallocate()
    }

    /// Requests generating now and requests waiting for a slot.
    public var load: (running: Int, waiting: Int) {
        state.withLock { ($0.running, $0.waiting.count) }
    }

    /// Queues `request` and returns its events (`started`, `text` pieces, `finished`) with a way to cancel it.
    /// Throws at once when the request is invalid, the queue is full, or the generator is shutting down.
    public func submit(_ request: GenerationRequest) throws(ParallelGeneratorError) -> GenerationHandle {
        guard !request.prompt.isEmpty else { throw .emptyPrompt }
        guard request.prompt.count < contextLength else { throw .promptTooLong(tokens: request.prompt.count, context: contextLength) }
        guard request.maxTokens >= 1 else { throw .invalidMaxTokens(request.maxTokens) }
        let (stream, continuation) = AsyncThrowingStream<GenerationEvent, any Error>.makeStream()
        let id: UInt64 = try state.withLock { (s) throws(ParallelGeneratorError) -> UInt64 in
            guard !s.draining else { throw .shuttingDown }
            // Requests about to take a free slot do not count against the queue.
            guard s.waiting.count < queueLimit + max(0, slotCount - s.running) else {
                throw .queueFull(limit: queueLimit)
            }
            s.nextId += 1
            s.waiting.append(Waiting(id: s.nextId, request: request, continuation: continuation,
                                     enqueued: DispatchTime.now().uptimeNanoseconds))
            return s.nextId
        }
        let cancel: @Sendable () -> Void = { [weak self] in
            guard let self else { return }
            self.state.withLock { _ = $0.cancelled.insert(id) }
            self.wake.signal()
        }
        continuation.onTermination = { termination in
            if case .cancelled = termination { cancel() }
        }
        wake.signal()
        return GenerationHandle(events: stream, cancel: cancel)
    }

    /// Runs the generation thread until `shutdown()` and every accepted request has finished. Cancelling the
    /// calling task shuts down the same way.
    public func run() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let thread = Thread { [self] in
                    loop()
                    done.resume()
                }
                thread.name = "PocketLM.ParallelGenerator"
                thread.start()
            }
        } onCancel: {
            shutdown()
        }
    }

    /// Stops taking requests; those accepted (running or waiting) still finish, then `run()` returns.
    public func shutdown() {
        state.withLock { $0.draining = true }
        wake.signal()
    }

    // MARK: - The generation thread

    private final class Slot {
        let sequence: Int
        /// The tokens the slot's KV cache holds, in order.
        var cached: [Int] = []
        var lastUsed: UInt64 = 0
        var job: Job?
        init(_ sequence: Int) { self.sequence = sequence }
    }

    private final class Job {
        let id: UInt64
        let request: GenerationRequest
        let continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation
        let sampler: Sampler
        let stopTokens: Set<Int>
        var detokenizer: StreamingDetokenizer
        var matcher: StopStringMatcher
        /// Prompt and generated tokens, for the repetition penalty.
        var history: [Int]
        /// Prompt tokens in the cache so far (reused or fed).
        var fed: Int
        let cachedTokens: Int
        var generated = 0
        /// The last sampled token, fed by the next decode step.
        var next: Int?
        var pendingIds: [Int] = []
        let queueSeconds: Double
        let admitted: UInt64
        var firstToken: UInt64 = 0
        /// What speculative decoding did for this request (nil without a decoder).
        var speculation: SpeculationStats?

        /// `room`: the tokens the request can sample before its context is full (`Transformer.generationRoom`).
        init(_ w: Waiting, sampler: Sampler, tokenizer: any Tokenizer, cachedTokens: Int, room: Int, now: UInt64) {
            id = w.id
            request = w.request
            continuation = w.continuation
            self.sampler = sampler
            stopTokens = w.request.stopTokens ?? tokenizer.stopTokenIds
            detokenizer = StreamingDetokenizer(tokenizer: tokenizer, skipSpecial: true)
            matcher = StopStringMatcher(w.request.stopStrings)
            history = w.request.prompt
            // A request ends when the context is full, so a token limit past it ("as many as fit") reserves no more.
            history.reserveCapacity(w.request.prompt.count + min(w.request.maxTokens, room))
            fed = cachedTokens
            self.cachedTokens = cachedTokens
            queueSeconds = Double(now - w.enqueued) / 1e9
            admitted = now
        }
    }

    private func loop() {
        let transformer = model.transformer
        // Scratch for a decode batch: one row per slot.
        var tokens = [Int](repeating: 0, count: slotCount), sequences = [Int](repeating: 0, count: slotCount)
        var rows: [Slot] = []
        rows.reserveCapacity(slotCount)
        while true {
            // 1. Cancellations, and waiting requests into free slots.
            var free = 0
            for slot in slots where slot.job == nil { free += 1 }
            // Most steps find nothing cancelled and nothing queued: then nothing is copied.
            let (admitted, cancelled, droppedWaiting, idle) = state.withLock { s in
                let cancelled = s.cancelled
                var dropped: [Waiting] = []
                if !cancelled.isEmpty {
                    s.cancelled = []
                    dropped = s.waiting.filter { cancelled.contains($0.id) }
                    s.waiting.removeAll { cancelled.contains($0.id) }
                }
                var take: [Waiting] = []
                if free > 0 && !s.waiting.isEmpty {
                    take = Array(s.waiting.prefix(free))
                    s.waiting.removeFirst(take.count)
                    s.running += take.count
                }
                let idle = s.running == 0 && s.waiting.isEmpty
                return (take, cancelled, dropped, idle ? (s.draining ? 2 : 1) : 0)
            }
            for w in droppedWaiting { w.continuation.finish() }
            for slot in slots {
                if let job = slot.job, cancelled.contains(job.id) { finish(slot, .cancelled) }
            }
            if idle == 2 { return }
            if idle == 1 {
                wake.wait()
                continue
            }
            for w in admitted { start(w) }

            // 2. One chunk of each prompt still being fed; a finished prompt samples its first token.
            for slot in slots {
                guard let job = slot.job, job.fed < job.request.prompt.count else { continue }
                let end = min(job.request.prompt.count, job.fed + transformer.maxBatch)
                do {
                    let logits = try job.request.prompt[job.fed..<end].withUnsafeBufferPointer {
                        try transformer.forward($0, sequence: slot.sequence)
                    }
                    slot.cached += job.request.prompt[job.fed..<end]
                    job.fed = end
                    if end == job.request.prompt.count {
                        job.continuation.yield(.started(promptTokens: job.request.prompt.count, cachedTokens: job.cachedTokens))
                        accept(slot, logits: logits)
                    }
                } catch {
                    fail(slot, error)
                }
            }

            // 3. One decode step for every slot with a sampled token to feed, as one batch.
            rows.removeAll(keepingCapacity: true)
            for slot in slots where slot.job?.next != nil { rows.append(slot) }
            guard !rows.isEmpty else { continue }
            if rows.count == 1, let speculation {
                speculate(rows[0], with: speculation)
                continue
            }
            for (i, slot) in rows.enumerated() {
                tokens[i] = slot.job!.next!
                sequences[i] = slot.sequence
            }
            do {
                let vocab = model.config.vocabSize
                let logits = try tokens.withUnsafeBufferPointer { t in
                    try sequences.withUnsafeBufferPointer { s in
                        try transformer.decodeBatch(UnsafeBufferPointer(rebasing: t[0..<rows.count]),
                                                    sequences: UnsafeBufferPointer(rebasing: s[0..<rows.count]))
                    }
                }
                for (i, slot) in rows.enumerated() {
                    slot.cached.append(tokens[i])
                    slot.job!.next = nil
                    accept(slot, logits: UnsafeBufferPointer(rebasing: logits[(i * vocab)..<((i + 1) * vocab)]))
                }
            } catch {
                for slot in rows { fail(slot, error) }
            }
        }
    }

    /// Puts a request into the free slot that already holds the longest prefix of its prompt.
    private func start(_ w: Waiting) {
        let transformer = model.transformer
        let prompt = w.request.prompt
        var best: Slot?, bestShared = -1
        for slot in slots where slot.job == nil {
            let shared = ChatSession.commonPrefix(prompt, slot.cached)
            if shared > bestShared || (shared == bestShared && slot.lastUsed < best!.lastUsed) {
                best = slot
                bestShared = shared
            }
        }
        let slot = best!
        // At least the last prompt token is fed: its logits start generation.
        var reused = min(bestShared, prompt.count - 1)
        if reused == 0 || !transformer.truncate(to: reused, sequence: slot.sequence) {
            transformer.reset(sequence: slot.sequence)
            reused = 0
        }
        slot.cached.removeSubrange(reused...)
        let now = DispatchTime.now().uptimeNanoseconds
        do {
            let sampler = try Sampler(parameters: w.request.sampling, vocabularySize: model.config.vocabSize)
            slot.job = Job(w, sampler: sampler, tokenizer: tokenizer, cachedTokens: reused,
                           room: transformer.generationRoom(after: w.request.prompt.count), now: now)
            if let speculation {
                var stats = SpeculationStats()
                stats.passesByDraftCount = Array(repeating: 0, count: speculation.maxDraft + 1)
                slot.job!.speculation = stats
            }
        } catch {
            w.continuation.finish(throwing: error)
            state.withLock { $0.running -= 1 }
        }
    }

    /// Samples the slot's next token from `logits` and reports it; ends the request when it should end.
    private func accept(_ slot: Slot, logits: UnsafeBufferPointer<Float>) {
        guard let job = slot.job else { return }
        let token = job.history.withUnsafeBufferPointer {
            job.sampler.sample(UnsafeMutableBufferPointer(mutating: logits), history: $0)
        }
        if emit(slot, token, fed: model.transformer.position(of: slot.sequence)) { job.next = token }
    }

    /// Reports `token`, picked from the logits after `fed` tokens of the slot's sequence; false when the request
    /// ended with it (or before it, at a stop token).
    private func emit(_ slot: Slot, _ token: Int, fed: Int) -> Bool {
        guard let job = slot.job else { return false }
        if job.generated == 0 { job.firstToken = DispatchTime.now().uptimeNanoseconds }
        if job.stopTokens.contains(token) { finish(slot, .stopToken); return false }
        job.generated += 1
        job.history.append(token)
        job.pendingIds.append(token)
        let (text, stop) = job.matcher.append(job.detokenizer.append(token))
        if !text.isEmpty {
            if case .terminated = job.continuation.yield(.text(text, tokenIds: job.pendingIds)) {
                finish(slot, .cancelled)
                return false
            }
            job.pendingIds = []
        }
        if stop { finish(slot, .stopString); return false }
        if job.generated >= job.request.maxTokens { finish(slot, .maxTokens); return false }
        if fed >= contextLength { finish(slot, .contextFull); return false }
        return true
    }

    /// One speculative step for the only slot decoding: its pending token and drafts in one pass; the accepted
    /// drafts and the token after them are emitted as plain decoding would emit them, one by one.
    private func speculate(_ slot: Slot, with decoder: SpeculativeDecoder) {
        guard let job = slot.job, let pending = job.next else { return }
        let transformer = model.transformer
        do {
            if speculatingJob != job.id {
                try decoder.begin(model: transformer, sampling: job.request.sampling)
                speculatingJob = job.id
                speculationHistoryCount = 0
            }
            // The history the cache holds, then the pending token (job.history ends with it). The scratch already
            // holds the job's history up to its last speculative step; only what came after is copied.
            let count = job.history.count
            let h = speculationHistory.baseAddress!
            job.history.withUnsafeBufferPointer { src in
                for i in speculationHistoryCount..<count { h[i] = src[i] }
            }
            let fed = transformer.position(of: slot.sequence)
            // Drafts leave room for the token after them, in the token budget and in the context.
            let limit = min(job.request.maxTokens - job.generated - 1, contextLength - fed - 1)
            let before = decoder.stats
            let (accepted, next) = try decoder.step(model: transformer, sampler: job.sampler, history: h, count: count,
                                                    limit: limit, scratch: speculationLogits, sequence: slot.sequence)
            job.speculation?.add(decoder.stats, since: before)
            // The accepted drafts stay in place: they are the tokens emitted next.
            speculationHistoryCount = count + accepted
            slot.cached.append(pending)
            job.next = nil
            for i in 0..<accepted {
                guard emit(slot, h[count + i], fed: fed + 1 + i) else {
                    // The cache keeps what was generated before this token, as after plain decoding.
                    try SpeculativeDecoder.rewind(transformer, to: count + i, history: h, sequence: slot.sequence)
                    return
                }
                slot.cached.append(h[count + i])
            }
            if emit(slot, next, fed: fed + 1 + accepted) { job.next = next }
        } catch {
            if slot.job == nil {
                // Ended, then the cache failed to rewind: forget what it holds.
                slot.cached = []
                transformer.reset(sequence: slot.sequence)
            }
            fail(slot, error)
        }
    }

    /// Ends the slot's request: the text still held back, the summary, the end of its stream.
    private func finish(_ slot: Slot, _ reason: StopReason) {
        guard let job = slot.job else { return }
        slot.job = nil
        slot.lastUsed = DispatchTime.now().uptimeNanoseconds
        state.withLock { $0.running -= 1 }
        if reason != .cancelled {
            var tail = job.detokenizer.flush()
            if reason == .stopString {
                tail = ""
            } else {
                let (text, stop) = job.matcher.append(tail)
                tail = stop ? text : text + job.matcher.finish()
            }
            if !tail.isEmpty || !job.pendingIds.isEmpty { job.continuation.yield(.text(tail, tokenIds: job.pendingIds)) }
            let now = DispatchTime.now().uptimeNanoseconds
            let first = job.firstToken == 0 ? now : job.firstToken
            job.continuation.yield(.finished(GenerationSummary(
                promptTokens: job.request.prompt.count, cachedTokens: job.cachedTokens, generatedTokens: job.generated,
                stopReason: reason, timeToFirstToken: Double(first - job.admitted) / 1e9,
                queueSeconds: job.queueSeconds, decodeSeconds: Double(now - first) / 1e9, speculation: job.speculation)))
        }
        job.continuation.finish()
    }

    /// Ends the slot's request with `error` and forgets what its cache holds.
    private func fail(_ slot: Slot, _ error: any Error) {
        guard let job = slot.job else { return }
        slot.job = nil
        slot.cached = []
        model.transformer.reset(sequence: slot.sequence)
        state.withLock { $0.running -= 1 }
        job.continuation.finish(throwing: error)
    }
}

/// A request accepted by a `ParallelGenerator`: its events, and a way to stop it.
public struct GenerationHandle: Sendable {
    /// `started`, then the reply's `text` pieces, then `finished`; a cancelled request's events just end.
    public let events: AsyncThrowingStream<GenerationEvent, any Error>
    private let cancelAction: @Sendable () -> Void

    init(events: AsyncThrowingStream<GenerationEvent, any Error>, cancel: @escaping @Sendable () -> Void) {
        self.events = events
        cancelAction = cancel
    }

    /// Stops the request before its next token (or takes it out of the queue); its events end without `finished`.
    public func cancel() { cancelAction() }
}
