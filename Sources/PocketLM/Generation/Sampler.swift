import CKernels

/// Picks the next token from logits: repetition penalty, then greedy (temperature 0) or top-k → top-p → min-p →
/// temperature → a draw, in llama.cpp's order. Buffers are allocated once; sampling a token allocates nothing.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 means greedy (argmax).
    public var temperature: Float = 0.8
    /// 0 disables top-k.
    public var topK: Int = 40
    /// 1 disables top-p.
    public var topP: Float = 0.95
    /// 0 disables min-p.
    public var minP: Float = 0.05
    /// 1 disables the penalty.
    public var repeatPenalty: Float = 1.0
    /// How many recent tokens the penalty looks at.
    public var repeatLastN: Int = 64
    public var seed: UInt64 = 0

    public init(temperature: Float = 0.8, topK: Int = 40, topP: Float = 0.95, minP: Float = 0.05,
                repeatPenalty: Float = 1.0, repeatLastN: Int = 64, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repeatPenalty = repeatPenalty
        self.repeatLastN = repeatLastN
        self.seed = seed
    }

    public static let greedy = SamplingParameters(temperature: 0)

    /// Rejects values that have no meaning, naming the option.
    public func validate() throws(GenerationError) {
        guard temperature >= 0, temperature.isFinite else { throw .invalidParameter("temperature", "must be ≥ 0, found \(temperature)") }
        guard topK >= 0 else { throw .invalidParameter("top-k", "must be ≥ 0, found \(topK)") }
        guard topP > 0, topP <= 1 else { throw .invalidParameter("top-p", "must be in (0, 1], found \(topP)") }
        guard minP >= 0, minP <= 1 else { throw .invalidParameter("min-p", "must be in [0, 1], found \(minP)") }
        guard repeatPenalty > 0, repeatPenalty.isFinite else {
            throw .invalidParameter("repeat-penalty", "must be > 0, found \(repeatPenalty)")
        }
        guard repeatLastN >= 0 else { throw .invalidParameter("repeat-last-n", "must be ≥ 0, found \(repeatLastN)") }
    }
}

public final class Sampler {
    public let parameters: SamplingParameters
    public let vocabularySize: Int
    private var rng: SplitMix64
    private let ids: UnsafeMutablePointer<Int32>
    private let values: UnsafeMutablePointer<Float>
    private let seen: UnsafeMutablePointer<Bool>

    public init(parameters: SamplingParameters, vocabularySize: Int) throws(GenerationError) {
        try parameters.validate()
        self.parameters = parameters
        self.vocabularySize = vocabularySize
        rng = SplitMix64(seed: parameters.seed)
        ids = .allocate(capacity: vocabularySize)
        values = .allocate(capacity: vocabularySize)
        seen = .allocate(capacity: vocabularySize)
        seen.initialize(repeating: false, count: vocabularySize)
    }

    deinit {
        ids.deallocate()
        values.deallocate()
        seen.deallocate()
    }

    /// The next token. `logits` is modified in place by the repetition penalty; `history` is every token so far.
    public func sample(_ logits: UnsafeMutableBufferPointer<Float>, history: UnsafeBufferPointer<Int>) -> Int {
        let d = distribution(logits, history: history)
        if parameters.temperature == 0 { return d.token(0) }
        return d.token(at: Float(rng.nextUnit()) * d.total)
    }

