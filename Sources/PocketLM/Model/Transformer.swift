import CKernels
import Foundation
import Synchronization

/// The decoder of every architecture PocketLM runs: RMSNorm, RoPE, grouped-query attention with a KV cache, a gated
/// FFN, tied or separate head — with what each family adds (`DecoderTraits`: biases, per-head Q/K norms, sandwich
/// norms, GeGLU, an embedding scale, sliding-window layers with their own RoPE).
///
/// The whole forward pass is `forwardChunk`, top to bottom. A prompt runs as a batch (compute-bound); a generated
/// token runs alone (memory-bound). Both use the same code; only `Linear` picks the kernel. All buffers are
/// allocated here, once (only the thread pool's hand-offs still allocate a small closure context each).
///
/// **Sequences.** The model can hold several independent sequences (`sequences` at init), each with its own KV
/// cache and position — a server's parallel slots. `decodeBatch` runs one token of each of several sequences as
/// one batch, so the weights stream from memory once for all of them; each row attends only to its own cache.
/// The single-sequence API (`forward`, `decode`, `position`, `truncate`, `reset`) works on sequence 0 unless
/// told otherwise.
public final class Transformer: @unchecked Sendable {
    public let config: ModelConfig
    public let traits: DecoderTraits
    public let schedule: LayerSchedule
    public let contextLength: Int
    /// Most positions run through one batch; longer prompts are split into chunks of this many.
    public let maxBatch: Int
    /// How every sequence's KV cache stores keys and values (F16 unless asked otherwise).
    public let kvCacheType: KVCache.ElementType
    /// One KV cache per sequence.
    public let caches: [KVCache]
    /// The KV cache of sequence 0.
    public var cache: KVCache { caches[0] }
    public let pool: ThreadPool
    public let store: WeightStore
    public static let defaultMaxContext = 8192
    /// The longest context asked for that is accepted (its KV cache alone is gigabytes for the smallest models).
    public static let maxContextLength = 1 << 20
    /// Tokens already in each sequence's KV cache: the position its next token takes.
    private var positions: [Int]
    /// Tokens already in sequence 0's KV cache: the position the next token takes.
    public var position: Int { positions[0] }
    /// How many independent sequences (KV caches) the model holds.
    public var sequenceCount: Int { caches.count }
    /// Every tensor the forward pass uses (a file's other tensors are features it does not implement).
    public let tensorNames: Set<String>

    struct Block {
        var attnNorm: [Float]
        var wq, wk, wv, wo: WeightTensor
        /// Projection biases (Qwen2; optional in llama files).
        var bq, bk, bv, bo: [Float]?
        /// Per-head RMSNorm weights of queries and keys (head_dim each; Gemma 3).
        var qNorm, kNorm: [Float]?
        /// RMSNorm of the attention / FFN output before the residual add (Gemma 3).
        var postAttnNorm, postFfnNorm: [Float]?
        var ffnNorm: [Float]
        /// Absent for a packed model: its FFN weights live in `feedForward`'s bundles.
        var wGate, wUp, wDown: WeightTensor?
        /// Which of `ropes` this block's attention uses (Gemma 3: local or global).
        var rope: Int
    }

    let tokenEmbedding: WeightTensor
    let outputNorm: [Float]
    let output: WeightTensor
    let blocks: [Block]
    let linear: Linear
    /// The distinct RoPE settings of the model's layers (one, or Gemma 3's local and global).
    let ropes: [RotaryEmbedding]
    /// Q/K/V follow-ups (RoPE, cache store) run on each thread's own projection rows right after it computes them;
    /// per-head norms and the NEOX layout need whole heads, so those models take one more round of the threads.
    let fusedFollowUps: Bool
    let embeddingScale: Float
    let attentionScale: Float
    /// The gated FFN's activation (SwiGLU or GeGLU), as the architecture states it; the paged FFN uses the same.
    let activation: GatedActivation

    /// The FFN of a packed (flash-layout) model, paged from storage or resident; nil for an ordinary file.
    public private(set) var feedForward: PagedFeedForward?

