import CKernels
import Foundation
import Synchronization

/// Runs the parts of one matrix-vector product (or one attention step) on several cores.
///
/// A token's forward pass is ~250 small parallel steps of 10–100 µs each, so handing out work must cost
/// microseconds: the workers are persistent threads that spin on a round counter while work keeps coming,
/// and sleep on a condition variable only after about a millisecond without any (so an idle model burns no CPU).
/// Work is split into up to `threadCount` contiguous parts, each claimed by whichever thread gets to it first, so a
/// thread streams its own slice of the weights and a result does not depend on the thread count or on which thread
/// ran a part (each output element is computed whole by one call). A worker that has not joined a step by the time
/// the caller has done all of it is not waited for (see `run`).
public final class ThreadPool: @unchecked Sendable {
    public let threadCount: Int
    private let shared: Shared

    /// State the workers use. Workers hold it strongly (never the pool), so the pool's deinit can stop them
    /// while they still read it.
    private final class Shared: @unchecked Sendable {
        /// The current round: its generation (bits 17 and up), whether it is closed (bit 16: no worker may join it
        /// any more) and how many workers are inside it (bits 0–15). One word, so a worker joins a round only while
        /// it is open and is the round it saw begin — a compare-and-exchange, which fails once the caller closes it.
        let round = Atomic<Int>(0)
        /// The next unclaimed part of the round's job.
        let nextPart = Atomic<Int>(0)
        let sleepers = Atomic<Int>(0)
        let stopping = Atomic<Bool>(false)
        var job: ((Int) -> Void)?
        /// The next unclaimed unit of a `dynamicRanges` call.
        let cursor = Atomic<Int>(0)
        var jobParts = 0
        let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        let wakeUp = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        let finished = DispatchSemaphore(value: 0)

        init() {
            pthread_mutex_init(mutex, nil)
            pthread_cond_init(wakeUp, nil)
        }

        deinit {
            pthread_cond_destroy(wakeUp)
            pthread_mutex_destroy(mutex)
            wakeUp.deallocate()
            mutex.deallocate()
        }

        func wakeSleepers() {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(wakeUp)
            pthread_mutex_unlock(mutex)
        }
    }

    /// Polls before a worker goes to sleep (each poll is one `pause`, ~10–40 ns).
    private static let spinLimit = 50_000
    private static let generationShift = 17
    private static let closedBit = 1 << 16
    private static let insideMask = (1 << 16) - 1
    @inline(__always) private static func generation(of round: Int) -> Int { round >> generationShift }

