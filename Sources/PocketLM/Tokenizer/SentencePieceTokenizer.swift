/// SentencePiece BPE with byte fallback (`tokenizer.ggml.model = llama`), matching llama.cpp's SPM tokenizer
/// (`llm_tokenizer_spm_session` and the SPM branch of `llama_vocab::impl::tokenize`, src/llama-vocab.cpp).
///
/// Encoding: special tokens are cut out first (control and unknown tokens only with `parseSpecial`,
/// user-defined tokens always — for Gemma that includes its runs of spaces, tabs and newlines and its HTML tags).
/// Each remaining stretch gets a " " prefix when `add_space_prefix` is on and it is the first stretch or follows
/// a special token, has its spaces escaped to "▁", and starts as one symbol per UTF-8 character. The adjacent
/// pair whose concatenation is a vocabulary entry with the highest score (leftmost on ties) is merged until none
/// is left. A final symbol that is a vocabulary entry becomes that id; anything else falls back to one `<0xNN>`
/// token per byte.
///
/// Unlike sentencepiece itself, llama.cpp lets a merge form any vocabulary entry — control, byte and unused ones
/// too — and never splits an unused entry back into its parts; PocketLM does what llama.cpp does, since its ids
/// are the reference.
public struct SentencePieceTokenizer: Tokenizer {
    public let vocabularySize: Int
    public let bosTokenId: Int?
    public let eosTokenId: Int?
    public let unknownTokenId: Int?
    public let addBos: Bool
    /// Whether encoding prefixes a "▁" and decoding drops the first token's leading space
    /// (`tokenizer.ggml.add_space_prefix`, default true).
    public let addSpacePrefix: Bool
    public let stopTokenIds: Set<Int>

    private let vocabulary: Vocabulary
    private let scores: [Float]
    /// Every vocabulary string to its id (llama.cpp's `token_to_id`: any type, later duplicates win).
    private let table: PieceTable
    /// The token each byte value falls back to (`<0xNN>`, else the one-byte piece), or -1.
    private let byteTokens: [Int32]
    /// Tokens cut out of the text before merging, longest first.
    private let specials: SpecialTokens

    /// "▁" (U+2581), SentencePiece's escaped space.
    static let spaceMark: [UInt8] = [0xE2, 0x96, 0x81]

    /// Reads the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
    public init(gguf: GGUFFile) throws {
        func has(_ key: String) -> Bool { gguf.metadata[key] != nil }
        let optionalInt = gguf.optionalInt, optionalBool = gguf.optionalBool
        let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
        let scores = has("tokenizer.ggml.scores") ? try gguf.floatArray("tokenizer.ggml.scores") : nil
        let types = has("tokenizer.ggml.token_type") ? try gguf.intArray("tokenizer.ggml.token_type") : nil
        let eos = try optionalInt("tokenizer.ggml.eos_token_id") ?? 2
        let eot = try optionalInt("tokenizer.ggml.eot_token_id")
        try self.init(
            tokens: tokens, scores: scores, tokenTypes: types,
            bosTokenId: try optionalInt("tokenizer.ggml.bos_token_id") ?? 1,
            eosTokenId: eos,
            unknownTokenId: try optionalInt("tokenizer.ggml.unknown_token_id") ?? 0,
            eotTokenId: eot,
            addBos: try optionalBool("tokenizer.ggml.add_bos_token") ?? true,
            addSpacePrefix: try optionalBool("tokenizer.ggml.add_space_prefix") ?? true,
            specialIds: LlamaCppSpecialRules.MetadataIds(gguf: gguf, eos: eos, eot: eot, vocabularySize: tokens.count))
    }

    /// Builds a tokenizer from the vocabulary itself.
    ///
    /// - Parameters:
    ///   - tokens: vocabulary strings with "▁" for spaces and `<0xNN>` for byte tokens, indexed by id.
    ///   - scores: merge priority per id (higher merges first); nil means all zero.
    ///   - tokenTypes: GGUF token types per id; nil means all normal.
    ///   - bosTokenId, eosTokenId, unknownTokenId: llama.cpp's defaults are 1, 2 and 0; an id outside the
    ///     vocabulary is an error.
    public init(
        tokens: [String], scores: [Float]? = nil, tokenTypes: [Int]? = nil,
        bosTokenId: Int? = 1, eosTokenId: Int? = 2, unknownTokenId: Int? = 0, eotTokenId: Int? = nil,
        addBos: Bool = true, addSpacePrefix: Bool = true
    ) throws(TokenizerError) {
        try self.init(tokens: tokens, scores: scores, tokenTypes: tokenTypes, bosTokenId: bosTokenId,
                      eosTokenId: eosTokenId, unknownTokenId: unknownTokenId, eotTokenId: eotTokenId, addBos: addBos,
                      addSpacePrefix: addSpacePrefix, specialIds: .init(eos: eosTokenId, eot: eotTokenId))
    }

