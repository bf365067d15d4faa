import ArgumentParser
import Foundation
import PocketLM

struct Tokenize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the token ids and pieces of a text.")

    @Option(help: "Path to a GGUF model file.") var model: String
    @Option(help: "The text to tokenize.") var text: String
    @Flag(help: "Parse special tokens such as <|im_start|> in the text.") var special = false
    @Flag(help: "Print JSON: {\"ids\": [...], \"pieces\": [...]}.") var json = false

    /// The token's text, or its bytes as \xNN where they are only part of a UTF-8 character.
    static func display(_ bytes: [UInt8]) -> String {
        if let s = String(validating: bytes, as: UTF8.self) { return Inspect.quoted(s) }
        return "'" + bytes.map { String(format: "\\x%02X", $0) }.joined() + "'"
    }

    func run() async throws {
        let file = try GGUFFile(path: model)
        let tokenizer = try TokenizerLoader.load(from: file)
        var ids: [Int] = []
        if tokenizer.addBos, let bos = tokenizer.bosTokenId { ids.append(bos) }
        ids += tokenizer.encode(text, parseSpecial: special)
        let pieces = ids.map { String(decoding: tokenizer.tokenBytes($0), as: UTF8.self) }
        if json {
            struct Out: Encodable { let ids: [Int]; let pieces: [String] }
            try Console.json(Out(ids: ids, pieces: pieces))
        } else {
            for id in ids {
                Console.write(String(format: "%6d  ", id) + Self.display(tokenizer.tokenBytes(id)) + "\n")
            }
            Console.error("\(ids.count) tokens")
        }
    }
}
