import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Keys and values of every executed pass (one slot per pass of the `LayerSchedule`).
///
/// Stored as F16 by default, as llama.cpp does: half the memory and bandwidth of F32, and the same rounding as the
/// reference, so greedy decoding agrees token for token. BF16 (llama.cpp's `--cache-type-k/-v bf16`) takes the same
/// memory and lets CPUs with BF16 dot products (AVX512_BF16) run a deep prompt chunk's attention with half the
/// multiply instructions, at bf16's coarser rounding of keys, values, queries and probabilities. Head-major: each slot holds, per KV head, rows of
/// `headDim` values, so attention over one head reads one contiguous run (the hardware prefetcher follows it;
/// position-major rows made each head a strided read, and attention waited on memory).
///
/// A global slot has a row per position of the context. A sliding-window slot (Gemma 3's local layers) keeps a ring
/// of `ringSize` = window + batch positions, so a long context costs memory only on global layers. Each ring row is
/// written twice, at `p % ringSize` and `p % ringSize + ringSize`: then any run of up to `ringSize` consecutive
/// positions is one contiguous run of rows and the attention kernel reads it as it reads a global slot.
/// The memory is reserved up front but only the pages that positions actually reach are touched, so a long context
/// costs address space, not resident memory.
public final class KVCache: @unchecked Sendable {
    /// How many positions a slot keeps: all of them, or a ring for a sliding window.
    public enum SlotKind: Equatable, Sendable {
        case global
        /// Positions a query sees (its own included) and the ring's size (≥ window + the largest batch).
        case sliding(window: Int, ringSize: Int)
    }

    /// How keys and values are stored: 16 bits each either way.
    public enum ElementType: String, Sendable, CaseIterable {
        case f16, bf16
    }

    public let slots: Int
    public let capacity: Int
    public let elementType: ElementType
    public let kvDim: Int
    public let kvHeads: Int
    public let headDim: Int
    public let kinds: [SlotKind]
    private let keys: UnsafeMutablePointer<UInt16>
    private let values: UnsafeMutablePointer<UInt16>
    /// Where each slot's keys (and, `valueOffset` later, values) start, in UInt16s; rows per head of each slot.
    private let slotOffset: [Int]
    private let slotRows: [Int]
    /// The ring size of each slot stored as a ring; nil where every position has its own row (a global slot, or a
    /// sliding one whose ring would not be smaller than the context).
    private let rings: [Int?]

    private let mapping: UnsafeMutableRawPointer
    private let mappedBytes: Int

    /// Reserves address space for the whole context (anonymous, lazily committed). A request the machine
    /// cannot map is an error, not a crash.
    public convenience init(slots: Int, capacity: Int, kvHeads: Int, headDim: Int, elementType: ElementType = .f16) throws {
        try self.init(kinds: Array(repeating: .global, count: slots), capacity: capacity, kvHeads: kvHeads, headDim: headDim,
                      elementType: elementType)
    }

    public init(kinds: [SlotKind], capacity: Int, kvHeads: Int, headDim: Int, elementType: ElementType = .f16) throws {
        self.slots = kinds.count
        self.elementType = elementType
        self.kinds = kinds
        self.capacity = capacity
        self.kvHeads = kvHeads
        self.headDim = headDim
        let kvDim = kvHeads * headDim
        self.kvDim = kvDim
        var offsets: [Int] = [], rows: [Int] = [], rings: [Int?] = [], total = 0, overflow = false
        for kind in kinds {
            var ring: Int?
            if case .sliding(_, let size) = kind, size < capacity { ring = size }
            let r = ring.map { 2 * $0 } ?? capacity
            rings.append(ring)
            offsets.append(total)
            rows.append(r)
            let (add, o1) = r.multipliedReportingOverflow(by: kvDim)
            let (sum, o2) = total.addingReportingOverflow(add)
            overflow = overflow || o1 || o2
            total = sum
        }
        let (bytes, o3) = total.multipliedReportingOverflow(by: 2 * MemoryLayout<UInt16>.size)
        guard !overflow, !o3, bytes > 0,
              let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              p != MAP_FAILED else {
            throw ModelError.invalidConfig(field: "context",
                                           reason: "a KV cache for \(capacity) positions × \(kinds.count) layers does not fit in memory")
        }
        mapping = p
        mappedBytes = bytes
        slotOffset = offsets
        slotRows = rows
        self.rings = rings
        keys = p.bindMemory(to: UInt16.self, capacity: 2 * total)
        values = keys + total
    }

