/// Tensor element formats as GGUF numbers them (ggml's `ggml_type`).
///
/// Every format ggml defines is a case with its block geometry, so `inspect` and `tokenize` read any valid file;
/// `isComputable` says which ones the kernels multiply with. A number ggml does not define is kept as
/// `unsupported` so the reader can name it in an error instead of guessing its size.
public enum GGMLType: Equatable, Hashable, Sendable, CustomStringConvertible {
    case f32, f16, bf16, f64
    case q4_0, q4_1, q5_0, q5_1, q8_0, q8_1
    case q2_K, q3_K, q4_K, q5_K, q6_K, q8_K
    case iq2_xxs, iq2_xs, iq3_xxs, iq1_s, iq4_nl, iq3_s, iq2_s, iq4_xs, iq1_m
    case tq1_0, tq2_0, mxfp4, nvfp4, q1_0
    /// Raw bytes: the flash layout stores each layer's FFN bundles as one I8 tensor (never computed with).
    case i8, i16, i32, i64
    case unsupported(UInt32)

    /// (ggml number, name, elements per block, bytes per block) of every defined format: ggml's type_traits.
    private static let table: [(GGMLType, UInt32, String, Int, Int)] = [
        (.f32, 0, "F32", 1, 4), (.f16, 1, "F16", 1, 2), (.q4_0, 2, "Q4_0", 32, 18), (.q4_1, 3, "Q4_1", 32, 20),
        (.q5_0, 6, "Q5_0", 32, 22), (.q5_1, 7, "Q5_1", 32, 24), (.q8_0, 8, "Q8_0", 32, 34),
        (.q8_1, 9, "Q8_1", 32, 36), (.q2_K, 10, "Q2_K", 256, 84), (.q3_K, 11, "Q3_K", 256, 110),
        (.q4_K, 12, "Q4_K", 256, 144), (.q5_K, 13, "Q5_K", 256, 176), (.q6_K, 14, "Q6_K", 256, 210),
        (.q8_K, 15, "Q8_K", 256, 292), (.iq2_xxs, 16, "IQ2_XXS", 256, 66), (.iq2_xs, 17, "IQ2_XS", 256, 74),
        (.iq3_xxs, 18, "IQ3_XXS", 256, 98), (.iq1_s, 19, "IQ1_S", 256, 50), (.iq4_nl, 20, "IQ4_NL", 32, 18),
        (.iq3_s, 21, "IQ3_S", 256, 110), (.iq2_s, 22, "IQ2_S", 256, 82), (.iq4_xs, 23, "IQ4_XS", 256, 136),
        (.i8, 24, "I8", 1, 1), (.i16, 25, "I16", 1, 2), (.i32, 26, "I32", 1, 4), (.i64, 27, "I64", 1, 8),
        (.f64, 28, "F64", 1, 8), (.iq1_m, 29, "IQ1_M", 256, 56), (.bf16, 30, "BF16", 1, 2),
        (.tq1_0, 34, "TQ1_0", 256, 54), (.tq2_0, 35, "TQ2_0", 256, 66), (.mxfp4, 39, "MXFP4", 32, 17),
        (.nvfp4, 40, "NVFP4", 64, 36), (.q1_0, 41, "Q1_0", 128, 18),
    ]
    private static let byNumber: [UInt32: Int] = Dictionary(uniqueKeysWithValues: table.enumerated().map { ($1.1, $0) })
    private static let removedNames: [UInt32: String] = [4: "Q4_2", 5: "Q4_3", 31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8",
                                                         36: "IQ4_NL_4_4", 37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8"]

    public init(rawValue: UInt32) {
        if let i = GGMLType.byNumber[rawValue] { self = GGMLType.table[i].0 } else { self = .unsupported(rawValue) }
    }

    private var entry: (GGMLType, UInt32, String, Int, Int)? {
        if case .unsupported = self { return nil }
        return GGMLType.table.first { $0.0 == self }
    }

    public var rawValue: UInt32 {
        if case .unsupported(let v) = self { return v }
        return entry!.1
    }

    /// Elements per quantization block (0 for an undefined format).
    public var blockSize: Int { entry?.3 ?? 0 }

    /// Bytes per block, e.g. Q4_0 = f16 scale + 16 nibble bytes; Q4_K = f16 d, f16 dmin, 12 scale bytes, 128 nibbles.
    public var blockBytes: Int { entry?.4 ?? 0 }

    /// Whether the kernels compute with this type (weights). I8 is storage only (the flash bundles).
    public var isComputable: Bool {
        switch self {
        case .f32, .f16, .bf16, .q4_0, .q4_1, .q8_0: true
        // Dequantizers and dot products in CKernels/quants_k.c (tested in KQuantKernelTests).
        case .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: true
        default: false
        }
    }

    /// The formats PocketLM multiplies with, for error messages.
    public static var computableNames: String { table.map(\.0).filter(\.isComputable).map(\.description).joined(separator: ", ") }

    /// Whether ggml defines the format (so its size is known and the file can be read).
    public var isSupported: Bool { entry != nil }

    /// Bytes taken by one row of `columns` elements, or nil when the columns do not fill whole blocks.
    public func rowBytes(columns: Int) -> Int? {
        guard isSupported, columns % blockSize == 0 else { return nil }
        return columns / blockSize * blockBytes
    }

    public var description: String {
        if let e = entry { return e.2 }
        if case .unsupported(let v) = self { return GGMLType.removedNames[v] ?? "type #\(v)" }
        return "?"
    }
}
