import Foundation
import Testing
import PocketLM

/// What packing does to the file it writes and to the files around it, and inputs a budgeted load refuses: the
/// cases a user probing `pocketlm pack` and `run --memory-budget` found broken.
@Suite("Pack output and budgeted load inputs", .serialized)
struct PackOutputTests {
    /// A fresh, empty directory of this test run.
    static func directory(_ name: String) throws -> String {
        let dir = FlashPagingTests.scratch("pack-output-\(name)")
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func listing(_ dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
    }

    static func bytes(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

    @Test("a budgeted load with a context past the longest accepted is an error naming the context, not an arithmetic overflow")
    func hugeContextWithBudget() throws {
        let path = try FlashPagingTests.packed("tiny-q8_0.gguf")
        for context in [(1 << 20) + 1, Int.max / 2, Int.max] {
            let error = #expect(throws: ModelError.self) {
                try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: context, paging: PagingOptions(
                    mode: .flash, memoryBudget: 1 << 30)))
            }
            guard case .invalidConfig(let field, let reason)? = error else {
                Issue.record("context \(context): wrong error \(String(describing: error))")
                continue
            }
            #expect(field == "context" && reason.contains("1048576") && reason.contains("found \(context)"), "\(reason)")
        }
        // The longest accepted context still gets to the budget's own check (its KV cache is larger than the budget).
        #expect(throws: PagingError.self) {
            try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: 1 << 20, paging: PagingOptions(
                mode: .flash, memoryBudget: 64 << 20)))
        }
    }
}
