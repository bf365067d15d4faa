import Foundation
import PocketLM
import Testing

/// The qwen2 and llama-bpe splitting rules (and smollm's, for comparison) checked against llama.cpp's ids:
/// SmolLM2's real vocabulary and merges with `tokenizer.ggml.pre` rewritten (weights-tools/make_vocab_fixtures.py),
/// on the hard strings of weights-tools/record_tokenizer_refs.py.
@Suite struct PreTokenizerVariantTests {
    static let vocabularies = ["smollm2-smollm", "smollm2-qwen2", "smollm2-llama-bpe"]

    @Test(arguments: vocabularies)
    func idsMatchLlamaCpp(_ name: String) throws {
        let ref = try TokenizerReference.vocabulary(name)
        let tok = try TokenizerReference.tokenizer(name)
        let bpe = try #require(tok as? BPETokenizer)
        #expect(bpe.preTokenizer.kind == PreTokenizer.kind(forPreName: ref.pre))
        #expect(ref.cases.count >= 50)
        for c in ref.cases {
            let ids = tok.encode(c.text, parseSpecial: false)
            #expect(ids == c.ids, "\(name) \(c.text.debugDescription): got \(ids.map(tok.piece)), want \(c.ids.map(tok.piece))")
            let special = tok.encode(c.text, parseSpecial: true)
            #expect(special == c.ids_special, "\(name) special \(c.text.debugDescription): got \(special), want \(c.ids_special)")
        }
    }

    @Test(arguments: vocabularies)
    func renderedPromptsMatchLlamaCpp(_ name: String) throws {
        let ref = try TokenizerReference.vocabulary(name)
        let tok = try TokenizerReference.tokenizer(name)
        #expect(!ref.prompts.isEmpty)
        for p in ref.prompts {
            var ids = tok.addBos ? [try #require(tok.bosTokenId)] : []
            ids += tok.encode(p.text, parseSpecial: true)
            #expect(ids == p.ids, "\(name) prompt \(p.text.debugDescription)")
        }
    }

    @Test(arguments: vocabularies)
    func vocabularyFlagsAndStopTokensMatchLlamaCpp(_ name: String) throws {
        let ref = try TokenizerReference.vocabulary(name)
        let tok = try TokenizerReference.tokenizer(name)
        #expect(tok.vocabularySize == ref.n_vocab)
        #expect(tok.addBos == ref.add_bos)
        #expect(tok.bosTokenId == ref.bos)
        #expect(tok.eosTokenId == ref.eos)
        // llama.cpp's EOG set (<|endoftext|>, <|im_end|> and SmolLM2's <reponame>) is exactly what stops generation.
        #expect(tok.stopTokenIds == Set(ref.eog_ids))
    }

    /// Where llama.cpp's ids differ between the rule sets, so the comparisons above cannot pass with the wrong one:
    /// line breaks after punctuation and whitespace runs (Qwen2/Llama 3 versus GPT-2), digit groups and whole-piece
    /// lookups (Llama 3 versus Qwen2, made visible by the fixture's extra tokens "123", "2024", " zyxwv", …).
    @Test func rulesDifferWhereLlamaCppSaysTheyDo() throws {
        func differing(_ a: String, _ b: String) throws -> Set<String> {
            let x = try TokenizerReference.vocabulary(a), y = try TokenizerReference.vocabulary(b)
            return Set(zip(x.cases, y.cases).filter { $0.0.ids != $0.1.ids }.map(\.0.text))
        }
        let gptVsQwen = try differing("smollm2-smollm", "smollm2-qwen2")
        #expect(gptVsQwen.contains("windows\r\nline\r\nbreaks\r\n"))
        #expect(gptVsQwen.contains("line one\nline two\n\nline four\n\n\n\nend"))
        let qwenVsLlama = try differing("smollm2-qwen2", "smollm2-llama-bpe")
        #expect(qwenVsLlama.contains("1234567"))
        #expect(qwenVsLlama.contains(" zyxwv zyxwvu zyx wv"))
        let tok = try TokenizerReference.tokenizer("smollm2-llama-bpe")
        let zyxwv = try #require((tok as? BPETokenizer)?.tokenId(forPiece: "Ġzyxwv"))
        #expect(tok.encode(" zyxwv", parseSpecial: false) == [zyxwv])
        #expect(try TokenizerReference.tokenizer("smollm2-qwen2").encode(" zyxwv", parseSpecial: false).count > 1)
    }

    @Test func splittingRules() {
        let q = PreTokenizer(kind: .qwen2), l = PreTokenizer(kind: .llama3)
        #expect(q.split("1234567") == ["1", "2", "3", "4", "5", "6", "7"])
        #expect(l.split("1234567") == ["123", "456", "7"])
        #expect(q.split("abc123def") == ["abc", "1", "2", "3", "def"])
        #expect(q.split("DON'T stop") == ["DON", "'T", " stop"])
        #expect(q.split("a  \n  b") == ["a", "  \n", " ", " b"])
        #expect(q.split("x!!!\n\ny") == ["x", "!!!\n\n", "y"])
        let text = "Mixed: 日本語 ١٢٣ emoji 👩‍👩‍👧, tabs\t\tand  spaces  \n"
        #expect(q.split(text).joined() == text)
    }

    @Test func preTokenizerNamesFollowLlamaCpp() throws {
        #expect(try PreTokenizer(preName: "qwen2").kind == .qwen2)
        #expect(try PreTokenizer(preName: "deepseek-r1-qwen").kind == .qwen2)
        #expect(try !PreTokenizer(preName: "qwen2").ignoresMerges)
        #expect(try !PreTokenizer(preName: "qwen2").defaultAddBos)
        for name in ["llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral"] {
            let p = try PreTokenizer(preName: name)
            #expect(p.kind == .llama3 && p.ignoresMerges && p.defaultAddBos, "\(name)")
        }
        #expect(try PreTokenizer(preName: "gpt-2").kind == .gpt2)
        #expect(try PreTokenizer(preName: "mellum2").kind == .smollm)
        // llama.cpp's default BPE splitting is four regexes, not GPT-2's: refused rather than approximated, as are
        // names llama.cpp maps to rules PocketLM lacks and names llama.cpp does not know.
        for name in [nil, "", "default", "dbrx", "tekken", "deepseek-v3", "qwen35", "mystery"] as [String?] {
            #expect(throws: TokenizerError.unsupportedPreTokenizer(name ?? "")) { try PreTokenizer(preName: name) }
        }
        let message = TokenizerError.unsupportedPreTokenizer("default").localizedDescription
        #expect(message.contains("'default'") && message.contains("qwen2") && message.contains("llama-bpe"))
    }
}
