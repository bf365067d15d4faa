import Foundation

public enum GenerationError: Error, LocalizedError, Equatable {
    case invalidParameter(String, String)
    case promptTooLong(tokens: Int, context: Int)
    case maxTokensPastContext(prompt: Int, maxTokens: Int, context: Int)

    public var errorDescription: String? {
        switch self {
        case .invalidParameter(let name, let why): "invalid \(name): \(why)"
        case .promptTooLong(let t, let c): "the prompt is \(t) tokens long but the context holds \(c) (raise the context length or shorten the prompt)"
        case .maxTokensPastContext(let p, let m, let c):
            "\(m) new tokens after a \(p)-token prompt run past the context of \(c) tokens (at most \(max(0, c - p)) fit)"
        }
    }
}
