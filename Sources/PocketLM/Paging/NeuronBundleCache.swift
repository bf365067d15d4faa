/// One layer's FFN bundle groups held in memory: `pinned` slots filled once at load and never evicted, then
/// window slots holding the groups of the last tokens, least recently used leaving first; then slots lent from the
/// budget's untouched reserve (`ReserveSlots`), each filled by the first group read that finds it empty and kept
/// until the reserve takes it back (the last lent first).
///
/// The paper keeps one matrix per layer and moves rows (evict = swap the last live row in, insert = append)
/// so its matmul runs over contiguous rows. Here each slot is one group's 4 KiB-aligned buffer and the FFN
/// kernel gathers bundles by pointer, so a group read from storage lands in its slot directly: inserting and
/// evicting never copy weights, they only update these tables.
final class NeuronBundleCache {
    let capacity: Int
    let pinned: Int
    /// capacity × bundleBytes, owned by the paged store's arena.
    let slots: UnsafeMutableRawPointer
    let bundleBytes: Int
    private var slotOfGroup: [Int32]
    private var groupOfSlot: [Int32]
    private var lastUsed: [Int]
    /// Lent slots: slot capacity + j lives at `lent[j]`; the empty ones, for the next group read.
    private var lent: [UnsafeMutableRawPointer] = []
    private var emptyLent: [Int] = []

    init(groups: Int, capacity: Int, pinned: Int, slots: UnsafeMutableRawPointer, bundleBytes: Int) {
        precondition(pinned <= capacity && capacity <= groups)
        self.capacity = capacity
        self.pinned = pinned
        self.slots = slots
        self.bundleBytes = bundleBytes
        slotOfGroup = [Int32](repeating: -1, count: groups)
        groupOfSlot = [Int32](repeating: -1, count: capacity)
        lastUsed = [Int](repeating: -1, count: capacity)
    }

    func pointer(slot: Int) -> UnsafeMutableRawPointer {
        slot < capacity ? slots + slot * bundleBytes : lent[slot - capacity]
    }

    /// Slots a failed read may have to forget: window and lent ones.
    var evictableSlots: Range<Int> { pinned..<(capacity + lent.count) }

    /// Room for `count` lent slots, so lending and taking back never allocate.
    func reserveLent(_ count: Int) {
        lent.reserveCapacity(count)
        emptyLent.reserveCapacity(count)
        groupOfSlot.reserveCapacity(capacity + count)
    }

    /// Adds a lent slot (empty) at `pointer`.
    func lend(_ pointer: UnsafeMutableRawPointer) {
        emptyLent.append(capacity + lent.count)
        lent.append(pointer)
        groupOfSlot.append(-1)
    }

    /// Lent slots now held.
    var lentCount: Int { lent.count }

    /// Takes the last lent slot back, forgetting its group.
    func takeBackLastLent() {
        guard !lent.isEmpty else { return }
        let slot = capacity + lent.count - 1
        if let g = group(inSlot: slot) {
            slotOfGroup[g] = -1
        } else if let i = emptyLent.lastIndex(of: slot) {
            emptyLent.remove(at: i)
        }
        groupOfSlot.removeLast()
        lent.removeLast()
    }

    /// An empty lent slot for group `g`, if any (lent slots are never reused for another group: every one holds
    /// the first group that missed it, until taken back).
    func admitLent(group g: Int) -> Int? {
        guard let slot = emptyLent.popLast() else { return nil }
        assign(g, to: slot)
        return slot
    }

    /// The slot holding group `g`, if any.
    func slot(of g: Int) -> Int? {
        let s = slotOfGroup[g]
        return s >= 0 ? Int(s) : nil
    }

    /// Whether group `g` is in a pinned slot (there since load, never evicted).
    func isPinned(group g: Int) -> Bool { slotOfGroup[g] >= 0 && Int(slotOfGroup[g]) < pinned }

    /// Group in `slot`, or nil when the slot is empty.
    func group(inSlot slot: Int) -> Int? {
        let g = groupOfSlot[slot]
        return g >= 0 ? Int(g) : nil
    }

    /// Records a pinned group (at load).
    func pin(group g: Int, slot: Int) {
        precondition(slot < pinned)
        assign(g, to: slot)
        lastUsed[slot] = Int.max
    }

    func touch(slot: Int, token: Int) {
        if slot >= pinned && slot < capacity { lastUsed[slot] = token }
    }

    /// A window slot for group `g` needed at `token`: an empty one, else the least recently used group not
    /// needed by this token. nil when every window slot is in use by this token (or there are none).
    func admit(group g: Int, token: Int) -> Int? {
        var best = -1, bestAge = Int.max
        for s in pinned..<capacity {
            if groupOfSlot[s] < 0 { best = s; break }
            if lastUsed[s] < token && lastUsed[s] < bestAge { best = s; bestAge = lastUsed[s] }
        }
        guard best >= 0 else { return nil }
        if groupOfSlot[best] >= 0 { slotOfGroup[Int(groupOfSlot[best])] = -1 }
        assign(g, to: best)
        lastUsed[best] = token
        return best
    }

    /// Forgets a group whose read failed, so a later token does not compute with a half-filled slot.
    func evict(slot: Int) {
        guard slot >= pinned, let g = group(inSlot: slot) else { return }
        slotOfGroup[g] = -1
        groupOfSlot[slot] = -1
        if slot < capacity { lastUsed[slot] = -1 } else { emptyLent.append(slot) }
    }

    private func assign(_ g: Int, to slot: Int) {
        slotOfGroup[g] = Int32(slot)
        groupOfSlot[slot] = Int32(g)
    }
}
