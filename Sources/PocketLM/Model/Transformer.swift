import CKernels
import Foundation

/// The llama-style decoder: RMSNorm, RoPE, grouped-query attention with a KV cache, SwiGLU, tied head.
///
/// The whole forward pass is `forwardChunk`, top to bottom. A prompt runs as a batch (sgemm, compute-bound);
/// a generated token runs alone (matvec, memory-bound). Both use the same code; only `Linear` picks the kernel.
/// All buffers are allocated here, once (only the thread pool's hand-offs still allocate a small closure context each).
public final class Transformer: @unchecked Sendable {
    public let config: ModelConfig
    public let schedule: LayerSchedule
    public let contextLength: Int
    /// Most positions run through one batch; longer prompts are split into chunks of this many.
    public let maxBatch: Int
    public let cache: KVCache
    public let pool: ThreadPool
    public let store: WeightStore
    public static let defaultMaxContext = 8192
    /// Tokens already in the KV cache: the position the next token takes.
    public private(set) var position = 0

    struct Block {
        var attnNorm: [Float]
        var wq, wk, wv, wo: WeightTensor
        var ffnNorm: [Float]
        /// Absent for a packed model: its FFN weights live in `feedForward`'s bundles.
        var wGate, wUp, wDown: WeightTensor?
    }

    let tokenEmbedding: WeightTensor
    let outputNorm: [Float]
    let output: WeightTensor
    let blocks: [Block]
    let linear: Linear
    /// The FFN of a packed (flash-layout) model, paged from storage or resident; nil for an ordinary file.
    public private(set) var feedForward: PagedFeedForward?

    // Scratch, sized for `maxBatch` positions.
    private let x, xn, q, k, v, att, gate, up: UnsafeMutablePointer<Float>
    private let scores: UnsafeMutablePointer<Float>
    private let ropeInvFreq, ropeCos, ropeSin: UnsafeMutablePointer<Float>
    private let lastLogits: UnsafeMutablePointer<Float>
    /// Where each thread's share of the attention items starts (threadCount + 1 entries).
    private let attentionBounds: UnsafeMutablePointer<Int>
    private var batchLogits: UnsafeMutablePointer<Float>?
    private let oneToken = UnsafeMutablePointer<Int>.allocate(capacity: 1)

