import ArgumentParser
import Foundation
import PocketLM

struct BenchFlash: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-flash",
        abstract: "Measure a packed model under memory budgets: flash paging against naive loading and mmap.",
        discussion: """
        Each configuration runs in its own process (so its peak RSS is its own): greedy decoding of --gen-tokens
        tokens after a short prompt, then quality against the dense model (top-1 agreement over the dense model's
        tokens, perplexity on --text). Reports tok/s, ms/token split into I/O wait, memory management and compute,
        bytes read per token, mean read size, read throughput, window hit rate and peak RSS, and a plain sequential
        O_DIRECT read of the same file measured in the same run as the storage reference.
        """)

    @Option(help: "A packed model (pocketlm pack).") var model: String
    @Option(help: "Budgets, comma-separated: sizes (64M) or percentages of the file.") var budgets: String = "25%,50%,75%"
    @Option(help: "Window sizes for flash, comma-separated.") var windows: String = "0,2,4"
    @Option(help: "Sparsity rules for flash, comma-separated (none, predictor[:F], exact[:F], threshold:T).")
    var sparsity: String = "none"
    @Option(help: "Modes, comma-separated (flash, naive, mmap).") var modes: String = "flash,naive,mmap"
    @Option(name: .customLong("gen-tokens"), help: "Tokens generated per configuration.") var genTokens: Int = 32
    @Option(help: "Prompt for the generation.") var prompt: String = "The history of the printing press began"
    @Option(help: "Text for perplexity (default: /usr/share/common-licenses/GPL-3).") var text: String = "/usr/share/common-licenses/GPL-3"
    @Option(name: .customLong("ppl-tokens"), help: "Tokens of --text scored for perplexity (0 = skip).") var pplTokens: Int = 512
    @Option(name: .customLong("io-threads")) var ioThreads: Int = 8
    @Option(help: "Rounds over all configurations, alternating; each row is the round with the median tok/s (this machine's speed swings between phases).")
    var rounds: Int = 3
    @Option var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(name: .customLong("layer-sharing"), help: "Layer schedule override (see run).") var layerSharing: String?
    @Flag(help: "Print JSON.") var json = false
    @Option(help: "Write an SVG of tok/s against budget, one line per mode.") var plot: String?
    @Option(name: .customLong("child"), help: .hidden) var child: String?
    @Option(name: .customLong("dense-tokens"), help: .hidden) var denseTokensFile: String?

    struct Config: Codable {
        var mode: String
        var budget: Int?
        var budgetLabel: String
        var window: Int
        var sparsity: String
        var name: String { mode == "resident" ? "dense (resident)" : "\(mode) w=\(window) \(sparsity)" }
    }

    struct Row: Codable {
        var config: Config
        var error: String?
        var tokens_per_second = 0.0
        var ms_per_token = 0.0
        var io_wait_ms = 0.0
        var manage_ms = 0.0
        var ffn_compute_ms = 0.0
        var other_ms = 0.0
        var bytes_read_per_token = 0.0
        var oracle_bytes_per_token: Double?
        var mean_read_bytes = 0.0
        var read_mb_per_s = 0.0
        var window_hit_rate = 0.0
        var neurons_per_layer = 0.0
        var peak_rss_bytes = 0
        var rss_before_load_bytes = 0
        var weight_bytes = 0
        var minimum_bytes = 0
        var top1_agreement: Double?
        var perplexity: Double?
        var tokens: [Int] = []
        var speedup_vs_naive: Double?
        var bytes_per_effective_layer = 0.0
        /// tok/s of every round (the row shows the median one).
        var rounds: [Double]?
    }

    struct Report: Codable {
        var model: String
        var file_bytes: Int
        var threads: Int
        var io_threads: Int
        var direct_io: Bool
        var sequential_read_mb_per_s: Double
        var rows: [Row]
    }

    func validate() throws {
        guard rounds >= 1, genTokens >= 2, pplTokens >= 0 else { throw ValidationError("--rounds ≥ 1, --gen-tokens ≥ 2, --ppl-tokens ≥ 0") }
    }

    func run() async throws {
        if let child {
            let config = try JSONDecoder().decode(Config.self, from: Data(child.utf8))
            try Console.json(measure(config))
            return
        }
        let fileBytes = (try FileManager.default.attributesOfItem(atPath: model)[.size] as? Int) ?? 0
        guard fileBytes > 0 else { throw CLIError(description: "model file not found: \(model)") }
        let budgetList = try budgets.split(separator: ",").map { (String($0), try ByteCount.parse(String($0), reference: fileBytes)) }
        let windowList = try windows.split(separator: ",").map { s -> Int in
            guard let w = Int(s), w >= 0 else { throw ValidationError("bad window '\(s)'") }
            return w
        }
        let sparsityList = sparsity.split(separator: ",").map(String.init)
        for s in sparsityList { _ = try PagingOptions.Sparsity.parse(s) }
        let modeList = modes.split(separator: ",").map(String.init)
        for m in modeList where !["flash", "naive", "mmap"].contains(m) { throw ValidationError("unknown mode '\(m)'") }

        // The dense model first: its tokens and perplexity are what the others are compared with.
        var rows: [Row] = []
        let dense = try spawn(Config(mode: "resident", budget: nil, budgetLabel: "all", window: 0, sparsity: "none"), denseTokens: nil)
        rows.append(dense)
        let tokensFile = FileManager.default.temporaryDirectory.appendingPathComponent("pocketlm-dense-\(getpid()).json")
        try JSONEncoder().encode(dense.tokens).write(to: tokensFile)
        defer { try? FileManager.default.removeItem(at: tokensFile) }

        var configs: [Config] = []
        for (label, budget) in budgetList {
            if modeList.contains("naive") { configs.append(Config(mode: "naive", budget: budget, budgetLabel: label, window: 0, sparsity: "none")) }
            if modeList.contains("flash") {
                for s in sparsityList { for w in windowList { configs.append(Config(mode: "flash", budget: budget, budgetLabel: label, window: w, sparsity: s)) } }
            }
            if modeList.contains("mmap") { configs.append(Config(mode: "mmap", budget: budget, budgetLabel: label, window: 0, sparsity: "none")) }
        }
        // Every round runs every configuration once; a configuration's ratio to naive is taken within a round
        // (both measured in the same phase of the machine), and the row reported is its median round.
        var samples = [[Row]](repeating: [], count: configs.count)
        for round in 0..<max(1, rounds) {
            var naiveSpeed: [String: Double] = [:]
            for (i, c) in configs.enumerated() {
                var row = try spawn(c, denseTokens: tokensFile.path)
                if c.mode == "naive", row.error == nil { naiveSpeed[c.budgetLabel] = row.tokens_per_second }
                if let n = naiveSpeed[c.budgetLabel], row.error == nil { row.speedup_vs_naive = row.tokens_per_second / n }
                samples[i].append(row)
                if !json { Console.error("round \(round + 1): " + describe(row, denseRow: dense)) }
            }
        }
        for rowsOfConfig in samples {
            let ok = rowsOfConfig.filter { $0.error == nil }
            guard !ok.isEmpty else { rows.append(rowsOfConfig[0]); continue }
            var median = ok.sorted { $0.tokens_per_second < $1.tokens_per_second }[ok.count / 2]
            let ratios = ok.compactMap(\.speedup_vs_naive).sorted()
            median.speedup_vs_naive = ratios.isEmpty ? nil : ratios[ratios.count / 2]
            median.rounds = ok.map(\.tokens_per_second)
            rows.append(median)
        }
        let sequential = try DirectReader.sequentialThroughput(path: model, bytes: min(fileBytes, 512 << 20))
        let report = Report(model: model, file_bytes: fileBytes, threads: threads, io_threads: ioThreads,
                            direct_io: sequential.direct, sequential_read_mb_per_s: sequential.bytesPerSecond / 1e6, rows: rows)
        if let plot { try FlashChart.svg(report).write(toFile: plot, atomically: true, encoding: .utf8) }
        if json {
            try Console.json(report)
            return
        }
        Console.write(table(report, dense: dense))
    }

    // MARK: - Parent

    private func spawn(_ config: Config, denseTokens: String?) throws -> Row {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        var args = ["bench-flash", "--model", model, "--child", String(decoding: try JSONEncoder().encode(config), as: UTF8.self),
                    "--gen-tokens", "\(genTokens)", "--prompt", prompt, "--text", text, "--ppl-tokens", "\(pplTokens)",
                    "--io-threads", "\(ioThreads)", "--threads", "\(threads)"]
        if let layerSharing { args += ["--layer-sharing", layerSharing] }
        if let denseTokens { args += ["--dense-tokens", denseTokens] }
        process.arguments = args
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // stderr is drained on another thread, so a chatty child never blocks on a full pipe.
        final class Box: @unchecked Sendable { var data = Data() }
        let errBox = Box()
        let drained = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); drained.signal() }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        drained.wait()
        let errData = errBox.data
        process.waitUntilExit()
        if process.terminationStatus != 0 {
            let message = String(decoding: errData, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? "exit \(process.terminationStatus)"
            var row = Row(config: config)
            row.error = message.replacingOccurrences(of: "Error: ", with: "")
            return row
        }
        return try JSONDecoder().decode(Row.self, from: data)
    }

    private func describe(_ r: Row, denseRow: Row) -> String {
        if let e = r.error { return "\(r.config.budgetLabel) \(r.config.name): \(e)" }
        return String(format: "%@ %@: %.2f tok/s, %.2f MiB read/token, hit %.0f%%, RSS %.0f MiB",
                      r.config.budgetLabel, r.config.name, r.tokens_per_second, r.bytes_read_per_token / 1_048_576,
                      r.window_hit_rate * 100, Double(r.peak_rss_bytes) / 1_048_576)
    }

    private func table(_ report: Report, dense: Row) -> String {
        var s = String(format: "model: %@ (%@), %d threads, %d I/O threads, direct I/O: %@, sequential O_DIRECT read: %.0f MB/s\n",
                       report.model, ByteCount.format(report.file_bytes), report.threads, report.io_threads,
                       report.direct_io ? "yes" : "no (page cache dropped after reads)", report.sequential_read_mb_per_s)
        s += "budget  mode                      tok/s  ×naive  ms/tok (io/mgmt/ffn/other)      MiB rd/tok  oracle  KiB/layer  rd KiB   MB/s  hit%  RSS MiB  top1   ppl\n"
        for r in report.rows {
            let c = r.config
            if let e = r.error {
                s += String(format: "%-7@ %-24@ %@\n", c.budgetLabel, c.name, e)
                continue
            }
            let split = String(format: "%6.1f (%.1f/%.1f/%.1f/%.1f)", r.ms_per_token, r.io_wait_ms, r.manage_ms, r.ffn_compute_ms, r.other_ms)
            s += String(format: "%-7@ %-24@ %6.2f  %6@  %-30@ %8.2f  %6@  %9.0f  %6.0f  %5.0f  %4.0f  %7.1f  %5@  %@\n",
                        c.budgetLabel, c.name, r.tokens_per_second, r.speedup_vs_naive.map { String(format: "%.2f", $0) } ?? "-",
                        split, r.bytes_read_per_token / 1_048_576,
                        r.oracle_bytes_per_token.map { String(format: "%.2f", $0 / 1_048_576) } ?? "-",
                        r.bytes_per_effective_layer / 1024,
                        r.mean_read_bytes / 1024, r.read_mb_per_s, r.window_hit_rate * 100, Double(r.peak_rss_bytes) / 1_048_576,
                        r.top1_agreement.map { String(format: "%.2f", $0) } ?? "-",
                        r.perplexity.map { String(format: "%.2f", $0) } ?? "-")
        }
        return s
    }

    // MARK: - Child: one configuration

    private func measure(_ c: Config) throws -> Row {
        let rssBefore = ProcessStats.currentResidentBytes()
        let paging = PagingOptions(mode: PagingOptions.Mode(rawValue: c.mode) ?? .resident, memoryBudget: c.budget,
                                   window: c.window, sparsity: try PagingOptions.Sparsity.parse(c.sparsity), ioThreads: ioThreads)
        let schedule = layerSharing.flatMap(LayerSchedule.Strategy.init(rawValue:)).map { ($0, 2) }
        let lm = try LanguageModel(path: model, options: LoadOptions(threads: threads, contextLength: 1024,
                                                                     layerSchedule: schedule, maxBatch: 256, paging: paging))
        let t = lm.transformer
        guard let ffn = t.feedForward else { throw PagingError.notPacked(path: model) }
        var row = Row(config: c)
        row.rss_before_load_bytes = rssBefore
        row.weight_bytes = ffn.plan.weightBytes
        row.minimum_bytes = ffn.plan.minimumBytes

        // Speed: greedy decoding after the prompt; only the decode steps are timed and counted.
        let promptIds = lm.encodePrompt(prompt, parseSpecial: false)
        t.reset()
        var logits = try promptIds.withUnsafeBufferPointer { try t.forward($0) }
        var next = Sampler.argmax(logits)
        var generated = [next]
        let before = ffn.stats
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 1..<genTokens {
            logits = try t.decode(next)
            next = Sampler.argmax(logits)
            generated.append(next)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let d = ffn.stats - before
        let steps = Double(max(1, genTokens - 1))
        row.tokens = generated
        row.tokens_per_second = steps / seconds
        row.ms_per_token = seconds * 1000 / steps
        row.io_wait_ms = d.ioWaitSeconds * 1000 / steps
        row.manage_ms = d.manageSeconds * 1000 / steps
        row.ffn_compute_ms = d.computeSeconds * 1000 / steps
        row.other_ms = max(0, row.ms_per_token - row.io_wait_ms - row.manage_ms - row.ffn_compute_ms)
        row.bytes_read_per_token = Double(d.bytesRead) / steps
        if case .exact = paging.sparsity { row.oracle_bytes_per_token = Double(d.oracleBytes) / steps }
        if case .threshold = paging.sparsity { row.oracle_bytes_per_token = Double(d.oracleBytes) / steps }
        row.mean_read_bytes = d.reads > 0 ? Double(d.bytesRead) / Double(d.reads) : 0
        row.read_mb_per_s = Double(d.bytesRead) / seconds / 1e6
        row.window_hit_rate = d.groupsNeeded > 0 ? Double(d.groupsInMemory) / Double(d.groupsNeeded) : 0
        row.neurons_per_layer = Double(d.neuronsComputed) / Double(max(1, d.layerSteps))
        row.bytes_per_effective_layer = Double(d.bytesRead) / steps / Double(t.schedule.passes.count)
        // Peak RSS of the generation itself; the quality passes below add an all-positions logits buffer.
        row.peak_rss_bytes = ProcessStats.peakResidentBytes()

        // Quality: the dense model's tokens teacher-forced; the share of positions where this one agrees.
        if let path = denseTokensFile {
            let dense = try JSONDecoder().decode([Int].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
            let input = promptIds + dense.dropLast()
            t.reset()
            let all = try input.withUnsafeBufferPointer { try t.forward($0, allLogits: true) }
            let vocab = t.config.vocabSize
            var agree = 0
            for (j, tok) in dense.enumerated() {
                let p = promptIds.count - 1 + j
                if Sampler.argmax(UnsafeBufferPointer(rebasing: all[(p * vocab)..<((p + 1) * vocab)])) == tok { agree += 1 }
            }
            row.top1_agreement = Double(agree) / Double(max(1, dense.count))
        }
        if pplTokens > 0, let data = FileManager.default.contents(atPath: text) {
            let ids = lm.encodePrompt(String(decoding: data, as: UTF8.self), parseSpecial: false)
            let window = 256
            let tokens = Array(ids.prefix(max(window, pplTokens / window * window)))
            let bos = lm.tokenizer.addBos ? lm.tokenizer.bosTokenId : nil
            row.perplexity = try PerplexityEvaluator.evaluate(transformer: t, tokens: tokens, window: window, bos: bos).perplexity
        }
        return row
    }
}

/// tok/s against budget, one line per configuration family.
enum FlashChart {
    static func svg(_ report: BenchFlash.Report) -> String {
        let width = 760, height = 440, left = 70, right = 230, top = 70, bottom = 60
        let rows = report.rows.filter { $0.error == nil && $0.config.budget != nil }
        var series: [String: [(Double, Double)]] = [:]
        for r in rows {
            let key = r.config.name
            series[key, default: []].append((Double(r.config.budget!) / Double(report.file_bytes) * 100, r.tokens_per_second))
        }
        let maxX = max(100, rows.map { Double($0.config.budget!) / Double(report.file_bytes) * 100 }.max() ?? 100)
        let maxY = max(1, (report.rows.map(\.tokens_per_second).max() ?? 1) * 1.1)
        func px(_ x: Double) -> Int { left + Int(x / maxX * Double(width - left - right)) }
        func py(_ y: Double) -> Int { height - bottom - Int(y / maxY * Double(height - top - bottom)) }
        let colors = ["#1f5fa8", "#d9534f", "#5cb85c", "#f0ad4e", "#6f42c1", "#17a2b8", "#795548", "#e83e8c", "#20c997", "#343a40"]
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="10" y="22" font-size="15" font-weight="bold">Flash paging: tok/s against memory budget</text>
        <text x="10" y="40" fill="#555">\(URL(fileURLWithPath: report.model).lastPathComponent), \(report.threads) threads, \(report.io_threads) I/O threads</text>
        <line x1="\(left)" y1="\(height - bottom)" x2="\(width - right)" y2="\(height - bottom)" stroke="black"/>
        <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(height - bottom)" stroke="black"/>
        <text x="\((left + width - right) / 2 - 60)" y="\(height - 20)">budget (% of the file)</text>
        <text x="12" y="\(top - 10)">tok/s</text>

        """
        for i in 0...4 {
            let x = maxX * Double(i) / 4, y = maxY * Double(i) / 4
            svg += "<text x=\"\(px(x) - 10)\" y=\"\(height - bottom + 16)\">\(Int(x))</text>\n"
            svg += "<text x=\"\(left - 40)\" y=\"\(py(y) + 4)\">\(String(format: "%.1f", y))</text>\n"
        }
        for (i, key) in series.keys.sorted().enumerated() {
            let pts = series[key]!.sorted { $0.0 < $1.0 }
            let color = colors[i % colors.count]
            let path = pts.map { "\(px($0.0)),\(py($0.1))" }.joined(separator: " ")
            svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
            for p in pts { svg += "<circle cx=\"\(px(p.0))\" cy=\"\(py(p.1))\" r=\"3\" fill=\"\(color)\"/>\n" }
            svg += "<text x=\"\(width - right + 10)\" y=\"\(top + 16 * i)\" fill=\"\(color)\">\(key)</text>\n"
        }
        if let dense = report.rows.first(where: { $0.config.mode == "resident" && $0.error == nil }) {
            svg += "<line x1=\"\(left)\" y1=\"\(py(dense.tokens_per_second))\" x2=\"\(width - right)\" y2=\"\(py(dense.tokens_per_second))\" stroke=\"#999\" stroke-dasharray=\"4\"/>\n"
            svg += "<text x=\"\(left + 6)\" y=\"\(py(dense.tokens_per_second) - 4)\" fill=\"#777\">all in memory</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }
}
