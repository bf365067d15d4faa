import Foundation
import Testing
import PocketLM
import CKernels

// MARK: - Swift references for the kernels

/// Half-precision decoding independent of the C code (Swift's own Float16 where the platform has it).
func kernelTestHalf(_ bits: UInt16) -> Float {
    #if os(macOS) && arch(x86_64)
    let sign: Float = bits & 0x8000 != 0 ? -1 : 1
    let e = Int(bits >> 10) & 0x1f, m = Float(bits & 0x3ff)
    if e == 0 { return sign * m * 0x1p-24 }
    if e == 31 { return m == 0 ? sign * .infinity : .nan }
    return sign * (1 + m / 1024) * Float(sign: .plus, exponent: e - 15, significand: 1)
    #else
    return Float(Float16(bitPattern: bits))
    #endif
}

/// Weights quantized in Swift by ggml's reference rules, and dequantized back, for kernel checks.
enum QuantRef {
    static let blockBytes: [UInt32: Int] = [8: 34, 2: 18, 3: 20]

    static func f16(_ x: Float) -> UInt16 { pl_f32_to_f16(x) }

    /// Q8_0: d = amax/127, q = round(x/d).
    static func q8_0(_ x: ArraySlice<Float>) -> [UInt8] {
        var out = GGUFTestBytes()
        var i = x.startIndex
        while i < x.endIndex {
            let b = x[i..<(i + 32)]
            let amax = b.map(abs).max()!
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            out.u16(f16(d))
            for v in b { out.u8(UInt8(bitPattern: Int8((v * id).rounded()))) }
            i += 32
        }
        return out.bytes
    }

    /// Q4_0: d = max/-8 with max the signed value of largest magnitude, q = min(15, Int(x/d + 8.5)).
    static func q4_0(_ x: ArraySlice<Float>) -> [UInt8] {
        var out = GGUFTestBytes()
        var i = x.startIndex
        while i < x.endIndex {
            let b = Array(x[i..<(i + 32)])
            var amax: Float = 0, mx: Float = 0
            for v in b where abs(v) > amax { amax = abs(v); mx = v }
            let d = mx / -8
            let id: Float = d != 0 ? 1 / d : 0
            out.u16(f16(d))
            for j in 0..<16 {
                let lo = UInt8(min(15, Int(b[j] * id + 8.5)))
                let hi = UInt8(min(15, Int(b[j + 16] * id + 8.5)))
                out.u8(lo | hi << 4)
            }
            i += 32
        }
        return out.bytes
    }

    /// Q4_1: d = (max-min)/15, m = min, q = min(15, Int((x-min)/d + 0.5)).
    static func q4_1(_ x: ArraySlice<Float>) -> [UInt8] {
        var out = GGUFTestBytes()
        var i = x.startIndex
        while i < x.endIndex {
            let b = Array(x[i..<(i + 32)])
            let mn = b.min()!, mx = b.max()!
            let d = (mx - mn) / 15
            let id: Float = d != 0 ? 1 / d : 0
            out.u16(f16(d))
            out.u16(f16(mn))
            for j in 0..<16 {
                let lo = UInt8(min(15, Int((b[j] - mn) * id + 0.5)))
                let hi = UInt8(min(15, Int((b[j + 16] - mn) * id + 0.5)))
                out.u8(lo | hi << 4)
            }
            i += 32
        }
        return out.bytes
    }

