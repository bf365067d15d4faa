import Foundation
import Testing
import PocketLM
import CKernels

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
