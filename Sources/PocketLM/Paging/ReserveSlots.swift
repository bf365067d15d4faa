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
/// Slot k belongs to layer k mod layers, so every layer holds about as many as the others and giving back the last
/// slots takes from every layer alike. A slot given back is evicted from its layer's `NeuronBundleCache` and its
/// pages released (madvise DONTNEED: the process's resident set and its cgroup charge drop at once); the count only
/// shrinks, as the memory it lends only gets used.
final class ReserveSlots {
    let slotBytes: Int
    let layers: Int
    /// Slots still lent (the first `active` of the mapping).
    private(set) var active: Int
    private let base: UnsafeMutableRawPointer?
    private let mappedBytes: Int

    /// Up to `lendableBytes / slotBytes` slots of `slotBytes` (a multiple of the page size: reads into them are direct).
    init(lendableBytes: Int, slotBytes: Int, layers: Int) {
        self.slotBytes = slotBytes
        self.layers = layers
        let count = max(0, lendableBytes / slotBytes)
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
    func layer(ofSlot k: Int) -> Int { k % layers }

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
