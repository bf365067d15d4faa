import ArgumentParser
import Foundation
import PocketLM

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prefill and decode speed, like llama-bench.",
        discussion: """
        After warming up until two runs agree, runs a prompt of --prompt-tokens pseudo-random tokens as one batch
        (prefill) and then --gen-tokens greedy tokens one at a time (decode), --repetitions times, and reports
        median / min / max tokens per second, load time and peak RSS.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var scheduleOptions: ScheduleOptions
    @OptionGroup var pagingArguments: PagingArguments
    @Option(name: .customLong("prompt-tokens")) var promptTokens: Int = 128
    @Option(name: .customLong("gen-tokens")) var genTokens: Int = 128
    @Option var repetitions: Int = 5
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard promptTokens >= 1 else { throw ValidationError("--prompt-tokens must be at least 1") }
        guard genTokens >= 1 else { throw ValidationError("--gen-tokens must be at least 1") }
        guard repetitions >= 1 else { throw ValidationError("--repetitions must be at least 1") }
    }

    func run() async throws {
        let lm = try LanguageModel(path: modelOptions.model,
                                   options: LoadOptions(threads: modelOptions.threads,
                                                        contextLength: promptTokens + genTokens,
                                                        layerSchedule: scheduleOptions.schedule,
                                                        maxBatch: promptTokens,
                                                        paging: try pagingArguments.options(modelPath: modelOptions.model)))
        let result = try Benchmark(model: lm).run(promptTokens: promptTokens, genTokens: genTokens,
                                                  repetitions: repetitions) { line in
            if !json { Console.error(line) }
        }
        if json {
            try Console.json(result)
            return
        }
        func row(_ name: String, _ f: Benchmark.Figures) -> String {
            String(format: "%-8@ %10.1f %10.1f %10.1f", name, f.median, f.min, f.max)
        }
        Console.write("""
        model: \(lm.file.path)
        threads: \(result.threads), kernels: \(KernelISA.description), BLAS core: \(result.blas_core), load: \(String(format: "%.1f", result.load_ms)) ms, peak RSS: \(String(format: "%.1f", Double(result.peak_rss_bytes) / 1_048_576)) MiB
        tok/s      median        min        max
        \(row("pp\(promptTokens)", result.prefill))
        \(row("tg\(genTokens)", result.decode))
        decode reads \(String(format: "%.1f", Double(result.weight_bytes_per_token) / 1e6)) MB of weights per token; memory read \(String(format: "%.1f", result.memory_read_bytes_per_second / 1e9)) GB/s (\(result.threads) threads) → bound \(String(format: "%.1f", result.decode_bound_tokens_per_second)) tok/s, decode at \(String(format: "%.0f", result.decode_share_of_bound * 100))% of it

        """)
    }
}
