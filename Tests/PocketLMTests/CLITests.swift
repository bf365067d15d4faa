import CKernels
import Foundation
import Testing
import PocketLM

/// The `pocketlm` binary end to end: what a user types, what they see, and the exit status.
/// `make test` builds it (swift build -c release --build-tests) before the suite runs.
@Suite("pocketlm CLI", .serialized)
struct CLITests {
    struct Output {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static let binary = TestPaths.repoRoot.appendingPathComponent(".build/release/pocketlm").path

    /// Runs the CLI; `input`, when given, is written to its stdin (a pipe), which is then closed.
    static func pocketlm(_ args: [String], environment: [String: String] = [:], unset: [String] = [],
                         input: String? = nil) throws -> Output {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw TestSetupError("missing \(binary): run `make test` (it builds the CLI in release first)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        for k in unset { env.removeValue(forKey: k) }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let inPipe = input.map { _ in Pipe() }
        if let inPipe { p.standardInput = inPipe }
        try p.run()
        if let inPipe, let input {
            inPipe.fileHandleForWriting.write(Data(input.utf8))
            try inPipe.fileHandleForWriting.close()
        }
        // Read both pipes while the process runs so a full pipe never blocks it.
        final class Box: @unchecked Sendable { var data = Data() }
        let outBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outBox.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let outData = outBox.data
        p.waitUntilExit()
        #expect(p.terminationReason == .exit, "pocketlm \(args) was killed by a signal")
        return Output(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }

    static func q4() throws -> String { try TestPaths.model("SmolLM2-135M-Instruct.Q4_1.gguf") }

    static func json(_ s: String) throws -> [String: Any] {
        let obj = try JSONSerialization.jsonObject(with: Data(s.utf8))
        return try #require(obj as? [String: Any])
    }

    @Test("run --json: prompt ids, greedy ids and top logits equal llama.cpp's")
    func runJSONMatchesReference() throws {
        let record = try #require(try Reference.records().first { $0.model_file.hasSuffix("Q4_1.gguf") && $0.prompt_kind == "plain" })
        // Decisive steps only: Q8-quantized activations put a correct runtime within ~0.3 logits of llama.cpp
        // (the tolerance RealModelTests use for quantized files).
        let steps = record.greedy_top1_top2_margin.firstIndex { $0 < 0.35 } ?? record.greedy_ids.count
        let n = min(16, steps)
        let r = try Self.pocketlm(["run", "--model", try Self.q4(), "--prompt", record.prompt, "--temperature", "0",
                                   "--max-tokens", "\(n)", "--json", "--top-logits", "3"])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try Self.json(r.stdout)
        #expect(obj["prompt_tokens"] as? [Int] == record.tokens)
        let tokens = try #require(obj["tokens"] as? [Int])
        #expect(tokens == Array(record.greedy_ids.prefix(tokens.count)))
        #expect(tokens.count == n || record.greedy_ids[tokens.count] == 2, "stopped early without EOS")
        let tops = try #require(obj["top_logits"] as? [[[String: Any]]])
        #expect(tops.count == tokens.count)
        #expect(tops.first?.first?["id"] as? Int == record.last_pos_top5_ids[0])
        let timings = try #require(obj["timings"] as? [String: Any])
        for key in ["load_ms", "prompt_tokens_per_second", "generation_tokens_per_second", "time_to_first_token_ms"] {
            let v = try #require(timings[key] as? Double, "timings.\(key)")
            #expect(v > 0, "timings.\(key) = \(v)")
        }
        #expect((obj["peak_rss_bytes"] as? Int ?? 0) > 50_000_000)
        #expect((obj["text"] as? String ?? "").hasPrefix(" Paris"))
    }

    @Test("OPENBLAS_CORETYPE: unset, the CLI picks fast kernels itself, and F32 prefill still matches llama.cpp")
    func blasCoreType() throws {
        let record = try #require(try Reference.records().first { $0.model_file.hasSuffix("F32.gguf") && $0.prompt_kind == "plain" })
        let model = try TestPaths.model("SmolLM2-135M-Instruct.F32.gguf")
        let args = ["run", "--model", model, "--prompt", record.prompt, "--temperature", "0", "--max-tokens", "4",
                    "--json", "--top-logits", "5"]
        let fast = try Self.pocketlm(args, unset: ["OPENBLAS_CORETYPE"])
        let given = try Self.pocketlm(args, environment: ["OPENBLAS_CORETYPE": "Prescott"])
        for r in [fast, given] {
            #expect(r.status == 0, "\(r.stderr)")
            let obj = try Self.json(r.stdout)
            #expect(obj["tokens"] as? [Int] == Array(record.greedy_ids.prefix(4)))
            let first = try #require((obj["top_logits"] as? [[[String: Any]]])?.first)
            #expect(first.compactMap { $0["id"] as? Int } == record.last_pos_top5_ids)
            for (entry, expected) in zip(first, record.last_pos_top5_logits) {
                #expect(abs((entry["logit"] as? Double ?? 0) - expected) <= 0.05)
            }
        }
        // `bench` reports the kernel family OpenBLAS loaded: the CLI's choice, or the environment's.
        let bench = ["bench", "--model", try Self.q4(), "--prompt-tokens", "4", "--gen-tokens", "2", "--repetitions", "1", "--json"]
        let chosen = try Self.json(try Self.pocketlm(bench, unset: ["OPENBLAS_CORETYPE"]).stdout)["blas_core"] as? String
        let respected = try Self.json(try Self.pocketlm(bench, environment: ["OPENBLAS_CORETYPE": "Prescott"]).stdout)["blas_core"] as? String
        // The CLI asks for the kernels of the tier it runs (SkylakeX on avx512, Haswell on avx2), which follows this
        // CPU; on a CPU with neither tier it leaves OpenBLAS's own choice.
        if let expected = BLASEnvironment.recommendedCoreType() {
            #expect(chosen == expected)
        } else {
            #expect(chosen?.isEmpty == false)
        }
        #expect(respected == "Prescott")
        if KernelISA.supported.contains(.avx2) {
            let lowered = try Self.pocketlm(bench, environment: ["POCKETLM_ISA": "avx2"], unset: ["OPENBLAS_CORETYPE"])
            #expect(try Self.json(lowered.stdout)["blas_core"] as? String == "Haswell", "\(lowered.stderr)")
        }
    }

    @Test("compare-sharing: every strategy, the unshared baseline, JSON and SVG")
    func compareSharing() throws {
        let svg = FileManager.default.temporaryDirectory.appendingPathComponent("share-\(UUID().uuidString).svg")
        defer { try? FileManager.default.removeItem(at: svg) }
        let r = try Self.pocketlm(["compare-sharing", "--prompt-tokens", "8", "--gen-tokens", "8", "--repetitions", "1",
                                   "--json", "--plot", svg.path])
        #expect(r.status == 0, "\(r.stderr)")
        let rows = try #require(try Self.json(r.stdout)["rows"] as? [[String: Any]])
        #expect(rows.compactMap { $0["strategy"] as? String } == ["none", "immediate", "repeat-all", "reverse", "baseline"])
        #expect(rows.compactMap { $0["effective_layers"] as? Int } == [30, 60, 60, 60, 60])
        // Same weights for every strategy; the baseline has twice the blocks (the shared embedding once).
        let bytes = rows.compactMap { $0["unique_weight_bytes_per_token"] as? Int }
        #expect(Set(bytes.prefix(4)).count == 1)
        let embedding = 32000 * 576 / 32 * 34
        #expect(bytes[4] - embedding == 2 * (bytes[0] - embedding) - 576 * 4)
        #expect(rows.compactMap { $0["kv_cache_bytes_per_token"] as? Int } == [23040, 46080, 46080, 46080, 46080])
        for row in rows { #expect((row["decode_tokens_per_second"] as? Double ?? 0) > 0) }
        let chart = try String(contentsOf: svg, encoding: .utf8)
        #expect(chart.hasPrefix("<svg") && chart.contains("immediate×2") && chart.contains("baseline"))
    }

    @Test("compare-sharing on a model file measures perplexity per strategy")
    func compareSharingPerplexity() throws {
        let r = try Self.pocketlm(["compare-sharing", "--model", try TestPaths.fixture("tiny-ls.gguf"), "--text",
                                   "/usr/share/common-licenses/GPL-3", "--strategies", "none,immediate",
                                   "--prompt-tokens", "8", "--gen-tokens", "8", "--repetitions", "1", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let rows = try #require(try Self.json(r.stdout)["rows"] as? [[String: Any]])
        let ppl = rows.prefix(2).compactMap { $0["perplexity"] as? Double }
        #expect(ppl.count == 2 && ppl.allSatisfy { $0 > 1 && $0.isFinite })
        #expect(ppl[0] != ppl[1], "the two schedules are different models")
        let bad = try Self.pocketlm(["compare-sharing", "--strategies", "none,sideways"])
        #expect(bad.status != 0 && bad.stderr.contains("sideways"))
    }

    @Test("run --chat renders SmolLM2's template with its default system message")
    func chat() throws {
        let record = try #require(try Reference.records().first { $0.model_file.hasSuffix("Q4_1.gguf") && $0.prompt_kind == "chat" })
        let r = try Self.pocketlm(["run", "--model", try Self.q4(), "--chat", "--prompt", "What is 2+2?",
                                   "--temperature", "0", "--max-tokens", "24", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try Self.json(r.stdout)
        #expect(obj["prompt_tokens"] as? [Int] == record.tokens)
        // The answer ends at <|im_end|>, which stops generation and is not part of the text.
        #expect(obj["stop_reason"] as? String == "stop_token")
        #expect(obj["text"] as? String == "The answer to this classic math problem is 4.")
        let sys = try Self.pocketlm(["run", "--model", try Self.q4(), "--chat", "--system", "You are a pirate.",
                                     "--prompt", "Hi", "--temperature", "0", "--max-tokens", "1", "--json"])
        let ids = try #require(try Self.json(sys.stdout)["prompt_tokens"] as? [Int])
        #expect(!ids.starts(with: record.tokens.prefix(12)), "--system did not replace the default system message")
    }

    @Test("streaming text on stdout, statistics on stderr")
    func streaming() throws {
        let r = try Self.pocketlm(["run", "--model", try Self.q4(), "--prompt", "The capital of France is",
                                   "--temperature", "0", "--max-tokens", "6"])
        #expect(r.status == 0)
        #expect(r.stdout.hasPrefix(" Paris."))
        for field in ["prompt: 5 tokens", "generated: 6 tokens", "tok/s", "first token:", "load:", "peak RSS:"] {
            #expect(r.stderr.contains(field), "stderr lacks '\(field)': \(r.stderr)")
        }
        #expect(!r.stderr.contains("warning"), "\(r.stderr)")
        // A context past the model's trained one (SmolLM2: 8192) runs, with a warning on stderr.
        let long = try Self.pocketlm(["run", "--model", try Self.q4(), "--prompt", "The capital of France is",
                                      "--temperature", "0", "--max-tokens", "6", "--context", "8200"])
        #expect(long.status == 0 && long.stdout == r.stdout, "\(long.stderr)")
        #expect(long.stderr.contains("warning: a context of 8200 tokens is past the 8192 this model was trained on"), "\(long.stderr)")
    }

    @Test("same seed, same text; another seed, another text")
    func seeds() throws {
        func sample(_ seed: Int) throws -> [Int] {
            let r = try Self.pocketlm(["run", "--model", try Self.q4(), "--prompt", "Once upon a time",
                                       "--temperature", "1.0", "--top-k", "0", "--top-p", "1", "--min-p", "0",
                                       "--max-tokens", "24", "--seed", "\(seed)", "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            return try #require(try Self.json(r.stdout)["tokens"] as? [Int])
        }
        let a = try sample(42), b = try sample(42), c = try sample(7)
        #expect(a == b)
        #expect(a != c)
    }

    @Test("tokenize and inspect")
    func tokenizeInspect() throws {
        let record = try #require(try Reference.records().first { $0.prompt_kind == "plain" })
        let t = try Self.pocketlm(["tokenize", "--model", try Self.q4(), "--text", record.prompt, "--json"])
        #expect(t.status == 0)
        let tok = try Self.json(t.stdout)
        #expect(tok["ids"] as? [Int] == record.tokens)
        #expect((tok["pieces"] as? [String])?.joined() == record.prompt)
        let special = try Self.pocketlm(["tokenize", "--model", try Self.q4(), "--text", "<|im_start|>", "--special", "--json"])
        #expect(try Self.json(special.stdout)["ids"] as? [Int] == [1])

        let i = try Self.pocketlm(["inspect", try Self.q4(), "--json"])
        #expect(i.status == 0)
        let info = try Self.json(i.stdout)
        #expect(info["architecture"] as? String == "llama")
        #expect((info["tensors"] as? [Any])?.count == 272)
        #expect(info["parameters"] as? Int == 134_515_008)
        let config = try #require(info["config"] as? [String: Any])
        #expect(config["num_hidden_layers"] as? Int == 30)
        #expect(config["hidden_size"] as? Int == 576)
        #expect(config["num_key_value_heads"] as? Int == 3)
        let text = try Self.pocketlm(["inspect", try Self.q4()])
        #expect(text.stdout.contains("blk.29.ffn_down.weight"))
        #expect(text.stdout.contains("Q4_1"))
    }

    @Test("Gemma 3 270M from the CLI: inspect (K-quants, sliding-window KV), tokenize, run; --chat without a template is an error")
    func gemmaCLI() throws {
        let gemma = try TestPaths.model("gemma-3-270m-q4_k_m.gguf")
        let i = try Self.pocketlm(["inspect", gemma, "--json"])
        #expect(i.status == 0, "\(i.stderr)")
        let info = try Self.json(i.stdout)
        #expect(info["architecture"] as? String == "gemma3")
        let config = try #require(info["config"] as? [String: Any])
        #expect(config["head_dim"] as? Int == 256 && config["sliding_window"] as? Int == 512)
        // 3 of 18 layers are global (every 6th): 3 × (K + V) × 1 KV head × 256 × 2 bytes.
        #expect(info["kv_cache_bytes_per_token"] as? Int == 3 * 2 * 256 * 2)
        let types = Set(((info["totals"] as? [[String: Any]]) ?? []).compactMap { $0["type"] as? String })
        #expect(types == ["Q4_K", "Q6_K", "Q5_0", "Q8_0", "F32"])
        let text = try Self.pocketlm(["inspect", gemma])
        #expect(text.stdout.contains("3 global layers; 15 sliding-window layers keep 512 positions each"), "\(text.stdout.prefix(600))")

        let t = try Self.pocketlm(["tokenize", "--model", gemma, "--text", "Hello, world!", "--json"])
        #expect(try Self.json(t.stdout)["ids"] as? [Int] == [2, 9259, 236764, 1902, 236888])

        let r = try Self.pocketlm(["run", "--model", gemma, "--prompt", "The capital of France is", "--temperature", "0",
                                   "--max-tokens", "4", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try Self.json(r.stdout)["tokens"] as? [Int] == [506, 5279, 529, 506])

        let chat = try Self.pocketlm(["run", "--model", gemma, "--chat", "--prompt", "hi"])
        #expect(chat.status != 0 && chat.stderr.contains("chat template"), "\(chat.stderr)")
    }

    @Test("bad input: one clear line and a non-zero exit, never a signal")
    func badInput() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pocketlm-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let notGGUF = dir.appendingPathComponent("notes.gguf")
        try Data("just some text, not a model\n".utf8).write(to: notGGUF)
        let truncated = dir.appendingPathComponent("truncated.gguf")
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: try Self.q4()))
        try handle.readData(ofLength: 1_000_000).write(to: truncated)
        try handle.close()
        let longPrompt = String(repeating: "word ", count: 100)

        let cases: [([String], String)] = [
            (["run", "--model", dir.appendingPathComponent("missing.gguf").path, "--prompt", "hi"], "not found"),
            (["run", "--model", notGGUF.path, "--prompt", "hi"], "is not a GGUF file"),
            (["run", "--model", truncated.path, "--prompt", "hi"], "truncated"),
            (["run", "--model", try TestPaths.fixture("unsupported-type.gguf"), "--prompt", "hi"], "blk.0.ffn_up.weight"),
            (["run", "--model", try Self.q4(), "--prompt", longPrompt, "--context", "32"], "context"),
            (["run", "--model", try Self.q4(), "--prompt", "hi", "--context", "32", "--max-tokens", "100"], "past the context"),
            (["run", "--model", try Self.q4(), "--prompt", "hi", "--temperature", "warm"], "temperature"),
            (["run", "--model", try Self.q4(), "--prompt", "hi", "--top-p", "1.5"], "top-p"),
            (["run", "--model", try Self.q4(), "--prompt", "hi", "--threads", "0"], "threads"),
            (["run", "--model", try Self.q4(), "--prompt", "hi", "--kv-cache-type", "q8_0"], "kv-cache-type"),
            (["run", "--model", try Self.q4()], "--prompt"),
            (["run", "--model", try Self.q4(), "--prompt-file", dir.appendingPathComponent("nope.txt").path], "cannot read"),
            (["inspect", dir.path], "not a regular file"),
            (["perplexity", "--model", try Self.q4(), "--file", notGGUF.path, "--context", "64"], "fewer than one window"),
        ]
        for (args, expected) in cases {
            let r = try Self.pocketlm(args)
            #expect(r.status != 0, "\(args) exited 0")
            #expect(r.stderr.localizedCaseInsensitiveContains(expected), "\(args): stderr '\(r.stderr)' lacks '\(expected)'")
            #expect(r.stdout.isEmpty, "\(args) printed to stdout: \(r.stdout)")
        }
        // A type PocketLM does not compute with: `run` names the tensor and the type; `inspect` only reads, so it lists it.
        let u = try Self.pocketlm(["run", "--model", try TestPaths.fixture("unsupported-type.gguf"), "--prompt", "hi"])
        #expect(u.status != 0 && u.stderr.contains("MXFP4"), "\(u.stderr)")
        let i = try Self.pocketlm(["inspect", try TestPaths.fixture("unsupported-type.gguf")])
        #expect(i.status == 0 && i.stdout.contains("MXFP4"), "\(i.stderr)")
    }

    @Test("perplexity on a short text agrees with the JSON report's own arithmetic")
    func perplexity() throws {
        let text = try String(contentsOfFile: "/usr/share/common-licenses/Apache-2.0", encoding: .utf8)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ppl-\(UUID().uuidString).txt")
        try Data(text.prefix(4000).utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let r = try Self.pocketlm(["perplexity", "--model", try Self.q4(), "--file", file.path, "--context", "256", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try Self.json(r.stdout)
        let ppl = try #require(obj["perplexity"] as? Double)
        let nll = try #require(obj["mean_nll"] as? Double)
        let windows = try #require(obj["windows"] as? Int)
        #expect(abs(ppl - exp(nll)) < 1e-9 * ppl)
        #expect(obj["scored_tokens"] as? Int == windows * 127)
        // A licence text is easy for an instruct model: low perplexity, but not degenerate.
        #expect(ppl > 1.5 && ppl < 30, "perplexity \(ppl)")
    }

    @Test("pack + run under a memory budget: peak RSS within the budget, greedy text unchanged; too small a budget fails clearly")
    func flashBudget() throws {
        let q8 = try TestPaths.model("SmolLM2-135M-Instruct.Q8_0.gguf")
        let packed = FileManager.default.temporaryDirectory.appendingPathComponent("flash-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: packed) }
        let p = try Self.pocketlm(["pack", "--model", q8, "--out", packed, "--json"])
        #expect(p.status == 0, "\(p.stderr)")
        let prompt = ["--prompt", "The capital of France is", "--temperature", "0", "--max-tokens", "24", "--json", "--context", "512"]
        let dense = try Self.json(try Self.pocketlm(["run", "--model", q8] + prompt).stdout)
        // The budget is the whole process's (MemoryLimitTests runs these inside a cgroup limit of the same size).
        for args in [["--memory-budget", "150M"], ["--memory-budget", "170M", "--window", "2"],
                     ["--memory-budget", "150M", "--paging", "naive"], ["--memory-budget", "180M", "--paging", "mmap"]] {
            let r = try Self.pocketlm(["run", "--model", packed] + prompt + args)
            #expect(r.status == 0, "\(args): \(r.stderr)")
            let obj = try Self.json(r.stdout)
            let budget = try ByteCount.parse(args[1])
            let rss = try #require(obj["peak_rss_bytes"] as? Int)
            #expect(rss <= budget, "\(args): peak RSS \(rss >> 20) MiB > budget \(budget >> 20) MiB")
            // Every neuron is computed: the same greedy tokens as the ordinary file.
            #expect(obj["tokens"] as? [Int] == dense["tokens"] as? [Int], "\(args)")
            let paging = try #require(obj["paging"] as? [String: Any])
            let stats = try #require(paging["stats"] as? [String: Any])
            #expect((stats["bytes_read"] as? Int ?? 0) > 0, "\(args) read nothing")
        }
        // A prompt's batch under a budget runs the kernels the ordinary file's prompt runs, on every tier this CPU has:
        // the same logits. (The avx2 tier's Q8_0 prompt kernel sums in another order than its bundle kernels: a paged
        // prompt of PL_AVX2_Q8_BLOCK_ORDER_MIN tokens or more gave other logits there, 30.119 against 30.146.)
        let long = ["--prompt", "Summarise in one line: the quick brown fox jumps over the lazy dog, twice, then sleeps.",
                    "--temperature", "0", "--max-tokens", "1", "--top-logits", "5", "--json", "--context", "512"]
        for tier in KernelISA.supported {
            let env = ["POCKETLM_ISA": tier.rawValue]
            let ordinary = try Self.json(try Self.pocketlm(["run", "--model", q8] + long, environment: env).stdout)
            let paged = try Self.json(try Self.pocketlm(["run", "--model", packed, "--memory-budget", "150M"] + long,
                                                        environment: env).stdout)
            let prompt = try #require(ordinary["prompt_tokens"] as? [Int])
            #expect(prompt.count >= Int(PL_AVX2_Q8_BLOCK_ORDER_MIN) && paged["isa"] as? String == tier.rawValue)
            func top(_ o: [String: Any]) -> [String] {
                ((o["top_logits"] as? [[[String: Any]]])?.first ?? []).map { "\($0["id"] ?? "") \($0["logit"] ?? "")" }
            }
            #expect(!top(ordinary).isEmpty && top(paged) == top(ordinary), "\(tier)")
        }
        let small = try Self.pocketlm(["run", "--model", packed, "--memory-budget", "20M"] + prompt)
        #expect(small.status != 0)
        #expect(small.stderr.contains("below this model's minimum"), "\(small.stderr)")
        #expect(small.stdout.isEmpty)
        let unpacked = try Self.pocketlm(["run", "--model", q8, "--memory-budget", "50%"] + prompt)
        #expect(unpacked.status != 0 && unpacked.stderr.contains("pocketlm pack"), "\(unpacked.stderr)")
        // A window or a sparsity rule that would change nothing is refused, never silently ignored: on an ordinary
        // file (they work on a packed file's bundles) and, for a window, in a mode that keeps no window.
        for args in [["--model", q8, "--window", "2"], ["--model", q8, "--sparsity", "exact:0.5"]] {
            let r = try Self.pocketlm(["run"] + args + prompt)
            #expect(r.status != 0 && r.stderr.contains("not in the flash layout") && r.stdout.isEmpty, "\(args): \(r.stderr)")
        }
        for mode in ["resident", "naive", "mmap"] {
            let r = try Self.pocketlm(["run", "--model", packed, "--paging", mode, "--window", "2"] + prompt)
            #expect(r.status != 0 && r.stderr.contains("flash paging only, not by \(mode) paging") && r.stdout.isEmpty,
                    "\(mode): \(r.stderr)")
        }
    }

    @Test("bench-flash: a row per configuration, naive as the baseline, dense quality when every neuron is used, an SVG")
    func benchFlash() throws {
        let packed = FileManager.default.temporaryDirectory.appendingPathComponent("bench-flash-\(getpid()).gguf").path
        let svg = packed + ".svg"
        defer { try? FileManager.default.removeItem(atPath: packed); try? FileManager.default.removeItem(atPath: svg) }
        _ = try FlashPacker.pack(source: try TestPaths.fixture("tiny-q8_0.gguf"), output: packed, bundleBytes: 4096)
        let text = FileManager.default.temporaryDirectory.appendingPathComponent("bench-flash-\(getpid()).txt").path
        try String(repeating: "the quick brown fox jumps over the lazy dog. ", count: 40).write(toFile: text, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: text) }
        let r = try Self.pocketlm(["bench-flash", "--model", packed, "--budgets", "400M,10K", "--windows", "0,1", "--modes", "naive,flash,mmap",
                                   "--gen-tokens", "6", "--text", text, "--ppl-tokens", "256", "--rounds", "2", "--json", "--plot", svg])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try Self.json(r.stdout)
        let rows = try #require(obj["rows"] as? [[String: Any]])
        // dense + (naive, flash w0, flash w1, mmap) × 2 budgets
        #expect(rows.count == 9)
        let dense = rows[0]
        let densePPL = try #require(dense["perplexity"] as? Double)
        for row in rows.dropFirst() {
            let config = try #require(row["config"] as? [String: Any])
            if config["budgetLabel"] as? String == "10K" {
                #expect((row["error"] as? String)?.contains("minimum") == true, "\(row)")
                continue
            }
            #expect(row["error"] == nil, "\(row)")
            #expect(row["top1_agreement"] as? Double == 1.0)
            #expect(row["perplexity"] as? Double == densePPL)
            #expect((row["rounds"] as? [Double])?.count == 2)
            // Inside a cgroup limit equal to the budget where one is writable (the quality passes run after it is lifted).
            if MemoryLimitTests.cgroupUnavailable() == nil { #expect(row["limit_bytes"] as? Int == 400 << 20, "\(row)") }
            if config["mode"] as? String == "naive" { #expect(row["speedup_vs_naive"] as? Double == 1.0) }
        }
        let naive = try #require(rows.first { ($0["config"] as? [String: Any])?["mode"] as? String == "naive" })
        let flash = try #require(rows.first { ($0["config"] as? [String: Any])?["mode"] as? String == "flash" })
        // A 400 MiB budget (the whole process's) holds the whole tiny FFN: flash reads nothing per token, naive the whole FFN.
        #expect(flash["bytes_read_per_token"] as? Double == 0)
        #expect((naive["bytes_read_per_token"] as? Double ?? 0) > 0)
        #expect(try String(contentsOfFile: svg, encoding: .utf8).contains("<polyline"))
    }
}
