import Foundation

/// llama-bench-style measurement: prefill of a prompt as one batch, and greedy decoding token by token,
/// each repeated after a warm-up and summarised as median / min / max.
public struct Benchmark {
    public struct Figures: Codable, Sendable {
        public let median: Double
        public let min: Double
        public let max: Double
        public let samples: [Double]

        init(_ samples: [Double]) {
            let sorted = samples.sorted()
            self.samples = samples
            self.min = sorted.first ?? 0
            self.max = sorted.last ?? 0
            let n = sorted.count
            self.median = n == 0 ? 0 : (n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2)
        }
    }

    public struct Result: Codable, Sendable {
        public let model: String
        public let threads: Int
        public let promptTokens: Int
        public let genTokens: Int
        public let repetitions: Int
        public let warmupRuns: Int
        /// Prefill tokens per second.
        public let prefill: Figures
        /// Decode tokens per second.
        public let decode: Figures
        public let loadMs: Double
        /// Whether that load mapped its repacked matrices from the packed-weight cache (false: it repacked them, as
        /// a file's first load does, or the CPU does not repack).
        public let packedFromCache: Bool
        public let peakRSSBytes: Int
        public let blasCore: String
        /// The kernels' ISA tier (KernelISA: avx512, avx2, neon, portable) and the CPU features it used.
        public let isa: String
        public let isaFeatures: [String]
        public let layerSchedule: String
        /// Weight bytes a decoded token reads (a packed model's paged FFN counted as if resident).
        public let weightBytesPerToken: Int
        /// Memory read bandwidth of the same threads, measured right after the runs (bytes per second).
        public let memoryReadBytesPerSecond: Double
        /// Decode's bound: bandwidth ÷ bytes per token; and the median decode speed as a share of it.
        public let decodeBoundTokensPerSecond: Double
        public let decodeShareOfBound: Double
        /// F32 multiply-adds per second of the same threads (`ComputePeak`), the bound of a prompt's attention over a
        /// deep F16 KV cache; and bf16 dot products' (nil on a CPU without them), the BF16 cache's.
        public let multiplyAddsPerSecond: Double
        public let bf16MultiplyAddsPerSecond: Double?
    }

    public let transformer: Transformer
    /// What the report calls the model (its file path, or a config's name).
    public let name: String
    public let loadSeconds: Double
    public let packedFromCache: Bool

    public init(transformer: Transformer, name: String, loadSeconds: Double) {
        self.transformer = transformer
        self.name = name
        self.loadSeconds = loadSeconds
        packedFromCache = (transformer.store as? MappedWeightStore)?.packedFromCache ?? false
    }

    public init(model: LanguageModel) {
        self.init(transformer: model.transformer, name: model.file.path, loadSeconds: model.loadSeconds)
    }

    /// The prompt: deterministic pseudo-random ids (as llama-bench uses random tokens), never special tokens.
    public static func promptTokens(count: Int, vocabulary: Int, seed: UInt64 = 1) -> [Int] {
        var rng = SplitMix64(seed: seed)
        let low = min(1000, vocabulary / 2)
        return (0..<count).map { _ in low + Int(rng.next() % UInt64(vocabulary - low)) }
    }

    /// One prefill + decode run: (prefill tok/s, decode tok/s).
    public func once(prompt: [Int], genTokens: Int) throws -> (Double, Double) {
        let t = transformer
        t.reset()
        let t0 = DispatchTime.now().uptimeNanoseconds
        var logits = try prompt.withUnsafeBufferPointer { try t.forward($0) }
        let t1 = DispatchTime.now().uptimeNanoseconds
        var next = Sampler.argmax(logits)
        let t2 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<genTokens {
            logits = try t.decode(next)
            next = Sampler.argmax(logits)
        }
        let t3 = DispatchTime.now().uptimeNanoseconds
        return (Double(prompt.count) / (Double(t1 - t0) / 1e9), Double(genTokens) / (Double(t3 - t2) / 1e9))
    }

    /// Warms up until two consecutive runs agree within 10% on decode speed (at most `maxWarmup` runs), then
    /// measures `repetitions` runs.
    public func run(promptTokens n: Int, genTokens: Int, repetitions: Int, maxWarmup: Int = 6,
                    progress: (String) -> Void = { _ in }) throws -> Result {
        let t = transformer
        guard n >= 1, genTokens >= 1, repetitions >= 1 else {
            throw GenerationError.invalidParameter("bench", "token counts and repetitions must be at least 1")
        }
        guard n + genTokens <= t.contextLength else {
            throw GenerationError.maxTokensPastContext(prompt: n, maxTokens: genTokens, context: t.contextLength)
        }
        let prompt = Self.promptTokens(count: n, vocabulary: t.config.vocabSize)
        var previous: Double?
        var warmups = 0
        while warmups < maxWarmup {
            let (p, d) = try once(prompt: prompt, genTokens: genTokens)
            warmups += 1
            progress(String(format: "warm-up %d: prefill %.1f tok/s, decode %.1f tok/s", warmups, p, d))
            if let prev = previous, abs(d - prev) <= 0.1 * max(d, prev) { break }
            previous = d
        }
        var prefill: [Double] = [], decode: [Double] = []
        for r in 0..<repetitions {
            let (p, d) = try once(prompt: prompt, genTokens: genTokens)
            prefill.append(p)
            decode.append(d)
            progress(String(format: "run %d/%d: prefill %.1f tok/s, decode %.1f tok/s", r + 1, repetitions, p, d))
        }
        let peak = ProcessStats.peakResidentBytes()
        let bandwidth = MemoryBandwidth.measure(pool: t.pool)
        let bytes = t.weightBytesPerToken
        let decodeFigures = Figures(decode)
        let bound = bandwidth / Double(bytes)
        return Result(model: name, threads: t.pool.threadCount, promptTokens: n, genTokens: genTokens,
                      repetitions: repetitions, warmupRuns: warmups, prefill: Figures(prefill), decode: decodeFigures,
                      loadMs: loadSeconds * 1000, packedFromCache: packedFromCache, peakRSSBytes: peak,
                      blasCore: blasCoreName(), isa: KernelISA.current.rawValue, isaFeatures: KernelISA.features,
                      layerSchedule: t.schedule.description,
                      weightBytesPerToken: bytes, memoryReadBytesPerSecond: bandwidth,
                      decodeBoundTokensPerSecond: bound, decodeShareOfBound: decodeFigures.median / bound,
                      multiplyAddsPerSecond: ComputePeak.measure(pool: t.pool, kind: .f32FMA) ?? 0,
                      bf16MultiplyAddsPerSecond: ComputePeak.measure(pool: t.pool, kind: .bf16Dot))
    }
}
