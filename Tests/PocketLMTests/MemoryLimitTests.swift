import Foundation
import Testing
import PocketLM

/// `--memory-budget B` bounds the whole process: the CLI run inside a cgroup-v1 memory limit of B (page cache counts
/// against it, as on a phone) is never killed, never even makes the kernel reclaim to fit (the limit is never hit),
/// peaks at or below B, and gives the greedy tokens of the ordinary file; a budget below the minimum for a context is
/// an error that states the minimum, and that minimum is enough.
@Suite("Memory limit", .serialized)
struct MemoryLimitTests {
    static let root = "/sys/fs/cgroup/memory"

    /// Why no memory cgroup can be used here, or nil when one can be created and written.
    static func cgroupUnavailable() -> String? {
        let probe = "\(root)/pocketlm-probe-\(getpid())"
        guard FileManager.default.fileExists(atPath: "\(root)/cgroup.procs") else {
            return "no cgroup-v1 memory controller at \(root)"
        }
        guard mkdir(probe, 0o755) == 0 else { return "cannot create a memory cgroup under \(root): \(String(cString: strerror(errno)))" }
        defer { rmdir(probe) }
        guard (try? "67108864".write(toFile: "\(probe)/memory.limit_in_bytes", atomically: false, encoding: .utf8)) != nil else {
            return "cannot set memory.limit_in_bytes in \(probe)"
        }
        return nil
    }

    struct Limited {
        var status: Int32
        var killed: Bool
        var stdout: String
        var stderr: String
        var peak: Int
        var failcnt: Int
    }

