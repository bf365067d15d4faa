import Foundation
import PocketLM
import Testing

/// Gemma 3's SentencePiece vocabulary (262,144 pieces, byte fallback, no space prefix, 6,249 control and 165
/// user-defined tokens) against llama.cpp's ids: weights-tools/reference/gemma3-270m-llamacpp.json (19 strings and
/// 4 prompts, with BOS) and tokenizer-llamacpp.json (the hard strings, special parsing off and on, and chat
/// prompts rendered by Gemma 3's own template).
@Suite(.serialized) struct GemmaTokenizerTests {
    struct GemmaReference: Decodable {
        struct Tokenized: Decodable { let text: String; let ids: [Int] }
        struct Record: Decodable { let kind: String; let prompt: String; let tokens: [Int] }
        let tokenize: [Tokenized]
        let records: [Record]
    }

    static func gemmaReference() throws -> GemmaReference {
        let url = TestPaths.repoRoot.appendingPathComponent("weights-tools/reference/gemma3-270m-llamacpp.json")
        return try JSONDecoder().decode(GemmaReference.self, from: Data(contentsOf: url))
    }

    static func tokenizer() throws -> SentencePieceTokenizer {
        let tok = try TokenizerReference.tokenizer("gemma3-270m")
        return try #require(tok as? SentencePieceTokenizer)
    }

    /// With BOS, as llama.cpp's tokenize(add_bos: true) gives them.
    static func withBos(_ tok: some Tokenizer, _ text: String, special: Bool) -> [Int] {
        (tok.addBos ? [tok.bosTokenId!] : []) + tok.encode(text, parseSpecial: special)
    }

    @Test func vocabularyFacts() throws {
        let tok = try Self.tokenizer()
        let ref = try TokenizerReference.vocabulary("gemma3-270m")
        #expect(tok.vocabularySize == 262_144 && ref.n_vocab == 262_144)
        #expect(tok.addBos && ref.add_bos)
        #expect(!tok.addSpacePrefix)
        #expect(tok.bosTokenId == 2 && tok.eosTokenId == 1)
        #expect(tok.piece(105) == "<start_of_turn>" && tok.piece(106) == "<end_of_turn>")
        #expect(tok.isControl(105) && tok.isControl(106))
        #expect(tok.tokenType(107) == .userDefined && tok.piece(107) == "\n")
        #expect(tok.tokenType(238) == .byte && tok.tokenBytes(238) == [0])
        // llama.cpp's EOG set: <eos>, <end_of_turn> and "</s>" (a normal piece in Gemma's vocabulary that
        // llama.cpp makes a control, end-of-generation token because of its spelling).
        #expect(Set(ref.eog_ids) == [1, 106, 212])
        #expect(tok.stopTokenIds == Set(ref.eog_ids))
        #expect(tok.isControl(212))
    }

    @Test func recordedStringsMatchLlamaCpp() throws {
        let tok = try Self.tokenizer()
        let ref = try Self.gemmaReference()
        #expect(ref.tokenize.count == 19)
        for r in ref.tokenize {
            let ids = Self.withBos(tok, r.text, special: false)
            #expect(ids == r.ids, "\(r.text.debugDescription): got \(ids.map(tok.piece)), want \(r.ids.map(tok.piece))")
        }
        #expect(ref.records.count == 4)
        for r in ref.records {
            // The chat-kind record's prompt carries turn markers: special parsing on, as for any rendered prompt.
            let ids = Self.withBos(tok, r.prompt, special: r.kind == "chat")
            #expect(ids == r.tokens, "\(r.kind) prompt: got \(ids.count) ids, want \(r.tokens.count)")
        }
    }

    @Test func hardStringsMatchLlamaCpp() throws {
        let tok = try Self.tokenizer()
        let ref = try TokenizerReference.vocabulary("gemma3-270m")
        #expect(ref.cases.count >= 50)
        for c in ref.cases {
            let ids = tok.encode(c.text, parseSpecial: false)
            #expect(ids == c.ids, "\(c.text.debugDescription): got \(ids.map(tok.piece)), want \(c.ids.map(tok.piece))")
            let special = tok.encode(c.text, parseSpecial: true)
            #expect(special == c.ids_special,
                    "special \(c.text.debugDescription): got \(special.map(tok.piece)), want \(c.ids_special.map(tok.piece))")
        }
    }

    @Test func chatPromptsMatchLlamaCpp() throws {
        let tok = try Self.tokenizer()
        let ref = try TokenizerReference.vocabulary("gemma3-270m")
        #expect(ref.prompts.count == 2)
        let template = try ChatTemplate(template: "gemma")
        let conversations = Dictionary(grouping: try TokenizerReference.file().chat, by: \.conversation)
        for p in ref.prompts {
            #expect(Self.withBos(tok, p.text, special: true) == p.ids)
            // Our own rendering of the same conversation gives the same text, hence the same ids.
            let record = try #require(conversations.values.compactMap { $0.first { $0.template_name == "gemma3" && $0.jinja == p.text } }.first)
            let rendered = try template.render(record.messages.map { ChatMessage(role: $0.role, content: $0.content) },
                                               addGenerationPrompt: true)
            #expect(rendered == p.text)
        }
    }

    @Test func specialTextIsPlainUnlessParsingSpecial() throws {
        let tok = try Self.tokenizer()
        let plain = tok.encode("<start_of_turn>user", parseSpecial: false)
        #expect(!plain.contains(105))
        #expect(tok.encode("<start_of_turn>user", parseSpecial: true).first == 105)
        // User-defined tokens (runs of newlines and spaces, HTML tags) are cut out in plain text too.
        #expect(tok.encode("a\n\nb", parseSpecial: false) == [tok.tokenId(forPiece: "a")!, 108, tok.tokenId(forPiece: "b")!])
        #expect(tok.decode(tok.encode("  two  spaces\n\n<table>", parseSpecial: false), skipSpecial: false)
            == "  two  spaces\n\n<table>")
    }

    @Test func decodeRoundTripsEveryHardString() throws {
        let tok = try Self.tokenizer()
        for c in try TokenizerReference.vocabulary("gemma3-270m").cases {
            #expect(tok.decode(c.ids, skipSpecial: false) == c.text, "\(c.text.debugDescription)")
        }
    }

    /// The 262k vocabulary is built on a background thread while the weights load; it must not be the slow part.
    @Test func vocabularyLoadsQuickly() throws {
        let path = try TestPaths.model("gemma-3-270m-q4_k_m.gguf")
        let file = try GGUFFile(path: path)
        var best = Double.infinity
        for _ in 0..<3 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let tok = try TokenizerLoader.load(from: file)
            let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            #expect(tok.vocabularySize == 262_144)
            best = min(best, ms)
        }
        print("Gemma 3 tokenizer (262,144 pieces) built in \(String(format: "%.1f", best)) ms (best of 3)")
        #expect(best < 1000)
    }

    @Test func longTextEncodesQuickly() throws {
        let tok = try Self.tokenizer()
        let text = String(repeating: try Self.gemmaReference().records.first { $0.prompt.count > 2000 }?.prompt
            ?? "The quick brown fox jumps over the lazy dog. ", count: 10)
        let t0 = DispatchTime.now().uptimeNanoseconds
        let ids = tok.encode(text, parseSpecial: true)
        let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        print("Gemma 3 encode: \(text.utf8.count) bytes -> \(ids.count) ids in \(String(format: "%.1f", ms)) ms")
        #expect(tok.decode(ids, skipSpecial: false) == text)
        #expect(ms < 2000)
    }
}
