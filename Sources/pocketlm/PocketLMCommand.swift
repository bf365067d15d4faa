import ArgumentParser
import Foundation
import PocketLM

@main
struct PocketLMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pocketlm",
        abstract: "Run tiny language models fast on a CPU.",
        subcommands: [Run.self, Chat.self, Serve.self, Bench.self, CompareSharing.self, Tokenize.self, Inspect.self, Perplexity.self, Pack.self, BenchFlash.self]
    )

    static func main() async {
        FastBLAS.reexecIfNeeded()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: CLIError.wrap(error))
        }
    }
}

/// Library errors shown as one line naming the problem, with a non-zero exit.
struct CLIError: Error, CustomStringConvertible {
    let description: String

    /// The library's errors become their one-line description; everything else (argument errors, --help)
    /// keeps ArgumentParser's own handling.
    static func wrap(_ error: Error) -> Error {
        let ours = error is GGUFError || error is ModelError || error is TokenizerError || error is GenerationError
            || error is PagingError || error is ChatSessionError || error is KernelISAError
        if case .notPacked(let path)? = error as? PagingError {
            // The library's text names its API (`FlashPacker.pack`); a CLI user runs the command instead.
            return CLIError(description: "\(path) is not in the flash layout: paging (--memory-budget, --paging, --window, --sparsity) needs a file packed from it — run `pocketlm pack --model \(path) --out PACKED.gguf`")
        }
        if ours, let message = (error as? LocalizedError)?.errorDescription {
            return CLIError(description: message + hint(for: error))
        }
        if error is CocoaError || error is DecodingError || error is EncodingError {
            return CLIError(description: error.localizedDescription)
        }
        return error
    }

    /// What to run about it, where a library error has a command that mends it.
    static func hint(for error: Error) -> String {
        switch error as? PagingError {
        case .noPredictor?: " — train one with weights-tools/train_predictor.py and pack with --predictor"
        default: ""
        }
    }
}

/// stderr output for statistics and progress, so stdout carries only the generated text or JSON.
enum Console {
    nonisolated(unsafe) static var standardError = FileHandle.standardError

    static func error(_ s: String) {
        standardError.write(Data((s + "\n").utf8))
    }

    static func write(_ s: String) {
        FileHandle.standardOutput.write(Data(s.utf8))
    }

    /// A warning when the context asked for is longer than the one the model was trained on: it runs (RoPE goes on
    /// past it), but what it writes there degrades, as llama.cpp warns too.
    static func warnIfPastTrainedContext(_ lm: LanguageModel) {
        let trained = lm.config.maxPositionEmbeddings, context = lm.transformer.contextLength
        if context > trained {
            error("warning: a context of \(context) tokens is past the \(trained) this model was trained on; text past \(trained) tokens may degrade")
        }
    }

    /// One JSON object on stdout. `snakeCaseKeys`: the library's Swift names (`peakRSSBytes`) become the CLI's
    /// JSON names (`peak_rss_bytes`); the library itself knows nothing of JSON field names.
    static func json<T: Encodable>(_ value: T, snakeCaseKeys: Bool = false) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        if snakeCaseKeys { encoder.keyEncodingStrategy = .convertToSnakeCase }
        let data = try encoder.encode(value)
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}

/// Options every subcommand that loads a model shares.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Path to a GGUF model file.")
    var model: String

    @Option(name: .long, parsing: .number, help: "Compute threads (default: the number of cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .customLong("kv-cache-type"),
            help: "How the KV cache stores keys and values: f16 (llama.cpp's default numerics) or bf16 (same memory, bf16's coarser rounding; attention over a long context ~2× faster on CPUs whose AVX512_BF16 dot product runs at the fma's rate, such as AMD Zen 4, but ~0.8× on Intel Xeons, where it runs at half).")
    var kvCacheType: KVCache.ElementType = .f16

    func validate() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1, found \(threads)") }
    }
}

/// How tokens are picked, for every subcommand that samples (run, chat): llama.cpp's order of steps.
struct SamplingOptions: ParsableArguments {
    @Option(parsing: .number, help: "Sampling temperature; 0 is greedy.") var temperature: Float = 0.8
    @Option(name: .customLong("top-k"), parsing: .number, help: "Keep the K most likely tokens (0 = off).") var topK: Int = 40
    @Option(name: .customLong("top-p"), parsing: .number, help: "Keep the smallest set with this total probability (1 = off).")
    var topP: Float = 0.95
    @Option(name: .customLong("min-p"), parsing: .number, help: "Drop tokens below this fraction of the best one's probability (0 = off).")
    var minP: Float = 0.05
    @Option(name: .customLong("repeat-penalty"), parsing: .number, help: "Penalty for tokens among the last 64 (1 = off).")
    var repeatPenalty: Float = 1.0
    @Option(parsing: .number, help: "Random seed (default: random). The same seed gives the same text.") var seed: UInt64?

    /// The parameters, with a random seed when none was given.
    var parameters: SamplingParameters {
        SamplingParameters(temperature: temperature, topK: topK, topP: topP, minP: minP, repeatPenalty: repeatPenalty,
                           seed: seed ?? UInt64.random(in: 0...UInt64.max))
    }
}

/// `--layer-sharing` / `--repeats`: run the model's blocks in another order than its file says.
struct ScheduleOptions: ParsableArguments {
    @Option(name: .customLong("layer-sharing"),
            help: "Block order: none, immediate (L0 L0 L1 L1 …, MobileLLM-LS), repeat-all (L0…LN-1 L0…LN-1) or reverse (L0…LN-1 LN-1…L0). Default: what the model file records.")
    var layerSharing: String?

    @Option(parsing: .number, help: "How many times each block runs under --layer-sharing.")
    var repeats: Int = 2

    func validate() throws {
        if let s = layerSharing, LayerSchedule.Strategy(rawValue: s) == nil {
            throw ValidationError("unknown --layer-sharing '\(s)' (none, immediate, repeat-all, reverse)")
        }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1, found \(repeats)") }
    }

    var schedule: (strategy: LayerSchedule.Strategy, repeats: Int)? {
        layerSharing.flatMap(LayerSchedule.Strategy.init(rawValue:)).map { ($0, repeats) }
    }
}

extension KVCache.ElementType: ExpressibleByArgument {}

extension SingleValueParsingStrategy {
    /// For a numeric option: the next argument is its value even when it starts with '-', so `--window -1` reaches
    /// the option's range check ("--window must be between …, found -1") instead of reading as a flag, which left
    /// the option without a value ("Missing value for '--window <window>'").
    static var number: SingleValueParsingStrategy { .unconditional }
}