    static func quantize(_ type: UInt32, _ x: ArraySlice<Float>) -> [UInt8] {
        switch type {
        case 8: q8_0(x)
        case 2: q4_0(x)
        case 3: q4_1(x)
        case 0: x.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init) }
        case 1: x.flatMap { v in withUnsafeBytes(of: f16(v).littleEndian, Array.init) }
        case 30: x.flatMap { v in withUnsafeBytes(of: UInt16(truncatingIfNeeded: v.bitPattern >> 16).littleEndian, Array.init) }
        default: fatalError("type \(type)")
        }
    }

    static func u16(_ p: ArraySlice<UInt8>, _ at: Int) -> UInt16 {
        UInt16(p[p.startIndex + at]) | UInt16(p[p.startIndex + at + 1]) << 8
    }

    /// Pure-Swift dequantization of one row (float arithmetic as gguf-py does it: d·q, d·q + m).
    static func dequantize(_ type: UInt32, _ row: ArraySlice<UInt8>, _ n: Int) -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(n)
        switch type {
        case 0:
            for i in 0..<n {
                let s = row.startIndex + 4 * i
                out.append(Float(bitPattern: UInt32(row[s]) | UInt32(row[s + 1]) << 8 | UInt32(row[s + 2]) << 16 | UInt32(row[s + 3]) << 24))
            }
        case 1: for i in 0..<n { out.append(kernelTestHalf(u16(row, 2 * i))) }
        case 30: for i in 0..<n { out.append(Float(bitPattern: UInt32(u16(row, 2 * i)) << 16)) }
        case 8:
            for b in 0..<(n / 32) {
                let d = kernelTestHalf(u16(row, 34 * b))
                for j in 0..<32 { out.append(d * Float(Int8(bitPattern: row[row.startIndex + 34 * b + 2 + j]))) }
            }
        case 2:
            for b in 0..<(n / 32) {
                let d = kernelTestHalf(u16(row, 18 * b))
                let q = row[(row.startIndex + 18 * b + 2)...].prefix(16)
                out += q.map { d * Float(Int($0 & 15) - 8) }
                out += q.map { d * Float(Int($0 >> 4) - 8) }
            }
        case 3:
            for b in 0..<(n / 32) {
                let d = kernelTestHalf(u16(row, 20 * b)), m = kernelTestHalf(u16(row, 20 * b + 2))
                let q = row[(row.startIndex + 20 * b + 4)...].prefix(16)
                out += q.map { d * Float($0 & 15) + m }
                out += q.map { d * Float($0 >> 4) + m }
            }
        default: fatalError("type \(type)")
        }
        return out
    }

    static func rowBytes(_ type: UInt32, _ n: Int) -> Int {
        switch type {
        case 0: 4 * n
        case 1, 30: 2 * n
        default: n / 32 * blockBytes[type]!
        }
    }

    /// A parsed Q8_0 / Q8_1 activation block.
    struct ActBlock { var d: Float; var s: Float; var q: [Int] }

    static func parseActivations(_ bytes: [UInt8], q8_1: Bool, n: Int) -> [ActBlock] {
        let bb = q8_1 ? 36 : 34, h = q8_1 ? 4 : 2
        return (0..<(n / 32)).map { b in
            let p = bytes[(b * bb)...]
            return ActBlock(d: kernelTestHalf(u16(p, 0)), s: q8_1 ? kernelTestHalf(u16(p, 2)) : .nan,
                            q: (0..<32).map { Int(Int8(bitPattern: p[p.startIndex + h + $0])) })
        }
    }

    /// Σ w·x over weights as stored and activations as quantized (Q8_1's stored s = d·Σq is used for the
    /// min term, as ggml does), in double; with Σ|terms| for the tolerance.
    static func dotQuantized(_ type: UInt32, _ row: ArraySlice<UInt8>, _ act: [ActBlock]) -> (value: Double, scale: Double) {
        let bb = blockBytes[type]!
        var value = 0.0, scale = 0.0
        for (b, a) in act.enumerated() {
            let blk = row[(row.startIndex + b * bb)...].prefix(bb)
            let dw = Double(kernelTestHalf(u16(blk, 0)))
            var qw: [Int]
            switch type {
            case 8: qw = (0..<32).map { Int(Int8(bitPattern: blk[blk.startIndex + 2 + $0])) }
            case 2: let q = blk.dropFirst(2); qw = q.map { Int($0 & 15) - 8 } + q.map { Int($0 >> 4) - 8 }
            default: let q = blk.dropFirst(4); qw = q.map { Int($0 & 15) } + q.map { Int($0 >> 4) }
            }
            var s = 0, sa = 0
            for j in 0..<32 { s += qw[j] * a.q[j]; sa += abs(qw[j] * a.q[j]) }
            value += dw * Double(a.d) * Double(s)
            scale += abs(dw * Double(a.d)) * Double(sa)
            if type == 3 {
                let m = Double(kernelTestHalf(u16(blk, 2)))
                value += m * Double(a.s)
                scale += abs(m * Double(a.s))
            }
        }
        return (value, scale)
    }
}

extension SeededSplitMix64 {
    /// Test data with character: most blocks normal, some zero, constant, huge, tiny or with an outlier.
    mutating func kernelData(_ n: Int) -> [Float] {
        var x: [Float] = []
        x.reserveCapacity(n)
        var i = 0
        while i < n {
            let len = min(32, n - i)
            let mode = below(10)
            for j in 0..<len {
                let g = normal()
                switch mode {
                case 0: x.append(0)
                case 1: x.append(0.75)
                case 2: x.append(g * 1000)
                case 3: x.append(g * 1e-4)
                case 4: x.append(j == 5 ? 40 : g * 0.1)
                case 5: x.append(-abs(g) - 0.5)
                default: x.append(g)
                }
            }
            i += len
        }
        return x
    }
}

// MARK: - Tests

/// Both kernel paths (AVX-512 and portable) against Swift references. Serialized: `pl_force_portable` is global.
@Suite("C kernels", .serialized)
struct KernelTests {
    /// Runs `body` once with the portable kernels forced and once with the CPU's choice, restoring the latter.
    static func bothPaths(_ body: (String) throws -> Void) rethrows {
        defer { pl_force_portable(0) }
        pl_force_portable(1)
        #expect(pl_has_avx512() == 0)
        try body("portable")
        pl_force_portable(0)
        try body(pl_has_avx512() != 0 ? "avx512" : "portable (no AVX-512 on this CPU)")
    }

    // (a) dequantization against gguf-py

