import CKernels
import Foundation
import Testing
import PocketLM

/// Q5_0, Q5_1 and the K-quants (Q2_K … Q6_K): the types of downloaded Q4_K_M files. Dequantization must equal
/// gguf-py's bit for bit; the dot products must be the exact value of the quantized operands up to float rounding,
/// and every path (portable, AVX-512 VNNI, single token, batch) must give the same bits, since all of them follow
/// llama.cpp's x86 lanes and float order (quants_k.c says how, and that it was checked against libggml-cpu).
@Suite("K-quant kernels")
struct KQuantKernelTests {
    /// (fixture name, ggml type, elements per block, bytes per block, offset of f16 d, offset of the second f16
    /// field: dmin (Q2_K, Q4_K, Q5_K) or m (Q5_1)).
    static let types: [(String, Int32, Int, Int, Int, Int?)] = [
        ("q5_0", 6, 32, 22, 0, nil), ("q5_1", 7, 32, 24, 0, 2), ("q2_k", 10, 256, 84, 80, 82),
        ("q3_k", 11, 256, 110, 108, nil), ("q4_k", 12, 256, 144, 0, 2), ("q5_k", 13, 256, 176, 0, 2),
        ("q6_k", 14, 256, 210, 208, nil),
    ]

    /// Runs `body` on the portable path, then on the fast one; returns whether the fast path exists here.
    static func bothPaths(_ body: (String) throws -> Void) rethrows {
        defer { pl_force_portable(0) }
        pl_force_portable(1)
        #expect(pl_has_avx512() == 0)
        try body("portable")
        pl_force_portable(0)
        try body(pl_packed_supported() != 0 ? "avx512-vnni" : "portable (no AVX-512 VNNI on this CPU)")
    }

    // MARK: - generators and references

