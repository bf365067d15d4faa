import CKernels
import Foundation
import Synchronization
import Testing
import PocketLM

/// A decoded token's matrices are split among the threads in chunks claimed as they go (`ThreadPool.dynamicRanges`),
/// not in fixed shares: every row is still computed exactly once, by one kernel call, so the outputs are the bits of
/// one call over all rows — whatever thread takes which chunk.
@Suite("Decode split")
struct DecodeSplitTests {
    @Test("dynamicRanges covers 0..<count exactly once, in granularity-aligned chunks, on any thread count")
    func dynamicRangesCover() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool(threadCount: threads)
            for (count, granularity, minimum) in [(0, 16, 1), (1, 16, 1), (15, 1, 1), (17, 16, 1), (1000, 16, 1),
                                                  (1000, 16, 7), (262_144, 16, 6), (5, 1, 100)] {
                let seen = Mutex<[Range<Int>]>([])
                pool.dynamicRanges(count, granularity: granularity, minimumUnits: minimum) { r in
                    seen.withLock { $0.append(r) }
                }
                let ranges = seen.withLock { $0 }.sorted { $0.lowerBound < $1.lowerBound }
                var next = 0
                var aligned = true
                for r in ranges {
                    #expect(r.lowerBound == next, "\(threads) threads, \(count): a gap or an overlap at \(r)")
                    if r.lowerBound % granularity != 0 || (r.upperBound % granularity != 0 && r.upperBound != count) { aligned = false }
                    if r.isEmpty { aligned = false }
                    next = r.upperBound
                }
                #expect(next == count, "\(threads) threads, \(count): covered up to \(next)")
                #expect(aligned, "\(threads) threads, \(count): a chunk is empty or not cut at a multiple of \(granularity)")
                // Chunks shrink toward the end, so a large count is cut into several (not one per thread).
                if count == 262_144 && threads > 1 { #expect(ranges.count > 2 * threads) }
            }
        }
    }

    /// The chunks `dynamicRanges` hands out when one thread claims them all, in order.
    static func chunks(units: Int, parts: Int, minimum: Int) -> [Int] {
        var out: [Int] = []
        var left = units
        while left > 0 {
            let size = ThreadPool.chunkUnits(left: left, units: units, parts: parts, minimumUnits: minimum)
            out.append(size)
            left -= size
        }
        return out
    }

    @Test("chunk sizes: even shares for work under two minimum chunks per thread, shrinking halves above it")
    func chunkSizes() {
        // Gemma 3's attention output (40 groups, 28 a minimum chunk) and Q/K/V (96 groups, 31): one share per
        // thread, not a minimum chunk and a remainder.
        #expect(Self.chunks(units: 40, parts: 2, minimum: 28) == [20, 20])
        #expect(Self.chunks(units: 96, parts: 2, minimum: 31) == [48, 48])
        #expect(Self.chunks(units: 7, parts: 2, minimum: 100) == [4, 3])
        #expect(Self.chunks(units: 9, parts: 3, minimum: 2) == [3, 3, 3])
        // Larger work: half of what is left per thread, never under the minimum (the head: 16,384 groups).
        #expect(Self.chunks(units: 128, parts: 2, minimum: 18) == [32, 24, 18, 18, 18, 18])
        let head = Self.chunks(units: 16_384, parts: 2, minimum: 24)
        #expect(head.first == 4096)
        #expect(head.reduce(0, +) == 16_384)
        #expect(head.dropLast().allSatisfy { $0 >= 24 })
        // Every size covers what is left at most, so the chunks tile the work exactly.
        for units in 1...300 {
            for parts in 1...4 {
                for minimum in [1, 3, 17, 64] {
                    let c = Self.chunks(units: units, parts: parts, minimum: minimum)
                    #expect(c.reduce(0, +) == units && c.allSatisfy { $0 > 0 }, "\(units) units, \(parts) parts, minimum \(minimum)")
                }
            }
        }
    }

    /// Raw copies of a matrix and its packed form, for tensors the tests build.
    final class Matrix {
        let type: Int32, rows: Int, cols: Int, rowBytes: Int
        let data: UnsafeMutableRawPointer
        let packed: UnsafeMutableRawPointer?

        init(type: Int32, rows: Int, cols: Int, bytes: [UInt8], pack: Bool) {
            self.type = type
            self.rows = rows
            self.cols = cols
            rowBytes = bytes.count / rows
            let data = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 64)
            bytes.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            self.data = data
            if pack {
                let p = UnsafeMutableRawPointer.allocate(byteCount: pl_packed_bytes(type, Int64(rows), Int64(cols)), alignment: 64)
                pl_pack_rows(type, data, bytes.count / rows, Int64(rows), Int64(cols), p, 0, Int64((rows + 15) / 16))
                packed = p
            } else {
                packed = nil
            }
        }

        deinit {
            data.deallocate()
            packed?.deallocate()
        }

        var tensor: WeightTensor {
            WeightTensor(name: "m", type: GGMLType(rawValue: UInt32(type)), rows: rows, columns: cols, rowBytes: rowBytes,
                         data: UnsafeRawPointer(data), packed: packed.map { UnsafeRawPointer($0) })
        }

        /// The reference: one row-layout kernel call over every row.
        func reference(_ x: [Float]) -> [UInt32] {
            let act = pl_activation_type(type)
            var xq = [UInt8](repeating: 0, count: Linear.quantizedInputBytes(columns: cols))
            var y = [Float](repeating: .nan, count: rows)
            x.withUnsafeBufferPointer { xp in xq.withUnsafeMutableBytes { KQuantKernelTests.quantize(act, xp.baseAddress!, $0.baseAddress!, cols) } }
            xq.withUnsafeBytes { q in
                y.withUnsafeMutableBufferPointer {
                    pl_matmul_q(type, data, rowBytes, q.baseAddress, 0, 1, $0.baseAddress, Int64(rows), Int64(cols), 0, Int64(rows))
                }
            }
            return y.map(\.bitPattern)
        }
    }

    static func matrix(_ type: Int32, rows: Int, cols: Int, seed: UInt64, pack: Bool = true) -> Matrix {
        let bytes: [UInt8]
        if let t = KQuantKernelTests.types.first(where: { $0.1 == type }) {
            bytes = KQuantKernelTests.randomMatrix(t, rows: rows, cols: cols, seed: seed)
        } else {
            // Q4_0, Q4_1, Q5_0, Q8_0 blocks (d, [m | qh], quants).
            let blockBytes = type == 2 ? 18 : type == 3 ? 20 : type == 6 ? 22 : 34
            bytes = PackedKernelTests.randomMatrix(type: type, blockBytes: blockBytes, rows: rows, cols: cols, seed: seed)
        }
        return Matrix(type: type, rows: rows, cols: cols, bytes: bytes, pack: pack && pl_packed_supported() != 0)
    }

    @Test("One input through Linear (packed and row layout, many chunks) gives one kernel call's bits")
    func decodeMatvec() throws {
        let pool = ThreadPool(threadCount: 2)
        let cols = 512
        let linear = Linear(pool: pool, maxColumns: cols, maxBatch: 1, tileFloats: 4096)
        defer { linear.deallocate() }
        var rng = SplitMix64(seed: 3)
        let x = (0..<cols).map { _ in Float(rng.nextUnit() * 2 - 1) }
        // Q4_0 packed (a head-like tall matrix: dozens of chunks), Q4_K packed, Q6_K in the row layout; odd row counts.
        for (type, rows, pack) in [(Int32(2), 4093, true), (12, 1203, true), (14, 1111, false)] {
            let m = Self.matrix(type, rows: rows, cols: cols, seed: 40 + UInt64(type), pack: pack)
            #expect(pack == (m.packed != nil) || pl_packed_supported() == 0)
            var got = [Float](repeating: .nan, count: rows)
            for _ in 0..<3 {
                x.withUnsafeBufferPointer { xp in got.withUnsafeMutableBufferPointer { linear(m.tensor, xp.baseAddress!, n: 1, $0.baseAddress!) } }
                #expect(got.map(\.bitPattern) == m.reference(x), "type \(type), \(rows) rows: differs from one call")
            }
        }
    }

    @Test("Linear.fused for one input: equal-row matrices split alike (then(1) finds matrix 0's rows), unequal ones each once")
    func decodeFused() throws {
        try #require(pl_packed_supported() != 0, "this CPU lacks AVX-512 VNNI: the packed kernel is not used here")
        // Gate/up-like (equal rows, Q5_0 and Q4_K: two activation formats), then Q/K/V-like (unequal rows).
        for shapes in [[(Int32(6), 1531), (12, 1531)], [(6, 1021), (12, 253), (3, 253)]] {
            let mats = shapes.enumerated().map { Self.matrix($0.element.0, rows: $0.element.1, cols: 768, seed: 70 + UInt64($0.offset)) }
            Self.checkFused(mats, seed: 8, "\(shapes)")
        }
    }

    @Test("Linear.fused over row-layout matrices (unpacked Q8_0 and K-quants, as the AVX2 tier runs them): one kernel call's bits, follow-ups once per row")
    func decodeFusedRowLayout() throws {
        // Gate/up-like (equal rows: Q8_0 and Q6_K, two activation formats), then Q/K/V-like (unequal rows, one packed
        // where this CPU packs Q4_1: the two layouts in one call).
        for shapes in [[(Int32(8), 1531, false), (14, 1531, false)], [(8, 1021, false), (8, 253, false), (3, 253, true)]] {
            let mats = shapes.enumerated().map {
                Self.matrix($0.element.0, rows: $0.element.1, cols: 512, seed: 90 + UInt64($0.offset), pack: $0.element.2)
            }
            #expect(mats.allSatisfy { $0.type == 3 || $0.packed == nil })
            Self.checkFused(mats, seed: 11, "\(shapes)")
        }
    }

    /// One input through `Linear.fused` over 2 or 3 matrices of equal width on 2 threads: each output as one kernel
    /// call gives it, each row's follow-up run once, after its rows (and, for equal row counts, matrix 0's) are done.
    static func checkFused(_ mats: [Matrix], seed: UInt64, _ label: String) {
        let cols = mats[0].cols
        let pool = ThreadPool(threadCount: 2)
        let linear = Linear(pool: pool, maxColumns: cols, maxBatch: 1, tileFloats: 4096)
        defer { linear.deallocate() }
        var rng = SplitMix64(seed: seed)
        let x = (0..<cols).map { _ in Float(rng.nextUnit() * 2 - 1) }
        let outs = mats.map { m -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: m.rows)
            p.initialize(repeating: .nan, count: m.rows)
            return p
        }
        defer { for p in outs { p.deallocate() } }
        let calls = Mutex<[Int]>(Array(repeating: 0, count: 3))
        let missing = Mutex(0)
        x.withUnsafeBufferPointer { xp in
            let w2 = mats.count > 2 ? mats[2].tensor : nil
            linear.fused(xp.baseAddress!, n: 1, mats[0].tensor, outs[0], mats[1].tensor, outs[1], w2, mats.count > 2 ? outs[2] : nil) { m, rows in
                calls.withLock { $0[m] += rows.count }
                let undone = rows.filter { outs[m][$0].isNaN || (mats.count == 2 && outs[0][$0].isNaN) }.count
                missing.withLock { $0 += undone }
            }
        }
        #expect(missing.withLock { $0 } == 0, "\(label): then(m, rows) ran before its rows (or matrix 0's) were computed")
        for (i, m) in mats.enumerated() {
            #expect(calls.withLock { $0[i] } == m.rows, "\(label) matrix \(i): follow-ups over \(calls.withLock { $0[i] }) rows, not \(m.rows)")
            #expect((0..<m.rows).map { outs[i][$0].bitPattern } == m.reference(x), "\(label) matrix \(i): differs from one call")
        }
    }
}
