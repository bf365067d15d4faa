import CKernels
import Foundation
import Testing
import PocketLM

/// The flash layout and the paged FFN: packing keeps every quantized block, a packed model computes exactly what
/// the original does when every neuron is used (resident, flash, naive or mmap, any budget), budgets and bad
/// files give clear errors, and a shared block is read once for both of its passes.
@Suite("Flash paging", .serialized)
struct FlashPagingTests {
    /// This process's directory of packed files (~100 MB a run with SmolLM2's), removed when the process exits: a
    /// `/tmp` that kept every run's had reached 20 GB.
    static let scratchDirectory: URL = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pocketlm-flash-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(at: FlashPagingTests.scratchDirectory) }
        return dir
    }()

    static func scratch(_ name: String) -> String {
        scratchDirectory.appendingPathComponent(name).path
    }

    static func packed(_ fixture: String, bundleBytes: Int = 4096, name: String? = nil) throws -> String {
        let out = scratch(name ?? fixture.replacingOccurrences(of: ".gguf", with: ".packed-\(bundleBytes).gguf"))
        if !FileManager.default.fileExists(atPath: out) {
            _ = try FlashPacker.pack(source: try TestPaths.fixture(fixture), output: out, bundleBytes: bundleBytes)
        }
        return out
    }

    /// Logits of a prompt as a batch, then of each token decoded one at a time.
    static func logits(_ path: String, _ tokens: [Int], paging: PagingOptions? = nil,
                       schedule: (LayerSchedule.Strategy, Int)? = nil) throws -> [UInt32] {
        let lm = try LanguageModel(path: path, options: LoadOptions(threads: 2, contextLength: 64, layerSchedule: schedule,
                                                                    paging: paging))
        let t = lm.transformer
        // Token by token first, then the batch: decoding leaves the next token's reads in flight for one row.
        var out: [UInt32] = []
        for token in tokens { out += Array(try t.decode(token)).map(\.bitPattern) }
        t.reset()
        out += Array(try tokens.withUnsafeBufferPointer { try t.forward($0, allLogits: true) }).map(\.bitPattern)
        return out
    }

    static let tokens = [1, 270, 340, 285, 223, 40, 84, 297, 327, 284, 223, 50]

    @Test("GGUFWriter output reads back with the same keys, shapes and bytes")
    func writerRoundTrip() throws {
        let path = Self.scratch("writer.gguf")
        let a: [Float] = (0..<64).map { Float($0) * 0.5 }
        let b: [UInt8] = (0..<100).map { UInt8($0 * 3 % 256) }
        let w = try GGUFWriter(path: path, metadata: [("general.architecture", .string("llama")),
                                                      ("x.list", .array([.int32(3), .int32(-4)])),
                                                      ("x.f", .float32(1.5))],
                               tensors: [.init(name: "a", shape: [16, 4], type: .f32), .init(name: "b", shape: [100], type: .i8)],
                               alignment: 4096)
        try a.withUnsafeBytes { try w.write($0) }
        try b.withUnsafeBytes { try w.write(UnsafeRawBufferPointer(rebasing: $0[0..<40])); try w.write(UnsafeRawBufferPointer(rebasing: $0[40...])) }
        try w.finish()
        let f = try GGUFFile(path: path)
        #expect(f.metadata["general.architecture"] == .string("llama"))
        #expect(f.metadata["x.list"] == .array([.int32(3), .int32(-4)]))
        #expect(f.metadata["x.f"] == .float32(1.5))
        #expect(f.alignment == 4096)
        let ta = try #require(f.tensorInfo("a")), tb = try #require(f.tensorInfo("b"))
        #expect(ta.shape == [16, 4] && tb.shape == [100] && tb.type == .i8)
        #expect(ta.fileOffset % 4096 == 0 && tb.fileOffset % 4096 == 0)
        #expect(Array(UnsafeBufferPointer(start: f.data(of: ta).assumingMemoryBound(to: Float.self), count: 64)) == a)
        #expect(Array(UnsafeBufferPointer(start: f.data(of: tb).assumingMemoryBound(to: UInt8.self), count: 100)) == b)
        // Too many bytes for a tensor is an error, not a corrupt file.
        let w2 = try GGUFWriter(path: Self.scratch("writer2.gguf"), metadata: [], tensors: [.init(name: "b", shape: [4], type: .i8)])
        #expect(throws: GGUFError.self) { try [UInt8](repeating: 0, count: 5).withUnsafeBytes { try w2.write($0) } }
    }

    @Test("pack records the layout; bundles hold the source's blocks")
    func packLayout() throws {
        let path = try Self.packed("tiny-q8_0.gguf")
        let f = try GGUFFile(path: path)
        let config = try ModelConfig(gguf: f)
        let layout = try #require(try FlashLayout(file: f, config: config))
        #expect(layout.neuronBytes == 2 * (64 / 32) * 34 + 64)
        #expect(layout.bundleBytes == 4096)
        #expect(layout.groupNeurons == 4096 / layout.neuronBytes)
        #expect(layout.groupsPerLayer == (128 + layout.groupNeurons - 1) / layout.groupNeurons)
        #expect(f.tensorInfo("blk.0.ffn_gate.weight") == nil)
        // Neuron 25's gate row is the source's row 25, byte for byte.
        let src = try GGUFFile(path: try TestPaths.fixture("tiny-q8_0.gguf"))
        let gate = try #require(src.tensorInfo("blk.1.ffn_gate.weight"))
        let bundles = try #require(f.tensorInfo(FlashLayout.bundlesName(1)))
        let i = 25, rowBytes = 64 / 32 * 34
        let packedRow = f.data(of: bundles) + (i / layout.groupNeurons) * layout.bundleBytes + (i % layout.groupNeurons) * layout.neuronBytes
        #expect(memcmp(packedRow, src.data(of: gate) + i * rowBytes, rowBytes) == 0)
        // Re-packing a packed file is refused with a reason.
        #expect(throws: PagingError.self) { try FlashPacker.pack(source: path, output: Self.scratch("again.gguf")) }
    }

    @Test("a packed model computes the original's logits bit for bit in every mode when all neurons are used",
          arguments: [PagingOptions.resident,
                      PagingOptions(mode: .flash, memoryBudget: nil, window: 0),
                      PagingOptions(mode: .naive, memoryBudget: nil),
                      PagingOptions(mode: .mmap, memoryBudget: nil),
                      // A budget bounds the whole process, and this one holds every suite's models at once:
                      // far more than any of them needs, so all neurons stay resident.
                      PagingOptions(mode: .flash, memoryBudget: 1 << 40, window: 0),
                      PagingOptions(mode: .flash, memoryBudget: 1 << 40, window: 2),
                      PagingOptions(mode: .flash, memoryBudget: nil, window: 0, sparsity: .exact(keep: 1.0), ioThreads: 1)])
    func packedEqualsOriginal(paging: PagingOptions) throws {
        let original = try Self.logits(try TestPaths.fixture("tiny-q8_0.gguf"), Self.tokens)
        for bundle in [4096, 8192] {
            let packed = try Self.logits(try Self.packed("tiny-q8_0.gguf", bundleBytes: bundle), Self.tokens, paging: paging)
            let differing = zip(packed, original).filter { $0 != $1 }.count
            #expect(packed.count == original.count && differing == 0, "\(paging.mode) \(bundle): \(differing) logits differ")
        }
        // Every group in memory, no window, every neuron computed: the columns are reassembled at load into the
        // ordinary Q8_0 matrices (the bundle kernels ran a resident MobileLLM-1.5B Q8_0 at 0.6× the ordinary file);
        // otherwise (a window, the exact rule, naive or mmap) the bundle kernels run.
        let lm = try LanguageModel(path: try Self.packed("tiny-q8_0.gguf", bundleBytes: 4096), options: LoadOptions(threads: 1, paging: paging))
        // (Flash with no budget keeps only part of the FFN: not reassembled.)
        let reassembles = paging.window == 0 && (paging.mode == .resident || (paging.mode == .flash && paging.memoryBudget != nil))
            && { if case .exact = paging.sparsity { return false } else { return true } }()
        #expect(lm.transformer.feedForward?.reassembledLayers == (reassembles ? 2 : 0), "\(paging)")
    }

    @Test("budgets: the whole process's budget is split (KV cache, scratch, runtime, weights); the plan fits; too small a budget names the minimum")
    func budgets() throws {
        let path = try Self.packed("tiny-q8_0.gguf")
        let huge = 1 << 40
        let lm = try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: 32, maxBatch: 16,
                                                                    paging: PagingOptions(mode: .flash, memoryBudget: huge)))
        let plan = try #require(lm.transformer.feedForward?.plan)
        let split = try #require(lm.processBudget)
        #expect(plan.pinnedGroups == plan.groupsPerLayer)  // a big budget pins every group
        // The weights get the budget less everything else; the KV cache is the context's (2 layers × 32 positions ×
        // 32 keys and values × 2 bytes), the runtime this process's resident set when loading began.
        #expect(split.budget == huge && split.contextLength == 32)
        #expect(split.kvCacheBytes == 2 * 32 * 32 * 2 * 2)
        #expect(split.runtimeBytes > 0 && split.scratchBytes > 0 && split.marginBytes == ProcessBudget.defaultMargin)
        #expect(plan.budget == split.weightBytes)
        #expect(split.overheadBytes + plan.weightBytes <= huge)
        // A longer context costs its KV cache and attention scores, nothing else.
        let long = try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: 64, maxBatch: 16,
                                                                      paging: PagingOptions(mode: .flash, memoryBudget: huge)))
        let longSplit = try #require(long.processBudget)
        #expect(longSplit.kvCacheBytes == 2 * split.kvCacheBytes)
        // One thread's attention scores over 32 more positions: a tile of queries × 2 heads per KV head each.
        let scores = { (c: Int) in Transformer.attentionScoresPerThread(config: long.config, contextLength: c) }
        #expect(longSplit.scratchBytes == split.scratchBytes + 4 * 1 * (scores(64) - scores(32)))
        #expect(scores(64) - scores(32) >= 32 * 2)

        // Too small: first the costs known before the vocabulary is built (runtime, KV cache, resident weights),
        // then, at a budget that fits those, the exact minimum for this context: the overhead plus the weights' minimum.
        // The runtime is stated, not measured: this process's resident set grows between loads while other suites
        // run beside this one, and a measured one would move the costs between two loads.
        let runtime = 64 << 20
        func minimum(context: Int) throws -> (fixed: Int, minimum: Int) {
            func load(_ budget: Int) throws {
                _ = try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: context, paging: PagingOptions(
                    mode: .flash, memoryBudget: budget, runtimeBytes: runtime)))
            }
            let tooSmall = #expect(throws: PagingError.self) { try load(1) }
            guard case .processBudgetBelowFixedCosts(let b, let fixed, let c, let kv, let w, let r)? = tooSmall else {
                Issue.record("1 byte: wrong error \(String(describing: tooSmall))")
                return (0, 0)
            }
            #expect(b == 1 && c == context && r == runtime && w > 0 && w < plan.minimumBytes)   // the minimum adds read buffers
            #expect(fixed == runtime + kv + w + ProcessBudget.defaultMargin)
            #expect(tooSmall!.localizedDescription.contains("below this model's minimum at a context of \(context) tokens"))
            #expect(!tooSmall!.localizedDescription.contains("--"), "the library names no CLI flag")
            // A budget that fits the fixed costs is told the exact minimum (the vocabulary, scratch and read
            // buffers come on top, so it cannot load).
            let atFixed = #expect(throws: PagingError.self) { try load(fixed) }
            guard case .processBudgetTooSmall(let b2, let m, let c2, let w2, let kv2, let rest)? = atFixed else {
                Issue.record("the fixed costs' budget: wrong error \(String(describing: atFixed))")
                return (fixed, 0)
            }
            #expect(b2 == fixed && c2 == context && w2 == plan.minimumBytes && kv2 == kv && m > b2)
            #expect(m == w2 + kv2 + rest + ProcessBudget.runToRunAllowance, "the need plus the run-to-run allowance")
            #expect(atFixed!.localizedDescription.contains("minimum") && atFixed!.localizedDescription.contains("context of \(context) tokens"))
            #expect(!atFixed!.localizedDescription.contains("--"), "the library names no CLI flag")
            // The stated minimum loads (the vocabulary's measured share may move by less than the allowance).
            #expect(throws: Never.self) { try load(m) }
            return (fixed, m)
        }
        let m32 = try minimum(context: 32), m64 = try minimum(context: 64)
        // Twice the context: exactly one more KV cache's worth of fixed costs (2 layers × 32 positions × 64 × 2 bytes).
        #expect(m64.fixed - m32.fixed == 2 * 32 * 64 * 2)
        #expect(m32.minimum > m32.fixed && m64.minimum > m64.fixed)
        // Room for groups above the minimum.
        let slack = 64 << 20
        let tight = try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: 32, paging: PagingOptions(
            mode: .flash, memoryBudget: m32.minimum + slack, runtimeBytes: runtime)))
        let tightPlan = try #require(tight.transformer.feedForward?.plan)
        let tightSplit = try #require(tight.processBudget)
        #expect(tightPlan.weightBytes <= tightSplit.weightBytes)
        #expect(tightSplit.runtimeBytes == runtime && tightSplit.overheadBytes + tightPlan.weightBytes <= m32.minimum + slack)
        // An ordinary file cannot page; a predictor rule needs a predictor.
        #expect(throws: PagingError.notPacked(path: try TestPaths.fixture("tiny-q8_0.gguf"))) {
            try LanguageModel(path: try TestPaths.fixture("tiny-q8_0.gguf"),
                              options: LoadOptions(threads: 1, paging: PagingOptions(mode: .flash, memoryBudget: 1 << 30)))
        }
        // So cannot a window or a sparsity rule (they would change nothing), and only flash keeps a window.
        for asked in [PagingOptions(window: 2), PagingOptions(sparsity: .exact(keep: 0.5))] {
            #expect(throws: PagingError.notPacked(path: try TestPaths.fixture("tiny-q8_0.gguf"))) {
                try LanguageModel(path: try TestPaths.fixture("tiny-q8_0.gguf"), options: LoadOptions(threads: 1, paging: asked))
            }
        }
        for mode in [PagingOptions.Mode.resident, .naive, .mmap] {
            let error = #expect(throws: PagingError.self) {
                try LanguageModel(path: path, options: LoadOptions(threads: 1, paging: PagingOptions(mode: mode, window: 2)))
            }
            #expect(error?.localizedDescription.contains("flash paging only") == true, "\(mode): \(String(describing: error))")
        }
        #expect(throws: PagingError.noPredictor(path: path)) {
            try LanguageModel(path: path, options: LoadOptions(threads: 1, paging: PagingOptions(mode: .flash, sparsity: .predictor(keep: 0.5))))
        }
    }

    @Test("reads: naive reads every group every token, flash only what is not in memory, and the window hits")
    func readCounts() throws {
        let path = try Self.packed("tiny-q8_0.gguf")
        func run(_ p: PagingOptions, direct: Bool = false) throws -> (PagingStats, PagingPlan, FlashLayout) {
            let transformer = direct ? try Self.pagedModel(path, p).transformer
                : try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: 32, paging: p)).transformer
            let ffn = try #require(transformer.feedForward)
            _ = try transformer.decode(1)
            let before = ffn.stats
            for t in Self.tokens.prefix(5) { _ = try transformer.decode(t) }
            return (ffn.stats - before, ffn.plan, ffn.layout)
        }
        let (naive, _, layout) = try run(PagingOptions(mode: .naive))
        #expect(naive.bytesRead == 5 * 2 * layout.layerBytes)
        let (resident, _, _) = try run(.resident)
        #expect(resident.bytesRead == 0)
        // The FFN's own budget (what LanguageModel gives it of the process's): room for 3 groups per layer.
        let weightsMinimum = try Self.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: 1 << 30)).plan.minimumBytes
        let (flash, plan, _) = try run(PagingOptions(mode: .flash, memoryBudget: weightsMinimum + 2 * 3 * 4096), direct: true)
        #expect(plan.pinnedGroups == 3)
        #expect(flash.bytesRead == 5 * 2 * (layout.groupsPerLayer - 3) * layout.bundleBytes)
        #expect(flash.groupsInMemory == 5 * 2 * 3)
        // Room for 7 groups over the 2 layers: 3 each and the seventh pinned in layer 0 (none of the room unused).
        let (uneven, unevenPlan, _) = try run(PagingOptions(mode: .flash, memoryBudget: weightsMinimum + 7 * 4096), direct: true)
        #expect(unevenPlan.pinnedGroups == 3 && unevenPlan.extraPinnedLayers == [0])
        #expect(unevenPlan.pinnedGroups(layer: 0) == 4 && unevenPlan.pinnedGroups(layer: 1) == 3)
        #expect(unevenPlan.cacheBytes == 7 * layout.bundleBytes && unevenPlan.weightBytes <= weightsMinimum + 7 * 4096)
        #expect(uneven.bytesRead == 5 * (2 * layout.groupsPerLayer - 7) * layout.bundleBytes)
        #expect(uneven.groupsInMemory == 5 * 7)
        // The exact rule keeping half the neurons computes half of them and counts what an oracle would read.
        let (exact, _, _) = try run(PagingOptions(mode: .naive, sparsity: .exact(keep: 0.5)))
        #expect(exact.neuronsComputed == 5 * 2 * 64)
        #expect(exact.oracleBytes > 0 && exact.oracleBytes <= exact.bytesRead)
    }

    @Test("flash with the budget's remainder pinned in the first layers (uneven group counts) computes the original's logits bit for bit (block rows: the pinned groups' rows repacked for the packed kernel where the tier packs their type)",
          arguments: ["tiny-q8_0.gguf", "tiny-q4_1.gguf"])
    func unevenPlanEqualsOriginal(fixture: String) throws {
        let path = try Self.packed(fixture)
        let weightsMinimum = try Self.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: 1 << 30)).plan.minimumBytes
        let bb = try Self.pagedModel(path, PagingOptions(mode: .naive)).transformer.feedForward!.layout.bundleBytes
        let (t, plan) = try Self.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: weightsMinimum + 3 * bb))
        #expect(plan.pinnedGroups == 1 && plan.extraPinnedLayers == [0])
        let original = try LanguageModel(path: try TestPaths.fixture(fixture), options: LoadOptions(threads: 1, contextLength: 32)).transformer
        let ffn = try #require(t.feedForward)
        let packs = fixture == "tiny-q4_1.gguf" && pl_packed_type_supported(Int32(PL_TYPE_Q4_1)) != 0
        #expect(ffn.packedPinnedLayers == (packs ? 2 : 0))
        var before = ffn.stats
        for (i, token) in Self.tokens.prefix(6).enumerated() {
            if i == 1 { before = ffn.stats }   // from the second token on: each step's reads planned a step ahead
            let a = Array(try t.decode(token)).map(\.bitPattern), b = Array(try original.decode(token)).map(\.bitPattern)
            #expect(a == b, "token \(token): logits differ from the original's")
        }
        #expect((ffn.stats - before).groupsInMemory == 5 * 3)
    }

    @Test("KV cache: the bytes its stored positions touch, page by page (global slots and a sliding ring)")
    func kvCacheCommittedBytes() throws {
        let page = Int(getpagesize())
        // SmolLM2's shape at context 512: 30 slots × 3 KV heads × 64 dims; a head's 32 positions fill one 4 KiB page.
        let cache = try KVCache(slots: 30, capacity: 512, kvHeads: 3, headDim: 64)
        let rangesPerPosition = 30 * 3 * 2   // slots × heads × keys and values
        let rowsPerPage = page / (64 * 2)
        #expect(cache.committedBytes(positions: 0) == 0)
        #expect(cache.committedBytes(positions: 1) == rangesPerPosition * page)
        #expect(cache.committedBytes(positions: rowsPerPage) == rangesPerPosition * page)
        #expect(cache.committedBytes(positions: rowsPerPage + 1) == 2 * rangesPerPosition * page)
        #expect(cache.committedBytes(positions: 512) == 512 * 30 * 192 * 2 * 2)
        // A sliding slot's ring of one page of rows per head, each row written twice (2 pages), then a global slot of
        // 16 pages per head: the ring is full from its first position on, the global slot grows a page at a time.
        let ring = try KVCache(kinds: [.sliding(window: 8, ringSize: rowsPerPage), .global], capacity: 16 * rowsPerPage,
                               kvHeads: 1, headDim: 64)
        #expect(ring.committedBytes(positions: 1) == 2 * 3 * page)    // keys and values: the ring's 2 pages, 1 global
        #expect(ring.committedBytes(positions: rowsPerPage) == 2 * 3 * page)
        #expect(ring.committedBytes(positions: rowsPerPage + 1) == 2 * 4 * page)
        #expect(ring.committedBytes(positions: 16 * rowsPerPage) == 2 * 18 * page)
    }

    @Test("reserve: flash holds extra groups in the budget's untouched KV cache and batch scratch, gives them back before the cache or a longer batch touches that memory, and computes the original's logits throughout")
    func lentReserve() throws {
        let path = try Self.packed("tiny-q8_0.gguf")
        let file = try GGUFFile(path: path)
        let config = try ModelConfig(gguf: file)
        let layout = try #require(try FlashLayout(file: file, config: config))
        let schedule = LayerSchedule.plain(blocks: config.numHiddenLayers)
        let context = 128, bb = layout.bundleBytes, layers = config.numHiddenLayers, G = layout.groupsPerLayer
        // The budget: the KV cache (8 pages once any position is stored: each head's 128 positions fill one) and
        // 4 more batch rows of one group's scratch each are set aside but untouched at load.
        var budget = ProcessBudget(budget: 1 << 30, config: config, schedule: schedule, contextLength: context, maxBatch: 5,
                                   threads: 1, runtimeBytes: 0, vocabularyBytes: 0, embeddingRowBytes: 0, groupsPerLayer: G)
        let probe = try KVCache(slots: layers, capacity: context, kvHeads: config.numKeyValueHeads, headDim: config.headDim)
        #expect(budget.kvCacheBytes == probe.committedBytes(positions: context), "the budget's KV cache is the cache's pages")
        budget.scratchBytesPerBatchRow = bb
        #expect(budget.pageCacheBytes == 0 && budget.batchRows == 5)
        #expect(budget.untouchedBytes(kvCacheCommitted: 0, largestBatch: 1) == 8 * 4096 + 4 * bb)
        // The FFN's own budget is its minimum: no pinned groups, every group it holds is lent.
        let minimum = try Self.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: 1 << 30)).plan.minimumBytes
        let resident = file.tensors.filter { !$0.name.contains("ffn_") }.reduce(0) { $0 + $1.byteCount }
        let options = PagingOptions(mode: .flash, memoryBudget: minimum, window: 0)
        let t = try Transformer(store: MappedWeightStore(file: file), config: config, schedule: schedule, contextLength: context,
                                threads: 2, maxBatch: 5, feedForward: { pool, maxBatch in
            try PagedFeedForward(file: file, layout: layout, config: config, schedule: schedule, options: options, pool: pool,
                                 residentBytes: resident, maxBatch: maxBatch, processBudget: budget)
        })
        let ffn = try #require(t.feedForward)
        #expect(ffn.plan.pinnedGroups == 0 && ffn.lendsReserve)
        #expect(ffn.plan.lentSlots == min(layers * G, (8 * 4096 + 4 * bb) / bb) && ffn.lentSlots == ffn.plan.lentSlots)

        // The same steps on the original file: single tokens, then a 3-row and a 5-row batch, then tokens again.
        let original = try LanguageModel(path: try TestPaths.fixture("tiny-q8_0.gguf"),
                                         options: LoadOptions(threads: 2, contextLength: context, maxBatch: 5)).transformer
        let steps: [[Int]] = [[1], [270], [340], [285, 223, 40], [84], [297, 327, 284, 223, 50], [90], [91]]
        var largest = 0, lent = ffn.lentSlots
        for (i, step) in steps.enumerated() {
            let a = Array(try step.withUnsafeBufferPointer { try t.forward($0, allLogits: true) }).map(\.bitPattern)
            let b = Array(try step.withUnsafeBufferPointer { try original.forward($0, allLogits: true) }).map(\.bitPattern)
            #expect(a == b, "step \(i): logits differ from the original's")
            largest = max(largest, step.count)
            // Lent slots never overlap what the cache and the batches have touched, and only ever shrink.
            let untouched = budget.untouchedBytes(kvCacheCommitted: probe.committedBytes(positions: t.position), largestBatch: largest)
            #expect(ffn.lentSlots * bb <= untouched && ffn.lentSlots == min(lent, untouched / bb), "step \(i)")
            lent = ffn.lentSlots
        }
        // 8 pages of keys and values from the first token on, 4 rows of scratch by the 5-row batch: all given back,
        // after the groups in them were used.
        #expect(ffn.lentSlots == 0 && ffn.stats.lentSlotsTakenBack == ffn.plan.lentSlots)
        #expect(ffn.stats.groupsInLentSlots > 0)
    }

    @Test("flash queues the block after next as soon as a block's compute ends (two blocks' reads in flight, the same bytes per token); naive reads nothing ahead; a shared block's second pass keeps one")
    func readsTwoBlocksAhead() throws {
        func model(_ fixture: String, _ mode: PagingOptions.Mode) throws -> (LanguageModel, PagedFeedForward) {
            let lm = try LanguageModel(path: try Self.packed(fixture), options: LoadOptions(threads: 1, contextLength: 32, paging: PagingOptions(mode: mode)))
            return (lm, try #require(lm.transformer.feedForward))
        }
        let (lm, ffn) = try model("tiny-q8_0.gguf", .flash)
        #expect(ffn.blocksInFlight.isEmpty)
        _ = try lm.transformer.decode(1)
        // After the last layer: the next token's layers 0 and 1 (the first queued when layer 1's compute began,
        // the second when it ended), one per staging buffer.
        #expect(ffn.blocksInFlight.sorted() == [0, 1])
        let before = ffn.stats
        _ = try lm.transformer.decode(2)
        #expect((ffn.stats - before).bytesRead == 2 * ffn.layout.layerBytes && (ffn.stats - before).layerSteps == 2)
        #expect(ffn.blocksInFlight.sorted() == [0, 1])
        let (naiveLM, naive) = try model("tiny-q8_0.gguf", .naive)
        _ = try naiveLM.transformer.decode(1)
        #expect(naive.blocksInFlight.isEmpty)
        // Passes 0 0 1 1: the block after next is the next block's second pass, which reuses its groups.
        let (sharedLM, shared) = try model("tiny-ls.gguf", .flash)
        _ = try sharedLM.transformer.decode(1)
        #expect(shared.blocksInFlight == [0])
    }

    @Test("the read arena: 2 MiB-aligned, every byte writable, open to transparent huge pages where the kernel has them; none for zero bytes")
    func readArena() throws {
        #expect(ReadArena(bytes: 0) == nil)
        let bytes = 5 * ReadArena.hugePage + 3 * 4096
        let arena = try #require(ReadArena(bytes: bytes))
        #expect(Int(bitPattern: arena.base) % ReadArena.hugePage == 0 && arena.bytes == bytes)
        arena.base.initializeMemory(as: UInt8.self, repeating: 0xA5, count: bytes)
        #expect(arena.base.load(fromByteOffset: bytes - 1, as: UInt8.self) == 0xA5)
        #if os(Linux)
        // The mapping holding the arena carries the huge-page advice (smaps' VmFlags "hg") wherever the kernel has
        // transparent huge pages at all.
        guard FileManager.default.fileExists(atPath: "/sys/kernel/mm/transparent_hugepage/enabled") else {
            print("readArena: this kernel has no transparent huge pages: only the alignment was checked")
            return
        }
        // (Read to its end: /proc files report a size of 0.)
        let handle = try #require(FileHandle(forReadingAtPath: "/proc/self/smaps"))
        let smaps = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        handle.closeFile()
        let start = UInt(bitPattern: arena.base)
        var inArena = false, flags: String?
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if let range = fields.first, range.contains("-"), fields.count >= 5 {
                let ends = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inArena = ends.count == 2 && ends[0] <= start && start < ends[1]
            } else if inArena, line.hasPrefix("VmFlags:") {
                flags = String(line)
            }
        }
        #expect(flags?.contains(" hg") == true, "VmFlags of the arena's mapping: \(flags ?? "not found")")
        #endif
    }

    @Test("layer sharing: a shared block is read once for both passes")
    func sharedBlockReadOnce() throws {
        let path = try Self.packed("tiny-ls.gguf")
        let lm = try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: 32, paging: PagingOptions(mode: .naive)))
        let ffn = try #require(lm.transformer.feedForward)
        #expect(lm.transformer.schedule.passes == [0, 0, 1, 1])
        _ = try lm.transformer.decode(1)
        let before = ffn.stats
        _ = try lm.transformer.decode(2)
        let d = ffn.stats - before
        #expect(d.layerSteps == 4)
        #expect(d.bytesRead == 2 * ffn.layout.layerBytes)  // two blocks read, four passes served
        // And it still equals the unrolled model exactly.
        let unrolled = try Self.logits(try TestPaths.fixture("tiny-ls-unrolled.gguf"), Self.tokens)
        let shared = try Self.logits(path, Self.tokens, paging: PagingOptions(mode: .naive))
        #expect(shared.count == unrolled.count && zip(shared, unrolled).allSatisfy { $0 == $1 })
    }

    @Test("reads: native AIO (a layer's reads queued with one system call) and the reader threads compute the original's logits bit for bit; AIO is used wherever the file opens with O_DIRECT",
          arguments: ["tiny-q8_0.gguf", "tiny-q4_1.gguf"])
    func asyncReads(fixture: String) throws {
        let path = try Self.packed(fixture)
        let original = try Self.logits(try TestPaths.fixture(fixture), Self.tokens)
        for async in [true, false] {
            for paging in [PagingOptions(mode: .flash, asyncReads: async), PagingOptions(mode: .naive, asyncReads: async),
                           PagingOptions(mode: .flash, memoryBudget: 1 << 40, window: 1, asyncReads: async)] {
                let packed = try Self.logits(path, Self.tokens, paging: paging)
                let differing = zip(packed, original).filter { $0 != $1 }.count
                #expect(packed.count == original.count && differing == 0, "\(fixture) \(paging.mode) async \(async): \(differing) logits differ")
            }
        }
        let probe = try DirectReader(path: path, threads: 1)
        let direct = probe.direct
        probe.shutdown()
        for (async, mode) in [(true, PagingOptions.Mode.flash), (true, .naive), (false, .flash), (true, .mmap)] {
            let lm = try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: 32,
                                                                        paging: PagingOptions(mode: mode, asyncReads: async)))
            let ffn = try #require(lm.transformer.feedForward)
            #if os(Linux)
            // Linux has native AIO: flash and naive must use it where O_DIRECT works (this checkout's temporary
            // directory; on tmpfs, which refuses O_DIRECT, the reader threads drop what they read instead).
            #expect(ffn.readsAreAsync == (async && direct && mode != .mmap), "\(mode) async \(async) direct \(direct)")
            if !direct { print("asyncReads: \(path) refuses O_DIRECT here: only the reader threads were tested") }
            #else
            #expect(!ffn.readsAreAsync)
            #endif
        }
    }

    @Test("a read past the end of a truncated file is an error naming it, not zeros (AIO and reader threads)",
          arguments: [true, false])
    func shortRead(async: Bool) throws {
        let source = try Self.packed("tiny-q8_0.gguf")
        let path = Self.scratch("truncated-\(async).gguf")
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: source, toPath: path)
        let lm = try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: 32,
                                                                    paging: PagingOptions(mode: .naive, asyncReads: async)))
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(truncate(path, off_t(size - 4096)) == 0)
        do {
            _ = try lm.transformer.decode(1)
            Issue.record("decoding a truncated file succeeded")
        } catch let e as PagingError {
            guard case .shortRead(let p, _, _, _) = e else { Issue.record("wrong error \(e)"); return }
            #expect(p == path)
        }
    }

    /// A predictor file in train_predictor.py's format, random weights (the machinery, not the quality).
    static func randomPredictor(layers: Int, dim: Int, ffn: Int, rank: Int) throws -> String {
        let path = scratch("predictor-\(rank).gguf")
        var rng = SplitMix64(seed: 9)
        func f16(_ n: Int) -> [UInt16] { (0..<n).map { _ in pl_f32_to_f16(Float(rng.nextUnit() * 2 - 1)) } }
        func f32(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.nextUnit()) } }
        var tensors: [GGUFWriter.TensorDeclaration] = []
        for l in 0..<layers {
            tensors += [.init(name: "blk.\(l).ffn_pred_a", shape: [dim, rank], type: .f16),
                        .init(name: "blk.\(l).ffn_pred_b", shape: [rank, ffn], type: .f16),
                        .init(name: "blk.\(l).ffn_pred_bias", shape: [ffn], type: .f32),
                        .init(name: "blk.\(l).ffn_mass", shape: [ffn], type: .f32)]
        }
        let w = try GGUFWriter(path: path, metadata: [("general.architecture", .string("pocketlm-predictor")),
                                                      ("pocketlm.predictor.rank", .uint32(UInt32(rank))),
                                                      ("pocketlm.predictor.target", .string("log_abs")),
                                                      ("pocketlm.predictor.block_count", .uint32(UInt32(layers)))],
                               tensors: tensors)
        for _ in 0..<layers {
            try f16(rank * dim).withUnsafeBytes { try w.write($0) }
            try f16(ffn * rank).withUnsafeBytes { try w.write($0) }
            try f32(ffn).withUnsafeBytes { try w.write($0) }
            try f32(ffn).withUnsafeBytes { try w.write($0) }
        }
        try w.finish()
        return path
    }

    @Test("predictor: all groups kept equals the dense model; a fraction reads only its top groups; threshold 0 keeps all")
    func predictorAndThreshold() throws {
        let predictor = try Self.randomPredictor(layers: 2, dim: 64, ffn: 128, rank: 4)
        let path = Self.scratch("tiny-predictor.packed.gguf")
        try? FileManager.default.removeItem(atPath: path)
        _ = try FlashPacker.pack(source: try TestPaths.fixture("tiny-q8_0.gguf"), output: path, bundleBytes: 4096, predictor: predictor)
        let original = try Self.logits(try TestPaths.fixture("tiny-q8_0.gguf"), Self.tokens)
        let all = try Self.logits(path, Self.tokens, paging: PagingOptions(mode: .flash, sparsity: .predictor(keep: 1.0)))
        #expect(all.count == original.count && zip(all, original).allSatisfy { $0 == $1 })
        let zero = try Self.logits(path, Self.tokens, paging: PagingOptions(mode: .naive, sparsity: .threshold(0)))
        #expect(zero.count == original.count && zip(zero, original).allSatisfy { $0 == $1 })

        let lm = try LanguageModel(path: path, options: LoadOptions(threads: 2, contextLength: 32,
                                                                    paging: PagingOptions(mode: .flash, sparsity: .predictor(keep: 0.5))))
        let ffn = try #require(lm.transformer.feedForward)
        let G = ffn.layout.groupsPerLayer
        _ = try lm.transformer.decode(1)
        let before = ffn.stats
        for t in Self.tokens.prefix(4) {
            let logits = try lm.transformer.decode(t)
            let finite = logits.allSatisfy { $0.isFinite }
            #expect(finite)
        }
        let d = ffn.stats - before
        let k = Int((0.5 * Double(G)).rounded(.up))
        #expect(d.groupsNeeded == 4 * 2 * k, "ties aside, each token and layer needs its top \(k) of \(G) groups")
        #expect(d.bytesRead == 4 * 2 * k * ffn.layout.bundleBytes)
        // The threshold rule drops small |h| neurons.
        let big = try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: 32,
                                                                     paging: PagingOptions(mode: .naive, sparsity: .threshold(1e9))))
        _ = try big.transformer.decode(1)
        #expect(big.transformer.feedForward!.stats.neuronsComputed == 0)
    }
}

