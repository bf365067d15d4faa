import Foundation

/// What can go wrong when packing a model or running it with paged weights.
public enum PagingError: Error, LocalizedError, Equatable {
    case notPacked(path: String)
    case unsupportedWeights(tensor: String, type: String)
    /// The weights' share of a budget is below their minimum (resident tensors + read buffers).
    case budgetTooSmall(budget: Int, minimum: Int, resident: Int)
    /// A whole-process budget is below what the model needs at that context. `minimum` is the need (weights + KV
    /// cache + rest) plus `ProcessBudget.runToRunAllowance`, so that a run at that budget loads.
    case processBudgetTooSmall(budget: Int, minimum: Int, contextLength: Int, weights: Int, kvCache: Int, rest: Int)
    /// A whole-process budget is below what is known before the vocabulary is built: the runtime, the KV cache and
    /// the weights that always stay in memory (the exact minimum adds the vocabulary, scratch and read buffers).
    case processBudgetBelowFixedCosts(budget: Int, fixed: Int, contextLength: Int, kvCache: Int, residentWeights: Int, runtime: Int)
    case readFailed(path: String, offset: Int, message: String)
    case shortRead(path: String, offset: Int, expected: Int, got: Int)
    case noPredictor(path: String)
    case invalidOption(String)

    public var errorDescription: String? {
        switch self {
        case .notPacked(let p):
            "\(p) is not in the flash layout: paging (a memory budget, a window, a sparsity rule) needs a file packed from it (`FlashPacker.pack`)"
        case .unsupportedWeights(let t, let ty):
            "tensor '\(t)' is \(ty): the flash layout packs the FFN weight types PocketLM computes (\(GGMLType.computableNames))"
        case .budgetTooSmall(let b, let m, let r):
            "a weight budget of \(ByteCount.format(b)) is below this model's minimum of \(ByteCount.format(m)) (\(ByteCount.format(r)) resident weights plus the read buffers): raise the memory budget to at least \(ByteCount.format(m))"
        case .processBudgetTooSmall(let b, let m, let c, let w, let kv, let rest):
            "a memory budget of \(ByteCount.format(b)) is below this model's minimum of \(ByteCount.format(m)) at a context of \(c) tokens (weights \(ByteCount.format(w)) with the read buffers, KV cache \(ByteCount.format(kv)), runtime, vocabulary and scratch \(ByteCount.format(rest)), and \(ByteCount.format(ProcessBudget.runToRunAllowance)) for how much the runtime's memory varies between runs): raise the memory budget to at least \(ByteCount.format(m))\(Self.contextAdvice(short: m - b, kvCache: kv, contextLength: c))"
        case .processBudgetBelowFixedCosts(let b, let f, let c, let kv, let w, let r):
            "a memory budget of \(ByteCount.format(b)) is below this model's minimum at a context of \(c) tokens: the runtime (\(ByteCount.format(r))), the KV cache (\(ByteCount.format(kv))) and the weights that always stay in memory (\(ByteCount.format(w))) alone take \(ByteCount.format(f)), before the vocabulary, scratch and read buffers: raise the memory budget above \(ByteCount.format(f + ProcessBudget.runToRunAllowance)) (a budget that fits these is told the exact minimum)\(Self.contextAdvice(short: f + ProcessBudget.runToRunAllowance - b, kvCache: kv, contextLength: c))"
        case .readFailed(let p, let o, let m): "reading \(p) at byte \(o) failed: \(m)"
        case .shortRead(let p, let o, let e, let g):
            "short read from \(p) at byte \(o): expected \(e) bytes, got \(g) (is the file truncated?)"
        case .noPredictor(let p):
            "\(p) has no FFN predictor: predictor sparsity needs a file packed with one"
        case .invalidOption(let m): m
        }
    }

    /// " or shorten the context" where a shorter one could make up a budget `short` bytes below the need: the KV
    /// cache is the part a context sets, and at least a token's worth of it stays. Elsewhere (a KV cache small
    /// beside the shortfall, or the weights alone past the budget) the advice would send the user to a dead end.
    private static func contextAdvice(short: Int, kvCache: Int, contextLength: Int) -> String {
        short < kvCache - kvCache / max(1, contextLength) ? " or shorten the context" : ""
    }
}

/// Byte counts as people write them: 64M, 1.5G, 75% (of a reference size).
public enum ByteCount {
    /// Parses `64M`, `512K`, `1.5G`, `1000000` (bytes) or `75%` (of `reference`); `MB`, `MiB` and a space before
    /// the unit too, so a size as `format` writes it (`118.3 MiB`, in the errors stating a minimum) reads back.
    public static func parse(_ text: String, reference: Int? = nil) throws(PagingError) -> Int {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let bad = PagingError.invalidOption("cannot read '\(text)' as a size: use e.g. 64M, 1.5G, 512K or 75%")
        let numberEnd = t.firstIndex { !"0123456789.+-E".contains($0) } ?? t.endIndex
        let number = t[..<numberEnd], unit = t[numberEnd...].trimmingCharacters(in: .whitespaces)
        // At least a byte, and short of 1e15 (a converted 1e20 would trap): nothing between is a typo's size.
        func bytes(_ v: Double) throws(PagingError) -> Int {
            guard v >= 1, v < 1e15 else { throw bad }
            return Int(v)
        }
        guard let v = Double(number), v > 0, v.isFinite else { throw bad }
        if unit == "%" {
            guard let reference else { throw PagingError.invalidOption("'\(text)': a percentage needs a model to be relative to") }
            return try bytes(Double(reference) * v / 100)
        }
        let shifts: [String: Int] = ["": 0, "B": 0, "K": 10, "KB": 10, "KIB": 10, "M": 20, "MB": 20, "MIB": 20,
                                     "G": 30, "GB": 30, "GIB": 30]
        guard let shift = shifts[unit] else { throw bad }
        return try bytes(v * Double(1 << shift))
    }

    public static func format(_ bytes: Int) -> String {
        let b = Double(bytes)
        if b >= 1024 * 1024 * 1024 { return String(format: "%.2f GiB", b / (1024 * 1024 * 1024)) }
        if b >= 1024 * 1024 { return String(format: "%.1f MiB", b / (1024 * 1024)) }
        if b >= 1024 { return String(format: "%.1f KiB", b / 1024) }
        return "\(bytes) B"
    }
}
