import Foundation
import Synchronization
import Testing
import PocketLM

/// `ThreadPool.run` hands out parts by claims: the caller runs what no worker has claimed when it is done with its
/// own part, and closes the round to workers that have not joined it. Whatever the timing, every part of every round
/// runs exactly once, and never after `run` has returned (a late worker must not run a finished round's job).
@Suite("Thread pool")
struct ThreadPoolTests {
    /// Runs `rounds` rounds of `parts` parts; part bodies of varying length (most empty, so the caller often
    /// finishes and closes a round before a worker joins it). Returns the count of runs of each (round, part).
    private static func runRounds(pool: ThreadPool, rounds: Int, parts: Int, pauseEvery: Int? = nil) -> [Int] {
        let counts = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: rounds * parts)
        for i in 0..<(rounds * parts) { (counts + i).initialize(to: Atomic(0)) }
        defer { counts.deinitialize(count: rounds * parts); counts.deallocate() }
        var lateRuns = 0
        for round in 0..<rounds {
            if let every = pauseEvery, round % every == every - 1 {
                // Long enough for the workers to stop spinning and sleep (their spin limit is ~1 ms or less).
                Thread.sleep(forTimeInterval: 0.005)
            }
            let work = round % 7 == 0 ? 2000 : 0
            pool.run(parts: parts) { part in
                var x = 0
                for i in 0..<work { x &+= i &* part }
                if x == -1 { print(x) }
                counts[round * parts + part].add(1, ordering: .relaxed)
            }
            // Every part of this round has run by the time run returns.
            for part in 0..<parts where counts[round * parts + part].load(ordering: .relaxed) != 1 { lateRuns += 1 }
        }
        #expect(lateRuns == 0, "\(lateRuns) parts had not run exactly once when run returned")
        return (0..<(rounds * parts)).map { counts[$0].load(ordering: .relaxed) }
    }

    @Test("run calls every part of every round exactly once, on 1–4 threads, with the workers awake or asleep")
    func everyPartOnce() {
        for threads in [1, 2, 3, 4] {
            let pool = ThreadPool(threadCount: threads)
            for parts in 1...threads {
                let counts = ThreadPoolTests.runRounds(pool: pool, rounds: 20_000, parts: parts)
                #expect(counts.allSatisfy { $0 == 1 }, "\(threads) threads, \(parts) parts: a part ran \(counts.filter { $0 != 1 }.first ?? 0) times")
            }
            // Rounds that find the workers asleep on their condition variable.
            let counts = ThreadPoolTests.runRounds(pool: pool, rounds: 60, parts: threads, pauseEvery: 3)
            #expect(counts.allSatisfy { $0 == 1 }, "\(threads) threads after sleeps: a part ran \(counts.filter { $0 != 1 }.first ?? 0) times")
        }
    }

    @Test("the parts of a round all run before the next round starts (no finished round's job runs late)")
    func noLateJob() {
        let pool = ThreadPool(threadCount: 2)
        let current = Atomic<Int>(0)
        let mismatches = Atomic<Int>(0)
        for round in 1...50_000 {
            current.store(round, ordering: .relaxed)
            pool.run(parts: 2) { _ in
                // A worker running this closure after run returned would see a later round number.
                if current.load(ordering: .relaxed) != round { mismatches.add(1, ordering: .relaxed) }
            }
        }
        current.store(0, ordering: .relaxed)
        Thread.sleep(forTimeInterval: 0.01)
        #expect(mismatches.load(ordering: .relaxed) == 0)
    }

    @Test("dynamicRanges still covers every row once when the caller may do all of it")
    func dynamicCoverage() {
        let pool = ThreadPool(threadCount: 2)
        let counts = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 640)
        defer { counts.deallocate() }
        for _ in 0..<2000 {
            for i in 0..<640 { (counts + i).initialize(to: Atomic(0)) }
            pool.dynamicRanges(640, granularity: 16, minimumUnits: 9) { range in
                for i in range { counts[i].add(1, ordering: .relaxed) }
            }
            let bad = (0..<640).filter { counts[$0].load(ordering: .relaxed) != 1 }
            #expect(bad.isEmpty, "rows \(bad.prefix(4)) computed \(bad.first.map { counts[$0].load(ordering: .relaxed) } ?? 0) times")
            counts.deinitialize(count: 640)
            if !bad.isEmpty { break }
        }
    }
}
