import Foundation
import Testing

/// The library is embedded by apps, which have no command line: its messages must not tell a user to pass a flag,
/// and it must not re-execute the process it runs in. Reads the library's sources (Sources/PocketLM).
@Suite("library boundary")
struct LibraryBoundaryTests {
    static func librarySources() throws -> [(path: String, text: String)] {
        let root = TestPaths.repoRoot.appendingPathComponent("Sources/PocketLM")
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil) else {
            throw CocoaError(.fileReadNoSuchFile)
        }
        var files: [(String, String)] = []
        for case let url as URL in walker where url.pathExtension == "swift" {
            files.append((url.path, try String(contentsOf: url, encoding: .utf8)))
        }
        return files
    }

    @Test("no string literal in the library names a command-line flag, and nothing calls exec")
    func noCLIConcerns() throws {
        let files = try Self.librarySources()
        #expect(files.count > 50, "found only \(files.count) library sources under \(TestPaths.repoRoot.path)")
        // A flag inside a string literal: a quote, then anything but a quote, then `--` and a lowercase word.
        let flag = try Regex(#""[^"\n]*--[a-z][a-z-]+"#)
        var offenders: [String] = []
        for (path, text) in files {
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.trimmingCharacters(in: .whitespaces)
                if code.hasPrefix("//") { continue }
                if line.contains(flag) || line.contains("execv(") || line.contains("execve(") {
                    offenders.append("\(path):\(n + 1): \(code)")
                }
            }
        }
        #expect(offenders.isEmpty, "CLI concerns in the library:\n\(offenders.joined(separator: "\n"))")
    }
}
