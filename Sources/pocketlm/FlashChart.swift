import Foundation

/// tok/s against budget, one line per configuration family.
enum FlashChart {
    static func svg(_ report: BenchFlash.Report) -> String {
        let width = 760, height = 440, left = 70, right = 230, top = 70, bottom = 60
        let rows = report.rows.filter { $0.error == nil && $0.config.budget != nil }
        var series: [String: [(Double, Double)]] = [:]
        for r in rows {
            let key = r.config.name
            series[key, default: []].append((Double(r.config.budget!) / Double(report.file_bytes) * 100, r.tokens_per_second))
        }
        let maxX = max(100, rows.map { Double($0.config.budget!) / Double(report.file_bytes) * 100 }.max() ?? 100)
        let maxY = max(1, (report.rows.map(\.tokens_per_second).max() ?? 1) * 1.1)
        func px(_ x: Double) -> Int { left + Int(x / maxX * Double(width - left - right)) }
        func py(_ y: Double) -> Int { height - bottom - Int(y / maxY * Double(height - top - bottom)) }
        let colors = ["#1f5fa8", "#d9534f", "#5cb85c", "#f0ad4e", "#6f42c1", "#17a2b8", "#795548", "#e83e8c", "#20c997", "#343a40"]
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="10" y="22" font-size="15" font-weight="bold">Flash paging: tok/s against memory budget</text>
        <text x="10" y="40" fill="#555">\(URL(fileURLWithPath: report.model).lastPathComponent), \(report.threads) threads, \(report.io_threads) I/O threads</text>
        <line x1="\(left)" y1="\(height - bottom)" x2="\(width - right)" y2="\(height - bottom)" stroke="black"/>
        <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(height - bottom)" stroke="black"/>
        <text x="\((left + width - right) / 2 - 60)" y="\(height - 20)">budget (% of the file)</text>
        <text x="12" y="\(top - 10)">tok/s</text>

        """
        for i in 0...4 {
            let x = maxX * Double(i) / 4, y = maxY * Double(i) / 4
            svg += "<text x=\"\(px(x) - 10)\" y=\"\(height - bottom + 16)\">\(Int(x))</text>\n"
            svg += "<text x=\"\(left - 40)\" y=\"\(py(y) + 4)\">\(String(format: "%.1f", y))</text>\n"
        }
        for (i, key) in series.keys.sorted().enumerated() {
            let pts = series[key]!.sorted { $0.0 < $1.0 }
            let color = colors[i % colors.count]
            let path = pts.map { "\(px($0.0)),\(py($0.1))" }.joined(separator: " ")
            svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
            for p in pts { svg += "<circle cx=\"\(px(p.0))\" cy=\"\(py(p.1))\" r=\"3\" fill=\"\(color)\"/>\n" }
            svg += "<text x=\"\(width - right + 10)\" y=\"\(top + 16 * i)\" fill=\"\(color)\">\(key)</text>\n"
        }
        if let dense = report.rows.first(where: { $0.config.mode == "resident" && $0.error == nil }) {
            svg += "<line x1=\"\(left)\" y1=\"\(py(dense.tokens_per_second))\" x2=\"\(width - right)\" y2=\"\(py(dense.tokens_per_second))\" stroke=\"#999\" stroke-dasharray=\"4\"/>\n"
            svg += "<text x=\"\(left + 6)\" y=\"\(py(dense.tokens_per_second) - 4)\" fill=\"#777\">all in memory</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }
}
