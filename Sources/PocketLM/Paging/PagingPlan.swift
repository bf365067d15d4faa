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
    /// Flash under a process budget: group slots (all layers) lent at load from the memory the budget sets aside for
    /// the KV cache and longer batches, given back as those fill (not counted in `weightBytes`).
    public var lentSlots = 0
    /// Weights in memory at most: resident + staging + cache.
    public var weightBytes: Int { residentBytes + stagingBytes + cacheBytes }
}

extension PagingPlan {
    /// Divides the weights' budget (`options.memoryBudget`): resident weights and two layers of read buffers first;
    /// what is left holds FFN groups, the same number in every layer (pinned, and with a window the slots for the
    /// groups of the last tokens), or, in mmap mode, whole layers kept mapped. Without a budget: everything resident
    /// in resident mode, nothing beyond the read buffers otherwise.
    init(layout: FlashLayout, options: PagingOptions, layers: Int, residentBytes resident: Int) throws(PagingError) {
        let G = layout.groupsPerLayer, bb = layout.bundleBytes
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
        self.init(budget: options.memoryBudget, residentBytes: resident, stagingBytes: stagingBytes,
                  minimumBytes: minimum, pinnedGroups: pinned, windowGroups: capacity - pinned,
                  groupsPerLayer: G, pinnedLayers: pinnedLayers, cacheBytes: cacheBytes)
    }
}