    // Scratch, sized for `maxBatch` positions.
    let x, xn, q, k, v, att, gate, up: UnsafeMutablePointer<Float>
    let scores: UnsafeMutablePointer<Float>
    /// cos/sin tables of this chunk's positions, one pair of tables per entry of `ropes`.
    let ropeCos, ropeSin: UnsafeMutablePointer<Float>
    private let lastLogits: UnsafeMutablePointer<Float>
    /// Where each thread's share of the attention items starts (threadCount + 1 entries).
    let attentionBounds: UnsafeMutablePointer<Int>
    /// Rows of each query head, then each key head, computed so far in a decoded token's Q/K/V step: the thread whose
    /// rows complete a head norms, rotates (and for a key head, caches) it there and then (`finishHeads`).
    let headRowsDone: UnsafeMutablePointer<Atomic<Int>>
    private var batchLogits: UnsafeMutablePointer<Float>?
    private let oneToken = UnsafeMutablePointer<Int>.allocate(capacity: 1)
    /// The sequence and position of each row of the chunk being computed.
    let rowSequence, rowPosition: UnsafeMutablePointer<Int>

    /// `feedForward` builds the paged FFN of a packed model (given the thread pool, once the resident weights
    /// are loaded); without it the FFN matrices come from `store`.
    public init(store: WeightStore, config: ModelConfig, traits: DecoderTraits? = nil, schedule: LayerSchedule? = nil,
                contextLength: Int? = nil, threads: Int = 1, maxBatch: Int = 256, sequences: Int = 1,
                kvCacheType: KVCache.ElementType = .f16,
                feedForward: ((ThreadPool, Int) throws -> PagedFeedForward)? = nil) throws {
        try config.validate()
        let traits = traits ?? Architectures.traits(of: config.modelType)
        let schedule = schedule ?? .plain(blocks: config.numHiddenLayers)
        let dim = config.hiddenSize, qDim = config.queryDim, kvDim = config.kvDim, hd = config.headDim
        let ffn = config.intermediateSize, vocab = config.vocabSize
        self.config = config
        self.traits = traits
        self.schedule = schedule
        self.store = store
        self.kvCacheType = kvCacheType
        // Default: the model's training context, up to 8192 positions (a larger one on request).
        self.contextLength = contextLength ?? min(config.maxPositionEmbeddings, Transformer.defaultMaxContext)
        guard (1...Transformer.maxContextLength).contains(self.contextLength) else {
            throw ModelError.invalidConfig(field: "context", reason: "must be between 1 and \(Transformer.maxContextLength), found \(self.contextLength)")
        }
        self.maxBatch = max(1, min(maxBatch, self.contextLength))
        guard (1...self.maxBatch).contains(sequences) else {
            throw ModelError.invalidConfig(field: "sequences", reason: "must be between 1 and the batch size \(self.maxBatch), found \(sequences)")
        }

        var names = Set<String>()
        func tensor(_ name: String, _ shape: [Int]) throws -> WeightTensor {
            names.insert(name)
            return try store.tensor(name, shape: shape)
        }
        func vector(_ name: String, _ count: Int = dim) throws -> [Float] {
            let t = try tensor(name, [count])
            guard t.type.isComputable else { throw GGUFError.unsupportedTensorType(tensor: t.name, type: t.type.description) }
            var out = [Float](repeating: 0, count: count)
            out.withUnsafeMutableBufferPointer { pl_dequantize_row(Int32(t.type.rawValue), t.data, $0.baseAddress, Int64(count)) }
            return out
        }
        func optionalVector(_ name: String, _ count: Int = dim) throws -> [Float]? {
            store.contains(name) ? try vector(name, count) : nil
        }
        func matrix(_ name: String, _ shape: [Int]) throws -> WeightTensor {
            let t = try tensor(name, shape)
            guard t.type.isComputable else { throw GGUFError.unsupportedTensorType(tensor: t.name, type: t.type.description) }
            return t
        }
        tokenEmbedding = try matrix("token_embd.weight", [dim, vocab])
        outputNorm = try vector("output_norm.weight")
        // Tied embeddings: with no separate head the output projection is the embedding matrix itself.
        output = store.contains("output.weight") ? try matrix("output.weight", [dim, vocab]) : tokenEmbedding

        // RoPE: Llama 3's per-frequency divisors come as a tensor; Gemma 3's local layers have their own base.
        let factors = try optionalVector("rope_freqs.weight", hd / 2)
        let globalRope = RotaryEmbedding(dimensions: hd, base: config.ropeTheta, scaling: config.ropeScaling,
                                         frequencyFactors: factors, contextLength: config.maxPositionEmbeddings)
        var ropes = [globalRope]
        if config.slidingWindow != nil, let localBase = config.ropeLocalBaseFreq {
            ropes.append(RotaryEmbedding(dimensions: hd, base: localBase, scaling: nil, frequencyFactors: nil,
                                         contextLength: config.maxPositionEmbeddings))
        }
        self.ropes = ropes

        let paged = feedForward != nil
        blocks = try (0..<config.numHiddenLayers).map { i in
            let p = "blk.\(i)."
            return Block(attnNorm: try vector(p + "attn_norm.weight"),
                         wq: try matrix(p + "attn_q.weight", [dim, qDim]),
                         wk: try matrix(p + "attn_k.weight", [dim, kvDim]),
                         wv: try matrix(p + "attn_v.weight", [dim, kvDim]),
                         wo: try matrix(p + "attn_output.weight", [qDim, dim]),
                         bq: try optionalVector(p + "attn_q.bias", qDim),
                         bk: try optionalVector(p + "attn_k.bias", kvDim),
                         bv: try optionalVector(p + "attn_v.bias", kvDim),
                         bo: try optionalVector(p + "attn_output.bias", dim),
                         qNorm: traits.normalizesQueryKey ? try vector(p + "attn_q_norm.weight", hd) : nil,
                         kNorm: traits.normalizesQueryKey ? try vector(p + "attn_k_norm.weight", hd) : nil,
                         postAttnNorm: traits.normalizesBlockOutputs ? try vector(p + "post_attention_norm.weight") : nil,
                         postFfnNorm: traits.normalizesBlockOutputs ? try vector(p + "post_ffw_norm.weight") : nil,
                         ffnNorm: try vector(p + "ffn_norm.weight"),
                         wGate: paged ? nil : try matrix(p + "ffn_gate.weight", [dim, ffn]),
                         wUp: paged ? nil : try matrix(p + "ffn_up.weight", [dim, ffn]),
                         wDown: paged ? nil : try matrix(p + "ffn_down.weight", [ffn, dim]),
                         rope: config.isSlidingLayer(i) && ropes.count > 1 ? 1 : 0)
        }
        tensorNames = names
        fusedFollowUps = traits.ropeLayout == .adjacentPairs && !traits.normalizesQueryKey
        embeddingScale = traits.scalesEmbedding ? Float(dim).squareRoot() : 1
        attentionScale = 1 / Float(config.queryPreAttnScalar ?? Double(hd)).squareRoot()
        activation = GatedActivation(traits.activation)

        // The pool starts after the weights are loaded (and packed), so its spinning workers do not compete
        // with the packing for the cores.
        self.pool = ThreadPool(threadCount: threads)
        let b = self.maxBatch
        // A sliding-window pass keeps window + batch positions: a batch's first query still sees its window after
        // the whole batch's keys are stored.
        let kinds: [KVCache.SlotKind] = schedule.passes.map { block in
            guard config.isSlidingLayer(block), let w = config.slidingWindow else { return .global }
            return .sliding(window: w, ringSize: w + b)
        }
        let capacity = self.contextLength
        caches = try (0..<sequences).map { _ in
            try KVCache(kinds: kinds, capacity: capacity, kvHeads: config.numKeyValueHeads, headDim: hd,
                        elementType: kvCacheType)
        }
        positions = Array(repeating: 0, count: sequences)
        rowSequence = .allocate(capacity: b)
        rowPosition = .allocate(capacity: b)
        self.feedForward = try feedForward?(pool, b)
        x = .allocate(capacity: b * dim)
        xn = .allocate(capacity: b * dim)
        q = .allocate(capacity: b * qDim)
        k = .allocate(capacity: b * kvDim)
        v = .allocate(capacity: b * kvDim)
        att = .allocate(capacity: b * max(qDim, dim))
        gate = .allocate(capacity: b * ffn)
        up = .allocate(capacity: b * ffn)
        // Each thread scores a tile of a prompt chunk's queries (a whole group of heads each) against the context.
        scores = .allocate(capacity: pool.threadCount * Transformer.attentionScoresPerThread(config: config,
                                                                                            contextLength: self.contextLength))
        lastLogits = .allocate(capacity: vocab)
        attentionBounds = .allocate(capacity: pool.threadCount + 1)
        headRowsDone = .allocate(capacity: config.numAttentionHeads + config.numKeyValueHeads)
        for i in 0..<(config.numAttentionHeads + config.numKeyValueHeads) { (headRowsDone + i).initialize(to: Atomic(0)) }
        ropeCos = .allocate(capacity: ropes.count * b * hd / 2)
        ropeSin = .allocate(capacity: ropes.count * b * hd / 2)
        linear = Linear(pool: pool, maxColumns: max(dim, ffn, qDim), maxBatch: b, tileFloats: Transformer.tileFloats(config: config))
    }

