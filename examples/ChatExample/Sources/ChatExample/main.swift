import Foundation
import PocketLM

// Two turns of a conversation with a GGUF model: the second turn feeds only its own tokens (the KV cache holds the
// first). Usage: ChatExample MODEL.gguf [QUESTION]
let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    FileHandle.standardError.write(Data("usage: ChatExample MODEL.gguf [QUESTION]\n".utf8))
    exit(2)
}
do {
    let container = try ModelContainer(path: arguments[1])
    let session = ChatSession(container, systemPrompt: "You are a concise assistant.", sampling: .greedy)
    session.maxTokens = 32
    let question = arguments.count > 2 ? arguments[2] : "What is the capital of France?"
    print(try await session.respond(to: question))
    for try await chunk in session.stream(to: "And what is the capital of Italy?") {
        print(chunk.text, terminator: "")
    }
    print("\nreused from the KV cache: \(session.lastTurn?.reusedTokens ?? 0) tokens")
} catch {
    FileHandle.standardError.write(Data("ChatExample: \(error.localizedDescription)\n".utf8))
    exit(1)
}
