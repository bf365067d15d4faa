#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// FFN group slots held in the part of a process budget that is set aside but not yet touched — the KV cache past
/// the positions stored, the scratch of a longer batch than any so far (`ProcessBudget.untouchedBytes`) — and given
/// back, last slot first, before the cache or a batch grows into that memory.
///
/// One anonymous mapping, committed page by page as reads land in its slots: the slots cost memory only once used.
/// Slots go first to the layers whose groups are the largest reads (a Q4_K_M file's Q6_K `ffn_down` layers), in
/// turn among those, each up to the groups it lacks (`order`); giving back the last slots takes from the layers
/// with the smallest reads first. A slot given back is evicted from its layer's `NeuronBundleCache` and its
/// pages released (madvise DONTNEED: the process's resident set and its cgroup charge drop at once); the count only
/// shrinks, as the memory it lends only gets used.
final class ReserveSlots {
    let slotBytes: Int
    /// Slot k's layer.
    private let layerOfSlot: [Int]
    /// Slots still lent (the first `active` of the mapping).
    private(set) var active: Int
    private let base: UnsafeMutableRawPointer?
    private let mappedBytes: Int

    /// Up to `lendableBytes / slotBytes` slots of `slotBytes` (a multiple of the page size: reads into them are
    /// direct), for layers that lack `room[l]` groups and read `readBytes[l]` per group.
    init(lendableBytes: Int, slotBytes: Int, room: [Int], readBytes: [Int]) {
        self.slotBytes = slotBytes
        layerOfSlot = Self.order(count: max(0, lendableBytes / slotBytes), room: room, readBytes: readBytes)
        let count = layerOfSlot.count
        let bytes = count * slotBytes
        if bytes > 0, let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
           p != MAP_FAILED {
            base = p
            mappedBytes = bytes
            active = count
        } else {
            // No address space for them: nothing is lent, the plan runs as it was.
            base = nil
            mappedBytes = 0
            active = 0
        }
    }

    deinit {
        if let base { munmap(base, mappedBytes) }
    }

    func pointer(slot k: Int) -> UnsafeMutableRawPointer { base! + k * slotBytes }

    /// Slot k's layer.
    func layer(ofSlot k: Int) -> Int { layerOfSlot[k] }

    /// The layers of `count` slots (fewer when every layer's room is filled): the layers with the largest group reads
    /// first, in turn among equals (slot k of a tier of n layers goes to its (k mod n)-th with room left).
    static func order(count: Int, room: [Int], readBytes: [Int]) -> [Int] {
        var left = room, out: [Int] = []
        out.reserveCapacity(count)
        for size in Set(readBytes).sorted(by: >) {
            let tier = readBytes.indices.filter { readBytes[$0] == size }
            while out.count < count {
                var added = false
                for l in tier where left[l] > 0 && out.count < count {
                    out.append(l)
                    left[l] -= 1
                    added = true
                }
                if !added { break }
            }
        }
        return out
    }

    /// Slots at or above `count` leave, last first: `evict(k)` lets the owner forget each (it must not be the
    /// destination of a read in flight), then their pages are released. Returns how many left.
    @discardableResult
    func shrink(to count: Int, evict: (Int) -> Void) -> Int {
        let keep = max(0, count)
        guard keep < active, let base else { return 0 }
        for k in stride(from: active - 1, through: keep, by: -1) { evict(k) }
        let released = active - keep
        _ = madvise(base + keep * slotBytes, released * slotBytes, MADV_DONTNEED)
        active = keep
        return released
    }
}
