#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Keys and values of every executed pass (one slot per pass of the `LayerSchedule`), for `capacity` positions.
///
/// Stored as F16, as llama.cpp does by default: half the memory and bandwidth of F32, and the same rounding as the
/// reference, so greedy decoding agrees token for token. Head-major: each slot holds, per KV head, `capacity` rows
/// of `headDim` values, so attention over one head reads one contiguous run (the hardware prefetcher follows it;
/// position-major rows made each head a strided read, and attention waited on memory). The memory is reserved up
/// front but only the pages that positions actually reach are touched, so a long context costs address space,
/// not resident memory.
public final class KVCache: @unchecked Sendable {
    public let slots: Int
    public let capacity: Int
    public let kvDim: Int
    public let kvHeads: Int
    public let headDim: Int
    private let keys: UnsafeMutablePointer<UInt16>
    private let values: UnsafeMutablePointer<UInt16>

    private let mapping: UnsafeMutableRawPointer
    private let mappedBytes: Int

    /// Reserves address space for the whole context (anonymous, lazily committed). A request the machine
    /// cannot map is an error, not a crash.
    public init(slots: Int, capacity: Int, kvHeads: Int, headDim: Int) throws {
        self.slots = slots
        self.capacity = capacity
        self.kvHeads = kvHeads
        self.headDim = headDim
        let kvDim = kvHeads * headDim
        self.kvDim = kvDim
        let (count, o1) = slots.multipliedReportingOverflow(by: capacity * kvDim)
        let (bytes, o2) = count.multipliedReportingOverflow(by: 2 * MemoryLayout<UInt16>.size)
        guard !o1, !o2, bytes > 0,
              let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              p != MAP_FAILED else {
            throw ModelError.invalidConfig(field: "context",
                                           reason: "a KV cache for \(capacity) positions × \(slots) layers does not fit in memory")
        }
        mapping = p
        mappedBytes = bytes
        keys = p.bindMemory(to: UInt16.self, capacity: 2 * count)
        values = keys + count
    }

    deinit {
        munmap(mapping, mappedBytes)
    }

    /// Bytes one position costs across all slots.
    public var bytesPerToken: Int { 2 * slots * kvDim * MemoryLayout<UInt16>.size }

    /// Position p of KV head h in pass `slot`: `keys(slot: slot, head: h) + p * headDim`, headDim values.
    @inline(__always) public func keys(slot: Int, head: Int) -> UnsafeMutablePointer<UInt16> {
        keys + (slot * kvHeads + head) * capacity * headDim
    }
    @inline(__always) public func values(slot: Int, head: Int) -> UnsafeMutablePointer<UInt16> {
        values + (slot * kvHeads + head) * capacity * headDim
    }
}
