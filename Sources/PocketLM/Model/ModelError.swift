import Foundation

/// Errors about a model's shape or about a request the model cannot serve.
public enum ModelError: Error, LocalizedError, Equatable {
    case unsupportedArchitecture(String)
    case invalidConfig(field: String, reason: String)
    /// The file asks for something that changes the math and is not implemented (named by its metadata key).
    case unsupportedFeature(key: String, reason: String)
    /// The file has a tensor the architecture does not use: running without it would compute another model.
    case unexpectedTensor(name: String, architecture: String)
    case contextOverflow(needed: Int, context: Int)
    case tokenOutOfRange(token: Int, vocabSize: Int)
    case emptyPrompt

    public var errorDescription: String? {
        switch self {
        case .unsupportedArchitecture(let a):
            "unsupported model architecture '\(a)' (supported: \(ModelConfig.supportedArchitectures.joined(separator: ", ")))"
        case .invalidConfig(let f, let r): "invalid model config: \(f): \(r)"
        case .unsupportedFeature(let k, let r): "the model file's '\(k)' asks for \(r), which PocketLM does not implement"
        case .unexpectedTensor(let n, let a): "the model file has a tensor '\(n)' that PocketLM's \(a) architecture does not use (a feature it does not implement)"
        case .contextOverflow(let n, let c): "\(n) tokens do not fit in the context of \(c) tokens (raise the context length or shorten the input)"
        case .tokenOutOfRange(let t, let v): "token id \(t) is outside the vocabulary (0..<\(v))"
        case .emptyPrompt: "the prompt is empty: give at least one token"
        }
    }
}
