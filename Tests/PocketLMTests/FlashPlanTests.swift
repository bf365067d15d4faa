import Foundation
import Testing
import PocketLM

/// Where a budget's group slots go in a file whose layers have different block types (SmolLM2 Q4_K_M: `ffn_down`
/// Q6_K in some layers, Q4_K in others): slots lent from the untouched reserve hold groups of the layers whose groups
/// are the largest reads, and the logits stay the unpacked file's.
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

        let original = try LanguageModel(path: source, options: LoadOptions(threads: 2, contextLength: 64)).transformer
        let tokens = [1, 504, 3458, 282, 4649]
        var before = ffn.stats
        for (i, token) in tokens.enumerated() {
            // From the second token on: the lent slots are filled and each step's reads are planned a step ahead.
            if i == 1 { before = ffn.stats }
            let a = Array(try t.decode(token)).map(\.bitPattern), b = Array(try original.decode(token)).map(\.bitPattern)
            #expect(a == b, "token \(i): logits differ from the unpacked file's")
        }
        let steps = tokens.count - 1
        let everything = (0..<layers).reduce(0) { $0 + G * layout.groupReadBytes($1) }
        let read = ffn.stats - before
        #expect(read.groupsInLentSlots == steps * 4)
        #expect(read.bytesRead == steps * (everything - 4 * large), "the 4 lent groups are Q6_K layers' groups")
    }
}
