#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// GPT-2-style byte-level BPE (`tokenizer.ggml.model = gpt2`), matching llama.cpp's `llm_tokenizer_bpe`.
///
/// Encoding: special tokens are cut out first (see `encode`), each remaining stretch is split by the
/// `PreTokenizer`, and every piece's UTF-8 bytes start as one symbol per byte; the adjacent pair with the lowest
/// merge rank (leftmost on ties) is merged until no listed pair is left.
///
/// Speed: symbols are token ids, not strings — merges are a dictionary from an (id, id) pair to (rank, merged
/// id) built once, looking their strings up by bytes in a `PieceTable` (String-keyed dictionaries, which hash
/// Unicode-normalised text, were most of a SmolLM2 load's tokenizer time) — and each distinct piece is merged once
/// per `encode` call (prose repeats its words a lot).
/// A merge whose result is not a vocabulary entry still takes part, under an id past the vocabulary, because
/// llama.cpp merges strings and only looks the final symbols up; such a symbol left at the end falls back to
/// its single-character tokens exactly as llama.cpp does.
public struct BPETokenizer: Tokenizer {
    public let vocabularySize: Int
    public let bosTokenId: Int?
    public let eosTokenId: Int?
    public let addBos: Bool
    public let stopTokenIds: Set<Int>
    /// How text is split before merging (from `tokenizer.ggml.pre`).
    public let preTokenizer: PreTokenizer
    /// llama.cpp's `ignore_merges` (Llama 3): a piece that is itself a vocabulary entry becomes that token
    /// without merging.
    public let ignoresMerges: Bool

    private let vocabulary: Vocabulary
    /// Vocabulary strings to ids, by their exact bytes (llama.cpp's `token_to_id`).
    private let pieceIds: PieceTable
    /// UTF-8 of the merge-only ids (strings the merges produce that are not vocabulary entries), indexed by
    /// `id - vocabularySize`.
    private let extraSymbols: [[UInt8]]
    /// The starting symbol of each byte value.
    private let byteSymbols: [Int32]
    /// `left << 32 | right` → `rank << 32 | merged`.
    private let mergeTable: [UInt64: UInt64]
    /// Vocabulary id of each single ASCII character, or -1: the fallback for merge-only symbols.
    private let asciiTokens: [Int32]
    /// Tokens cut out of the text before pre-tokenisation, longest first.
    private let specials: SpecialTokens

    /// Reads the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
    public init(gguf: GGUFFile) throws {
        func has(_ key: String) -> Bool { gguf.metadata[key] != nil }
        let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
        let types = has("tokenizer.ggml.token_type") ? try gguf.intArray("tokenizer.ggml.token_type") : nil
        let merges = try gguf.stringArray("tokenizer.ggml.merges")
        let pre = has("tokenizer.ggml.pre") ? try gguf.string("tokenizer.ggml.pre") : nil
        let eos = try gguf.optionalInt("tokenizer.ggml.eos_token_id")
        let eot = try gguf.optionalInt("tokenizer.ggml.eot_token_id")
        try self.init(
            tokens: tokens, tokenTypes: types, merges: merges, preTokenizer: try PreTokenizer(preName: pre),
            bosTokenId: try gguf.optionalInt("tokenizer.ggml.bos_token_id"), eosTokenId: eos, eotTokenId: eot,
            addBos: try gguf.optionalBool("tokenizer.ggml.add_bos_token"),
            specialIds: LlamaCppSpecialRules.MetadataIds(gguf: gguf, eos: eos, eot: eot, vocabularySize: tokens.count))
    }

    /// Builds a tokenizer from the vocabulary itself.
    ///
    /// - Parameters:
    ///   - tokens: vocabulary strings in byte-level spelling (" the" is "Ġthe"), indexed by id.
    ///   - tokenTypes: GGUF token types per id; nil means all normal.
    ///   - merges: merge rules "left right", highest priority first. A line without a separating space, or a
    ///     repeat of an earlier pair, is ignored (as llama.cpp does).
    ///   - addBos: nil picks the family default: true for Llama 3 splitting, false otherwise (llama.cpp's choice).
    public init(
        tokens: [String], tokenTypes: [Int]? = nil, merges: [String], preTokenizer: PreTokenizer,
        bosTokenId: Int? = nil, eosTokenId: Int? = nil, eotTokenId: Int? = nil, addBos: Bool? = nil
    ) throws(TokenizerError) {
        try self.init(tokens: tokens, tokenTypes: tokenTypes, merges: merges, preTokenizer: preTokenizer,
                      bosTokenId: bosTokenId, eosTokenId: eosTokenId, eotTokenId: eotTokenId, addBos: addBos,
                      specialIds: .init(eos: eosTokenId, eot: eotTokenId))
    }

