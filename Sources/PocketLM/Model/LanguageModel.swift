import Foundation

/// Options for loading a model file.
public struct LoadOptions: Sendable {
    public var threads: Int
    /// Context length in tokens; nil uses the model's training context.
    public var contextLength: Int?
    /// Layer schedule override; nil uses the model file's (plain for ordinary models).
    public var layerSchedule: (strategy: LayerSchedule.Strategy, repeats: Int)?
    /// Most prompt positions run through the model in one batch.
    public var maxBatch: Int
    /// How a packed (flash-layout) file keeps its FFN weights; nil = all resident. Ordinary files refuse paging.
    public var paging: PagingOptions?
    /// Where repacked matrices are kept between loads, so only a file's first load repacks (see `PackedWeightCache`);
    /// nil repacks on every load and writes nothing. Default: `LoadOptions.defaultPackCacheDirectory`.
    public var packCacheDirectory: URL?
    /// Independent sequences the model holds, each with its own KV cache (a server's parallel slots).
    public var sequences: Int
    /// How the KV cache stores keys and values: F16 (llama.cpp's default numerics) or BF16 (the same memory; faster
    /// deep-context attention where the CPU has BF16 dot products, at bf16's coarser rounding).
    public var kvCacheType: KVCache.ElementType

    /// `$POCKETLM_CACHE/packed` when that variable is set, else the platform's caches directory + `pocketlm/packed`.
    public static var defaultPackCacheDirectory: URL? { PackedWeightCache.defaultDirectory }

    /// The file in `packCacheDirectory` that loading `model` maps its repacked matrices from (or writes them to),
    /// whether or not it exists yet; nil without a cache directory. Its pages are part of what a run keeps resident.
    public func packCachePath(for model: String) -> String? {
        packCacheDirectory.map { PackedWeightCache.cachePath(for: model, in: $0) }
    }

    public init(threads: Int = 2, kvCacheType: KVCache.ElementType = .f16, contextLength: Int? = nil,
                layerSchedule: (strategy: LayerSchedule.Strategy, repeats: Int)? = nil, maxBatch: Int = 256,
                paging: PagingOptions? = nil, packCacheDirectory: URL? = LoadOptions.defaultPackCacheDirectory,
                sequences: Int = 1) {
        self.kvCacheType = kvCacheType
        self.paging = paging
        self.packCacheDirectory = packCacheDirectory
        self.sequences = sequences
        self.threads = threads
        self.contextLength = contextLength
        self.layerSchedule = layerSchedule
        self.maxBatch = maxBatch
    }
}

/// A loaded model: its file, configuration, forward pass and tokenizer, ready to generate.
public final class LanguageModel {
    public let file: GGUFFile
    public let config: ModelConfig
    public let transformer: Transformer
    public let tokenizer: any Tokenizer
    /// Seconds from opening the file to a model ready to run.
    public let loadSeconds: Double

    /// How `--memory-budget` was split when the model pages its FFN under one (nil otherwise).
    public let processBudget: ProcessBudget?

