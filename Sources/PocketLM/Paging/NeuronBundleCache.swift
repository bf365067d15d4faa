/// One layer's FFN bundle groups held in memory: `pinned` slots filled once at load and never evicted, then
/// window slots holding the groups of the last tokens, least recently used leaving first.
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

    func pointer(slot: Int) -> UnsafeMutableRawPointer { slots + slot * bundleBytes }

    /// The slot holding group `g`, if any.
    func slot(of g: Int) -> Int? {
        let s = slotOfGroup[g]
        return s >= 0 ? Int(s) : nil
    }

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
        if slot >= pinned { lastUsed[slot] = token }
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
        guard slot >= pinned, groupOfSlot[slot] >= 0 else { return }
        slotOfGroup[Int(groupOfSlot[slot])] = -1
        groupOfSlot[slot] = -1
        lastUsed[slot] = -1
    }

    private func assign(_ g: Int, to slot: Int) {
        slotOfGroup[g] = Int32(slot)
        groupOfSlot[slot] = Int32(g)
    }
}
