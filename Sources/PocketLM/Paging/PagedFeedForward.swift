import CKernels
import CPlatform
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Counters of a paged model, cumulative since load (take differences around a run).
public struct PagingStats: Sendable, Equatable, Codable {
    public var layerSteps = 0
    public var bytesRead = 0
    public var reads = 0
    public var ioWaitSeconds = 0.0
    public var manageSeconds = 0.0
    public var computeSeconds = 0.0
    /// Groups the tokens needed, and how many of those were already in memory.
    public var groupsNeeded = 0
    public var groupsInMemory = 0
    /// Bytes a perfect selection at the same quality would have had to read (exact/threshold rules only).
    public var oracleBytes = 0
    public var neuronsComputed = 0

    /// All zero (a model without a paged FFN reads nothing).
    public init() {}

    public static func - (a: PagingStats, b: PagingStats) -> PagingStats {
        var d = PagingStats()
        d.layerSteps = a.layerSteps - b.layerSteps
        d.bytesRead = a.bytesRead - b.bytesRead
        d.reads = a.reads - b.reads
        d.ioWaitSeconds = a.ioWaitSeconds - b.ioWaitSeconds
        d.manageSeconds = a.manageSeconds - b.manageSeconds
        d.computeSeconds = a.computeSeconds - b.computeSeconds
        d.groupsNeeded = a.groupsNeeded - b.groupsNeeded
        d.groupsInMemory = a.groupsInMemory - b.groupsInMemory
        d.oracleBytes = a.oracleBytes - b.oracleBytes
        d.neuronsComputed = a.neuronsComputed - b.neuronsComputed
        return d
    }
}

/// How a budget is spent: the fixed resident part, read buffers, and FFN groups kept in memory.
public struct PagingPlan: Sendable, Codable, Equatable {
    public var budget: Int?
    /// Resident weights: embeddings, norms, attention, down-projection scales, predictors.
    public var residentBytes: Int
    /// Buffers the current and the next layer's reads land in.
    public var stagingBytes: Int
    /// The least budget that runs: resident + staging.
    public var minimumBytes: Int
    /// FFN groups kept in memory per layer: pinned (loaded once) and window slots.
    public var pinnedGroups: Int
    public var windowGroups: Int
    public var groupsPerLayer: Int
    /// Layers whose FFN the mmap mode keeps mapped.
    public var pinnedLayers: Int
    public var cacheBytes: Int
    /// Weights in memory at most: resident + staging + cache.
    public var weightBytes: Int { residentBytes + stagingBytes + cacheBytes }
}

/// The FFN of a packed model, its weights paged from storage (`FlashLayout`, `PagingOptions`).
///
/// Per layer and token: decide which bundle groups the token needs (all, or the predictor's top groups),
/// take those in memory (pinned or in the window), read the rest with direct I/O into window slots or the
/// staging buffer (while the previous layer computes, when the choice does not depend on the layer's input),
/// then compute SwiGLU over every bundle in memory with the gather kernels (ckernels.h, pl_bundle_*).
public final class PagedFeedForward: @unchecked Sendable {
    public let layout: FlashLayout
    public let options: PagingOptions
    public let plan: PagingPlan
    public private(set) var stats = PagingStats()
    public let path: String

    private let config: ModelConfig
    private let schedule: LayerSchedule
    private let pool: ThreadPool
    private let reader: DirectReader?
    /// Per staging buffer: its reads queued asynchronously (empty: the reader threads serve them).
    private let asyncReads: [AsyncBundleReads]
    /// Whether the per-token reads went through native AIO (else the reader threads).
    public var readsAreAsync: Bool { !asyncReads.isEmpty }
    private let mapped: MappedFile?
    private let mmapFd: Int32
    private let file: MappedFile
    private let bundleOffsets: [Int]
    private let downScales: [UnsafeMutablePointer<UInt16>]
    /// Block rows only: the dense kernels, and the down matrix reassembled from the groups in memory.
    private let linear: Linear?
    private let downMatrix: UnsafeMutableRawPointer?
    private let caches: [NeuronBundleCache]
    /// Block rows with every group of every layer in memory: the layers as the ordinary file's matrices (empty
    /// otherwise; the slots then hold no groups).
    private var denseLayers: [DenseFFNLayer] = []
    /// Layers run as the ordinary file's matrices (reassembled at load): all of them or none.
    public var reassembledLayers: Int { denseLayers.count }
    private let dense: Bool
    private let arena: UnsafeMutableRawPointer?
    private let staging: [UnsafeMutableRawPointer]
    /// Under a budget: the file's page cache is the process's memory too, so what is read through the map leaves it.
    private let evicts: Bool
    /// The token embedding's bytes in the file: its rows are looked up through the map each step, and dropped at
    /// the next (under a budget).
    private let embeddingRange: (offset: Int, length: Int)?

