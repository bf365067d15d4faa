import Foundation
import PocketLM
import Testing

/// The real SmolLM2 tokenizer and llama.cpp's reference ids, loaded once for all tokenizer and template tests.
enum TokenizerFixtures {
    struct MissingFixture: Error, CustomStringConvertible {
        let description: String
    }

    struct Reference: Decodable {
        struct Call: Decodable { let special: Bool }
        struct Record: Decodable {
            let modelFile: String
            let promptKind: String
            let prompt: String
            let tokenizeCall: Call
            let tokens: [Int]
            let greedyIds: [Int]
            let greedyText: String
            let greedyTextNoSpecial: String
        }
        let records: [Record]
    }

    static let modelPath: String = {
        let dir = ProcessInfo.processInfo.environment["POCKETLM_CACHE"] ?? NSHomeDirectory() + "/.cache/pocketlm"
        return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf"
    }()

    private static let loaded: Result<GGUFFile, any Error> = Result {
        guard FileManager.default.fileExists(atPath: modelPath) else {
            throw MissingFixture(description: "SmolLM2 test model not found at \(modelPath): run `make fetch` "
                + "(or point POCKETLM_CACHE at the folder holding it)")
        }
        return try GGUFFile(path: modelPath)
    }

    private static let loadedTokenizer: Result<any Tokenizer, any Error> = Result {
        try TokenizerLoader.load(from: try loaded.get())
    }

    static func gguf() throws -> GGUFFile { try loaded.get() }
    static func tokenizer() throws -> any Tokenizer { try loadedTokenizer.get() }

    /// The repository's weights-tools/reference/ (the test file's symlinks resolved, so scratch packages work too).
    static let referencePath: String = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("weights-tools/reference/smollm2-llamacpp.json").path

    private static let loadedReference: Result<Reference, any Error> = Result {
        guard let data = FileManager.default.contents(atPath: referencePath) else {
            throw MissingFixture(description: "reference outputs not found at \(referencePath)")
        }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(Reference.self, from: data)
    }

    static func reference() throws -> Reference { try loadedReference.get() }
}

@Suite struct TokenizerTests {
    // MARK: - Against llama.cpp

    @Test func referencePromptsEncodeToLlamaCppIds() throws {
        let tok = try TokenizerFixtures.tokenizer()
        let records = try TokenizerFixtures.reference().records
        #expect(records.count >= 4)
        #expect(Set(records.map(\.prompt)).count == 4)
        for r in records {
            let ids = tok.encode(r.prompt, parseSpecial: r.tokenizeCall.special)
            #expect(ids == r.tokens, "prompt \(r.prompt.debugDescription) (\(r.modelFile))")
        }
        #expect(records.contains { $0.promptKind == "chat" && $0.tokenizeCall.special })
    }

    @Test func greedyIdsDecodeToLlamaCppText() throws {
        let tok = try TokenizerFixtures.tokenizer()
        for r in try TokenizerFixtures.reference().records {
            #expect(tok.decode(r.greedyIds, skipSpecial: false) == r.greedyText, "\(r.modelFile) \(r.promptKind)")
            #expect(tok.decode(r.greedyIds, skipSpecial: true) == r.greedyTextNoSpecial, "\(r.modelFile) \(r.promptKind)")
        }
    }

    @Test func vocabularyFacts() throws {
        let tok = try TokenizerFixtures.tokenizer()
        #expect(tok.vocabularySize == 49152)
        #expect(tok.bosTokenId == 1)
        #expect(tok.eosTokenId == 2)
        #expect(tok.addBos == false)
        // llama.cpp's EOG set: <|endoftext|>, <|im_end|> (= EOS) and <reponame> (the fill-in-the-middle repository
        // marker, which llama.cpp counts as an end of generation).
        #expect(tok.stopTokenIds == [0, 2, 4])
        #expect(tok.piece(4) == "<reponame>")
        #expect(tok.piece(1) == "<|im_start|>")
        #expect(tok.isControl(1) && tok.isControl(2) && !tok.isControl(504))
        #expect(tok.tokenBytes(2) == Array("<|im_end|>".utf8))
        #expect(tok.piece(216) == "Ġ")
        #expect(tok.tokenBytes(216) == [0x20])
        #expect(tok.piece(198) == "Ċ")
        #expect(tok.tokenBytes(198) == [0x0A])
        #expect(tok.tokenBytes(-1).isEmpty && tok.tokenBytes(49152).isEmpty)
    }

