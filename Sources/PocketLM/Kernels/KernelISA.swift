import CKernels
import Foundation

/// The instruction-set tier the C kernels run (each kernel family has a body per tier; the portable C one is the
/// reference the others are tested against). The best tier of the CPU is chosen at run time; the environment
/// variable `POCKETLM_ISA` (avx512, avx2, neon or portable) lowers it for the whole process, never to a tier the
/// CPU lacks.
public enum KernelISA: String, CaseIterable, Sendable, Codable {
    case portable, avx2, avx512, neon

    public static let environmentVariable = "POCKETLM_ISA"

    var code: Int32 {
        switch self {
        case .portable: Int32(PL_ISA_PORTABLE)
        case .avx2: Int32(PL_ISA_AVX2)
        case .avx512: Int32(PL_ISA_AVX512)
        case .neon: Int32(PL_ISA_NEON)
        }
    }

    init?(code: Int32) {
        guard let tier = Self.allCases.first(where: { $0.code == code }) else { return nil }
        self = tier
    }

    /// The tier the kernels run in this process now.
    public static var current: KernelISA { KernelISA(code: pl_isa_process()) ?? .portable }
    /// The best tier this CPU runs.
    public static var best: KernelISA { KernelISA(code: pl_isa_best()) ?? .portable }
    /// The tiers this CPU runs, best first.
    public static var supported: [KernelISA] {
        [.avx512, .avx2, .neon, .portable].filter { pl_isa_supported($0.code) != 0 }
    }

    /// CPU features the current tier uses ("vnni" on avx512, "avx-vnni" on avx2, "dotprod" and "i8mm" on neon).
    public static var features: [String] {
        let bits = pl_isa_features()
        let used: [(Int32, UInt32, String)] = [
            (Int32(PL_ISA_AVX512), UInt32(PL_FEATURE_AVX512_VNNI), "vnni"), (Int32(PL_ISA_AVX2), UInt32(PL_FEATURE_AVX_VNNI), "avx-vnni"),
            (Int32(PL_ISA_NEON), UInt32(PL_FEATURE_DOTPROD), "dotprod"), (Int32(PL_ISA_NEON), UInt32(PL_FEATURE_I8MM), "i8mm"),
        ]
        let tier = pl_isa_process()
        return used.filter { $0.0 == tier && bits & $0.1 != 0 }.map(\.2)
    }

    /// "avx512 (vnni)": the tier and the features it uses, for reports.
    public static var description: String {
        let f = features
        return f.isEmpty ? current.rawValue : "\(current.rawValue) (\(f.joined(separator: ", ")))"
    }

    /// Runs every kernel of this process on `tier` from now on. Choose before loading a model: the weight layout
    /// (packed or not) follows the tier at load time.
    public static func select(_ tier: KernelISA) throws {
        guard pl_isa_select(tier.code) == 0 else {
            throw KernelISAError.unsupported(requested: tier.rawValue, supported: supported.map(\.rawValue))
        }
    }

    /// The tier `POCKETLM_ISA` asks for, nil when it is unset or empty.
    public static func requested(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> KernelISA? {
        guard let value = environment[environmentVariable], !value.isEmpty else { return nil }
        guard let tier = KernelISA(rawValue: value.lowercased()) else {
            throw KernelISAError.unknown(value: value, supported: supported.map(\.rawValue))
        }
        return tier
    }

    /// Selects the tier `POCKETLM_ISA` asks for, if any (an unknown name or a tier this CPU lacks is an error).
    /// Called by every model load, so library users get the same behaviour as the command line.
    public static func applyEnvironment() throws {
        if let tier = try requested() { try select(tier) }
    }
}

public enum KernelISAError: LocalizedError, Equatable {
    case unknown(value: String, supported: [String])
    case unsupported(requested: String, supported: [String])

    public var errorDescription: String? {
        switch self {
        case let .unknown(value, supported):
            "\(KernelISA.environmentVariable)=\(value) is not a kernel tier (one of avx512, avx2, neon, portable; this CPU runs \(supported.joined(separator: ", ")))"
        case let .unsupported(requested, supported):
            "\(KernelISA.environmentVariable)=\(requested) asks for a kernel tier this CPU lacks (it runs \(supported.joined(separator: ", ")))"
        }
    }
}