    private struct Predictor {
        let a: UnsafeMutableRawPointer   // rank × dim F16
        let b: UnsafeMutableRawPointer   // ffn × rank F16
        let bias: UnsafeMutablePointer<Float>
        let rank: Int
        let logTarget: Bool
    }
    private let predictors: [Predictor]
    private let groupMass: [[Float]]

    // Per-step state, preallocated.
    private let batches: [ReadBatch]
    private var pending: [Int?] = [nil, nil]          // block whose reads each staging buffer holds / awaits
    private var pendingIssued: [Bool] = [false, false]
    private var location: [[UnsafeRawPointer?]]        // per staging buffer: group → its bytes this step
    private var needed: UnsafeMutablePointer<Bool>     // maxBatch × G
    private var readThisStep: UnsafeMutablePointer<Bool>  // per buffer × G
    private let maxBatch: Int
    private var token = 0
    private var lastBlock = -1, lastBuffer = 0

    private let ptrs: UnsafeMutablePointer<UnsafeRawPointer?>
    private let ids: UnsafeMutablePointer<Int32>
    private let g, u, h, absH, scores, groupScores, scratch: UnsafeMutablePointer<Float>
    private let xq, hq: UnsafeMutableRawPointer
    /// A batch's quantized inputs and its gate/up outputs (prefill), maxBatch rows each.
    private let batchXq: UnsafeMutableRawPointer
    private let batchG, batchU: UnsafeMutablePointer<Float>
    /// Block rows: a batch's inputs quantized for the gate and for the up rows (two formats at most).
    private let blockRowsXq: UnsafeMutableRawPointer
    private let acc: UnsafeMutablePointer<Int32>
    private let accPerPart: Int