    public init(threadCount: Int) {
        self.threadCount = max(1, threadCount)
        let shared = Shared()
        self.shared = shared
        for index in 1..<self.threadCount {
            let thread = Thread { ThreadPool.workerLoop(shared, index: index) }
            thread.name = "pocketlm-worker-\(index)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    deinit {
        shared.stopping.store(true, ordering: .sequentiallyConsistent)
        shared.round.add(1 << ThreadPool.generationShift, ordering: .sequentiallyConsistent)
        shared.wakeSleepers()
        for _ in 1..<threadCount { shared.finished.wait() }
    }

    /// Calls `body(part)` once for each part in 0..<parts (parts ≤ threadCount), in parallel, and returns when all
    /// are done. The caller runs part 0; the workers claim the others as they wake. A part no worker has claimed by
    /// the time the caller is done with its own is run by the caller, and the round is then closed to workers that
    /// have not joined it yet: on a busy machine a worker that is not on a core (a wake-up that takes tens of
    /// microseconds, a time slice given to another process) no longer holds up every step until it is scheduled.
    /// Parts may therefore run one after another on one thread; no part may wait for another.
    public func run(parts: Int, _ body: (Int) -> Void) {
        precondition(parts <= threadCount, "at most one part per thread")
        if parts <= 1 {
            if parts == 1 { body(0) }
            return
        }
        let s = shared
        withoutActuallyEscaping(body) { escaping in
            s.job = escaping
            s.jobParts = parts
            s.nextPart.store(1, ordering: .relaxed)
            // A new open round with nobody inside; the store publishes the job to the workers that join it.
            let generation = ThreadPool.generation(of: s.round.load(ordering: .relaxed)) + 1
            s.round.store(generation << ThreadPool.generationShift, ordering: .sequentiallyConsistent)
            if s.sleepers.load(ordering: .sequentiallyConsistent) > 0 { s.wakeSleepers() }
            escaping(0)
            // Then whatever parts no worker has claimed, as a joined worker does.
            ThreadPool.runClaimedParts(s)
            // Close the round, then wait for the workers inside it; yield now and then so a descheduled worker
            // gets the core back on a busy machine instead of waiting out our time slice.
            var state = s.round.bitwiseOr(ThreadPool.closedBit, ordering: .acquiringAndReleasing).newValue
            var spins = 0
            while state & ThreadPool.insideMask != 0 {
                spins += 1
                if spins & 255 == 0 { sched_yield() } else { pl_cpu_relax() }
                state = s.round.load(ordering: .acquiring)
            }
            s.job = nil
        }
    }

    /// Splits 0..<count into up to `threadCount` chunks (multiples of `granularity` where possible) and runs them.
    @inline(__always)
    public func parallelRanges(_ count: Int, granularity: Int = 1, _ body: (Range<Int>) -> Void) {
        let units = (count + granularity - 1) / max(granularity, 1)
        let parts = min(threadCount, max(1, units))
        if parts == 1 {
            body(0..<count)
            return
        }
        run(parts: parts) { p in
            let range = ThreadPool.share(count, granularity: granularity, part: p, parts: parts)
            if !range.isEmpty { body(range) }
        }
    }

    /// Like `parallelRanges`, but the threads claim chunks as they go instead of taking fixed equal shares: a thread
    /// that streams its weights faster, or starts sooner, takes more, so the step ends when the work does rather than
    /// when the slowest share does (a descheduled or slower thread no longer holds up the other). Chunks shrink as
    /// the work runs out (half of what is left per thread, down to `minimumUnits` units of `granularity`), so the
    /// last ones are short while the first are long (each chunk restarts the kernel's weight streams). Each element
    /// is still computed whole by one call of `body`; which thread makes it does not change it.
    public func dynamicRanges(_ count: Int, granularity: Int = 1, minimumUnits: Int = 1, _ body: (Range<Int>) -> Void) {
        let g = max(granularity, 1)
        let units = (count + g - 1) / g
        let parts = min(threadCount, units)
        if parts <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        let s = shared
        s.cursor.store(0, ordering: .relaxed)
        let minimum = max(1, minimumUnits)
        run(parts: parts) { _ in
            var start = s.cursor.load(ordering: .relaxed)
            while start < units {
                let size = ThreadPool.chunkUnits(left: units - start, units: units, parts: parts, minimumUnits: minimum)
                let (exchanged, found) = s.cursor.compareExchange(expected: start, desired: start + size, ordering: .relaxed)
                if exchanged {
                    body(start * g..<Swift.min(count, (start + size) * g))
                    start = s.cursor.load(ordering: .relaxed)
                } else {
                    start = found
                }
            }
        }
    }

    /// The size of the next chunk `dynamicRanges` hands out, with `left` of `units` units unclaimed: half of what is
    /// left per thread, at least `minimumUnits`. Work too small for two minimum chunks per thread is cut into even
    /// shares instead, one per thread: chunks of the minimum would leave one thread the last lump (a 40-group matrix
    /// at a 28-group minimum went 28 + 12, a 96-group one 31 + 31 + 31 + 3, one thread doing twice the other's share
    /// of a step the other waits out).
    @inline(__always)
    public static func chunkUnits(left: Int, units: Int, parts: Int, minimumUnits: Int) -> Int {
        if units <= 2 * parts * minimumUnits { return Swift.min(left, (units + parts - 1) / parts) }
        return Swift.min(left, Swift.max(minimumUnits, left / (2 * parts)))
    }

    /// Part `part` of `parts` of 0..<count, cut at multiples of `granularity` (the last part takes the tail):
    /// the split `parallelRanges` uses, for callers that also need the part's index (per-thread scratch) or
    /// must know which rows a thread will get.
    @inline(__always)
    public static func share(_ count: Int, granularity: Int, part: Int, parts: Int) -> Range<Int> {
        let units = (count + granularity - 1) / max(granularity, 1)
        return min(count, units * part / parts * granularity)..<min(count, units * (part + 1) / parts * granularity)
    }

    /// The parts of the round a thread claims (a joined worker, and the caller after part 0). Its own function so a
    /// worker's reference to the job ends here, before it leaves the round (the caller's `withoutActuallyEscaping`
    /// checks that none is left).
    @inline(never)
    private static func runClaimedParts(_ s: Shared) {
        guard let job = s.job else { return }
        let parts = s.jobParts
        while true {
            let part = s.nextPart.add(1, ordering: .relaxed).oldValue
            if part >= parts { break }
            job(part)
        }
    }

    private static func workerLoop(_ s: Shared, index: Int) {
        var seen = 0
        while true {
            var spins = 0
            var state = s.round.load(ordering: .acquiring)
            while generation(of: state) == seen {
                spins += 1
                if spins < spinLimit {
                    if spins & 255 == 0 { sched_yield() } else { pl_cpu_relax() }
                } else {
                    pthread_mutex_lock(s.mutex)
                    s.sleepers.add(1, ordering: .sequentiallyConsistent)
                    while generation(of: s.round.load(ordering: .sequentiallyConsistent)) == seen {
                        pthread_cond_wait(s.wakeUp, s.mutex)
                    }
                    s.sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    pthread_mutex_unlock(s.mutex)
                    spins = 0
                }
                state = s.round.load(ordering: .acquiring)
            }
            seen = generation(of: state)
            if s.stopping.load(ordering: .acquiring) {
                s.finished.signal()
                return
            }
            // Join the round if it is still the one seen and still open; otherwise it is over (or a newer one has
            // begun, which the next pass of the loop joins).
            while generation(of: state) == seen && state & closedBit == 0 {
                let (joined, found) = s.round.compareExchange(expected: state, desired: state + 1, ordering: .acquiringAndReleasing)
                if joined {
                    runClaimedParts(s)
                    s.round.subtract(1, ordering: .releasing)
                    break
                }
                state = found
            }
        }
    }
}
