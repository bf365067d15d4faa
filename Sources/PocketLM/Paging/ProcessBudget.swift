import CKernels
import Foundation

/// A memory budget for the whole process, and how it is spent: the weights get what is left once everything else a
/// run needs is set aside. A run inside a memory limit (a phone app's, a cgroup's) equal to the budget is never
/// killed for the KV cache, the vocabulary or the runtime coming on top of its weights.
///
/// Page cache counts against such a limit too, so reads leave none behind: the FFN's reads bypass it (O_DIRECT),
/// the file pages a resident matrix was packed from are dropped from it, the GGUF metadata's once the vocabulary is
/// built, and the embedding rows looked up through the map at every step; the mmap mode counts the layers it keeps
/// mapped and drops the others after each use.
///
/// Until the KV cache fills and a long prompt runs, much of what is set aside for them is memory the process has not
/// touched: `untouchedBytes(kvCacheCommitted:largestBatch:)` says how much, and the flash FFN holds extra groups
/// there (`ReserveSlots`), giving them back before the cache or a batch grows into it.
public struct ProcessBudget: Sendable, Codable, Equatable {
    /// The whole process's memory, bytes.
    public var budget: Int
    /// The context the KV cache is sized for, in positions.
    public var contextLength: Int
    /// The process before the model: runtime, libraries and binary (its resident set when loading began).
    public var runtimeBytes: Int
    /// The GGUF metadata and tokenizer tables (the resident set's growth while they were built).
    public var vocabularyBytes: Int
    /// F16 keys and values of every pass at `contextLength` (a sliding-window pass: its ring).
    public var kvCacheBytes: Int
    /// Activations, attention scores, logits and the paged FFN's buffers, for the largest batch.
    public var scratchBytes: Int
    /// Embedding rows a step may leave in the page cache before the next step drops them.
    public var pageCacheBytes: Int
    /// Page tables, thread stacks, allocator slack and kernel memory charged to the process.
    public var marginBytes: Int
    /// The paged FFN's reader threads: each one's touched stack, thread-local storage and kernel structures.
    public var readerThreadBytes: Int
    /// The largest batch the scratch and page cache are sized for, in positions.
    public var batchRows: Int
    /// What each batch row adds to the scratch (its activations, quantized inputs and FFN outputs).
    public var scratchBytesPerBatchRow: Int

    /// Everything but the weights.
    public var overheadBytes: Int {
        runtimeBytes + vocabularyBytes + kvCacheBytes + scratchBytes + pageCacheBytes + marginBytes + readerThreadBytes
    }
    /// What the weights may use: resident tensors, read buffers and cached FFN groups.
    public var weightBytes: Int { budget - overheadBytes }

    /// Page tables, stacks, slack: measured in a cgroup-v1 limit (memory.max_usage_in_bytes against the resident set
    /// and the estimates here, SmolLM2 Q8_0 packed, contexts 256–4096), with room to spare.
    public static let defaultMargin = 12 << 20

    /// What the stated minimum adds to the measured need. The runtime's and the vocabulary's resident sets are
    /// measured in each process and vary between runs of the same command (thread timing, allocator arenas: 0.3 MiB
    /// on a quiet machine, up to 1.7 MiB seen beside other busy processes), so a minimum stated as exactly this
    /// run's need could be refused by the next run; with this on top, the budget a refused run names loads.
    public static let runToRunAllowance = 4 << 20

    /// What each reader thread adds to the resident set: 69 KiB measured (peak RSS of `pocketlm run`, SmolLM2 Q4_1
    /// packed, 8 → 256 I/O threads: 108.4 → 125.2 MiB), with room to spare. The margin covers a few threads, not
    /// hundreds: 256 readers had taken a run at its stated minimum 6.8 MiB past its budget.
    public static let bytesPerReaderThread = 80 << 10