    /// Floats of Linear's tile of dequantized rows: it holds the largest block matrix, so each projection
    /// dequantizes in one piece (and the head 1,024 rows at a time).
    static func tileFloats(config: ModelConfig) -> Int {
        let dim = config.hiddenSize
        return max(config.intermediateSize * dim, config.queryDim * dim, 1024 * dim)
    }

    /// Weight bytes one decoded token reads: every block's matrices (each pass once), the output head and one
    /// embedding row (the head is the embedding when tied). The KV cache read by attention comes on top.
    public var weightBytesPerToken: Int {
        var bytes = output.byteCount + (output.data == tokenEmbedding.data ? 0 : tokenEmbedding.rowBytes)
        for b in schedule.passes {
            let blk = blocks[b]
            for w in [blk.wq, blk.wk, blk.wv, blk.wo] { bytes += w.byteCount }
            for w in [blk.wGate, blk.wUp, blk.wDown] { bytes += w?.byteCount ?? 0 }
        }
        return bytes
    }

    deinit {
        for p in [x, xn, q, k, v, att, gate, up, scores, lastLogits, ropeCos, ropeSin] { p.deallocate() }
        attentionBounds.deallocate()
        headRowsDone.deinitialize(count: config.numAttentionHeads + config.numKeyValueHeads)
        headRowsDone.deallocate()
        linear.deallocate()
        batchLogits?.deallocate()
        oneToken.deallocate()
        rowSequence.deallocate()
        rowPosition.deallocate()
    }

