import Dispatch

/// Runs the rows of one matrix-vector product (or the heads of one attention step) on several cores.
///
/// Work is split into `threadCount` contiguous parts so each thread streams its own slice of the weights and
/// the result does not depend on the thread count (each output element is computed whole by one thread).
public final class ThreadPool: @unchecked Sendable {
    public let threadCount: Int

    public init(threadCount: Int) {
        self.threadCount = max(1, threadCount)
    }

    /// Calls `body(part)` for part in 0..<parts, in parallel when more than one thread is allowed.
    @inline(__always)
    public func run(parts: Int, _ body: (Int) -> Void) {
        if threadCount == 1 || parts <= 1 {
            for p in 0..<parts { body(p) }
        } else {
            // The parts touch disjoint memory; the caller waits for all of them before reading the results.
            withoutActuallyEscaping(body) { escaping in
                let sendable = unsafeBitCast(escaping, to: (@Sendable (Int) -> Void).self)
                DispatchQueue.concurrentPerform(iterations: parts, execute: sendable)
            }
        }
    }

    /// Splits 0..<count into `threadCount` chunks (multiples of `granularity` where possible) and runs them.
    @inline(__always)
    public func parallelRanges(_ count: Int, granularity: Int = 1, _ body: (Range<Int>) -> Void) {
        let parts = min(threadCount, max(1, count / max(granularity, 1)))
        if parts == 1 {
            body(0..<count)
            return
        }
        let units = (count + granularity - 1) / granularity
        run(parts: parts) { p in
            let lo = min(count, (units * p / parts) * granularity)
            let hi = min(count, (units * (p + 1) / parts) * granularity)
            if lo < hi { body(lo..<hi) }
        }
    }
}