    // MARK: - Special tokens

    @Test func specialTokensOnlyWhenParsingSpecial() throws {
        let tok = try TokenizerFixtures.tokenizer()
        #expect(tok.encode("<|im_start|>", parseSpecial: true) == [1])
        let plain = tok.encode("<|im_start|>", parseSpecial: false)
        #expect(plain.count > 1)
        #expect(!plain.contains(1))
        #expect(tok.decode(plain, skipSpecial: true) == "<|im_start|>")
        // Special tokens split the text: no piece runs across one.
        let mixed = tok.encode("hi<|im_end|>\nthere<|im_end|>", parseSpecial: true)
        #expect(mixed.filter { $0 == 2 }.count == 2)
        #expect(tok.decode(mixed, skipSpecial: false) == "hi<|im_end|>\nthere<|im_end|>")
        #expect(tok.decode(mixed, skipSpecial: true) == "hi\nthere")
        #expect(tok.encode("", parseSpecial: true).isEmpty)
    }

    // MARK: - Round trips

    @Test(arguments: [
        "café naïve résumé", "cafe\u{301} nai\u{308}ve", "日本語のテキスト 中文", "한국어 ไทย العربية हिन्दी",
        "👩‍👩‍👧 👍🏽", "🇫🇷🏳️‍🌈 1️⃣", "  hello   world\n\n", "\ttab\t\tand  \t mixed\r\n\r\nlines",
        "0123456789 3.14159 1,000,000 ٣٤٥ ½", "e\u{301}\u{323} a\u{308}\u{304} Z\u{335}\u{30C}", "   ", "\n",
        "don't DON'T it's 'quoted'", "nbsp\u{A0}em\u{2003}ideo\u{3000}nel\u{85}end", "\u{0}\u{1}\u{7F} ctrl",
    ])
    func unicodeRoundTrip(_ text: String) throws {
        let tok = try TokenizerFixtures.tokenizer()
        let ids = tok.encode(text, parseSpecial: false)
        #expect(tok.decode(ids, skipSpecial: false) == text)
        #expect(ids.allSatisfy { (0..<tok.vocabularySize).contains($0) })
    }

    @Test func largeTextIsFastAndRoundTrips() throws {
        let tok = try TokenizerFixtures.tokenizer()
        let text = (try? String(contentsOfFile: "/usr/share/common-licenses/GPL-3", encoding: .utf8))
            ?? String(repeating: "The licenses for most software are designed to take away your freedom 42. ", count: 480)
        let clock = ContinuousClock()
        var ids: [Int] = []
        let elapsed = clock.measure { ids = tok.encode(text, parseSpecial: false) }
        #expect(elapsed < .seconds(1), "encoding \(text.utf8.count) bytes took \(elapsed)")
        #expect(ids.count > text.utf8.count / 8)
        #expect(tok.decode(ids, skipSpecial: false) == text)
    }

    // MARK: - Streaming

