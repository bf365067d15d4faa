import CKernels
import Foundation
import Testing
import PocketLM

/// The row-column bundle kernels (sparse SwiGLU FFN over the flash-paging layout) must give bit-identical results to
/// the dense row-layout kernel of the same path: that keeps a model run through bundles equal to the dense run.
/// Serialized: each check runs once with `pl_force_portable` on (it is per thread, and restored before returning).
@Suite("Bundle kernels", .serialized)
struct BundleKernelTests {
    static let q8 = Int32(PL_TYPE_Q8_0)

    /// A Q8_0 SwiGLU FFN with random weights (quantized by pl_quantize_q8_0, rows of varied magnitude), packed into
    /// bundles laid out back to back in neuron order.
    struct FFN {
        let dim: Int, ffn: Int
        let gate: [UInt8], up: [UInt8], down: [UInt8]
        let bundleBytes: Int
        let arena: [UInt8]
        let downScale: [UInt16]
        var rowBytes: Int { dim / 32 * 34 }      // gate/up rows
        var downRowBytes: Int { ffn / 32 * 34 }  // down rows

        init(dim: Int, ffn: Int, seed: UInt64) {
            var rng = SplitMix64(seed: seed)
            let gate = Self.randomQ8(rows: ffn, cols: dim, rng: &rng)
            let up = Self.randomQ8(rows: ffn, cols: dim, rng: &rng)
            let down = Self.randomQ8(rows: dim, cols: ffn, rng: &rng)
            let bundleBytes = pl_bundle_bytes_q8_0(Int64(dim))
            var arena = [UInt8](repeating: 0xEE, count: ffn * bundleBytes)
            gate.withUnsafeBytes { g in
                up.withUnsafeBytes { u in
                    down.withUnsafeBytes { d in
                        arena.withUnsafeMutableBytes { a in
                            for i in 0..<ffn {
                                pl_bundle_pack_q8_0(g.baseAddress, u.baseAddress, d.baseAddress, Int64(dim), Int64(ffn),
                                                    Int64(i), a.baseAddress! + i * bundleBytes)
                            }
                        }
                    }
                }
            }
            var scales = [UInt16](repeating: 0xFFFF, count: dim * (ffn / 32))
            down.withUnsafeBytes { d in
                scales.withUnsafeMutableBufferPointer { pl_bundle_down_scales_q8_0(d.baseAddress, Int64(dim), Int64(ffn), $0.baseAddress) }
            }
            (self.dim, self.ffn, self.gate, self.up, self.down) = (dim, ffn, gate, up, down)
            (self.bundleBytes, self.arena, self.downScale) = (bundleBytes, arena, scales)
        }