extension FlashPagingTests {
    /// SmolLM2 Q4_K_M (the model cache's) and its packed copy in this run's scratch directory, packed once.
    static func packedSmolLM2KQuant() throws -> (source: String, packed: String) {
        try smolLM2KQuantPacking.get()
    }

    /// Packed once per process: FlashPlanTests and these tests run in parallel, and one of them reading the file while
    /// the other was still writing it saw it truncated. (A static let is initialized once, the others waiting for it.)
    private static let smolLM2KQuantPacking = Result { () throws -> (source: String, packed: String) in
        let source = try TestPaths.model("SmolLM2-135M-Instruct.Q4_K_M.gguf")
        let path = scratch("smollm2-q4_k_m.packed.gguf")
        if !FileManager.default.fileExists(atPath: path) { _ = try FlashPacker.pack(source: source, output: path) }
        return (source, path)
    }

    /// A packed model whose paged FFN gets `paging.memoryBudget` for its weights alone (LanguageModel gives it the
    /// process budget less the rest, which depends on this process's resident set): exact group counts.
    static func pagedModel(_ path: String, _ paging: PagingOptions) throws -> (transformer: Transformer, plan: PagingPlan) {
        let file = try GGUFFile(path: path)
        let config = try ModelConfig(gguf: file)
        let layout = try #require(try FlashLayout(file: file, config: config))
        let schedule = LayerSchedule.plain(blocks: config.numHiddenLayers)
        let resident = file.tensors.filter { !$0.name.contains("ffn_") }.reduce(0) { $0 + $1.byteCount }
        let t = try Transformer(store: MappedWeightStore(file: file), config: config, schedule: schedule, contextLength: 32,
                                threads: 1, feedForward: { pool, maxBatch in
            try PagedFeedForward(file: file, layout: layout, config: config, schedule: schedule, options: paging, pool: pool,
                                 residentBytes: resident, maxBatch: maxBatch)
        })
        return (t, try #require(t.feedForward).plan)
    }
}
