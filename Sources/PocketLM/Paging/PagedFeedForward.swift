import CKernels
import CPlatform
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The FFN of a packed model, its weights paged from storage (`FlashLayout`, `PagingOptions`).
///
/// Per layer and token: decide which bundle groups the token needs (all, or the predictor's top groups),
/// take those in memory (pinned or in the window), read the rest with direct I/O into window slots or the
/// staging buffer (while the previous layer computes, when the choice does not depend on the layer's input),
/// then compute SwiGLU over every bundle in memory with the gather kernels (ckernels.h, pl_bundle_*).
public final class PagedFeedForward: @unchecked Sendable {
    public let layout: FlashLayout
    public let options: PagingOptions
    public internal(set) var plan: PagingPlan
    public internal(set) var stats = PagingStats()
    public let path: String
    /// The gated activation of the model's architecture (SwiGLU or GeGLU).
    public let activation: GatedActivation
    /// An untied model's input embedding, read from storage a row per token (nil: tied, or resident without a
    /// budget; the forward pass then reads rows through the map).
    public let storageEmbedding: StorageEmbedding?

    let config: ModelConfig
    let schedule: LayerSchedule
    let pool: ThreadPool
    let reader: DirectReader?
    /// Per staging buffer: its reads queued asynchronously (empty: the reader threads serve them).
    let asyncReads: [AsyncBundleReads]
    /// Whether the per-token reads went through native AIO (else the reader threads).
    public var readsAreAsync: Bool { !asyncReads.isEmpty }
    /// Seconds since load during which the reader threads had a read queued or running (`DirectReader.busySeconds`);
    /// nil where they do not serve the per-token reads (mmap mode, native AIO).
    public var readBusySeconds: Double? { asyncReads.isEmpty && mapped == nil ? reader?.busySeconds : nil }
    let mapped: MappedFile?
    let mmapFd: Int32
    let file: MappedFile
    let bundleOffsets: [Int]
    /// The columns format's down block scales per layer (freed once reassembled layers hold them).
    var downScales: [UnsafeMutablePointer<UInt16>]
    /// Block rows and reassembled layers: the dense kernels; block rows: the down matrix reassembled from the groups
    /// in memory.
    let linear: Linear?
    let downMatrix: UnsafeMutableRawPointer?
    let caches: [NeuronBundleCache]
    /// Flash under a process budget: extra group slots in the budget's untouched reserve, and the budget that says
    /// how much of it is still untouched (`PagedFeedForward+Reserve`).
    let reserveSlots: ReserveSlots?
    let processBudget: ProcessBudget?
    var kvCacheHighWater = 0, batchHighWater = 1
    /// Every group of every layer in memory, every neuron computed: the layers as the ordinary file's matrices
    /// (empty otherwise; the slots then hold no groups).
    var denseLayers: [DenseFFNLayer] = []
    /// Layers run as the ordinary file's matrices (reassembled at load): all of them or none.
    public var reassembledLayers: Int { denseLayers.count }
    /// Per layer: whether its pinned groups hold their gate and up rows in the packed kernel's 16-row layout (block
    /// rows, repacked in place at load, as `MappedWeightStore` packs the ordinary file's matrices).
    var pinnedRowsPacked: [Bool]
    /// Layers whose pinned groups' gate and up rows are in the packed layout.
    public var packedPinnedLayers: Int { pinnedRowsPacked.filter { $0 }.count }
    let dense: Bool
    let arena: ReadArena?
    let staging: [UnsafeMutableRawPointer]
    /// Under a budget: the file's page cache is the process's memory too, so what is read through the map leaves it.
    let evicts: Bool
    /// The token embedding's bytes in the file when only its lookups read them there: its rows are looked up
    /// through the map each step, and dropped at the next (under a budget). Nil when it stays on storage (untied)
    /// or the tied head reads it in place.
    let embeddingRange: (offset: Int, length: Int)?
    /// Whether each step drops the embedding rows it looked up from the page cache (under a budget, where the
    /// forward pass reads the embedding's file pages only for those lookups).
    public var dropsEmbeddingPages: Bool { evicts && embeddingRange != nil }

    struct Predictor {
        let a: UnsafeMutableRawPointer   // rank × dim F16
        let b: UnsafeMutableRawPointer   // ffn × rank F16
        let bias: UnsafeMutablePointer<Float>
        let rank: Int
        let logTarget: Bool
    }
    let predictors: [Predictor]
    let groupMass: [[Float]]

