/// How many tokens to draft next: more while the target accepts them all, fewer after a miss, none (plain
/// decoding) after drafts fail outright, probing again after a back-off that doubles with each failure.
///
/// Why: a verify pass of k drafts costs more than a decode step (on SmolLM2 Q4_1, about 1.1× for 1 draft and
/// 1.5–2× for 8, see README), so drafts that are rejected make decoding slower than plain; open-ended text must
/// not pay for the drafts input-grounded text profits from. The rule depends only on acceptances, so a run is
/// reproducible.
public struct DraftLengthController: Sendable {
    public let maxDraft: Int
    /// The length the next pass asks for (while not backing off).
    public private(set) var length: Int
    /// Plain steps still to take before the next probe.
    public private(set) var backoff = 0
    private var failures = 0
    static let longestBackoff = 32

    public init(maxDraft: Int) {
        self.maxDraft = max(1, maxDraft)
        length = min(self.maxDraft, 4)
    }

    /// The draft length for this step (0: decode plainly). Counts a back-off step.
    public mutating func next() -> Int {
        if backoff > 0 {
            backoff -= 1
            return 0
        }
        return length
    }

    /// The outcome of a pass that verified `drafted` (≥ 1) tokens, `accepted` of them agreed with the target.
    public mutating func record(drafted: Int, accepted: Int) {
        guard drafted > 0 else { return }
        if accepted == drafted {
            failures = 0
            // A full hit: lengthen only when the drafter filled the length asked for.
            if drafted >= length { length = min(maxDraft, 2 * length) }
        } else if accepted > 0 {
            failures = 0
            length = max(1, min(maxDraft, accepted + 1))
        } else {
            failures += 1
            length = 1
            backoff = min(Self.longestBackoff, (1 << min(failures, 6)) - 1)
        }
    }
}
