import ArgumentParser
import Foundation
import PocketLM

struct Tokenize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the token ids and pieces of a text.")

    @Option(help: "Path to a GGUF model file.") var model: String
    @Option(help: "The text to tokenize.") var text: String
    @Flag(help: "Parse special tokens such as <|im_start|> in the text.") var special = false
    @Flag(help: "Print JSON: {\"ids\": [...], \"pieces\": [...]}.") var json = false

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
            for (id, piece) in zip(ids, pieces) {
                Console.write(String(format: "%6d  ", id) + Inspect.quoted(piece) + "\n")
            }
            Console.error("\(ids.count) tokens")
        }
    }
}
