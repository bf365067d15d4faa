import CKernels
import Foundation

/// How fast this machine's memory delivers data to `pool`'s threads right now: what bounds decode, which reads
/// every weight once per token. Measured in the same run as the model (the host's load moves it by up to 2×).
public enum MemoryBandwidth {
    /// Bytes per second: each thread reads its share of a `bytes`-long buffer (larger than the last-level cache),
    /// `repetitions` times after one untimed pass; the median pass.
    public static func measure(pool: ThreadPool, bytes: Int = 256 << 20, repetitions: Int = 7) -> Double {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { buffer.deallocate() }
        memset(buffer, 1, bytes)
        let parts = pool.threadCount
        let sink = UnsafeMutablePointer<UInt64>.allocate(capacity: parts)
        defer { sink.deallocate() }
        func pass() -> Double {
            let t0 = DispatchTime.now().uptimeNanoseconds
            pool.run(parts: parts) { p in
                let share = ThreadPool.share(bytes, granularity: 4096, part: p, parts: parts)
                sink[p] = pl_read_memory(buffer + share.lowerBound, share.count)
            }
            return Double(bytes) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        _ = pass()
        let rates = (0..<repetitions).map { _ in pass() }.sorted()
        return rates[rates.count / 2]
    }
}
