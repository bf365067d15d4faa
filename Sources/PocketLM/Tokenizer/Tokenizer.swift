/// Turns text into token ids and back, the way llama.cpp does for the same GGUF file.
///
/// Ids are `Int` at this boundary for convenience; they are always in `0..<vocabularySize`.
public protocol Tokenizer: Sendable {
    /// Number of tokens in the vocabulary; valid ids are `0..<vocabularySize`.
    var vocabularySize: Int { get }
    /// The beginning-of-sequence token, when the model has one.
    var bosTokenId: Int? { get }
    /// The end-of-sequence token, when the model has one.
    var eosTokenId: Int? { get }
    /// Whether a prompt should start with `bosTokenId` (`tokenizer.ggml.add_bos_token`, else the model family's
    /// default). `encode` never adds it: the caller does, once, at the start of a whole prompt.
    var addBos: Bool { get }
    /// Tokens that end generation: llama.cpp's end-of-generation set — EOS, EOT and EOM, the end-of-turn markers
    /// the vocabulary spells (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, `<|eom_id|>`, `<|endoftext|>`, `</s>`,
    /// …) and the fill-in-the-middle pad/repo/separator markers (see `LlamaCppSpecialRules`).
    var stopTokenIds: Set<Int> { get }

    /// The ids for `text`. With `parseSpecial`, the text of a control token (e.g. `<|im_start|>`) becomes that
    /// single token; without it, such text is tokenized like any other (use this for user-supplied text so it
    /// cannot forge turn markers). Never adds BOS.
    func encode(_ text: String, parseSpecial: Bool) -> [Int]
    /// The text for `ids`; bytes that do not form valid UTF-8 become U+FFFD. With `skipSpecial`, control and
    /// unknown tokens contribute nothing. Ids outside the vocabulary contribute nothing.
    func decode(_ ids: [Int], skipSpecial: Bool) -> String
    /// The raw bytes token `id` stands for (possibly part of a UTF-8 character). Control tokens give their text,
    /// e.g. "<|im_end|>"; an id outside the vocabulary gives no bytes.
    func tokenBytes(_ id: Int) -> [UInt8]
    /// The vocabulary string exactly as stored in the model file (byte-level BPE stores " the" as "Ġthe").
    func piece(_ id: Int) -> String
    /// Whether `id` is a control token (turn markers, BOS/EOS and the like).
    func isControl(_ id: Int) -> Bool
}

extension Tokenizer {
    /// Token ids for a prompt: BOS first when the model asks for it, special tokens parsed only when asked
    /// (rendered chat prompts), never in plain user text.
    public func encodePrompt(_ text: String, parseSpecial: Bool) -> [Int] {
        var ids: [Int] = []
        if addBos, let bos = bosTokenId { ids.append(bos) }
        ids += encode(text, parseSpecial: parseSpecial)
        return ids
    }
}

/// Builds the tokenizer a GGUF file describes.
public enum TokenizerLoader {
    /// Reads `tokenizer.ggml.*` and returns the matching tokenizer.
    ///
    /// Throws `GGUFError` when a required key is missing or mistyped, and `TokenizerError` when the tokenizer
    /// kind is not implemented or the metadata is inconsistent.
    public static func load(from gguf: GGUFFile) throws -> any Tokenizer {
        let model = try gguf.string("tokenizer.ggml.model")
        switch model {
        case "gpt2":
            return try BPETokenizer(gguf: gguf)
        case "llama":
            return try SentencePieceTokenizer(gguf: gguf)
        default:
            throw TokenizerError.unsupportedModel(model)
        }
    }
}
