import Foundation

/// What speculative decoding did in one generation.
public struct SpeculationStats: Sendable, Codable, Equatable {
    /// Batched passes that verified drafts.
    public var verifyPasses = 0
    /// Single-token decode steps (no draft, or the draft length backed off to 0).
    public var plainSteps = 0
    /// Tokens drafted and verified, and how many of them the target agreed with.
    public var drafted = 0
    public var accepted = 0
    /// Verify passes by how many drafts they carried: `passesByDraftCount[k]` passes verified k drafts.
    public var passesByDraftCount: [Int] = []

    public init() {}

    /// Share of drafted tokens the target accepted.
    public var acceptanceRate: Double { drafted > 0 ? Double(accepted) / Double(drafted) : 0 }
    /// Tokens each forward pass after the prompt produced: a verify pass gives its accepted drafts plus one.
    public var tokensPerPass: Double {
        let passes = verifyPasses + plainSteps
        return passes > 0 ? Double(verifyPasses + plainSteps + accepted) / Double(passes) : 0
    }
    /// Mean drafts per verify pass.
    public var meanDraftLength: Double { verifyPasses > 0 ? Double(drafted) / Double(verifyPasses) : 0 }

    /// Adds what a decoder did between its stats `before` and `now` (same draft length).
    mutating func add(_ now: SpeculationStats, since before: SpeculationStats) {
        verifyPasses += now.verifyPasses - before.verifyPasses
        plainSteps += now.plainSteps - before.plainSteps
        drafted += now.drafted - before.drafted
        accepted += now.accepted - before.accepted
        for k in passesByDraftCount.indices where k < now.passesByDraftCount.count {
            passesByDraftCount[k] += now.passesByDraftCount[k] - (k < before.passesByDraftCount.count ? before.passesByDraftCount[k] : 0)
        }
    }
}

/// Speculative decoding: a drafter proposes tokens, the target model runs the token it is about to be fed
/// together with the drafts as one batch (its weights streamed once for all of them), and keeps the longest
/// prefix of drafts it agrees with, plus one token of its own; the KV cache is rolled back past the rest.
///
/// The output is the target's own: greedy, the argmax at every position (the batched quantized kernels give
/// the same logits as one-token decoding, bit for bit, so the text equals plain decoding token for token; see
/// README for float weights); sampling, the rejection rule of Leviathan et al. / Chen et al. — accept draft d
/// with probability min(1, p(d)/q(d)), else draw from max(0, p − q) renormalised — which keeps the distribution
/// of plain sampling (a lookup draft is a point mass: accept with p(d), else draw from p without d).
///
/// Used by `Generator` when its `speculation` is set (and by `ChatSession.speculation`). One decoder serves one
/// generation at a time: it is Sendable only so that a session can hold it; its users serialise (as
/// `ModelContainer` does), it does not lock.
public final class SpeculativeDecoder: @unchecked Sendable {
    public let drafter: any SpeculativeDrafter
    /// Most tokens drafted per pass.
    public let maxDraft: Int
    public private(set) var lengths: DraftLengthController
    /// The current (or last) generation's figures.
    public private(set) var stats = SpeculationStats()
    private var rng = SplitMix64(seed: 0)
    private var residual: UnsafeMutablePointer<Float>?
    private var residualCapacity = 0

    public init(drafter: any SpeculativeDrafter, maxDraft: Int) throws {
        guard maxDraft >= 1 else { throw SpeculationError.invalidDraftLength(maxDraft, maxBatch: maxDraft + 1) }
        self.drafter = drafter
        self.maxDraft = maxDraft
        lengths = DraftLengthController(maxDraft: maxDraft)
    }

    deinit { residual?.deallocate() }

    /// Starts a generation on `model` (checks that a pass of maxDraft + 1 tokens fits its batch).
    public func begin(model: Transformer, sampling: SamplingParameters) throws {
        guard maxDraft + 1 <= model.maxBatch else { throw SpeculationError.invalidDraftLength(maxDraft, maxBatch: model.maxBatch) }
        try drafter.begin(sampling: sampling)
        lengths = DraftLengthController(maxDraft: maxDraft)
        stats = SpeculationStats()
        stats.passesByDraftCount = Array(repeating: 0, count: maxDraft + 1)
        // Its own stream, so the sampler's draws stay those of its own seed.
        rng = SplitMix64(seed: sampling.seed ^ 0x5EC0_1A7E_D0C0_DE5E)
        let vocab = model.config.vocabSize
        if residualCapacity < vocab {
            residual?.deallocate()
            residual = .allocate(capacity: vocab)
            residualCapacity = vocab
        }
    }