    /// Tokens already in `sequence`'s KV cache: the position its next token takes.
    public func position(of sequence: Int) -> Int { positions[sequence] }

    /// Forgets `sequence`'s cached positions (a new conversation).
    public func reset(sequence: Int = 0) {
        positions[sequence] = 0
        feedForward?.reset()
    }

    /// Tokens a generation can sample after `tokens` already in a sequence before its context is full: every
    /// position left, plus the last sampled token, which is never fed.
    public func generationRoom(after tokens: Int) -> Int { contextLength - tokens + 1 }

    /// Rewinds `sequence`'s cache to `n` positions (drops the rest), e.g. to reuse a shared prompt prefix. A
    /// sliding-window ring may already have overwritten what position n needs: then the cache is reset and false
    /// returned.
    @discardableResult
    public func truncate(to n: Int, sequence: Int = 0) -> Bool {
        let target = max(0, min(n, positions[sequence]))
        guard caches[sequence].canRewind(from: positions[sequence], to: target) else {
            reset(sequence: sequence)
            return false
        }
        positions[sequence] = target
        return true
    }

    /// Runs one token of `sequence` and returns the logits for the next one (valid until the next call).
    public func decode(_ token: Int, sequence: Int = 0) throws -> UnsafeBufferPointer<Float> {
        oneToken.pointee = token
        return try forward(UnsafeBufferPointer(start: oneToken, count: 1), allLogits: false, sequence: sequence)
    }

    /// Runs `tokens` at `sequence`'s next positions. Returns the last position's logits (`vocabSize` floats), or
    /// with `allLogits` every position's (`tokens.count × vocabSize`; `tokens.count` must be ≤ `maxBatch`).
    /// The buffer is owned by the model and valid until the next call.
    public func forward(_ tokens: UnsafeBufferPointer<Int>, allLogits: Bool = false, sequence: Int = 0) throws -> UnsafeBufferPointer<Float> {
        let n = tokens.count
        let position = try checkRun(tokens, sequence: sequence, allLogits: allLogits)
        if allLogits {
            for i in 0..<n { rowSequence[i] = sequence; rowPosition[i] = position + i }
            try forwardChunk(tokens, logits: allLogitsBuffer(), all: true)
            return UnsafeBufferPointer(start: batchLogits, count: n * config.vocabSize)
        }
        var start = 0
        while start < n {
            let end = min(n, start + maxBatch)
            for i in 0..<(end - start) { rowSequence[i] = sequence; rowPosition[i] = position + start + i }
            try forwardChunk(UnsafeBufferPointer(rebasing: tokens[start..<end]), logits: lastLogits, all: false,
                             computeLogits: end == n)
            start = end
        }
        return UnsafeBufferPointer(start: lastLogits, count: config.vocabSize)
    }