    // Per-step state, preallocated.
    let batches: [ReadBatch]
    var pending: [Int?]                        // block whose reads each staging buffer holds / awaits
    var location: [[UnsafeRawPointer?]]        // per staging buffer: group → its bytes this step
    var needed: UnsafeMutablePointer<Bool>     // maxBatch × G
    var readThisStep: UnsafeMutablePointer<Bool>  // per buffer × G
    let maxBatch: Int
    var token = 0
    var lastBlock = -1, lastBuffer = 0

    let ptrs: UnsafeMutablePointer<UnsafeRawPointer?>
    /// Block rows: per group, where its down slices are this step (the down kernel's table).
    let downGroups: UnsafeMutablePointer<UnsafeRawPointer?>
    let ids: UnsafeMutablePointer<Int32>
    let g, u, h, absH, scores, groupScores, scratch: UnsafeMutablePointer<Float>
    let xq, hq: UnsafeMutableRawPointer
    /// A batch's quantized inputs and its gate/up outputs (prefill), maxBatch rows each.
    let batchXq: UnsafeMutableRawPointer
    let batchG, batchU: UnsafeMutablePointer<Float>
    /// Block rows: a batch's inputs quantized for the gate and for the up rows (two formats at most).
    let blockRowsXq: UnsafeMutableRawPointer
    /// One tile per thread for a prompt's rows packed on the fly (`Linear.matmulPackingTiles`, and the columns
    /// format's `matmulPackingRowList`), where this tier packs a type of the FFN and a batch can be larger than the
    /// few-inputs kernels take; else nil.
    let batchTiles: UnsafeMutableRawPointer?
    let batchTileBytes: Int
    /// Block rows: a whole gate or up matrix of float rows gathered from the groups for a prompt's batch
    /// (`floatBatchMatrixBytes`), so it goes through Linear in one call as the ordinary file's does; else nil.
    let floatBatchMatrix: UnsafeMutableRawPointer?
    /// Columns: a prompt's inputs, then its h rows, quantized for `computeColumnsBatch` (nil where it does not run).
    let columnsBatchXq: UnsafeMutableRawPointer?
    let acc: UnsafeMutablePointer<Int32>
    let accPerPart: Int

    /// A submit that failed (reported by the wait for its buffer).
    var submitFailure: [PagingError?]

