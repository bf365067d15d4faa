/// A tokenizer's vocabulary: every id's stored string, its GGUF token type, and the bytes it decodes to (what
/// llama.cpp's `token_to_piece` gives). The tokenizer kinds share it; they differ in how they split and merge
/// text, and in how a stored string decodes (`decodedBy`).
struct Vocabulary: Sendable {
    /// The stored strings, indexed by id, as the tokenizer's lookup table holds them (the same arrays, not a copy:
    /// a `[String]` beside it cost 2.4 MiB more for a 151,936-token vocabulary).
    let pieces: PieceTable
    /// GGUF token types, after llama.cpp's special-token rules (`LlamaCppSpecialRules`).
    let types: [TokenType]
    /// Decoded bytes of every token, concatenated; token `i` is `decodedBytes[decodedStart[i]..<decodedStart[i+1]]`.
    private let decodedBytes: [UInt8]
    private let decodedStart: [Int32]

    var count: Int { pieces.count }

    /// The token types a vocabulary of `tokens` declares (all normal when `tokenTypes` is nil), after checking the
    /// metadata agrees with itself: a non-empty vocabulary, a type per token, and each named id inside it.
    static func checkedTypes(tokens: [String], tokenTypes: [Int]?, ids: KeyValuePairs<String, Int?>) throws(TokenizerError) -> [TokenType] {
        let n = tokens.count
        guard n > 0 else { throw .invalidMetadata(key: "tokenizer.ggml.tokens", reason: "the vocabulary is empty") }
        guard n < Int(Int32.max) / 2 else {
            throw .invalidMetadata(key: "tokenizer.ggml.tokens", reason: "\(n) tokens is more than PocketLM supports")
        }
        let types = tokenTypes.map { $0.map(TokenType.init(gguf:)) } ?? Array(repeating: .normal, count: n)
        guard types.count == n else {
            throw .invalidMetadata(key: "tokenizer.ggml.token_type", reason: "has \(types.count) entries for \(n) tokens")
        }
        for (key, id) in ids {
            if let id, !(0..<n).contains(id) { throw .tokenIdOutOfRange(key: key, id: id, vocabularySize: n) }
        }
        return types
    }

    /// `decodedBy` appends what one stored string of a given type decodes to; `table` holds `pieces`.
    init(pieces: [String], table: PieceTable, types: [TokenType], decodedBy appendDecoded: (String, TokenType, inout [UInt8]) -> Void) {
        precondition(table.count == pieces.count, "the piece table holds another vocabulary")
        var bytes: [UInt8] = []
        var start: [Int32] = [0]
        bytes.reserveCapacity(pieces.count * 6)
        start.reserveCapacity(pieces.count + 1)
        for (i, p) in pieces.enumerated() {
            appendDecoded(p, types[i], &bytes)
            start.append(Int32(bytes.count))
        }
        self.pieces = table
        self.types = types
        decodedBytes = bytes
        decodedStart = start
    }

    func piece(_ id: Int) -> String {
        id >= 0 && id < count ? String(decoding: pieces.utf8(id), as: UTF8.self) : ""
    }

    func isControl(_ id: Int) -> Bool {
        types.indices.contains(id) && types[id] == .control
    }

    /// The GGUF type of token `id` (`.undefined` outside the vocabulary).
    func tokenType(_ id: Int) -> TokenType {
        types.indices.contains(id) ? types[id] : .undefined
    }

    func tokenBytes(_ id: Int) -> [UInt8] {
        guard id >= 0, id < count else { return [] }
        return Array(decodedBytes[Int(decodedStart[id])..<Int(decodedStart[id + 1])])
    }

    /// The text of `ids` (ids outside the vocabulary contribute nothing; with `skipSpecial`, neither do control
    /// and unknown tokens). `dropLeadingSpace`: one leading space of the first id's text is dropped.
    func decode(_ ids: [Int], skipSpecial: Bool, dropLeadingSpace: Bool = false) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for (k, id) in ids.enumerated() where id >= 0 && id < count {
            if skipSpecial && (types[id] == .control || types[id] == .unknown) { continue }
            var start = Int(decodedStart[id])
            let end = Int(decodedStart[id + 1])
            if k == 0 && dropLeadingSpace && start < end && decodedBytes[start] == 0x20 { start += 1 }
            bytes.append(contentsOf: decodedBytes[start..<end])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension GGUFFile {
    /// The integer at `key`, nil when the key is absent (an error when it has another type).
    func optionalInt(_ key: String) throws -> Int? { metadata[key] != nil ? try int(key) : nil }

    /// The bool at `key`, nil when the key is absent (an error when it has another type).
    func optionalBool(_ key: String) throws -> Bool? {
        guard let v = metadata[key] else { return nil }
        guard let b = v.bool else { throw GGUFError.badMetadata(key: key, reason: "expected a bool, found \(v.typeName)") }
        return b
    }
}
