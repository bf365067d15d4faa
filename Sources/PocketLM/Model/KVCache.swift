/// Keys and values of every executed pass (one slot per pass of the `LayerSchedule`), for `capacity` positions.
///
/// Stored as F16 rows of `kvDim` values per position, as llama.cpp does by default: half the memory and
/// bandwidth of F32, and the same rounding as the reference, so greedy decoding agrees token for token. The memory is reserved up front but only the pages that
/// positions actually reach are touched, so a long context costs address space, not resident memory.
public final class KVCache: @unchecked Sendable {
    public let slots: Int
    public let capacity: Int
    public let kvDim: Int
    private let keys: UnsafeMutablePointer<UInt16>
    private let values: UnsafeMutablePointer<UInt16>

    public init(slots: Int, capacity: Int, kvDim: Int) {
        self.slots = slots
        self.capacity = capacity
        self.kvDim = kvDim
        let count = slots * capacity * kvDim
        keys = .allocate(capacity: count)
        values = .allocate(capacity: count)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    /// Bytes one position costs across all slots.
    public var bytesPerToken: Int { 2 * slots * kvDim * MemoryLayout<UInt16>.size }

    @inline(__always) public func keys(slot: Int) -> UnsafeMutablePointer<UInt16> { keys + slot * capacity * kvDim }
    @inline(__always) public func values(slot: Int) -> UnsafeMutablePointer<UInt16> { values + slot * capacity * kvDim }
}
