import Foundation
import PocketLM

/// bench-flash's printed output: one line per finished row, and the table of a whole report with its storage
/// bound, probe patterns and read-busy shares.
extension BenchFlash {
    func describe(_ r: Row) -> String {
        if let e = r.error { return "\(r.config.budgetLabel) \(r.config.name): \(e)" }
        return String(format: "%@ %@: %.2f tok/s, %.2f MiB read/token, hit %.0f%%, RSS %.0f MiB%@",
                      r.config.budgetLabel, r.config.name, r.tokens_per_second, r.storage_read_bytes_per_token / 1_048_576,
                      r.window_hit_rate * 100, Double(r.peak_rss_bytes) / 1_048_576,
                      r.limit_peak_bytes.map { String(format: ", limit peak %.0f MiB", Double($0) / 1_048_576) } ?? "")
    }

    func table(_ report: Report) -> String {
        var s = String(format: "model: %@ (%@)%@\n", report.model, ByteCount.format(report.file_bytes),
                       report.source.map { ", dense and llama.cpp: \($0)" } ?? "")
        s += String(format: "CPU: %@, %d threads, %d I/O threads, load %@ (shared machine: figures are directional), context %d\n",
                    report.cpu, report.threads, report.io_threads, report.load_average, report.context)
        s += String(format: "storage: sequential %@ read (one stream, 1 MiB reads) %.0f MB/s; as flash reads (its bundles, %d threads, %.0f KiB reads, 2 or 4 layers queued, or twice the threads; the fastest) %.0f MB/s (medians of the rounds)\n",
                    report.direct_io ? "O_DIRECT" : "buffered (page cache dropped)", report.sequential_read_mb_per_s,
                    report.io_threads, Double(report.parallel_read_bytes) / 1024, report.parallel_read_mb_per_s)
        s += String(format: "bound = the faster of the two (%.0f MB/s) ÷ bytes read from storage per token\n",
                    max(report.sequential_read_mb_per_s, report.parallel_read_mb_per_s))
        s += report.memory_limit_unavailable.map { "memory limits: none (\($0))\n" }
            ?? "memory limits: each budgeted row ran inside a cgroup-v1 limit equal to its budget, page cache dropped before each (PocketLM rows below its stated minimum run without one: they stop at that error)\n"
        // String(format:)'s %-7@ does not pad on Linux: cells are padded here.
        func cell(_ text: String, _ width: Int, left: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, width - text.count))
            return left ? text + fill : fill + text
        }
        func ratio(_ v: Double?) -> String { v.map { String(format: "%.2f", $0) } ?? "-" }
        let header = [("budget", 8, true), ("mode", 22, true), ("tok/s", 8, false), ("×naive", 7, false), ("×mmap", 6, false),
                      ("×llama", 7, false), ("ms/tok (io/mgmt/ffn/other)", 32, false), ("MiB rd/tok", 11, false),
                      ("bound", 7, false), ("share", 6, false), ("hit%", 5, false), ("peak MiB", 9, false), ("hits", 8, false),
                      ("=dense", 7, false), ("top1", 5, false), ("ppl", 8, false)]
        s += header.map { cell($0.0, $0.1, left: $0.2) }.joined(separator: " ") + "\n"
        for r in report.rows {
            let c = r.config
            if let e = r.error {
                s += cell(c.budgetLabel, 8, left: true) + " " + cell(c.name, 22, left: true) + " " + e + "\n"
                continue
            }
            let split = String(format: "%.1f (%.1f/%.1f/%.1f/%.1f)", r.ms_per_token, r.io_wait_ms, r.manage_ms, r.ffn_compute_ms, r.other_ms)
            let peak = Double(r.limit_peak_bytes ?? r.peak_rss_bytes) / 1_048_576
            let bound: String = r.storage_bound_tokens_per_second.map { String(format: "%.1f", $0) } ?? "-"
            let share: String = r.storage_share.map { String(format: "%.0f%%", $0 * 100) } ?? "-"
            let hits: String = r.limit_hits.map { String($0) } ?? "-"
            let same: String = r.tokens_equal_dense.map { $0 ? "yes" : "NO" } ?? "-"
            let top1: String = r.top1_agreement.map { String(format: "%.2f", $0) } ?? "-"
            let ppl: String = r.perplexity.map { String(format: "%.2f", $0) } ?? "-"
            var cells: [String] = [c.budgetLabel, c.name, String(format: "%.2f", r.tokens_per_second)]
            cells += [ratio(r.speedup_vs_naive), ratio(r.speedup_vs_mmap), ratio(r.speedup_vs_llama_cpp), split]
            cells += [String(format: "%.2f", r.storage_read_bytes_per_token / 1_048_576), bound, share]
            cells += [String(format: "%.0f", r.window_hit_rate * 100), String(format: "%.1f", peak), hits, same, top1, ppl]
            s += zip(cells, header).map { cell($0, $1.1, left: $1.2) }.joined(separator: " ") + "\n"
        }
        s += "peak MiB: the limit's peak charge during the decode (RSS where unlimited); hits: times the limit was reached\n"
        s += "probe patterns: " + report.parallel_patterns.map {
            String(format: "%d threads, %d layers queued %.0f MB/s", $0.threads, $0.layers_queued, $0.mb_per_s)
        }.joined(separator: "; ") + " (medians)\n"
        for r in report.rows where r.error == nil {
            guard let share = r.read_busy_share, let rate = r.read_mb_per_s_busy else { continue }
            s += String(format: "%@ %@: reads queued or running %.0f%% of the decode, at %.0f MB/s meanwhile\n",
                        r.config.budgetLabel, r.config.name, share * 100, rate)
        }
        return s
    }
}