    init(
        tokens: [String], scores: [Float]?, tokenTypes: [Int]?, bosTokenId: Int?, eosTokenId: Int?,
        unknownTokenId: Int?, eotTokenId: Int?, addBos: Bool, addSpacePrefix: Bool,
        specialIds: LlamaCppSpecialRules.MetadataIds
    ) throws(TokenizerError) {
        let n = tokens.count
        var types = try Vocabulary.checkedTypes(tokens: tokens, tokenTypes: tokenTypes, ids: [
            "tokenizer.ggml.bos_token_id": bosTokenId, "tokenizer.ggml.eos_token_id": eosTokenId,
            "tokenizer.ggml.unknown_token_id": unknownTokenId, "tokenizer.ggml.eot_token_id": eotTokenId])
        let scores = scores ?? Array(repeating: 0, count: n)
        guard scores.count == n else {
            throw .invalidMetadata(key: "tokenizer.ggml.scores", reason: "has \(scores.count) entries for \(n) tokens")
        }

        let table = PieceTable(pieces: tokens)
        let stops = LlamaCppSpecialRules.apply(types: &types, ids: specialIds) { t in
            let id = table.id(t)
            return id >= 0 ? Int(id) : nil
        }

        // llama.cpp's `byte_to_token`: "<0xNN>", else the one-character piece.
        let hex = Array("0123456789ABCDEF".utf8)
        var byteTokens = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            let name: [UInt8] = [0x3C, 0x30, 0x78, hex[b >> 4], hex[b & 15], 0x3E]
            var id = name.withUnsafeBytes { table.id($0) }
            if id < 0 && b < 0x80 { id = [UInt8(b)].withUnsafeBytes { table.id($0) } }
            byteTokens[b] = id
        }


        let specials = SpecialTokens(pieces: tokens, types: types)

