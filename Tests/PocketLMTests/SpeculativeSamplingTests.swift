import Foundation
import Testing
import PocketLM

/// With sampling, speculative decoding must keep plain sampling's distribution (the rejection rule). On a tiny
/// random model: the exact probability of every 3-token continuation (from the sampler's own distributions) against
/// the frequencies of many seeded speculative generations, by a chi-square test; drafts that are point masses
/// (what prompt lookup proposes), drafts drawn from another distribution, and a draft model.
@Suite("Speculative sampling keeps the distribution", .serialized)
struct SpeculativeSamplingTests {
    static let prompt = [17, 5, 9, 101, 5, 9, 44, 5]
    static let sampling = SamplingParameters(temperature: 1, topK: 6, topP: 1, minP: 0, repeatPenalty: 1.3, repeatLastN: 64)
    static let samples = 2400

    static func model(_ name: String = "tiny-q8_0") throws -> LanguageModel {
        try LanguageModel(path: try TestPaths.fixture("\(name).gguf"), options: LoadOptions(threads: 1, contextLength: 64))
    }

    /// p(x1, x2, x3 | prompt) for every continuation with nonzero probability.
    static func exact(_ lm: LanguageModel) throws -> [[Int]: Double] {
        let t = lm.transformer, vocab = t.config.vocabSize
        let sampler = try Sampler(parameters: sampling, vocabularySize: vocab)
        let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: vocab)
        defer { scratch.deallocate() }
        func next(_ context: [Int]) throws -> [(Int, Double)] {
            t.reset()
            let logits = try context.withUnsafeBufferPointer { try t.forward($0) }
            _ = scratch.initialize(from: logits)
            let d = context.withUnsafeBufferPointer { sampler.distribution(scratch, history: $0) }
            return (0..<d.count).map { (d.token($0), Double(d.weights[$0]) / Double(d.total)) }
        }
        var out: [[Int]: Double] = [:]
        for (a, pa) in try next(prompt) {
            for (b, pb) in try next(prompt + [a]) {
                for (c, pc) in try next(prompt + [a, b]) { out[[a, b, c], default: 0] += pa * pb * pc }
            }
        }
        return out
    }

    /// Chi-square of the observed continuations against `expected`, cells with fewer than 5 expected lumped
    /// together, and the statistic's 1-in-10⁴ critical value (Wilson–Hilferty).
    static func chiSquare(_ counts: [[Int]: Int], _ expected: [[Int]: Double], n: Int) -> (Double, Double) {
        var stat = 0.0, cells = 0, lumpedExpected = 0.0, lumpedObserved = 0
        for (key, p) in expected {
            let e = p * Double(n), o = counts[key] ?? 0
            if e < 5 { lumpedExpected += e; lumpedObserved += o; continue }
            stat += (Double(o) - e) * (Double(o) - e) / e
            cells += 1
        }
        // Continuations of zero probability land here too and make the statistic explode, as they should.
        let unexpected = counts.filter { expected[$0.key] == nil }.reduce(0) { $0 + $1.value }
        lumpedObserved += unexpected
        if lumpedExpected > 0 {
            stat += (Double(lumpedObserved) - lumpedExpected) * (Double(lumpedObserved) - lumpedExpected) / lumpedExpected
            cells += 1
        } else if unexpected > 0 {
            stat = .infinity
        }
        let df = Double(cells - 1), z = 3.719
        let critical = df * pow(1 - 2 / (9 * df) + z * (2 / (9 * df)).squareRoot(), 3)
        return (stat, critical)
    }

    /// `samples` generations of 3 tokens, seeds 0…; returns the counts and the pooled speculation figures.
    static func sample(_ lm: LanguageModel, decoder: SpeculativeDecoder?) throws -> ([[Int]: Int], SpeculationStats) {
        let generator = Generator(model: lm.transformer, tokenizer: lm.tokenizer, speculation: decoder)
        var counts: [[Int]: Int] = [:]
        var stats = SpeculationStats()
        for seed in 0..<samples {
            var p = sampling
            p.seed = UInt64(seed)
            let r = try generator.generate(prompt: prompt, options: GenerationOptions(maxTokens: 3, sampling: p, stopTokens: []))
            counts[r.tokens, default: 0] += 1
            if let s = r.speculation {
                stats.drafted += s.drafted
                stats.accepted += s.accepted
                stats.verifyPasses += s.verifyPasses
            }
        }
        return (counts, stats)
    }

    @Test("plain sampling passes the test (the harness itself)")
    func plain() throws {
        let lm = try Self.model()
        let expected = try Self.exact(lm)
        let (counts, _) = try Self.sample(lm, decoder: nil)
        let (stat, critical) = Self.chiSquare(counts, expected, n: Self.samples)
        print("[speculative sampling] plain: chi2 \(stat) (critical \(critical))")
        #expect(stat < critical)
    }

    @Test("point-mass drafts (the target's own argmax guesses): accept with p(d), else draw from p without d")
    func pointMass() throws {
        let lm = try Self.model()
        let expected = try Self.exact(lm)
        let drafter = CopyDrafter(model: try Self.model().transformer, temperature: nil)
        let (counts, stats) = try Self.sample(lm, decoder: SpeculativeDecoder(drafter: drafter, maxDraft: 2))
        let (stat, critical) = Self.chiSquare(counts, expected, n: Self.samples)
        print("[speculative sampling] point mass: chi2 \(stat) (critical \(critical)), accepted \(stats.accepted)/\(stats.drafted)")
        #expect(stats.accepted > stats.drafted / 5 && stats.accepted < stats.drafted * 4 / 5)
        #expect(stat < critical)
    }

    @Test("drafts drawn from a flatter distribution: accept with min(1, p/q), else draw from max(0, p − q)")
    func distributionDrafts() throws {
        let lm = try Self.model()
        let expected = try Self.exact(lm)
        let drafter = CopyDrafter(model: try Self.model().transformer, temperature: 2.5)
        let (counts, stats) = try Self.sample(lm, decoder: SpeculativeDecoder(drafter: drafter, maxDraft: 2))
        let (stat, critical) = Self.chiSquare(counts, expected, n: Self.samples)
        print("[speculative sampling] q at T=2.5: chi2 \(stat) (critical \(critical)), accepted \(stats.accepted)/\(stats.drafted)")
        #expect(stats.accepted > stats.drafted / 5 && stats.accepted < stats.drafted * 4 / 5)
        #expect(stat < critical)
    }

    @Test("a draft model (tiny-q4_0 for tiny-q8_0) drawing from its own sampling distribution")
    func draftModel() throws {
        let lm = try Self.model()
        let expected = try Self.exact(lm)
        let drafter = DraftModelDrafter(model: try Self.model("tiny-q4_0").transformer)
        try drafter.check(target: lm.transformer)
        let (counts, stats) = try Self.sample(lm, decoder: SpeculativeDecoder(drafter: drafter, maxDraft: 2))
        let (stat, critical) = Self.chiSquare(counts, expected, n: Self.samples)
        print("[speculative sampling] draft model: chi2 \(stat) (critical \(critical)), accepted \(stats.accepted)/\(stats.drafted)")
        #expect(stats.drafted >= Self.samples && stats.accepted > 0 && stats.accepted < stats.drafted)
        #expect(stat < critical)
    }
}

