import CKernels
import Foundation
import Synchronization

/// Runs the parts of one matrix-vector product (or one attention step) on several cores.
///
/// A token's forward pass is ~250 small parallel steps of 10–100 µs each, so handing out work must cost
/// microseconds: the workers are persistent threads that spin on a generation counter while work keeps coming,
/// and sleep on a condition variable only after about a millisecond without any (so an idle model burns no CPU).
/// Work is split into `threadCount` contiguous parts, so each thread streams its own slice of the weights and a
/// result does not depend on the thread count (each output element is computed whole by one thread).
public final class ThreadPool: @unchecked Sendable {
    public let threadCount: Int

    private let generation = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private var job: ((Int) -> Void)?
    private var jobParts = 0
    private var mutex = pthread_mutex_t()
    private var wakeUp = pthread_cond_t()
    private var threads: [Thread] = []
    private let finished = DispatchSemaphore(value: 0)

    /// Polls before a worker goes to sleep (each poll is one `pause`, ~10–40 ns).
    private static let spinLimit = 50_000

    public init(threadCount: Int) {
        self.threadCount = max(1, threadCount)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wakeUp, nil)
        for index in 1..<self.threadCount {
            let thread = Thread { [unowned self] in self.workerLoop(index: index) }
            thread.name = "pocketlm-worker-\(index)"
            thread.stackSize = 1 << 20
            threads.append(thread)
            thread.start()
        }
    }

    deinit {
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(&mutex)
        pthread_cond_broadcast(&wakeUp)
        pthread_mutex_unlock(&mutex)
        for _ in threads { finished.wait() }
        pthread_cond_destroy(&wakeUp)
        pthread_mutex_destroy(&mutex)
    }

    /// Calls `body(part)` for part in 0..<parts (parts ≤ threadCount), in parallel, and returns when all are done.
    public func run(parts: Int, _ body: (Int) -> Void) {
        precondition(parts <= threadCount, "at most one part per thread")
        if parts <= 1 {
            if parts == 1 { body(0) }
            return
        }
        withoutActuallyEscaping(body) { escaping in
            job = escaping
            jobParts = parts
            pending.store(threadCount - 1, ordering: .relaxed)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(&mutex)
                pthread_cond_broadcast(&wakeUp)
                pthread_mutex_unlock(&mutex)
            }
            escaping(0)
            // Spin while the workers finish; yield now and then so a descheduled worker gets the core back
            // on a busy machine instead of waiting out our time slice.
            var spins = 0
            while pending.load(ordering: .acquiring) > 0 {
                spins += 1
                if spins & 255 == 0 { sched_yield() } else { pl_cpu_relax() }
            }
            job = nil
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
            let lo = min(count, (units * p / parts) * granularity)
            let hi = min(count, (units * (p + 1) / parts) * granularity)
            if lo < hi { body(lo..<hi) }
        }
    }

    private func workerLoop(index: Int) {
        var seen = 0
        while true {
            var spins = 0
            var current = generation.load(ordering: .acquiring)
            while current == seen {
                spins += 1
                if spins < Self.spinLimit {
                    if spins & 255 == 0 { sched_yield() } else { pl_cpu_relax() }
                } else {
                    pthread_mutex_lock(&mutex)
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    while generation.load(ordering: .sequentiallyConsistent) == seen {
                        pthread_cond_wait(&wakeUp, &mutex)
                    }
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    pthread_mutex_unlock(&mutex)
                    spins = 0
                }
                current = generation.load(ordering: .acquiring)
            }
            seen = current
            if stopping.load(ordering: .acquiring) {
                finished.signal()
                return
            }
            if index < jobParts, let job { job(index) }
            pending.subtract(1, ordering: .releasing)
        }
    }
}
