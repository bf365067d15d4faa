/// Counters of a paged model, cumulative since load (take differences around a run).
public struct PagingStats: Sendable, Equatable, Codable {
    public var layerSteps = 0
    public var bytesRead = 0
    public var reads = 0
    public var ioWaitSeconds = 0.0
    public var manageSeconds = 0.0
    public var computeSeconds = 0.0
    /// Groups the tokens needed, and how many of those were already in memory.
    public var groupsNeeded = 0
    public var groupsInMemory = 0
    /// Of those, groups found in slots lent from the budget's untouched reserve.
    public var groupsInLentSlots = 0
    /// Lent slots given back to the KV cache or a longer batch.
    public var lentSlotsTakenBack = 0
    /// Bytes a perfect selection at the same quality would have had to read (exact/threshold rules only).
    public var oracleBytes = 0
    public var neuronsComputed = 0

    /// All zero (a model without a paged FFN reads nothing).
    public init() {}

    public static func - (a: PagingStats, b: PagingStats) -> PagingStats {
        var d = PagingStats()
        d.layerSteps = a.layerSteps - b.layerSteps
        d.bytesRead = a.bytesRead - b.bytesRead
        d.reads = a.reads - b.reads
        d.ioWaitSeconds = a.ioWaitSeconds - b.ioWaitSeconds
        d.manageSeconds = a.manageSeconds - b.manageSeconds
        d.computeSeconds = a.computeSeconds - b.computeSeconds
        d.groupsNeeded = a.groupsNeeded - b.groupsNeeded
        d.groupsInMemory = a.groupsInMemory - b.groupsInMemory
        d.groupsInLentSlots = a.groupsInLentSlots - b.groupsInLentSlots
        d.lentSlotsTakenBack = a.lentSlotsTakenBack - b.lentSlotsTakenBack
        d.oracleBytes = a.oracleBytes - b.oracleBytes
        d.neuronsComputed = a.neuronsComputed - b.neuronsComputed
        return d
    }
}