    public init(path: String, options: LoadOptions = .init()) throws {
        let start = Date()
        // The process before the model: what a memory budget sets aside for the runtime (unless the caller states it).
        let residentAtStart = ProcessStats.currentResidentBytes()
        let runtimeBytes = options.paging?.runtimeBytes ?? residentAtStart
        try KernelISA.applyEnvironment()
        let file = try GGUFFile(path: path)
        let config = try ModelConfig(gguf: file)
        guard let architecture = Architectures.all[config.modelType] else {
            throw ModelError.unsupportedArchitecture(config.modelType)
        }
        if options.sequences > 1, options.paging?.memoryBudget != nil {
            // ProcessBudget sets aside one KV cache; several would break the promise that the process fits.
            throw ModelError.invalidConfig(field: "sequences", reason: "a memory budget is planned for one sequence, found \(options.sequences)")
        }
        // Before a memory budget's arithmetic: its KV cache size of a huge context would overflow.
        if let c = options.contextLength, !(1...Transformer.maxContextLength).contains(c) {
            throw ModelError.invalidConfig(field: "context", reason: "must be between 1 and \(Transformer.maxContextLength), found \(c)")
        }
        let schedule: LayerSchedule
        if let s = options.layerSchedule {
            schedule = try LayerSchedule(strategy: s.strategy, repeats: s.repeats, blocks: config.numHiddenLayers)
        } else {
            schedule = try LanguageModel.schedule(in: file, blocks: config.numHiddenLayers)
        }
        if let budget = options.paging?.memoryBudget, try FlashLayout(file: file, config: config) != nil {
            // Before the vocabulary is built (its tables alone can outgrow a tiny budget's limit, and a limit is
            // a kill, not an error): the costs known from the file must fit.
            let context = options.contextLength ?? min(config.maxPositionEmbeddings, Transformer.defaultMaxContext)
            let kv = ProcessBudget.kvCacheBytes(config: config, schedule: schedule, contextLength: context,
                                                maxBatch: max(1, min(options.maxBatch, context)))
            let resident = LanguageModel.residentBytes(of: file)
            let fixed = runtimeBytes + kv + resident + ProcessBudget.defaultMargin
            if budget < fixed {
                throw PagingError.processBudgetBelowFixedCosts(budget: budget, fixed: fixed, contextLength: context,
                                                               kvCache: kv, residentWeights: resident, runtime: runtimeBytes)
            }
        }
        // The tokenizer (~50 ms: 49K tokens, 49K merges) is built on another thread while the weights load
        // and repack: load-to-first-token is the longer of the two, not their sum.
        let tokenizerLoad = BackgroundResult { try TokenizerLoader.load(from: file) }
        defer { _ = try? tokenizerLoad.wait() }   // never leave it running past an early throw
        var feedForward: ((ThreadPool, Int) throws -> PagedFeedForward)?
        var processBudget: ProcessBudget?
        if let layout = try FlashLayout(file: file, config: config) {
            var paging = options.paging ?? .resident
            if let budget = paging.memoryBudget {
                // The budget is the whole process's: measure the vocabulary (built now, not beside the packing, so
                // its growth of the resident set is its own), drop the metadata's file pages, and give the weights
                // what is left after the KV cache, scratch and runtime.
                _ = try tokenizerLoad.wait()
                file.file.adviseDontNeed(offset: 0, length: file.dataOffset, evict: true)
                // No read-around either: a fault in a small tensor (or in the metadata, read again later) would
                // otherwise read up to read_ahead_kb around it into the page cache — neighbours' pages nobody drops:
                // 43–49 MiB of a Qwen2.5-0.5B-shaped file, the limit reached a thousand times. The store reads what
                // it takes with explicit ranges instead.
                file.file.adviseRandom(offset: 0, length: file.file.size)
                let vocabulary = max(0, ProcessStats.currentResidentBytes() - residentAtStart)
                let context = options.contextLength ?? min(config.maxPositionEmbeddings, Transformer.defaultMaxContext)
                let embedding = file.tensorInfo("token_embd.weight")
                let plan = ProcessBudget(budget: budget, config: config, schedule: schedule, contextLength: context,
                                         maxBatch: options.maxBatch, threads: options.threads,
                                         readerThreads: paging.readerThreads, runtimeBytes: runtimeBytes,
                                         vocabularyBytes: vocabulary,
                                         embeddingRowBytes: embedding.map { $0.byteCount / max(1, $0.rows) } ?? 0,
                                         groupsPerLayer: layout.groupsPerLayer,
                                         // The paged FFN's own buffers; the model's tile for its other F16/BF16
                                         // matrices.
                                         extraScratchBytes: { rows in
                                            PagedFeedForward.scratchBytes(layout: layout, config: config, rows: rows,
                                                                          maxBatch: options.maxBatch, threads: options.threads,
                                                                          sparsity: paging.sparsity)
                                            + LanguageModel.dequantizedTileBytes(of: file, config: config)
                                         })
                processBudget = plan
                paging.memoryBudget = max(0, plan.weightBytes)
            }
            let resident = LanguageModel.residentBytes(of: file)
            let ffnOptions = paging, activation = GatedActivation(architecture.traits.activation), lender = processBudget
            feedForward = { pool, maxBatch in
                try PagedFeedForward(file: file, layout: layout, config: config, schedule: schedule, options: ffnOptions,
                                     pool: pool, residentBytes: resident, maxBatch: maxBatch, activation: activation,
                                     processBudget: lender)
            }
        } else if let paging = options.paging,
                  paging.mode != .resident || paging.memoryBudget != nil || paging.window != 0 || paging.sparsity != .none {
            // A window and a sparsity rule work on a packed file's bundles: asked of an ordinary file, they would
            // silently do nothing.
            throw PagingError.notPacked(path: path)
        }
        // Under a budget the packed matrices' source pages leave the page cache too, and no cache file is written
        // (its dirty pages would be charged to the process); an existing one is mapped (those pages are the
        // resident weights themselves).
        let store = MappedWeightStore(file: file, cacheDirectory: options.packCacheDirectory,
                                      evictsPageCache: processBudget != nil,
                                      // An untied model's input embedding is read a row per token: never packed.
                                      rowLookups: LanguageModel.embeddingStaysOnStorage(file) ? ["token_embd.weight"] : [],
                                      // The paged FFN's tensors are read by PagedFeedForward, never by the forward pass.
                                      takenElsewhere: feedForward == nil ? [] : Set(file.tensors.map(\.name).filter { name in
                                          LanguageModel.pagedSuffixes.contains { name.hasSuffix($0) }
                                      }))
        let transformer: Transformer
        do {
            transformer = try Transformer(store: store, config: config, traits: architecture.traits,
                                          schedule: schedule, contextLength: options.contextLength,
                                          threads: options.threads, maxBatch: options.maxBatch, sequences: options.sequences,
                                          kvCacheType: options.kvCacheType, feedForward: feedForward)
        } catch PagingError.budgetTooSmall(_, let weights, _) where processBudget != nil {
            // PagedFeedForward knows the weights' minimum; the user needs the whole process's.
            let p = processBudget!
            throw PagingError.processBudgetTooSmall(budget: p.budget, minimum: p.overheadBytes + weights + ProcessBudget.runToRunAllowance,
                                                    contextLength: p.contextLength, weights: weights,
                                                    kvCache: p.kvCacheBytes, rest: p.overheadBytes - p.kvCacheBytes)
        }
        // A tensor the forward pass does not read is a feature it does not implement: refuse rather than compute
        // another model than the file describes.
        let paged = Set(LanguageModel.pagedSuffixes)
        for t in file.tensors where !transformer.tensorNames.contains(t.name) {
            guard feedForward != nil, paged.contains(where: { t.name.hasSuffix($0) }) else {
                throw ModelError.unexpectedTensor(name: t.name, architecture: config.modelType)
            }
        }
        // Only after the checks above: a file the model refuses leaves no cache behind.
        if processBudget == nil { store.persistPacked() }
        self.transformer = transformer
        self.tokenizer = try tokenizerLoad.wait()
        guard tokenizer.vocabularySize <= config.vocabSize else {
            throw ModelError.invalidConfig(field: "tokenizer.ggml.tokens",
                                           reason: "\(tokenizer.vocabularySize) tokens but the model has \(config.vocabSize) embeddings")
        }
        self.file = file
        self.config = config
        self.processBudget = processBudget
        self.loadSeconds = Date().timeIntervalSince(start)
    }

