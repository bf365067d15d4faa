import Foundation
import PocketLM
import Testing

/// The tiny sentencepiece model from weights-tools/make_sp_fixture.py and sentencepiece's own ids for it.
enum SentencePieceFixtures {
    struct Record: Decodable {
        let text: String
        let ids: [Int]
    }

    private static let loadedTokenizer: Result<any Tokenizer, any Error> = Result {
        try TokenizerLoader.load(from: GGUFFile(path: try TestPaths.fixture("sp-tiny.gguf")))
    }

    private static let loadedRecords: Result<[Record], any Error> = Result {
        let data = try Data(contentsOf: URL(fileURLWithPath: try TestPaths.fixture("sp-expected.json")))
        return try JSONDecoder().decode([Record].self, from: data)
    }

    static func tokenizer() throws -> any Tokenizer { try loadedTokenizer.get() }
    static func spTokenizer() throws -> SentencePieceTokenizer {
        let tok = try tokenizer()
        guard let sp = tok as? SentencePieceTokenizer else {
            throw TestSetupError("sp-tiny.gguf loaded as \(type(of: tok)), not SentencePieceTokenizer")
        }
        return sp
    }
    static func records() throws -> [Record] { try loadedRecords.get() }
}

@Suite struct SentencePieceTests {
    // MARK: - Against sentencepiece

    @Test func loaderPicksSentencePieceForLlamaModel() throws {
        let tok = try SentencePieceFixtures.spTokenizer()
        #expect(tok.vocabularySize > 259)
        #expect(tok.bosTokenId == 1)
        #expect(tok.eosTokenId == 2)
        #expect(tok.unknownTokenId == 0)
        #expect(tok.addBos)
        #expect(tok.addSpacePrefix)
        #expect(tok.stopTokenIds.contains(2))
        #expect(tok.isControl(1) && tok.isControl(2) && !tok.isControl(0))
        #expect(tok.piece(1) == "<s>")
        #expect(tok.tokenType(0) == .unknown)
    }

    @Test func encodesExactlyLikeSentencePiece() throws {
        let tok = try SentencePieceFixtures.tokenizer()
        let records = try SentencePieceFixtures.records()
        #expect(records.count >= 20)
        for r in records {
            let ids = tok.encode(r.text, parseSpecial: false)
            #expect(ids == r.ids, "text \(r.text.debugDescription): got \(ids.map(tok.piece)), want \(r.ids.map(tok.piece))")
        }
    }

    @Test func decodesSentencePieceIdsBackToText() throws {
        let tok = try SentencePieceFixtures.tokenizer()
        for r in try SentencePieceFixtures.records() {
            #expect(tok.decode(r.ids, skipSpecial: false) == r.text, "ids of \(r.text.debugDescription)")
            #expect(tok.decode(r.ids, skipSpecial: true) == r.text, "ids of \(r.text.debugDescription)")
        }
    }

    @Test func emptyTextIsNoTokens() throws {
        let tok = try SentencePieceFixtures.tokenizer()
        #expect(tok.encode("", parseSpecial: false) == [])
        #expect(tok.encode("", parseSpecial: true) == [])
        #expect(tok.decode([], skipSpecial: false) == "")
    }

    // MARK: - Byte fallback

    @Test func unseenCharacterFallsBackToByteTokens() throws {
        let tok = try SentencePieceFixtures.spTokenizer()
        // U+1F999 (llama) is not in the training text: its four UTF-8 bytes become <0xF0> <0x9F> <0xA6> <0x99>.
        let ids = tok.encode("🦙", parseSpecial: false)
        #expect(ids.map(tok.piece) == ["▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"])
        #expect(ids.dropFirst().allSatisfy { tok.tokenType($0) == .byte })
        #expect(ids.dropFirst().map { tok.tokenBytes($0) } == [[0xF0], [0x9F], [0xA6], [0x99]])
        #expect(tok.decode(ids, skipSpecial: true) == "🦙")
        // A control character is never in a sentencepiece vocabulary either.
        #expect(tok.encode("a\u{1}", parseSpecial: false).last == tok.tokenId(forPiece: "<0x01>"))
    }

    @Test func streamingByteFallbackEmojiNeverEmitsReplacementCharacter() throws {
        let tok = try SentencePieceFixtures.tokenizer()
        let text = "🦙 llama 🦙🦙 ₿ 𝔘𝔫𝔦"
        let ids = tok.encode(text, parseSpecial: false)
        var stream = StreamingDetokenizer(tokenizer: tok, skipSpecial: true)
        var out = ""
        for id in ids {
            let piece = stream.append(id)
            #expect(!piece.contains("\u{FFFD}"), "token \(tok.piece(id)) gave \(piece.debugDescription)")
            out += piece
        }
        out += stream.flush()
        #expect(!out.contains("\u{FFFD}"))
        // The stream keeps the first token's "▁" (a continuation needs its space); decode drops it, as llama.cpp.
        #expect(out == " " + text)
        #expect(tok.decode(ids, skipSpecial: true) == text)
    }

