import Foundation
import PocketLM

/// weights-tools/reference/tokenizer-llamacpp.json: llama.cpp's ids, EOG sets and chat renderings, recorded by
/// weights-tools/record_tokenizer_refs.py (llama-cpp-python 0.3.36).
enum TokenizerReference {
    struct Case: Decodable {
        let text: String
        let ids: [Int]
        let ids_special: [Int]
    }

    struct Prompt: Decodable {
        let text: String
        let ids: [Int]
    }

    struct Vocabulary: Decodable {
        let name: String
        let file: String
        /// "cache" (the model cache) or "fixtures" (`make fixtures`).
        let `where`: String
        let pre: String
        let n_vocab: Int
        let add_bos: Bool
        let bos: Int
        let eos: Int
        let eog_ids: [Int]
        let cases: [Case]
        let prompts: [Prompt]
    }

    struct ChatMessageRecord: Decodable {
        let role: String
        let content: String
    }

    struct Chat: Decodable {
        let template_name: String
        let template: String
        let family: String?
        let conversation: String
        let messages: [ChatMessageRecord]
        let llama_cpp: String?
        let jinja: String?
    }

    struct File: Decodable {
        let llama_cpp_python: String
        let vocabularies: [Vocabulary]
        let chat: [Chat]
    }

    static let path = TestPaths.repoRoot.appendingPathComponent("weights-tools/reference/tokenizer-llamacpp.json")

    private static let loaded: Result<File, any Error> = Result {
        try JSONDecoder().decode(File.self, from: Data(contentsOf: path))
    }

    static func file() throws -> File { try loaded.get() }

    static func vocabulary(_ name: String) throws -> Vocabulary {
        guard let v = try file().vocabularies.first(where: { $0.name == name }) else {
            throw TestSetupError("\(path.path) has no vocabulary '\(name)': rerun weights-tools/record_tokenizer_refs.py")
        }
        return v
    }

    /// The GGUF a vocabulary record was made from.
    static func modelPath(_ v: Vocabulary) throws -> String {
        v.where == "fixtures" ? try TestPaths.fixture(v.file) : try TestPaths.model(v.file)
    }

    private static let tokenizers = TokenizerCache()

    /// The tokenizer of a vocabulary record's file, loaded once per test run.
    static func tokenizer(_ name: String) throws -> any Tokenizer {
        let v = try vocabulary(name)
        return try tokenizers.get(v.file) { try TokenizerLoader.load(from: GGUFFile(path: try modelPath(v))) }
    }
}

/// Tokenizers by file name, built once (a 262k vocabulary is worth sharing between tests).
final class TokenizerCache: @unchecked Sendable {
    private var cache: [String: any Tokenizer] = [:]
    private let lock = NSLock()

    func get(_ key: String, _ make: () throws -> any Tokenizer) throws -> any Tokenizer {
        lock.lock()
        defer { lock.unlock() }
        if let t = cache[key] { return t }
        let t = try make()
        cache[key] = t
        return t
    }
}