    /// Bytes of the tensors a packed model keeps in memory whatever the budget (all but the FFN's, and an untied
    /// model's input embedding, which stays on storage).
    static func residentBytes(of file: GGUFFile) -> Int {
        let onStorage = embeddingStaysOnStorage(file)
        return file.tensors.filter { t in
            !pagedSuffixes.contains { t.name.hasSuffix($0) } && !(onStorage && t.name == "token_embd.weight")
        }.reduce(0) { $0 + $1.byteCount }
    }

    /// The part of the forward pass's tile of dequantized rows (`Transformer`'s Linear) a prompt touches: F16/BF16
    /// matrices (other than the paged FFN's and the embedding, looked up a row at a time) go through sgemm a tile
    /// of rows at a time, so the largest of them, up to the tile's size. Zero for a model without such matrices.
    static func dequantizedTileBytes(of file: GGUFFile, config: ModelConfig) -> Int {
        let tile = Transformer.tileFloats(config: config)
        let floats = file.tensors.filter { t in
            (t.type == .f16 || t.type == .bf16) && t.shape.count == 2 && t.name != "token_embd.weight"
                && !pagedSuffixes.contains { t.name.hasSuffix($0) }
        }.map { t in min(tile, t.shape[0] * t.shape[1]) }.max() ?? 0
        return 4 * floats
    }

