import Foundation
import Testing
import PocketLM

/// Where a budget's group slots go in a file whose layers have different block types (SmolLM2 Q4_K_M: `ffn_down`
/// Q6_K in some layers, Q4_K in others): slots lent from the untouched reserve hold groups of the layers whose groups
/// are the largest reads, and the logits stay the unpacked file's; flash's staging holds only what a layer lacks.
@Suite("Flash plan: mixed block types", .serialized)
struct FlashPlanTests {
    @Test("reserve: lent slots go to the Q6_K layers (their groups are the larger reads) and each saves its group's read; the unpacked file's logits")
    func lentSlotsToLargestReads() throws {
        let (source, path) = try FlashPagingTests.packedSmolLM2KQuant()
        let file = try GGUFFile(path: path)
        let config = try ModelConfig(gguf: file)
        let layout = try #require(try FlashLayout(file: file, config: config))
        let layers = config.numHiddenLayers, G = layout.groupsPerLayer
        let q6 = (0..<layers).filter { layout.layerTypes[$0].down == .q6_K }
        #expect(q6.count >= 4 && q6.count < layers)
        let large = layout.groupReadBytes(q6[0])
        #expect(q6.allSatisfy { layout.groupReadBytes($0) == large })
        #expect((0..<layers).allSatisfy { q6.contains($0) || layout.groupReadBytes($0) < large })

        // A budget whose only untouched part is 4 batch rows of one slot each: 4 slots lent, none pinned.
        let schedule = LayerSchedule.plain(blocks: layers)
        var budget = ProcessBudget(budget: 1 << 30, config: config, schedule: schedule, contextLength: 64, maxBatch: 5,
                                   threads: 1, runtimeBytes: 0, vocabularyBytes: 0, embeddingRowBytes: 0, groupsPerLayer: G)
        budget.kvCacheBytes = 0
        budget.pageCacheBytes = 0
        budget.scratchBytesPerBatchRow = layout.bundleBytes
        #expect(budget.untouchedBytes(kvCacheCommitted: 0, largestBatch: 1) == 4 * layout.bundleBytes)
        let resident = file.tensors.filter { !$0.name.contains("ffn_") }.reduce(0) { $0 + $1.byteCount }
        let minimum = try FlashPagingTests.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: 1 << 40)).plan.minimumBytes
        let options = PagingOptions(mode: .flash, memoryBudget: minimum)
        let t = try Transformer(store: MappedWeightStore(file: file), config: config, schedule: schedule, contextLength: 64,
                                threads: 2, maxBatch: 5, feedForward: { pool, maxBatch in
            try PagedFeedForward(file: file, layout: layout, config: config, schedule: schedule, options: options, pool: pool,
                                 residentBytes: resident, maxBatch: maxBatch, processBudget: budget)
        })
        let ffn = try #require(t.feedForward)
        #expect(ffn.plan.pinnedGroups == 0 && ffn.plan.extraPinnedLayers.isEmpty && ffn.lentSlots == 4)

        // From the second token on: the lent slots are filled and each step's reads are planned a step ahead.
        let (tokens, read) = try Self.decodeAsUnpacked(t, source: source)
        let steps = tokens.count - 1
        let everything = (0..<layers).reduce(0) { $0 + G * layout.groupReadBytes($1) }
        #expect(read.groupsInLentSlots == steps * 4)
        #expect(read.bytesRead == steps * (everything - 4 * large), "the 4 lent groups are Q6_K layers' groups")
    }

    @Test("staging: flash without a window stages only the groups a layer does not pin, and the groups each pin frees (one per staging buffer) hold more pins; the reads and logits are the unpacked file's; naive and a window keep whole layers")
    func stagingHoldsUnpinnedGroups() throws {
        let (source, path) = try FlashPagingTests.packedSmolLM2KQuant()
        let probe = try FlashPagingTests.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: 1 << 40))
        let layout = try #require(probe.transformer.feedForward).layout
        let minimum = probe.plan.minimumBytes, resident = probe.plan.residentBytes
        let G = layout.groupsPerLayer, bb = layout.bundleBytes, layers = try ModelConfig(gguf: GGUFFile(path: path)).numHiddenLayers
        #expect(layers > 2 && G >= 3)
        #expect(minimum == resident + 2 * layout.layerBytes)
        // Room beyond the minimum for about a third of the FFN's groups.
        let budget = minimum + layers * G / 3 * bb + bb / 2
        let (t, plan) = try FlashPagingTests.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: budget))
        let pinnedTotal = (0..<layers).reduce(0) { $0 + plan.pinnedGroups(layer: $1) }
        #expect(plan.pinnedGroups > 0 && plan.pinnedGroups < G)
        #expect(plan.stagingGroups == G - plan.pinnedGroups)
        let buffers = plan.stagingBuffers
        #expect(plan.stagingBytes == buffers * (G - plan.pinnedGroups) * bb)
        #expect(plan.cacheBytes == pinnedTotal * bb && plan.weightBytes <= budget)
        // More than whole-layer staging in as many buffers leaves room for, and no further group fits (one more in
        // every layer needs L − buffers groups; the extras fill what is short of that).
        #expect(pinnedTotal > (budget - resident - buffers * layout.layerBytes) / bb)
        #expect(plan.weightBytes + (layers - buffers) * bb > budget)
        #expect(plan.extraPinnedLayers.count < layers)

        let (tokens, read) = try Self.decodeAsUnpacked(t, source: source)
        let unpinned = (0..<layers).reduce(0) { $0 + (G - plan.pinnedGroups(layer: $1)) * layout.groupReadBytes($1) }
        #expect(read.bytesRead == (tokens.count - 1) * unpinned)

        // Naive reads whole layers; a window's slots may hold groups not needed, so it keeps two whole layers too.
        let naive = try FlashPagingTests.pagedModel(path, PagingOptions(mode: .naive, memoryBudget: budget)).plan
        #expect(naive.stagingGroups == G && naive.stagingBytes == 2 * layout.layerBytes)
        let windowed = try FlashPagingTests.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: budget, window: 1)).plan
        #expect(windowed.stagingGroups == G && windowed.stagingBytes == 2 * layout.layerBytes)
    }

    @Test("read depth: small layer reads get up to four staging buffers (three layers' reads queued behind the one computing, as many in flight after a token), large ones and the minimum budget two; the same bytes per token as planned and the unpacked file's logits")
    func readDepth() throws {
        #expect(PagingPlan.readDepth(layerReadBytes: 100 << 20) == 2)
        #expect(PagingPlan.readDepth(layerReadBytes: PagingPlan.queuedReadBytes) == 2)
        #expect(PagingPlan.readDepth(layerReadBytes: PagingPlan.queuedReadBytes / 2) == 3)
        #expect(PagingPlan.readDepth(layerReadBytes: 4096) == 4 && PagingPlan.readDepth(layerReadBytes: 0) == 2)

        let (source, path) = try FlashPagingTests.packedSmolLM2KQuant()
        let probe = try FlashPagingTests.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: 1 << 40))
        let layout = try #require(probe.transformer.feedForward).layout
        let G = layout.groupsPerLayer, bb = layout.bundleBytes, layers = layout.layerTypes.count
        let budget = probe.plan.minimumBytes + layers * G / 3 * bb
        let (t, plan) = try FlashPagingTests.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: budget))
        let unpinned = (0..<layers).reduce(0) { $0 + (G - plan.pinnedGroups(layer: $1)) * layout.groupReadBytes($1) }
        #expect(plan.stagingBuffers > 2, "SmolLM2's layers read \(unpinned / layers) bytes each")
        // The minimum budget's room holds two whole layers' staging only; the predictor reads nothing ahead.
        #expect(try FlashPagingTests.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: probe.plan.minimumBytes + bb)).plan.stagingBuffers == 2)

        let ffn = try #require(t.feedForward)
        let (tokens, read) = try Self.decodeAsUnpacked(t, source: source) {
            // After a token: the next token's first layers, one per staging buffer.
            #expect(ffn.blocksInFlight.sorted() == Array(0..<plan.stagingBuffers))
        }
        #expect(read.bytesRead == (tokens.count - 1) * unpinned)
    }

    /// Decodes a few tokens through `t` beside the unpacked `source`, expecting each token's logits bit for bit, and
    /// calls `after` after each; returns the tokens and the FFN's stats from the second token on (its reads were
    /// planned a step ahead).
    static func decodeAsUnpacked(_ t: Transformer, source: String, after: () -> Void = {}) throws -> (tokens: [Int], read: PagingStats) {
        let original = try LanguageModel(path: source, options: LoadOptions(threads: 2, contextLength: 64)).transformer
        let ffn = try #require(t.feedForward)
        let tokens = [1, 504, 3458, 282, 4649]
        var before = ffn.stats
        for (i, token) in tokens.enumerated() {
            if i == 1 { before = ffn.stats }
            let a = Array(try t.decode(token)).map(\.bitPattern), b = Array(try original.decode(token)).map(\.bitPattern)
            #expect(a == b, "token \(i): logits differ from the unpacked file's")
            after()
        }
        return (tokens, ffn.stats - before)
    }
}