    /// Feeds `tokens` at the next positions of `sequence` and returns every position's logits (`tokens.count ×
    /// vocabSize`, owned by the model until the next call) exactly as decoding them one at a time gives them: a
    /// speculative verify pass. At most `decodeBatchRows` rows a pass (each pass streams the weights once), since a
    /// larger batch runs the prompt's kernels, whose sums differ (float weights' sgemm, the AVX2 tier's Q8_0 kernel);
    /// `forward(_:allLogits:)` takes the prompt's kernels.
    public func decodeRun(_ tokens: UnsafeBufferPointer<Int>, sequence: Int = 0) throws -> UnsafeBufferPointer<Float> {
        let position = try checkRun(tokens, sequence: sequence, allLogits: true)
        return try forwardAsDecodes(tokens) { (sequence, position + $0) }
    }

    /// `tokens` may run at `sequence`'s next positions (with `allLogits`, in one call's logits buffer): returns the
    /// first of those positions.
    private func checkRun(_ tokens: UnsafeBufferPointer<Int>, sequence: Int, allLogits: Bool) throws -> Int {
        let n = tokens.count
        guard n > 0 else { throw ModelError.emptyPrompt }
        try checkSequence(sequence)
        let position = positions[sequence]
        guard position + n <= contextLength else { throw ModelError.contextOverflow(needed: position + n, context: contextLength) }
        try checkTokens(tokens)
        guard !allLogits || n <= maxBatch else {
            throw ModelError.invalidConfig(field: "batch", reason: "all-position logits need at most \(maxBatch) tokens per call, got \(n)")
        }
        return position
    }

    /// Runs one token for each of several sequences as one batch: `tokens[i]` goes at the next position of
    /// `sequences[i]` (all distinct). Returns each row's next-token logits (`tokens.count × vocabSize`), owned by
    /// the model and valid until the next call. Each row's result is what `decode(_:sequence:)` would give it alone.
    public func decodeBatch(_ tokens: UnsafeBufferPointer<Int>, sequences: UnsafeBufferPointer<Int>) throws -> UnsafeBufferPointer<Float> {
        let n = tokens.count
        guard n > 0 else { throw ModelError.emptyPrompt }
        guard sequences.count == n, n <= maxBatch else {
            throw ModelError.invalidConfig(field: "batch", reason: "one sequence per token and at most \(maxBatch) rows, got \(n) tokens for \(sequences.count) sequences")
        }
        try checkTokens(tokens)
        for i in 0..<n {
            let s = sequences[i]
            try checkSequence(s)
            for j in 0..<i where sequences[j] == s {
                throw ModelError.invalidConfig(field: "sequences", reason: "sequence \(s) appears twice in one decode batch")
            }
            guard positions[s] + 1 <= contextLength else {
                throw ModelError.contextOverflow(needed: positions[s] + 1, context: contextLength)
            }
        }
        // (Each sequence appears once, so an earlier pass never moves a later row's position.)
        return try forwardAsDecodes(tokens) { (sequences[$0], self.positions[sequences[$0]]) }
    }

    /// Every row's logits (row i: `tokens[i]` at `row(i)`'s sequence and position), at most `decodeBatchRows` rows a
    /// pass: past them the matrices run the prompt's kernels, whose sums differ.
    private func forwardAsDecodes(_ tokens: UnsafeBufferPointer<Int>,
                                  row: (Int) -> (sequence: Int, position: Int)) throws -> UnsafeBufferPointer<Float> {
        let n = tokens.count, logits = allLogitsBuffer()
        var start = 0
        while start < n {
            let count = min(Transformer.decodeBatchRows, n - start)
            for i in 0..<count { (rowSequence[i], rowPosition[i]) = row(start + i) }
            try forwardChunk(UnsafeBufferPointer(rebasing: tokens[start..<(start + count)]),
                             logits: logits + start * config.vocabSize, all: true)
            start += count
        }
        return UnsafeBufferPointer(start: batchLogits, count: n * config.vocabSize)
    }

