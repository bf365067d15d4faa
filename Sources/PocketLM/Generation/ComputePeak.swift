import CKernels
import Foundation

/// How many multiply-adds `pool`'s threads retire per second when nothing but arithmetic holds them up: the bound of
/// work that is not memory-bound, as a prompt chunk's attention over a deep KV cache is (each key and value row
/// serves a tile of queries from cache). Measured in the same run as the figure it bounds, like `MemoryBandwidth`.
public enum ComputePeak {
    /// The multiply-adds a probe times.
    public enum Kind: Sendable {
        /// F32 fused multiply-adds at the kernels' vector width (the F16 KV cache's attention computes in F32).
        case f32FMA
        /// bf16 pair dot products (vdpbf16ps: two products a 32-bit lane, the BF16 KV cache's attention).
        case bf16Dot
    }

    /// Multiply-adds per second of all `pool.threadCount` threads at once: the fastest of `repetitions` passes of
    /// `steps` rounds each (~20 ms of a 3.5 GHz core) after one untimed pass — other work on the machine only ever
    /// slows a pass, and a bound must not sit below what the cores can do; nil when this CPU (or the kernels' tier)
    /// lacks `kind`.
    public static func measure(pool: ThreadPool, kind: Kind, steps: Int = 5_000_000, repetitions: Int = 5) -> Double? {
        let code: Int32 = kind == .f32FMA ? Int32(PL_PROBE_F32_FMA) : Int32(PL_PROBE_BF16_DOT)
        var perThread: Int64 = 0
        _ = pl_multiply_add_probe(code, 1, &perThread)
        guard perThread > 0 else { return nil }
        let parts = pool.threadCount
        let sink = UnsafeMutablePointer<Float>.allocate(capacity: parts)
        defer { sink.deallocate() }
        let sinkAddress = Int(bitPattern: sink)
        func pass() -> Double {
            let seconds = ConcurrentProbe.seconds(parts: parts) { p in
                var done: Int64 = 0
                UnsafeMutablePointer<Float>(bitPattern: sinkAddress)![p] = pl_multiply_add_probe(code, Int64(steps), &done)
            }
            return Double(perThread) * Double(steps) * Double(parts) / seconds
        }
        _ = pass()
        return (0..<repetitions).map { _ in pass() }.max()!
    }
}
