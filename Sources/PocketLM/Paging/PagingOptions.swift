/// How a packed (flash-layout) model keeps its FFN weights: what stays in memory, what is read per token, and
/// which neurons each token computes.
public struct PagingOptions: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        /// Every bundle read once at load and kept: the packed file run like an ordinary one.
        case resident
        /// The paper's method: the budget's spare room holds pinned groups and a window of recently used ones;
        /// per token only the selected groups not in memory are read, the next layer's while this one computes.
        case flash
        /// The paper's naive loader: each layer's FFN read in full, every token.
        case naive
        /// The file mapped and paged by the OS on demand; the pages of layers past the budget are dropped after
        /// use (and from the page cache), so every token faults them in again from storage.
        case mmap
    }

    /// Which FFN neurons a token computes (and so which bundle groups it needs).
    public enum Sparsity: Sendable, Equatable, CustomStringConvertible {
        /// Every neuron.
        case none
        /// The oracle: h computed for every neuron in memory, then only the `keep` fraction with the largest |h|
        /// kept. Reads everything; shows the quality of a perfect selection and the bytes it would need.
        case exact(keep: Double)
        /// Magnitude rule (CATS/TEAL style): neurons with |h| < threshold dropped after h is computed.
        case threshold(Double)
        /// The low-rank predictor stored in the file ranks the layer's groups from its input before any FFN
        /// weight is read; the top `keep` fraction of groups is used (groups already in memory are used too).
        case predictor(keep: Double)

        public static func parse(_ text: String) throws(PagingError) -> Sparsity {
            let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
            let value = parts.count == 2 ? Double(parts[1]) : nil
            if parts.count == 2, value == nil || !value!.isFinite || value! < 0 {
                throw .invalidOption("'\(text)': the value after ':' must be a non-negative number")
            }
            func fraction(_ d: Double) throws(PagingError) -> Double {
                let v = value ?? d
                guard v > 0, v <= 1 else { throw .invalidOption("'\(text)': the kept fraction must be in (0, 1]") }
                return v
            }
            switch parts[0] {
            case "none": return .none
            case "exact": return .exact(keep: try fraction(0.5))
            case "threshold":
                guard let value else { throw .invalidOption("'\(text)': give the threshold, e.g. threshold:0.02") }
                return .threshold(value)
            case "predictor": return .predictor(keep: try fraction(0.85))
            default: throw .invalidOption("unknown sparsity '\(text)' (use none, exact[:F], threshold:T or predictor[:F])")
            }
        }

        public var description: String {
            switch self {
            case .none: "none"
            case .exact(let k): "exact:\(k)"
            case .threshold(let t): "threshold:\(t)"
            case .predictor(let k): "predictor:\(k)"
            }
        }
    }

    public var mode: Mode
    /// Loading through `LanguageModel`: the whole process's memory (see `ProcessBudget`); a `PagedFeedForward` made
    /// directly: its weights' alone. nil = no limit (resident).
    public var memoryBudget: Int?
    /// Under a whole-process budget: what the process holds besides the model, counted against the budget. nil
    /// measures it (the resident set when loading begins); an app that loads the model before the rest of it has
    /// grown states what that rest will take.
    public var runtimeBytes: Int?
    /// Tokens a group stays cached after its last use (0 = no window), at most `windows.upperBound`.
    public var window: Int
    public static let windows = 0...1024
    public var sparsity: Sparsity
    /// Reads in flight at once, for the reader threads (`ioThreadCounts`).
    public var ioThreads: Int
    public static let ioThreadCounts = 1...256
    /// Per-token reads queued with one system call (Linux native AIO, every read of a layer in flight at once)
    /// rather than handed to the `ioThreads` reader threads (where AIO or direct I/O is not available: the threads).
    /// Off by default: on the 2-core test machine AIO used ~35% less CPU per token but decoded slower, its
    /// completions landing on the compute cores (README, flash paging).
    public var asyncReads: Bool

    public init(mode: Mode = .resident, memoryBudget: Int? = nil, window: Int = 0, sparsity: Sparsity = .none, ioThreads: Int = 8,
                asyncReads: Bool = false, runtimeBytes: Int? = nil) {
        self.mode = mode
        self.memoryBudget = memoryBudget
        self.runtimeBytes = runtimeBytes
        self.window = window
        self.sparsity = sparsity
        self.ioThreads = ioThreads
        self.asyncReads = asyncReads
    }

    public static let resident = PagingOptions()

    /// The threads `PagedFeedForward` starts to read the FFN: none for mmap (it faults pages in), a few for resident
    /// (the load's reads), `ioThreads` for flash and naive.
    public var readerThreads: Int {
        switch mode {
        case .mmap: 0
        case .resident: 4
        case .flash, .naive: ioThreads
        }
    }
}
