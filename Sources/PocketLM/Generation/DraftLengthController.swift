/// How many tokens to draft next: more while the target accepts them all, fewer after a miss, none (plain
/// decoding) after drafts fail outright while drafting does not pay (or before its cost is known), probing again
/// after a back-off that doubles with each failure; and never more than pays for itself at the pass costs
/// measured so far.
///
/// Why: a verify pass of k drafts costs more than a decode step — how much depends on the CPU and on what else
/// runs on it (SmolLM2 Q4_1 on 2 shared cores: 1.8 steps for 1 draft, 3.9 for 8; see README) — so drafts that
/// are rejected make decoding slower than plain; open-ended text must not pay for the drafts input-grounded text
/// profits from. With timings (`recordPlainStep`, `recordVerifyPass`) the length is capped where the expected
/// tokens per pass, (1 − αᵏ⁺¹)/(1 − α) for a per-draft acceptance α, over the pass's cost is best. Timings
/// change only how many tokens are drafted, never which tokens come out.
public struct DraftLengthController: Sendable {
    public let maxDraft: Int
    /// The length the next pass asks for (while not backing off), before the cost cap.
    public private(set) var length: Int
    /// Plain steps still to take before the next probe.
    public private(set) var backoff = 0
    private var failures = 0
    static let longestBackoff = 32

    /// Seconds of a plain decode step (moving average), and the extra cost of each draft in a verify pass as a
    /// share of a step: a pass of k drafts costs step × (1 + perDraft × k).
    public private(set) var stepSeconds: Double?
    public private(set) var perDraftCost: Double?
    /// Decayed counts of accepted drafts and of passes that ended at a rejection: α = accepted ÷ (accepted + misses).
    private var acceptedCount = 0.0, missCount = 0.0
    /// Passes since the last plain step; a plain step is timed when the average is missing or old.
    private var passesSincePlain = 0
    private var wantsPlainStep = false

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
        // Keep the step time fresh: it is the unit every pass cost is measured in.
        if wantsPlainStep || (stepSeconds != nil && passesSincePlain >= 64) { return 0 }
        return min(length, costCap)
    }

    /// The longest draft worth its cost: argmax over k of expected tokens ÷ cost (at least 1 so acceptance keeps
    /// being measured; the back-off handles drafts not worth even that).
    public var costCap: Int { bestDraft?.length ?? maxDraft }

    /// The draft length with the most expected tokens per step of cost, and that rate (a plain step's is 1); nil
    /// before a pass cost has been measured.
    var bestDraft: (length: Int, tokensPerStep: Double)? {
        guard let perDraftCost else { return nil }
        let alpha = acceptedCount + missCount > 0 ? acceptedCount / (acceptedCount + missCount) : 1
        var best = 1, bestRate = 0.0
        var expected = 1.0, power = 1.0
        for k in 1...maxDraft {
            power *= alpha
            expected += power
            let rate = expected / (1 + perDraftCost * Double(k))
            if rate > bestRate { bestRate = rate; best = k }
        }
        return (best, bestRate)
    }

    /// The outcome of a pass that verified `drafted` (≥ 1) tokens, `accepted` of them agreed with the target.
    public mutating func record(drafted: Int, accepted: Int) {
        guard drafted > 0 else { return }
        passesSincePlain += 1
        acceptedCount = 0.9 * acceptedCount + Double(accepted)
        missCount = 0.9 * missCount + (accepted < drafted ? 1 : 0)
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
            // While the measured acceptance and pass costs say drafting still beats plain decoding, a miss is
            // just a miss: keep drafting (a cheap drafter like prompt lookup only drafts where its context
            // matches). Without timings, or once drafting loses, back off.
            if let rate = bestDraft?.tokensPerStep, rate > 1 {
                backoff = 0
            } else {
                backoff = min(Self.longestBackoff, (1 << min(failures, 6)) - 1)
            }
        }
    }

    /// The time of a plain decode step.
    public mutating func recordPlainStep(seconds: Double) {
        passesSincePlain = 0
        wantsPlainStep = false
        stepSeconds = stepSeconds.map { 0.8 * $0 + 0.2 * seconds } ?? seconds
    }

    /// The time of a verify pass of `drafts` drafts (+ 1 token), in plain steps once a step time is known.
    public mutating func recordVerifyPass(drafts: Int, seconds: Double) {
        guard drafts > 0, let step = stepSeconds, step > 0 else {
            // Not expressible in steps yet: next() takes a plain step to time one.
            wantsPlainStep = true
            return
        }
        let extra = max(0, (seconds / step - 1) / Double(drafts))
        perDraftCost = perDraftCost.map { 0.8 * $0 + 0.2 * extra } ?? extra
    }
}