        self.vocabularySize = n
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.unknownTokenId = unknownTokenId
        self.addBos = addBos
        self.addSpacePrefix = addSpacePrefix
        self.stopTokenIds = stops
        self.vocabulary = Vocabulary(pieces: tokens, table: table, types: types, decodedBy: SentencePieceTokenizer.appendDecoded)
        self.scores = scores
        self.table = table
        self.byteTokens = byteTokens
        self.specials = specials
    }

    /// What a token decodes to, per llama.cpp's `token_to_piece` for SPM: normal tokens with "▁" as a space,
    /// byte tokens as their byte, control/unknown/user-defined tokens as their text, the rest empty.
    private static func appendDecoded(_ piece: String, type: TokenType, to out: inout [UInt8]) {
        switch type {
        case .normal:
            let u = Array(piece.utf8)
            var i = 0
            while i < u.count {
                if i + 2 < u.count && u[i] == 0xE2 && u[i + 1] == 0x96 && u[i + 2] == 0x81 {
                    out.append(0x20); i += 3
                } else {
                    out.append(u[i]); i += 1
                }
            }
        case .byte:
            // "<0xNN>"; anything else (a malformed vocabulary) decodes to nothing.
            let u = Array(piece.utf8)
            if u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E,
               let v = UInt8(String(decoding: u[3...4], as: UTF8.self), radix: 16) {
                out.append(v)
            }
        case .control, .unknown, .userDefined:
            out.append(contentsOf: piece.utf8)
        case .unused, .undefined:
            break
        }
    }

    // MARK: - Tokenizer

    public func piece(_ id: Int) -> String { vocabulary.piece(id) }

    public func isControl(_ id: Int) -> Bool { vocabulary.isControl(id) }

    /// The GGUF type of token `id` (`.undefined` outside the vocabulary).
    public func tokenType(_ id: Int) -> TokenType { vocabulary.tokenType(id) }

    /// The merge score of token `id` (0 outside the vocabulary).
    public func score(_ id: Int) -> Float {
        scores.indices.contains(id) ? scores[id] : 0
    }

    /// The id whose stored vocabulary string is exactly `piece`, if any.
    public func tokenId(forPiece piece: String) -> Int? {
        let id = table.id(piece)
        return id >= 0 ? Int(id) : nil
    }

    /// The token's bytes on its own; unlike `decode`, the leading space of a first token is kept (a streamed
    /// continuation needs it).
    public func tokenBytes(_ id: Int) -> [UInt8] { vocabulary.tokenBytes(id) }

    /// As llama.cpp's `detokenize`: with `addSpacePrefix`, one leading space of the first id's text is dropped
    /// (the one encoding added); nothing else is stripped.
    public func decode(_ ids: [Int], skipSpecial: Bool) -> String {
        vocabulary.decode(ids, skipSpecial: skipSpecial, dropLeadingSpace: addSpacePrefix)
    }

    /// Ids for `text`, never adding BOS (see the type's documentation for the algorithm).
    public func encode(_ text: String, parseSpecial: Bool) -> [Int] {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { return [] }
        var out: [Int] = []
        out.reserveCapacity(bytes.count / 2 + 4)
        var session = Session()
        var afterSpecial = true  // the first stretch gets the space prefix, as does every one after a special token
        for fragment in specials.partition(bytes, parseSpecial: parseSpecial) {
            switch fragment {
            case .token(let id):
                out.append(Int(id))
                afterSpecial = true
            case .text(let range):
                encodeStretch(bytes[range], spacePrefix: addSpacePrefix && afterSpecial, &session, into: &out)
                afterSpecial = false
            }
        }
        return out
    }

    // MARK: - Merging

    /// Per-call scratch buffers, reused across stretches.
    private struct Session {
        var text: [UInt8] = []
        var start: [Int32] = []
        var length: [Int32] = []
        var prev: [Int32] = []
        var next: [Int32] = []
        var queue = MergeQueue<Candidate>()
    }

    /// A mergeable adjacent pair; stale once either side's length has changed since it was queued.
    private struct Candidate: MergeCandidate {
        var score: Float
        var left: Int32
        var right: Int32
        var size: Int32

        /// Higher score first; on equal score the leftmost pair (llama.cpp's `llm_bigram_spm::comparator`).
        @inline(__always) static func before(_ a: Candidate, _ b: Candidate) -> Bool {
            a.score != b.score ? a.score > b.score : a.left < b.left
        }
    }

    private func encodeStretch(_ raw: ArraySlice<UInt8>, spacePrefix: Bool, _ s: inout Session,
                               into out: inout [Int]) {
        s.text.removeAll(keepingCapacity: true)
        if spacePrefix { s.text.append(contentsOf: SentencePieceTokenizer.spaceMark) }
        for b in raw {
            if b == 0x20 { s.text.append(contentsOf: SentencePieceTokenizer.spaceMark) } else { s.text.append(b) }
        }
        s.start.removeAll(keepingCapacity: true)
        s.length.removeAll(keepingCapacity: true)
        s.prev.removeAll(keepingCapacity: true)
        s.next.removeAll(keepingCapacity: true)
        s.queue.removeAll()

        // One symbol per UTF-8 character, its length from the lead byte as llama.cpp's `unicode_len_utf8`.
        var i = 0
        let total = s.text.count
        while i < total {
            let b = s.text[i]
            let len = b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4
            let n = min(len, total - i)
            s.prev.append(Int32(s.start.count - 1))
            s.start.append(Int32(i))
            s.length.append(Int32(n))
            i += n
            s.next.append(i < total ? Int32(s.start.count) : -1)
        }
        let count = s.start.count
        s.text.withUnsafeBytes { text in
            for k in 1..<max(count, 1) { pushPair(Int32(k - 1), Int32(k), text, &s) }

            while let top = s.queue.pop() {
                let l = Int(top.left), r = Int(top.right)
                guard s.length[l] > 0, s.length[r] > 0, s.length[l] + s.length[r] == top.size else { continue }
                s.length[l] += s.length[r]
                s.length[r] = 0
                s.next[l] = s.next[r]
                if s.next[r] >= 0 { s.prev[Int(s.next[r])] = Int32(l) }
                pushPair(s.prev[l], Int32(l), text, &s)
                pushPair(Int32(l), s.next[l], text, &s)
            }

            // llama.cpp's `resegment`: a symbol is a vocabulary entry (every merge formed one) or a single
            // character that is not, which becomes its bytes. (Its `rev_merge` branch is never reached: only
            // texts that are vocabulary entries are recorded there, and those are output directly.)
            var k = count > 0 ? 0 : -1
            while k >= 0 {
                let start = Int(s.start[k]), length = Int(s.length[k])
                let symbol = UnsafeRawBufferPointer(rebasing: text[start..<(start + length)])
                let id = table.id(symbol)
                if id >= 0 {
                    out.append(Int(id))
                } else if symbol.allSatisfy({ byteTokens[Int($0)] >= 0 }) {
                    for b in symbol { out.append(Int(byteTokens[Int(b)])) }
                } else if let unknownTokenId {
                    // No byte token for it (a vocabulary without byte fallback, where llama.cpp's lookup throws):
                    // one <unk> for the character, as sentencepiece does.
                    out.append(unknownTokenId)
                }
                k = Int(s.next[k])
            }
        }
    }

    @inline(__always) private func pushPair(_ l: Int32, _ r: Int32, _ text: UnsafeRawBufferPointer,
                                            _ s: inout Session) {
        guard l >= 0, r >= 0 else { return }
        let start = Int(s.start[Int(l)])
        let size = s.length[Int(l)] + s.length[Int(r)]
        let id = table.id(UnsafeRawBufferPointer(rebasing: text[start..<(start + Int(size))]))
        guard id >= 0 else { return }
        s.queue.push(Candidate(score: scores[Int(id)], left: l, right: r, size: size))
    }
}
