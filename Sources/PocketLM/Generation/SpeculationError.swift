import Foundation

/// Why speculative decoding cannot be set up as asked.
public enum SpeculationError: Error, LocalizedError, Equatable {
    /// The draft length must be at least 1 and leave room for the token before the drafts in one batch.
    case invalidDraftLength(Int, maxBatch: Int)
    /// The draft model's vocabulary is not the target's: its token ids would mean other tokens.
    case vocabularyMismatch(target: Int, draft: Int)

    public var errorDescription: String? {
        switch self {
        case .invalidDraftLength(let n, let b):
            "the draft length must be between 1 and \(max(1, b - 1)) (the model verifies at most \(b) tokens per pass), found \(n)"
        case .vocabularyMismatch(let t, let d):
            "the draft model's vocabulary has \(d) tokens but the target's has \(t): they must share one vocabulary"
        }
    }
}
