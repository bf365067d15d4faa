/// Flash under a process budget: groups held in the budget's untouched reserve (`ReserveSlots`), given back before the
/// KV cache or a longer batch touches that memory.
extension PagedFeedForward {
    /// Groups held in slots lent from the budget's untouched reserve now (all layers; 0 when none are lent).
    public var lentSlots: Int { reserveSlots?.active ?? 0 }

    /// Whether this FFN holds groups in the budget's untouched reserve (then the forward pass calls
    /// `reclaimReserve(kvCacheBytes:rows:)` before each batch).
    public var lendsReserve: Bool { reserveSlots != nil }

    /// Before a batch of `rows` rows stores its keys and values, after which the KV cache's touched pages come to
    /// `kvCacheBytes`: the lent slots that memory needs are taken back (evicted, their pages released) first, so the
    /// process stays inside its budget. Reads in flight finish before any slot goes; the next layer's are then
    /// planned afresh (they may have meant a slot that left).
    public func reclaimReserve(kvCacheBytes: Int, rows: Int) {
        guard let slots = reserveSlots, let budget = processBudget,
              kvCacheBytes > kvCacheHighWater || rows > batchHighWater else { return }
        kvCacheHighWater = max(kvCacheHighWater, kvCacheBytes)
        batchHighWater = max(batchHighWater, rows)
        let keep = budget.untouchedBytes(kvCacheCommitted: kvCacheHighWater, largestBatch: batchHighWater) / slots.slotBytes
        guard keep < slots.active else { return }
        for buffer in pending.indices where pending[buffer] != nil {
            do { try waitReads(buffer: buffer) } catch { invalidate(buffer: buffer) }
            pending[buffer] = nil
        }
        lastBlock = -1
        stats.lentSlotsTakenBack += slots.shrink(to: keep) { k in caches[slots.layer(ofSlot: k)].takeBackLastLent() }
    }
}