    /// One step: feeds `history[count - 1]` (sampled, not yet fed; the cache holds `history[0..<count-1]`) with
    /// up to `limit` drafts, which are written to `history[count...]` (room for `maxDraft` more is needed).
    /// Returns how many drafts were accepted (they stay at `history[count..<count+accepted]`) and the token
    /// after them, sampled but not fed. The cache then holds `history[0..<count+accepted]`.
    /// `onRow` sees the logits each emitted token was picked from, in order. `sequence` is the model's sequence
    /// (KV cache) the history is in.
    public func step(model: Transformer, sampler: Sampler, history: UnsafeMutablePointer<Int>, count: Int, limit: Int,
                     scratch: UnsafeMutableBufferPointer<Float>, sequence: Int = 0,
                     onRow: (UnsafeBufferPointer<Float>) -> Void = { _ in }) throws -> (accepted: Int, next: Int) {
        let wanted = min(lengths.next(), limit, maxDraft)
        let drafted = wanted > 0
            ? min(wanted, try drafter.propose(after: UnsafeBufferPointer(start: history, count: count), limit: wanted,
                                              into: history + count))
            : 0
        if drafted == 0 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let logits = try model.decode(history[count - 1], sequence: sequence)
            lengths.recordPlainStep(seconds: Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            stats.plainSteps += 1
            onRow(logits)
            _ = scratch.initialize(from: logits)
            return (0, sampler.sample(scratch, history: UnsafeBufferPointer(start: history, count: count)))
        }
        let base = model.position(of: sequence)
        let vocab = model.config.vocabSize
        let t0 = DispatchTime.now().uptimeNanoseconds
        let rows = try model.decodeRun(UnsafeBufferPointer(start: history + count - 1, count: drafted + 1), sequence: sequence)
        lengths.recordVerifyPass(drafts: drafted, seconds: Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        var accepted = 0
        var next = -1
        while accepted < drafted {
            let row = UnsafeBufferPointer(rebasing: rows[(accepted * vocab)..<((accepted + 1) * vocab)])
            onRow(row)
            _ = scratch.initialize(from: row)
            let p = sampler.distribution(scratch, history: UnsafeBufferPointer(start: history, count: count + accepted))
            let draft = history[count + accepted]
            if sampler.parameters.temperature == 0 {
                guard p.token(0) == draft else { next = p.token(0); break }
            } else {
                let q = drafter.drawsFromDistribution ? drafter.draftProbability(of: draft, at: accepted) : 1
                let pd = p.probability(of: draft)
                // Accept with probability min(1, p/q).
                guard q > 0, Float(rng.nextUnit()) * q < pd else {
                    next = drawResidual(p, draft: draft, index: accepted)
                    break
                }
            }
            accepted += 1
        }
        if accepted == drafted {
            let row = UnsafeBufferPointer(rebasing: rows[(drafted * vocab)..<((drafted + 1) * vocab)])
            onRow(row)
            _ = scratch.initialize(from: row)
            next = sampler.sample(scratch, history: UnsafeBufferPointer(start: history, count: count + drafted))
        }
        try Self.rewind(model, to: base + 1 + accepted, history: history, sequence: sequence)
        stats.verifyPasses += 1
        stats.drafted += drafted
        stats.accepted += accepted
        stats.passesByDraftCount[drafted] += 1
        lengths.record(drafted: drafted, accepted: accepted)
        return (accepted, next)
    }

    /// A draw from max(0, p − q), renormalised: what the target says instead of a rejected draft.
    private func drawResidual(_ p: TokenDistribution, draft: Int, index: Int) -> Int {
        let r = residual!
        let fromDistribution = drafter.drawsFromDistribution
        var total: Float = 0
        for i in 0..<p.count {
            let id = p.token(i)
            let q: Float = fromDistribution ? drafter.draftProbability(of: id, at: index) : (id == draft ? 1 : 0)
            let w = max(0, p.weights[i] / p.total - q)
            r[i] = w
            total += w
        }
        // p ≤ q everywhere happens only by rounding (then p = q and the draft would have been accepted).
        guard total > 0 else { return p.token(at: Float(rng.nextUnit()) * p.total) }
        let u = Float(rng.nextUnit()) * total
        var acc: Float = 0
        for i in 0..<p.count {
            acc += r[i]
            if u < acc { return p.token(i) }
        }
        for i in stride(from: p.count - 1, through: 0, by: -1) where r[i] > 0 { return p.token(i) }
        return p.token(0)
    }

    /// Rolls the cache back to `n` positions (`history[0..<n]`). A sliding-window ring that cannot rewind that
    /// far has reset the cache: then the tokens are fed again. (Not expected: a pass is at most `maxBatch`
    /// tokens and the ring keeps window + maxBatch positions.)
    static func rewind(_ model: Transformer, to n: Int, history: UnsafePointer<Int>, sequence: Int = 0) throws {
        if model.truncate(to: n, sequence: sequence) || n == 0 { return }
        _ = try model.forward(UnsafeBufferPointer(start: history, count: n), sequence: sequence)
    }
}
