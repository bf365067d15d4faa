/// Drafts with a smaller model of the same vocabulary: it runs ahead of the target, one token at a time, and
/// keeps its own KV cache in step with the target's history (what both agree on is never fed twice).
///
/// Greedy targets get the draft model's argmax; sampling targets get draws from the draft model's own sampling
/// distribution (same parameters), which the rejection rule needs as q.
public final class DraftModelDrafter: SpeculativeDrafter {
    public let model: Transformer
    /// The tokens the draft model's cache holds, in order.
    private var fed: [Int]
    private var fedCount = 0
    private var sampler: Sampler?
    private let scratch: UnsafeMutableBufferPointer<Float>
    /// q of each draft of the last proposal: `maxDraft` rows of `vocab` probabilities (only while sampling).
    private var probabilities: UnsafeMutablePointer<Float>?
    private var probabilityRows = 0
    /// The ids each row set, so clearing a row costs its support, not the vocabulary.
    private var rowSupport: [[Int32]] = []
    private var sampling = SamplingParameters.greedy
    private var rng = SplitMix64(seed: 0)

    public init(model: Transformer) {
        self.model = model
        fed = [Int](repeating: 0, count: model.contextLength)
        scratch = .allocate(capacity: model.config.vocabSize)
    }

    deinit {
        scratch.deallocate()
        probabilities?.deallocate()
    }

    /// Checks that the draft model's token ids mean the target's tokens.
    public func check(target: Transformer) throws {
        guard target.config.vocabSize == model.config.vocabSize else {
            throw SpeculationError.vocabularyMismatch(target: target.config.vocabSize, draft: model.config.vocabSize)
        }
    }

    public func begin(sampling: SamplingParameters) throws {
        self.sampling = sampling
        // Only the sampler's distribution is used; the draws come from an own stream, so they do not repeat
        // the target sampler's.
        sampler = try Sampler(parameters: sampling, vocabularySize: model.config.vocabSize)
        rng = SplitMix64(seed: sampling.seed ^ 0xD2AF_7D2A_F7D2_AF7D)
        fedCount = 0
        model.reset()
    }

    public var drawsFromDistribution: Bool { sampling.temperature > 0 }

    public func draftProbability(of token: Int, at index: Int) -> Float {
        guard let probabilities, index < probabilityRows, token >= 0, token < model.config.vocabSize else { return 0 }
        return probabilities[index * model.config.vocabSize + token]
    }

    public func propose(after history: UnsafeBufferPointer<Int>, limit: Int, into drafts: UnsafeMutablePointer<Int>) throws -> Int {
        let vocab = model.config.vocabSize
        // Room in the draft's own context for the history and all but the last draft.
        let n = min(limit, model.generationRoom(after: history.count))
        guard n > 0, let sampler else { return 0 }
        // Keep what the cache holds in common with the history; feed the rest (at least the last token).
        var common = 0
        let held = min(fedCount, model.position)
        while common < held && common < history.count - 1 && fed[common] == history[common] { common += 1 }
        if !model.truncate(to: common) { common = 0 }
        var logits = try model.forward(UnsafeBufferPointer(rebasing: history[common...]))
        for i in common..<history.count { fed[i] = history[i] }
        fedCount = history.count
        if drawsFromDistribution { prepareRows(n, vocab: vocab) }
        for i in 0..<n {
            _ = scratch.initialize(from: logits)
            let token: Int
            if drawsFromDistribution {
                let count = fedCount
                let q = fed.withUnsafeBufferPointer { sampler.distribution(scratch, history: UnsafeBufferPointer(rebasing: $0[0..<count])) }
                let row = probabilities! + i * vocab
                for j in 0..<q.count {
                    row[q.token(j)] = q.weights[j] / q.total
                    rowSupport[i].append(q.ids[j])
                }
                token = q.token(at: Float(rng.nextUnit()) * q.total)
            } else {
                token = Sampler.argmax(UnsafeBufferPointer(scratch))
            }
            drafts[i] = token
            if i + 1 < n {
                logits = try model.decode(token)
                fed[fedCount] = token
                fedCount += 1
            }
        }
        return n
    }

    /// Zeroes the q rows of the previous proposal and makes room for `n`.
    private func prepareRows(_ n: Int, vocab: Int) {
        if probabilityRows < n {
            probabilities?.deallocate()
            probabilities = .allocate(capacity: n * vocab)
            probabilities!.initialize(repeating: 0, count: n * vocab)
            probabilityRows = n
            rowSupport = Array(repeating: [], count: n)
            for i in 0..<n { rowSupport[i].reserveCapacity(vocab) }
            return
        }
        for i in 0..<rowSupport.count {
            for id in rowSupport[i] { probabilities![i * vocab + Int(id)] = 0 }
            rowSupport[i].removeAll(keepingCapacity: true)
        }
    }
}