    public init(file: GGUFFile, layout: FlashLayout, config: ModelConfig, schedule: LayerSchedule,
                options: PagingOptions, pool: ThreadPool, residentBytes: Int, maxBatch: Int) throws {
        self.layout = layout
        self.options = options
        self.config = config
        self.schedule = schedule
        self.pool = pool
        self.path = file.path
        self.maxBatch = maxBatch
        let layers = config.numHiddenLayers, dim = config.hiddenSize, ffn = config.intermediateSize
        let G = layout.groupsPerLayer, bb = layout.bundleBytes
        let evicts = options.memoryBudget != nil
        self.evicts = evicts
        self.file = file.file
        embeddingRange = file.tensorInfo("token_embd.weight").map { ($0.fileOffset, $0.byteCount) }

        if case .predictor = options.sparsity, file.tensorInfo("blk.0.ffn_pred_a") == nil {
            throw PagingError.noPredictor(path: file.path)
        }
        guard options.ioThreads >= 1, options.ioThreads <= 256 else {
            throw PagingError.invalidOption("--io-threads must be between 1 and 256, got \(options.ioThreads)")
        }
        guard options.window >= 0, options.window <= 1024 else {
            throw PagingError.invalidOption("--window must be between 0 and 1024, got \(options.window)")
        }

        bundleOffsets = try (0..<layers).map { l in
            guard let info = file.tensorInfo(FlashLayout.bundlesName(l)) else { throw GGUFError.missingTensor(FlashLayout.bundlesName(l)) }
            return info.fileOffset
        }

        // Small per-layer tensors, copied out of the map so their file pages can be dropped.
        func copy<T>(_ name: String, as: T.Type, count: Int) throws -> UnsafeMutablePointer<T> {
            guard let info = file.tensorInfo(name) else { throw GGUFError.missingTensor(name) }
            guard info.byteCount == count * MemoryLayout<T>.size else {
                throw GGUFError.tensorShape(tensor: name, expected: [count], found: info.shape)
            }
            let p = UnsafeMutablePointer<T>.allocate(capacity: count)
            UnsafeMutableRawPointer(p).copyMemory(from: file.data(of: info), byteCount: info.byteCount)
            file.file.adviseDontNeed(offset: info.fileOffset, length: info.byteCount, evict: evicts)
            return p
        }
        let columns = layout.format == .columns
        downScales = columns ? try (0..<layers).map { try copy(FlashLayout.downScaleName($0), as: UInt16.self, count: ffn / 32 * dim) } : []
        var resident = residentBytes + (columns ? layers * (ffn / 32 * dim * 2) : 0)
        if !columns {
            switch options.sparsity {
            case .exact, .threshold:
                throw PagingError.invalidOption("the exact and threshold rules need a Q8_0-packed file (columns format); this one keeps \(layout.types(0).gate)/\(layout.types(0).down) blocks")
            case .none, .predictor: break
            }
        }
        // Block rows: the dense kernels run on each group's gate/up rows and on a down matrix reassembled from the
        // groups' slices (so with every neuron used the result is the ordinary file's, bit for bit).
        linear = columns ? nil : Linear(pool: pool, maxColumns: max(dim, ffn), maxBatch: max(1, maxBatch), tileFloats: 1)
        downMatrix = columns ? nil : {
            let bytes = layout.largestDownBytes
            let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            p.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            return p
        }()

        var predictors: [Predictor] = []
        var groupMass: [[Float]] = []
        let usesPredictor: Bool = { if case .predictor = options.sparsity { return true } else { return false } }()
        if file.tensorInfo("blk.0.ffn_mass") != nil {
            for l in 0..<layers {
                let m = try copy("blk.\(l).ffn_mass", as: Float.self, count: ffn)
                groupMass.append((0..<G).map { g in layout.neurons(inGroup: g).reduce(0) { $0 + m[$1] } })
                m.deallocate()
            }
        }
        if usesPredictor {
            let rank = try file.int(FlashPacker.predictorMetadataPrefix + "rank")
            let logTarget = (file.metadata[FlashPacker.predictorMetadataPrefix + "target"]?.string ?? "abs") == "log_abs"
            for l in 0..<layers {
                let a = try copy("blk.\(l).ffn_pred_a", as: UInt16.self, count: rank * dim)
                let b = try copy("blk.\(l).ffn_pred_b", as: UInt16.self, count: ffn * rank)
                let bias = try copy("blk.\(l).ffn_pred_bias", as: Float.self, count: ffn)
                predictors.append(Predictor(a: UnsafeMutableRawPointer(a), b: UnsafeMutableRawPointer(b), bias: bias,
                                            rank: rank, logTarget: logTarget))
                resident += (rank * dim + ffn * rank) * 2 + ffn * 4
            }
        }
        self.predictors = predictors
        self.groupMass = groupMass

        // The budget: resident weights and two layers of read buffers first; what is left holds FFN groups.
        let stagingBytes: Int
        switch options.mode {
        case .resident: stagingBytes = 0
        case .flash, .naive, .mmap: stagingBytes = 2 * layout.layerBytes
        }
        let minimum = resident + stagingBytes
        var capacity = G, pinned = G, window = 0, pinnedLayers = layers
        if let budget = options.memoryBudget {
            guard budget >= minimum else { throw PagingError.budgetTooSmall(budget: budget, minimum: minimum, resident: resident) }
            let spareGroups = (budget - minimum) / bb
            capacity = min(G, spareGroups / layers)
            pinnedLayers = min(layers, (budget - minimum) / layout.layerBytes)
        } else if options.mode != .resident {
            // Paging without a budget: nothing cached beyond the read buffers.
            capacity = 0
            pinnedLayers = 0
        }
        switch options.mode {
        case .resident:
            capacity = G; pinned = G
        case .naive, .mmap:
            capacity = 0; pinned = 0
        case .flash:
            if options.window > 0 {
                let perToken: Int
                if case .predictor(let keep) = options.sparsity { perToken = Int((keep * Double(G)).rounded(.up)) } else { perToken = G }
                window = min(capacity, options.window * perToken)
            }
            pinned = capacity - window
        }
        if options.mode != .mmap { pinnedLayers = 0 }
        let cacheBytes = options.mode == .mmap ? pinnedLayers * layout.layerBytes : layers * capacity * bb
        plan = PagingPlan(budget: options.memoryBudget, residentBytes: resident, stagingBytes: stagingBytes,
                          minimumBytes: minimum, pinnedGroups: pinned, windowGroups: capacity - pinned,
                          groupsPerLayer: G, pinnedLayers: pinnedLayers, cacheBytes: cacheBytes)

        // Block rows with every group kept (resident, or a flash budget holding the whole FFN, no window): the
        // layers are reassembled at load into the ordinary matrices (no larger than the groups they replace).
        let dense = !columns && pinned == G && window == 0 && (options.mode == .resident || options.mode == .flash)
        self.dense = dense
        let slotBytes = dense ? 0 : layers * capacity * bb
        // Memory for the slots and the two staging buffers, in one aligned arena.
        let arenaBytes = slotBytes + stagingBytes
        let arena = arenaBytes > 0 ? UnsafeMutableRawPointer.allocate(byteCount: arenaBytes, alignment: FlashLayout.ioAlignment) : nil
        self.arena = arena
        let base = arena ?? UnsafeMutableRawPointer(bitPattern: FlashLayout.ioAlignment)!
        caches = (0..<layers).map { l in
            dense ? NeuronBundleCache(groups: G, capacity: 0, pinned: 0, slots: base, bundleBytes: bb)
                  : NeuronBundleCache(groups: G, capacity: capacity, pinned: pinned, slots: base + l * capacity * bb, bundleBytes: bb)
        }
        staging = stagingBytes > 0 ? [base + slotBytes, base + slotBytes + layout.layerBytes] : []

        if options.mode == .mmap {
            mapped = file.file
            mmapFd = open(file.path, O_RDONLY)
            reader = nil
        } else {
            mapped = nil
            mmapFd = -1
            reader = try DirectReader(path: file.path, threads: options.mode == .resident ? 4 : options.ioThreads)
        }
        if options.asyncReads, options.mode == .flash || options.mode == .naive,
           let first = AsyncBundleReads(path: file.path, maxReads: G), let second = AsyncBundleReads(path: file.path, maxReads: G) {
            asyncReads = [first, second]
        } else {
            asyncReads = []
        }
        batches = [ReadBatch(maxSegments: G), ReadBatch(maxSegments: G)]
        location = [[UnsafeRawPointer?]](repeating: [UnsafeRawPointer?](repeating: nil, count: G), count: 2)
        needed = .allocate(capacity: max(1, maxBatch) * G)
        needed.initialize(repeating: false, count: max(1, maxBatch) * G)
        readThisStep = .allocate(capacity: 2 * G)
        ptrs = .allocate(capacity: ffn)
        ids = .allocate(capacity: ffn)
        g = .allocate(capacity: ffn)
        u = .allocate(capacity: ffn)
        h = .allocate(capacity: ffn)
        absH = .allocate(capacity: ffn)
        scores = .allocate(capacity: ffn)
        groupScores = .allocate(capacity: G)
        scratch = .allocate(capacity: max(G, ffn))
        xq = .allocate(byteCount: dim / 32 * Int(PL_Q8_0_BLOCK_BYTES), alignment: 64)
        hq = .allocate(byteCount: ffn / 32 * Int(PL_Q8_0_BLOCK_BYTES), alignment: 64)
        batchXq = .allocate(byteCount: max(1, maxBatch) * dim / 32 * Int(PL_Q8_0_BLOCK_BYTES), alignment: 64)
        batchG = .allocate(capacity: max(1, maxBatch) * ffn)
        batchU = .allocate(capacity: max(1, maxBatch) * ffn)
        blockRowsXq = .allocate(byteCount: columns ? 64 : PagedFeedForward.blockRowsInputBytes(dim: dim, maxBatch: maxBatch), alignment: 64)
        accPerPart = ffn / 32 * ((dim + pool.threadCount - 1) / pool.threadCount + 16)
        acc = .allocate(capacity: accPerPart * pool.threadCount)

        if dense { try loadDense() } else { try loadPinned() }
        for info in file.tensors where info.name.hasSuffix(".ffn_bundles") {
            file.file.adviseDontNeed(offset: info.fileOffset, length: info.byteCount, evict: evicts)
        }
    }