    /// Whether a model's input embedding is read only a row at a time: untied, the head is `output.weight`.
    static func embeddingStaysOnStorage(_ file: GGUFFile) -> Bool { file.tensorInfo("output.weight") != nil }

    /// Tensors of a packed file that the paged FFN reads (not the forward pass).
    static let pagedSuffixes = [".ffn_bundles", ".ffn_down_scale", ".ffn_pred_a", ".ffn_pred_b", ".ffn_pred_bias", ".ffn_mass"]

    /// GGUF metadata keys recording a model's layer schedule (written by weights-tools for LS models).
    public static let scheduleStrategyKey = "pocketlm.layer_schedule.strategy"
    public static let scheduleRepeatsKey = "pocketlm.layer_schedule.repeats"

    /// The schedule a file records; plain when it records none.
    public static func schedule(in file: GGUFFile, blocks: Int) throws -> LayerSchedule {
        guard let value = file.metadata[scheduleStrategyKey] else { return .plain(blocks: blocks) }
        guard let name = value.string, let strategy = LayerSchedule.Strategy(rawValue: name) else {
            throw GGUFError.badMetadata(key: scheduleStrategyKey, reason: "unknown layer schedule \(value)")
        }
        let repeats = file.metadata[scheduleRepeatsKey].flatMap(\.int) ?? 2
        return try LayerSchedule(strategy: strategy, repeats: repeats, blocks: blocks)
    }

    /// The model's chat template, or an error saying why it cannot be rendered.
    public func chatTemplate() throws -> ChatTemplate {
        try ChatTemplate(gguf: file)
    }

    /// Token ids for a prompt: BOS first when the model asks for it, special tokens parsed only when asked
    /// (rendered chat prompts), never in plain user text.
    public func encodePrompt(_ text: String, parseSpecial: Bool) -> [Int] {
        tokenizer.encodePrompt(text, parseSpecial: parseSpecial)
    }

    /// Token ids for a conversation in the model's chat template: BOS first when the model asks for it, the
    /// template's turn markers as control tokens, and message content never parsed for special tokens (a message
    /// that spells `<|im_end|>` stays text). See `ChatTemplate.tokens(for:addGenerationPrompt:tokenizer:)`.
    public func encodeChat(messages: [ChatMessage], addGenerationPrompt: Bool = true) throws -> [Int] {
        try chatTemplate().tokens(for: messages, addGenerationPrompt: addGenerationPrompt, tokenizer: tokenizer)
    }

    /// A generator over this model's forward pass and tokenizer.
    public func generator() -> Generator { Generator(model: transformer, tokenizer: tokenizer) }
}
