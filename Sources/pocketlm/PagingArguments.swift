import ArgumentParser
import Foundation
import PocketLM

/// `--memory-budget`, `--paging`, `--window`, `--sparsity`, `--io-threads`: how a packed model pages its FFN.
struct PagingArguments: ParsableArguments {
    @Option(name: .customLong("memory-budget"),
            help: "The whole process's memory (weights, KV cache at --context, scratch, vocabulary, runtime, its page cache), e.g. 96M, 1.5G or 75% (of the model file). Too small a budget is an error stating the minimum. Needs a packed file (pocketlm pack).")
    var memoryBudget: String?

    @Option(help: "flash (bundled reads, pinned groups and window), naive (each layer's FFN read in full per token), mmap (OS paging), resident. Default: flash with a budget or a window, else resident.")
    var paging: String?

    @Option(parsing: .number, help: "Tokens' worth of recently used FFN groups kept in memory (flash).")
    var window: Int = 0

    @Option(help: "Neurons each token computes: none, exact[:F] (oracle: top F by |h|), threshold:T (|h| ≥ T), predictor[:F] (the file's predictor picks the top F of groups before reading).")
    var sparsity: String = "none"

    @Option(name: .customLong("io-threads"), parsing: .number, help: "Reader threads (reads in flight at once) where the reads are not asynchronous; flash and naive paging. (default: \(PagingOptions().ioThreads))")
    var ioThreads: Int?

    @Option(help: "How the per-token reads are issued: threads (the --io-threads reader threads; the default) or aio (every read of a layer queued with one system call, where Linux native AIO and O_DIRECT work: less CPU, slower on the 2-core test machine); flash and naive paging. (default: threads)")
    var reads: String?

    func validate() throws {
        if let p = paging, PagingOptions.Mode(rawValue: p) == nil {
            throw ValidationError("unknown --paging '\(p)' (flash, naive, mmap, resident)")
        }
        if let reads, !["aio", "threads"].contains(reads) { throw ValidationError("--reads is aio or threads, found '\(reads)'") }
        let windows = PagingOptions.windows
        guard windows.contains(window) else {
            throw ValidationError("--window must be between \(windows.lowerBound) and \(windows.upperBound), found \(window)")
        }
        if let ioThreads { try PagingArguments.validate(ioThreads: ioThreads) }
        do { _ = try PagingOptions.Sparsity.parse(sparsity) } catch { throw ValidationError(error.localizedDescription) }
    }

    /// `--io-threads` (here and in bench-flash) within `PagingOptions.ioThreadCounts`.
    static func validate(ioThreads: Int) throws {
        let counts = PagingOptions.ioThreadCounts
        guard counts.contains(ioThreads) else {
            throw ValidationError("--io-threads must be between \(counts.lowerBound) and \(counts.upperBound), found \(ioThreads)")
        }
    }

    /// The options for `modelPath`, or nil when nothing was asked (an ordinary run).
    func options(modelPath: String) throws -> PagingOptions? {
        let asked = memoryBudget != nil || paging != nil || window != 0 || sparsity != "none"
        // How the FFN is read matters to flash and naive paging only: elsewhere the flags would change nothing, and
        // a user tuning them would be measuring noise.
        let given = [ioThreads.map { _ in "--io-threads" }, reads.map { _ in "--reads" }].compactMap { $0 }
        let readFlags = given.joined(separator: " and ") + (given.count == 1 ? " sets" : " set")
        guard asked else {
            if !given.isEmpty {
                throw ValidationError("\(readFlags) how flash and naive paging read a packed file's FFN; without --memory-budget or --paging nothing is read from storage")
            }
            return nil
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: modelPath)[.size] as? Int) ?? nil
        let budget = try memoryBudget.map { try ByteCount.parse($0, reference: size) }
        // A window is kept by flash paging alone: asking for one asks for flash (resident was refused for keeping none).
        let mode = paging.flatMap(PagingOptions.Mode.init(rawValue:)) ?? (budget == nil && window == 0 ? .resident : .flash)
        if !given.isEmpty, mode == .mmap || mode == .resident {
            throw ValidationError("\(readFlags) how flash and naive paging read a packed file's FFN; \(mode.rawValue) paging issues no such reads")
        }
        return PagingOptions(mode: mode, memoryBudget: budget, window: window,
                             sparsity: try PagingOptions.Sparsity.parse(sparsity), ioThreads: ioThreads ?? PagingOptions().ioThreads,
                             asyncReads: reads == "aio")
    }
}

/// The paging line `run` and `chat` print: the mode, the budget the weights got, and the reads per decode step.
struct PagingSummary {
    let mode: String
    let weightBudget: Int?
    let minimum: Int

    /// nil for a model that does not page (no packed FFN, or resident).
    init?(_ ffn: PagedFeedForward?) {
        guard let ffn, ffn.options.mode != .resident else { return nil }
        mode = ffn.options.mode.rawValue
        weightBudget = ffn.plan.budget
        minimum = ffn.plan.minimumBytes
    }

    /// `stats` over `steps` decode steps (a prompt's batch counts as one). The weights' share of the budget, not
    /// the budget: the rest went to the KV cache, scratch, vocabulary and runtime.
    func line(_ stats: PagingStats, steps: Int) -> String {
        let steps = Double(max(1, steps))
        return String(format: "paging: %@, weights' share of the budget %@ (minimum %@), read %.2f MiB/token in %.0f reads, I/O wait %.1f ms/token",
                      mode, weightBudget.map(ByteCount.format) ?? "none", ByteCount.format(minimum),
                      Double(stats.bytesRead) / 1_048_576 / steps, Double(stats.reads) / steps, stats.ioWaitSeconds * 1000 / steps)
    }
}