    deinit {
        reader?.shutdown()
        // Reads still in flight land in the arena: let them finish before it is freed.
        for reads in asyncReads { try? reads.wait() }
        if mmapFd >= 0 { close(mmapFd) }
        for p in downScales { p.deallocate() }
        linear?.deallocate()
        downMatrix?.deallocate()
        for p in predictors { p.a.deallocate(); p.b.deallocate(); p.bias.deallocate() }
        arena?.deallocate()
        for p in [g, u, h, absH, scores, groupScores, scratch] { p.deallocate() }
        ptrs.deallocate(); ids.deallocate(); needed.deallocate(); readThisStep.deallocate()
        xq.deallocate(); hq.deallocate(); acc.deallocate()
        batchXq.deallocate(); batchG.deallocate(); batchU.deallocate(); blockRowsXq.deallocate()
    }

    /// Reads each layer whole (into a staging buffer, or a temporary one in resident mode) and reassembles it.
    private func loadDense() throws {
        guard let reader else { return }
        let temporary = staging.isEmpty
            ? UnsafeMutableRawPointer.allocate(byteCount: layout.layerBytes, alignment: FlashLayout.ioAlignment) : nil
        defer { temporary?.deallocate() }
        let buffer = temporary ?? staging[0]
        for l in 0..<config.numHiddenLayers {
            let batch = batches[0]
            batch.reset()
            batch.add(offset: bundleOffsets[l], length: layout.layerBytes, into: buffer, maxRead: layout.layerBytes)
            reader.submit(batch)
            try batch.wait()
            denseLayers.append(DenseFFNLayer(layout: layout, block: l, bundles: UnsafeRawPointer(buffer)))
        }
    }

    /// Fills the pinned slots: the groups with the most calibration mass when the file has it, else the first.
    private func loadPinned() throws {
        guard let reader, caches.first.map({ $0.pinned > 0 }) == true else { return }
        let G = layout.groupsPerLayer, bb = layout.bundleBytes
        for (l, cache) in caches.enumerated() {
            var order = Array(0..<G)
            if l < groupMass.count { order.sort { groupMass[l][$0] > groupMass[l][$1] } }
            let chosen = order.prefix(cache.pinned).sorted()
            let batch = batches[0]
            batch.reset()
            for (slot, grp) in chosen.enumerated() {
                cache.pin(group: grp, slot: slot)
                batch.add(offset: bundleOffsets[l] + grp * bb, length: bb, into: cache.pointer(slot: slot), maxRead: 1 << 20)
            }
            reader.submit(batch)
            try batch.wait()
        }
    }

    /// A new sequence: the next step plans its reads afresh (the window keeps its groups; they are still valid).
    public func reset() {
        lastBlock = -1
    }

    // MARK: - The FFN step

