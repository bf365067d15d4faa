import Foundation
import Testing
import PocketLM

/// bench-flash on SmolLM2 Q4_1 with llama.cpp as a row: every budgeted configuration inside a cgroup limit equal to
/// its budget (where one is writable), a budget below the minimum an error rather than a kill, and each row's storage
/// bound from the storage reference measured in the same run (the faster of a sequential stream and reads as flash
/// issues them).
@Suite("bench-flash under memory limits", .serialized)
struct BenchFlashLimitTests {
    @Test("bench-flash: limits equal to the budgets, llama.cpp under the same limit, storage bound and share per row, same tokens")
    func limitedRowsWithPeer() throws {
        let q4 = try TestPaths.model("SmolLM2-135M-Instruct.Q4_1.gguf")
        let python = TestPaths.cacheDir.appendingPathComponent("llama-cpp-venv/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw TestSetupError("missing \(python): run `make variants` (it builds the llama-cpp-python venv)")
        }
        let packed = FileManager.default.temporaryDirectory.appendingPathComponent("bench-limit-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: packed) }
        let pack = try CLITests.pocketlm(["pack", "--model", q4, "--out", packed])
        #expect(pack.status == 0, "\(pack.stderr)")
        let limits = MemoryLimitTests.cgroupUnavailable()
        if let limits { print("SKIPPED (bench-flash limit checks; the rows run unlimited): \(limits)") }
        let r = try CLITests.pocketlm(["bench-flash", "--model", packed, "--source", q4, "--budgets", "50%,min+16M",
                                       "--windows", "0", "--modes", "flash,mmap,llama.cpp", "--gen-tokens", "8",
                                       "--ppl-tokens", "0", "--rounds", "1", "--context", "256", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try CLITests.json(r.stdout)
        #expect((report["cpu"] as? String)?.isEmpty == false)
        let sequential = try #require(report["sequential_read_mb_per_s"] as? Double)
        #expect(sequential > 0)
        // Reads as flash issues them: SmolLM2 Q4_1's 36 KiB groups joined into 7-group (252 KiB) reads, 8 readers.
        let parallel = try #require(report["parallel_read_mb_per_s"] as? Double)
        #expect(parallel > 0 && report["parallel_read_bytes"] as? Int == 7 * 36864)
        let reference = max(sequential, parallel)
        #expect((report["memory_limit_unavailable"] as? String) == limits)
        let rows = try #require(report["rows"] as? [[String: Any]])
        #expect(rows.count == 7)   // dense + (flash, mmap, llama.cpp) × 2 budgets
        let dense = rows[0]
        let denseTokens = try #require(dense["tokens"] as? [Int])
        #expect(denseTokens.count == 8)
        func config(_ row: [String: Any]) -> (mode: String, label: String, budget: Int?) {
            let c = row["config"] as? [String: Any] ?? [:]
            return (c["mode"] as? String ?? "", c["budgetLabel"] as? String ?? "", c["budget"] as? Int)
        }
        var speeds: [String: Double] = [:]
        for row in rows.dropFirst() {
            let c = config(row)
            let label = "\(c.label) \(c.mode)"
            #expect(row["killed"] as? Bool != true || c.mode == "llama.cpp", "\(label): PocketLM killed: \(row)")
            if c.label == "50%" {
                // Half of a 98 MB file is below what the runtime, KV cache and resident weights take: PocketLM says so.
                if c.mode != "llama.cpp" {
                    #expect((row["error"] as? String)?.contains("below this model's minimum at a context of 256 tokens") == true, "\(label): \(row)")
                }
                continue
            }
            #expect(row["error"] == nil, "\(label): \(row)")
            guard row["error"] == nil else { continue }
            let tps = try #require(row["tokens_per_second"] as? Double)
            speeds[c.mode] = tps
            #expect((row["tokens"] as? [Int])?.count == 8)
            if c.mode != "llama.cpp" {
                // llama.cpp's own float order may flip a near tie; PocketLM's paged modes are exact.
                #expect(row["tokens_equal_dense"] as? Bool == true, "\(label): greedy tokens differ from the unpacked file's")
            }
            let budget = try #require(c.budget)
            if limits == nil {
                #expect(row["limit_bytes"] as? Int == budget, "\(label)")
                let peak = try #require(row["limit_peak_bytes"] as? Int, "\(label)")
                #expect(peak > 0 && peak <= budget, "\(label): peak \(peak >> 20) MiB")
            }
            // The bound: this row's storage reads per token at the reference throughput measured in this run.
            let readPerToken = try #require(row["storage_read_bytes_per_token"] as? Double)
            if readPerToken > 0 {
                let bound = try #require(row["storage_bound_tokens_per_second"] as? Double)
                #expect(abs(bound - reference * 1e6 / readPerToken) <= 1e-6 * bound)
                let share = try #require(row["storage_share"] as? Double)
                #expect(abs(share - tps / bound) <= 1e-9 * max(1, share))
            } else {
                #expect(row["storage_bound_tokens_per_second"] == nil)
            }
        }
        // One round: the ratios are those of this round's speeds.
        let flash = try #require(rows.first { config($0).mode == "flash" && config($0).label != "50%" })
        let peer = try #require(speeds["llama.cpp"]), mmap = try #require(speeds["mmap"]), f = try #require(speeds["flash"])
        #expect(abs((flash["speedup_vs_llama_cpp"] as? Double ?? 0) - f / peer) < 1e-9)
        #expect(abs((flash["speedup_vs_mmap"] as? Double ?? 0) - f / mmap) < 1e-9)
    }
}
