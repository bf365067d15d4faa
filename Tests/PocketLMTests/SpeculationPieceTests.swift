import Foundation
import Testing
import PocketLM

/// The parts of speculative decoding that need no model: the prompt-lookup drafter and the draft-length rule.
@Suite("Speculation pieces")
struct SpeculationPieceTests {
    func propose(_ history: [Int], limit: Int, drafter: PromptLookupDrafter? = nil) throws -> [Int] {
        let d = try drafter ?? PromptLookupDrafter()
        var out = [Int](repeating: -1, count: limit)
        let n = try history.withUnsafeBufferPointer { h in
            try out.withUnsafeMutableBufferPointer { try d.propose(after: h, limit: limit, into: $0.baseAddress!) }
        }
        return Array(out.prefix(n))
    }

    @Test("lookup drafts what followed the earlier occurrence that matches the latest tokens longest")
    func lookup() throws {
        // "7 8 9" occurred twice, each preceded by something other than 5: a tie, so the latest occurrence
        // (followed by 40 41) wins over the earlier (30 31).
        #expect(try propose([1, 7, 8, 9, 30, 31, 2, 7, 8, 9, 40, 41, 42, 5, 7, 8, 9], limit: 3) == [40, 41, 42])
        // The limit caps the draft; the continuation may run into the suffix itself.
        #expect(try propose([1, 2, 3, 1, 2], limit: 10) == [3, 1, 2])
        // A longer match beats a more recent shorter one: "4 5 6" → 99; "5 6" alone most recently → 77.
        #expect(try propose([4, 5, 6, 99, 8, 5, 6, 77, 4, 5, 6], limit: 1) == [99])
        // Longer than three tokens counts too: "1 2 3 4 5" → 50 beats the latest "2 3 4 5" → 60.
        #expect(try propose([1, 2, 3, 4, 5, 50, 9, 2, 3, 4, 5, 60, 1, 2, 3, 4, 5], limit: 1) == [50])
        // ... up to longestNgram: with 3, both agree for 3 tokens and the latest wins.
        #expect(try propose([1, 2, 3, 4, 5, 50, 9, 2, 3, 4, 5, 60, 1, 2, 3, 4, 5], limit: 1,
                            drafter: PromptLookupDrafter(longestNgram: 3)) == [60])
        // Only the last token matches: no draft by default (shortestNgram 2); with shortestNgram 1, the 1-gram.
        #expect(try propose([3, 9, 1, 2, 9], limit: 2) == [])
        #expect(try propose([3, 9, 1, 2, 9], limit: 2, drafter: PromptLookupDrafter(longestNgram: 3, shortestNgram: 1)) == [1, 2])
        // Nothing repeats, or too little history: no draft.
        #expect(try propose([1, 2, 3, 4], limit: 4) == [])
        #expect(try propose([5], limit: 4) == [])
        #expect(try propose([5, 5], limit: 4, drafter: PromptLookupDrafter(shortestNgram: 1)) == [5])
        #expect(try propose([5, 5], limit: 0) == [])
        #expect(throws: GenerationError.self) { try PromptLookupDrafter(longestNgram: 1, shortestNgram: 2) }
        #expect(throws: GenerationError.self) { try PromptLookupDrafter(longestNgram: 2, shortestNgram: 0) }
    }

    @Test("draft length: doubles on full hits, follows partial hits, backs off to plain decoding after misses")
    func lengths() {
        var c = DraftLengthController(maxDraft: 10)
        #expect(c.next() == 4)
        c.record(drafted: 4, accepted: 4)
        #expect(c.next() == 8)
        c.record(drafted: 8, accepted: 8)
        #expect(c.next() == 10)
        // A drafter that found fewer tokens than asked: a full hit, but no evidence for longer drafts.
        c.record(drafted: 3, accepted: 3)
        #expect(c.length == 10)
        c.record(drafted: 10, accepted: 2)
        #expect(c.next() == 3)
        // Misses: one plain step, then three, then seven … before each probe of one token.
        c.record(drafted: 3, accepted: 0)
        #expect(c.next() == 0)
        #expect(c.next() == 1)
        c.record(drafted: 1, accepted: 0)
        #expect((0..<3).map { _ in c.next() } == [0, 0, 0])
        #expect(c.next() == 1)
        c.record(drafted: 1, accepted: 0)
        #expect((0..<7).allSatisfy { _ in c.next() == 0 })
        #expect(c.next() == 1)
        // A hit ends the back-off.
        c.record(drafted: 1, accepted: 1)
        #expect(c.next() == 2)
        for _ in 0..<10 { c.record(drafted: 1, accepted: 0); while c.next() == 0 {} }
        #expect(c.backoff == 0)
        c.record(drafted: 1, accepted: 0)
        #expect(c.backoff == 32)
    }

    @Test("draft length: capped where expected tokens per pass over the measured pass cost is best")
    func costCap() {
        var c = DraftLengthController(maxDraft: 10)
        // A verify pass before any plain step: the next step is a plain one, to time it.
        c.recordVerifyPass(drafts: 4, seconds: 0.02)
        #expect(c.perDraftCost == nil)
        #expect(c.next() == 0)
        c.recordPlainStep(seconds: 0.01)
        #expect(c.costCap == 10)
        // Expensive drafts (each +0.8 of a step) that are half rejected: one draft at most.
        c.recordVerifyPass(drafts: 1, seconds: 0.018)
        #expect(abs(c.perDraftCost! - 0.8) < 1e-9)
        for _ in 0..<20 { c.record(drafted: 2, accepted: 1) }
        #expect(c.costCap == 1)
        #expect(c.next() == 1)
        // Cheap drafts (+0.1 of a step each) almost all accepted: the whole length.
        var d = DraftLengthController(maxDraft: 10)
        d.recordPlainStep(seconds: 0.01)
        d.recordVerifyPass(drafts: 10, seconds: 0.02)
        for _ in 0..<20 { d.record(drafted: 10, accepted: 10) }
        d.record(drafted: 10, accepted: 9)
        #expect(d.costCap == 10)
        // A plain step is timed again after 64 passes without one.
        for _ in 0..<64 { d.record(drafted: 10, accepted: 10) }
        #expect(d.next() == 0)
        d.recordPlainStep(seconds: 0.01)
        #expect(d.next() > 0)
    }

    @Test("draft length: a miss backs off only while drafting does not pay at the measured costs")
    func backoffFollowsCost() {
        // Cheap passes (+0.1 of a step per draft) and drafts mostly accepted: a miss is followed by another probe.
        var c = DraftLengthController(maxDraft: 10)
        c.recordPlainStep(seconds: 0.01)
        c.recordVerifyPass(drafts: 4, seconds: 0.014)
        for _ in 0..<5 { c.record(drafted: 4, accepted: 3) }
        c.record(drafted: 4, accepted: 0)
        #expect(c.backoff == 0)
        #expect(c.next() == 1)
        // Expensive passes (+0.9 of a step per draft) and half the drafts rejected: drafting loses, so back off.
        var d = DraftLengthController(maxDraft: 10)
        d.recordPlainStep(seconds: 0.01)
        d.recordVerifyPass(drafts: 1, seconds: 0.019)
        for _ in 0..<5 { d.record(drafted: 2, accepted: 1) }
        d.record(drafted: 1, accepted: 0)
        #expect(d.backoff > 0)
        #expect(d.next() == 0)
    }
}
