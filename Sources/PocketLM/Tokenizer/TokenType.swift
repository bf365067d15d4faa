/// What a vocabulary entry is, as GGUF's `tokenizer.ggml.token_type` numbers it (llama.cpp's `llama_token_type`).
///
/// The type decides how a token is encoded and decoded: control and unknown tokens are only produced from text
/// when special parsing is on and are dropped by `decode(_:skipSpecial: true)`; user-defined tokens are always
/// matched whole and decode to their text as stored; normal tokens are byte-level encoded.
public enum TokenType: Int, Sendable, Equatable {
    case undefined = 0
    case normal = 1
    case unknown = 2
    case control = 3
    case userDefined = 4
    case unused = 5
    case byte = 6

    /// Any number outside 0...6 is `undefined`, as in llama.cpp.
    public init(gguf value: Int) {
        self = TokenType(rawValue: value) ?? .undefined
    }
}
