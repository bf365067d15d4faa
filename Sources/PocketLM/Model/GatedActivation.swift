import CKernels
import Foundation

/// The gated FFN's activation, g[i] = act(g[i]) · u[i], as the architecture states it (`DecoderTraits.activation`).
/// One definition for the forward pass's FFN and the paged FFN of a packed file, so both compute the same bits.
public struct GatedActivation: Sendable, Equatable {
    public let kind: DecoderTraits.Activation

    public init(_ kind: DecoderTraits.Activation) { self.kind = kind }

    /// SwiGLU (silu, with glibc's expf as the reference) or GeGLU (ggml's tabulated GELU: the gate rounded to f16
    /// picks the table entry; ±10 and beyond are 0 and the identity).
    public func apply(_ g: UnsafeMutablePointer<Float>, _ u: UnsafeMutablePointer<Float>, count: Int) {
        switch kind {
        case .silu:
            pl_swiglu(g, u, Int64(count))
        case .geluTanh:
            pl_geglu_table(g, u, GatedActivation.geluTable, Int64(count))
        }
    }

    /// ggml's GELU table: for each f16 bit pattern, 0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²))) rounded to f16.
    /// Built once per process (256 KiB), on the first GeGLU step.
    nonisolated(unsafe) static let geluTable: UnsafePointer<Float> = {
        let table = UnsafeMutablePointer<Float>.allocate(capacity: 65536)
        for bits in 0..<65536 {
            let x = pl_f16_to_f32(UInt16(bits))
            let y = 0.5 * x * (1 + tanhf(0.79788456080286535587989211986876 * x * (1 + 0.044715 * x * x)))
            table[bits] = pl_f16_to_f32(pl_f32_to_f16(y))
        }
        return UnsafePointer(table)
    }()
}