    /// Rows of one decode pass: every projection then runs the few-inputs kernels (`Linear.smallBatch`, float weights'
    /// `PL_FLOAT_FEW_MAX`), which give each row the bits a lone decode gives it. A larger batch would run the prompt's
    /// kernels (sgemm, the AVX2 tier's block-order Q8_0 kernel), whose sums differ, so a row's logits would depend on
    /// how many sequences shared its step; more rows are run this many at a time (each pass streams the weights once).
    public static let decodeBatchRows = min(Linear.smallBatch, Int(PL_FLOAT_FEW_MAX))

    private func checkSequence(_ sequence: Int) throws {
        guard caches.indices.contains(sequence) else {
            throw ModelError.invalidConfig(field: "sequence", reason: "no sequence \(sequence): the model holds \(caches.count)")
        }
    }

    private func checkTokens(_ tokens: UnsafeBufferPointer<Int>) throws {
        for t in tokens where t < 0 || t >= config.vocabSize {
            throw ModelError.tokenOutOfRange(token: t, vocabSize: config.vocabSize)
        }
    }

    private func allLogitsBuffer() -> UnsafeMutablePointer<Float> {
        if let b = batchLogits { return b }
        let b = UnsafeMutablePointer<Float>.allocate(capacity: maxBatch * config.vocabSize)
        batchLogits = b
        return b
    }

    // MARK: - The forward pass