    // MARK: - Special tokens and spaces

    @Test func controlTokensMatchOnlyWithParseSpecial() throws {
        let tok = try SentencePieceFixtures.tokenizer()
        let hello = tok.encode("Hello world", parseSpecial: false)
        // llama.cpp gives the text after a special token its own space prefix.
        #expect(tok.encode("<s>Hello world", parseSpecial: true) == [1] + hello)
        #expect(tok.encode("Hello world</s>", parseSpecial: true) == hello + [2])
        #expect(tok.encode("Hello world</s>world", parseSpecial: true)
            == hello + [2] + tok.encode("world", parseSpecial: false))
        let plain = tok.encode("<s>Hello world", parseSpecial: false)
        #expect(!plain.contains(1))
        #expect(tok.decode(plain, skipSpecial: false) == "<s>Hello world")
        #expect(tok.decode([1] + hello + [2], skipSpecial: false) == "<s> Hello world</s>")
        // As llama.cpp's detokenize: only the very first id loses its leading space.
        #expect(tok.decode([1] + hello + [2], skipSpecial: true) == " Hello world")
        #expect(tok.decode(hello + [2], skipSpecial: true) == "Hello world")
    }

    @Test func idsOutsideVocabularyAreIgnored() throws {
        let tok = try SentencePieceFixtures.tokenizer()
        let ids = tok.encode("Hello", parseSpecial: false)
        #expect(tok.decode(ids + [-1, tok.vocabularySize], skipSpecial: false) == "Hello")
        #expect(tok.tokenBytes(tok.vocabularySize).isEmpty)
        #expect(tok.piece(-1) == "")
    }

    // MARK: - The merge rule on hand-made vocabularies

    @Test func highestScoreMergesFirstAndTiesGoLeft() throws {
        let tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "c", "ab", "bc", "aa"]
        let scores: [Float] = [0, 0, 0, -1, -2, -2, -2, -5, -4, -3]
        let types = [2, 3, 3, 1, 1, 1, 1, 1, 1, 1]
        let tok = try SentencePieceTokenizer(tokens: tokens, scores: scores, tokenTypes: types)
        #expect(tok.encode("abc", parseSpecial: false).map(tok.piece) == ["▁", "a", "bc"])
        #expect(tok.encode("aaa", parseSpecial: false).map(tok.piece) == ["▁", "aa", "a"])
        // No byte tokens in this vocabulary: an unknown character becomes one <unk>.
        #expect(tok.encode("é", parseSpecial: false) == [3, 0])
        let noPrefix = try SentencePieceTokenizer(tokens: tokens, scores: scores, tokenTypes: types, addSpacePrefix: false)
        #expect(noPrefix.encode("a b", parseSpecial: false).map(noPrefix.piece) == ["a", "▁", "b"])
        #expect(noPrefix.decode(noPrefix.encode(" a", parseSpecial: false), skipSpecial: false) == " a")
    }

    @Test func mergesFormAnyVocabularyEntryAsLlamaCppDoes() throws {
        // llama.cpp's SPM merge looks pairs up in the whole vocabulary: an unused entry is output as it is (no
        // sentencepiece-style resegmentation) and a control entry can be formed from plain text.
        let tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "ab", "▁a", "<", "<s", ">"]
        let scores: [Float] = [0, 0, 0, -1, -2, -2, -1, -3, -4, -5, -6]
        let types = [2, 3, 3, 1, 1, 1, 5, 1, 1, 1, 1]
        let tok = try SentencePieceTokenizer(tokens: tokens, scores: scores, tokenTypes: types)
        #expect(tok.encode("ab", parseSpecial: false).map(tok.piece) == ["▁", "ab"])
        #expect(tok.encode("<s>", parseSpecial: false).map(tok.piece) == ["▁", "<s>"])
        #expect(tok.decode(tok.encode("ab", parseSpecial: false), skipSpecial: false) == "")
    }

    @Test func metadataValidation() throws {
        #expect(throws: TokenizerError.self) { try SentencePieceTokenizer(tokens: []) }
        #expect(throws: TokenizerError.invalidMetadata(key: "tokenizer.ggml.scores", reason: "has 1 entries for 3 tokens")) {
            try SentencePieceTokenizer(tokens: ["a", "b", "c"], scores: [0])
        }
        #expect(throws: TokenizerError.tokenIdOutOfRange(key: "tokenizer.ggml.bos_token_id", id: 1, vocabularySize: 1)) {
            try SentencePieceTokenizer(tokens: ["a"], bosTokenId: 1, eosTokenId: nil, unknownTokenId: nil)
        }
    }
}
