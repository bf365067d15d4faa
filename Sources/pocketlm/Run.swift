import ArgumentParser
import Foundation
import PocketLM

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a prompt, streaming it to stdout; statistics go to stderr.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var scheduleOptions: ScheduleOptions
    @OptionGroup var pagingArguments: PagingArguments

    @Option(help: "The prompt text.") var prompt: String?
    @Option(name: .customLong("prompt-file"), help: "Read the prompt from a file.") var promptFile: String?
    @Option(name: .customLong("max-tokens"), parsing: .number, help: "Most tokens to generate (default 256, capped by the context).")
    var maxTokens: Int?
    @OptionGroup var samplingOptions: SamplingOptions
    @Flag(help: "Wrap the prompt in the model's chat template as a user message.") var chat = false
    @Option(help: "System message for --chat (default: the template's own).") var system: String?
    @OptionGroup var templateOption: ChatTemplateOption
    @Option(parsing: .number, help: "Context length in tokens (default: the model's, at most 8192).") var context: Int?
    @Flag(help: "Print one JSON object instead of streaming text.") var json = false
    @Option(name: .customLong("top-logits"), parsing: .number, help: "With --json: the K highest logits of every step.")
    var topLogits: Int = 0
    @Option(help: ArgumentHelp(stringLiteral: SpeculateOption.helpText)) var speculate: SpeculateOption?

    func validate() throws {
        guard (prompt == nil) != (promptFile == nil) else {
            throw ValidationError("give exactly one of --prompt or --prompt-file")
        }
        if let m = maxTokens, m < 0 { throw ValidationError("--max-tokens must be ≥ 0, found \(m)") }
        if let c = context, c < 1 { throw ValidationError("--context must be at least 1, found \(c)") }
        guard topLogits >= 0 else { throw ValidationError("--top-logits must be ≥ 0, found \(topLogits)") }
        if system != nil && !chat { throw ValidationError("--system needs --chat") }
        if templateOption.chatTemplate != nil && !chat { throw ValidationError("--chat-template needs --chat") }
    }

    func run() async throws {
        var text = prompt ?? ""
        if let path = promptFile {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw CLIError(description: "cannot read prompt file \(path)")
            }
            text = String(decoding: data, as: UTF8.self)
        }
        let lm = try LanguageModel(path: modelOptions.model,
                                   options: LoadOptions(threads: modelOptions.threads, kvCacheType: modelOptions.kvCacheType, contextLength: context,
                                                        layerSchedule: scheduleOptions.schedule,
                                                        paging: try pagingArguments.options(modelPath: modelOptions.model)))
        Console.warnIfPastTrainedContext(lm)
        let promptTokens: [Int]
        if chat {
            var messages: [ChatMessage] = []
            if let system { messages.append(ChatMessage(role: "system", content: system)) }
            messages.append(ChatMessage(role: "user", content: text))
            // Only the template's markers become control tokens; the messages stay plain text.
            promptTokens = try templateOption.template(for: lm).tokens(for: messages, addGenerationPrompt: true,
                                                                       tokenizer: lm.tokenizer)
        } else {
            promptTokens = lm.encodePrompt(text, parseSpecial: false)
        }
        let contextLength = lm.transformer.contextLength
        guard promptTokens.count <= contextLength else {
            throw GenerationError.promptTooLong(tokens: promptTokens.count, context: contextLength)
        }
        let room = lm.transformer.generationRoom(after: promptTokens.count)
        if let m = maxTokens, m > room {
            throw GenerationError.maxTokensPastContext(prompt: promptTokens.count, maxTokens: m, context: contextLength)
        }
        let sampling = samplingOptions.parameters
        let options = GenerationOptions(maxTokens: maxTokens ?? min(256, room), sampling: sampling, topLogits: topLogits)
        let streaming = !json
        let generator = lm.generator()
        generator.speculation = try speculate?.decoder(for: lm, threads: modelOptions.threads)
        let result = try generator.generate(prompt: promptTokens, options: options) { piece in
            if streaming { Console.write(piece) }
            return true
        }
        let peak = ProcessStats.peakResidentBytes()
        if json {
            try Console.json(RunReport(result: result, loadSeconds: lm.loadSeconds, peakRSS: peak,
                                       includeTopLogits: topLogits > 0, paging: lm.transformer.feedForward),
                             snakeCaseKeys: true)
        } else {
            Console.write("\n")
            Console.error(String(format: "prompt: %d tokens, %.1f tok/s | generated: %d tokens, %.1f tok/s | first token: %.1f ms | load: %.1f ms | peak RSS: %.1f MiB | stop: %@",
                                 result.promptTokens.count, result.promptTokensPerSecond, result.tokens.count,
                                 result.generationTokensPerSecond, result.timeToFirstToken * 1000, lm.loadSeconds * 1000,
                                 Double(peak) / 1_048_576, result.stopReason.rawValue))
            if let stats = result.speculation { Console.error(stats.summary) }
            if let paging = PagingSummary(lm.transformer.feedForward), let stats = lm.transformer.feedForward?.stats {
                Console.error(paging.line(stats, steps: result.tokens.count + 1))
            }
        }
    }
}

struct RunReport: Encodable {
    struct Timings: Encodable {
        let load_ms: Double
        let prompt_tokens_per_second: Double
        let generation_tokens_per_second: Double
        let time_to_first_token_ms: Double
    }
    let prompt_tokens: [Int]
    let tokens: [Int]
    let text: String
    let stop_reason: String
    let timings: Timings
    let peak_rss_bytes: Int
    /// The kernels' ISA tier (KernelISA) and the CPU features it used.
    let isa = KernelISA.current.rawValue
    let isa_features = KernelISA.features
    let top_logits: [[TokenLogit]]?
    let paging: PagingReport?
    let speculation: SpeculationStats?

    struct PagingReport: Encodable {
        let mode: String
        let plan: PagingPlan
        let stats: PagingStats
    }

    init(result: GenerationResult, loadSeconds: Double, peakRSS: Int, includeTopLogits: Bool, paging: PagedFeedForward? = nil) {
        self.paging = paging.map { PagingReport(mode: $0.options.mode.rawValue, plan: $0.plan, stats: $0.stats) }
        prompt_tokens = result.promptTokens
        tokens = result.tokens
        text = result.text
        stop_reason = result.stopReason.rawValue
        timings = Timings(load_ms: loadSeconds * 1000, prompt_tokens_per_second: result.promptTokensPerSecond,
                          generation_tokens_per_second: result.generationTokensPerSecond,
                          time_to_first_token_ms: result.timeToFirstToken * 1000)
        peak_rss_bytes = peakRSS
        top_logits = includeTopLogits ? result.topLogits : nil
        speculation = result.speculation
    }
}