    /// Random blocks of `type` (every quant/scale bit pattern is a valid encoding) with chosen f16 fields, by row:
    /// ordinary, large (up to 6e4), f16-subnormal, zero, negative.
    static func randomMatrix(_ t: (String, Int32, Int, Int, Int, Int?), rows: Int, cols: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        let nb = cols / t.2, bb = t.3
        var w = (0..<(rows * nb * bb)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        for r in 0..<rows {
            for b in 0..<nb {
                func value() -> Float {
                    let u = Float(rng.nextUnit())
                    switch r % 5 {
                    case 0: return 1e-4 + u * 2e-2
                    case 1: return 1e3 + u * 5.9e4
                    case 2: return 1e-7 + u * 6e-5
                    case 3: return b % 2 == 0 ? 0 : 1e-3 + u * 1e-2
                    default: return -(1e-3 + u * 1e-1)
                    }
                }
                let o = (r * nb + b) * bb
                for off in [t.4, t.5].compactMap({ $0 }) {
                    let h = pl_f32_to_f16(value())
                    w[o + off] = UInt8(h & 0xff); w[o + off + 1] = UInt8(h >> 8)
                }
            }
        }
        return w
    }

    /// ggml's quantize_row_q8_K_ref, written again from its description (the C one must equal it byte for byte).
    static func q8KRef(_ x: [Float]) -> [UInt8] {
        var out = [UInt8]()
        for b in 0..<(x.count / 256) {
            let blk = Array(x[(b * 256)..<((b + 1) * 256)])
            var amax: Float = 0, mx: Float = 0
            for v in blk where abs(v) > amax { amax = abs(v); mx = v }
            var q = [Int8](repeating: 0, count: 256), d: Float = 0
            if amax != 0 {
                let iscale = -127 / mx
                for j in 0..<256 { q[j] = Int8(min(127, Int((iscale * blk[j]).rounded(.toNearestOrEven)))) }
                d = 1 / iscale
            }
            withUnsafeBytes(of: d.bitPattern.littleEndian) { out += $0 }
            out += q.map { UInt8(bitPattern: $0) }
            for g in 0..<16 {
                let s = Int16(q[(16 * g)..<(16 * g + 16)].reduce(0) { $0 + Int($1) })
                withUnsafeBytes(of: s.littleEndian) { out += $0 }
            }
        }
        return out
    }

    static func quantize(_ act: Int32, _ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer, _ n: Int) {
        switch act {
        case Int32(PL_TYPE_Q8_0): pl_quantize_q8_0(x, out, Int64(n))
        case Int32(PL_TYPE_Q8_K): pl_quantize_q8_K(x, out, Int64(n))
        default: pl_quantize_q8_1(x, out, Int64(n))
        }
    }

    static func actStride(_ act: Int32, _ n: Int) -> Int {
        act == Int32(PL_TYPE_Q8_K) ? n / 256 * 292 : n / 32 * (act == Int32(PL_TYPE_Q8_0) ? 34 : 36)
    }

    /// The exact value of what the kernel multiplies, in Double: dequantized weights (checked against gguf-py)
    /// times the dequantized activation blocks; for Q5_1 the minimum term uses the activation's stored f16 sum s,
    /// as llama.cpp does. Also returns Σ|w·x| for the error bound.
    static func reference(_ t: (String, Int32, Int, Int, Int, Int?), row: UnsafeRawPointer, xq: UnsafeRawPointer,
                          n: Int) -> (Double, Double) {
        var w = [Float](repeating: 0, count: n)
        pl_dequantize_row(t.1, row, &w, Int64(n))
        let act = pl_activation_type(t.1)
        var sum = 0.0, mag = 0.0
        if act == Int32(PL_TYPE_Q8_K) {
            for b in 0..<(n / 256) {
                let blk = xq + b * 292
                let d = Double(Float(bitPattern: blk.loadUnaligned(as: UInt32.self)))
                for j in 0..<256 {
                    let x = d * Double(blk.load(fromByteOffset: 4 + j, as: Int8.self))
                    sum += Double(w[b * 256 + j]) * x; mag += abs(Double(w[b * 256 + j]) * x)
                }
            }
            return (sum, mag)
        }
        let bytes = act == Int32(PL_TYPE_Q8_0) ? 34 : 36, qoff = act == Int32(PL_TYPE_Q8_0) ? 2 : 4
        for b in 0..<(n / 32) {
            let blk = xq + b * bytes
            let d = Double(pl_f16_to_f32(blk.loadUnaligned(as: UInt16.self)))
            var xsum = 0.0
            for j in 0..<32 {
                let x = d * Double(blk.load(fromByteOffset: qoff + j, as: Int8.self))
                sum += Double(w[b * 32 + j]) * x; mag += abs(Double(w[b * 32 + j]) * x); xsum += x
            }
            if t.1 == Int32(PL_TYPE_Q5_1) {   // m·(d_x·Σq) → m·s
                let m = Double(pl_f16_to_f32((row + b * 24 + 2).loadUnaligned(as: UInt16.self)))
                let s = Double(pl_f16_to_f32((blk + 2).loadUnaligned(as: UInt16.self)))
                sum += m * (s - xsum)
            }
        }
        return (sum, mag)
    }

    // MARK: - dequantization

    @Test("pl_dequantize_row equals gguf-py's dequantization bit for bit", arguments: types.map(\.0))
    func dequantFixture(name: String) throws {
        let g = try GGUFFile(path: try TestPaths.fixture("kquant.gguf"))
        let w = try #require(g.tensorInfo("\(name).w"))
        let e = try #require(g.tensorInfo("\(name).expected"))
        let t = Self.types.first { $0.0 == name }!
        let rows = w.shape[1], cols = w.shape[0]
        #expect(w.type.rawValue == UInt32(t.1) && e.type == .f32 && e.shape == w.shape && rows >= 5 && cols % 256 == 0)
        #expect(w.type.isComputable)
        let rowBytes = try #require(w.type.rowBytes(columns: cols))
        let expected = UnsafeRawBufferPointer(start: g.data(of: e), count: e.byteCount)
        let bits = (0..<(rows * cols)).map { expected.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self) }
        Self.bothPaths { path in
            var out = [Float](repeating: .nan, count: rows * cols)
            out.withUnsafeMutableBufferPointer {
                pl_dequantize_rows(t.1, g.data(of: w), rowBytes, $0.baseAddress, Int64(cols), 0, Int64(rows))
            }
            for r in 0..<rows {
                let bad = (0..<cols).filter { out[r * cols + $0].bitPattern != bits[r * cols + $0] }
                #expect(bad.isEmpty, "\(name) \(path) row \(r): columns \(Array(bad.prefix(8)))")
            }
            // One row alone, from the middle.
            var one = [Float](repeating: .nan, count: cols)
            one.withUnsafeMutableBufferPointer { pl_dequantize_row(t.1, g.data(of: w) + 3 * rowBytes, $0.baseAddress, Int64(cols)) }
            #expect(one.map(\.bitPattern) == Array(bits[(3 * cols)..<(4 * cols)]), "\(name) \(path) row 3 alone")
            #expect(out.allSatisfy { $0.isFinite })
        }
    }