    /// Runs the CLI inside a fresh memory cgroup limited to `limit` bytes (the shell moves itself in, then execs).
    static func runLimited(_ args: [String], limit: Int, input: String? = nil) throws -> Limited {
        let binary = CLITests.binary
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw TestSetupError("missing \(binary): run `make test` (it builds the CLI in release first)")
        }
        // The model's repacked matrices, left cached by the run before (charged to its group, then to this process's
        // once that group is removed), would be resident weights the limit never sees: each run pays for its own.
        if let i = args.firstIndex(of: "--model"), i + 1 < args.count, let cache = LoadOptions().packCachePath(for: args[i + 1]) {
            let fd = open(cache, O_RDONLY)
            if fd >= 0 { _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED)); close(fd) }
        }
        let group = "\(root)/pocketlm-test-\(getpid())-\(UUID().uuidString.prefix(8))"
        guard mkdir(group, 0o755) == 0 else { throw TestSetupError("cannot create \(group)") }
        defer { rmdir(group) }
        try String(limit).write(toFile: "\(group)/memory.limit_in_bytes", atomically: false, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "echo $$ > \(group)/cgroup.procs && exec \"$@\"", "sh", binary] + args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let stdin = Pipe()
        p.standardInput = input == nil ? FileHandle.nullDevice : stdin
        try p.run()
        if let input {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try stdin.fileHandleForWriting.close()
        }
        final class Box: @unchecked Sendable { var data = Data() }
        let outBox = Box()
        let done = DispatchGroup()
        done.enter()
        DispatchQueue.global().async { outBox.data = out.fileHandleForReading.readDataToEndOfFile(); done.leave() }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        p.waitUntilExit()
        func read(_ name: String) -> Int {
            Int(((try? String(contentsOfFile: "\(group)/\(name)", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }
        return Limited(status: p.terminationStatus, killed: p.terminationReason == .uncaughtSignal,
                       stdout: String(decoding: outBox.data, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self),
                       peak: read("memory.max_usage_in_bytes"), failcnt: read("memory.failcnt"))
    }

    /// The minimum the CLI states for `context`, in bytes, rounded up to 0.1 MiB: a 1 MiB budget is told what the
    /// runtime, KV cache and resident weights alone take (before the vocabulary is built: no kill on the way) and the
    /// budget to go above, the budget it names the exact minimum.
    static func statedMinimum(_ packed: String, context: Int) throws -> Int {
        func mib(_ text: String, after prefix: String) throws -> Double {
            let pattern = try #require(text.range(of: prefix + #"([0-9.]+) MiB"#, options: .regularExpression), "\(text)")
            return try #require(Double(text[pattern].dropFirst(prefix.count).split(separator: " ")[0]))
        }
        func run(_ budget: String) throws -> String {
            let r = try CLITests.pocketlm(["run", "--model", packed, "--prompt", "x", "--memory-budget", budget,
                                           "--context", String(context)])
            #expect(r.status != 0 && r.stdout.isEmpty)
            #expect(r.stderr.contains("at a context of \(context) tokens"), "\(r.stderr)")
            return r.stderr
        }
        let first = try run("1M")
        let fixed = try mib(first, after: "alone take "), above = try mib(first, after: "raise the memory budget above ")
        #expect(above > fixed, "the budget it asks for carries the run-to-run allowance")
        let exact = try mib(try run(String(Int((above + 0.1) * 1_048_576))), after: "minimum of ")
        #expect(exact > above, "the exact minimum adds the vocabulary and scratch to \(fixed) MiB")
        return Int(((exact + 0.1) * 1_048_576).rounded(.up))
    }

    /// A prompt of ~100 tokens, then greedy tokens up to the context's last position: the run's KV cache fills the
    /// context inside a limit equal to the budget.
    func fillsContext(packed: String, budget: Int, context: Int) throws {
        let text = """
            The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a lamp, a notebook and a \
            flask of tea. From the gallery he could see the harbour, the fishing boats coming home, the gulls circling \
            over the nets and the long grey line of the breakwater. He wrote down the wind, the swell, the colour of \
            the sky and the names of the ships that passed, as his father had done before him, and his grandfather \
            before that. One night in November
            """
        let promptFile = FileManager.default.temporaryDirectory.appendingPathComponent("limit-prompt-\(getpid()).txt").path
        try text.write(toFile: promptFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: promptFile) }
        let q8 = try TestPaths.model("SmolLM2-135M-Instruct.Q8_0.gguf")
        let promptTokens = try #require(try CLITests.json(try CLITests.pocketlm(
            ["run", "--model", q8, "--prompt-file", promptFile, "--max-tokens", "1", "--json"]).stdout)["prompt_tokens"] as? [Int])
        let args = ["--prompt-file", promptFile, "--temperature", "0", "--context", String(context),
                    "--max-tokens", String(context - promptTokens.count), "--json"]
        let dense = try CLITests.json(try CLITests.pocketlm(["run", "--model", q8] + args).stdout)
        let r = try Self.runLimited(["run", "--model", packed, "--memory-budget", String(budget)] + args, limit: budget)
        let label = "budget \(budget >> 20) MiB, context \(context) filled"
        #expect(!r.killed && r.status == 0, "\(label): status \(r.status), killed \(r.killed): \(r.stderr)")
        #expect(r.peak > 0 && r.peak <= budget, "\(label): cgroup peak \(r.peak >> 20) MiB")
        #expect(r.failcnt == 0, "\(label): the process hit its limit \(r.failcnt) times")
        guard r.status == 0 else { return }
        let obj = try CLITests.json(r.stdout)
        let tokens = try #require(obj["tokens"] as? [Int])
        #expect(tokens == dense["tokens"] as? [Int], "\(label): greedy tokens differ from the ordinary file's")
        #expect(promptTokens.count + tokens.count == context, "\(label): the run stopped before the context was full")
        #expect(try #require(obj["peak_rss_bytes"] as? Int) <= budget, "\(label): peak RSS over the budget")
        let paging = try #require(obj["paging"] as? [String: Any])
        let plan = try #require(paging["plan"] as? [String: Any]), stats = try #require(paging["stats"] as? [String: Any])
        // The reserve was used (groups found in lent slots) and given back (slots taken back as the cache filled).
        #expect(try #require(plan["lent_slots"] as? Int) > 0, "\(label): \(plan)")
        #expect(try #require(stats["groups_in_lent_slots"] as? Int) > 0, "\(label): \(stats)")
        #expect(try #require(stats["lent_slots_taken_back"] as? Int) > 0, "\(label): \(stats)")
    }

    @Test("the CLI inside a memory limit equal to its budget: never killed, limit never hit, peak ≤ budget, same tokens; the stated minimum runs")
    func runsInsideItsBudget() throws {
        if let reason = Self.cgroupUnavailable() {
            print("SKIPPED (memory limit test): \(reason)")
            return
        }
        let q8 = try TestPaths.model("SmolLM2-135M-Instruct.Q8_0.gguf")
        let packed = FileManager.default.temporaryDirectory.appendingPathComponent("limit-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: packed) }
        let pack = try CLITests.pocketlm(["pack", "--model", q8, "--out", packed])
        #expect(pack.status == 0, "\(pack.stderr)")
        let prompt = ["--prompt", "The capital of France is", "--temperature", "0", "--max-tokens", "16", "--json"]
        let dense = try CLITests.json(try CLITests.pocketlm(["run", "--model", q8] + prompt).stdout)
        let denseTokens = try #require(dense["tokens"] as? [Int])

        let min256 = try Self.statedMinimum(packed, context: 256)
        let min2048 = try Self.statedMinimum(packed, context: 2048)
        // A longer context needs more: its KV cache (30 layers × 192 keys and values × 2 bytes per position) and each
        // compute thread's attention scores (a tile's queries and heads per position), within the 0.1 MiB the message
        // rounds to and the runtime's resident set, which varies by a few hundred KiB per run.
        let config = try ModelConfig(gguf: try GGUFFile(path: q8))
        let threads = ProcessInfo.processInfo.activeProcessorCount   // the CLI's default
        let scoresGrowth = threads * 4 * (Transformer.attentionScoresPerThread(config: config, contextLength: 2048)
                                          - Transformer.attentionScoresPerThread(config: config, contextLength: 256))
        let growth = (2048 - 256) * 30 * 192 * 2 * 2 + scoresGrowth
        #expect(abs(min2048 - min256 - growth) < 1 << 20, "\(min2048 - min256) vs \(growth)")
        let cases: [(budget: Int, context: Int, extra: [String])] = [
            (min256, 256, []),                              // the stated minimum, as a refused run named it
            (min256 + (24 << 20), 256, ["--window", "2"]),  // room for some FFN groups and a window
            (min2048, 2048, []),
            (min256 + (8 << 20), 256, ["--paging", "naive"]),
            (min256 + (40 << 20), 256, ["--paging", "mmap"]),
        ]
        for c in cases {
            let args = ["run", "--model", packed, "--memory-budget", String(c.budget), "--context", String(c.context)] + prompt + c.extra
            let r = try Self.runLimited(args, limit: c.budget)
            let label = "budget \(c.budget >> 20) MiB, context \(c.context) \(c.extra)"
            #expect(!r.killed && r.status == 0, "\(label): status \(r.status), killed \(r.killed): \(r.stderr)")
            #expect(r.peak > 0 && r.peak <= c.budget, "\(label): cgroup peak \(r.peak >> 20) MiB")
            #expect(r.failcnt == 0, "\(label): the process hit its limit \(r.failcnt) times (the kernel had to reclaim)")
            guard r.status == 0 else { continue }
            let obj = try CLITests.json(r.stdout)
            #expect(obj["tokens"] as? [Int] == denseTokens, "\(label): greedy tokens differ from the ordinary file's")
            let rss = try #require(obj["peak_rss_bytes"] as? Int)
            #expect(rss <= c.budget, "\(label): peak RSS \(rss >> 20) MiB")
        }
        // A context that fills during the run, at the minimum: flash holds groups in the KV cache's and the batch
        // scratch's untouched reserve from the start and gives them back as the cache grows into it; the process
        // stays inside its limit to the last position.
        try fillsContext(packed: packed, budget: min256, context: 256)

        // Below the minimum (past the run-to-run allowance the stated minimum carries), inside the same limit: a clear
        // error, not a kill.
        let below = min256 - ProcessBudget.runToRunAllowance - (1 << 20)
        let small = try Self.runLimited(["run", "--model", packed, "--memory-budget", String(below),
                                         "--context", "256"] + prompt, limit: below)
        #expect(!small.killed && small.status != 0)
        #expect(small.stderr.contains("below this model's minimum") && small.stderr.contains("context of 256 tokens"), "\(small.stderr)")
        // Far below (half the file, less than the runtime, KV cache and resident weights): the error comes before
        // the vocabulary is built, so the limit is never reached on the way to it.
        let half = 72 << 20
        let tiny = try Self.runLimited(["run", "--model", packed, "--memory-budget", String(half), "--context", "256"] + prompt,
                                       limit: half)
        #expect(!tiny.killed && tiny.status != 0 && tiny.failcnt == 0, "killed \(tiny.killed), limit hit \(tiny.failcnt) times: \(tiny.stderr)")
        #expect(tiny.stderr.contains("below this model's minimum at a context of 256 tokens"), "\(tiny.stderr)")
    }

    @Test("chat under a budget, inside a memory limit equal to it: the ordinary file's answers, the second turn reuses the cache, /stats reports the reads; a draft model and several serve slots are refused")
    func chatInsideItsBudget() throws {
        let q4 = try CLITests.q4()
        let packed = FileManager.default.temporaryDirectory.appendingPathComponent("limit-chat-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: packed) }
        let pack = try CLITests.pocketlm(["pack", "--model", q4, "--out", packed])
        #expect(pack.status == 0, "\(pack.stderr)")
        // Both refused before anything loads: the budget is the whole process's and plans one KV cache.
        let draft = try CLITests.pocketlm(["run", "--model", packed, "--memory-budget", "200M", "--context", "512",
                                           "--prompt", "Hi", "--speculate", "draft:" + q4])
        #expect(draft.status != 0 && draft.stderr.contains("loads a second model outside --memory-budget"), "\(draft.stderr)")
        let slots = try CLITests.pocketlm(["serve", "--model", packed, "--memory-budget", "200M", "--parallel", "2"])
        #expect(slots.status != 0 && slots.stderr.contains("use --parallel 1"), "\(slots.stderr)")

        if let reason = Self.cgroupUnavailable() {
            print("SKIPPED (chat inside a memory limit): \(reason)")
            return
        }
        let context = 512
        let budget = try Self.statedMinimum(packed, context: context) + (8 << 20)
        let input = "What is the capital of France?\n/stats\nAnd of Germany?\n/stats\n"
        let args = ["--temperature", "0", "--max-tokens", "24", "--context", String(context)]
        let plain = try CLITests.pocketlm(["chat", "--model", q4] + args, input: input)
        #expect(plain.status == 0, "\(plain.stderr)")
        let r = try Self.runLimited(["chat", "--model", packed, "--memory-budget", String(budget)] + args, limit: budget, input: input)
        let label = "chat, budget \(budget >> 20) MiB, context \(context)"
        #expect(!r.killed && r.status == 0, "\(label): status \(r.status), killed \(r.killed): \(r.stderr)")
        #expect(r.peak > 0 && r.peak <= budget, "\(label): cgroup peak \(r.peak >> 20) MiB")
        #expect(r.failcnt == 0, "\(label): the process hit its limit \(r.failcnt) times")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        let answers = { (lines: [String]) in lines.filter { !$0.hasPrefix("cache:") && !$0.hasPrefix("paging:") } }
        #expect(answers(lines) == answers(plain.stdout.split(separator: "\n").map(String.init)), "\(label): \(r.stdout)")
        let stats = try lines.filter { $0.hasPrefix("cache:") }.map(ChatCLITests.stats)
        try #require(stats.count == 2, "\(r.stdout)")
        #expect(stats[1].reused == stats[0].cache, "\(label): the second turn fed its whole prompt again")
        // Each turn's reads: at this budget most of the FFN stays on storage, so every step reads.
        let reads = lines.filter { $0.hasPrefix("paging: flash, weights' share of the budget ") }
        #expect(reads.count == 2, "\(r.stdout)")
        for line in reads {
            let m = try #require(line.firstMatch(of: #/read ([0-9.]+) MiB\/token/#), "\(line)")
            #expect(try #require(Double(m.1)) > 1, "\(line)")
        }
    }
}