    /// out[r] = Wdown · swiglu(Wgate·x[r], Wup·x[r]) for the `rows` inputs of pass `pass` (block `block`).
    public func forward(pass: Int, block: Int, input: UnsafeMutablePointer<Float>, rows: Int,
                        out: UnsafeMutablePointer<Float>) throws {
        let G = layout.groupsPerLayer
        if pass == 0 {
            token += 1
            // The embedding rows the forward pass just looked up through the map: out of the page cache again, so a
            // step leaves at most a batch's rows there (ProcessBudget.pageCacheBytes).
            if evicts, let e = embeddingRange { file.adviseDontNeed(offset: e.offset, length: e.length, evict: true) }
        }
        var t0 = DispatchTime.now().uptimeNanoseconds
        // Seconds since the last lap, for the I/O / management / compute split.
        func lap() -> Double {
            let t1 = DispatchTime.now().uptimeNanoseconds
            defer { t0 = t1 }
            return Double(t1 - t0) * 1e-9
        }
        stats.layerSteps += 1

        if dense {
            stats.groupsNeeded += G
            stats.groupsInMemory += G
            stats.neuronsComputed += config.intermediateSize * rows
            stats.manageSeconds += lap()
            denseLayers[block].forward(linear: linear!, input: input, rows: rows, out: out, g: batchG, u: batchU)
            stats.computeSeconds += lap()
            return
        }

        if options.mode == .mmap {
            let base = mapped!.base + bundleOffsets[block]
            for gi in 0..<G { location[0][gi] = UnsafeRawPointer(base + gi * layout.bundleBytes) }
            for r in 0..<rows {
                for gi in 0..<G { needed[r * G + gi] = true }
            }
            stats.groupsNeeded += G
            for gi in 0..<G { readThisStep[gi] = true }
            stats.manageSeconds += lap()
            compute(block: block, buffer: 0, input: input, rows: rows, out: out)
            stats.computeSeconds += lap()
            // A shared block's next pass (immediate layer sharing) still needs its pages.
            if block >= plan.pinnedLayers, nextBlock(after: pass) != block {
                mapped!.adviseDontNeed(offset: bundleOffsets[block], length: layout.layerBytes)
                _ = pl_drop_cached(mmapFd, Int64(bundleOffsets[block]), Int64(layout.layerBytes))
                stats.bytesRead += layout.layerBytes
            }
            stats.manageSeconds += lap()
            return
        }

        // A shared block's second pass (immediate layer sharing) uses the groups already in memory.
        let buffer: Int
        if block == lastBlock, pass > 0 {
            buffer = lastBuffer
        } else {
            buffer = pending[0] == block ? 0 : (pending[1] == block ? 1 : (lastBuffer ^ 1))
            if let other = pending[buffer], other != block {
                // A read for another block still owns this buffer (the sequence was cut short): let it land.
                try? waitReads(buffer: buffer)
                pending[buffer] = nil
            }
            if pending[buffer] != block {
                if predictors.isEmpty {
                    selectAll(rows: rows)
                } else {
                    predict(block: block, input: input, rows: rows)
                    stats.computeSeconds += lap()
                }
                issue(block: block, buffer: buffer, rows: rows)
            }
            stats.manageSeconds += lap()
            do {
                try waitReads(buffer: buffer)
            } catch {
                invalidate(buffer: buffer)
                throw error
            }
            pending[buffer] = nil
            stats.ioWaitSeconds += lap()
            lastBlock = block
            lastBuffer = buffer
        }

        // Flash: reads of the next block run while this one computes, when its choice does not need its input.
        // (Naive is the paper's baseline loader: each layer read in full when it is reached, nothing ahead.)
        if options.mode == .flash, predictors.isEmpty, let next = nextBlock(after: pass), next != block, pending[buffer ^ 1] == nil {
            // Every row of whatever batch comes next needs every group (the choice is input-independent).
            selectAll(rows: maxBatch)
            issue(block: next, buffer: buffer ^ 1, rows: 1)
            stats.manageSeconds += lap()
        }
        compute(block: block, buffer: buffer, input: input, rows: rows, out: out)
        stats.computeSeconds += lap()
    }

    /// Bytes of the block-rows quantized inputs (a batch in two formats), for the budget's scratch.
    public static func blockRowsInputBytes(dim: Int, maxBatch: Int) -> Int {
        2 * max(1, maxBatch) * Linear.quantizedInputBytes(columns: dim)
    }

    /// Largest single read: big enough for the storage's best throughput per read (≥ 256 KiB measured here),
    /// small enough that one layer's reads spread over several readers.
    static let maxRead = 256 * 1024

    private func nextBlock(after pass: Int) -> Int? {
        let passes = schedule.passes
        return pass + 1 < passes.count ? passes[pass + 1] : passes.first
    }

    private func selectAll(rows: Int) {
        for i in 0..<(rows * layout.groupsPerLayer) { needed[i] = true }
    }