    /// Runs `tokens`; row i belongs to sequence `rowSequence[i]` at position `rowPosition[i]` (a prompt chunk:
    /// one sequence, consecutive positions; a decode batch: one row per sequence).
    private func forwardChunk(_ tokens: UnsafeBufferPointer<Int>, logits: UnsafeMutablePointer<Float>, all: Bool,
                              computeLogits: Bool = true) throws {
        let n = tokens.count
        let rowPosition = self.rowPosition
        // One sequence at consecutive positions (every prompt chunk) computes its RoPE table in one go.
        let contiguous = (0..<n).allSatisfy { rowSequence[$0] == rowSequence[0] && rowPosition[$0] == rowPosition[0] + $0 }
        let dim = config.hiddenSize, qDim = config.queryDim, kvDim = config.kvDim, ffn = config.intermediateSize
        let eps = Float(config.rmsNormEps)
        if let feedForward, feedForward.lendsReserve {
            // The paged FFN holds groups in the memory a budget sets aside for the KV cache and longer batches: it
            // gives back what this batch's keys, values and scratch are about to touch (one sequence under a budget).
            var end = 0
            for r in 0..<n { end = max(end, rowPosition[r] + 1) }
            feedForward.reclaimReserve(kvCacheBytes: caches[rowSequence[0]].committedBytes(positions: end), rows: n)
        }

        // 1. Token embeddings (× sqrt(dim) for Gemma), and the RoPE rotations of these positions for each RoPE the
        //    layers use (shared by every layer of that kind).
        let half = config.headDim / 2
        for (i, rope) in ropes.enumerated() {
            let cos = ropeCos + i * maxBatch * half, sin = ropeSin + i * maxBatch * half
            if contiguous {
                rope.table(start: rowPosition[0], rows: n, cos: cos, sin: sin)
            } else {
                for r in 0..<n { rope.table(start: rowPosition[r], rows: 1, cos: cos + r * half, sin: sin + r * half) }
            }
        }
        if let rows = feedForward?.storageEmbedding {
            // An untied packed model's input embedding stays on storage: one row read per token.
            for i in 0..<n { try rows.dequantize(row: tokens[i], into: x + i * dim) }
        } else {
            for i in 0..<n {
                pl_dequantize_row(Int32(tokenEmbedding.type.rawValue), tokenEmbedding.row(tokens[i]), x + i * dim, Int64(dim))
            }
        }
        if embeddingScale != 1 { scale(x, count: n * dim, by: embeddingScale) }

        let q = self.q, k = self.k, v = self.v, gate = self.gate, up = self.up

        // 2. The blocks, in schedule order; pass `slot` keeps its own keys and values.
        for (slot, b) in schedule.passes.enumerated() {
            let block = blocks[b]

            // Attention: x += [norm](Wo · attention(rope(norm(Wq·xn + bq)), rope(norm(Wk·xn + bk)), Wv·xn + bv)),
            // xn = rmsnorm(x). Each thread adds the biases to the rows it computed and, where a row's work needs
            // no other rows (adjacent-pair RoPE, no per-head norm), rotates them and stores K/V in the cache (F16).
            // A decoded token's whole-head follow-ups (per-head norms, NEOX RoPE) run on the thread that completes
            // the head; a batch's take one more round of the threads (`prepareHeads`), which spreads them evenly.
            let headsInline = !fusedFollowUps && n == 1
            if headsInline { resetHeadCounts() }
            normRows(x, block.attnNorm, xn, rows: n, width: dim, eps: eps)
            linear.fused(xn, n: n, block.wq, q, block.wk, k, block.wv, v) { m, rows in
                switch m {
                case 0:
                    if let bias = block.bq { self.addBias(q, bias, width: qDim, rows: n, columns: rows) }
                    if self.fusedFollowUps { self.rope(q, width: qDim, rows: n, columns: rows, table: block.rope) }
                    if headsInline { self.finishHeads(block, keys: false, rows: rows, slot: slot) }
                case 1:
                    if let bias = block.bk { self.addBias(k, bias, width: kvDim, rows: n, columns: rows) }
                    if self.fusedFollowUps {
                        self.rope(k, width: kvDim, rows: n, columns: rows, table: block.rope)
                        self.store(k, rows: n, columns: rows, slot: slot, values: false)
                    }
                    if headsInline { self.finishHeads(block, keys: true, rows: rows, slot: slot) }
                default:
                    if let bias = block.bv { self.addBias(v, bias, width: kvDim, rows: n, columns: rows) }
                    if self.fusedFollowUps || headsInline { self.store(v, rows: n, columns: rows, slot: slot, values: true) }
                }
            }
            if !fusedFollowUps && !headsInline { prepareHeads(block, rows: n, slot: slot) }
            attention(q, slot: slot, rows: n, out: att)
            linear(block.wo, att, n: n, xn)
            if let bias = block.bo { addBias(xn, bias, width: dim, rows: n, columns: 0..<dim) }
            if let norm = block.postAttnNorm { normRows(xn, norm, xn, rows: n, width: dim, eps: eps) }
            add(x, xn, count: n * dim)

            // Gated FFN: x += [norm](Wdown · (act(Wgate·xn) ⊙ Wup·xn)), xn = rmsnorm(x); act = silu or tanh-GELU.
            normRows(x, block.ffnNorm, xn, rows: n, width: dim, eps: eps)
            if let wGate = block.wGate, let wUp = block.wUp, let wDown = block.wDown {
                // The activation on each thread's own rows as soon as its gate and up rows are done.
                linear.fused(xn, n: n, wGate, gate, wUp, up) { m, rows in
                    guard m == 1 else { return }
                    for t in 0..<n { self.activation.apply(gate + t * ffn + rows.lowerBound, up + t * ffn + rows.lowerBound, count: rows.count) }
                }
                linear(wDown, gate, n: n, xn)
                if let norm = block.postFfnNorm { normRows(xn, norm, xn, rows: n, width: dim, eps: eps) }
                add(x, xn, count: n * dim)
            } else {
                // Packed model: the same gated FFN over row-column bundles, read from storage as needed.
                try feedForward!.forward(pass: slot, block: b, input: xn, rows: n, out: att)
                if let norm = block.postFfnNorm { normRows(att, norm, att, rows: n, width: dim, eps: eps) }
                add(x, att, count: n * dim)
            }
        }
        for r in 0..<n { positions[rowSequence[r]] = max(positions[rowSequence[r]], rowPosition[r] + 1) }

        // 3. Final norm and the output head, for the last position only unless every position is wanted.
        guard computeLogits else { return }
        if all {
            normRows(x, outputNorm, xn, rows: n, width: dim, eps: eps)
            linear(output, xn, n: n, logits)
        } else {
            rmsNorm(x + (n - 1) * dim, outputNorm, xn, rows: 1, width: dim, eps: eps)
            linear(output, xn, n: 1, logits)
        }
    }
}
