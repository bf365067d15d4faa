import Foundation
import Testing
import PocketLM

/// `bench-flash` refuses bad input before it runs anything (its dense run alone takes a while, then every
/// configuration's): each case pairs the bad argument with an unreadable --budgets, which is read before the first
/// run, so the expected error shows the argument was checked first.
@Suite("bench-flash input", .serialized)
struct BenchFlashInputTests {
    @Test("bench-flash: a missing or unpacked model, --threads 0, --io-threads 0 and a window past the longest are each a clear error before any run")
    func badInputBeforeAnyRun() throws {
        let packed = try FlashPagingTests.packed("tiny-q8_0.gguf")
        let unpacked = try TestPaths.fixture("tiny-q8_0.gguf")
        let missing = FlashPagingTests.scratch("no-such-model.gguf")
        let cases: [([String], String)] = [
            (["--model", missing], "model file not found: \(missing)"),
            (["--model", unpacked], "\(unpacked) is not in the flash layout"),
            (["--model", packed, "--threads", "0"], "--threads must be at least 1, found 0"),
            (["--model", packed, "--io-threads", "0"], "--io-threads must be between 1 and 256, found 0"),
            (["--model", packed, "--windows", "0,2000"], "bad window '2000' in --windows"),
            (["--model", packed, "--windows", "0,-1"], "bad window '-1' in --windows"),
        ]
        for (args, expected) in cases {
            let r = try CLITests.pocketlm(["bench-flash"] + args + ["--budgets", "abc"])
            #expect(r.status != 0, "\(args) exited 0")
            #expect(r.stderr.contains(expected), "\(args): stderr '\(r.stderr)' lacks '\(expected)'")
            #expect(!r.stderr.contains("no llama.cpp row") && r.stdout.isEmpty, "\(args) went on to set up the runs: \(r.stderr)")
        }
        let none = try CLITests.pocketlm(["bench-flash", "--model", packed, "--budgets", ","])
        #expect(none.status != 0 && none.stderr.contains("--budgets lists no budget") && none.stdout.isEmpty, "\(none.stderr)")
    }
}
