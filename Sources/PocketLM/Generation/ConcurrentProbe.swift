import CKernels
import Foundation
import Synchronization

/// Runs a probe on `parts` threads of its own that start together, and times them: the machine's bounds
/// (`MemoryBandwidth`, `ComputePeak`) are what all the threads draw at once.
///
/// The threads are the probe's own, started together at a barrier, not a `ThreadPool`'s: the pool lets its caller run
/// a part no worker has claimed yet, so on a busy machine a pass through it could be one thread's work and the bound
/// it gives one thread's.
enum ConcurrentProbe {
    /// Seconds from the start signal until every part of `body` (called with 0 ..< parts, part 0 on this thread) has
    /// returned.
    static func seconds(parts: Int, _ body: @escaping @Sendable (Int) -> Void) -> Double {
        let start = StartBarrier()
        let done = DispatchGroup()
        for p in 1..<max(1, parts) {
            done.enter()
            let thread = Thread {
                start.ready.add(1, ordering: .sequentiallyConsistent)
                while !start.go.load(ordering: .acquiring) { pl_cpu_relax() }
                body(p)
                done.leave()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        while start.ready.load(ordering: .acquiring) < parts - 1 { sched_yield() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        start.go.store(true, ordering: .releasing)
        body(0)
        done.wait()
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }
}

/// The probe's threads wait here until all have started, so their work overlaps.
private final class StartBarrier: Sendable {
    let ready = Atomic<Int>(0)
    let go = Atomic<Bool>(false)
}
