import Foundation
import Testing
import PocketLM
import CKernels

/// f16 conversions and expf against Swift's Float16 and libm; part of the serialized "C kernels" suite.
extension KernelTests {

    #if !(os(macOS) && arch(x86_64))
    @Test("f16 → f32 → f16 round-trips all 65536 halves; decoding matches Swift's Float16")
    func halfRoundTrip() {
        var nans = 0
        for h in 0...UInt16.max {
            let f = pl_f16_to_f32(h)
            let swift = Float(Float16(bitPattern: h))
            if swift.isNaN {
                nans += 1
                #expect(f.isNaN, "\(h)")
                #expect(pl_f32_to_f16(f) & 0x7c00 == 0x7c00 && pl_f32_to_f16(f) & 0x3ff != 0, "NaN \(h) stays NaN")
                #expect(pl_f32_to_f16(f) & 0x8000 == h & 0x8000, "NaN sign \(h)")
            } else {
                if f.bitPattern != swift.bitPattern { Issue.record("f16 \(h): \(f) vs \(swift)") }
                if pl_f32_to_f16(f) != h { Issue.record("round trip \(h) → \(f) → \(pl_f32_to_f16(f))") }
            }
        }
        #expect(nans == 2 * 1023)
    }

    @Test("f32 → f16 rounds to nearest even like Float16(Float) on a million floats")
    func f32ToF16Random() {
        var rng = SeededSplitMix64(seed: 16)
        var mismatches = 0
        for i in 0..<1_000_000 {
            let bits: UInt32
            switch i % 4 {
            case 0: bits = UInt32(truncatingIfNeeded: rng.next())
            // Around the f16 range (2^-26 ... 2^17), where rounding matters.
            case 1: bits = UInt32(truncatingIfNeeded: rng.next()) & 0x80FF_FFFF | UInt32(101 + rng.below(43)) << 23
            // Exactly halfway between two halves (and just beside).
            case 2:
                let h = UInt16(truncatingIfNeeded: rng.next()) & 0x7bfe
                let mid = (Double(Float16(bitPattern: h)) + Double(Float16(bitPattern: h + 1))) / 2
                bits = Float(mid).bitPattern &+ UInt32(rng.below(3)) &- 1
            default: bits = UInt32(truncatingIfNeeded: rng.next()) & 0x8000_1FFF | UInt32(rng.below(1 << 18)) << 13
            }
            let f = Float(bitPattern: bits)
            let got = pl_f32_to_f16(f)
            let want = Float16(f).bitPattern
            if f.isNaN {
                if got & 0x7c00 != 0x7c00 || got & 0x3ff == 0 { mismatches += 1 }
            } else if got != want {
                mismatches += 1
                if mismatches < 10 { Issue.record("f32 \(f) (0x\(String(bits, radix: 16))): got 0x\(String(got, radix: 16)), want 0x\(String(want, radix: 16))") }
            }
        }
        #expect(mismatches == 0)
    }
    #endif

    // expf, vectorised

    /// Every 4099th float bit pattern, plus all floats in the ranges where glibc changes path or the result
    /// becomes subnormal, overflows or underflows (a full sweep of all 2^32 passed once; it takes 90 s).
    static let expfInputs: [Float] = {
        var bits = Array(stride(from: UInt32(0), to: UInt32.max - 4099, by: 4099))
        for edge: Float in [88.0, -88.0, 88.72283, -87.33654, -103.97208, -103.27893] {
            let b = edge.bitPattern
            bits += (b - 2000)...(b + 2000)
        }
        bits += 0...2000           // +0 and the smallest subnormals
        bits += 0x8000_0000...0x8000_07d0
        bits += [Float.infinity, -.infinity, .nan, -.nan, .greatestFiniteMagnitude, .leastNonzeroMagnitude,
                 -.leastNonzeroMagnitude, Float(bitPattern: 0x7fa0_0000)].map(\.bitPattern)
        return bits.map { Float(bitPattern: $0) }
    }()

