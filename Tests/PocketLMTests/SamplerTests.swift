import Foundation
import Testing
import PocketLM

@Suite("Sampler")
struct SamplerTests {
    static func logits(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in Float(rng.nextUnit() * 10 - 5) }
    }

    static func draw(_ p: SamplingParameters, _ logits: [Float], history: [Int] = [], count: Int = 1) throws -> [Int] {
        let s = try Sampler(parameters: p, vocabularySize: logits.count)
        var out: [Int] = []
        for _ in 0..<count {
            var l = logits
            let t = l.withUnsafeMutableBufferPointer { lp in history.withUnsafeBufferPointer { s.sample(lp, history: $0) } }
            out.append(t)
        }
        return out
    }

    @Test("temperature 0 and top-k 1 are argmax")
    func greedy() throws {
        let l = Self.logits(1000, seed: 3)
        let best = l.indices.max { l[$0] < l[$1] }!
        #expect(try Self.draw(.greedy, l, count: 3) == [best, best, best])
        #expect(try Self.draw(SamplingParameters(temperature: 1, topK: 1, seed: 9), l, count: 5) == Array(repeating: best, count: 5))
    }

    @Test("same seed, same draws; other seed, other draws")
    func seeds() throws {
        let l = Self.logits(500, seed: 4).map { $0 / 5 }
        let p = SamplingParameters(temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1234)
        var q = p
        q.seed = 99
        let a = try Self.draw(p, l, count: 50), b = try Self.draw(p, l, count: 50), c = try Self.draw(q, l, count: 50)
        #expect(a == b)
        #expect(a != c)
    }

    @Test("top-k, top-p and min-p keep only the allowed candidates")
    func cuts() throws {
        let l = Self.logits(300, seed: 5)
        let order = l.indices.sorted { l[$0] > l[$1] }
        let topK = Set(try Self.draw(SamplingParameters(temperature: 2, topK: 5, topP: 1, minP: 0, seed: 1), l, count: 400))
        #expect(topK.isSubset(of: Set(order.prefix(5))))
        #expect(topK.count >= 3)
        // min-p 0.5: only tokens with probability ≥ half the best one's, i.e. logit ≥ best − ln 2.
        let minP = Set(try Self.draw(SamplingParameters(temperature: 1, topK: 0, topP: 1, minP: 0.5, seed: 2), l, count: 300))
        #expect(minP.allSatisfy { l[$0] >= l[order[0]] - 0.6932 })
        // top-p: the smallest prefix of the sorted distribution whose mass reaches p.
        let maxL = l[order[0]]
        let probs = order.map { exp(Double(l[$0] - maxL)) }
        let total = probs.reduce(0, +)
        var acc = 0.0, keep = 0
        for p in probs { acc += p / total; keep += 1; if acc >= 0.6 { break } }
        let topP = Set(try Self.draw(SamplingParameters(temperature: 1, topK: 0, topP: 0.6, minP: 0, seed: 3), l, count: 400))
        #expect(topP.isSubset(of: Set(order.prefix(keep))))
    }

    @Test("repetition penalty pushes repeated tokens down")
    func penalty() throws {
        var l = [Float](repeating: 0, count: 10)
        l[3] = 2.0
        l[7] = 1.5
        #expect(try Self.draw(.greedy, l) == [3])
        var p = SamplingParameters.greedy
        p.repeatPenalty = 1.5
        #expect(try Self.draw(p, l, history: [3]) == [7])
    }

    @Test("invalid parameters are errors naming the option")
    func invalid() {
        #expect(throws: GenerationError.self) { try Sampler(parameters: SamplingParameters(topP: 0), vocabularySize: 4) }
        #expect(throws: GenerationError.self) { try Sampler(parameters: SamplingParameters(temperature: -1), vocabularySize: 4) }
        #expect(throws: GenerationError.self) { try Sampler(parameters: SamplingParameters(minP: 2), vocabularySize: 4) }
    }
}
