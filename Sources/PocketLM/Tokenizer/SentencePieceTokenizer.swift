/// SentencePiece BPE with byte fallback (`tokenizer.ggml.model = llama`), matching llama.cpp's
/// `llm_tokenizer_spm` and sentencepiece's own `bpe_model.cc`.
///
/// Encoding: special tokens are cut out first (control and unknown tokens only with `parseSpecial`,
/// user-defined tokens always). Each remaining stretch has its spaces escaped to "▁", gets a "▁" prefix when
/// `add_space_prefix` is on and it is the first stretch or follows a special token (llama.cpp's rule), and
/// starts as one symbol per UTF-8 character. The adjacent pair whose concatenation is a vocabulary entry with
/// the highest score (leftmost on ties) is merged until none is left. A final symbol that is a vocabulary entry
/// becomes that id; an unused entry is split back into the two symbols it was merged from (sentencepiece's
/// resegmentation); anything else falls back to one `<0xNN>` token per byte (or, in a vocabulary without byte
/// tokens, to one unknown token).
///
/// Merges only form normal, user-defined and unused entries (sentencepiece's `pieces_`): text that spells a
/// control or byte token, e.g. "<s>", is never merged into it.
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

    private let pieces: [String]
    private let types: [TokenType]
    private let scores: [Float]
    /// Decoded bytes of every token, concatenated; token `i` is `decodedBytes[decodedStart[i]..<decodedStart[i+1]]`.
    private let decodedBytes: [UInt8]
    private let decodedStart: [Int32]
    /// UTF-8 of the entries merges may form (normal, user-defined, unused) to their ids.
    private let mergeable: [ArraySlice<UInt8>: Int32]
    /// Every vocabulary string to its id (later duplicates win, as in llama.cpp).
    private let pieceIds: [String: Int32]
    /// The token each byte value falls back to (`<0xNN>`, else the one-byte piece), or -1.
    private let byteTokens: [Int32]
    /// Tokens cut out of the text before merging, longest first.
    private let specials: SpecialTokens

    /// "▁" (U+2581), SentencePiece's escaped space.
    static let spaceMark: [UInt8] = [0xE2, 0x96, 0x81]

    /// Reads the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
    public init(gguf: GGUFFile) throws {
        func has(_ key: String) -> Bool { gguf.metadata[key] != nil }
        func optionalInt(_ key: String) throws -> Int? { has(key) ? try gguf.int(key) : nil }
        func optionalBool(_ key: String) throws -> Bool? {
            guard let v = gguf.metadata[key] else { return nil }
            guard let b = v.bool else {
                throw GGUFError.badMetadata(key: key, reason: "expected a bool, found \(v.typeName)")
            }
            return b
        }
        let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
        let scores = has("tokenizer.ggml.scores") ? try gguf.floatArray("tokenizer.ggml.scores") : nil
        let types = has("tokenizer.ggml.token_type") ? try gguf.intArray("tokenizer.ggml.token_type") : nil
        try self.init(
            tokens: tokens, scores: scores, tokenTypes: types,
            bosTokenId: try optionalInt("tokenizer.ggml.bos_token_id") ?? 1,
            eosTokenId: try optionalInt("tokenizer.ggml.eos_token_id") ?? 2,
            unknownTokenId: try optionalInt("tokenizer.ggml.unknown_token_id") ?? 0,
            eotTokenId: try optionalInt("tokenizer.ggml.eot_token_id"),
            addBos: try optionalBool("tokenizer.ggml.add_bos_token") ?? true,
            addSpacePrefix: try optionalBool("tokenizer.ggml.add_space_prefix") ?? true)
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
        let n = tokens.count
        guard n > 0 else { throw .invalidMetadata(key: "tokenizer.ggml.tokens", reason: "the vocabulary is empty") }
        guard n < Int(Int32.max) / 2 else {
            throw .invalidMetadata(key: "tokenizer.ggml.tokens", reason: "\(n) tokens is more than PocketLM supports")
        }
        let types = tokenTypes.map { $0.map(TokenType.init(gguf:)) } ?? Array(repeating: .normal, count: n)
        guard types.count == n else {
            throw .invalidMetadata(key: "tokenizer.ggml.token_type", reason: "has \(types.count) entries for \(n) tokens")
        }
        let scores = scores ?? Array(repeating: 0, count: n)
        guard scores.count == n else {
            throw .invalidMetadata(key: "tokenizer.ggml.scores", reason: "has \(scores.count) entries for \(n) tokens")
        }
        for (key, id) in [("tokenizer.ggml.bos_token_id", bosTokenId), ("tokenizer.ggml.eos_token_id", eosTokenId),
                          ("tokenizer.ggml.unknown_token_id", unknownTokenId),
                          ("tokenizer.ggml.eot_token_id", eotTokenId)] {
            if let id, !(0..<n).contains(id) { throw .tokenIdOutOfRange(key: key, id: id, vocabularySize: n) }
        }

        var pieceIds: [String: Int32] = [:]
        pieceIds.reserveCapacity(n)
        var mergeable: [ArraySlice<UInt8>: Int32] = [:]
        mergeable.reserveCapacity(n)
        for (i, t) in tokens.enumerated() {
            pieceIds[t] = Int32(i)
            switch types[i] {
            case .normal, .userDefined, .unused:
                // The first of duplicate entries wins here, as in sentencepiece (duplicates are rejected there).
                if mergeable[ArraySlice(t.utf8)] == nil { mergeable[ArraySlice(t.utf8)] = Int32(i) }
            default: break
            }
        }

        let hex = Array("0123456789ABCDEF".utf8)
        var byteTokens = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            let name = String(decoding: [0x3C, 0x30, 0x78, hex[b >> 4], hex[b & 15], 0x3E], as: UTF8.self)
            if let id = pieceIds[name] {
                byteTokens[b] = id
            } else if b < 0x80, let id = pieceIds[String(UnicodeScalar(UInt8(b)))] {
                byteTokens[b] = id
            }
        }

        var decodedBytes: [UInt8] = []
        var decodedStart: [Int32] = [0]
        decodedBytes.reserveCapacity(n * 6)
        decodedStart.reserveCapacity(n + 1)
        for (i, t) in tokens.enumerated() {
            SentencePieceTokenizer.appendDecoded(t, type: types[i], to: &decodedBytes)
            decodedStart.append(Int32(decodedBytes.count))
        }

        let specials = SpecialTokens(pieces: tokens, types: types)

        var stops: Set<Int> = []
        if let eosTokenId { stops.insert(eosTokenId) }
        if let eotTokenId { stops.insert(eotTokenId) }
        for p in BPETokenizer.endOfTurnPieces {
            if let id = pieceIds[p] { stops.insert(Int(id)) }
        }

        self.vocabularySize = n
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.unknownTokenId = unknownTokenId
        self.addBos = addBos
        self.addSpacePrefix = addSpacePrefix
        self.stopTokenIds = stops
        self.pieces = tokens
        self.types = types
        self.scores = scores
        self.decodedBytes = decodedBytes
        self.decodedStart = decodedStart
        self.mergeable = mergeable
        self.pieceIds = pieceIds
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

    public func piece(_ id: Int) -> String {
        pieces.indices.contains(id) ? pieces[id] : ""
    }

    public func isControl(_ id: Int) -> Bool {
        types.indices.contains(id) && types[id] == .control
    }

    /// The GGUF type of token `id` (`.undefined` outside the vocabulary).
    public func tokenType(_ id: Int) -> TokenType {
        types.indices.contains(id) ? types[id] : .undefined
    }

    /// The merge score of token `id` (0 outside the vocabulary).
    public func score(_ id: Int) -> Float {
        scores.indices.contains(id) ? scores[id] : 0
    }

    /// The id whose stored vocabulary string is exactly `piece`, if any.
    public func tokenId(forPiece piece: String) -> Int? {
        pieceIds[piece].map(Int.init)
    }

    /// The token's bytes on its own; unlike `decode`, the leading space of a first token is kept (a streamed
    /// continuation needs it).
    public func tokenBytes(_ id: Int) -> [UInt8] {
        guard id >= 0, id < vocabularySize else { return [] }
        return Array(decodedBytes[Int(decodedStart[id])..<Int(decodedStart[id + 1])])
    }

    /// As llama.cpp's `detokenize`: with `addSpacePrefix`, one leading space of the first id's text is dropped
    /// (the one encoding added); nothing else is stripped.
    public func decode(_ ids: [Int], skipSpecial: Bool) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for (k, id) in ids.enumerated() where id >= 0 && id < vocabularySize {
            if skipSpecial && (types[id] == .control || types[id] == .unknown) { continue }
            var start = Int(decodedStart[id])
            let end = Int(decodedStart[id + 1])
            if k == 0 && addSpacePrefix && start < end && decodedBytes[start] == 0x20 { start += 1 }
            bytes.append(contentsOf: decodedBytes[start..<end])
        }
        return String(decoding: bytes, as: UTF8.self)
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
        var start: [Int] = []
        var length: [Int] = []
        var prev: [Int] = []
        var next: [Int] = []
        var queue = MergeQueue<Candidate>()
        /// Each unused entry a merge formed, to the byte length of its left part (sentencepiece's `rev_merge`).
        var revMerge: [ArraySlice<UInt8>: Int] = [:]
    }

    /// A mergeable adjacent pair; stale once either side's length has changed since it was queued.
    private struct Candidate: MergeCandidate {
        var score: Float
        var left: Int
        var right: Int
        var size: Int

        /// Higher score first; on equal score the leftmost pair (sentencepiece's and llama.cpp's queue order).
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
        s.revMerge.removeAll(keepingCapacity: true)

        // One symbol per UTF-8 character (the stretch ends are character boundaries of a Swift String).
        var i = 0
        let total = s.text.count
        while i < total {
            let b = s.text[i]
            let len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4
            let n = min(len, total - i)
            s.prev.append(s.start.count - 1)
            s.start.append(i)
            s.length.append(n)
            i += n
            s.next.append(i < total ? s.start.count : -1)
        }
        let count = s.start.count
        for k in 1..<max(count, 1) { pushPair(k - 1, k, &s) }

        while let top = s.queue.pop() {
            let l = top.left, r = top.right
            guard s.length[l] > 0, s.length[r] > 0, s.length[l] + s.length[r] == top.size else { continue }
            s.length[l] += s.length[r]
            s.length[r] = 0
            s.next[l] = s.next[r]
            if s.next[r] >= 0 { s.prev[s.next[r]] = l }
            pushPair(s.prev[l], l, &s)
            pushPair(l, s.next[l], &s)
        }

        var k = count > 0 ? 0 : -1
        while k >= 0 {
            resegment(s.start[k], s.length[k], &s, into: &out)
            k = s.next[k]
        }
    }

    private func resegment(_ start: Int, _ length: Int, _ s: inout Session, into out: inout [Int]) {
        let text = s.text[start..<(start + length)]
        if let id = mergeable[text] {
            if types[Int(id)] == .unused, let split = s.revMerge[text], split > 0, split < length {
                resegment(start, split, &s, into: &out)
                resegment(start + split, length - split, &s, into: &out)
            } else {
                out.append(Int(id))
            }
            return
        }
        if text.allSatisfy({ byteTokens[Int($0)] >= 0 }) {
            for b in text { out.append(Int(byteTokens[Int(b)])) }
        } else if let unknownTokenId {
            // No byte tokens for it (a vocabulary without byte fallback): one <unk> for the symbol, as sentencepiece.
            out.append(unknownTokenId)
        }
    }

    @inline(__always) private func pushPair(_ l: Int, _ r: Int, _ s: inout Session) {
        guard l >= 0, r >= 0 else { return }
        let size = s.length[l] + s.length[r]
        let slice = s.text[s.start[l]..<(s.start[l] + size)]
        guard let id = mergeable[slice] else { return }
        if types[Int(id)] == .unused { s.revMerge[slice] = s.length[l] }
        let c = Candidate(score: scores[Int(id)], left: l, right: r, size: size)
        s.queue.push(c)
    }
}
