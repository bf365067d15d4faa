import CKernels
import Foundation
import Testing
import PocketLM

/// The multiply-add probe behind compute bounds (`ComputePeak`): on each tier it does the multiply-adds it reports,
/// at that tier's vector width, and their arithmetic is what it says (each chain converges to the same fixed
/// point). Part of the serialized "C kernels" suite (it forces tiers on the test thread).
extension KernelTests {
    /// Lanes of one probe step on `tier`: 12 chains at the tier's f32 width (NEON runs 16 chains of 4).
    static func probeLanes(_ tier: KernelISA) -> Int64 {
        switch tier {
        case .avx512: 12 * 16
        case .avx2: 12 * 8
        case .neon: 16 * 4
        case .portable: 12
        }
    }

    @Test("pl_multiply_add_probe: f32 chains converge to y / (1 − x) in every lane, counted at the tier's width",
          arguments: KernelISA.supported)
    func multiplyAddProbeF32(tier: KernelISA) {
        #expect(pl_isa_force_thread(tier.cCode) == 0, "\(tier)")
        defer { pl_isa_force_thread(-1) }
        var done: Int64 = 0
        let steps: Int64 = 40_000
        let sum = pl_multiply_add_probe(Int32(PL_PROBE_F32_FMA), steps, &done)
        #expect(done == steps * Self.probeLanes(tier), "\(tier)")
        // a ← a · 0.999 + 1e-7 from a = chain index: after 40,000 steps every lane is 1e-4 (the start decayed by
        // 0.999^40000 ≈ 4e-18).
        let lanes = Float(Self.probeLanes(tier))
        #expect(abs(sum - lanes * 1e-4) <= lanes * 1e-4 * 1e-3, "\(tier): \(sum)")
    }

    @Test("pl_multiply_add_probe: bf16 pair dots add 2 · 2^-20 a step where the CPU has them, nothing elsewhere")
    func multiplyAddProbeBF16() {
        var done: Int64 = 0
        let steps: Int64 = 1_000
        let sum = pl_multiply_add_probe(Int32(PL_PROBE_BF16_DOT), steps, &done)
        if pl_attention_bf16_fast_body() == 0 {
            #expect(done == 0 && sum == 0)
            return
        }
        #expect(done == steps * 12 * 32)
        // 16 lanes of chains starting at 0 … 11, each step adding 1 · 2^-20 twice, exactly (at most 12, whose ulp is
        // 2^-20).
        let want = 16 * (66 + 12 * Double(steps) * 0x1p-19)
        #expect(abs(Double(sum) - want) <= 1e-2, "\(sum) vs \(want)")
    }

    @Test("ComputePeak.measure: a rate for f32 on every CPU, for bf16 only where the CPU has the instruction")
    func computePeak() {
        let pool = ThreadPool(threadCount: 2)
        let f32 = ComputePeak.measure(pool: pool, kind: .f32FMA, steps: 100_000, repetitions: 2)
        #expect(f32 != nil && f32!.isFinite && f32! > 0)
        let bf16 = ComputePeak.measure(pool: pool, kind: .bf16Dot, steps: 100_000, repetitions: 2)
        #expect((bf16 != nil) == (pl_attention_bf16_fast_body() != 0))
    }
}