    /// The predictor's choice for each row: its top `keep` fraction of groups by predicted |h| mass.
    private func predict(block: Int, input: UnsafeMutablePointer<Float>, rows: Int) {
        guard case .predictor(let keep) = options.sparsity else { return }
        let p = predictors[block], dim = config.hiddenSize, ffn = config.intermediateSize, G = layout.groupsPerLayer
        let k = max(1, min(G, Int((keep * Double(G)).rounded(.up))))
        for r in 0..<rows {
            let x = input + r * dim
            pl_matvec(Int32(GGMLType.f16.rawValue), p.a, dim * 2, x, scratch, Int64(dim), 0, Int64(p.rank))
            pl_matvec(Int32(GGMLType.f16.rawValue), p.b, p.rank * 2, scratch, scores, Int64(p.rank), 0, Int64(ffn))
            for gi in 0..<G {
                var s: Float = 0
                for i in layout.neurons(inGroup: gi) {
                    let v = scores[i] + p.bias[i]
                    s += p.logTarget ? expf(v) : max(v, 0)
                }
                groupScores[gi] = s
            }
            let cut = kthLargest(groupScores, count: G, k: k)
            for gi in 0..<G { needed[r * G + gi] = groupScores[gi] >= cut }
        }
    }

    /// Finds, for block `block`, the groups the rows need that are not in memory, assigns each a home (a window
    /// slot or the staging buffer) and queues its read.
    private func issue(block: Int, buffer: Int, rows: Int) {
        let G = layout.groupsPerLayer, bb = layout.bundleBytes
        let cache = caches[block], batch = batches[buffer]
        batch.reset()
        let read = readThisStep + buffer * G
        for gi in 0..<G {
            read[gi] = false
            var want = false
            for r in 0..<rows where needed[r * G + gi] { want = true; break }
            if let s = cache.slot(of: gi) {
                cache.touch(slot: s, token: token)
                location[buffer][gi] = UnsafeRawPointer(cache.pointer(slot: s))
                if want { stats.groupsNeeded += 1; stats.groupsInMemory += 1 }
                continue
            }
            location[buffer][gi] = nil
            guard want else { continue }
            stats.groupsNeeded += 1
            let dest: UnsafeMutableRawPointer
            if options.mode == .flash, options.window > 0, let s = cache.admit(group: gi, token: token) {
                dest = cache.pointer(slot: s)
            } else {
                dest = staging[buffer] + gi * bb
            }
            location[buffer][gi] = UnsafeRawPointer(dest)
            read[gi] = true
            batch.add(offset: bundleOffsets[block] + gi * bb, length: bb, into: dest, maxRead: PagedFeedForward.maxRead)
        }
        stats.bytesRead += batch.bytes
        stats.reads += batch.count
        pending[buffer] = block
        if asyncReads.isEmpty {
            reader!.submit(batch)
        } else {
            do {
                try asyncReads[buffer].submit(batch)
            } catch {
                submitFailure[buffer] = error
            }
        }
    }

    /// A submit that failed (reported by the wait for its buffer).
    private var submitFailure: [PagingError?] = [nil, nil]

    /// Blocks until the reads queued for `buffer` are in; throws the first failure.
    private func waitReads(buffer: Int) throws(PagingError) {
        if let e = submitFailure[buffer] {
            submitFailure[buffer] = nil
            throw e
        }
        if asyncReads.isEmpty { try batches[buffer].wait() } else { try asyncReads[buffer].wait() }
    }

    /// After a failed read: the groups meant for window slots must not be used later.
    private func invalidate(buffer: Int) {
        pending[buffer] = nil
        lastBlock = -1
        for cache in caches {
            for s in cache.pinned..<cache.capacity {
                if let gi = cache.group(inSlot: s), readThisStep[buffer * layout.groupsPerLayer + gi] { cache.evict(slot: s) }
            }
        }
    }

    // MARK: - Compute

