import CKernels
import Foundation
import Testing
import PocketLM

/// The ISA tiers the kernels are chosen from: detection, lowering (process-wide and per thread), refusal of a tier
/// the CPU lacks, and what the CLI reports. On x86-64 the suite claims the avx512 and avx2 tiers (their bodies are
/// compared with the portable reference in the kernel tests), so a CPU without them fails here rather than passing
/// with less tested.
extension KernelISA {
    var cCode: Int32 { pl_isa_from_name(rawValue) }
}

@Suite("Kernel ISA tiers", .serialized)
struct KernelISATests {
    @Test("the CPU's tiers are detected, and the suite's claimed tiers are present")
    func detection() throws {
        #expect(KernelISA.supported.first == KernelISA.best)
        #expect(KernelISA.supported.last == .portable)
        #if arch(x86_64)
        #expect(KernelISA.supported.contains(.avx2), "this x86-64 CPU lacks AVX2+FMA+F16C: the avx2 tier is untested")
        #expect(KernelISA.supported.contains(.avx512), "this CPU lacks AVX-512: the avx512 tier is untested")
        #expect(!KernelISA.supported.contains(.neon))
        #elseif arch(arm64)
        #expect(KernelISA.best == .neon)
        #endif
    }

    @Test("a thread's forced tier: lower tiers only, and back to the process's")
    func forcedThread() throws {
        defer { pl_isa_force_thread(-1) }
        for tier in KernelISA.allCases {
            let ok = pl_isa_force_thread(tier.cCode) == 0
            #expect(ok == KernelISA.supported.contains(tier), "\(tier)")
            #expect(pl_isa() == (ok ? tier.cCode : KernelISA.current.cCode), "\(tier): a refused tier must change nothing")
            pl_isa_force_thread(-1)
        }
        #expect(pl_isa() == KernelISA.current.cCode)
        pl_force_portable(1)
        #expect(pl_isa() == Int32(PL_ISA_PORTABLE) && pl_has_avx512() == 0)
        pl_force_portable(0)
        #expect(pl_isa() == KernelISA.current.cCode)
    }

    @Test("POCKETLM_ISA: names, an unknown name, a tier this CPU lacks")
    func environment() throws {
        #expect(try KernelISA.requested(environment: [:]) == nil)
        #expect(try KernelISA.requested(environment: ["POCKETLM_ISA": ""]) == nil)
        #expect(try KernelISA.requested(environment: ["POCKETLM_ISA": "AVX2"]) == .avx2)
        #expect(throws: KernelISAError.self) { try KernelISA.requested(environment: ["POCKETLM_ISA": "sse4"]) }
        let foreign: KernelISA = KernelISA.supported.contains(.neon) ? .avx512 : .neon
        let before = KernelISA.current
        do {
            try KernelISA.select(foreign)
            Issue.record("selecting \(foreign) on this CPU must fail")
        } catch let error as KernelISAError {
            #expect(error.errorDescription?.contains("asks for a kernel tier this CPU lacks") == true)
        }
        #expect(KernelISA.current == before)
        for tier in KernelISA.allCases {
            #expect(pl_isa_from_name(pl_isa_name(tier.cCode)) == tier.cCode)
        }
        #expect(pl_isa_from_name("avx") == -1)
    }

    @Test("the CLI reports its tier, lowers it on request and refuses one the CPU lacks")
    func cli() throws {
        let model = try CLITests.q4()
        let run = ["run", "--model", model, "--prompt", "Hi", "--max-tokens", "2", "--temperature", "0", "--json"]
        let native = try CLITests.pocketlm(run, unset: ["POCKETLM_ISA"])
        #expect(native.status == 0, "\(native.stderr)")
        #expect(try CLITests.json(native.stdout)["isa"] as? String == KernelISA.best.rawValue)
        for tier in KernelISA.supported where tier != KernelISA.best {
            let lowered = try CLITests.pocketlm(run, environment: ["POCKETLM_ISA": tier.rawValue])
            #expect(lowered.status == 0, "\(lowered.stderr)")
            let obj = try CLITests.json(lowered.stdout)
            #expect(obj["isa"] as? String == tier.rawValue)
            // Every tier gives the same greedy tokens on this prompt (the bodies differ at most in float summation order).
            #expect(obj["tokens"] as? [Int] == (try CLITests.json(native.stdout))["tokens"] as? [Int], "\(tier)")
        }
        let foreign = KernelISA.supported.contains(.neon) ? "avx512" : "neon"
        let refused = try CLITests.pocketlm(run, environment: ["POCKETLM_ISA": foreign])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("POCKETLM_ISA=\(foreign) asks for a kernel tier this CPU lacks"), "\(refused.stderr)")
        #expect(refused.stdout.isEmpty)
        let unknown = try CLITests.pocketlm(run, environment: ["POCKETLM_ISA": "mmx"])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("POCKETLM_ISA=mmx is not a kernel tier"), "\(unknown.stderr)")
        let bench = ["bench", "--model", model, "--prompt-tokens", "4", "--gen-tokens", "2", "--repetitions", "1", "--json"]
        let b = try CLITests.json(try CLITests.pocketlm(bench, environment: ["POCKETLM_ISA": "portable"]).stdout)
        #expect(b["isa"] as? String == "portable")
        #expect(b["isa_features"] as? [String] == [])
    }

    @Test("the avx2 tier's prompt (its batch kernels) and decode give llama.cpp's greedy tokens", arguments: ["Q4_1", "Q8_0"])
    func avx2Prompt(format: String) throws {
        #if arch(x86_64)
        try #require(KernelISA.supported.contains(.avx2), "this x86-64 CPU lacks AVX2+FMA+F16C: the avx2 tier is untested")
        let file = "SmolLM2-135M-Instruct.\(format).gguf"
        let plain = try Reference.records().filter { $0.model_file == file && $0.prompt_kind == "plain" }
        // The batch kernels run from 4 inputs on (PL_AVX2_BATCH_MIN); a shorter prompt would test the row kernels only.
        // Q8_0's prompt kernel (the portable order) from PL_AVX2_Q8_BLOCK_ORDER_MIN: a second, longer prompt.
        let short = try #require(plain.first { $0.tokens.count >= Int(PL_AVX2_BATCH_MIN_TOKENS) })
        let long = try #require(plain.first { $0.tokens.count >= Int(PL_AVX2_Q8_BLOCK_ORDER_MIN) })
        for record in [short, long] {
            // Decisive steps only, as RealModelTests: Q8 activations put a correct runtime within ~0.3 of llama.cpp.
            let steps = min(8, record.greedy_top1_top2_margin.firstIndex { $0 < 0.35 } ?? record.greedy_ids.count)
            let r = try CLITests.pocketlm(["run", "--model", try TestPaths.model(file), "--prompt", record.prompt,
                                           "--temperature", "0", "--max-tokens", "\(steps)", "--json"],
                                          environment: ["POCKETLM_ISA": "avx2"])
            #expect(r.status == 0, "\(r.stderr)")
            let obj = try CLITests.json(r.stdout)
            #expect(obj["isa"] as? String == "avx2")
            #expect(obj["prompt_tokens"] as? [Int] == record.tokens)
            #expect(obj["tokens"] as? [Int] == Array(record.greedy_ids.prefix(steps)))
        }
        #endif
    }
}
