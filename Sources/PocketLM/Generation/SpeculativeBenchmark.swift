import Foundation

/// Speculative decoding against plain decoding in one run: for each prompt, greedy generation plain and with
/// speculation in alternating rounds (each round's order flipped, so drift on a shared machine hits both alike),
/// checking the two outputs are the same token for token; and what a verify pass costs against a decode step.
public struct SpeculativeBenchmark {
    public struct PromptFigures: Codable, Sendable {
        public let name: String
        public let promptTokens: Int
        public let generatedTokens: Int
        /// Decode tok/s (tokens after the first over their time), per round.
        public let plain: Benchmark.Figures
        public let speculative: Benchmark.Figures
        /// Median speculative ÷ median plain.
        public let speedup: Double
        public let acceptanceRate: Double
        public let tokensPerPass: Double
        public let meanDraftLength: Double
        /// Whether every speculative round produced exactly the plain tokens.
        public let identical: Bool
    }

    public struct VerifyCost: Codable, Sendable {
        /// Drafted tokens in the pass (the pass runs drafts + 1 tokens).
        public let drafts: Int
        public let milliseconds: Double
        /// The pass's time ÷ one decode step's.
        public let relativeToDecode: Double
    }

    public struct Result: Codable, Sendable {
        public let model: String
        public let threads: Int
        public let method: String
        public let rounds: Int
        public let decodeStepMs: Double
        public let verifyCosts: [VerifyCost]
        public let prompts: [PromptFigures]
        /// Memory read bandwidth of the same threads, measured after the runs, and plain decode's bound from it
        /// (bandwidth ÷ weight bytes per token): speculation is how decoding passes that bound.
        public let memoryReadBytesPerSecond: Double
        public let decodeBoundTokensPerSecond: Double
        public let kernelISA: String
    }

    public let generator: Generator
    public let decoder: SpeculativeDecoder
    public let name: String

    public init(generator: Generator, decoder: SpeculativeDecoder, name: String) {
        self.generator = generator
        self.decoder = decoder
        self.name = name
    }

    /// Runs every prompt for `rounds` alternating rounds of `genTokens` greedy tokens each (stopping early at a
    /// stop token, the same for both as the outputs are the same), then times verify passes of `draftCounts` drafts.
    public func run(prompts: [(name: String, tokens: [Int])], genTokens: Int, rounds: Int, method: String,
                    draftCounts: [Int], progress: (String) -> Void = { _ in }) throws -> Result {
        guard rounds >= 1, genTokens >= 1 else {
            throw GenerationError.invalidParameter("bench", "token counts and rounds must be at least 1")
        }
        let model = generator.model
        let options = GenerationOptions(maxTokens: genTokens, sampling: .greedy)
        var figures: [PromptFigures] = []
        for prompt in prompts {
            var plain: [Double] = [], spec: [Double] = []
            var identical = true
            var stats = SpeculationStats()
            var reference: [Int]?
            for round in 0..<rounds {
                for speculate in round % 2 == 0 ? [false, true] : [true, false] {
                    generator.speculation = speculate ? decoder : nil
                    let r = try generator.generate(prompt: prompt.tokens, reusingCachedPrefix: 0, options: options) { _ in true }
                    if let ref = reference { identical = identical && ref == r.tokens } else { reference = r.tokens }
                    if speculate {
                        spec.append(r.generationTokensPerSecond)
                        if let s = r.speculation { stats = s }
                    } else {
                        plain.append(r.generationTokensPerSecond)
                    }
                }
                progress(String(format: "%@ round %d/%d: plain %.1f tok/s, speculative %.1f tok/s", prompt.name, round + 1,
                                rounds, plain.last!, spec.last!))
            }
            generator.speculation = nil
            let p = Benchmark.Figures(plain), s = Benchmark.Figures(spec)
            figures.append(PromptFigures(name: prompt.name, promptTokens: prompt.tokens.count,
                                         generatedTokens: reference?.count ?? 0, plain: p, speculative: s,
                                         speedup: p.median > 0 ? s.median / p.median : 0,
                                         acceptanceRate: stats.acceptanceRate, tokensPerPass: stats.tokensPerPass,
                                         meanDraftLength: stats.meanDraftLength, identical: identical))
        }
        let (step, costs) = try verifyCosts(prompt: prompts.first?.tokens ?? [1], draftCounts: draftCounts)
        let bandwidth = MemoryBandwidth.measure(pool: model.pool)
        return Result(model: name, threads: model.pool.threadCount, method: method, rounds: rounds,
                      decodeStepMs: step * 1000, verifyCosts: costs, prompts: figures,
                      memoryReadBytesPerSecond: bandwidth,
                      decodeBoundTokensPerSecond: bandwidth / Double(model.weightBytesPerToken),
                      kernelISA: KernelISA.description)
    }

    /// Median time of a decode step and of passes of k drafts + 1 tokens (all positions' logits, as a verify
    /// pass computes them), each rolled back so every pass runs at the same position after `prompt`.
    public func verifyCosts(prompt: [Int], draftCounts: [Int], repetitions: Int = 15) throws -> (Double, [VerifyCost]) {
        let model = generator.model
        model.reset()
        _ = try prompt.withUnsafeBufferPointer { try model.forward($0) }
        let base = model.position
        let tokens = Array(prompt.suffix(max(1, (draftCounts.max() ?? 0) + 1)))
        func time(_ n: Int) throws -> Double {
            var samples: [Double] = []
            for _ in 0..<repetitions {
                let t0 = DispatchTime.now().uptimeNanoseconds
                _ = try tokens.withUnsafeBufferPointer { p in
                    n == 1 ? try model.decode(p[0]) : try model.decodeRun(UnsafeBufferPointer(rebasing: p[0..<n]))
                }
                samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                model.truncate(to: base)
            }
            return Benchmark.Figures(samples).median
        }
        _ = try time(1)   // warm-up
        let step = try time(1)
        let costs = try draftCounts.filter { $0 + 1 <= min(model.maxBatch, tokens.count) && model.position + $0 + 1 <= model.contextLength }.map { k in
            let t = try time(k + 1)
            return VerifyCost(drafts: k, milliseconds: t * 1000, relativeToDecode: t / step)
        }
        model.reset()
        return (step, costs)
    }
}