    static let dequantTypes: [(String, UInt32)] = [("f32", 0), ("f16", 1), ("bf16", 30), ("q8_0", 8), ("q4_0", 2), ("q4_1", 3)]

    @Test("pl_dequantize_row equals gguf-py's dequantization bit for bit", arguments: dequantTypes.map(\.0))
    func dequantFixture(name: String) throws {
        let g = try GGUFFile(path: try TestPaths.fixture("dequant.gguf"))
        let w = try #require(g.tensorInfo("\(name).w"))
        let e = try #require(g.tensorInfo("\(name).expected"))
        let type = Self.dequantTypes.first { $0.0 == name }!.1
        #expect(w.type.rawValue == type && w.shape == [96, 7] && e.type == .f32 && e.shape == [96, 7])
        let rowBytes = try #require(w.type.rowBytes(columns: 96))
        let expected = UnsafeRawBufferPointer(start: g.data(of: e), count: e.byteCount)
        let expectedBits = (0..<(7 * 96)).map { expected.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self) }
        let stored = Array(UnsafeRawBufferPointer(start: g.data(of: w), count: w.byteCount))

        // The Swift reference agrees with gguf-py first (so it can be trusted below).
        for r in 0..<7 {
            let mine = QuantRef.dequantize(type, stored[(r * rowBytes)..<((r + 1) * rowBytes)], 96)
            #expect(mine.map(\.bitPattern) == Array(expectedBits[(r * 96)..<((r + 1) * 96)]), "Swift reference row \(r)")
        }
        Self.bothPaths { path in
            var out = [Float](repeating: .nan, count: 96)
            for r in 0..<7 {
                out.withUnsafeMutableBufferPointer { pl_dequantize_row(Int32(type), g.data(of: w) + r * rowBytes, $0.baseAddress, 96) }
                let want = expectedBits[(r * 96)..<((r + 1) * 96)]
                let bad = (0..<96).filter { out[$0].bitPattern != want[r * 96 + $0] }
                let example = bad.first.map { c -> String in "\(out[c]) vs \(Float(bitPattern: want[r * 96 + c]))" } ?? ""
                #expect(bad.isEmpty, "\(name) \(path) row \(r): columns \(Array(bad.prefix(8))) e.g. \(example)")
            }
            var all = [Float](repeating: .nan, count: 7 * 96)
            all.withUnsafeMutableBufferPointer { pl_dequantize_rows(Int32(type), g.data(of: w), rowBytes, $0.baseAddress, 96, 0, 7) }
            #expect(all.map(\.bitPattern) == expectedBits, "\(name) \(path) pl_dequantize_rows")
            // A sub-range lands at the start of dst.
            var part = [Float](repeating: .nan, count: 2 * 96)
            part.withUnsafeMutableBufferPointer { pl_dequantize_rows(Int32(type), g.data(of: w), rowBytes, $0.baseAddress, 96, 4, 6) }
            #expect(part.map(\.bitPattern) == Array(expectedBits[(4 * 96)..<(6 * 96)]), "\(name) \(path) rows 4..<6")
        }
    }

    // (b) matrix-vector products

    static func check(_ got: Float, _ want: Double, _ scale: Double, rel: Double, _ what: @autoclosure () -> String,
                      sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        let tol = rel * scale + 1e-30
        let ok = abs(Double(got) - want) <= tol
        if !ok {
            Issue.record("\(what()): got \(got), want \(want) (diff \(abs(Double(got) - want)), tolerance \(tol))",
                         sourceLocation: sourceLocation)
        }
        return ok
    }

    @Test("pl_matvec with float weights (F32, F16, BF16) and odd sizes", arguments: [UInt32(0), 1, 30])
    func matvecFloat(type: UInt32) throws {
        var rng = SeededSplitMix64(seed: 0xF10A7 + UInt64(type))
        var failures = 0
        for cols in [1, 7, 15, 16, 17, 31, 33, 100] {
            for rows in [1, 3, 9, 17] {
                let wf = rng.kernelData(rows * cols)
                let x = rng.kernelData(cols)
                let w = QuantRef.quantize(type, wf[...])
                let rb = QuantRef.rowBytes(type, cols)
                #expect(w.count == rows * rb)
                var want: [(Double, Double)] = []
                for r in 0..<rows {
                    let wr = QuantRef.dequantize(type, w[(r * rb)..<((r + 1) * rb)], cols)
                    var s = 0.0, a = 0.0
                    for j in 0..<cols { s += Double(wr[j]) * Double(x[j]); a += abs(Double(wr[j]) * Double(x[j])) }
                    want.append((s, a))
                }
                Self.bothPaths { path in
                    for (r0, r1) in [(0, rows), (rows / 2, rows)] where r1 > r0 {
                        var y = [Float](repeating: .nan, count: r1 - r0 + 1)
                        w.withUnsafeBytes { wp in
                            y.withUnsafeMutableBufferPointer { pl_matvec(Int32(type), wp.baseAddress, rb, x, $0.baseAddress, Int64(cols), Int64(r0), Int64(r1)) }
                        }
                        for r in r0..<r1 where !Self.check(y[r - r0], want[r].0, want[r].1, rel: 1e-5,
                                                           "type \(type) \(path) \(rows)x\(cols) row \(r) of \(r0)..<\(r1)") {
                            failures += 1
                        }
                        #expect(y[r1 - r0].isNaN, "wrote past r1")
                        // A row's value does not depend on the range it is computed in (F32 takes rows from four
                        // quarters of the range at once), so the thread count cannot change it.
                        for r in r0..<r1 {
                            var alone: Float = .nan
                            w.withUnsafeBytes { wp in
                                pl_matvec(Int32(type), wp.baseAddress, rb, x, &alone, Int64(cols), Int64(r), Int64(r + 1))
                            }
                            #expect(alone.bitPattern == y[r - r0].bitPattern, "type \(type) \(path) row \(r) alone vs in \(r0)..<\(r1)")
                        }
                    }
                }
            }
        }
        #expect(failures == 0)
    }

    @Test("pl_gemm_f32: every output is one fma chain over k in order, bit for bit, for any row range and batch",
          arguments: [(1, 1, 1), (5, 37, 45), (8, 576, 64), (11, 130, 33), (17, 300, 70)])
    func gemmF32(tokens: Int, k: Int, rows: Int) {
        var rng = SeededSplitMix64(seed: UInt64(tokens * 1000 + k * 10 + rows))
        let x = rng.kernelData(tokens * k), w = rng.kernelData(rows * k)
        var want = [Float](repeating: 0, count: tokens * rows)
        for t in 0..<tokens {
            for r in 0..<rows {
                var acc: Float = 0
                for j in 0..<k { acc = acc.addingProduct(x[t * k + j], w[r * k + j]) }   // fused, as fma
                want[t * rows + r] = acc
            }
        }
        var panel = [Float](repeating: 0, count: 32 * k)
        Self.bothPaths { path in
            // Two row ranges, as two threads would split them (the first a multiple of 32, as Linear splits).
            let mid = min(rows, 32)
            var y = [Float](repeating: .nan, count: tokens * rows)
            for (r0, r1) in [(0, mid), (mid, rows)] where r0 < r1 {
                pl_gemm_f32(x, Int64(k), Int64(tokens), w, Int64(k), Int64(k), &y, Int64(rows), Int64(r0), Int64(r1), &panel)
            }
            #expect(y.map(\.bitPattern) == want.map(\.bitPattern), "\(path) \(tokens)×\(k) · \(rows)")
        }
    }

    static let quantTypes: [UInt32] = [8, 2, 3]

    /// ggml's x86 SIMD activation quantizer (which the kernels copy): d = amax/127 stored as f16,
    /// q = round-half-to-even(x · 127/amax), and for Q8_1 s = f16(d · Σq).
    static func quantizeBlockRef(_ blk: ArraySlice<Float>) -> (d: Float, q: [Int]) {
        let amax = blk.map(abs).max()!
        let id: Float = amax != 0 ? 127 / amax : 0
        return (amax / 127, blk.map { Int(($0 * id).rounded(.toNearestOrEven)) })
    }

    @Test("pl_quantize_q8_0 / q8_1 follow ggml's rules exactly")
    func quantizeActivations() throws {
        var rng = SeededSplitMix64(seed: 77)
        // Block 0 has amax 127, so x·127/amax = x exactly: the halves are exact ties (2.5 → 2, 3.5 → 4, -0.5 → -0).
        let ties: [Float] = [127, 2.5, 3.5, -0.5, 0.5, -2.5, 126.5, -1.5, 1.5, 4.5] + [Float](repeating: 0.25, count: 22)
        for n in [32, 64, 96, 576] {
            let x = ties + rng.kernelData(n - 32)
            Self.bothPaths { path in
                var q0 = [UInt8](repeating: 0xAA, count: n / 32 * 34 + 1)
                var q1 = [UInt8](repeating: 0xAA, count: n / 32 * 36 + 1)
                q0.withUnsafeMutableBytes { pl_quantize_q8_0(x, $0.baseAddress, Int64(n)) }
                q1.withUnsafeMutableBytes { pl_quantize_q8_1(x, $0.baseAddress, Int64(n)) }
                #expect(q0.last == 0xAA && q1.last == 0xAA, "\(path): wrote past the end")
                let b0 = QuantRef.parseActivations(q0, q8_1: false, n: n)
                let b1 = QuantRef.parseActivations(q1, q8_1: true, n: n)
                #expect(Array(b0[0].q[0..<10]) == [127, 2, 4, 0, 0, -2, 126, -2, 2, 4], "\(path): ties round to even")
                for b in 0..<(n / 32) {
                    let (d, q) = Self.quantizeBlockRef(x[(b * 32)..<(b * 32 + 32)])
                    #expect(b0[b].d.bitPattern == kernelTestHalf(pl_f32_to_f16(d)).bitPattern, "\(path) q8_0 d of block \(b)")
                    #expect(b0[b].q == q, "\(path) q8_0 q of block \(b)")
                    #expect(b1[b].d.bitPattern == b0[b].d.bitPattern && b1[b].q == q, "\(path) q8_1 block \(b)")
                    #expect(b1[b].s.bitPattern == kernelTestHalf(pl_f32_to_f16(d * Float(q.reduce(0, +)))).bitPattern,
                            "\(path) q8_1 s = d·Σq of block \(b)")
                    #expect(q.allSatisfy { abs($0) <= 127 })
                    // Dequantized activations are within half a step of the input.
                    #expect((0..<32).allSatisfy { abs(Float(q[$0]) * d - x[b * 32 + $0]) <= d * 0.5001 + 1e-30 })
                }
            }
        }
        #expect(pl_activation_type(8) == 8 && pl_activation_type(2) == 8 && pl_activation_type(3) == 9)
        #expect(pl_activation_type(0) == -1 && pl_activation_type(1) == -1 && pl_activation_type(30) == -1)
    }

    /// Random quantized weights (rows × cols) and activations, with the reference products per row and token.
    struct QuantCase {
        var w: [UInt8]
        var rowBytes: Int
        var xs: [[Float]]
        var xq: [UInt8]
        var stride: Int
        /// [token][row] → (value, Σ|terms|)
        var want: [[(Double, Double)]]
        /// [row] → (value, Σ|terms|) with float activations (pl_matvec on quantized weights)
        var wantFloat: [[(Double, Double)]]
    }

    static func quantCase(type: UInt32, rows: Int, cols: Int, tokens: Int, rng: inout SeededSplitMix64) -> QuantCase {
        let w = QuantRef.quantize(type, rng.kernelData(rows * cols)[...])
        let rb = QuantRef.rowBytes(type, cols)
        let q8_1 = type == 3
        let stride = cols / 32 * (q8_1 ? 36 : 34) + 8 // padded rows: the kernel must use the stride given
        var xq = [UInt8](repeating: 0, count: stride * tokens)
        var xs: [[Float]] = []
        var want: [[(Double, Double)]] = []
        var wantFloat: [[(Double, Double)]] = []
        for t in 0..<tokens {
            let x = rng.kernelData(cols)
            xs.append(x)
            var q = [UInt8](repeating: 0, count: stride)
            q.withUnsafeMutableBytes {
                if q8_1 { pl_quantize_q8_1(x, $0.baseAddress, Int64(cols)) } else { pl_quantize_q8_0(x, $0.baseAddress, Int64(cols)) }
            }
            xq.replaceSubrange((t * stride)..<((t + 1) * stride), with: q)
            let act = QuantRef.parseActivations(q, q8_1: q8_1, n: cols)
            want.append((0..<rows).map { r in QuantRef.dotQuantized(type, w[(r * rb)..<((r + 1) * rb)], act) })
            wantFloat.append((0..<rows).map { r in
                let wr = QuantRef.dequantize(type, w[(r * rb)..<((r + 1) * rb)], cols)
                var s = 0.0, a = 0.0
                for j in 0..<cols { s += Double(wr[j]) * Double(x[j]); a += abs(Double(wr[j]) * Double(x[j])) }
                return (s, a)
            })
        }
        return QuantCase(w: w, rowBytes: rb, xs: xs, xq: xq, stride: stride, want: want, wantFloat: wantFloat)
    }

    @Test("pl_matvec_q and pl_matvec on quantized weights", arguments: quantTypes)
    func matvecQuantized(type: UInt32) throws {
        var rng = SeededSplitMix64(seed: 0x5EED + UInt64(type))
        var failures = 0
        for cols in [32, 64, 96, 576] {
            for rows in [1, 3, 9, 17] {
                let c = Self.quantCase(type: type, rows: rows, cols: cols, tokens: 1, rng: &rng)
                Self.bothPaths { path in
                    for (r0, r1) in [(0, rows), (1, rows)] where r1 > r0 {
                        var y = [Float](repeating: .nan, count: r1 - r0 + 1)
                        var yf = y
                        c.w.withUnsafeBytes { wp in
                            c.xq.withUnsafeBytes { xp in
                                y.withUnsafeMutableBufferPointer {
                                    pl_matvec_q(Int32(type), wp.baseAddress, c.rowBytes, xp.baseAddress, $0.baseAddress,
                                                Int64(cols), Int64(r0), Int64(r1))
                                }
                            }
                            yf.withUnsafeMutableBufferPointer {
                                pl_matvec(Int32(type), wp.baseAddress, c.rowBytes, c.xs[0], $0.baseAddress,
                                          Int64(cols), Int64(r0), Int64(r1))
                            }
                        }
                        for r in r0..<r1 {
                            if !Self.check(y[r - r0], c.want[0][r].0, c.want[0][r].1, rel: 1e-5,
                                           "matvec_q type \(type) \(path) \(rows)x\(cols) row \(r)") { failures += 1 }
                            if !Self.check(yf[r - r0], c.wantFloat[0][r].0, c.wantFloat[0][r].1, rel: 1e-5,
                                           "matvec type \(type) \(path) \(rows)x\(cols) row \(r)") { failures += 1 }
                        }
                        #expect(y[r1 - r0].isNaN && yf[r1 - r0].isNaN, "wrote past r1")
                    }
                }
            }
        }
        #expect(failures == 0)
    }

    @Test("pl_matmul_q: several tokens, output stride, row ranges", arguments: quantTypes)
    func matmulQuantized(type: UInt32) throws {
        var rng = SeededSplitMix64(seed: 0xBA7C4 + UInt64(type))
        var failures = 0
        for cols in [32, 96, 576] {
            for rows in [1, 3, 9, 17] {
                for tokens in [1, 2, 5] {
                    let c = Self.quantCase(type: type, rows: rows, cols: cols, tokens: tokens, rng: &rng)
                    let ldy = rows + 3
                    Self.bothPaths { path in
                        for (r0, r1) in [(0, rows), (rows / 2, rows)] where r1 > r0 {
                            var y = [Float](repeating: .nan, count: tokens * ldy)
                            c.w.withUnsafeBytes { wp in
                                c.xq.withUnsafeBytes { xp in
                                    y.withUnsafeMutableBufferPointer {
                                        pl_matmul_q(Int32(type), wp.baseAddress, c.rowBytes, xp.baseAddress, c.stride,
                                                    Int64(tokens), $0.baseAddress, Int64(ldy), Int64(cols), Int64(r0), Int64(r1))
                                    }
                                }
                            }
                            for t in 0..<tokens {
                                for r in 0..<ldy {
                                    let v = y[t * ldy + r]
                                    if (r0..<r1).contains(r) {
                                        if !Self.check(v, c.want[t][r].0, c.want[t][r].1, rel: 1e-5,
                                                       "matmul_q type \(type) \(path) \(rows)x\(cols) token \(t) row \(r)") {
                                            failures += 1
                                        }
                                    } else if !v.isNaN {
                                        Issue.record("matmul_q wrote outside rows \(r0)..<\(r1): token \(t) row \(r)")
                                        failures += 1
                                    }
                                }
                            }
                        }
                        // The batch kernel agrees with the single-token one bit for bit.
                        for t in 0..<tokens {
                            var y1 = [Float](repeating: .nan, count: rows)
                            c.w.withUnsafeBytes { wp in
                                c.xq.withUnsafeBytes { xp in
                                    y1.withUnsafeMutableBufferPointer {
                                        pl_matvec_q(Int32(type), wp.baseAddress, c.rowBytes, xp.baseAddress! + t * c.stride,
                                                    $0.baseAddress, Int64(cols), 0, Int64(rows))
                                    }
                                }
                            }
                            var yb = [Float](repeating: .nan, count: tokens * rows)
                            c.w.withUnsafeBytes { wp in
                                c.xq.withUnsafeBytes { xp in
                                    yb.withUnsafeMutableBufferPointer {
                                        pl_matmul_q(Int32(type), wp.baseAddress, c.rowBytes, xp.baseAddress, c.stride,
                                                    Int64(tokens), $0.baseAddress, Int64(rows), Int64(cols), 0, Int64(rows))
                                    }
                                }
                            }
                            #expect(y1.map(\.bitPattern) == yb[(t * rows)..<((t + 1) * rows)].map(\.bitPattern),
                                    "\(path) type \(type) token \(t)")
                        }
                    }
                }
            }
        }
        #expect(failures == 0)
    }

    // attention

    /// llama.cpp's F16-cache attention in double: q and the cache in f16, softmax, probabilities rounded to f16.
    static func attentionReference(q: [Float], k: [UInt16], v: [UInt16], stride: Int, nCtx: Int, hd: Int, scale: Float)
        -> (out: [Double], bound: [Double]) {
        let qh = q.map { Double(kernelTestHalf(pl_f32_to_f16($0))) }
        var scores = (0..<nCtx).map { t in
            (0..<hd).reduce(0.0) { $0 + qh[$1] * Double(kernelTestHalf(k[t * stride + $1])) } * Double(scale)
        }
        let mx = scores.max()!
        scores = scores.map { exp($0 - mx) }
        let sum = scores.reduce(0, +)
        let p = scores.map { $0 / sum }
        var out = [Double](repeating: 0, count: hd), bound = out
        for t in 0..<nCtx {
            let ph = Double(kernelTestHalf(pl_f32_to_f16(Float(p[t]))))
            // The kernel's float p may round to the other neighbouring half when p is within float error of a
            // tie between two halves: allow one f16 step of p there (and only there).
            let step = max(Double(sign: .plus, exponent: p[t].exponent - 10, significand: 1), 0x1p-24)
            let nearTie = abs(abs(ph - p[t]) - step / 2) < step * 2e-2
            for j in 0..<hd {
                let vv = Double(kernelTestHalf(v[t * stride + j]))
                out[j] += ph * vv
                bound[j] += 1e-5 * abs(ph * vv) + (nearTie ? step * abs(vv) : 0)
            }
        }
        return (out, bound)
    }

    @Test("pl_attention_f16 against a double reference", arguments: [8, 16, 24, 64, 128])
    func attention(headDim hd: Int) throws {
        var rng = SeededSplitMix64(seed: 0xA77 + UInt64(hd))
        var failures = 0
        for nCtx in [1, 2, 7, 33, 100] {
            for kvHeads in [1, 3] {
                let stride = kvHeads * hd
                let q = (0..<hd).map { _ in rng.normal() * 2 }
                let k = (0..<(nCtx * stride)).map { _ in pl_f32_to_f16(rng.normal()) }
                let v = (0..<(nCtx * stride)).map { _ in pl_f32_to_f16(rng.normal() * 3) }
                let head = kvHeads - 1 // the last KV head: exercises the offset and stride
                let kh = Array(k[(head * hd)...]), vh = Array(v[(head * hd)...])
                let scale = 1 / Float(hd).squareRoot()
                let ref = Self.attentionReference(q: q, k: kh, v: vh, stride: stride, nCtx: nCtx, hd: hd, scale: scale)
                var outs: [[Float]] = []
                Self.bothPaths { path in
                    var out = [Float](repeating: .nan, count: hd + 1)
                    var scores = [Float](repeating: 0, count: nCtx)
                    k.withUnsafeBufferPointer { kp in
                        v.withUnsafeBufferPointer { vp in
                            pl_attention_f16(q, kp.baseAddress! + head * hd, vp.baseAddress! + head * hd, Int64(stride),
                                             Int64(nCtx), Int64(hd), scale, &scores, &out)
                        }
                    }
                    #expect(out[hd].isNaN, "wrote past head_dim")
                    for j in 0..<hd where !Self.check(out[j], ref.out[j], ref.bound[j] + 1e-7, rel: 1,
                                                      "attention \(path) hd \(hd) n_ctx \(nCtx) kv heads \(kvHeads) [\(j)]") {
                        failures += 1
                    }
                    outs.append(Array(out[0..<hd]))
                }
                // The two paths differ only in summation order.
                for j in 0..<hd {
                    #expect(abs(outs[0][j] - outs[1][j]) <= Float(ref.bound[j]) * 2 + 1e-6)
                }
            }
        }
        #expect(failures == 0)
    }

    @Test("pl_attention_group_f16 gives each head exactly what pl_attention_f16 gives it alone",
          arguments: [16, 64])
    func attentionGroup(headDim hd: Int) {
        var rng = SeededSplitMix64(seed: 0x6A77 + UInt64(hd))
        for nCtx in [1, 3, 16, 17, 48, 100, 300] {
            for heads in 1...5 {
                let stride = 2 * hd // two KV heads; the group reads the second
                let q = (0..<(heads * hd)).map { _ in rng.normal() * 2 }
                let k = (0..<(nCtx * stride)).map { _ in pl_f32_to_f16(rng.normal()) }
                let v = (0..<(nCtx * stride)).map { _ in pl_f32_to_f16(rng.normal() * 3) }
                k.withUnsafeBufferPointer { kp in
                    v.withUnsafeBufferPointer { vp in
                        let kh = kp.baseAddress! + hd, vh = vp.baseAddress! + hd
                        var single = [Float](repeating: .nan, count: heads * hd)
                        var scores = [Float](repeating: 0, count: heads * nCtx)
                        for g in 0..<heads {
                            single.withUnsafeMutableBufferPointer { o in
                                q.withUnsafeBufferPointer { qp in
                                    pl_attention_f16(qp.baseAddress! + g * hd, kh, vh, Int64(stride), Int64(nCtx),
                                                     Int64(hd), 0.3, &scores, o.baseAddress! + g * hd)
                                }
                            }
                        }
                        var grouped = [Float](repeating: .nan, count: heads * hd + 1)
                        pl_attention_group_f16(q, Int64(heads), kh, vh, Int64(stride), Int64(nCtx), Int64(hd), 0.3,
                                               &scores, &grouped)
                        #expect(grouped[heads * hd].isNaN, "wrote past the last head")
                        #expect(grouped[0..<(heads * hd)].map(\.bitPattern) == single.map(\.bitPattern),
                                "hd \(hd), \(heads) heads, n_ctx \(nCtx)")
                    }
                }
            }
        }
    }

    /// On AVX-512 and AVX2 with head_dim 64 and up to PL_ATTENTION_TILE_PAIRS pairs this compares each tier's tile
    /// body with its one-query body (every x86 tier this CPU has; KernelISATests fails on an x86 CPU without both);
    /// elsewhere (the portable and NEON tiers, other sizes) the tile runs the one-query kernel per query and this
    /// checks only the layout (strides, causal lengths, nothing written past a query's heads).
    @Test("pl_attention_tile_f16 gives each (query, head) exactly what pl_attention_f16 gives it alone",
          arguments: [16, 64], KernelISA.supported)
    func attentionTile(headDim hd: Int, tier: KernelISA) {
        #expect(pl_isa_force_thread(tier.cCode) == 0, "\(tier)")
        defer { pl_isa_force_thread(-1) }
        var rng = SeededSplitMix64(seed: 0x711E + UInt64(hd))
        for nCtx in [1, 2, 15, 16, 17, 31, 63, 64, 100, 333] {
            for (queries, heads) in [(1, 3), (2, 3), (4, 3), (5, 3), (6, 3), (3, 1), (16, 1), (4, 4), (2, 5)] {
                let stride = 2 * hd // two KV heads; the tile reads the second
                let rows = nCtx + queries - 1
                let qStride = heads * hd + 8, outStride = heads * hd + 5   // gaps between queries stay untouched
                let q = (0..<(queries * qStride)).map { _ in rng.normal() * 2 }
                let k = (0..<(rows * stride)).map { _ in pl_f32_to_f16(rng.normal()) }
                let v = (0..<(rows * stride)).map { _ in pl_f32_to_f16(rng.normal() * 3) }
                k.withUnsafeBufferPointer { kp in
                    v.withUnsafeBufferPointer { vp in
                        let kh = kp.baseAddress! + hd, vh = vp.baseAddress! + hd
                        var single = [Float](repeating: .nan, count: queries * outStride)
                        var scores = [Float](repeating: 0, count: queries * heads * rows)
                        for t in 0..<queries {
                            for g in 0..<heads {
                                single.withUnsafeMutableBufferPointer { o in
                                    q.withUnsafeBufferPointer { qp in
                                        pl_attention_f16(qp.baseAddress! + t * qStride + g * hd, kh, vh, Int64(stride),
                                                         Int64(nCtx + t), Int64(hd), 0.3, &scores,
                                                         o.baseAddress! + t * outStride + g * hd)
                                    }
                                }
                            }
                        }
                        var tiled = [Float](repeating: .nan, count: queries * outStride)
                        pl_attention_tile_f16(q, Int64(qStride), Int64(queries), Int64(heads), kh, vh, Int64(stride),
                                              Int64(nCtx), Int64(hd), 0.3, &scores, &tiled, Int64(outStride))
                        #expect(tiled.map(\.bitPattern) == single.map(\.bitPattern),
                                "\(tier): hd \(hd), \(queries) queries × \(heads) heads, n_ctx \(nCtx)")
                    }
                }
            }
        }
    }

    @Test("attention over one position returns that position's value (f16)")
    func attentionSingle() {
        let q: [Float] = (0..<16).map { Float($0) - 7.3 }
        let k: [UInt16] = (0..<16).map { pl_f32_to_f16(Float($0) * 0.1) }
        let v: [UInt16] = (0..<16).map { pl_f32_to_f16(Float($0) * 0.37 - 2) }
        Self.bothPaths { _ in
            var out = [Float](repeating: .nan, count: 16)
            var scores = [Float](repeating: 0, count: 1)
            pl_attention_f16(q, k, v, 16, 1, 16, 0.25, &scores, &out)
            #expect(out.map(\.bitPattern) == v.map { kernelTestHalf($0).bitPattern })
        }
    }

    // f16 conversions

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

    // (c) thread-count independence

    @Test("Transformer output is bit-identical at 1 and 2 threads (tiny Q8_0)")
    func threadDeterminism() throws {
        let gguf = try GGUFFile(path: try TestPaths.fixture("tiny-q8_0.gguf"))
        let config = try ModelConfig(gguf: gguf)
        let tokens = try TinyReference.load("tiny-q8_0").tokens
        var batch: [[UInt32]] = [], decoded: [[UInt32]] = []
        for threads in [1, 2] {
            let model = try Transformer(store: MappedWeightStore(file: gguf), config: config, contextLength: 64, threads: threads)
            #expect(model.pool.threadCount == threads)
            let all = try tokens.withUnsafeBufferPointer { try model.forward($0, allLogits: true) }
            batch.append(all.map(\.bitPattern))
            model.reset()
            var steps: [UInt32] = []
            for t in tokens { steps += try model.decode(t).map(\.bitPattern) }
            // A prompt chunk then decode steps, as generation does.
            model.reset()
            _ = try tokens[0..<5].withUnsafeBufferPointer { try model.forward($0) }
            for t in tokens[5...] { steps += try model.decode(t).map(\.bitPattern) }
            decoded.append(steps)
        }
        #expect(batch[0].count == tokens.count * config.vocabSize)
        let batchDiffs = zip(batch[0], batch[1]).filter { $0 != $1 }.count
        let decodeDiffs = zip(decoded[0], decoded[1]).filter { $0 != $1 }.count
        #expect(batch[0].count == batch[1].count && batchDiffs == 0, "batch logits differ between 1 and 2 threads at \(batchDiffs) places")
        #expect(decoded[0].count == decoded[1].count && decodeDiffs == 0, "decoded logits differ between 1 and 2 threads at \(decodeDiffs) places")
        #expect(batch[0].allSatisfy { Float(bitPattern: $0).isFinite })
    }
}