    @Test func streamingNeverSplitsCharacters() throws {
        let tok = try TokenizerFixtures.tokenizer()
        let text = "👩‍👩‍👧 👍🏽 🇫🇷 日本語 ok 🧑‍🚀"
        let ids = tok.encode(text, parseSpecial: false)
        #expect(ids.contains { id in String(validating: tok.tokenBytes(id), as: UTF8.self) == nil },
                "the test needs tokens holding partial characters")
        var stream = StreamingDetokenizer(tokenizer: tok)
        var out = ""
        var held = 0
        for id in ids {
            let piece = stream.append(id)
            if piece.isEmpty { held += 1 }
            #expect(!piece.unicodeScalars.contains("\u{FFFD}"))
            out += piece
        }
        out += stream.flush()
        #expect(out == text)
        #expect(held > 0)
    }

    @Test func streamingEmitsInvalidBytesOnce() throws {
        let tok = try TokenizerFixtures.tokenizer()
        guard let lead = (0..<tok.vocabularySize).first(where: { tok.tokenBytes($0) == [0xE2] }),
              let a = tok.encode("A", parseSpecial: false).first
        else {
            Issue.record("no single-byte 0xE2 token")
            return
        }
        var stream = StreamingDetokenizer(tokenizer: tok)
        #expect(stream.append(lead) == "")
        #expect(stream.append(a) == "\u{FFFD}A")
        #expect(stream.append(lead) == "")
        #expect(stream.flush() == "\u{FFFD}")
        #expect(stream.flush() == "")
        var skipping = StreamingDetokenizer(tokenizer: tok, skipSpecial: true)
        #expect(skipping.append(2) == "")
        #expect(skipping.append(a) == "A")
    }

    // MARK: - Pre-tokenizer

    @Test func digitsSplitPerRuleSet() {
        #expect(PreTokenizer(kind: .smollm).split("12345") == ["1", "2", "3", "4", "5"])
        #expect(PreTokenizer(kind: .llama3).split("12345") == ["123", "45"])
        #expect(PreTokenizer(kind: .gpt2).split("12345") == ["12345"])
        #expect(PreTokenizer(kind: .smollm).split("abc123def") == ["abc", "1", "2", "3", "def"])
        #expect(PreTokenizer(kind: .gpt2).split("abc123def") == ["abc", "123", "def"])
        #expect(PreTokenizer(kind: .llama3).split("abc123def") == ["abc", "123", "def"])
        #expect(PreTokenizer(kind: .smollm).split("is 2+2?") == ["is", " ", "2", "+", "2", "?"])
        #expect(PreTokenizer(kind: .gpt2).split("is 2+2?") == ["is", " 2", "+", "2", "?"])
    }

    @Test func whitespaceRuns() {
        for kind in PreTokenizer.Kind.allCases {
            #expect(PreTokenizer(kind: kind).split("  hello   world\n\n") == [" ", " hello", "  ", " world", "\n\n"],
                    "\(kind)")
        }
        // Only a plain space joins the next word; the last of other whitespace stays apart.
        #expect(PreTokenizer(kind: .gpt2).split("\n\n\nhello") == ["\n\n", "\n", "hello"])
        #expect(PreTokenizer(kind: .gpt2).split("x\t\ty") == ["x", "\t", "\t", "y"])
        #expect(PreTokenizer(kind: .gpt2).split("a \u{A0}b") == ["a", " ", "\u{A0}", "b"])
        // Llama 3 lets any single non-letter lead a word, and ends a whitespace run at its last line break.
        #expect(PreTokenizer(kind: .llama3).split("x\t\ty") == ["x", "\t", "\ty"])
        #expect(PreTokenizer(kind: .llama3).split("a  \n  b") == ["a", "  \n", " ", " b"])
        #expect(PreTokenizer(kind: .gpt2).split("a  \n  b") == ["a", "  \n ", " b"])
    }

    @Test func contractions() {
        #expect(PreTokenizer(kind: .gpt2).split("don't") == ["don", "'t"])
        #expect(PreTokenizer(kind: .gpt2).split("DON'T") == ["DON", "'", "T"])
        #expect(PreTokenizer(kind: .llama3).split("DON'T") == ["DON", "'T"])
        #expect(PreTokenizer(kind: .gpt2).split("we're they'll I'd") == ["we", "'re", " they", "'ll", " I", "'d"])
        #expect(PreTokenizer(kind: .gpt2).split("'") == ["'"])
    }

    @Test func unicodeCategories() {
        #expect(PreTokenizer(kind: .gpt2).split("naïve café") == ["naïve", " café"])
        // A combining mark is not a letter (\p{M}), so a decomposed accent splits the word as the regex does.
        #expect(PreTokenizer(kind: .gpt2).split("cafe\u{301}") == ["cafe", "\u{301}"])
        #expect(PreTokenizer(kind: .smollm).split("٣½Ⅻ") == ["٣", "½", "Ⅻ"])
        #expect(PreTokenizer(kind: .gpt2).split("日本語 👍🏽!") == ["日本語", " 👍🏽!"])
        let text = "Mixed: 日本語, emoji 👩‍👩‍👧, tabs\t\tand  spaces  \n"
        for kind in PreTokenizer.Kind.allCases {
            #expect(PreTokenizer(kind: kind).split(text).joined() == text)
        }
    }

    @Test func preTokenizerNames() throws {
        #expect(try PreTokenizer(preName: "smollm").kind == .smollm)
        #expect(try PreTokenizer(preName: "starcoder").kind == .smollm)
        // "gpt2" is PocketLM's converter's name for the GPT-2 rules (llama.cpp spells it "gpt-2").
        #expect(try PreTokenizer(preName: "gpt2").kind == .gpt2)
        #expect(try PreTokenizer(preName: "gpt-2").kind == .gpt2)
        #expect(try PreTokenizer(preName: "llama-bpe").kind == .llama3)
        #expect(try PreTokenizer(preName: "qwen2").kind == .qwen2)
        // llama.cpp's `default` splitting is not GPT-2's (PreTokenizerVariantTests has the rest).
        #expect(throws: TokenizerError.unsupportedPreTokenizer("default")) { try PreTokenizer(preName: "default") }
        #expect(throws: TokenizerError.unsupportedPreTokenizer("")) { try PreTokenizer(preName: nil) }
    }

    // MARK: - Merging rules on tiny vocabularies

    @Test func mergesFollowRankThenLeftmost() throws {
        let pre = PreTokenizer(kind: .gpt2)
        let byRank = try BPETokenizer(tokens: ["a", "b", "c", "ab", "bc", "abc"], merges: ["a b", "b c", "ab c"],
                                      preTokenizer: pre)
        #expect(byRank.encode("abc", parseSpecial: false) == [5])
        let otherOrder = try BPETokenizer(tokens: ["a", "b", "c", "ab", "bc", "abc"], merges: ["b c", "a b", "ab c"],
                                          preTokenizer: pre)
        #expect(otherOrder.encode("abc", parseSpecial: false) == [0, 4])
        let ties = try BPETokenizer(tokens: ["a", "aa"], merges: ["a a"], preTokenizer: pre)
        #expect(ties.encode("aaa", parseSpecial: false) == [1, 0])
        #expect(ties.encode("aaaa", parseSpecial: false) == [1, 1])
    }

    @Test func mergeResultsOutsideTheVocabulary() throws {
        let pre = PreTokenizer(kind: .gpt2)
        // "ab" is not a token: llama.cpp still merges it, then falls back to single characters.
        let fallback = try BPETokenizer(tokens: ["a", "b"], merges: ["a b"], preTokenizer: pre)
        #expect(fallback.encode("ab", parseSpecial: false) == [0, 1])
        // ...and can merge it further into a real token.
        let chained = try BPETokenizer(tokens: ["a", "b", "c", "abc"], merges: ["a b", "ab c"], preTokenizer: pre)
        #expect(chained.encode("abc", parseSpecial: false) == [3])
    }

    @Test func llama3TakesWholeVocabularyPiecesWithoutMerging() throws {
        // Llama 3 (llama.cpp's ignore_merges): a piece that is a token is used as is, even with no merge path.
        let tokens = ["a", "b", "c", "abc"]
        let llama3 = try BPETokenizer(tokens: tokens, merges: [], preTokenizer: PreTokenizer(kind: .llama3))
        #expect(llama3.ignoresMerges)
        #expect(llama3.encode("abc", parseSpecial: false) == [3])
        let gpt2 = try BPETokenizer(tokens: tokens, merges: [], preTokenizer: PreTokenizer(kind: .gpt2))
        #expect(gpt2.encode("abc", parseSpecial: false) == [0, 1, 2])
    }

    @Test func userDefinedTokensAlwaysMatch() throws {
        let tok = try BPETokenizer(tokens: ["a", "b", "<x>", "<c>", "<", ">", "x", "c"], tokenTypes: [1, 1, 4, 3, 1, 1, 1, 1],
                                   merges: [], preTokenizer: PreTokenizer(kind: .gpt2))
        #expect(tok.encode("a<x>b", parseSpecial: false) == [0, 2, 1])
        #expect(tok.encode("a<c>b", parseSpecial: false) == [0, 4, 7, 5, 1])
        #expect(tok.encode("a<c>b", parseSpecial: true) == [0, 3, 1])
        #expect(tok.decode([0, 2, 3, 1], skipSpecial: true) == "a<x>b")
    }

    @Test func metadataValidation() throws {
        let pre = PreTokenizer(kind: .gpt2)
        #expect(throws: TokenizerError.invalidMetadata(key: "tokenizer.ggml.token_type", reason: "has 1 entries for 2 tokens")) {
            try BPETokenizer(tokens: ["a", "b"], tokenTypes: [1], merges: [], preTokenizer: pre)
        }
        #expect(throws: TokenizerError.tokenIdOutOfRange(key: "tokenizer.ggml.bos_token_id", id: 5, vocabularySize: 2)) {
            try BPETokenizer(tokens: ["a", "b"], merges: [], preTokenizer: pre, bosTokenId: 5)
        }
        #expect(throws: TokenizerError.self) { try BPETokenizer(tokens: [], merges: [], preTokenizer: pre) }
        #expect(try BPETokenizer(tokens: ["a"], merges: [], preTokenizer: PreTokenizer(kind: .llama3)).addBos)
        #expect(try !BPETokenizer(tokens: ["a"], merges: [], preTokenizer: pre).addBos)
    }

    @Test func loaderRejectsOtherTokenizerModels() throws {
        let path = try writeMiniGGUF(["tokenizer.ggml.model": "bert"])
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: TokenizerError.unsupportedModel("bert")) { try TokenizerLoader.load(from: GGUFFile(path: path)) }
        let err = TokenizerError.unsupportedModel("bert")
        #expect(err.localizedDescription.contains("bert"))
    }

    @Test func loaderRejectsUnknownPreTokenizer() throws {
        let path = try writeMiniGGUF(["tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "mystery"],
                                     arrays: ["tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": []])
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: TokenizerError.unsupportedPreTokenizer("mystery")) { try TokenizerLoader.load(from: GGUFFile(path: path)) }
    }
}

/// Writes a GGUF v3 file with no tensors and the given string / string-array metadata; returns its path.
private func writeMiniGGUF(_ strings: [String: String], arrays: [String: [String]] = [:]) throws -> String {
    var d = Data("GGUF".utf8)
    func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
    func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
    func str(_ s: String) { u64(UInt64(s.utf8.count)); d.append(contentsOf: Array(s.utf8)) }
    u32(3)
    u64(0)
    u64(UInt64(strings.count + arrays.count))
    for (k, v) in strings.sorted(by: { $0.key < $1.key }) { str(k); u32(8); str(v) }
    for (k, v) in arrays.sorted(by: { $0.key < $1.key }) {
        str(k); u32(9); u32(8); u64(UInt64(v.count))
        for s in v { str(s) }
    }
    while d.count % 32 != 0 { d.append(0) }
    let path = NSTemporaryDirectory() + "pocketlm-tok-\(UUID().uuidString).gguf"
    try d.write(to: URL(fileURLWithPath: path))
    return path
}
