import Foundation

/// Errors about a model's shape or about a request the model cannot serve.
public enum ModelError: Error, LocalizedError, Equatable {
    case unsupportedArchitecture(String)
    case invalidConfig(field: String, reason: String)
    case contextOverflow(needed: Int, context: Int)
    case tokenOutOfRange(token: Int, vocabSize: Int)
    case emptyPrompt

    public var errorDescription: String? {
        switch self {
        case .unsupportedArchitecture(let a):
            "unsupported model architecture '\(a)' (supported: \(ModelConfig.supportedArchitectures.sorted().joined(separator: ", ")))"
        case .invalidConfig(let f, let r): "invalid model config: \(f): \(r)"
        case .contextOverflow(let n, let c): "\(n) tokens do not fit in the context of \(c) tokens (raise --context or shorten the input)"
        case .tokenOutOfRange(let t, let v): "token id \(t) is outside the vocabulary (0..<\(v))"
        case .emptyPrompt: "the prompt is empty: give at least one token"
        }
    }
}
