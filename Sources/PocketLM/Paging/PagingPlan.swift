/// How a budget is spent: the fixed resident part, read buffers, and FFN groups kept in memory.
public struct PagingPlan: Sendable, Codable, Equatable {
    public var budget: Int?
    /// Resident weights: embeddings, norms, attention, down-projection scales, predictors.
    public var residentBytes: Int
    /// Buffers the current and the next layer's reads land in.
    public var stagingBytes: Int
    /// Groups one staging buffer holds: every group of a layer, or (flash without a window, fewer than all groups
    /// kept) the most a layer can lack, those beyond its pinned ones.
    public var stagingGroups: Int
    /// Staging buffers: the layer computing and the layers whose reads are queued behind it (flash without a window
    /// under a budget: `readDepth(layerReadBytes:)`; otherwise two).
    public var stagingBuffers = 2
    /// The least budget that runs: resident + staging.
    public var minimumBytes: Int
    /// FFN groups kept in memory per layer: pinned (loaded once) and window slots.
    public var pinnedGroups: Int
    public var windowGroups: Int
    /// Flash: the layers that hold one pinned group more than `pinnedGroups` (the spare room's remainder after every
    /// layer got the same count; otherwise up to a group short of a layer's worth of room would go unused): those
    /// whose groups cost the most to read (`FlashLayout.groupReadBytes`), the first of equals, in layer order.
    public var extraPinnedLayers: [Int] = []
    public var groupsPerLayer: Int
    /// Layers whose FFN the mmap mode keeps mapped.
    public var pinnedLayers: Int
    public var cacheBytes: Int
    /// Flash under a process budget: group slots (all layers) lent at load from the memory the budget sets aside for
    /// the KV cache and longer batches, given back as those fill (not counted in `weightBytes`).
    public var lentSlots = 0
    /// Weights in memory at most: resident + staging + cache.
    public var weightBytes: Int { residentBytes + stagingBytes + cacheBytes }

    /// Pinned groups of layer `layer` (flash: `pinnedGroups`, one more in the `extraPinnedLayers`).
    public func pinnedGroups(layer: Int) -> Int { pinnedGroups + (extraPinnedLayers.contains(layer) ? 1 : 0) }
    /// Group slots of layer `layer`: its pinned groups and the window.
    public func capacity(layer: Int) -> Int { pinnedGroups(layer: layer) + windowGroups }
}

extension PagingPlan {
    /// Divides the weights' budget (`options.memoryBudget`): resident weights and two layers of read buffers first;
    /// what is left holds FFN groups, the same number in every layer (pinned, and with a window the slots for the
    /// groups of the last tokens) and the remainder one more pinned group in the layers whose groups are the largest
    /// reads (with every group needed every token, a group kept there saves the most), or, in mmap mode, whole
    /// layers kept mapped. Without a budget: everything resident
    /// in resident mode, nothing beyond the read buffers otherwise.
    ///
    /// Flash without a window reads at most the groups a layer does not pin, so its read buffers hold only those:
    /// each group pinned per layer frees two groups of staging, which pin more (c groups in each of L layers and
    /// 2·(G − c) staged fit where L·c + 2·G did: c grows by L/(L − 2), 9% for 24 layers). Keeping every group keeps
    /// the two whole buffers (the layers are reassembled through one at load).
    init(layout: FlashLayout, options: PagingOptions, layers: Int, residentBytes resident: Int) throws(PagingError) {
        let G = layout.groupsPerLayer, bb = layout.bundleBytes
        var stagingBytes: Int
        switch options.mode {
        case .resident: stagingBytes = 0
        case .flash, .naive, .mmap: stagingBytes = 2 * layout.layerBytes
        }
        // Resident mode keeps every group whatever the budget, so a budget must hold them all.
        let minimum = resident + (options.mode == .resident ? layers * layout.layerBytes : stagingBytes)
        var capacity = G, pinned = G, window = 0, pinnedLayers = layers, spareGroups = 0
        if let budget = options.memoryBudget {
            guard budget >= minimum else {
                throw PagingError.budgetTooSmall(budget: budget, minimum: minimum, resident: options.mode == .resident ? minimum : resident)
            }
            spareGroups = (budget - minimum) / bb
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
        var stagingGroups = stagingBytes > 0 ? G : 0
        var buffers = 2
        if options.mode == .flash, window == 0, capacity < G, layers > 2, let budget = options.memoryBudget {
            // Room for everything but the resident weights, in groups: L·c pinned + d·(G − c) staged, d buffers.
            let room = (budget - resident) / bb
            func pins(_ d: Int) -> Int { min(G - 1, max(0, (room - d * G) / (layers - d))) }
            // Small layer reads queue more layers (the device sits idle behind two of them); the staging they take
            // costs pins, so the depth is chosen for the bytes the pinned count leaves to read.
            // (The predictor's choice needs the layer's input: nothing is read ahead, two buffers.)
            let readsAhead: Bool = { if case .predictor = options.sparsity { false } else { true } }()
            buffers = layers > 4 && readsAhead ? PagingPlan.readDepth(layerReadBytes: (G - pins(2)) * (0..<layers).map(layout.groupReadBytes).max()!) : 2
            // Never more buffers than the room holds whole layers of (the minimum budget holds two).
            while buffers > 2 && room < buffers * G { buffers -= 1 }
            let c = pins(buffers)
            capacity = c
            pinned = c
            stagingGroups = G - c
            stagingBytes = buffers * stagingGroups * bb
            spareGroups = room - buffers * stagingGroups
        }
        // Flash: what the equal share left over (fewer groups than layers) pins one group more in the layers with
        // the largest group reads.
        let extra = options.mode == .flash && capacity < G ? min(layers, max(0, spareGroups - layers * capacity)) : 0
        let extraLayers = (0..<layers).sorted { (layout.groupReadBytes($1), $0) < (layout.groupReadBytes($0), $1) }
            .prefix(extra).sorted()
        let cacheBytes = options.mode == .mmap ? pinnedLayers * layout.layerBytes : (layers * capacity + extra) * bb
        self.init(budget: options.memoryBudget, residentBytes: resident, stagingBytes: stagingBytes,
                  stagingGroups: stagingGroups, stagingBuffers: buffers, minimumBytes: minimum, pinnedGroups: pinned, windowGroups: capacity - pinned, extraPinnedLayers: extraLayers,
                  groupsPerLayer: G, pinnedLayers: pinnedLayers, cacheBytes: cacheBytes)
    }
}

extension PagingPlan {
    /// Staging buffers for a flash layer that reads `layerReadBytes` per token: enough that the reads queued behind
    /// the layer computing come to `queuedReadBytes` (2 to 4 buffers).
    public static func readDepth(layerReadBytes: Int) -> Int {
        guard layerReadBytes > 0 else { return 2 }
        return min(4, max(2, 1 + (queuedReadBytes + layerReadBytes - 1) / layerReadBytes))
    }

    /// Bytes of reads kept queued ahead of the computing layer (at least one layer's): 8 reader threads of
    /// `PagedFeedForward.maxRead` reads each, twice over.
    public static let queuedReadBytes = 2 * 8 * PagedFeedForward.maxRead
}
