import ArgumentParser
import Foundation
import PocketLM

struct BenchFlash: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-flash",
        abstract: "Measure a packed model under memory budgets: flash paging against naive loading, mmap and llama.cpp.",
        discussion: """
        Each configuration runs in its own process (so its peak RSS is its own), inside a cgroup memory limit equal
        to its budget where a memory cgroup is writable (page cache counts against it, as on a phone), starting with
        the files dropped from the page cache: greedy decoding of --gen-tokens tokens after a short prompt, then
        quality against the dense model (greedy tokens equal; top-1 agreement over the dense model's tokens and
        perplexity on --text, with the limit lifted after the timed decode). With --source (the unpacked file) the
        dense row runs that file, and llama.cpp (the llama-cpp-python venv, mmap) runs it under the same limit as a
        row. Reports tok/s, ratios to naive, mmap and llama.cpp measured in the same round, ms/token split into I/O
        wait, memory management and compute, bytes read from storage per token, the storage bound (tok/s if a token
        took only its reads at the storage reference's throughput) and the share of it reached, window hit rate, the
        limit's peak and hit count. The storage reference is the faster of two reads measured in every round: one
        sequential O_DIRECT stream of 1 MiB reads, and reads of the layers' bundles the way flash issues them (flash's
        read size, --io-threads readers with two or four layers queued, or twice the readers: the fastest).
        """)

    @Option(help: "A packed model (pocketlm pack).") var model: String
    @Option(help: "The unpacked file the model was packed from: the dense reference and llama.cpp's model.") var source: String?
    @Option(help: "Budgets, comma-separated: sizes (64M), percentages of the file, min (the smallest the model runs in at --context) or min+SIZE.")
    var budgets: String = "25%,50%,75%"
    @Option(help: "Window sizes for flash, comma-separated.") var windows: String = "0,2,4"
    @Option(help: "Sparsity rules for flash, comma-separated (none, predictor[:F], exact[:F], threshold:T).")
    var sparsity: String = "none"
    @Option(help: "Modes, comma-separated (flash, naive, mmap, llama.cpp; flash-aio: flash with its reads queued by native AIO instead of the reader threads). Default: flash, naive, mmap, llama.cpp; llama.cpp only with --source.")
    var modes: String?
    @Option(name: .customLong("memory-limit"), help: "Run each budgeted configuration inside a cgroup memory limit equal to its budget: auto (where a memory cgroup is writable; else the reason is printed), on, off.")
    var memoryLimit: String = "auto"
    @Option(name: .customLong("llama-cpp"), help: "The python of the llama-cpp-python venv (make variants or weights-tools/bench_peer.py --build-peer builds it).")
    var llamaCpp: String = LlamaCppPeer.defaultPython
    @Option(parsing: .number, help: "Context the KV cache is sized for (the budget includes it).") var context: Int = 1024
    @Option(name: .customLong("gen-tokens"), parsing: .number, help: "Tokens generated per configuration.") var genTokens: Int = 32
    @Option(help: "Prompt for the generation.") var prompt: String = "The history of the printing press began"
    @Option(help: "Text for perplexity (default: /usr/share/common-licenses/GPL-3).") var text: String = "/usr/share/common-licenses/GPL-3"
    @Option(name: .customLong("ppl-tokens"), parsing: .number, help: "Tokens of --text scored for perplexity (0 = skip).") var pplTokens: Int = 512
    @Option(name: .customLong("io-threads"), parsing: .number) var ioThreads: Int = 8
    @Option(parsing: .number, help: "Rounds over all configurations, the order reversed every other round; each row is the round with the median tok/s (this machine's speed swings between phases).")
    var rounds: Int = 3
    @Option(parsing: .number) var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(name: .customLong("layer-sharing"), help: "Layer schedule override (see run).") var layerSharing: String?
    @Flag(help: "Print JSON.") var json = false
    @Option(help: "Write an SVG of tok/s against budget, one line per mode.") var plot: String?
    @Option(name: .customLong("child"), help: .hidden) var child: String?
    @Option(name: .customLong("dense-tokens"), help: .hidden) var denseTokensFile: String?
    @Option(name: .customLong("cgroup"), help: .hidden) var cgroup: String?

    static let allModes = ["flash", "naive", "mmap", "llama.cpp"]
    static let knownModes = allModes + ["flash-aio"]

    struct Config: Codable {
        var mode: String
        var budget: Int?
        var budgetLabel: String
        var window: Int
        var sparsity: String
        var name: String {
            switch mode {
            case "resident": "dense (resident)"
            case "llama.cpp": "llama.cpp (mmap)"
            case "flash": "flash w=\(window) \(sparsity)"
            case "flash-aio": "flash aio w=\(window) \(sparsity)"
            default: mode
            }
        }
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
        /// Bytes the decode read from storage per token, by the kernel's count (/proc/self/io).
        var storage_read_bytes_per_token = 0.0
        /// tok/s if each token took only its storage reads at the sequential O_DIRECT throughput; nil: reads nothing.
        var storage_bound_tokens_per_second: Double?
        var storage_share: Double?
        var oracle_bytes_per_token: Double?
        var mean_read_bytes = 0.0
        var read_mb_per_s = 0.0
        /// Flash through the reader threads: the share of the decode during which a read was queued or running, and
        /// the bytes it read per second of that time (what the storage gave while it had work, against the probe's).
        var read_busy_share: Double?
        var read_mb_per_s_busy: Double?
        var window_hit_rate = 0.0
        var neurons_per_layer = 0.0
        var peak_rss_bytes = 0
        var rss_before_load_bytes = 0
        var weight_bytes = 0
        var minimum_bytes = 0
        /// The cgroup limit the run was inside (its budget), its peak charge during the decode and hits of the limit.
        var limit_bytes: Int?
        var limit_peak_bytes: Int?
        var limit_hits: Int?
        var killed = false
        var top1_agreement: Double?
        var perplexity: Double?
        var prompt_tokens: [Int] = []
        var tokens: [Int] = []
        var tokens_equal_dense: Bool?
        var speedup_vs_naive: Double?
        var speedup_vs_mmap: Double?
        var speedup_vs_llama_cpp: Double?
        var bytes_per_effective_layer = 0.0
        /// tok/s of every round (the row shows the median one).
        var rounds: [Double]?
    }

    struct ProbePattern: Codable {
        var threads: Int
        var layers_queued: Int
        var mb_per_s: Double
    }

    struct Report: Codable {
        var model: String
        var source: String?
        var cpu: String
        var load_average: String
        var file_bytes: Int
        var threads: Int
        var io_threads: Int
        var context: Int
        var direct_io: Bool
        var sequential_read_mb_per_s: Double
        /// Reads of the layers' bundles as flash issues them (`parallel_read_bytes` each, a layer a batch): the fastest
        /// of `io_threads` readers with two or four layers queued and twice the readers with four.
        var parallel_read_mb_per_s: Double
        var parallel_read_bytes: Int
        /// Each pattern the probe tried (`DirectReader.referencePatterns`), with its median over the rounds.
        var parallel_patterns: [ProbePattern]
        /// nil: every budgeted row ran inside a memory limit equal to its budget; else why not.
        var memory_limit_unavailable: String?
        var rows: [Row]
    }

    func validate() throws {
        for (option, value, least) in [("--rounds", rounds, 1), ("--gen-tokens", genTokens, 2), ("--ppl-tokens", pplTokens, 0)]
        where value < least {
            throw ValidationError("\(option) must be at least \(least), found \(value)")
        }
        guard context >= 16 else { throw ValidationError("--context must be at least 16, found \(context)") }
        guard ["auto", "on", "off"].contains(memoryLimit) else { throw ValidationError("--memory-limit is auto, on or off, found '\(memoryLimit)'") }
        if let modes, modes.split(separator: ",").contains("llama.cpp"), source == nil {
            throw ValidationError("the llama.cpp row runs the unpacked file: give it with --source")
        }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1, found \(threads)") }
        try PagingArguments.validate(ioThreads: ioThreads)
        _ = try windowList()
        if let modes { _ = try CommaList.entries(modes, option: "--modes", entry: "mode", example: "flash,naive") }
        _ = try CommaList.entries(sparsity, option: "--sparsity", entry: "rule", example: "none,predictor:0.9")
    }

    /// --windows as numbers, each one a flash run accepts.
    func windowList() throws -> [Int] {
        try windows.split(separator: ",", omittingEmptySubsequences: false).map { s -> Int in
            guard let w = Int(s), PagingOptions.windows.contains(w) else {
                throw ValidationError("bad window '\(s)' in --windows: each is a number of tokens from \(PagingOptions.windows.lowerBound) to \(PagingOptions.windows.upperBound)")
            }
            return w
        }
    }

    func run() async throws {
        if let child {
            let config = try JSONDecoder().decode(Config.self, from: Data(child.utf8))
            try Console.json(measure(config))
            return
        }
        // Before anything runs (the dense run alone takes a while): the model is there, and packed.
        let fileBytes: Int
        do {
            let file = try GGUFFile(path: model)
            guard try FlashLayout(file: file, config: ModelConfig(gguf: file)) != nil else { throw PagingError.notPacked(path: model) }
            fileBytes = file.file.size
        }
        if let source, !FileManager.default.fileExists(atPath: source) { throw CLIError(description: "source file not found: \(source)") }
        // The smallest budget the model runs in at --context, found once when needed.
        var knownMinimum: Int?
        func minimum() throws -> Int {
            if let knownMinimum { return knownMinimum }
            knownMinimum = try minimumBudget()
            return knownMinimum!
        }
        guard !budgets.split(separator: ",").isEmpty else { throw ValidationError("--budgets lists no budget") }
        let budgetTexts = try CommaList.entries(budgets, option: "--budgets", entry: "budget", example: "25%,min,64M")
        let budgetList = try budgetTexts.map { text -> (String, Int) in
            if text == "min" { return ("min", try minimum()) }
            if text.hasPrefix("min+") { return (String(text), try minimum() + ByteCount.parse(String(text.dropFirst(4)))) }
            return (String(text), try ByteCount.parse(String(text), reference: fileBytes))
        }
        let windowList = try windowList()
        let sparsityList = sparsity.split(separator: ",").map(String.init)
        for s in sparsityList { _ = try PagingOptions.Sparsity.parse(s) }
        var modeList = (modes ?? Self.allModes.joined(separator: ",")).split(separator: ",").map(String.init)
        for m in modeList where !Self.knownModes.contains(m) { throw ValidationError("unknown mode '\(m)' (flash, flash-aio, naive, mmap, llama.cpp)") }
        if source == nil, modes == nil {
            modeList.removeAll { $0 == "llama.cpp" }
            if !json { Console.error("no llama.cpp row: it runs the unpacked file, give it with --source") }
        }
        if modeList.contains("llama.cpp"), !FileManager.default.isExecutableFile(atPath: llamaCpp) {
            throw CLIError(description: "no llama-cpp-python venv at \(llamaCpp): build it with `python3 weights-tools/bench_peer.py --build-peer` or pass --llama-cpp")
        }
        var limitUnavailable: String? = memoryLimit == "off" ? "--memory-limit off" : nil
        if memoryLimit != "off", let reason = MemoryCgroup.unavailable() {
            if memoryLimit == "on" { throw CLIError(description: "--memory-limit on: \(reason)") }
            limitUnavailable = reason
            Console.error("SKIPPED the memory limits (rows run unlimited): \(reason)")
        }

        // The dense model first: its tokens and perplexity are what the others are compared with.
        var rows: [Row] = []
        let dense = try spawn(Config(mode: "resident", budget: nil, budgetLabel: "all", window: 0, sparsity: "none"),
                              denseTokens: nil, limited: false)
        if let e = dense.error { throw CLIError(description: "the dense run failed: \(e)") }
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
            if modeList.contains("flash-aio") {
                for s in sparsityList { for w in windowList { configs.append(Config(mode: "flash-aio", budget: budget, budgetLabel: label, window: w, sparsity: s)) } }
            }
            if modeList.contains("mmap") { configs.append(Config(mode: "mmap", budget: budget, budgetLabel: label, window: 0, sparsity: "none")) }
            if modeList.contains("llama.cpp") { configs.append(Config(mode: "llama.cpp", budget: budget, budgetLabel: label, window: 0, sparsity: "none")) }
        }
        // Every round runs every configuration once, in reverse order every other round; a configuration's ratios
        // to naive, mmap and llama.cpp are taken within a round (measured in the same phase of the machine), and
        // the row reported is its median round. The storage reference is measured in every round too.
        var samples = [[Row]](repeating: [], count: configs.count)
        var sequentialRounds: [Double] = [], parallelRounds: [Double] = [], patternRounds: [[Double]] = []
        let packedFile = try GGUFFile(path: model)
        let packedConfig = try ModelConfig(gguf: packedFile)
        guard let layout = try FlashLayout(file: packedFile, config: packedConfig) else {
            throw PagingError.notPacked(path: model)
        }
        let readBytes = PagedFeedForward.readBytes(layout: layout)
        let bundleRanges = PagedFeedForward.bundleRanges(file: packedFile, layers: packedConfig.numHiddenLayers)
        let patterns = DirectReader.referencePatterns(readBytes: readBytes, threads: ioThreads)
        var direct = true
        for round in 0..<max(1, rounds) {
            var order = Array(configs.indices)
            if round % 2 == 1 { order.reverse() }
            var roundRows = [Row?](repeating: nil, count: configs.count)
            for i in order {
                // Below the minimum PocketLM states its error (a limit that small would kill the process before it
                // starts): those children run unlimited. llama.cpp runs under every limit.
                let belowMinimum = try limitUnavailable == nil && configs[i].budget.map { try $0 < minimum() - (1 << 20) } == true
                var row = configs[i].mode == "llama.cpp"
                    ? try spawnLlamaCpp(configs[i], promptTokens: dense.prompt_tokens, limited: limitUnavailable == nil)
                    : try spawn(configs[i], denseTokens: tokensFile.path, limited: limitUnavailable == nil && !belowMinimum)
                if row.error == nil { row.tokens_equal_dense = row.tokens == dense.tokens }
                roundRows[i] = row
                if !json { Console.error("round \(round + 1): " + describe(row)) }
            }
            func speed(_ label: String, _ mode: String) -> Double? {
                configs.indices.first { configs[$0].budgetLabel == label && configs[$0].mode == mode }
                    .flatMap { roundRows[$0] }.flatMap { $0.error == nil ? $0.tokens_per_second : nil }
            }
            for i in configs.indices {
                guard var row = roundRows[i], row.error == nil else { samples[i].append(roundRows[i]!); continue }
                let label = configs[i].budgetLabel
                row.speedup_vs_naive = speed(label, "naive").map { row.tokens_per_second / $0 }
                row.speedup_vs_mmap = speed(label, "mmap").map { row.tokens_per_second / $0 }
                row.speedup_vs_llama_cpp = speed(label, "llama.cpp").map { row.tokens_per_second / $0 }
                samples[i].append(row)
            }
            let sequential = try DirectReader.sequentialThroughput(path: model, bytes: min(fileBytes, 256 << 20))
            sequentialRounds.append(sequential.bytesPerSecond)
            direct = direct && sequential.direct
            // Over the bundles flash reads: its own pattern (two layers queued), four queued, and twice the readers.
            let byPattern = try patterns.map { p throws(PagingError) in
                try DirectReader.parallelThroughput(path: model, layers: bundleRanges, bytes: min(fileBytes, 256 << 20),
                                                    pattern: p).bytesPerSecond
            }
            patternRounds.append(byPattern)
            parallelRounds.append(byPattern.max()!)
        }
        // The middle value (the upper one of an even count); nil for none.
        func mid(_ values: [Double]) -> Double? { values.isEmpty ? nil : values.sorted()[values.count / 2] }
        let sequential = mid(sequentialRounds)!, parallel = mid(parallelRounds)!
        let patternMedians = patterns.indices.map { i in
            ProbePattern(threads: patterns[i].threads, layers_queued: patterns[i].inFlight,
                         mb_per_s: mid(patternRounds.map { $0[i] })! / 1e6)
        }
        // The storage's best measured rate: a row cannot read faster than the storage gives either way.
        let reference = max(sequential, parallel)
        for rowsOfConfig in samples {
            let ok = rowsOfConfig.filter { $0.error == nil }
            guard !ok.isEmpty else { rows.append(rowsOfConfig[0]); continue }
            var median = ok.sorted { $0.tokens_per_second < $1.tokens_per_second }[ok.count / 2]
            median.speedup_vs_naive = mid(ok.compactMap(\.speedup_vs_naive))
            median.speedup_vs_mmap = mid(ok.compactMap(\.speedup_vs_mmap))
            median.speedup_vs_llama_cpp = mid(ok.compactMap(\.speedup_vs_llama_cpp))
            median.rounds = ok.map(\.tokens_per_second)
            // A killed or wrong round is not hidden by the median.
            median.killed = rowsOfConfig.contains(where: \.killed)
            median.tokens_equal_dense = ok.allSatisfy { $0.tokens_equal_dense == true }
            median.limit_peak_bytes = ok.compactMap(\.limit_peak_bytes).max()
            median.limit_hits = ok.compactMap(\.limit_hits).max()
            rows.append(median)
        }
        // A file under the sequential read's 1 MiB chunk measures nothing: no bound then.
        for i in rows.indices where rows[i].error == nil && rows[i].storage_read_bytes_per_token > 0 && reference > 0 {
            let bound = reference / rows[i].storage_read_bytes_per_token
            rows[i].storage_bound_tokens_per_second = bound
            rows[i].storage_share = rows[i].tokens_per_second / bound
        }
        let report = Report(model: model, source: source, cpu: Self.cpuName(),
                            load_average: ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "")
                                .split(separator: " ").prefix(3).joined(separator: " "),
                            file_bytes: fileBytes, threads: threads, io_threads: ioThreads, context: context,
                            direct_io: direct, sequential_read_mb_per_s: sequential / 1e6,
                            parallel_read_mb_per_s: parallel / 1e6, parallel_read_bytes: readBytes,
                            parallel_patterns: patternMedians,
                            memory_limit_unavailable: limitUnavailable, rows: rows)
        if let plot { try FlashChart.svg(report).write(toFile: plot, atomically: true, encoding: .utf8) }
        if json {
            try Console.json(report)
            return
        }
        Console.write(table(report))
    }

    // MARK: - Parent

    /// The smallest budget the packed model runs in at --context: the library's stated minimum (which carries the
    /// runtime's run-to-run variation).
    private func minimumBudget() throws -> Int {
        var budget = 1
        for _ in 0..<4 {
            let options = LoadOptions(threads: threads, contextLength: context, maxBatch: 256,
                                      paging: PagingOptions(mode: .flash, memoryBudget: budget, ioThreads: ioThreads))
            do {
                _ = try LanguageModel(path: model, options: options)
            } catch PagingError.processBudgetBelowFixedCosts(_, let fixed, _, _, _, _) {
                // Past the costs known before the vocabulary (with the runtime's run-to-run variation): the exact
                // minimum is stated.
                budget = fixed + ProcessBudget.runToRunAllowance
                continue
            } catch PagingError.processBudgetTooSmall(_, let minimum, _, _, _, _) {
                return minimum
            }
            return budget
        }
        throw CLIError(description: "\(model): cannot tell its minimum budget")
    }

    /// This binary's path (a wrapping shell's /proc/self/exe would be the shell).
    static let executable: String = {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { readlink("/proc/self/exe", $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4095) }
        return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : CommandLine.arguments[0]
    }()

    static func cpuName() -> String {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        for line in info.split(separator: "\n") where line.hasPrefix("model name") {
            return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
        }
        return "unknown CPU"
    }

    /// Runs one child: inside a fresh memory cgroup limited to its budget when `limited` and it has one, after the
    /// files it reads are dropped from the page cache.
    private func launch(_ config: Config, executable: String, limited: Bool, arguments: (MemoryCgroup?) -> [String]) throws
        -> (status: Int32, killed: Bool, stdout: Data, stderr: Data, group: MemoryCgroup?) {
        dropFromPageCache(model)
        if let source { dropFromPageCache(source) }
        // The repacked resident matrices a PocketLM child maps: left cached by the row before (charged to its group,
        // then to the parent once that group is removed), they would be resident weights the limit never sees.
        if let cache = LoadOptions().packCachePath(for: model) { dropFromPageCache(cache) }
        let group = try limited ? config.budget.map { try MemoryCgroup(limit: $0) } : nil
        let process = Process()
        let (exe, args) = group?.wrap(executable, arguments(group)) ?? (executable, arguments(nil))
        process.executableURL = URL(fileURLWithPath: exe)
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
        process.waitUntilExit()
        return (process.terminationStatus, process.terminationReason == .uncaughtSignal, data, errBox.data, group)
    }

    /// A row for a child that failed: killed inside its limit, or its last line of stderr.
    private func failed(_ config: Config, status: Int32, killed: Bool, stderr: Data, group: MemoryCgroup?) -> Row {
        var row = Row(config: config)
        row.killed = killed
        row.limit_bytes = group?.limit
        if killed {
            row.error = group.map { "killed (signal \(status)) inside its \(ByteCount.format($0.limit)) limit (peak \(ByteCount.format($0.peakBytes)), hit \($0.failCount) times)" }
                ?? "killed by signal \(status)"
        } else {
            let message = String(decoding: stderr, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? "exit \(status)"
            row.error = message.replacingOccurrences(of: "Error: ", with: "")
        }
        return row
    }

    private func spawn(_ config: Config, denseTokens: String?, limited: Bool) throws -> Row {
        let file = config.mode == "resident" ? (source ?? model) : model
        var args = ["bench-flash", "--model", file, "--child", String(decoding: try JSONEncoder().encode(config), as: UTF8.self),
                    "--gen-tokens", "\(genTokens)", "--prompt", prompt, "--text", text, "--ppl-tokens", "\(pplTokens)",
                    "--io-threads", "\(ioThreads)", "--threads", "\(threads)", "--context", "\(context)"]
        if let layerSharing { args += ["--layer-sharing", layerSharing] }
        if let denseTokens { args += ["--dense-tokens", denseTokens] }
        let r = try launch(config, executable: Self.executable, limited: limited) { group in
            args + (group.map { ["--cgroup", $0.path] } ?? [])
        }
        defer { r.group?.remove() }
        guard r.status == 0, !r.killed else { return failed(config, status: r.status, killed: r.killed, stderr: r.stderr, group: r.group) }
        var row = try JSONDecoder().decode(Row.self, from: r.stdout)
        row.limit_bytes = r.group?.limit
        return row
    }

    private func spawnLlamaCpp(_ config: Config, promptTokens: [Int], limited: Bool) throws -> Row {
        guard let source else { throw CLIError(description: "the llama.cpp row needs --source") }
        let args = try LlamaCppPeer.arguments(model: source, promptTokens: promptTokens, genTokens: genTokens,
                                              contextLength: context, threads: threads)
        let r = try launch(config, executable: llamaCpp, limited: limited) { _ in args }
        defer { r.group?.remove() }
        guard r.status == 0, !r.killed else { return failed(config, status: r.status, killed: r.killed, stderr: r.stderr, group: r.group) }
        let line = String(decoding: r.stdout, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        let peer = try JSONDecoder().decode(LlamaCppPeer.Result.self, from: Data(line.utf8))
        var row = Row(config: config)
        row.tokens_per_second = peer.tokens_per_second
        row.ms_per_token = peer.ms_per_token
        row.other_ms = peer.ms_per_token
        row.storage_read_bytes_per_token = peer.storage_read_bytes_per_token
        row.bytes_read_per_token = peer.storage_read_bytes_per_token
        row.peak_rss_bytes = peer.peak_rss_bytes
        row.tokens = peer.tokens
        row.prompt_tokens = promptTokens
        row.limit_bytes = r.group?.limit
        row.limit_peak_bytes = r.group?.peakBytes
        row.limit_hits = r.group?.failCount
        return row
    }

    // MARK: - Child: one configuration

    private func measure(_ c: Config) throws -> Row {
        let rssBefore = ProcessStats.currentResidentBytes()
        let aio = c.mode == "flash-aio"
        let paging = PagingOptions(mode: aio ? .flash : PagingOptions.Mode(rawValue: c.mode) ?? .resident, memoryBudget: c.budget,
                                   window: c.window, sparsity: try PagingOptions.Sparsity.parse(c.sparsity), ioThreads: ioThreads,
                                   asyncReads: aio)
        let schedule = layerSharing.flatMap(LayerSchedule.Strategy.init(rawValue:)).map { ($0, 2) }
        // The dense row may run the unpacked file: no paging options (a packed file without them runs resident).
        let lm = try LanguageModel(path: model, options: LoadOptions(threads: threads, contextLength: context,
                                                                     layerSchedule: schedule, maxBatch: 256,
                                                                     paging: c.mode == "resident" ? nil : paging))
        let t = lm.transformer
        let ffn = t.feedForward
        if ffn == nil, c.mode != "resident" { throw PagingError.notPacked(path: model) }
        var row = Row(config: c)
        row.rss_before_load_bytes = rssBefore
        row.weight_bytes = ffn?.plan.weightBytes ?? 0
        row.minimum_bytes = ffn?.plan.minimumBytes ?? 0

        // Speed: greedy decoding after the prompt; only the decode steps are timed and counted.
        let promptIds = lm.encodePrompt(prompt, parseSpecial: false)
        t.reset()
        var logits = try promptIds.withUnsafeBufferPointer { try t.forward($0) }
        var next = Sampler.argmax(logits)
        var generated = [next]
        let before = ffn?.stats ?? PagingStats()
        let storageBefore = storageReadBytes()
        let busyBefore = ffn?.readBusySeconds
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 1..<genTokens {
            logits = try t.decode(next)
            next = Sampler.argmax(logits)
            generated.append(next)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let storage = storageReadBytes() - storageBefore
        let d = (ffn?.stats ?? PagingStats()) - before
        // Reads queued ahead for a next token still run at the end: counted by both the bytes issued and this time.
        if let busyBefore, let busyAfter = ffn?.readBusySeconds {
            let busy = busyAfter - busyBefore
            row.read_busy_share = busy / seconds
            row.read_mb_per_s_busy = busy > 0 ? Double(d.bytesRead) / busy / 1e6 : nil
        }
        let steps = Double(max(1, genTokens - 1))
        row.prompt_tokens = promptIds
        row.tokens = generated
        row.tokens_per_second = steps / seconds
        row.ms_per_token = seconds * 1000 / steps
        row.io_wait_ms = d.ioWaitSeconds * 1000 / steps
        row.manage_ms = d.manageSeconds * 1000 / steps
        row.ffn_compute_ms = d.computeSeconds * 1000 / steps
        row.other_ms = max(0, row.ms_per_token - row.io_wait_ms - row.manage_ms - row.ffn_compute_ms)
        row.bytes_read_per_token = Double(d.bytesRead) / steps
        row.storage_read_bytes_per_token = Double(storage) / steps
        if case .exact = paging.sparsity { row.oracle_bytes_per_token = Double(d.oracleBytes) / steps }
        if case .threshold = paging.sparsity { row.oracle_bytes_per_token = Double(d.oracleBytes) / steps }
        row.mean_read_bytes = d.reads > 0 ? Double(d.bytesRead) / Double(d.reads) : 0
        row.read_mb_per_s = Double(d.bytesRead) / seconds / 1e6
        row.window_hit_rate = d.groupsNeeded > 0 ? Double(d.groupsInMemory) / Double(d.groupsNeeded) : 0
        row.neurons_per_layer = Double(d.neuronsComputed) / Double(max(1, d.layerSteps))
        row.bytes_per_effective_layer = Double(d.bytesRead) / steps / Double(t.schedule.passes.count)
        // Peak RSS of the generation itself; the quality passes below add an all-positions logits buffer.
        row.peak_rss_bytes = ProcessStats.peakResidentBytes()
        if let cgroup {
            // The limit's account of the run so far; then the limit is lifted: the quality passes' all-positions
            // logits are a measurement's, not the budgeted run's.
            row.limit_peak_bytes = MemoryCgroup.read(path: cgroup, "memory.max_usage_in_bytes")
            row.limit_hits = MemoryCgroup.read(path: cgroup, "memory.failcnt")
            MemoryCgroup.lift(path: cgroup)
        }

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
