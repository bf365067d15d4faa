import CKernels
import Foundation

/// How fast this machine's memory delivers data to `pool`'s threads right now: what bounds decode, which reads
/// every weight once per token. Measured in the same run as the model (the host's load moves it by up to 2×).
public enum MemoryBandwidth {
    /// Bytes per second: `pool.threadCount` threads each read their share of a `bytes`-long buffer (larger than the
    /// last-level cache) at once, `repetitions` times after one untimed pass; the median pass. Each thread reads its
    /// share as 1, 2, 3 and 4 streams in lockstep, and the fastest of the four medians is the figure: the packed
    /// decode kernels read three row groups at once, and several streams draw ~15–30% more from this machine's
    /// memory than one, so a one-stream figure would be a bound those kernels exceed. The threads are the probe's
    /// own (`ConcurrentProbe`).
    public static func measure(pool: ThreadPool, bytes: Int = 256 << 20, repetitions: Int = 7) -> Double {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { buffer.deallocate() }
        memset(buffer, 1, bytes)
        let parts = pool.threadCount
        let sink = UnsafeMutablePointer<UInt64>.allocate(capacity: parts)
        defer { sink.deallocate() }
        // Addresses, not pointers, cross into the threads (the buffer outlives every pass).
        let bufferAddress = Int(bitPattern: buffer), sinkAddress = Int(bitPattern: sink)
        func pass(streams: Int32) -> Double {
            let seconds = ConcurrentProbe.seconds(parts: parts) { p in
                let share = ThreadPool.share(bytes, granularity: 4096, part: p, parts: parts)
                let base = UnsafeRawPointer(bitPattern: bufferAddress)! + share.lowerBound
                UnsafeMutablePointer<UInt64>(bitPattern: sinkAddress)![p] = pl_read_memory_streams(base, share.count, streams)
            }
            return Double(bytes) / seconds
        }
        _ = pass(streams: 1)
        return (Int32(1)...4).map { streams in
            let rates = (0..<repetitions).map { _ in pass(streams: streams) }.sorted()
            return rates[rates.count / 2]
        }.max()!
    }
}