    private func compute(block: Int, buffer: Int, input: UnsafeMutablePointer<Float>, rows: Int,
                         out: UnsafeMutablePointer<Float>) {
        if layout.format == .blockRows {
            computeBlockRows(block: block, buffer: buffer, input: input, rows: rows, out: out)
            return
        }
        let dim = config.hiddenSize, ffn = config.intermediateSize, G = layout.groupsPerLayer
        let nb = layout.neuronBytes
        let read = readThisStep + buffer * G
        // The bundles row `r` computes: every group in memory (computing it costs no read), except a group read
        // for another row of the batch, so each position computes what it would have alone.
        func list(row r: Int) -> Int {
            var n = 0
            for gi in 0..<G {
                guard let base = location[buffer][gi] else { continue }
                if read[gi] && !needed[r * G + gi] && options.mode != .mmap { continue }
                for i in layout.neurons(inGroup: gi) {
                    ptrs[n] = base + (i - gi * layout.groupNeurons) * nb
                    ids[n] = Int32(i)
                    n += 1
                }
            }
            return n
        }
        let ptrBase = UnsafePointer(ptrs)
        // A batch whose rows share one list (no per-row predictor choice) gets its gate/up from one pass over
        // the bundles, each used for every row while in cache (bit-identical to one row at a time).
        let batched = rows > 1 && predictors.isEmpty
        if batched {
            let n = list(row: 0)
            let stride = dim / 32 * Int(PL_Q8_0_BLOCK_BYTES)
            for r in 0..<rows { pl_quantize_q8_0(input + r * dim, batchXq + r * stride, Int64(dim)) }
            let parts = min(pool.threadCount, max(1, n / 64))
            let xqc = UnsafeRawPointer(batchXq), gp = batchG, up = batchU
            pool.run(parts: parts) { part in
                let k0 = n * part / parts, k1 = n * (part + 1) / parts
                ptrBase.withMemoryRebound(to: UnsafeRawPointer?.self, capacity: n) { p in
                    pl_bundle_gate_up_batch_q8_0(p, Int64(k0), Int64(k1), xqc, stride, Int64(rows), Int64(dim), gp, up, Int64(n))
                }
            }
        }
        for r in 0..<rows {
            var n = list(row: r)
            if batched {
                g.update(from: batchG + r * n, count: n)
                u.update(from: batchU + r * n, count: n)
            } else {
                let x = input + r * dim
                pl_quantize_q8_0(x, xq, Int64(dim))
                let parts = min(pool.threadCount, max(1, n / 64))
                let xqc = UnsafeRawPointer(xq), gp = g, up = u, count = n
                pool.run(parts: parts) { part in
                    let k0 = count * part / parts, k1 = count * (part + 1) / parts
                    ptrBase.withMemoryRebound(to: UnsafeRawPointer?.self, capacity: count) { p in
                        pl_bundle_gate_up_q8_0(p, Int64(k0), Int64(k1), xqc, Int64(dim), gp, up)
                    }
                }
            }
            pl_swiglu(g, u, Int64(n))
            for i in 0..<ffn { h[i] = 0 }
            for k in 0..<n { h[Int(ids[k])] = g[k] }
            n = applyComputeRule(count: n, buffer: buffer, block: block)
            stats.neuronsComputed += n
            pl_quantize_q8_0(h, hq, Int64(ffn))
            let o = out + r * dim, scales = UnsafePointer(downScales[block]), hqc = UnsafeRawPointer(hq)
            let accBase = acc, per = accPerPart, idc = UnsafePointer(ids), count = n
            let rowParts = pool.threadCount
            pool.run(parts: rowParts) { part in
                // Rows split on 16-row boundaries so each part's vector loop stays whole.
                let r0 = min(dim, (dim / 16) * part / rowParts * 16), r1 = part == rowParts - 1 ? dim : min(dim, (dim / 16) * (part + 1) / rowParts * 16)
                guard r0 < r1 else { return }
                ptrBase.withMemoryRebound(to: UnsafeRawPointer?.self, capacity: count) { p in
                    pl_bundle_down_q8_0(p, idc, Int64(count), hqc, scales, Int64(dim), Int64(ffn),
                                        accBase + part * per, o + r0, Int64(r0), Int64(r1))
                }
            }
        }
    }

