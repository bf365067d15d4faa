import ArgumentParser
import Foundation
import PocketLM

struct CompareSharing: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare-sharing",
        abstract: "Run every layer-sharing strategy on the same weights and compare them (MobileLLM's comparison).",
        discussion: """
        Each strategy runs the model's N blocks in its order (none: once each; immediate: L0 L0 L1 L1 …;
        repeat-all: L0…LN-1 L0…LN-1; reverse: L0…LN-1 LN-1…L0), every pass with its own KV-cache slot. The
        baseline row is an unshared model of the same effective depth (N×repeats distinct blocks, random Q8_0
        weights): the comparison MobileLLM made. With no --config or --model it uses a random-weight
        MobileLLM-LS-125M generated in memory (deterministic, seed 1).
        """)

    @Option(help: "A config.json (see configs/): random Q8_0 weights of that shape.") var config: String?
    @Option(help: "A GGUF model: its own weights (perplexity needs this).") var model: String?
    @Option(help: "Comma-separated strategies.") var strategies: String = "none,immediate,repeat-all,reverse"
    @Option(parsing: .number, help: "Passes per block for the sharing strategies.") var repeats: Int = 2
    @Option(help: "Text file for perplexity (with --model).") var text: String?
    @Option(parsing: .number, help: "Compute threads.") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(name: .customLong("prompt-tokens"), parsing: .number) var promptTokens: Int = 64
    @Option(name: .customLong("gen-tokens"), parsing: .number) var genTokens: Int = 64
    @Option(parsing: .number) var repetitions: Int = 3
    @Flag(help: "Print JSON.") var json = false
    @Option(help: "Write an SVG bar chart of the speeds (and perplexity) to this file.") var plot: String?

    struct Row: Encodable {
        let name: String
        let strategy: String
        let effective_layers: Int
        let prefill_tokens_per_second: Double
        let decode_tokens_per_second: Double
        let ms_per_token: Double
        let unique_weight_bytes_per_token: Int
        let kv_cache_bytes_per_token: Int
        let perplexity: Double?
    }

    struct Report: Encodable {
        let model: String
        let blocks: Int
        let threads: Int
        let rows: [Row]
    }

    func validate() throws {
        if config != nil && model != nil { throw ValidationError("give --config or --model, not both") }
        if text != nil && model == nil { throw ValidationError("--text needs --model (random weights have no meaningful perplexity)") }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1, found \(repeats)") }
        for (option, value) in [("--threads", threads), ("--prompt-tokens", promptTokens), ("--gen-tokens", genTokens),
                                ("--repetitions", repetitions)] where value < 1 {
            throw ValidationError("\(option) must be at least 1, found \(value)")
        }
        _ = try CommaList.entries(strategies, option: "--strategies", entry: "strategy", example: "none,immediate")
        for s in parsedStrategies where LayerSchedule.Strategy(rawValue: s) == nil {
            throw ValidationError("unknown strategy '\(s)' (none, immediate, repeat-all, reverse)")
        }
    }

    var parsedStrategies: [String] { strategies.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func run() async throws {
        let context = promptTokens + genTokens
        var rows: [Row] = []
        let base: ModelConfig
        let name: String
        var lm: LanguageModel?
        var baseBytes: Int
        if let model {
            let loaded = try LanguageModel(path: model, options: LoadOptions(threads: threads, contextLength: max(context, 512)))
            lm = loaded
            base = loaded.config
            name = model
            baseBytes = loaded.file.tensors.reduce(0) { $0 + $1.byteCount }
        } else {
            base = try config.map { try ModelConfig.load(configFile: $0) } ?? ModelConfig.mobileLLMLS125M
            name = config ?? "MobileLLM-LS-125M (random Q8_0 weights)"
            baseBytes = try base.footprint().weightBytes["q8_0"]!
        }
        let randomStore = lm == nil ? try RandomWeightStore(config: base) : nil
        var textTokens: [Int] = []
        if let text, let lm {
            guard let data = FileManager.default.contents(atPath: text) else { throw CLIError(description: "cannot read text file \(text)") }
            textTokens = lm.encodePrompt(String(decoding: data, as: UTF8.self), parseSpecial: false)
            guard textTokens.count >= 512 else { throw CLIError(description: "\(text) has \(textTokens.count) tokens, fewer than one window of 512") }
        }

        func measure(_ t: Transformer, label: String, strategy: String, bytes: Int, scorePerplexity: Bool = true) throws -> Row {
            if !json { Console.error("measuring \(label) (\(t.schedule.passes.count) effective layers)…") }
            let r = try Benchmark(transformer: t, name: label, loadSeconds: 0)
                .run(promptTokens: promptTokens, genTokens: genTokens, repetitions: repetitions)
            var ppl: Double?
            if scorePerplexity && !textTokens.isEmpty {
                ppl = try PerplexityEvaluator.evaluate(transformer: t, tokens: textTokens, window: 512).perplexity
            }
            return Row(name: label, strategy: strategy, effective_layers: t.schedule.passes.count,
                       prefill_tokens_per_second: r.prefill.median, decode_tokens_per_second: r.decode.median,
                       ms_per_token: 1000 / r.decode.median, unique_weight_bytes_per_token: bytes,
                       kv_cache_bytes_per_token: t.cache.bytesPerToken, perplexity: ppl)
        }

        for s in parsedStrategies {
            let strategy = LayerSchedule.Strategy(rawValue: s)!
            let schedule = try LayerSchedule(strategy: strategy, repeats: repeats, blocks: base.numHiddenLayers)
            let store: WeightStore = randomStore ?? lm!.transformer.store
            let t = try Transformer(store: store, config: base, schedule: schedule,
                                    contextLength: max(context, textTokens.isEmpty ? 0 : 512), threads: threads)
            rows.append(try measure(t, label: schedule.description, strategy: s, bytes: baseBytes))
        }
        // Baseline: an unshared model as deep as the shared ones (distinct random blocks).
        var deep = base
        deep.numHiddenLayers = base.numHiddenLayers * repeats
        deep.layerSchedule = nil
        deep.layerSharing = false
        let deepStore = try RandomWeightStore(config: deep, seed: 2)
        let deepModel = try Transformer(store: deepStore, config: deep, schedule: .plain(blocks: deep.numHiddenLayers),
                                        contextLength: context, threads: threads)
        let deepBytes = try deep.footprint(schedule: .plain(blocks: deep.numHiddenLayers)).weightBytes["q8_0"]!
        // Its weights are random: speed and bytes only, no perplexity.
        rows.append(try measure(deepModel, label: "unshared \(deep.numHiddenLayers) blocks (baseline)", strategy: "baseline",
                                bytes: deepBytes, scorePerplexity: false))

        let report = Report(model: name, blocks: base.numHiddenLayers, threads: threads, rows: rows)
        if let plot { try SVGChart.sharing(report).write(toFile: plot, atomically: true, encoding: .utf8) }
        if json {
            try Console.json(report)
            return
        }
        var out = "\(name): \(base.numHiddenLayers) blocks, \(threads) threads, pp\(promptTokens) / tg\(genTokens), medians of \(repetitions)\n"
        out += "strategy                          layers  prefill tok/s  decode tok/s  ms/token  weight MiB/token  KV B/token  perplexity\n"
        for r in rows {
            out += r.name.padding(toLength: 34, withPad: " ", startingAt: 0)
            out += String(format: "%6d  %13.1f  %12.1f  %8.2f  %16.1f  %10d  %@\n", r.effective_layers,
                          r.prefill_tokens_per_second, r.decode_tokens_per_second, r.ms_per_token,
                          Double(r.unique_weight_bytes_per_token) / 1_048_576, r.kv_cache_bytes_per_token,
                          r.perplexity.map { String(format: "%.3f", $0) } ?? "-")
        }
        Console.write(out)
    }
}