    @Test("pl_expf_row and pl_swiglu are bit-identical to libm's expf, on both paths")
    func expfMatchesLibm() {
        let x = Self.expfInputs
        let expected = x.map { Foundation.expf($0) }
        let silu = x.map { v in v / (1 + Foundation.expf(-v)) * 1.7 }
        Self.bothPaths { path in
            var y = [Float](repeating: 0, count: x.count)
            pl_expf_row(x, &y, Int64(x.count))
            var g = x
            let u = [Float](repeating: 1.7, count: x.count)
            pl_swiglu(&g, u, Int64(x.count))
            var bad = 0, badSilu = 0
            for i in x.indices {
                if y[i].bitPattern != expected[i].bitPattern && !(y[i].isNaN && expected[i].isNaN) {
                    if bad < 3 { Issue.record("\(path) expf(\(x[i])) = \(y[i]), libm \(expected[i])") }
                    bad += 1
                }
                if g[i].bitPattern != silu[i].bitPattern && !(g[i].isNaN && silu[i].isNaN) {
                    if badSilu < 3 { Issue.record("\(path) swiglu(\(x[i])) = \(g[i]), libm \(silu[i])") }
                    badSilu += 1
                }
            }
            #expect(bad == 0 && badSilu == 0, "\(path): \(bad) expf and \(badSilu) swiglu differences in \(x.count) inputs")
        }
    }

    @Test("f32 → f16 known cases")
    func f32ToF16Known() {
        let cases: [(Float, UInt16)] = [
            (0, 0x0000), (-0.0, 0x8000), (1, 0x3C00), (-2, 0xC000), (0.5, 0x3800), (65504, 0x7BFF),
            (65519.996, 0x7BFF), (65520, 0x7C00), (1e10, 0x7C00), (-70000, 0xFC00),
            (.infinity, 0x7C00), (-.infinity, 0xFC00),
            (0x1p-14, 0x0400),                 // smallest normal
            (0x1p-24, 0x0001), (6e-8, 0x0001), // smallest subnormal
            (0x1p-25, 0x0000),                 // halfway to the smallest subnormal: ties to even (0)
            (0x1.000002p-25, 0x0001),          // just above halfway
            (0x1.8p-24, 0x0002),               // 1.5 subnormal steps: ties to even (2)
            (0x1.4p-23, 0x0002),               // 2.5 steps → 2
            (0x1.cp-23, 0x0004),               // 3.5 steps → 4
            (0x1p-26, 0x0000), (1e-30, 0x0000), (-1e-30, 0x8000),
            (0x1.ff8p-15, 0x03FF),             // the largest subnormal
            (0x1.ffcp-15, 0x0400),             // half a step above it: ties to even, into the normals
            (1 + 0x1p-11, 0x3C00),             // tie, even stays
            (1 + 0x1.8p-10, 0x3C02),           // 1 + 1.5 ulp → even (2)
            (1 + 0x1p-11 + 0x1p-20, 0x3C01),   // above the tie rounds up
            (2047.5, 0x67FF + 1),              // 2047.5 ties to 2048 (even)
            (0.1, 0x2E66), (-3.14159265, 0xC248),
        ]
        for (f, bits) in cases {
            #expect(pl_f32_to_f16(f) == bits, "\(f): 0x\(String(pl_f32_to_f16(f), radix: 16)) want 0x\(String(bits, radix: 16))")
        }
        let nan = pl_f32_to_f16(.nan)
        #expect(nan & 0x7c00 == 0x7c00 && nan & 0x3ff != 0)
        #expect(pl_f16_to_f32(nan).isNaN)
        #expect(pl_f16_to_f32(0x0001) == 0x1p-24 && pl_f16_to_f32(0x03FF) == 0x1.ff8p-15 && pl_f16_to_f32(0x7BFF) == 65504)
        #expect(pl_f16_to_f32(0xFC00) == -.infinity && pl_f16_to_f32(0x8000).bitPattern == (-0.0 as Float).bitPattern)
        // The row converter is the scalar one.
        let xs: [Float] = [1, 65520, 0x1p-25, 0x1.8p-24, -0.1, .infinity]
        var out = [UInt16](repeating: 0, count: xs.count)
        pl_f32_to_f16_row(xs, &out, Int64(xs.count))
        #expect(out == xs.map(pl_f32_to_f16))
    }
}