    // MARK: - Q8_K activations

    @Test("pl_quantize_q8_K is ggml's quantize_row_q8_K_ref byte for byte (zero block, negative extreme, ties)")
    func q8K() {
        var rng = SplitMix64(seed: 11)
        var x = (0..<(5 * 256)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        for j in 256..<512 { x[j] = 0 }                                   // all zero: d 0, sums 0
        x[600] = -9.5                                                     // a negative extreme: d > 0
        for j in 768..<1024 { x[j] = Float(Int(rng.next() % 255) - 127) } // integers: scale 1, ties at ±0.5·d
        x[800] = 127; x[801] = -127
        for j in 1024..<1280 { x[j] = Float(rng.nextUnit() - 0.5) * 1e-30 } // tiny but nonzero
        let want = Self.q8KRef(x)
        Self.bothPaths { path in
            var got = [UInt8](repeating: 0xAA, count: 5 * 292)
            x.withUnsafeBufferPointer { xp in got.withUnsafeMutableBytes { pl_quantize_q8_K(xp.baseAddress!, $0.baseAddress, Int64(x.count)) } }
            #expect(got == want, "\(path)")
            let d1 = got.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 292, as: Float.self) }
            let d2 = got.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 2 * 292, as: Float.self) }
            // d = max/−127: positive when the extreme is negative (its quant is −127 then).
            #expect(d1 == 0 && got[(292 + 4)..<(2 * 292)].allSatisfy { $0 == 0 } && d2 > 0)
        }
    }

    // MARK: - dot products

    /// Rows × columns × tokens: one row, odd counts, counts not a multiple of 16, several super-blocks.
    static let shapes: [(Int, Int, Int)] = [(1, 256, 1), (5, 512, 1), (37, 768, 1), (83, 2048, 1), (19, 1024, 3), (17, 256, 5)]

    @Test("dot products equal the exact value of the quantized operands (Double) on every path",
          arguments: types.map(\.0))
    func dotAgainstReference(name: String) throws {
        let t = Self.types.first { $0.0 == name }!
        let act = pl_activation_type(t.1)
        #expect(act == (t.1 == 6 ? Int32(PL_TYPE_Q8_0) : t.1 == 7 ? Int32(PL_TYPE_Q8_1) : Int32(PL_TYPE_Q8_K)))
        for (rows, cols, tokens) in Self.shapes {
            let w = Self.randomMatrix(t, rows: rows, cols: cols, seed: UInt64(rows * cols + Int(t.1)))
            let rowBytes = cols / t.2 * t.3
            var rng = SplitMix64(seed: UInt64(cols))
            let x = (0..<(tokens * cols)).map { _ in Float((rng.nextUnit() * 4 - 2) * (rng.nextUnit() < 0.05 ? 50 : 1)) }
            let stride = Self.actStride(act, cols)
            var xq = [UInt8](repeating: 0, count: tokens * stride)
            x.withUnsafeBufferPointer { xp in
                xq.withUnsafeMutableBytes { q in
                    for i in 0..<tokens { Self.quantize(act, xp.baseAddress! + i * cols, q.baseAddress! + i * stride, cols) }
                }
            }
            var refs = [(Double, Double)]()
            w.withUnsafeBytes { wp in
                xq.withUnsafeBytes { q in
                    for i in 0..<tokens {
                        for r in 0..<rows { refs.append(Self.reference(t, row: wp.baseAddress! + r * rowBytes, xq: q.baseAddress! + i * stride, n: cols)) }
                    }
                }
            }
            var results: [[UInt32]] = []
            Self.bothPaths { path in
                var y = [Float](repeating: .nan, count: tokens * rows)
                w.withUnsafeBytes { wp in
                    xq.withUnsafeBytes { q in
                        y.withUnsafeMutableBufferPointer { yp in
                            // Two row ranges, as two threads would split them.
                            let mid = rows / 2
                            pl_matmul_q(t.1, wp.baseAddress, rowBytes, q.baseAddress, stride, Int64(tokens), yp.baseAddress,
                                        Int64(rows), Int64(cols), 0, Int64(mid))
                            pl_matmul_q(t.1, wp.baseAddress, rowBytes, q.baseAddress, stride, Int64(tokens), yp.baseAddress,
                                        Int64(rows), Int64(cols), Int64(mid), Int64(rows))
                        }
                    }
                }
                for i in 0..<tokens {
                    for r in 0..<rows {
                        let (ref, mag) = refs[i * rows + r]
                        let err = abs(Double(y[i * rows + r]) - ref)
                        #expect(err <= 1e-5 * mag + 1e-30, "\(name) \(path) \(rows)×\(cols) token \(i) row \(r): \(y[i * rows + r]) vs \(ref)")
                    }
                }
                // One token at a time (pl_matvec_q) gives the batch's bits.
                for i in 0..<tokens {
                    var one = [Float](repeating: .nan, count: rows)
                    w.withUnsafeBytes { wp in
                        xq.withUnsafeBytes { q in
                            one.withUnsafeMutableBufferPointer {
                                pl_matvec_q(t.1, wp.baseAddress, rowBytes, q.baseAddress! + i * stride, $0.baseAddress, Int64(cols), 0, Int64(rows))
                            }
                        }
                    }
                    #expect(one.map(\.bitPattern) == y[(i * rows)..<((i + 1) * rows)].map(\.bitPattern), "\(name) \(path) token \(i) alone")
                }
                results.append(y.map(\.bitPattern))
            }
            // Portable and fast bodies compute the same integer lanes and the same float operations in the same
            // order (llama.cpp's), so their results are bit-identical, not merely close.
            #expect(results.count == 2 && results[0] == results[1], "\(name) \(rows)×\(cols): fast path differs from portable")
        }
        // The comparison above compared two different bodies only where a fast body exists: Q5_0, Q5_1, Q4_K, Q5_K and
        // Q6_K on this CPU (AVX-512 VNNI, which the suite's machine has), and Q2_K/Q3_K (the AVX2 bodies serve the
        // AVX-512 tier). Fail rather than compare the portable body with itself and call it covered.
        let fastTypes: Set<Int32> = [6, 7, 10, 11, 12, 13, 14]
        if fastTypes.contains(t.1) {
            #expect(pl_packed_supported() != 0, "this CPU lacks AVX-512 VNNI: the \(name) fast body was not tested")
            #expect(pl_quant_fast_body(t.1) == (pl_packed_supported() != 0 ? 1 : 0), "\(name): fast body not selected")
            pl_force_portable(1)
            #expect(pl_quant_fast_body(t.1) == 0, "\(name): pl_force_portable must force the portable body")
            pl_force_portable(0)
        } else {
            #expect(pl_quant_fast_body(t.1) == 0, "\(name) has no fast body yet: both runs were the portable one")
        }
    }

    @Test("Linear quantizes the input to the weight's activation format (Q8_K scratch large enough) and matches pl_matmul_q")
    func linear() throws {
        let pool = ThreadPool(threadCount: 2)
        let cols = 768, rows = 45, n = 3
        let linear = Linear(pool: pool, maxColumns: cols, maxBatch: n, tileFloats: 4096)
        defer { linear.deallocate() }
        #expect(Linear.quantizedInputBytes(columns: cols) >= cols / 256 * 292 && Linear.quantizedInputBytes(columns: 640) >= 3 * 292)
        var rng = SplitMix64(seed: 5)
        let x = (0..<(n * cols)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        for t in Self.types {
            let w = Self.randomMatrix(t, rows: rows, cols: cols, seed: 77 + UInt64(t.1))
            let rowBytes = cols / t.2 * t.3
            let act = pl_activation_type(t.1), stride = Self.actStride(act, cols)
            var xq = [UInt8](repeating: 0, count: n * stride)
            var want = [Float](repeating: 0, count: n * rows), got = [Float](repeating: .nan, count: n * rows)
            x.withUnsafeBufferPointer { xp in
                xq.withUnsafeMutableBytes { q in for i in 0..<n { Self.quantize(act, xp.baseAddress! + i * cols, q.baseAddress! + i * stride, cols) } }
            }
            w.withUnsafeBytes { wp in
                xq.withUnsafeBytes { q in
                    want.withUnsafeMutableBufferPointer {
                        pl_matmul_q(t.1, wp.baseAddress, rowBytes, q.baseAddress, stride, Int64(n), $0.baseAddress, Int64(rows), Int64(cols), 0, Int64(rows))
                    }
                }
                let wt = WeightTensor(name: t.0, type: GGMLType(rawValue: UInt32(t.1)), rows: rows, columns: cols, rowBytes: rowBytes,
                                      data: wp.baseAddress!)
                x.withUnsafeBufferPointer { xp in got.withUnsafeMutableBufferPointer { linear(wt, xp.baseAddress!, n: n, $0.baseAddress!) } }
            }
            #expect(got.map(\.bitPattern) == want.map(\.bitPattern), "\(t.0) through Linear")
        }
    }

    /// Prefill bodies: several inputs against each unpacked super-block (quants_k_batch.c, tiles of up to 8 inputs).
    /// Batches 1…11, 33 and 70 cover a lone input, partial tiles and many tiles (33, 70: a partial tile after
    /// several full ones); odd row counts and three row ranges cover the row chunks; 2304 columns an odd number of
    /// super-blocks (9). Each output must equal the portable body on that input (llama.cpp's lanes and order).
    @Test("batched K-quant bodies equal the portable body (batches 1…11, 33, 70, odd rows, split ranges)",
          arguments: ["q4_k", "q5_k", "q6_k"])
    func batchedMatchesPortable(name: String) throws {
        let t = Self.types.first { $0.0 == name }!
        try #require(pl_packed_supported() != 0, "this CPU lacks AVX-512 VNNI: the \(name) fast bodies are not used here")
        try #require(pl_quant_fast_body(t.1) == 1, "\(name): the fast body is not selected on this CPU")
        for (rows, cols) in [(37, 256), (83, 2048), (5, 1024), (21, 768), (9, 2304)] {
            let w = Self.randomMatrix(t, rows: rows, cols: cols, seed: UInt64(rows &* 131 &+ cols &+ Int(t.1)))
            let rowBytes = cols / t.2 * t.3, stride = Self.actStride(Int32(PL_TYPE_Q8_K), cols)
            for tokens in Array(1...11) + [33, 70] {
                var rng = SplitMix64(seed: UInt64(tokens &* 977 &+ cols))
                let x = (0..<(tokens * cols)).map { _ in Float((rng.nextUnit() * 4 - 2) * (rng.nextUnit() < 0.05 ? 50 : 1)) }
                var xq = [UInt8](repeating: 0, count: tokens * stride)
                x.withUnsafeBufferPointer { xp in
                    xq.withUnsafeMutableBytes { q in
                        for i in 0..<tokens { pl_quantize_q8_K(xp.baseAddress! + i * cols, q.baseAddress! + i * stride, Int64(cols)) }
                    }
                }
                func run(portable: Bool, cuts: [Int]) -> [UInt32] {
                    var y = [Float](repeating: .nan, count: tokens * rows)
                    pl_force_portable(portable ? 1 : 0)
                    defer { pl_force_portable(0) }
                    w.withUnsafeBytes { wp in
                        xq.withUnsafeBytes { q in
                            y.withUnsafeMutableBufferPointer { yp in
                                for i in 0..<(cuts.count - 1) where cuts[i] < cuts[i + 1] {
                                    pl_matmul_q(t.1, wp.baseAddress, rowBytes, q.baseAddress, stride, Int64(tokens), yp.baseAddress,
                                                Int64(rows), Int64(cols), Int64(cuts[i]), Int64(cuts[i + 1]))
                                }
                            }
                        }
                    }
                    return y.map(\.bitPattern)
                }
                let want = run(portable: true, cuts: [0, rows])
                let got = run(portable: false, cuts: [0, rows / 3, min(rows, rows / 3 + 9), rows])
                #expect(got == want, "\(name) \(rows)×\(cols) × \(tokens) tokens: batched fast body differs from portable")
                #expect(got.allSatisfy { Float(bitPattern: $0).isFinite })
            }
        }
    }

    /// The packed Q4_K/Q6_K layout (packed_k.c: 16 rows interleaved per super-block, scales regrouped per group):
    /// every output must equal the portable body's bits. Odd row counts give a partial last group (inside a triple
    /// of streams or left over), 256…2304 columns one to nine super-blocks, batches 1…11 the one-input streams and
    /// the batch path; the matrix is packed in two calls and computed in three row ranges (multiples of 16).
    @Test("packed Q4_K/Q6_K equal the portable body (odd rows, several super-blocks, batches 1…11, split ranges)",
          arguments: ["q4_k", "q6_k"])
    func packedMatchesPortable(name: String) throws {
        let t = Self.types.first { $0.0 == name }!
        try #require(pl_packed_supported() != 0, "this CPU lacks AVX-512 VNNI: the packed kernel is not used here")
        for (rows, cols) in [(5, 256), (37, 768), (83, 2048), (16, 512), (149, 2304), (48, 256)] {
            let w = Self.randomMatrix(t, rows: rows, cols: cols, seed: UInt64(rows &* 7919 &+ cols &+ Int(t.1)))
            let rowBytes = cols / t.2 * t.3, stride = Self.actStride(Int32(PL_TYPE_Q8_K), cols)
            let groups = (rows + 15) / 16
            var packed = [UInt8](repeating: 0xAA, count: pl_packed_bytes(t.1, Int64(rows), Int64(cols)))
            #expect(packed.count == groups * 16 * rowBytes, "\(name): packed size is the file's, rounded up to 16 rows")
            w.withUnsafeBytes { wp in
                packed.withUnsafeMutableBytes { pp in
                    pl_pack_rows(t.1, wp.baseAddress, rowBytes, Int64(rows), Int64(cols), pp.baseAddress, 0, Int64(groups / 2))
                    pl_pack_rows(t.1, wp.baseAddress, rowBytes, Int64(rows), Int64(cols), pp.baseAddress, Int64(groups / 2), Int64(groups))
                }
            }
            for tokens in 1...11 {
                var rng = SplitMix64(seed: UInt64(tokens &* 31 &+ cols &+ rows))
                let x = (0..<(tokens * cols)).map { _ in Float((rng.nextUnit() * 4 - 2) * (rng.nextUnit() < 0.05 ? 50 : 1)) }
                var xq = [UInt8](repeating: 0, count: tokens * stride)
                x.withUnsafeBufferPointer { xp in
                    xq.withUnsafeMutableBytes { q in
                        for i in 0..<tokens { pl_quantize_q8_K(xp.baseAddress! + i * cols, q.baseAddress! + i * stride, Int64(cols)) }
                    }
                }
                var want = [Float](repeating: .nan, count: tokens * rows), got = want
                pl_force_portable(1)
                w.withUnsafeBytes { wp in
                    xq.withUnsafeBytes { q in
                        want.withUnsafeMutableBufferPointer {
                            pl_matmul_q(t.1, wp.baseAddress, rowBytes, q.baseAddress, stride, Int64(tokens), $0.baseAddress,
                                        Int64(rows), Int64(cols), 0, Int64(rows))
                        }
                    }
                }
                pl_force_portable(0)
                let cuts = [0, min(rows, 16), min(rows, 48), rows]
                packed.withUnsafeBytes { pp in
                    xq.withUnsafeBytes { q in
                        got.withUnsafeMutableBufferPointer { yp in
                            for i in 0..<(cuts.count - 1) where cuts[i] < cuts[i + 1] {
                                pl_matmul_packed(t.1, pp.baseAddress, Int64(rows), Int64(cols), q.baseAddress, stride, Int64(tokens),
                                                 yp.baseAddress, Int64(rows), Int64(cuts[i]), Int64(cuts[i + 1]))
                            }
                        }
                    }
                }
                #expect(got.map(\.bitPattern) == want.map(\.bitPattern), "\(name) \(rows)×\(cols) × \(tokens) tokens: packed differs from portable")
                #expect(got.allSatisfy { $0.isFinite })
            }
        }
    }

    /// Linear.fused over packed matrices whose inputs differ (Q8_K for Q4_K, Q8_0 for Q5_0, Q8_1 for Q4_1, as a
    /// Q4_K_M file mixes them): the input is quantized once per format, each matrix reads its own, and every output
    /// equals the unfused row-layout path's bits. Two orders cover a format shared by matrices 1 and 2.
    @Test("Linear.fused with packed matrices of different activation formats equals one call per matrix")
    func fusedMixedActivations() throws {
        try #require(pl_packed_supported() != 0, "this CPU lacks AVX-512 VNNI: the packed kernel is not used here")
        let pool = ThreadPool(threadCount: 2)
        let cols = 768, n = 3
        let linear = Linear(pool: pool, maxColumns: cols, maxBatch: n, tileFloats: 4096)
        defer { linear.deallocate() }
        var rng = SplitMix64(seed: 11)
        let q4k = Self.types.first { $0.0 == "q4_k" }!, q5_0 = Self.types.first { $0.0 == "q5_0" }!
        // (ggml type, row bytes, the matrix)
        func make(_ type: Int32, rows: Int, seed: UInt64) -> (Int32, Int, [UInt8]) {
            switch type {
            case 12: return (type, cols / 256 * 144, Self.randomMatrix(q4k, rows: rows, cols: cols, seed: seed))
            case 6: return (type, cols / 32 * 22, Self.randomMatrix(q5_0, rows: rows, cols: cols, seed: seed))
            default: return (type, cols / 32 * 20, PackedKernelTests.randomMatrix(type: type, blockBytes: 20, rows: rows, cols: cols, seed: seed))
            }
        }
        for order in [[Int32(12), 6, 3], [6, 12, 12]] {
            let mats = order.enumerated().map { make($0.element, rows: [37, 83, 21][$0.offset], seed: 900 + UInt64($0.offset)) }
            let rows = mats.map { $0.2.count / $0.1 }
            let x = (0..<(n * cols)).map { _ in Float(rng.nextUnit() * 2 - 1) }
            // Raw buffers (weights, packed copies, outputs), so the three matrices can be passed at once.
            let data = mats.map { m -> UnsafeMutableRawPointer in
                let p = UnsafeMutableRawPointer.allocate(byteCount: m.2.count, alignment: 64)
                m.2.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: m.2.count) }
                return p
            }
            let packed = (0..<3).map { i -> UnsafeMutableRawPointer in
                let p = UnsafeMutableRawPointer.allocate(byteCount: pl_packed_bytes(mats[i].0, Int64(rows[i]), Int64(cols)), alignment: 64)
                pl_pack_rows(mats[i].0, data[i], mats[i].1, Int64(rows[i]), Int64(cols), p, 0, Int64((rows[i] + 15) / 16))
                return p
            }
            let want = rows.map { UnsafeMutablePointer<Float>.allocate(capacity: n * $0) }
            let got = rows.map { r -> UnsafeMutablePointer<Float> in
                let p = UnsafeMutablePointer<Float>.allocate(capacity: n * r)
                p.initialize(repeating: .nan, count: n * r)
                return p
            }
            defer { for p in data + packed { p.deallocate() }; for p in want + got { p.deallocate() } }
            func tensor(_ i: Int, usePacked: Bool) -> WeightTensor {
                WeightTensor(name: "m\(i)", type: GGMLType(rawValue: UInt32(mats[i].0)), rows: rows[i], columns: cols,
                             rowBytes: mats[i].1, data: data[i], packed: usePacked ? UnsafeRawPointer(packed[i]) : nil)
            }
            x.withUnsafeBufferPointer { xp in
                for i in 0..<3 { linear(tensor(i, usePacked: false), xp.baseAddress!, n: n, want[i]) }
                linear.fused(xp.baseAddress!, n: n, tensor(0, usePacked: true), got[0], tensor(1, usePacked: true), got[1],
                             tensor(2, usePacked: true), got[2])
            }
            for i in 0..<3 {
                let g = (0..<(n * rows[i])).map { got[i][$0].bitPattern }, w = (0..<(n * rows[i])).map { want[i][$0].bitPattern }
                #expect(g == w, "types \(order), matrix \(i): fused differs from one call")
            }
        }
    }
}