    /// `feedForward` builds the paged FFN of a packed model (given the thread pool, once the resident weights
    /// are loaded); without it the FFN matrices come from `store`.
    public init(store: WeightStore, config: ModelConfig, schedule: LayerSchedule? = nil,
                contextLength: Int? = nil, threads: Int = 1, maxBatch: Int = 256,
                feedForward: ((ThreadPool, Int) throws -> PagedFeedForward)? = nil) throws {
        try config.validate()
        let schedule = schedule ?? .plain(blocks: config.numHiddenLayers)
        let dim = config.hiddenSize, kvDim = config.kvDim, ffn = config.intermediateSize, vocab = config.vocabSize
        self.config = config
        self.schedule = schedule
        self.store = store
        // Default: the model's training context, up to 8192 positions (a larger one on request).
        self.contextLength = contextLength ?? min(config.maxPositionEmbeddings, Transformer.defaultMaxContext)
        guard (1...(1 << 20)).contains(self.contextLength) else {
            throw ModelError.invalidConfig(field: "context", reason: "must be between 1 and 1048576, found \(self.contextLength)")
        }
        self.maxBatch = max(1, min(maxBatch, self.contextLength))

        func vector(_ name: String) throws -> [Float] {
            let t = try store.tensor(name, shape: [dim])
            var out = [Float](repeating: 0, count: dim)
            out.withUnsafeMutableBufferPointer { pl_dequantize_row(Int32(t.type.rawValue), t.data, $0.baseAddress, Int64(dim)) }
            return out
        }
        tokenEmbedding = try store.tensor("token_embd.weight", shape: [dim, vocab])
        outputNorm = try vector("output_norm.weight")
        // Tied embeddings: with no separate head the output projection is the embedding matrix itself.
        output = store.contains("output.weight") ? try store.tensor("output.weight", shape: [dim, vocab]) : tokenEmbedding
        let paged = feedForward != nil
        blocks = try (0..<config.numHiddenLayers).map { i in
            let p = "blk.\(i)."
            func matrix(_ name: String, _ shape: [Int]) throws -> WeightTensor {
                let t = try store.tensor(p + name, shape: shape)
                guard t.type.isComputable else { throw GGUFError.unsupportedTensorType(tensor: t.name, type: t.type.description) }
                return t
            }
            return Block(attnNorm: try vector(p + "attn_norm.weight"),
                         wq: try matrix("attn_q.weight", [dim, dim]),
                         wk: try matrix("attn_k.weight", [dim, kvDim]),
                         wv: try matrix("attn_v.weight", [dim, kvDim]),
                         wo: try matrix("attn_output.weight", [dim, dim]),
                         ffnNorm: try vector(p + "ffn_norm.weight"),
                         wGate: paged ? nil : try matrix("ffn_gate.weight", [dim, ffn]),
                         wUp: paged ? nil : try matrix("ffn_up.weight", [dim, ffn]),
                         wDown: paged ? nil : try matrix("ffn_down.weight", [ffn, dim]))
        }

        // The pool starts after the weights are loaded (and packed), so its spinning workers do not compete
        // with the packing for the cores.
        self.pool = ThreadPool(threadCount: threads)
        setBLASThreads(threads)
        cache = try KVCache(slots: schedule.passes.count, capacity: self.contextLength,
                            kvHeads: config.numKeyValueHeads, headDim: config.headDim)
        let b = self.maxBatch
        self.feedForward = try feedForward?(pool, b)
        x = .allocate(capacity: b * dim)
        xn = .allocate(capacity: b * dim)
        q = .allocate(capacity: b * dim)
        k = .allocate(capacity: b * kvDim)
        v = .allocate(capacity: b * kvDim)
        att = .allocate(capacity: b * dim)
        gate = .allocate(capacity: b * ffn)
        up = .allocate(capacity: b * ffn)
        // Each thread scores up to a whole group of heads against the context at once.
        scores = .allocate(capacity: pool.threadCount * config.attentionGroup * self.contextLength)
        lastLogits = .allocate(capacity: vocab)
        attentionBounds = .allocate(capacity: pool.threadCount + 1)
        let half = config.headDim / 2
        ropeInvFreq = .allocate(capacity: half)
        ropeCos = .allocate(capacity: b * half)
        ropeSin = .allocate(capacity: b * half)
        for i in 0..<half {
            ropeInvFreq[i] = Float(pow(config.ropeTheta, -2.0 * Double(i) / Double(config.headDim)))
        }
        // The tile holds the largest block matrix, so each projection dequantizes in one piece.
        linear = Linear(pool: pool, maxColumns: max(dim, ffn), maxBatch: b, tileFloats: max(ffn * dim, dim * dim, 1024 * dim))
    }

    deinit {
        for p in [x, xn, q, k, v, att, gate, up, scores, lastLogits, ropeInvFreq, ropeCos, ropeSin] { p.deallocate() }
        attentionBounds.deallocate()
        linear.deallocate()
        batchLogits?.deallocate()
        oneToken.deallocate()
    }

    /// Forgets the cached positions (a new conversation).
    public func reset() {
        position = 0
        feedForward?.reset()
    }

    /// Rewinds the cache to `n` positions (drops the rest), e.g. to reuse a shared prompt prefix.
    public func truncate(to n: Int) { position = max(0, min(n, position)) }

    /// Runs one token and returns the logits for the next one (valid until the next call).
    public func decode(_ token: Int) throws -> UnsafeBufferPointer<Float> {
        oneToken.pointee = token
        return try forward(UnsafeBufferPointer(start: oneToken, count: 1), allLogits: false)
    }

    /// Runs `tokens` at the next positions. Returns the last position's logits (`vocabSize` floats), or with
    /// `allLogits` every position's (`tokens.count × vocabSize`; `tokens.count` must be ≤ `maxBatch`).
    /// The buffer is owned by the model and valid until the next call.
    public func forward(_ tokens: UnsafeBufferPointer<Int>, allLogits: Bool = false) throws -> UnsafeBufferPointer<Float> {
        let n = tokens.count
        guard n > 0 else { throw ModelError.emptyPrompt }
        guard position + n <= contextLength else { throw ModelError.contextOverflow(needed: position + n, context: contextLength) }
        for t in tokens where t < 0 || t >= config.vocabSize {
            throw ModelError.tokenOutOfRange(token: t, vocabSize: config.vocabSize)
        }
        if allLogits {
            guard n <= maxBatch else {
                throw ModelError.invalidConfig(field: "batch", reason: "all-position logits need at most \(maxBatch) tokens per call, got \(n)")
            }
            if batchLogits == nil { batchLogits = .allocate(capacity: maxBatch * config.vocabSize) }
            try forwardChunk(tokens, logits: batchLogits!, all: true)
            return UnsafeBufferPointer(start: batchLogits, count: n * config.vocabSize)
        }
        var start = 0
        while start < n {
            let end = min(n, start + maxBatch)
            try forwardChunk(UnsafeBufferPointer(rebasing: tokens[start..<end]), logits: lastLogits, all: false,
                         computeLogits: end == n)
            start = end
        }
        return UnsafeBufferPointer(start: lastLogits, count: config.vocabSize)
    }

