import Foundation

/// Everything that can stop a tokenizer or chat template from being built, each case naming what is at fault.
///
/// Missing or mistyped metadata keys surface as `GGUFError` from the GGUF reader (which already names the key);
/// these cases cover what is wrong with metadata that is present and well-typed.
public enum TokenizerError: Error, LocalizedError, Equatable, Sendable {
    /// `tokenizer.ggml.model` names a tokenizer family PocketLM does not implement.
    case unsupportedModel(String)
    /// `tokenizer.ggml.pre` names a pre-tokenizer (splitting regex) PocketLM does not implement.
    case unsupportedPreTokenizer(String)
    /// A tokenizer metadata value is present but unusable.
    case invalidMetadata(key: String, reason: String)
    /// A special-token id points outside the vocabulary.
    case tokenIdOutOfRange(key: String, id: Int, vocabularySize: Int)
    /// The chat template is not one PocketLM can render (ChatML, Gemma and Llama 3 are implemented).
    case unsupportedChatTemplate(String)

    public var errorDescription: String? {
        switch self {
        case .unsupportedModel(let m):
            "tokenizer model '\(m)' is not supported (supported: gpt2 byte-level BPE, llama SentencePiece)"
        case .unsupportedPreTokenizer(let p):
            "pre-tokenizer '\(p.isEmpty ? "(none)" : p)' (tokenizer.ggml.pre) is not supported; PocketLM implements "
                + "llama.cpp's GPT-2, SmolLM, Llama 3 and Qwen2 splitting: "
                + PreTokenizer.supportedPreNames.joined(separator: ", ")
        case .invalidMetadata(let k, let r):
            "tokenizer metadata '\(k)' is invalid: \(r)"
        case .tokenIdOutOfRange(let k, let id, let n):
            "tokenizer metadata '\(k)' = \(id) is outside the vocabulary of \(n) tokens"
        case .unsupportedChatTemplate(let r):
            "unsupported chat template: \(r)"
        }
    }
}