    public init(file: GGUFFile, layout: FlashLayout, config: ModelConfig, schedule: LayerSchedule,
                options: PagingOptions, pool: ThreadPool, residentBytes: Int, maxBatch: Int,
                activation: GatedActivation = GatedActivation(.silu), processBudget: ProcessBudget? = nil) throws {
        self.layout = layout
        self.activation = activation
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
        // Untied (the head is `output.weight`): the input embedding is only ever read a row at a time, so a paged
        // run leaves it on storage (LanguageModel.residentBytes does not count it).
        let storesEmbedding = LanguageModel.embeddingStaysOnStorage(file) && (options.mode != .resident || options.memoryBudget != nil)
        storageEmbedding = try storesEmbedding ? file.tensorInfo("token_embd.weight").map { try StorageEmbedding(path: file.path, tensor: $0) } : nil
        // Tied, the embedding is also the head: packed at load (the store's copy is what the head reads) its file
        // pages serve only the lookups; unpacked (F32/F16/BF16, a K-quant, Q8_0 on AVX2) the head multiplies straight
        // from the map every token, so its pages stay (it is resident weight, in the budget either way).
        let embedding = file.tensorInfo("token_embd.weight")
        let headReadsMap = !LanguageModel.embeddingStaysOnStorage(file) && !(embedding.map(MappedWeightStore.isPackable) ?? false)
        embeddingRange = storageEmbedding != nil || headReadsMap ? nil : embedding.map { ($0.fileOffset, $0.byteCount) }
        // Under a budget each step's embedding rows are dropped from the page cache after use: the next step's lookup
        // faults its row back in, and must not bring the read-around window with it.
        if evicts, let e = embeddingRange { file.file.adviseRandom(offset: e.offset, length: e.length) }

        if case .predictor = options.sparsity, file.tensorInfo("blk.0.ffn_pred_a") == nil {
            throw PagingError.noPredictor(path: file.path)
        }
        let threads = PagingOptions.ioThreadCounts, windows = PagingOptions.windows
        guard threads.contains(options.ioThreads) else {
            throw PagingError.invalidOption("the number of I/O threads must be between \(threads.lowerBound) and \(threads.upperBound), got \(options.ioThreads)")
        }
        guard windows.contains(options.window) else {
            throw PagingError.invalidOption("the window must be between \(windows.lowerBound) and \(windows.upperBound) tokens, got \(options.window)")
        }
        // Only flash keeps recently used groups; a window asked of another mode would change nothing, silently.
        guard options.window == 0 || options.mode == .flash else {
            throw PagingError.invalidOption("a window of recently used FFN groups is kept by flash paging only, not by \(options.mode.rawValue) paging (\(options.mode == .resident ? "every group stays in memory" : "nothing is kept between tokens"))")
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
        let plan = try PagingPlan(layout: layout, options: options, layers: layers, residentBytes: resident)
        self.plan = plan
        let pinned = plan.pinnedGroups, window = plan.windowGroups, capacity = pinned + window
        let stagingBytes = plan.stagingBytes


        // Every group kept (resident, or a flash budget holding the whole FFN, no window) and every neuron computed
        // (the columns format's exact and threshold rules skip some): the layers are reassembled at load into the
        // ordinary matrices, no larger than the groups they replace (columns: with the down scales, freed then).
        let computesEveryNeuron: Bool = {
            switch options.sparsity { case .none, .predictor: true; case .exact, .threshold: false }
        }()
        let dense = pinned == G && window == 0 && (options.mode == .resident || options.mode == .flash) && computesEveryNeuron
        self.dense = dense
        // Block rows and reassembled layers: the dense kernels, on each group's gate/up rows and on a down matrix
        // reassembled from the groups' slices (so with every neuron used the result is the ordinary file's, bit for
        // bit), or on the reassembled matrices.
        linear = columns && !dense ? nil : Linear(pool: pool, maxColumns: max(dim, ffn), maxBatch: max(1, maxBatch),
                                                  tileFloats: PagedFeedForward.floatTileFloats(layout: layout))
        // Per step, a down matrix reassembled from the groups in memory: block rows' (unless the layers are), and
        // the columns format's for a prompt's batch (`computeColumnsBatch`).
        let columnsBatched = columns && !dense && PagedFeedForward.columnsBatch(layout: layout, maxBatch: maxBatch,
                                                                                   sparsity: options.sparsity)
        let reassemblesDown = !dense && (!columns || columnsBatched)
        downMatrix = !reassemblesDown ? nil : {
            let bytes = layout.largestDownBytes
            let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            p.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            return p
        }()
        let slotBytes = dense ? 0 : (0..<layers).reduce(0) { $0 + plan.capacity(layer: $1) } * bb
        // Memory for the slots and the two staging buffers, in one aligned arena.
        let arenaBytes = slotBytes + stagingBytes
        let arena = ReadArena(bytes: arenaBytes)
        self.arena = arena
        let base = arena?.base ?? UnsafeMutableRawPointer(bitPattern: FlashLayout.ioAlignment)!
        // Layer l's slots follow the earlier layers' (the `extraPinnedLayers` hold one more).
        var slotOffset = 0
        let caches = (0..<layers).map { l in
            if dense { return NeuronBundleCache(groups: G, capacity: 0, pinned: 0, slots: base, bundleBytes: bb) }
            let cache = NeuronBundleCache(groups: G, capacity: plan.capacity(layer: l), pinned: plan.pinnedGroups(layer: l),
                                          slots: base + slotOffset, bundleBytes: bb)
            slotOffset += cache.capacity * bb
            return cache
        }
        self.caches = caches
        let buffers = plan.stagingBuffers
        staging = stagingBytes > 0 ? (0..<buffers).map { base + slotBytes + $0 * (stagingBytes / buffers) } : []
        // Flash under a process budget: what the budget sets aside for the KV cache and a long batch, untouched so
        // far, holds more groups until they need it (at most every group each layer lacks).
        self.processBudget = processBudget
        if let processBudget, options.mode == .flash, !dense, capacity < G {
            let lendable = min(processBudget.untouchedBytes(kvCacheCommitted: 0, largestBatch: 1),
                               caches.reduce(0) { $0 + (G - $1.capacity) } * bb)
            let slots = ReserveSlots(lendableBytes: lendable, slotBytes: bb, room: caches.map { G - $0.capacity },
                                     readBytes: (0..<layers).map { layout.groupReadBytes($0) })
            var lentPerLayer = [Int](repeating: 0, count: layers)
            for k in 0..<slots.active { lentPerLayer[slots.layer(ofSlot: k)] += 1 }
            for (cache, lent) in zip(caches, lentPerLayer) { cache.reserveLent(lent) }
            for k in 0..<slots.active { caches[slots.layer(ofSlot: k)].lend(slots.pointer(slot: k)) }
            reserveSlots = slots.active > 0 ? slots : nil
            self.plan.lentSlots = slots.active
        } else {
            reserveSlots = nil
        }

        if options.mode == .mmap {
            mapped = file.file
            // Under a budget the map has no read-around (LanguageModel); this mode reads the layers through faults.
            for offset in bundleOffsets { file.file.adviseNormal(offset: offset, length: layout.layerBytes) }
            mmapFd = open(file.path, O_RDONLY)
            reader = nil
        } else {
            mapped = nil
            mmapFd = -1
            reader = try DirectReader(path: file.path, threads: options.readerThreads)
        }
        let queues = options.asyncReads && (options.mode == .flash || options.mode == .naive)
            ? (0..<buffers).compactMap { _ in AsyncBundleReads(path: file.path, maxReads: G) } : []
        asyncReads = queues.count == buffers ? queues : []
        batches = (0..<buffers).map { _ in ReadBatch(maxSegments: G) }
        pending = [Int?](repeating: nil, count: buffers)
        submitFailure = [PagingError?](repeating: nil, count: buffers)
        location = [[UnsafeRawPointer?]](repeating: [UnsafeRawPointer?](repeating: nil, count: G), count: buffers)
        needed = .allocate(capacity: max(1, maxBatch) * G)
        needed.initialize(repeating: false, count: max(1, maxBatch) * G)
        readThisStep = .allocate(capacity: buffers * G)
        ptrs = .allocate(capacity: ffn)
        downGroups = .allocate(capacity: G)
        downGroups.initialize(repeating: nil, count: G)
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
        batchTileBytes = reassemblesDown ? PagedFeedForward.batchTileBytes(layout: layout, maxBatch: maxBatch) : 0
        batchTiles = batchTileBytes == 0 ? nil : .allocate(byteCount: batchTileBytes * pool.threadCount, alignment: 64)
        let floatMatrixBytes = !columns && !dense ? PagedFeedForward.floatBatchMatrixBytes(layout: layout, maxBatch: maxBatch) : 0
        floatBatchMatrix = floatMatrixBytes == 0 ? nil : .allocate(byteCount: floatMatrixBytes, alignment: 64)
        columnsBatchXq = columnsBatched ? .allocate(byteCount: PagedFeedForward.columnsBatchInputBytes(layout: layout, maxBatch: maxBatch),
                                                  alignment: 64) : nil
        accPerPart = ffn / 32 * ((dim + pool.threadCount - 1) / pool.threadCount + 16)
        acc = .allocate(capacity: accPerPart * pool.threadCount)

        pinnedRowsPacked = [Bool](repeating: false, count: layers)
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
        for p in [g, u, h, absH, scores, groupScores, scratch] { p.deallocate() }
        ptrs.deallocate(); downGroups.deallocate(); ids.deallocate(); needed.deallocate(); readThisStep.deallocate()
        xq.deallocate(); hq.deallocate(); acc.deallocate()
        batchXq.deallocate(); batchG.deallocate(); batchU.deallocate(); blockRowsXq.deallocate()
        batchTiles?.deallocate()
        floatBatchMatrix?.deallocate()
        columnsBatchXq?.deallocate()
    }

    /// A new sequence: the next step plans its reads afresh (the window keeps its groups; they are still valid).
    public func reset() {
        lastBlock = -1
    }

    /// The FFN Linear's tile of dequantized rows: a prompt's F16/BF16 rows go through sgemm a tile at a time, and a
    /// tile of a whole down matrix keeps each call as the ordinary file's (1 float where no layer has such rows).
    public static func floatTileFloats(layout: FlashLayout) -> Int {
        let dequantized: (GGMLType) -> Bool = { $0 == .f16 || $0 == .bf16 }
        let any = (0..<max(1, layout.layerTypes.count)).contains { l in
            let t = layout.types(l)
            return dequantized(t.gate) || dequantized(t.up) || dequantized(t.down)
        }
        return any ? layout.hiddenSize * layout.intermediateSize : 1
    }

    /// What the budget's scratch adds for the paged FFN's format-specific buffers, sized for a batch of `rows`
    /// (allocated for `maxBatch`): block rows' reassembled down matrix, the dense kernels' quantized inputs, their
    /// tile for F16/BF16 rows and each thread's tile for a prompt's rows packed on the fly; the columns format's
    /// reassembled down matrix, tiles and quantized rows for a prompt's batch (`columnsBatch`).
    public static func scratchBytes(layout: FlashLayout, config: ModelConfig, rows: Int, maxBatch: Int, threads: Int,
                                    sparsity: PagingOptions.Sparsity) -> Int {
        let tiles = threads * batchTileBytes(layout: layout, maxBatch: maxBatch)
        if layout.format == .blockRows {
            return layout.largestDownBytes
                + 3 * rows * Linear.quantizedInputBytes(columns: max(config.hiddenSize, config.intermediateSize))
                + blockRowsInputBytes(dim: config.hiddenSize, maxBatch: rows)
                + 4 * floatTileFloats(layout: layout)
                + floatBatchMatrixBytes(layout: layout, maxBatch: maxBatch)
                + tiles
        }
        guard columnsBatch(layout: layout, maxBatch: maxBatch, sparsity: sparsity) else { return 0 }
        return layout.largestDownBytes + tiles + columnsBatchInputBytes(layout: layout, maxBatch: maxBatch)
    }

    /// Bytes of the largest gate or up matrix of float rows (F32/F16/BF16) in block rows, which a prompt's batch
    /// gathers whole from the groups (`floatBatchMatrix`); 0 where none is float or no batch is larger than the
    /// few-inputs kernels take.
    public static func floatBatchMatrixBytes(layout: FlashLayout, maxBatch: Int) -> Int {
        guard maxBatch > Int(PL_FLOAT_FEW_MAX), layout.format == .blockRows else { return 0 }
        var bytes = 0
        for l in 0..<layout.layerTypes.count {
            let t = layout.types(l)
            if pl_activation_type(Int32(t.gate.rawValue)) < 0 { bytes = max(bytes, layout.intermediateSize * layout.gateRowBytes(l)) }
            if pl_activation_type(Int32(t.up.rawValue)) < 0 { bytes = max(bytes, layout.intermediateSize * layout.upRowBytes(l)) }
        }
        return bytes
    }

    /// Bytes of one thread's tile for a prompt's block rows packed on the fly (the largest of the FFN's matrices that
    /// `packsBatchTiles`), or 0 where none does or no batch is larger than the few-inputs kernels take.
    public static func batchTileBytes(layout: FlashLayout, maxBatch: Int) -> Int {
        guard maxBatch > Linear.smallBatch else { return 0 }
        var bytes = 0
        for l in 0..<max(1, layout.layerTypes.count) {   // (none listed: all Q8_0, the columns format)
            let t = layout.types(l)
            for (type, columns) in [(t.gate, layout.hiddenSize), (t.up, layout.hiddenSize), (t.down, layout.intermediateSize)]
                where packsBatchTiles(type) {
                bytes = max(bytes, Linear.packingTileBytes(type: type, columns: columns))
            }
        }
        return bytes
    }

    /// Whether a prompt's block rows of `type` go through the packed batch kernel, packed a tile at a time: where
    /// this tier packs the type and its packed kernel is AVX-512 VNNI's (AVX2's packed batch kernel is no faster
    /// than its row kernel, so the packing would only cost: 15% of a SmolLM2 Q4_1 prompt under a budget, measured).
    static func packsBatchTiles(_ type: GGMLType) -> Bool {
        pl_packed_supported() != 0 && MappedWeightStore.packs(type: type)
    }

    /// Whether a columns-format (Q8_0) layer computes a prompt's batch (more rows than the few-inputs kernels take)
    /// through the dense kernels: its gate/up rows read from the bundles, the down matrix reassembled from their
    /// columns and the resident scales (`computeColumnsBatch`). Only with every neuron in memory computed (no compute
    /// rule drops any after the fact).
    public static func columnsBatch(layout: FlashLayout, maxBatch: Int, sparsity: PagingOptions.Sparsity) -> Bool {
        guard layout.format == .columns, case .none = sparsity else { return false }
        return maxBatch > Linear.smallBatch
    }

    /// Bytes of the columns batch's quantized inputs and h rows (`columnsBatchXq`).
    public static func columnsBatchInputBytes(layout: FlashLayout, maxBatch: Int) -> Int {
        max(1, maxBatch) * Linear.quantizedInputBytes(columns: max(layout.hiddenSize, layout.intermediateSize))
    }

    /// Bytes of the block-rows quantized inputs (a batch in two formats), for the budget's scratch.
    public static func blockRowsInputBytes(dim: Int, maxBatch: Int) -> Int {
        2 * max(1, maxBatch) * Linear.quantizedInputBytes(columns: dim)
    }

    /// Largest single read: big enough for the storage's best throughput per read (≥ 256 KiB measured here),
    /// small enough that one layer's reads spread over several readers. (4 MiB reads, which this virtual disk serves
    /// two times faster than 256 KiB ones in a stream of them, made flash slower on both bench models, alternating
    /// runs: a layer's 6–17 MB then went as 2–5 reads, too few for the readers, and naive faster.)
    static let maxRead = 256 * 1024
}
