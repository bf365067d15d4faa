/// The order in which a model's blocks run: one entry per executed pass, naming the block whose weights it uses.
///
/// Plain models run each block once. MobileLLM-LS runs each block twice in a row (`immediate`), so a block's
/// weights are still in cache for its second pass. Every pass is its own attention layer at inference time,
/// so the KV cache has one slot per pass, not per block.
public struct LayerSchedule: Sendable, Equatable, CustomStringConvertible {
    public enum Strategy: String, Sendable, CaseIterable {
        case none
        case immediate
        case repeatAll = "repeat-all"
        case reverse
    }

    public let strategy: Strategy
    public let repeats: Int
    /// Block index of each executed pass.
    public let passes: [Int]

    public init(strategy: Strategy, repeats: Int = 2, blocks: Int) throws {
        guard repeats >= 1 else {
            throw ModelError.invalidConfig(field: "layer_schedule.repeats", reason: "must be at least 1, found \(repeats)")
        }
        self.strategy = strategy
        let r = strategy == .none ? 1 : repeats
        self.repeats = r
        let forward = Array(0..<blocks)
        switch strategy {
        case .none: passes = forward
        case .immediate: passes = forward.flatMap { Array(repeating: $0, count: r) }
        case .repeatAll: passes = (0..<r).flatMap { _ in forward }
        case .reverse: passes = (0..<r).flatMap { $0 % 2 == 0 ? forward : forward.reversed() }
        }
    }

    public static func plain(blocks: Int) -> LayerSchedule {
        try! LayerSchedule(strategy: .none, blocks: blocks)
    }

    public var description: String {
        strategy == .none ? "none" : "\(strategy.rawValue)×\(repeats)"
    }
}