    /// Block rows: per group in memory, the dense row kernel on its gate and up rows (neurons of groups not used stay
    /// 0, so their h is 0), SwiGLU on its neurons and its down blocks copied into the reassembled down matrix, all in
    /// one round of the threads (each takes a share of the groups, on the layer's inputs quantized once); then the
    /// dense kernel on that matrix. Rows share one pass when they use the same groups (no predictor). The row kernel
    /// and the activation quantization are Linear's, so with every neuron used the result is the ordinary file's.
    private func computeBlockRows(block: Int, buffer: Int, input: UnsafeMutablePointer<Float>, rows: Int,
                                  out: UnsafeMutablePointer<Float>) {
        let dim = config.hiddenSize, ffn = config.intermediateSize, G = layout.groupsPerLayer
        let read = readThisStep + buffer * G
        let linear = linear!, down = downMatrix!
        let types = layout.types(block)
        let downBlock = types.down.blockSize, downBlockBytes = types.down.blockBytes
        let downRowBytes = layout.downRowBytes(block), sliceBytes = layout.downSliceBytes(block)
        let gateRowBytes = layout.gateRowBytes(block), upRowBytes = layout.upRowBytes(block)
        let upOffset = layout.upOffset(block), downOffset = layout.downOffset(block)
        let downWeights = WeightTensor(name: "ffn_down", type: types.down, rows: dim, columns: ffn,
                                       rowBytes: downRowBytes, data: UnsafeRawPointer(down))
        let gateType = Int32(types.gate.rawValue), upType = Int32(types.up.rawValue)
        let gateAct = pl_activation_type(gateType), upAct = pl_activation_type(upType)
        let stride = Linear.quantizedInputBytes(columns: dim)
        let shared = predictors.isEmpty
        let location = self.location[buffer], needed = self.needed
        var r0 = 0
        while r0 < rows {
            let n = shared ? rows : 1
            let g = batchG + r0 * ffn, u = batchU + r0 * ffn
            g.initialize(repeating: 0, count: n * ffn)
            u.initialize(repeating: 0, count: n * ffn)
            let x = input + r0 * dim
            let xqGate = UnsafeRawPointer(blockRowsXq), xqUp = UnsafeRawPointer(blockRowsXq + (upAct == gateAct ? 0 : n * stride))
            func quantize(_ act: Int32, into dst: UnsafeMutableRawPointer) {
                for t in 0..<n {
                    switch act {
                    case Int32(PL_TYPE_Q8_0): pl_quantize_q8_0(x + t * dim, dst + t * stride, Int64(dim))
                    case Int32(PL_TYPE_Q8_K): pl_quantize_q8_K(x + t * dim, dst + t * stride, Int64(dim))
                    default: pl_quantize_q8_1(x + t * dim, dst + t * stride, Int64(dim))
                    }
                }
            }
            quantize(gateAct, into: blockRowsXq)
            if upAct != gateAct { quantize(upAct, into: blockRowsXq + n * stride) }
            let parts = pool.threadCount
            pool.run(parts: parts) { p in
                for gi in ThreadPool.share(G, granularity: 1, part: p, parts: parts) {
                    guard let base = location[gi] else { continue }
                    // A group read for another row of the batch is not used by this one (as in `list(row:)`).
                    if read[gi] && !needed[r0 * G + gi] { continue }
                    let neurons = layout.neurons(inGroup: gi), lo = neurons.lowerBound
                    pl_matmul_q(gateType, base, gateRowBytes, xqGate, stride, Int64(n), g + lo, Int64(ffn), Int64(dim),
                                0, Int64(neurons.count))
                    pl_matmul_q(upType, base + upOffset, upRowBytes, xqUp, stride, Int64(n), u + lo, Int64(ffn), Int64(dim),
                                0, Int64(neurons.count))
                    for t in 0..<n { pl_swiglu(g + t * ffn + lo, u + t * ffn + lo, Int64(neurons.count)) }
                    let first = lo / downBlock * downBlockBytes, bytes = neurons.count / downBlock * downBlockBytes
                    let slices = base + downOffset
                    for r in 0..<dim {
                        (down + r * downRowBytes + first).copyMemory(from: slices + r * sliceBytes, byteCount: bytes)
                    }
                }
            }
            for gi in 0..<G where location[gi] != nil && !(read[gi] && !needed[r0 * G + gi]) {
                stats.neuronsComputed += layout.neurons(inGroup: gi).count * n
            }
            linear(downWeights, g, n: n, out + r0 * dim)
            r0 += n
        }
    }

    /// The exact/threshold rules: drop neurons by their computed |h|. Returns the neurons kept (the list is
    /// compacted). Counts what an oracle would have read: the groups with a kept neuron that were not in memory.
    private func applyComputeRule(count n: Int, buffer: Int, block: Int) -> Int {
        let cut: Float
        switch options.sparsity {
        case .none, .predictor: return n
        case .threshold(let t): cut = Float(t)
        case .exact(let keep):
            for k in 0..<n { absH[k] = abs(g[k]) }
            let want = max(1, min(n, Int((keep * Double(config.intermediateSize)).rounded(.up))))
            cut = kthLargest(absH, count: n, k: want)
        }
        let G = layout.groupsPerLayer
        var kept = 0
        var lastGroup = -1
        let read = readThisStep + buffer * G
        for k in 0..<n {
            let i = Int(ids[k])
            if abs(g[k]) >= cut {
                ptrs[kept] = ptrs[k]
                ids[kept] = ids[k]
                kept += 1
                let gi = i / layout.groupNeurons
                if gi != lastGroup {
                    lastGroup = gi
                    if read[gi] || options.mode == .naive || options.mode == .mmap { stats.oracleBytes += layout.bundleBytes }
                }
            } else {
                h[i] = 0
            }
        }
        return kept
    }

    /// The k-th largest of `count` values (quickselect on a scratch copy; allocates nothing).
    private func kthLargest(_ v: UnsafeMutablePointer<Float>, count: Int, k: Int) -> Float {
        for i in 0..<count { scratch[i] = v[i] }
        var lo = 0, hi = count - 1
        let target = k - 1
        while lo < hi {
            let pivot = scratch[(lo + hi) / 2]
            var i = lo, j = hi
            while i <= j {
                while scratch[i] > pivot { i += 1 }
                while scratch[j] < pivot { j -= 1 }
                if i <= j { scratch.swapAt(i, j); i += 1; j -= 1 }
            }
            if target <= j { hi = j } else if target >= i { lo = i } else { break }
        }
        return scratch[target]
    }
}

private extension UnsafeMutablePointer where Pointee == Float {
    func swapAt(_ i: Int, _ j: Int) {
        let t = self[i]; self[i] = self[j]; self[j] = t
    }
}
