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
    @Option(name: .customLong("prompt-tokens"), parsing: .number) var promptTokens: Int = 128
    @Option(name: .customLong("gen-tokens"), parsing: .number) var genTokens: Int = 128
    @Option(parsing: .number) var repetitions: Int = 5
    @Flag(help: "Print JSON.") var json = false
    @Option(help: ArgumentHelp(stringLiteral: SpeculateOption.helpText + " Bench compares it with plain greedy decoding on --prompt-file prompts."))
    var speculate: SpeculateOption?
    @Option(name: .customLong("prompt-file"), help: "With --speculate: a prompt (a user message in the model's chat template, when it has one); repeatable.")
    var promptFiles: [String] = []
    @Option(parsing: .number, help: "With --speculate: rounds of plain and speculative decoding per prompt, alternating.")
    var rounds: Int = 3

    func validate() throws {
        guard promptTokens >= 1 else { throw ValidationError("--prompt-tokens must be at least 1, found \(promptTokens)") }
        guard genTokens >= 1 else { throw ValidationError("--gen-tokens must be at least 1, found \(genTokens)") }
        guard repetitions >= 1 else { throw ValidationError("--repetitions must be at least 1, found \(repetitions)") }
        guard rounds >= 1 else { throw ValidationError("--rounds must be at least 1, found \(rounds)") }
        if speculate != nil && promptFiles.isEmpty { throw ValidationError("--speculate needs at least one --prompt-file") }
        if speculate == nil && !promptFiles.isEmpty { throw ValidationError("--prompt-file is for --speculate") }
    }

    func run() async throws {
        if let speculate { return try runSpeculative(speculate) }
        let lm = try LanguageModel(path: modelOptions.model,
                                   options: LoadOptions(threads: modelOptions.threads, kvCacheType: modelOptions.kvCacheType,
                                                        contextLength: promptTokens + genTokens,
                                                        layerSchedule: scheduleOptions.schedule,
                                                        maxBatch: promptTokens,
                                                        paging: try pagingArguments.options(modelPath: modelOptions.model)))
        let result = try Benchmark(model: lm).run(promptTokens: promptTokens, genTokens: genTokens,
                                                  repetitions: repetitions) { line in
            if !json { Console.error(line) }
        }
        if json {
            try Console.json(result, snakeCaseKeys: true)
            return
        }
        func row(_ name: String, _ f: Benchmark.Figures) -> String {
            String(format: "%-8@ %10.1f %10.1f %10.1f", name, f.median, f.min, f.max)
        }
        Console.write("""
        model: \(lm.file.path)
        threads: \(result.threads), kernels: \(KernelISA.description), BLAS core: \(result.blasCore), load: \(String(format: "%.1f", result.loadMs)) ms\(result.packedFromCache ? " (packed cache)" : ""), peak RSS: \(String(format: "%.1f", Double(result.peakRSSBytes) / 1_048_576)) MiB
        tok/s      median        min        max
        \(row("pp\(promptTokens)", result.prefill))
        \(row("tg\(genTokens)", result.decode))
        decode reads \(String(format: "%.1f", Double(result.weightBytesPerToken) / 1e6)) MB of weights per token; memory read \(String(format: "%.1f", result.memoryReadBytesPerSecond / 1e9)) GB/s (\(result.threads) threads) → bound \(String(format: "%.1f", result.decodeBoundTokensPerSecond)) tok/s, decode at \(String(format: "%.0f", result.decodeShareOfBound * 100))% of it
        compute peak (\(result.threads) threads): \(String(format: "%.1f", result.multiplyAddsPerSecond / 1e9)) G f32 multiply-adds/s\(result.bf16MultiplyAddsPerSecond.map { String(format: ", %.1f G bf16", $0 / 1e9) } ?? "")

        """)
    }

    /// `--speculate`: plain and speculative greedy decoding of each prompt file, in alternating rounds.
    func runSpeculative(_ speculate: SpeculateOption) throws {
        var texts: [(String, String)] = []
        for path in promptFiles {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw CLIError(description: "cannot read prompt file \(path)")
            }
            texts.append((URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent, String(decoding: data, as: UTF8.self)))
        }
        // The context: the longest prompt and the generated tokens (tokenized first with a small model load).
        let lm = try LanguageModel(path: modelOptions.model,
                                   options: LoadOptions(threads: modelOptions.threads, kvCacheType: modelOptions.kvCacheType, layerSchedule: scheduleOptions.schedule,
                                                        paging: try pagingArguments.options(modelPath: modelOptions.model)))
        let hasTemplate = (try? lm.chatTemplate()) != nil
        let prompts = try texts.map { name, text in
            (name: name, tokens: hasTemplate ? try lm.encodeChat(messages: [ChatMessage(role: "user", content: text)])
                                             : lm.encodePrompt(text, parseSpecial: false))
        }
        for p in prompts where p.tokens.count + genTokens > lm.transformer.contextLength {
            throw GenerationError.maxTokensPastContext(prompt: p.tokens.count, maxTokens: genTokens, context: lm.transformer.contextLength)
        }
        let decoder = try speculate.decoder(for: lm, threads: modelOptions.threads)
        let bench = SpeculativeBenchmark(generator: lm.generator(), decoder: decoder, name: lm.file.path)
        let draftCounts = Array(Set([1, 2, 4, 8, speculate.maxDraft].filter { $0 <= speculate.maxDraft })).sorted()
        let result = try bench.run(prompts: prompts, genTokens: genTokens, rounds: rounds, method: speculate.description,
                                   draftCounts: draftCounts) { line in
            if !json { Console.error(line) }
        }
        if json {
            try Console.json(result, snakeCaseKeys: true)
            return
        }
        var lines = ["model: \(lm.file.path)", "threads: \(result.threads), speculation: \(result.method), \(rounds) alternating rounds, greedy, up to \(genTokens) tokens",
                     "prompt".padding(toLength: 16, withPad: " ", startingAt: 0) + " tokens    gen  plain t/s   spec t/s  speedup  accepted  tok/pass  same"]
        for p in result.prompts {
            lines.append(p.name.padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: " %6d %6d %10.1f %10.1f %7.2fx %8.0f%% %9.2f  %@", p.promptTokens, p.generatedTokens,
                                p.plain.median, p.speculative.median, p.speedup, p.acceptanceRate * 100, p.tokensPerPass,
                                p.identical ? "yes" : "NO"))
        }
        lines.append(String(format: "verify pass cost (decode step %.2f ms):", result.decodeStepMs))
        for c in result.verifyCosts {
            lines.append(String(format: "  %2d drafts + 1: %6.2f ms = %.2f decode steps", c.drafts, c.milliseconds, c.relativeToDecode))
        }
        lines.append(String(format: "memory read %.1f GB/s (%d threads) → plain decode bound %.1f tok/s; kernels: %@",
                            result.memoryReadBytesPerSecond / 1e9, result.threads, result.decodeBoundTokensPerSecond,
                            result.kernelISA))
        Console.write(lines.joined(separator: "\n") + "\n")
        if result.prompts.contains(where: { !$0.identical }) {
            throw CLIError(description: "speculative output differed from plain decoding")
        }
    }
}