    deinit {
        munmap(mapping, mappedBytes)
    }

    /// Bytes one more position of context costs across all slots (global slots only: a ring's size is fixed).
    public var bytesPerToken: Int {
        2 * kinds.filter { $0 == .global }.count * kvDim * MemoryLayout<UInt16>.size
    }

    /// Bytes the sliding-window rings take whatever the context (both copies of each ring row).
    public var ringBytes: Int {
        zip(kinds, slotRows).reduce(0) { $0 + ($1.0 == .global ? 0 : 2 * $1.1 * kvDim * MemoryLayout<UInt16>.size) }
    }

    /// Bytes of the pages holding positions 0..<`positions` of every slot (keys and values, both copies of a ring
    /// row): the cache's share of the process's memory once those positions are stored (the mapping is committed
    /// page by page as positions reach it). A memory budget lends the rest of the cache's reserve out until then.
    public func committedBytes(positions: Int) -> Int {
        let page = Int(getpagesize()), element = MemoryLayout<UInt16>.size
        var pages = 0, lastPage = -1
        // Byte ranges in address order (keys of every slot and head, then values); pages shared by neighbours once.
        func touch(_ start: Int, _ bytes: Int) {
            guard bytes > 0 else { return }
            let first = max(start / page, lastPage + 1), last = (start + bytes - 1) / page
            if last >= first { pages += last - first + 1 }
            lastPage = max(lastPage, last)
        }
        let valueStart = slotOffset.last.map { ($0 + slotRows.last! * kvDim) * element } ?? 0
        for base in [0, valueStart] {
            for s in 0..<slots {
                let n = min(positions, rings[s] ?? capacity)
                for h in 0..<kvHeads {
                    let head = base + (slotOffset[s] + h * slotRows[s] * headDim) * element
                    touch(head, n * headDim * element)
                    if let ring = rings[s] { touch(head + ring * headDim * element, n * headDim * element) }
                }
            }
        }
        return pages * page
    }

    /// The first position a query at `position` attends to in `slot` (0 for global slots).
    @inline(__always) public func firstVisible(slot: Int, position: Int) -> Int {
        if case .sliding(let window, _) = kinds[slot] { return max(0, position - window + 1) }
        return 0
    }

    /// The row where position `position` of `slot` is read from; rows first..<first+n are contiguous for any run
    /// of positions a query can see.
    @inline(__always) public func row(slot: Int, position: Int) -> Int {
        if let ring = rings[slot] { return position % ring }
        return position
    }

    /// Keys of KV head `head` in pass `slot`: row r at `keys(slot:head:) + r * headDim` (see `row(slot:position:)`).
    @inline(__always) public func keys(slot: Int, head: Int) -> UnsafeMutablePointer<UInt16> {
        keys + slotOffset[slot] + head * slotRows[slot] * headDim
    }
    @inline(__always) public func values(slot: Int, head: Int) -> UnsafeMutablePointer<UInt16> {
        values + slotOffset[slot] + head * slotRows[slot] * headDim
    }

    /// Stores `count` F32 values as the cache's type (nearest even) at column `column` of position `position`'s key
    /// (or value) row of `head` (both copies for a ring).
    @inline(__always) public func store(_ src: UnsafePointer<Float>, count: Int, slot: Int, head: Int, position: Int,
                                        column: Int, values isValue: Bool) {
        let base = isValue ? values(slot: slot, head: head) : keys(slot: slot, head: head)
        let r = row(slot: slot, position: position)
        let convert = elementType == .bf16 ? pl_f32_to_bf16_row : pl_f32_to_f16_row
        convert(src, base + r * headDim + column, Int64(count))
        if let ring = rings[slot] {
            convert(src, base + (r + ring) * headDim + column, Int64(count))
        }
    }

    /// Whether the positions needed to continue from `position` are all still in every ring (they are unless more
    /// than ringSize − window positions were written after it).
    public func canRewind(from current: Int, to position: Int) -> Bool {
        for (kind, ring) in zip(kinds, rings) {
            if case .sliding(let window, _) = kind, let ring, current - position > ring - window { return false }
        }
        return true
    }
}