        static func randomQ8(rows: Int, cols: Int, rng: inout SplitMix64) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: rows * cols / 32 * 34)
            var x = [Float](repeating: 0, count: cols)
            out.withUnsafeMutableBytes { o in
                for r in 0..<rows {
                    let mag = Float(0.02 + rng.nextUnit() * 0.2)
                    for j in 0..<cols { x[j] = Float(rng.nextUnit() * 2 - 1) * mag }
                    pl_quantize_q8_0(x, o.baseAddress! + r * (cols / 32 * 34), Int64(cols))
                }
            }
            return out
        }

        /// Calls `body` with the bundle pointers for neurons `order` (bundles[k] is neuron order[k]).
        func withBundles<R>(_ order: [Int], _ body: (UnsafePointer<UnsafeRawPointer?>?) throws -> R) rethrows -> R {
            try arena.withUnsafeBytes { a in
                let ptrs: [UnsafeRawPointer?] = order.map { UnsafeRawPointer(a.baseAddress! + $0 * bundleBytes) }
                return try ptrs.withUnsafeBufferPointer { try body($0.baseAddress) }
            }
        }

        /// pl_matvec_q over the down matrix against hq, all rows.
        func denseDown(_ hq: [UInt8]) -> [Float] {
            var y = [Float](repeating: .nan, count: dim)
            down.withUnsafeBytes { d in
                hq.withUnsafeBytes { q in
                    y.withUnsafeMutableBufferPointer {
                        pl_matvec_q(q8, d.baseAddress, downRowBytes, q.baseAddress, $0.baseAddress, Int64(ffn), 0, Int64(dim))
                    }
                }
            }
            return y
        }

        /// pl_bundle_down_q8_0 for rows r0..<r1 over the neurons `order`, with garbage in the scratch beforehand;
        /// checks the kernel writes neither past r1 in out nor past (ffn/32)·(r1−r0) in acc.
        func bundleDown(_ order: [Int], _ hq: [UInt8], _ r0: Int, _ r1: Int,
                        sourceLocation: SourceLocation = #_sourceLocation) -> [Float] {
            let scratch = (ffn / 32) * (r1 - r0)
            var acc = [Int32](repeating: 0x5A5A_5A5A, count: scratch + 16)
            var out = [Float](repeating: .nan, count: r1 - r0 + 1)
            out[r1 - r0] = -12345
            let ids = order.map(Int32.init)
            withBundles(order) { b in
                hq.withUnsafeBytes { q in
                    acc.withUnsafeMutableBufferPointer { a in
                        out.withUnsafeMutableBufferPointer { o in
                            pl_bundle_down_q8_0(b, ids, Int64(ids.count), q.baseAddress, downScale, Int64(dim), Int64(ffn),
                                                a.baseAddress, o.baseAddress, Int64(r0), Int64(r1))
                        }
                    }
                }
            }
            #expect(out[r1 - r0] == -12345, "wrote past r1", sourceLocation: sourceLocation)
            #expect(acc[scratch...].allSatisfy { $0 == 0x5A5A_5A5A }, "wrote past the scratch", sourceLocation: sourceLocation)
            return Array(out[0..<(r1 - r0)])
        }

        /// Double-precision reference for the down projection: Σ_b d_down[r][b]·d_h[b]·Σ_i q_down[r][i]·q_h[i], and
        /// the magnitude the float rounding scales with (Σ over 4-element lanes of |d_down·d_h·Σ q·q|).
        func referenceDown(_ hq: [UInt8]) -> [(value: Double, magnitude: Double)] {
            let nb = ffn / 32
            return (0..<dim).map { r in
                var s = 0.0, m = 0.0
                for b in 0..<nb {
                    let wb = r * downRowBytes + b * 34, hb = b * 34
                    let d = Double(pl_f16_to_f32(UInt16(down[wb]) | UInt16(down[wb + 1]) << 8))
                        * Double(pl_f16_to_f32(UInt16(hq[hb]) | UInt16(hq[hb + 1]) << 8))
                    for lane in 0..<8 { // the VNNI path sums 4-element lanes in float: they bound its rounding
                        var dot = 0
                        for j in (4 * lane)..<(4 * lane + 4) {
                            dot += Int(Int8(bitPattern: down[wb + 2 + j])) * Int(Int8(bitPattern: hq[hb + 2 + j]))
                        }
                        s += d * Double(dot)
                        m += abs(d * Double(dot))
                    }
                }
                return (s, m)
            }
        }
    }

    static func quantize(_ x: [Float]) -> [UInt8] {
        var q = [UInt8](repeating: 0, count: x.count / 32 * 34)
        q.withUnsafeMutableBytes { pl_quantize_q8_0(x, $0.baseAddress, Int64(x.count)) }
        return q
    }

    /// Both kernel paths, as the dense kernels' tests run them.
    static func bothPaths(_ body: (String) throws -> Void) rethrows { try KernelTests.bothPaths(body) }

    /// pl_bundle_gate_up_q8_0 over bundles k0..<k1 of `order` (outputs outside the range stay NaN).
    static func gateUp(_ f: FFN, _ order: [Int], _ xq: [UInt8], _ k0: Int, _ k1: Int) -> (g: [Float], u: [Float]) {
        let dim = f.dim, ffn = f.ffn
        var g = [Float](repeating: .nan, count: ffn), u = g
        f.withBundles(order) { b in
            xq.withUnsafeBytes { q in
                g.withUnsafeMutableBufferPointer { gp in
                    u.withUnsafeMutableBufferPointer { up in
                        pl_bundle_gate_up_q8_0(b, Int64(k0), Int64(k1), q.baseAddress, Int64(dim), gp.baseAddress, up.baseAddress)
                    }
                }
            }
        }
        return (g, u)
    }

    static func bits(_ v: some Collection<Float>) -> [UInt32] { v.map(\.bitPattern) }

    /// Row ranges as one thread or several would take them, including short ones (fewer than 32 rows, where the
    /// VNNI body keeps its neuron map on the stack) and ones not starting at a multiple of 16.
    static func splits(_ dim: Int) -> [(Int, Int)] {
        [(0, dim), (0, 16), (16, dim), (5, 37), (dim - 3, dim), (dim / 2, dim / 2 + 1), (0, dim / 2), (dim / 2, dim)]
    }

    static let sizes: [(Int, Int)] = [(64, 64), (64, 160), (64, 1536), (96, 64), (96, 160), (96, 1536),
                                      (576, 64), (576, 160), (576, 1536), (64, 4160)]

    @Test("layout: pl_bundle_bytes_q8_0, packed bytes and down scales")
    func layout() throws {
        #expect(pl_bundle_bytes_q8_0(576) == 2 * 18 * 34 + 576)
        #expect(pl_bundle_bytes_q8_0(64) == 2 * 2 * 34 + 64)
        let f = FFN(dim: 96, ffn: 160, seed: 1)
        var wrong = 0
        for i in 0..<f.ffn {
            let b = Array(f.arena[(i * f.bundleBytes)..<((i + 1) * f.bundleBytes)])
            if b[0..<f.rowBytes] != f.gate[(i * f.rowBytes)..<((i + 1) * f.rowBytes)] { wrong += 1 }
            if b[f.rowBytes..<(2 * f.rowBytes)] != f.up[(i * f.rowBytes)..<((i + 1) * f.rowBytes)] { wrong += 1 }
            for r in 0..<f.dim where b[2 * f.rowBytes + r] != f.down[r * f.downRowBytes + (i / 32) * 34 + 2 + i % 32] { wrong += 1 }
        }
        #expect(wrong == 0)
        for r in 0..<f.dim {
            for blk in 0..<(f.ffn / 32) {
                let o = r * f.downRowBytes + blk * 34
                #expect(f.downScale[r * (f.ffn / 32) + blk] == UInt16(f.down[o]) | UInt16(f.down[o + 1]) << 8)
            }
        }
    }

    @Test("gate/up of bundles: bit-identical to pl_matvec_q on the gate and up rows", arguments: sizes)
    func gateUp(dim: Int, ffn: Int) throws {
        let f = FFN(dim: dim, ffn: ffn, seed: UInt64(dim * 10_000 + ffn))
        var rng = SplitMix64(seed: 7)
        var order = Array(0..<ffn)
        order.shuffle(using: &rng)
        let x = (0..<dim).map { _ in Float(rng.nextUnit() * 4 - 2) }
        Self.bothPaths { path in
            let xq = Self.quantize(x)
            var wantG = [Float](repeating: .nan, count: ffn), wantU = wantG
            f.gate.withUnsafeBytes { w in
                xq.withUnsafeBytes { q in
                    wantG.withUnsafeMutableBufferPointer { pl_matvec_q(Self.q8, w.baseAddress, f.rowBytes, q.baseAddress, $0.baseAddress, Int64(dim), 0, Int64(ffn)) }
                }
            }
            f.up.withUnsafeBytes { w in
                xq.withUnsafeBytes { q in
                    wantU.withUnsafeMutableBufferPointer { pl_matvec_q(Self.q8, w.baseAddress, f.rowBytes, q.baseAddress, $0.baseAddress, Int64(dim), 0, Int64(ffn)) }
                }
            }
            // All bundles, then a sub-range (odd bounds): g and u are indexed by k, the rest untouched.
            for (k0, k1) in [(0, ffn), (3, ffn - 2), (ffn / 2, ffn / 2 + 1)] {
                let (g, u) = Self.gateUp(f, order, xq, k0, k1)
                #expect(Self.bits(g[k0..<k1]) == Self.bits(order[k0..<k1].map { wantG[$0] }), "gate \(path) \(dim)×\(ffn) k \(k0)..<\(k1)")
                #expect(Self.bits(u[k0..<k1]) == Self.bits(order[k0..<k1].map { wantU[$0] }), "up \(path) \(dim)×\(ffn) k \(k0)..<\(k1)")
                #expect(g[..<k0].allSatisfy(\.isNaN) && g[k1...].allSatisfy(\.isNaN) && u[..<k0].allSatisfy(\.isNaN) && u[k1...].allSatisfy(\.isNaN),
                        "wrote outside k0..<k1")
                #expect(g[k0..<k1].allSatisfy { $0.isFinite && $0 != 0 }, "degenerate gate values")
            }
        }
    }

    /// The VNNI body takes bundles 8 at a time (a short last group repeats its last bundle) and the blocks 32 at a time:
    /// every count mod 8 from every start, bundles scattered in memory, and dims of more than 32 and 64 blocks.
    @Test("gate/up of bundles: every group remainder, scattered bundles, long rows (block chunks)", arguments: [64, 576, 1056, 2080])
    func gateUpGroupsAndChunks(dim: Int) throws {
        let ffn = 64
        let f = FFN(dim: dim, ffn: ffn, seed: UInt64(dim) &* 77 &+ 5)
        var rng = SplitMix64(seed: UInt64(dim))
        let x = (0..<dim).map { _ in Float(rng.nextUnit() * 4 - 2) }
        // bundles[k] is neuron (k·37) mod 64: consecutive k are far apart in the arena
        let order = (0..<ffn).map { ($0 * 37) % ffn }
        Self.bothPaths { path in
            let xq = Self.quantize(x)
            var wantG = [Float](repeating: .nan, count: ffn), wantU = wantG
            for (m, want) in [(f.gate, 0), (f.up, 1)] {
                var y = [Float](repeating: .nan, count: ffn)
                m.withUnsafeBytes { w in
                    xq.withUnsafeBytes { q in
                        y.withUnsafeMutableBufferPointer { pl_matvec_q(Self.q8, w.baseAddress, f.rowBytes, q.baseAddress, $0.baseAddress, Int64(dim), 0, Int64(ffn)) }
                    }
                }
                if want == 0 { wantG = y } else { wantU = y }
            }
            var bad = [String]()
            for k0 in [0, 1, 5, 7] {
                for n in 0...19 where k0 + n <= ffn {
                    let k1 = k0 + n
                    let (g, u) = Self.gateUp(f, order, xq, k0, k1)
                    let ok = Self.bits(g[k0..<k1]) == Self.bits(order[k0..<k1].map { wantG[$0] })
                        && Self.bits(u[k0..<k1]) == Self.bits(order[k0..<k1].map { wantU[$0] })
                        && g[..<k0].allSatisfy(\.isNaN) && g[k1...].allSatisfy(\.isNaN)
                        && u[..<k0].allSatisfy(\.isNaN) && u[k1...].allSatisfy(\.isNaN)
                    if !ok { bad.append("\(k0)..<\(k1)") }
                }
            }
            #expect(bad.isEmpty, "\(path) dim \(dim): k ranges \(bad.prefix(5)) differ from pl_matvec_q or wrote outside")
        }
    }

    /// The batched gate/up (prompt prefill): every output bit-identical to pl_bundle_gate_up_q8_0 on that input
    /// alone, for 1, 3 and 17 inputs (rows of xq_stride bytes with padding between them), k sub-ranges of every group
    /// remainder, bundles scattered in memory, rows longer than the batched body's 128-block scale buffer (dim 4160),
    /// and nothing written outside k0..<k1 of each input's row (ldg > ffn) or between the rows.
    @Test("batched gate/up: bit-identical to pl_bundle_gate_up_q8_0 per input", arguments: [64, 576, 1056, 4160])
    func gateUpBatch(dim: Int) throws {
        let ffn = 64, ldg = ffn + 5
        let f = FFN(dim: dim, ffn: ffn, seed: UInt64(dim) &* 131 &+ 9)
        var rng = SplitMix64(seed: UInt64(dim) ^ 0xBA7C)
        let order = (0..<ffn).map { ($0 * 37) % ffn }
        let rowBytes = dim / 32 * 34, stride = rowBytes + 40
        for nTokens in [1, 3, 17] {
            let xs = (0..<nTokens).map { _ in (0..<dim).map { _ in Float(rng.nextUnit() * 4 - 2) } }
            Self.bothPaths { path in
                let rows = xs.map { Self.quantize($0) }
                var xq = [UInt8](repeating: 0xA5, count: nTokens * stride)
                for t in 0..<nTokens { xq.replaceSubrange((t * stride)..<(t * stride + rowBytes), with: rows[t]) }
                var bad = [String]()
                for (k0, k1) in [(0, ffn), (3, ffn - 2), (1, 2), (5, 18), (7, 16), (8, 24), (ffn / 2, ffn / 2 + 1), (9, 9)] {
                    var g = [Float](repeating: .nan, count: nTokens * ldg), u = g
                    f.withBundles(order) { b in
                        xq.withUnsafeBytes { q in
                            g.withUnsafeMutableBufferPointer { gp in
                                u.withUnsafeMutableBufferPointer { up in
                                    pl_bundle_gate_up_batch_q8_0(b, Int64(k0), Int64(k1), q.baseAddress, stride, Int64(nTokens),
                                                                 Int64(dim), gp.baseAddress, up.baseAddress, Int64(ldg))
                                }
                            }
                        }
                    }
                    for t in 0..<nTokens {
                        let (wg, wu) = Self.gateUp(f, order, rows[t], k0, k1)
                        let gt = g[(t * ldg)..<((t + 1) * ldg)], ut = u[(t * ldg)..<((t + 1) * ldg)]
                        let o = t * ldg
                        let ok = Self.bits(gt[(o + k0)..<(o + k1)]) == Self.bits(wg[k0..<k1])
                            && Self.bits(ut[(o + k0)..<(o + k1)]) == Self.bits(wu[k0..<k1])
                            && gt[..<(o + k0)].allSatisfy(\.isNaN) && gt[(o + k1)...].allSatisfy(\.isNaN)
                            && ut[..<(o + k0)].allSatisfy(\.isNaN) && ut[(o + k1)...].allSatisfy(\.isNaN)
                            && wg[k0..<k1].allSatisfy { $0.isFinite && $0 != 0 }
                        if !ok { bad.append("t \(t) k \(k0)..<\(k1)") }
                    }
                }
                #expect(bad.isEmpty, "\(path) dim \(dim) n_tokens \(nTokens): \(bad.prefix(5)) differ from the single-input kernel or wrote outside")
            }
        }
    }

    @Test("down, every neuron listed in shuffled order: bit-identical to pl_matvec_q for every row split", arguments: sizes)
    func downAllListed(dim: Int, ffn: Int) throws {
        let f = FFN(dim: dim, ffn: ffn, seed: UInt64(dim * 10_000 + ffn) ^ 0xD0)
        var rng = SplitMix64(seed: 11)
        var order = Array(0..<ffn)
        order.shuffle(using: &rng)
        let h = (0..<ffn).map { _ in Float(rng.nextUnit() * 2 - 1) * (rng.nextUnit() < 0.1 ? 8 : 1) }
        Self.bothPaths { path in
            let hq = Self.quantize(h)
            let want = f.denseDown(hq)
            #expect(want.allSatisfy(\.isFinite) && want.contains { $0 != 0 })
            for (r0, r1) in Self.splits(dim) {
                let got = f.bundleDown(order, hq, r0, r1)
                let bad = (r0..<r1).filter { got[$0 - r0].bitPattern != want[$0].bitPattern }
                #expect(bad.isEmpty, "\(path) \(dim)×\(ffn) rows \(r0)..<\(r1): \(bad.count) differ, e.g. \(bad.prefix(3).map { "row \($0): \(got[$0 - r0]) vs \(want[$0])" })")
            }
        }
    }

    @Test("down over a subset of neurons (h zero elsewhere): equals the double reference and, bit for bit, pl_matvec_q", arguments: sizes)
    func downSubset(dim: Int, ffn: Int) throws {
        let f = FFN(dim: dim, ffn: ffn, seed: UInt64(dim * 10_000 + ffn) ^ 0x5B)
        var rng = SplitMix64(seed: UInt64(ffn) &* 31 &+ UInt64(dim))
        // Random 30 %, random 3 % (most 4-neuron groups and many blocks empty), and only every third block (half of it).
        let patterns: [(String, (Int) -> Bool)] = [
            ("30%", { _ in rng.nextUnit() < 0.3 }),
            ("3%", { _ in rng.nextUnit() < 0.03 }),
            ("block-structured", { i in (i / 32) % 3 == 1 && rng.nextUnit() < 0.5 }),
        ]
        for (name, pick) in patterns {
            var listed = (0..<ffn).filter { pick($0) }
            if listed.isEmpty { listed = [ffn - 1] }
            listed.shuffle(using: &rng)
            var h = [Float](repeating: 0, count: ffn)
            for i in listed { h[i] = Float(rng.nextUnit() * 2 - 1) }
            Self.bothPaths { path in
                let hq = Self.quantize(h)
                // Unlisted neurons quantize to exactly 0.
                let listedSet = Set(listed)
                #expect((0..<ffn).allSatisfy { listedSet.contains($0) || hq[($0 / 32) * 34 + 2 + $0 % 32] == 0 })
                let want = f.denseDown(hq)
                let ref = f.referenceDown(hq)
                for (r0, r1) in Self.splits(dim) {
                    let got = f.bundleDown(listed, hq, r0, r1)
                    var far = 0, differ = 0
                    for r in r0..<r1 {
                        let g = got[r - r0]
                        if abs(Double(g) - ref[r].value) > 1e-5 * ref[r].magnitude + 1e-30 { far += 1 }
                        if g.bitPattern != want[r].bitPattern { differ += 1 }
                    }
                    #expect(far == 0, "\(path) \(name) \(dim)×\(ffn) rows \(r0)..<\(r1): \(far) rows off the reference")
                    #expect(differ == 0, "\(path) \(name) \(dim)×\(ffn) rows \(r0)..<\(r1): \(differ) rows differ from pl_matvec_q")
                }
            }
        }
    }

    @Test("down with no neuron listed is zero")
    func downNothingListed() throws {
        let f = FFN(dim: 96, ffn: 160, seed: 3)
        let hq = Self.quantize([Float](repeating: 0, count: 160))
        Self.bothPaths { path in
            let got = f.bundleDown([], hq, 0, 96)
            #expect(got.allSatisfy { $0 == 0 }, "\(path)")
            #expect(Self.bits(got) == Self.bits(f.denseDown(hq)), "\(path)")
        }
    }

    /// The block types whose down projection gathers the groups' slices: KQuantKernelTests.types' shape (name, type,
    /// block elements, block bytes, scale offset, minimum offset).
    static let gatheredDownTypes: [(String, Int32, Int, Int, Int, Int?)] = [
        ("q4_0", Int32(PL_TYPE_Q4_0), 32, 18, 0, nil), ("q4_1", Int32(PL_TYPE_Q4_1), 32, 20, 0, 2),
        ("q8_0", Int32(PL_TYPE_Q8_0), 32, 34, 0, nil),
    ] + KQuantKernelTests.types.filter { $0.1 == Int32(PL_TYPE_Q4_K) || $0.1 == Int32(PL_TYPE_Q6_K) }

    @Test("down from the groups' slices where they lie (block rows: Q4_0, Q4_1, Q8_0, Q4_K, Q6_K): row for row the bits of pl_matmul_q on the reassembled matrix, any row split; 0 and nothing written where it has no body",
          arguments: [(Int32(PL_TYPE_Q4_K), 1), (Int32(PL_TYPE_Q4_K), 2), (Int32(PL_TYPE_Q6_K), 1), (Int32(PL_TYPE_Q6_K), 2),
                      (Int32(PL_TYPE_Q4_1), 1), (Int32(PL_TYPE_Q4_1), 3), (Int32(PL_TYPE_Q4_0), 1), (Int32(PL_TYPE_Q4_0), 2),
                      (Int32(PL_TYPE_Q8_0), 1), (Int32(PL_TYPE_Q8_0), 2)])
    func downFromGroups(type: Int32, blocksPerGroup: Int) throws {
        let t = try #require(Self.gatheredDownTypes.first { $0.1 == type })
        let rows = 70, blocks = 4 * blocksPerGroup, cols = t.2 * blocks, bb = t.3, rowBytes = blocks * bb
        let w = KQuantKernelTests.randomMatrix(t, rows: rows, cols: cols, seed: UInt64(type) * 100 + UInt64(blocksPerGroup))
        var rng = SplitMix64(seed: 77)
        // h zero in the second group's neurons (a group not used), as the paged FFN leaves it.
        let h = (0..<cols).map { i in i / (t.2 * blocksPerGroup) == 1 ? 0 : Float(rng.nextUnit() * 2 - 1) }
        let act = pl_activation_type(type)
        var xq = [UInt8](repeating: 0, count: cols / 32 * 36 + cols / 256 * Int(PL_Q8_K_BLOCK_BYTES))
        xq.withUnsafeMutableBytes {
            switch act {
            case Int32(PL_TYPE_Q8_K): pl_quantize_q8_K(h, $0.baseAddress, Int64(cols))
            case Int32(PL_TYPE_Q8_1): pl_quantize_q8_1(h, $0.baseAddress, Int64(cols))
            default: pl_quantize_q8_0(h, $0.baseAddress, Int64(cols))
            }
        }
        var want = [Float](repeating: .nan, count: rows)
        w.withUnsafeBytes { wp in
            xq.withUnsafeBytes { xp in
                pl_matmul_q(type, wp.baseAddress, rowBytes, xp.baseAddress, xq.count, 1, &want, Int64(rows), Int64(cols), 0, Int64(rows))
            }
        }
        #expect(want.contains { $0 != 0 && $0.isFinite })
        // Each group's slices (its blocks of every row, rows one after another) in a buffer of its own, the groups'
        // buffers in reverse order in memory; the unused group's entry points at another group's slices.
        let groups = blocks / blocksPerGroup, slice = blocksPerGroup * bb
        var arena = [UInt8](repeating: 0xEE, count: groups * rows * slice)
        for g in 0..<groups {
            let base = (groups - 1 - g) * rows * slice
            for r in 0..<rows {
                for k in 0..<slice { arena[base + r * slice + k] = w[r * rowBytes + g * slice + k] }
            }
        }
        let runs = pl_bundle_down_groups_runs(type)
        // K-quants gather where AVX-512 VNNI runs; Q4_0/Q4_1/Q8_0 on both x86 vector tiers (the tier driver checks
        // the AVX2 bodies; this suite runs the process's tier).
        let kQuant = type == Int32(PL_TYPE_Q4_K) || type == Int32(PL_TYPE_Q6_K)
        let tier = pl_isa()
        #expect(runs == (kQuant ? pl_packed_supported() : (tier == Int32(PL_ISA_AVX2) || tier == Int32(PL_ISA_AVX512) ? 1 : 0)),
                "the gathering body runs exactly where its tier has one")
        if runs == 0 { print("downFromGroups: no gathering body for \(t.0) on this CPU's tier: only the fallback (returns 0, writes nothing) is checked") }
        arena.withUnsafeBytes { a in
            xq.withUnsafeBytes { xp in
                var table: [UnsafeRawPointer?] = (0..<groups).map { g in a.baseAddress! + (groups - 1 - g) * rows * slice }
                table[1] = table[0]
                for (r0, r1) in Self.splits(rows) {
                    var got = [Float](repeating: .nan, count: rows)
                    let ran = pl_bundle_down_groups(type, &table, Int64(blocksPerGroup), slice, xp.baseAddress, &got,
                                                    Int64(cols), Int64(r0), Int64(r1))
                    #expect(ran == runs)
                    let bad = (0..<rows).filter { r in
                        (r0..<r1).contains(r) && ran == 1 ? got[r].bitPattern != want[r].bitPattern : !got[r].isNaN
                    }
                    #expect(bad.isEmpty, "\(t.0) rows \(r0)..<\(r1): rows \(bad.prefix(5)) differ from pl_matmul_q or were written outside")
                }
                // A thread forced to the portable path gets 0 (its caller reassembles the matrix for the portable body).
                pl_force_portable(1)
                defer { pl_force_portable(0) }
                var got = [Float](repeating: .nan, count: rows)
                #expect(pl_bundle_down_groups(type, &table, Int64(blocksPerGroup), slice, xp.baseAddress, &got, Int64(cols), 0, Int64(rows)) == 0)
                #expect(got.allSatisfy { $0.isNaN })
            }
        }
    }
}