    // MARK: - The forward pass

    private func forwardChunk(_ tokens: UnsafeBufferPointer<Int>, logits: UnsafeMutablePointer<Float>, all: Bool,
                              computeLogits: Bool = true) throws {
        let n = tokens.count, start = position
        let dim = config.hiddenSize, kvDim = config.kvDim, ffn = config.intermediateSize
        let eps = Float(config.rmsNormEps)

        // 1. Token embeddings, and the RoPE rotations of these positions (shared by every layer).
        ropeTable(start: start, rows: n)
        for i in 0..<n {
            pl_dequantize_row(Int32(tokenEmbedding.type.rawValue), tokenEmbedding.row(tokens[i]), x + i * dim, Int64(dim))
        }

        let q = self.q, k = self.k, v = self.v, gate = self.gate, up = self.up

        // 2. The blocks, in schedule order; pass `slot` keeps its own keys and values.
        for (slot, b) in schedule.passes.enumerated() {
            let block = blocks[b]

            // Attention: x += Wo · attention(rope(Wq·xn), rope(Wk·xn), Wv·xn), xn = rmsnorm(x).
            // Each thread rotates the Q and K rows it computed and stores its K and V rows in the cache (F16).
            rmsNorm(x, block.attnNorm, xn, rows: n, eps: eps)
            linear.fused(xn, n: n, block.wq, q, block.wk, k, block.wv, v) { m, rows in
                switch m {
                case 0: self.rope(q, width: dim, rows: n, columns: rows)
                case 1:
                    self.rope(k, width: kvDim, rows: n, columns: rows)
                    self.store(k, rows: n, columns: rows, slot: slot, start: start, values: false)
                default:
                    self.store(v, rows: n, columns: rows, slot: slot, start: start, values: true)
                }
            }
            attention(q, slot: slot, rows: n, start: start, out: att)
            linear(block.wo, att, n: n, xn)
            add(x, xn, count: n * dim)

            // Feed-forward (SwiGLU): x += Wdown · (silu(Wgate·xn) ⊙ Wup·xn), xn = rmsnorm(x).
            rmsNorm(x, block.ffnNorm, xn, rows: n, eps: eps)
            if let wGate = block.wGate, let wUp = block.wUp, let wDown = block.wDown {
                // SwiGLU on each thread's own rows as soon as its gate and up rows are done.
                linear.fused(xn, n: n, wGate, gate, wUp, up) { m, rows in
                    guard m == 1 else { return }
                    for t in 0..<n {
                        pl_swiglu(gate + t * ffn + rows.lowerBound, up + t * ffn + rows.lowerBound, Int64(rows.count))
                    }
                }
                linear(wDown, gate, n: n, xn)
                add(x, xn, count: n * dim)
            } else {
                // Packed model: the same SwiGLU over row-column bundles, read from storage as needed.
                try feedForward!.forward(pass: slot, block: b, input: xn, rows: n, out: att)
                add(x, att, count: n * dim)
            }
        }
        position += n

        // 3. Final norm and the output head, for the last position only unless every position is wanted.
        guard computeLogits else { return }
        if all {
            rmsNorm(x, outputNorm, xn, rows: n, eps: eps)
            linear(output, xn, n: n, logits)
        } else {
            rmsNorm(x + (n - 1) * dim, outputNorm, xn, rows: 1, eps: eps)
            linear(output, xn, n: 1, logits)
        }
    }

    // MARK: - Small ops

    private func rmsNorm(_ input: UnsafeMutablePointer<Float>, _ weight: [Float], _ out: UnsafeMutablePointer<Float>,
                         rows: Int, eps: Float) {
        let dim = config.hiddenSize
        weight.withUnsafeBufferPointer { w in
            for r in 0..<rows {
                let xi = input + r * dim, yo = out + r * dim
                var ss: Double = 0
                for j in 0..<dim { ss += Double(xi[j]) * Double(xi[j]) }
                let scale = Float(1.0 / (ss / Double(dim) + Double(eps)).squareRoot())
                for j in 0..<dim { yo[j] = xi[j] * scale * w[j] }
            }
        }
    }

