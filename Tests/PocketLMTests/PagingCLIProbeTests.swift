import Foundation
import Testing
import PocketLM

/// `run --memory-budget` and friends as a new user tries them (issue 14): what they hit that was wrong.
@Suite("Paging CLI probes", .serialized)
struct PagingCLIProbeTests {
    /// SmolLM2 Q4_1 packed into the test scratch directory (packed once, ~1 s).
    static func packedQ4_1() throws -> String {
        let packed = FlashPagingTests.scratch("smollm2-q4_1.packed.gguf")
        if !FileManager.default.fileExists(atPath: packed) {
            _ = try FlashPacker.pack(source: try TestPaths.model("SmolLM2-135M-Instruct.Q4_1.gguf"), output: packed)
        }
        return packed
    }

    /// The minimum a refused run states, as the `--memory-budget` text it asks for ("118.4M").
    static func statedMinimum(_ stderr: String) throws -> String {
        let range = try #require(stderr.range(of: #"raise the memory budget to at least [0-9.]+ MiB"#, options: .regularExpression),
                                 "no stated minimum in: \(stderr)")
        let words = stderr[range].split(separator: " ")
        return String(words[words.count - 2]) + "M"
    }

    /// Runs each command and expects it refused before doing anything: a non-zero exit, nothing on stdout, `message`
    /// on stderr, and never argument-parser's "Missing value" (a negative number read as a flag).
    static func expectRefused(_ cases: [([String], String)], sourceLocation: SourceLocation = #_sourceLocation) throws {
        for (args, message) in cases {
            let r = try CLITests.pocketlm(args)
            #expect(r.status != 0 && r.stdout.isEmpty && r.stderr.contains(message) && !r.stderr.contains("Missing value"),
                    "\(args): \(r.stderr)", sourceLocation: sourceLocation)
        }
    }

    @Test("many I/O threads count in the budget: a run at the minimum stated for 256 reader threads peaks within it")
    func readerThreadsCountInBudget() throws {
        let packed = try Self.packedQ4_1()
        let args = ["run", "--model", packed, "--io-threads", "256", "--context", "256", "--prompt", "The capital of France is",
                    "--max-tokens", "4", "--temperature", "0"]
        let refused = try CLITests.pocketlm(args + ["--memory-budget", "100M"])
        #expect(refused.status != 0)
        let minimum = try Self.statedMinimum(refused.stderr)
        let budget = try ByteCount.parse(minimum)
        let r = try CLITests.pocketlm(args + ["--memory-budget", minimum, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let peak = try #require(try CLITests.json(r.stdout)["peak_rss_bytes"] as? Int)
        // Each reader thread adds ~69 KiB: 256 of them had peaked at 125 MiB under a stated minimum of 118 MiB.
        #expect(peak <= budget, "peak RSS \(ByteCount.format(peak)) > budget \(minimum)")
    }

    @Test("paging an ordinary file: the error names what to type (the flags, pocketlm pack), not the library's API")
    func unpackedFileErrorNamesCommands() throws {
        let ordinary = try TestPaths.fixture("tiny-q8_0.gguf")
        for args in [["--memory-budget", "100M"], ["--paging", "flash"], ["--paging", "mmap"]] {
            let r = try CLITests.pocketlm(["run", "--model", ordinary, "--prompt", "hi", "--max-tokens", "1"] + args)
            #expect(r.status != 0 && r.stdout.isEmpty)
            #expect(r.stderr.contains("\(ordinary) is not in the flash layout") && r.stderr.contains("--memory-budget")
                    && r.stderr.contains("run `pocketlm pack --model \(ordinary) --out PACKED.gguf`"), "\(args): \(r.stderr)")
            #expect(!r.stderr.contains("FlashPacker"), "\(args): \(r.stderr)")
        }
    }

    @Test("a budget written as the errors write sizes (118.3 MiB, 150 MB, 64KiB) is read, and gets the same plan as 150M")
    func budgetInTheUnitsErrorsPrint() throws {
        #expect(try ByteCount.parse("118.3 MiB") == Int(118.3 * 1_048_576) && ByteCount.parse("64KiB") == 64 << 10)
        #expect(try ByteCount.parse("1.50 GiB") == 3 << 29 && ByteCount.parse("150 MB") == 150 << 20 && ByteCount.parse("4096 B") == 4096)
        #expect(try ByteCount.parse("75 %", reference: 1000) == 750)
        for text in ["1T", "MiB", "1 1M", "12Mi", "abc", "-1", "5 MiBs"] {
            #expect(throws: PagingError.self, "\(text)") { try ByteCount.parse(text, reference: 100 << 20) }
        }
        let packed = try Self.packedQ4_1()
        var weights: [Int] = []
        for budget in ["150M", "150 MiB", "150MiB"] {
            let r = try CLITests.pocketlm(["run", "--model", packed, "--memory-budget", budget, "--context", "256", "--prompt", "Hi",
                                           "--max-tokens", "1", "--temperature", "0", "--json"])
            #expect(r.status == 0, "\(budget): \(r.stderr)")
            guard r.status == 0 else { continue }
            let paging = try #require(try CLITests.json(r.stdout)["paging"] as? [String: Any])
            weights.append(try #require((paging["plan"] as? [String: Any])?["budget"] as? Int, "\(paging)"))
        }
        // The weights' share is the budget less what was measured in the process: within a run-to-run 4 MiB.
        #expect(weights.count == 3 && weights.max()! - weights.min()! < 4 << 20, "\(weights)")
    }

    @Test("--window without --paging or a budget runs flash (the one mode that keeps a window), not an error about resident paging")
    func windowAloneRunsFlash() throws {
        let packed = try Self.packedQ4_1()
        let prompt = ["--context", "256", "--prompt", "The capital of France is", "--max-tokens", "4", "--temperature", "0", "--json"]
        let windowed = try CLITests.pocketlm(["run", "--model", packed, "--window", "2"] + prompt)
        #expect(windowed.status == 0, "\(windowed.stderr)")
        let explicit = try CLITests.pocketlm(["run", "--model", packed, "--paging", "flash", "--window", "2"] + prompt)
        #expect(explicit.status == 0, "\(explicit.stderr)")
        guard windowed.status == 0, explicit.status == 0 else { return }
        let a = try CLITests.json(windowed.stdout), b = try CLITests.json(explicit.stdout)
        #expect((a["paging"] as? [String: Any])?["mode"] as? String == "flash", "\(a["paging"] ?? "no paging")")
        #expect(a["text"] as? String == b["text"] as? String && a["text"] as? String != nil)
        // Resident asked for by name still refuses a window.
        let resident = try CLITests.pocketlm(["run", "--model", packed, "--paging", "resident", "--window", "2"] + prompt)
        #expect(resident.status != 0 && resident.stderr.contains("flash paging only"), "\(resident.stderr)")
    }

    @Test("a Q8_0 pack asked for reads larger than a layer makes one group per layer, not a file of zero padding")
    func bundleBytesPastTheLayerArePadding() throws {
        let source = try TestPaths.fixture("tiny-q8_0.gguf")
        let config = try ModelConfig(gguf: GGUFFile(path: source))
        let whole = try FlashLayout(hiddenSize: config.hiddenSize, intermediateSize: config.intermediateSize, bundleBytes: 1 << 30)
        let neuron = whole.neuronBytes, align = FlashLayout.ioAlignment
        #expect(whole.groupsPerLayer == 1 && whole.bundleBytes == (config.intermediateSize * neuron + align - 1) / align * align,
                "\(whole.bundleBytes) bytes, \(whole.groupsPerLayer) groups")
        let dir = FlashPagingTests.scratch("bundle-bytes-past-layer")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var sizes: [Int] = []
        for asked in [whole.bundleBytes, 16 << 20] {
            let out = dir + "/packed-\(asked).gguf"
            let layout = try FlashPacker.pack(source: source, output: out, bundleBytes: asked)
            #expect(layout.bundleBytes == whole.bundleBytes && layout.groupsPerLayer == 1, "asked \(asked): \(layout.bundleBytes)")
            sizes.append(try #require(try FileManager.default.attributesOfItem(atPath: out)[.size] as? Int))
        }
        // 16 MiB reads had padded every layer to 16 MiB.
        #expect(sizes[0] == sizes[1], "\(sizes)")
    }

    @Test("pack --predictor with a missing file, a model or a text file: the error is about the predictor, not a model file's metadata key")
    func predictorInputErrors() throws {
        let source = try TestPaths.fixture("tiny-q8_0.gguf")
        let dir = FlashPagingTests.scratch("predictor-inputs")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let text = dir + "/notes.txt"
        try Data("not a predictor".utf8).write(to: URL(fileURLWithPath: text))
        let cases = [(dir + "/missing.gguf", "predictor file not found: \(dir)/missing.gguf"),
                     (source, "\(source) is not an FFN predictor (weights-tools/train_predictor.py writes one for a model)"),
                     (text, "cannot read the predictor \(text): ")]
        for (predictor, message) in cases {
            let error = #expect(throws: PagingError.self) {
                try FlashPacker.pack(source: source, output: dir + "/out.gguf", bundleBytes: 4096, predictor: predictor)
            }
            let description = error?.localizedDescription ?? ""
            #expect(description.hasPrefix(message) && !description.contains("model file"), "\(predictor): \(description)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/out.gguf"))
    }

    @Test("--io-threads and --reads where nothing is read from storage (no paging, mmap, resident) are refused, not silently ignored")
    func readFlagsWithoutReadsRefused() throws {
        let packed = try Self.packedQ4_1()
        let ordinary = try TestPaths.fixture("tiny-q8_0.gguf")
        let prompt = ["--context", "256", "--prompt", "Hi", "--max-tokens", "1", "--temperature", "0"]
        let refused: [([String], String)] = [
            (["--model", ordinary, "--io-threads", "4"], "--io-threads sets how flash and naive paging read"),
            (["--model", packed, "--reads", "aio"], "without --memory-budget or --paging nothing is read"),
            (["--model", packed, "--memory-budget", "150M", "--paging", "mmap", "--reads", "aio"], "mmap paging issues no such reads"),
            (["--model", packed, "--paging", "resident", "--io-threads", "2", "--reads", "threads"],
             "--io-threads and --reads set how flash and naive paging read a packed file's FFN; resident paging issues no such reads"),
        ]
        try Self.expectRefused(refused.map { (["run"] + $0.0 + prompt, $0.1) })
        for mode in ["flash", "naive"] {
            let r = try CLITests.pocketlm(["run", "--model", packed, "--memory-budget", "150M", "--paging", mode, "--io-threads", "2",
                                           "--reads", "threads"] + prompt)
            #expect(r.status == 0, "\(mode): \(r.stderr)")
        }
    }

    @Test("a negative number given to a numeric option reaches the option's range check, not 'Missing value' for a flag")
    func negativeNumbersReachTheRangeCheck() throws {
        let ordinary = try TestPaths.fixture("tiny-q8_0.gguf")
        let windows = PagingOptions.windows, counts = PagingOptions.ioThreadCounts
        let cases: [([String], String)] = [
            (["run", "--model", ordinary, "--prompt", "hi", "--window", "-1"],
             "--window must be between \(windows.lowerBound) and \(windows.upperBound), found -1"),
            (["run", "--model", ordinary, "--prompt", "hi", "--io-threads", "-4"],
             "--io-threads must be between \(counts.lowerBound) and \(counts.upperBound), found -4"),
            (["run", "--model", ordinary, "--prompt", "hi", "--max-tokens", "-1"], "--max-tokens must be ≥ 0, found -1"),
            (["serve", "--model", ordinary, "--queue", "-2"], "--queue must be ≥ 0, found -2"),
            (["bench-flash", "--model", ordinary, "--threads", "-3"], "--threads must be at least 1, found -3"),
        ]
        try Self.expectRefused(cases)
    }

    @Test("pack says '1 group per layer', not '1 groups per layer'")
    func packLineSingular() throws {
        let source = try TestPaths.fixture("tiny-q8_0.gguf")
        let dir = FlashPagingTests.scratch("pack-line")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // 16M (the most pack takes) is past the fixture's layer: one group; 4K holds 20 of its 128 neurons: 7 groups.
        for (bundleBytes, groups) in [("16M", "1 group per layer"), ("4K", "7 groups per layer")] {
            let r = try CLITests.pocketlm(["pack", "--model", source, "--out", dir + "/packed-\(bundleBytes).gguf",
                                           "--bundle-bytes", bundleBytes])
            #expect(r.status == 0, "\(bundleBytes): \(r.stderr)")
            #expect(r.stderr.contains("neurons (200 bytes each), \(groups), in "), "\(bundleBytes): \(r.stderr)")
        }
    }

    @Test("bench-flash --budgets with an empty entry (min,,min; ,min; 50%,) is an error naming the option and the text, not skipped")
    func emptyBudgetEntryRefused() throws {
        let packed = try FlashPagingTests.packed("tiny-q8_0.gguf")
        try Self.expectRefused(["50%,,min", ",min", "50%,"].map { budgets in
            (["bench-flash", "--model", packed, "--budgets", budgets, "--modes", "flash", "--windows", "0", "--rounds", "1",
              "--ppl-tokens", "0", "--memory-limit", "off"], "empty budget in --budgets '\(budgets)'")
        })
        let none = try CLITests.pocketlm(["bench-flash", "--model", packed, "--budgets", ","])
        #expect(none.status != 0 && none.stderr.contains("--budgets lists no budget"), "\(none.stderr)")
    }

    @Test("bench-flash --modes and --sparsity with an empty entry (flash,; ,flash; none,,predictor:0.9; '') are errors naming the option and the text")
    func emptyModeAndSparsityEntryRefused() throws {
        let packed = try FlashPagingTests.packed("tiny-q8_0.gguf")
        let common = ["--budgets", "50%", "--windows", "0", "--rounds", "1", "--ppl-tokens", "0", "--memory-limit", "off"]
        let cases: [([String], String)] = [
            (["--modes", "flash,"], "empty mode in --modes 'flash,'"),
            (["--modes", ",flash"], "empty mode in --modes ',flash'"),
            (["--modes", ""], "empty mode in --modes ''"),
            (["--modes", "flash", "--sparsity", "none,,predictor:0.9"], "empty rule in --sparsity 'none,,predictor:0.9'"),
            (["--modes", "flash", "--sparsity", ""], "empty rule in --sparsity ''"),
        ]
        try Self.expectRefused(cases.map { (["bench-flash", "--model", packed] + $0.0 + common, $0.1) })
    }

    @Test("compare-sharing's and perplexity's numeric options take a negative number to their range check, which names it")
    func compareSharingAndPerplexityNegativeNumbers() throws {
        let ordinary = try TestPaths.fixture("tiny-q8_0.gguf")
        let cases: [([String], String)] = [
            (["compare-sharing", "--repeats", "-1"], "--repeats must be at least 1, found -1"),
            (["compare-sharing", "--threads", "-2"], "--threads must be at least 1, found -2"),
            (["compare-sharing", "--prompt-tokens", "-3"], "--prompt-tokens must be at least 1, found -3"),
            (["compare-sharing", "--gen-tokens", "-4"], "--gen-tokens must be at least 1, found -4"),
            (["compare-sharing", "--repetitions", "-5"], "--repetitions must be at least 1, found -5"),
            (["compare-sharing", "--repetitions", "0"], "--repetitions must be at least 1, found 0"),
            (["perplexity", "--model", ordinary, "--file", ordinary, "--context", "-1"], "--context must be at least 4, found -1"),
            (["perplexity", "--model", ordinary, "--file", ordinary, "--threads", "-2"], "--threads must be at least 1, found -2"),
        ]
        try Self.expectRefused(cases)
    }

    @Test("bench-flash's and bench's range errors name the option and the value found")
    func rangeErrorsNameTheValue() throws {
        let ordinary = try TestPaths.fixture("tiny-q8_0.gguf")
        let cases: [([String], String)] = [
            (["bench-flash", "--model", ordinary, "--rounds", "0"], "--rounds must be at least 1, found 0"),
            (["bench-flash", "--model", ordinary, "--gen-tokens", "1"], "--gen-tokens must be at least 2, found 1"),
            (["bench-flash", "--model", ordinary, "--ppl-tokens", "-1"], "--ppl-tokens must be at least 0, found -1"),
            (["bench", "--model", ordinary, "--prompt-tokens", "0"], "--prompt-tokens must be at least 1, found 0"),
            (["bench", "--model", ordinary, "--gen-tokens", "-1"], "--gen-tokens must be at least 1, found -1"),
            (["bench", "--model", ordinary, "--repetitions", "0"], "--repetitions must be at least 1, found 0"),
            (["bench", "--model", ordinary, "--rounds", "-2"], "--rounds must be at least 1, found -2"),
        ]
        try Self.expectRefused(cases)
    }

    @Test("pack --bundle-bytes: the help states the 16M cap, and a larger value is refused with pack's usage")
    func packBundleBytesCap() throws {
        let help = try CLITests.pocketlm(["pack", "--help"])
        // The help wraps its lines: compared with the whitespace collapsed.
        let helpText = help.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(helpText.contains("--bundle-bytes <bundle-bytes> Bytes per read") && helpText.contains("at most 16M"), "\(help.stdout)")
        let source = try TestPaths.fixture("tiny-q8_0.gguf")
        let out = FlashPagingTests.scratch("pack-cap.gguf")
        let r = try CLITests.pocketlm(["pack", "--model", source, "--out", out, "--bundle-bytes", "17M"])
        #expect(r.status != 0 && r.stderr.contains("--bundle-bytes must be at most 16M, found 17M")
                && r.stderr.contains("Usage: pocketlm pack "), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test("pack --bundle-bytes 0, -1 or text: the option's own message with pack's usage, not the size parser's; compare-sharing --strategies with an empty entry is an error")
    func packBundleBytesUnreadableAndEmptyStrategy() throws {
        let source = try TestPaths.fixture("tiny-q8_0.gguf")
        let out = FlashPagingTests.scratch("pack-unreadable.gguf")
        for value in ["0", "-1", "lots"] {
            let r = try CLITests.pocketlm(["pack", "--model", source, "--out", out, "--bundle-bytes", value])
            #expect(r.status != 0 && r.stderr.contains("--bundle-bytes takes a read size such as 64K (at most 16M), found '\(value)'")
                    && r.stderr.contains("Usage: pocketlm pack "), "\(value): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        try Self.expectRefused(["none,,immediate", "none,", ""].map { strategies in
            (["compare-sharing", "--config", "configs/mobilellm-125m.json", "--strategies", strategies],
             "empty strategy in --strategies '\(strategies)'")
        })
    }

    @Test("too small a budget suggests a shorter context only where one would fit the budget")
    func contextAdviceOnlyWhereItHelps() throws {
        let packed = try Self.packedQ4_1()
        let advice = "or shorten the context"
        func refusal(_ budget: String, context: Int) throws -> String {
            let r = try CLITests.pocketlm(["run", "--model", packed, "--memory-budget", budget, "--context", "\(context)",
                                           "--prompt", "Hi", "--max-tokens", "1", "--temperature", "0"])
            #expect(r.status != 0 && r.stdout.isEmpty, "\(budget) at \(context): \(r.stderr)")
            return r.stderr
        }
        // The whole minimum (~119 MiB at 256 tokens, of which the KV cache is 5.6 MiB), and the costs known before
        // loading (~264 MiB at 8192 tokens, KV cache 180 MiB): a context of one token still leaves them past 100M
        // and 60M, but 140M at 2048 tokens (KV cache 45 MiB, minimum ~158 MiB) and 150M at 8192 are short of them
        // by less than the KV cache.
        for (budget, context, helps) in [("100M", 256, false), ("60M", 8192, false), ("140M", 2048, true), ("150M", 8192, true)] {
            let stderr = try refusal(budget, context: context)
            #expect(stderr.contains("is below this model's minimum") && stderr.contains("raise the memory budget"),
                    "\(budget) at \(context): \(stderr)")
            #expect(stderr.contains(advice) == helps, "\(budget) at \(context): \(stderr)")
        }
        // Where it is offered, it works: 140M runs at a context of 256.
        let shorter = try CLITests.pocketlm(["run", "--model", packed, "--memory-budget", "140M", "--context", "256",
                                             "--prompt", "Hi", "--max-tokens", "1", "--temperature", "0"])
        #expect(shorter.status == 0, "\(shorter.stderr)")
    }
}