    init(
        tokens: [String], tokenTypes: [Int]?, merges: [String], preTokenizer: PreTokenizer,
        bosTokenId: Int?, eosTokenId: Int?, eotTokenId: Int?, addBos: Bool?,
        specialIds: LlamaCppSpecialRules.MetadataIds
    ) throws(TokenizerError) {
        let n = tokens.count
        var types = try Vocabulary.checkedTypes(tokens: tokens, tokenTypes: tokenTypes, ids: [
            "tokenizer.ggml.bos_token_id": bosTokenId, "tokenizer.ggml.eos_token_id": eosTokenId,
            "tokenizer.ggml.eot_token_id": eotTokenId])

        // Later duplicates win, as in llama.cpp's `token_to_id`.
        let pieceIds = PieceTable(pieces: tokens)
        let stops = LlamaCppSpecialRules.apply(types: &types, ids: specialIds) { t in
            let id = pieceIds.id(t)
            return id >= 0 ? Int(id) : nil
        }

        // Merge-only strings get ids past the vocabulary (rare: a well-formed file's merges make vocabulary entries).
        var extraSymbols: [[UInt8]] = []
        var extraIds: [[UInt8]: Int32] = [:]
        func symbol(_ bytes: UnsafeRawBufferPointer) -> Int32 {
            let id = pieceIds.id(bytes)
            if id >= 0 { return id }
            let key = Array(bytes)
            if let extra = extraIds[key] { return extra }
            let extra = Int32(n + extraSymbols.count)
            extraSymbols.append(key)
            extraIds[key] = extra
            return extra
        }
        func symbol(_ s: String) -> Int32 {
            var s = s
            return s.withUTF8 { symbol(UnsafeRawBufferPointer($0)) }
        }

        let byteSymbols = (0..<256).map { symbol(String(ByteLevel.byteToScalar[$0])) }

        var mergeTable: [UInt64: UInt64] = [:]
        mergeTable.reserveCapacity(merges.count)
        var joined: [UInt8] = []
        for (rank, line) in merges.enumerated() {
            var line = line
            line.withUTF8 { u in
                // Split at the first space after the first byte, like llama.cpp (`find(' ', 1)`).
                guard u.count > 1, let space = u[1...].firstIndex(of: 0x20) else { return }
                let raw = UnsafeRawBufferPointer(u)
                let left = UnsafeRawBufferPointer(rebasing: raw[..<space])
                let right = UnsafeRawBufferPointer(rebasing: raw[(space + 1)...])
                let l = symbol(left), r = symbol(right)
                let key = UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))
                guard mergeTable[key] == nil else { return }
                joined.removeAll(keepingCapacity: true)
                joined.append(contentsOf: left)
                joined.append(contentsOf: right)
                let merged = joined.withUnsafeBytes { symbol($0) }
                mergeTable[key] = UInt64(UInt32(rank)) << 32 | UInt64(UInt32(merged))
            }
        }

        var asciiTokens = [Int32](repeating: -1, count: 128)
        for b in 0..<128 {
            let id = pieceIds.id(String(Unicode.Scalar(UInt8(b))))
            if id >= 0 { asciiTokens[b] = id }
        }

        let specials = SpecialTokens(pieces: tokens, types: types)

        self.vocabularySize = n
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.addBos = addBos ?? preTokenizer.defaultAddBos
        self.stopTokenIds = stops
        self.preTokenizer = preTokenizer
        self.ignoresMerges = preTokenizer.ignoresMerges
        self.vocabulary = Vocabulary(pieces: tokens, table: pieceIds, types: types, decodedBy: BPETokenizer.appendDecoded)
        self.pieceIds = pieceIds
        self.extraSymbols = extraSymbols
        self.byteSymbols = byteSymbols
        self.mergeTable = mergeTable
        self.asciiTokens = asciiTokens
        self.specials = specials
    }

    /// What a token decodes to, per llama.cpp's `token_to_piece` for BPE: control, unknown and user-defined
    /// tokens are their text; normal tokens are byte-level decoded; unused, byte and undefined tokens are empty.
    private static func appendDecoded(_ piece: String, type: TokenType, to out: inout [UInt8]) {
        switch type {
        case .control, .unknown, .userDefined:
            out.append(contentsOf: piece.utf8)
        case .normal:
            for s in piece.unicodeScalars {
                if let b = ByteLevel.byte(for: s) {
                    out.append(b)
                } else {
                    // Not in the byte-level alphabet (a malformed vocabulary): keep the character itself rather
                    // than llama.cpp's "[UNK_BYTE_…]" marker, so decoding stays readable.
                    out.append(contentsOf: String(s).utf8)
                }
            }
        case .unused, .byte, .undefined:
            break
        }
    }

    // MARK: - Tokenizer

    public func piece(_ id: Int) -> String { vocabulary.piece(id) }

    public func isControl(_ id: Int) -> Bool { vocabulary.isControl(id) }

    /// The GGUF type of token `id` (`.undefined` outside the vocabulary).
    public func tokenType(_ id: Int) -> TokenType { vocabulary.tokenType(id) }

    /// The id whose stored vocabulary string is exactly `piece`, if any.
    public func tokenId(forPiece piece: String) -> Int? {
        let id = pieceIds.id(piece)
        return id >= 0 ? Int(id) : nil
    }

    public func tokenBytes(_ id: Int) -> [UInt8] { vocabulary.tokenBytes(id) }

    public func decode(_ ids: [Int], skipSpecial: Bool) -> String { vocabulary.decode(ids, skipSpecial: skipSpecial) }

    /// Ids for `text`, never adding BOS.
    ///
    /// Special tokens are cut out first, as llama.cpp's `tokenizer_st_partition` does: each special token in
    /// turn, longest first, is searched for in every stretch of text not yet claimed. Control and unknown tokens
    /// take part only with `parseSpecial`; user-defined tokens always do. The stretches left are pre-tokenized
    /// and merged independently, so no piece spans a special token.
    public func encode(_ text: String, parseSpecial: Bool) -> [Int] {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { return [] }
        var out: [Int] = []
        out.reserveCapacity(bytes.count / 3 + 4)
        var session = Session()
        for fragment in specials.partition(bytes, parseSpecial: parseSpecial) {
            switch fragment {
            case .token(let id): out.append(Int(id))
            case .text(let range): encodeStretch(bytes, range, &session, into: &out)
            }
        }
        return out
    }

    // MARK: - Pre-tokenize and merge

    /// Per-call state: scratch buffers reused across pieces, and the ids of each distinct piece seen so far.
    private struct Session {
        var cache: [ArraySlice<UInt8>: [Int32]] = [:]
        var scalars: [UInt32] = []
        var offsets: [Int] = []
        var symbols: [Int32] = []
        var prev: [Int32] = []
        var next: [Int32] = []
        var queue = MergeQueue<Candidate>()
        var word: [Int32] = []
    }

    /// A mergeable adjacent pair; valid only while both symbols still hold the ids it was made from.
    private struct Candidate: MergeCandidate {
        var rank: UInt32
        var left: Int32
        var right: Int32
        var leftId: Int32
        var rightId: Int32
        var merged: Int32

        /// Lower rank first; on equal rank the leftmost pair (llama.cpp's queue order).
        @inline(__always) static func before(_ a: Candidate, _ b: Candidate) -> Bool {
            a.rank != b.rank ? a.rank < b.rank : a.left < b.left
        }
    }

    private func encodeStretch(_ bytes: [UInt8], _ range: Range<Int>, _ s: inout Session, into out: inout [Int]) {
        // Scalars of the stretch and the byte offset each starts at. The bytes come from a Swift String and
        // the stretch ends are on character boundaries, so they are valid UTF-8.
        s.scalars.removeAll(keepingCapacity: true)
        s.offsets.removeAll(keepingCapacity: true)
        var i = range.lowerBound
        while i < range.upperBound {
            let b0 = UInt32(bytes[i])
            s.offsets.append(i)
            if b0 < 0x80 {
                s.scalars.append(b0); i += 1
            } else if b0 < 0xE0 {
                s.scalars.append((b0 & 0x1F) << 6 | UInt32(bytes[i + 1] & 0x3F)); i += 2
            } else if b0 < 0xF0 {
                s.scalars.append((b0 & 0x0F) << 12 | UInt32(bytes[i + 1] & 0x3F) << 6 | UInt32(bytes[i + 2] & 0x3F))
                i += 3
            } else {
                s.scalars.append((b0 & 0x07) << 18 | UInt32(bytes[i + 1] & 0x3F) << 12
                    | UInt32(bytes[i + 2] & 0x3F) << 6 | UInt32(bytes[i + 3] & 0x3F))
                i += 4
            }
        }
        s.offsets.append(range.upperBound)

        var start = 0
        for end in preTokenizer.pieceEnds(s.scalars) {
            let word = bytes[s.offsets[start]..<s.offsets[end]]
            start = end
            if let ids = s.cache[word] {
                for id in ids { out.append(Int(id)) }
                continue
            }
            s.word.removeAll(keepingCapacity: true)
            mergeWord(word, &s)
            s.cache[word] = s.word
            for id in s.word { out.append(Int(id)) }
        }
    }

    /// BPE-merges one piece into `s.word`: llama.cpp's `llm_tokenizer_bpe_session`, on ids instead of strings.
    private func mergeWord(_ word: ArraySlice<UInt8>, _ s: inout Session) {
        if ignoresMerges {
            let id = pieceIds.id(ByteLevel.encode(word))
            if id >= 0 {
                s.word.append(id)
                return
            }
        }
        let count = word.count
        s.symbols.removeAll(keepingCapacity: true)
        s.prev.removeAll(keepingCapacity: true)
        s.next.removeAll(keepingCapacity: true)
        s.queue.removeAll()
        for (k, b) in word.enumerated() {
            s.symbols.append(byteSymbols[Int(b)])
            s.prev.append(Int32(k - 1))
            s.next.append(k + 1 < count ? Int32(k + 1) : -1)
        }
        for k in 1..<max(count, 1) { pushPair(Int32(k - 1), Int32(k), &s) }

        while let top = s.queue.pop() {
            let l = Int(top.left), r = Int(top.right)
            // Stale: one side has merged with something else since this pair was queued.
            guard s.symbols[l] == top.leftId, s.symbols[r] == top.rightId else { continue }
            s.symbols[l] = top.merged
            s.symbols[r] = -1
            let after = s.next[r]
            s.next[l] = after
            if after >= 0 { s.prev[Int(after)] = Int32(l) }
            if s.prev[l] >= 0 { pushPair(s.prev[l], Int32(l), &s) }
            if after >= 0 { pushPair(Int32(l), after, &s) }
        }

        var k: Int32 = count > 0 ? 0 : -1
        while k >= 0 {
            let id = s.symbols[Int(k)]
            if id < vocabularySize {
                s.word.append(id)
            } else {
                // A merge-only symbol: llama.cpp emits the token of each of its bytes that is one on its own.
                for b in extraSymbols[Int(id) - vocabularySize] where b < 0x80 && asciiTokens[Int(b)] >= 0 {
                    s.word.append(asciiTokens[Int(b)])
                }
            }
            k = s.next[Int(k)]
        }
    }

    @inline(__always) private func pushPair(_ l: Int32, _ r: Int32, _ s: inout Session) {
        let a = s.symbols[Int(l)], b = s.symbols[Int(r)]
        guard let m = mergeTable[UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))] else { return }
        let c = Candidate(rank: UInt32(m >> 32), left: l, right: r, leftId: a, rightId: b,
                          merged: Int32(truncatingIfNeeded: m & 0xFFFF_FFFF))
        s.queue.push(c)
    }
}