    /// cos/sin of pos·θ_i for the chunk's positions, computed once per chunk instead of once per layer.
    private func ropeTable(start: Int, rows: Int) {
        let half = config.headDim / 2
        for r in 0..<rows {
            let pos = Float(start + r)
            for i in 0..<half {
                let angle = pos * ropeInvFreq[i]
                ropeCos[r * half + i] = cos(angle)
                ropeSin[r * half + i] = sin(angle)
            }
        }
    }

    /// Rotates adjacent pairs (x[2i], x[2i+1]) of each head by pos·θ_i: GGUF's llama layout permuted Q/K rows
    /// for this. `columns` (even bounds) of each of the `rows` vectors of `width` elements.
    private func rope(_ v: UnsafeMutablePointer<Float>, width: Int, rows: Int, columns: Range<Int>) {
        let hd = config.headDim, half = hd / 2
        for r in 0..<rows {
            let p = v + r * width
            var j = columns.lowerBound
            while j < columns.upperBound {
                let i = (j % hd) / 2
                let c = ropeCos[r * half + i], s = ropeSin[r * half + i]
                let a = p[j], b = p[j + 1]
                p[j] = a * c - b * s
                p[j + 1] = a * s + b * c
                j += 2
            }
        }
    }

    /// Writes `columns` of the `rows` new key (or value) vectors into the cache at positions start..<start+rows,
    /// as F16, head by head.
    private func store(_ src: UnsafeMutablePointer<Float>, rows: Int, columns: Range<Int>, slot: Int, start: Int,
                       values: Bool) {
        let hd = config.headDim, kvDim = config.kvDim
        var c = columns.lowerBound
        while c < columns.upperBound {
            let head = c / hd, end = min(columns.upperBound, (head + 1) * hd)
            let base = values ? cache.values(slot: slot, head: head) : cache.keys(slot: slot, head: head)
            for t in 0..<rows {
                pl_f32_to_f16_row(src + t * kvDim + c, base + (start + t) * hd + (c - head * hd), Int64(end - c))
            }
            c = end
        }
    }

    /// Causal grouped-query attention for `rows` queries at positions start..<start+rows; the (query, head) items
    /// are spread over the threads, and each query's head sees the cache up to its own position. A thread takes
    /// its consecutive heads that share a KV head in one pass over that head's keys and values.
    private func attention(_ q: UnsafeMutablePointer<Float>, slot: Int, rows: Int, start: Int,
                           out: UnsafeMutablePointer<Float>) {
        let heads = config.numAttentionHeads, hd = config.headDim, dim = config.hiddenSize
        let cache = self.cache
        let group = config.attentionGroup
        let scale = 1 / Float(hd).squareRoot()
        let items = rows * heads
        let parts = min(pool.threadCount, items)
        let scoresPerThread = group * contextLength
        let scores = self.scores
        // Causal: a later query sees more positions, so the items are split by work (positions seen), not count;
        // an equal split left one thread ~3× the other's work on a prompt.
        let bounds = attentionBounds
        let total = heads * (rows * (start + 1) + rows * (rows - 1) / 2)
        var done = 0, part = 1
        bounds[0] = 0
        for item in 0..<items where part < parts {
            done += start + item / heads + 1
            while part < parts && done * parts >= total * part {
                bounds[part] = item + 1
                part += 1
            }
        }
        while part <= parts { bounds[part] = items; part += 1 }
        pool.run(parts: parts) { part in
            var item = bounds[part]
            let end = bounds[part + 1]
            while item < end {
                let r = item / heads, h = item % heads
                // The run of this thread's heads on the same query and KV head.
                let kvHead = h / group
                let n = min(end - item, (kvHead + 1) * group - h)
                pl_attention_group_f16(q + r * dim + h * hd, Int64(n), cache.keys(slot: slot, head: kvHead),
                                       cache.values(slot: slot, head: kvHead), Int64(hd), Int64(start + r + 1), Int64(hd), scale,
                                       scores + part * scoresPerThread, out + r * dim + h * hd)
                item += n
            }
        }
    }

    private func add(_ a: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { a[i] += b[i] }
    }

}
