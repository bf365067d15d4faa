/// Tensor element formats as GGUF numbers them (ggml's `ggml_type`).
///
/// Only the formats the runtime can compute with are cases; any other number is kept as `raw` so the reader
/// can name it in an error instead of guessing its size.
public enum GGMLType: Equatable, Sendable, CustomStringConvertible {
    case f32, f16, q4_0, q4_1, q8_0, bf16
    /// Raw bytes: the flash layout stores each layer's FFN bundles as one I8 tensor (never computed with).
    case i8
    case unsupported(UInt32)

    public init(rawValue: UInt32) {
        switch rawValue {
        case 0: self = .f32
        case 1: self = .f16
        case 2: self = .q4_0
        case 3: self = .q4_1
        case 8: self = .q8_0
        case 24: self = .i8
        case 30: self = .bf16
        default: self = .unsupported(rawValue)
        }
    }

    public var rawValue: UInt32 {
        switch self {
        case .f32: 0
        case .f16: 1
        case .q4_0: 2
        case .q4_1: 3
        case .q8_0: 8
        case .bf16: 30
        case .i8: 24
        case .unsupported(let v): v
        }
    }

    /// Elements per quantization block.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .i8: 1
        case .q4_0, .q4_1, .q8_0: 32
        case .unsupported: 0
        }
    }

    /// Bytes per block: Q4_0 = f16 scale + 16 nibble bytes; Q4_1 = f16 scale + f16 min + 16; Q8_0 = f16 scale + 32.
    public var blockBytes: Int {
        switch self {
        case .f32: 4
        case .f16, .bf16: 2
        case .i8: 1
        case .q4_0: 18
        case .q4_1: 20
        case .q8_0: 34
        case .unsupported: 0
        }
    }

    /// Whether the kernels compute with this type (weights); I8 is storage only.
    public var isComputable: Bool {
        switch self {
        case .f32, .f16, .bf16, .q4_0, .q4_1, .q8_0: true
        case .i8, .unsupported: false
        }
    }

    public var isSupported: Bool {
        if case .unsupported = self { return false }
        return true
    }

    /// Bytes taken by one row of `columns` elements, or nil when the columns do not fill whole blocks.
    public func rowBytes(columns: Int) -> Int? {
        guard isSupported, columns % blockSize == 0 else { return nil }
        return columns / blockSize * blockBytes
    }

    public var description: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q8_0: "Q8_0"
        case .bf16: "BF16"
        case .i8: "I8"
        case .unsupported(let v): GGMLType.otherNames[v] ?? "type #\(v)"
        }
    }

    private static let otherNames: [UInt32: String] = [
        4: "Q4_2", 5: "Q4_3", 6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K",
        14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL",
        21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
        29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
    ]
}
