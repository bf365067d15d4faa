import Foundation
import PocketLM
import Testing

/// The README's ChatSession example, compiled and run: the lines between the markers below must be the README's
/// `swift` block under "chat, and PocketLM in an app", line for line.
@Suite("README chat example", .serialized)
struct ReadmeChatExampleTests {
    @Test("the README's ModelContainer + ChatSession example runs and matches this copy")
    func example() async throws {
        let modelPath = try TestPaths.model("SmolLM2-135M-Instruct.Q4_1.gguf")
        // README example begin
        let container = try ModelContainer(path: modelPath)
        let session = ChatSession(container, systemPrompt: "You are a concise assistant.", sampling: .greedy)
        let answer = try await session.respond(to: "What is the capital of France?")
        print(answer)
        for try await chunk in session.stream(to: "And what is the capital of Italy?") {
            print(chunk.text, terminator: "")   // chunk.tokenIds, chunk.elapsed; the last chunk has chunk.stats
        }
        print("\n\(session.lastTurn!.reusedTokens) tokens of the conversation came from the KV cache")
        // README example end
        #expect(answer.contains("Paris"))
        #expect(session.messages.count == 4)
        #expect(session.messages[3].content.contains("Rome"))
        let turn = try #require(session.lastTurn)
        #expect(turn.reusedTokens > 0 && turn.prefilledTokens < 25)

        let source = try String(contentsOfFile: #filePath, encoding: .utf8)
        let readme = try String(contentsOf: TestPaths.repoRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let here = Self.lines(source, from: "// README example begin", to: "// README example end")
        let section = try #require(readme.range(of: "### chat, and PocketLM in an app"))
        let there = Self.lines(String(readme[section.upperBound...]), from: "```swift", to: "```")
        #expect(!here.isEmpty)
        #expect(here == there)
    }

    /// The lines strictly between the first `start` line and the next `end` line, without common indentation.
    static func lines(_ text: String, from start: String, to end: String) -> [String] {
        let all = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let a = all.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces) == start }),
              let b = all[(a + 1)...].firstIndex(where: { $0.trimmingCharacters(in: .whitespaces) == end }) else { return [] }
        let body = Array(all[(a + 1)..<b])
        let indent = body.filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            .map { $0.prefix { $0 == " " }.count }.min() ?? 0
        return body.map { String($0.dropFirst(indent)) }
    }
}