/// A test drafter over a second copy of the target: greedy guesses (point masses) or draws from a softmax at
/// another temperature over the top 16 (a distribution q unlike the target's p).
final class CopyDrafter: SpeculativeDrafter {
    let model: Transformer
    let temperature: Float?
    var q: [[Float]] = []
    var rng = SplitMix64(seed: 0)

    init(model: Transformer, temperature: Float?) {
        self.model = model
        self.temperature = temperature
    }

    func begin(sampling: SamplingParameters) throws { rng = SplitMix64(seed: sampling.seed &+ 77) }

    var drawsFromDistribution: Bool { temperature != nil }

    func draftProbability(of token: Int, at index: Int) -> Float { q[index][token] }

    func propose(after history: UnsafeBufferPointer<Int>, limit: Int, into drafts: UnsafeMutablePointer<Int>) throws -> Int {
        model.reset()
        var logits = Array(try model.forward(history))
        q = []
        for i in 0..<limit {
            let token: Int
            if let temperature {
                let top = logits.withUnsafeBufferPointer { topK($0, 16) }
                let m = logits[top[0]]
                var row = [Float](repeating: 0, count: logits.count)
                var total: Float = 0
                for t in top { row[t] = expf((logits[t] - m) / temperature); total += row[t] }
                for t in top { row[t] /= total }
                q.append(row)
                let r = Float(rng.nextUnit())
                var acc: Float = 0, pick = top[top.count - 1]
                for t in top { acc += row[t]; if r < acc { pick = t; break } }
                token = pick
            } else {
                token = logits.withUnsafeBufferPointer { Sampler.argmax($0) }
            }
            drafts[i] = token
            if i + 1 < limit { logits = Array(try model.decode(token)) }
        }
        return limit
    }
}
