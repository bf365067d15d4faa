import Foundation

/// Small SVG bar charts for the comparison commands: a file a browser opens, no dependencies.
enum SVGChart {
    static func sharing(_ report: CompareSharing.Report) -> String {
        let rows = report.rows
        let width = 760, barHeight = 22, gap = 14, left = 290, top = 60
        let height = top + rows.count * (2 * barHeight + gap) + 50
        let maxSpeed = max(1, rows.map { max($0.decode_tokens_per_second, $0.prefill_tokens_per_second) }.max() ?? 1)
        let scale = Double(width - left - 80) / maxSpeed
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" font-family="sans-serif" font-size="13">
        <rect width="100%" height="100%" fill="white"/>
        <text x="10" y="22" font-size="16" font-weight="bold">Layer sharing: \(esc(report.model))</text>
        <text x="10" y="42" fill="#555">\(report.blocks) blocks, \(report.threads) threads; bars: decode (dark) and prefill (light) tokens/s</text>

        """
        for (i, r) in rows.enumerated() {
            let y = top + i * (2 * barHeight + gap)
            let decode = Int(r.decode_tokens_per_second * scale), prefill = Int(r.prefill_tokens_per_second * scale)
            var label = "\(r.name) (\(r.effective_layers) layers)"
            if let p = r.perplexity { label += String(format: ", ppl %.2f", p) }
            svg += """
            <text x="10" y="\(y + barHeight + 4)">\(esc(label))</text>
            <rect x="\(left)" y="\(y)" width="\(decode)" height="\(barHeight - 2)" fill="#1f5fa8"/>
            <text x="\(left + decode + 6)" y="\(y + 15)">\(String(format: "%.1f", r.decode_tokens_per_second))</text>
            <rect x="\(left)" y="\(y + barHeight)" width="\(prefill)" height="\(barHeight - 2)" fill="#9cc3ea"/>
            <text x="\(left + prefill + 6)" y="\(y + barHeight + 15)">\(String(format: "%.1f", r.prefill_tokens_per_second))</text>

            """
        }
        svg += "</svg>\n"
        return svg
    }
}