    /// The distribution `sample` draws from: the kept candidates with unnormalised weights (a single candidate
    /// of weight 1 when greedy). Speculative decoding needs the probabilities themselves (the rejection rule).
    /// `logits` is modified in place by the repetition penalty. Valid until the next call on this sampler.
    public func distribution(_ logits: UnsafeMutableBufferPointer<Float>,
                             history: UnsafeBufferPointer<Int>) -> TokenDistribution {
        let p = parameters
        let n = min(logits.count, vocabularySize)
        if p.repeatPenalty != 1, p.repeatLastN > 0 {
            let recent = history.suffix(p.repeatLastN)
            for t in recent where t >= 0 && t < n && !seen[t] {
                seen[t] = true
                // llama.cpp's rule: shrink positive logits, push negative ones further down.
                logits[t] = logits[t] > 0 ? logits[t] / p.repeatPenalty : logits[t] * p.repeatPenalty
            }
            for t in recent where t >= 0 && t < n { seen[t] = false }
        }
        if p.temperature == 0 {
            ids[0] = Int32(Sampler.argmax(UnsafeBufferPointer(rebasing: logits[0..<n])))
            values[0] = 1
            return TokenDistribution(ids: ids, weights: values, count: 1, total: 1)
        }

        // Top-k by a bounded min-heap, then sorted best first.
        let k = p.topK > 0 ? min(p.topK, n) : n
        var count = 0
        for i in 0..<n {
            let v = logits[i]
            if count < k {
                values[count] = v
                ids[count] = Int32(i)
                count += 1
                siftUp(count - 1)
            } else if v > values[0] {
                values[0] = v
                ids[0] = Int32(i)
                siftDown(0, count)
            }
        }
        // Heap sort: repeatedly move the smallest to the end, leaving the array in descending order.
        var end = count
        while end > 1 {
            end -= 1
            swapAt(0, end)
            siftDown(0, end)
        }

        // Softmax at temperature 1 for the top-p and min-p cuts, as llama.cpp does.
        let maxLogit = values[0]
        var sum: Float = 0
        for i in 0..<count { sum += expf(values[i] - maxLogit) }
        var kept = count
        if p.topP < 1 {
            var cumulative: Float = 0
            for i in 0..<count {
                cumulative += expf(values[i] - maxLogit) / sum
                if cumulative >= p.topP { kept = i + 1; break }
            }
        }
        if p.minP > 0 {
            // Keep tokens whose probability is at least minP × the best one's.
            let threshold = maxLogit + logf(p.minP)
            var m = 1
            while m < kept && values[m] >= threshold { m += 1 }
            kept = m
        }

        // Temperature: the weights the draw uses.
        var total: Float = 0
        for i in 0..<kept {
            let e = expf((values[i] - maxLogit) / p.temperature)
            values[i] = e
            total += e
        }
        return TokenDistribution(ids: ids, weights: values, count: kept, total: total)
    }

    /// The index of the largest logit (the first of equal ones; NaNs never win; 0 if none is above −∞). A vector
    /// kernel: Gemma 3's 262,144 logits are 1 MiB that greedy decoding scans on one thread every token.
    public static func argmax(_ v: UnsafeBufferPointer<Float>) -> Int {
        guard let base = v.baseAddress, v.count > 0 else { return 0 }
        return Int(pl_argmax(base, Int64(v.count)))
    }

    // MARK: min-heap on (values, ids)

    @inline(__always) private func swapAt(_ a: Int, _ b: Int) {
        let v = values[a]; values[a] = values[b]; values[b] = v
        let i = ids[a]; ids[a] = ids[b]; ids[b] = i
    }

    private func siftUp(_ start: Int) {
        var c = start
        while c > 0 {
            let parent = (c - 1) / 2
            guard values[c] < values[parent] else { return }
            swapAt(c, parent)
            c = parent
        }
    }

    private func siftDown(_ start: Int, _ count: Int) {
        var p = start
        while true {
            let l = 2 * p + 1, r = l + 1
            var m = p
            if l < count && values[l] < values[m] { m = l }
            if r < count && values[r] < values[m] { m = r }
            if m == p { return }
            swapAt(p, m)
            p = m
        }
    }
}

/// Candidate tokens with unnormalised weights, best first (a view of a sampler's buffers: valid until its next
/// call). Tokens not listed have probability 0.
public struct TokenDistribution {
    public let ids: UnsafeMutablePointer<Int32>
    public let weights: UnsafeMutablePointer<Float>
    public let count: Int
    /// Sum of the weights.
    public let total: Float

    public func token(_ i: Int) -> Int { Int(ids[i]) }

    /// The probability of `token` (0 when it is not a candidate).
    public func probability(of token: Int) -> Float {
        for i in 0..<count where Int(ids[i]) == token { return weights[i] / total }
        return 0
    }

    /// The token where the cumulative weight passes `r` (r in [0, total)): a draw when r is uniform.
    public func token(at r: Float) -> Int {
        var acc: Float = 0
        for i in 0..<count {
            acc += weights[i]
            if r < acc { return Int(ids[i]) }
        }
        return Int(ids[count - 1])
    }
}

/// A small, fast, seedable generator: the same seed gives the same text on every machine.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
