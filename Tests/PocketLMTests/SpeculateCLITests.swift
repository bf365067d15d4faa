import Foundation
import Testing
import PocketLM

/// `--speculate` in the CLI: the same text as plain greedy decoding, the figures on stderr, clear errors.
@Suite("pocketlm --speculate", .serialized)
struct SpeculateCLITests {
    static var model: String { get throws { try TestPaths.model("SmolLM2-135M-Instruct.Q4_1.gguf") } }

    @Test("run --speculate lookup prints plain decoding's text and the acceptance on stderr")
    func runLookup() throws {
        let common = ["run", "--model", try Self.model, "--chat", "--temperature", "0", "--max-tokens", "40", "--threads", "2",
                      "--prompt", "Repeat exactly: red, green, blue, red, green, blue, red, green, blue."]
        let plain = try CLITests.pocketlm(common)
        let spec = try CLITests.pocketlm(common + ["--speculate", "lookup:6"])
        #expect(plain.status == 0 && spec.status == 0, "\(spec.stderr)")
        #expect(spec.stdout == plain.stdout)
        #expect(spec.stderr.contains("speculation:") && spec.stderr.contains("tokens per pass"), "\(spec.stderr)")
        #expect(!plain.stderr.contains("speculation:"))
        let json = try CLITests.pocketlm(common + ["--speculate", "lookup", "--json"])
        #expect(json.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        let stats = object?["speculation"] as? [String: Any]
        #expect((stats?["verify_passes"] as? Int ?? 0) > 0, "\(json.stdout)")
    }

    @Test("bad --speculate values are refused with a message, not run", arguments: [
        ("lookup:0", "lookup:0"), ("lookup:x", "lookup:x"), ("ngram", "ngram"), ("draft:", "draft:"),
        ("lookup:300", "more than the 255"), ("draft:/nonexistent/model.gguf", "no draft model file at /nonexistent/model.gguf"),
    ])
    func badValues(value: String, message: String) throws {
        let r = try CLITests.pocketlm(["run", "--model", try Self.model, "--prompt", "Hi", "--max-tokens", "2",
                                       "--speculate", value])
        #expect(r.status != 0)
        #expect(r.stderr.contains(message), "\(value): \(r.stderr)")
    }

    @Test("a draft model with another vocabulary is refused")
    func vocabularyMismatch() throws {
        let r = try CLITests.pocketlm(["run", "--model", try Self.model, "--prompt", "Hi", "--max-tokens", "2",
                                       "--speculate", "draft:" + (try TestPaths.fixture("tiny-q8_0.gguf"))])
        #expect(r.status != 0)
        #expect(r.stderr.contains("vocabulary has 394 tokens but the target's has 49152"), "\(r.stderr)")
    }

    @Test("chat --speculate lookup: the same answers over two turns (the second reuses the cache), and /stats reports it")
    func chat() throws {
        let input = "Repeat exactly: one two three four five six seven eight.\nNow repeat it again, exactly.\n/stats\n"
        let args = ["chat", "--model", try Self.model, "--temperature", "0", "--max-tokens", "30", "--threads", "2"]
        let plain = try CLITests.pocketlm(args, input: input)
        let spec = try CLITests.pocketlm(args + ["--speculate", "lookup:8"], input: input)
        #expect(plain.status == 0 && spec.status == 0, "\(spec.stderr)")
        let answers = { (s: String) in s.split(separator: "\n").filter { !$0.hasPrefix("cache:") && !$0.hasPrefix("speculation:") } }
        #expect(answers(spec.stdout) == answers(plain.stdout))
        #expect(answers(plain.stdout).count == 2, "\(plain.stdout)")
        #expect(spec.stdout.contains("speculation:") && !plain.stdout.contains("speculation:"), "\(spec.stdout)")
    }

    @Test("every kernel tier this CPU runs (POCKETLM_ISA): speculative text equals plain")
    func tiers() throws {
        let args = ["run", "--model", try Self.model, "--chat", "--temperature", "0", "--max-tokens", "48", "--threads", "2",
                    "--prompt", "Repeat exactly: the cat sat on the mat, the dog sat on the log, the frog sat on the bog."]
        for tier in KernelISA.supported {
            let env = [KernelISA.environmentVariable: tier.rawValue]
            let plain = try CLITests.pocketlm(args, environment: env)
            let spec = try CLITests.pocketlm(args + ["--speculate", "lookup:8"], environment: env)
            #expect(plain.status == 0 && spec.status == 0, "\(tier): \(spec.stderr)")
            #expect(spec.stdout == plain.stdout, "\(tier): speculative text differs")
            #expect(spec.stderr.contains("speculation:"))
        }
        #expect(KernelISA.supported.contains(.portable))
    }
}