    /// The budget's split for `config` run with `schedule` at `contextLength`, `maxBatch` positions per batch and
    /// `threads` compute threads and `readerThreads` threads reading the FFN (`PagingOptions.readerThreads`);
    /// `runtimeBytes` and `vocabularyBytes` measured by the caller.
    public init(budget: Int, config: ModelConfig, schedule: LayerSchedule, contextLength: Int, maxBatch: Int, threads: Int,
                readerThreads: Int = 0, runtimeBytes: Int, vocabularyBytes: Int, embeddingRowBytes: Int, groupsPerLayer: Int,
                extraScratchBytes: (_ batchRows: Int) -> Int = { _ in 0 }, marginBytes: Int = ProcessBudget.defaultMargin) {
        self.budget = budget
        self.contextLength = contextLength
        self.runtimeBytes = runtimeBytes
        self.vocabularyBytes = vocabularyBytes
        let b = max(1, min(maxBatch, contextLength))
        kvCacheBytes = Self.kvCacheBytes(config: config, schedule: schedule, contextLength: contextLength, maxBatch: b)
        func scratch(_ rows: Int) -> Int {
            Self.scratchBytes(config: config, contextLength: contextLength, maxBatch: rows, threads: threads,
                              groupsPerLayer: groupsPerLayer) + extraScratchBytes(rows)
        }
        scratchBytes = scratch(b)
        batchRows = b
        // The scratch grows by the same bytes per row (every term is a per-row or a fixed size).
        scratchBytesPerBatchRow = b > 1 ? (scratchBytes - scratch(1)) / (b - 1) : 0
        pageCacheBytes = min(config.vocabSize * embeddingRowBytes, b * Self.pageCacheBytesPerBatchRow)
        self.marginBytes = marginBytes
        readerThreadBytes = max(0, readerThreads) * Self.bytesPerReaderThread
    }

    /// Page cache a batch row's embedding lookup may bring in: its row, on at most two pages.
    static let pageCacheBytesPerBatchRow = 2 * 4096

    /// Bytes set aside for the KV cache, the batch scratch and a batch's page cache that the process has not touched
    /// yet, when the KV cache's touched pages come to `kvCacheCommitted` bytes and no batch so far had more than
    /// `largestBatch` rows: what may be lent out until the cache or a longer batch needs it.
    public func untouchedBytes(kvCacheCommitted: Int, largestBatch: Int) -> Int {
        let rows = min(max(1, largestBatch), batchRows)
        let kv = max(0, kvCacheBytes - kvCacheCommitted)
        let scratch = (batchRows - rows) * scratchBytesPerBatchRow
        let pages = pageCacheBytes - min(pageCacheBytes, rows * Self.pageCacheBytesPerBatchRow)
        return kv + scratch + pages
    }

    /// Keys and values of every pass at the full context, as `KVCache` lays them out (a sliding pass keeps a
    /// double-written ring of window + batch positions when that is smaller than the context).
    public static func kvCacheBytes(config: ModelConfig, schedule: LayerSchedule, contextLength: Int, maxBatch: Int) -> Int {
        var rows = 0
        for block in schedule.passes {
            if config.isSlidingLayer(block), let w = config.slidingWindow, w + maxBatch < contextLength {
                rows += 2 * (w + maxBatch)
            } else {
                rows += contextLength
            }
        }
        return rows * config.kvDim * 2 * 2   // keys and values, F16
    }

    /// The forward pass's buffers as Transformer, Linear and PagedFeedForward allocate them (float activations per
    /// batch row, attention scores per thread over the context, one row of logits, quantized inputs), counted as if
    /// every page were touched.
    public static func scratchBytes(config: ModelConfig, contextLength: Int, maxBatch b: Int, threads: Int,
                                    groupsPerLayer: Int) -> Int {
        let dim = config.hiddenSize, qDim = config.queryDim, kvDim = config.kvDim, ffn = config.intermediateSize
        let hd = config.headDim, widest = max(dim, ffn, qDim)
        var floats = b * (2 * dim + qDim + 2 * kvDim + max(qDim, dim) + 2 * ffn)   // x, xn, q, k, v, att, gate, up
        floats += threads * Transformer.attentionScoresPerThread(config: config, contextLength: contextLength) // scores
        floats += config.vocabSize                                                 // last logits
        floats += 2 * 2 * b * hd / 2                                               // RoPE cos/sin, two bases
        floats += threads * 32 * widest                                            // Linear's panels
        var bytes = 4 * floats
        bytes += 3 * b * (widest / 32 + 1) * 36                                    // Linear's quantized inputs
        // PagedFeedForward: per-token vectors, a batch's gate/up and quantized inputs, per-thread accumulators.
        bytes += 4 * (6 * ffn + groupsPerLayer + max(groupsPerLayer, ffn)) + 12 * ffn
        bytes += 2 * b * ffn * 4 + b * (dim / 32) * 34 + (dim + ffn) / 32 * 34
        bytes += 4 * ffn / 32 * (dim + 16 * threads) + b * groupsPerLayer + 2 * groupsPerLayer
        bytes += 8 * groupsPerLayer                                                // block rows: the down slices' table
        return bytes
    }
}
