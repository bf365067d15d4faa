import CKernels
import Foundation
import Testing
import PocketLM

/// The packed (16-row interleaved) VNNI kernel must give bit-identical results to the row-layout kernel, which
/// follows llama.cpp's arithmetic: that is what keeps greedy decoding equal to the reference.
@Suite("Packed kernel")
struct PackedKernelTests {
    static let types: [(Int32, Int)] = [(8, 34), (2, 18), (3, 20), (6, 22)] // Q8_0, Q4_0, Q4_1, Q5_0 (file block bytes)

    /// Random quantized rows with plausible f16 scales (and Q4_1 minimums); Q5_0's 5th bits are random too.
    static func randomMatrix(type: Int32, blockBytes: Int, rows: Int, cols: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        let nb = cols / 32
        var w = [UInt8](repeating: 0, count: rows * nb * blockBytes)
        for i in w.indices { w[i] = UInt8(truncatingIfNeeded: rng.next()) }
        for r in 0..<rows {
            for b in 0..<nb {
                let o = (r * nb + b) * blockBytes
                let d = pl_f32_to_f16(Float(rng.nextUnit() * 0.02 + 0.001))
                w[o] = UInt8(d & 0xff); w[o + 1] = UInt8(d >> 8)
                if type == 3 {
                    let m = pl_f32_to_f16(Float(-rng.nextUnit() * 0.1))
                    w[o + 2] = UInt8(m & 0xff); w[o + 3] = UInt8(m >> 8)
                }
            }
        }
        return w
    }

    /// `tokens` inputs of `columns` quantized as the packed kernel's type wants them (Q8_1 for Q4_1, else Q8_0),
    /// `stride` bytes apart.
    static func quantizedInputs(_ x: [Float], type: Int32, tokens: Int, columns cols: Int, stride: Int) -> [UInt8] {
        var xq = [UInt8](repeating: 0, count: tokens * stride)
        x.withUnsafeBufferPointer { xp in
            xq.withUnsafeMutableBytes { q in
                for t in 0..<tokens {
                    if type == 3 { pl_quantize_q8_1(xp.baseAddress! + t * cols, q.baseAddress! + t * stride, Int64(cols)) }
                    else { pl_quantize_q8_0(xp.baseAddress! + t * cols, q.baseAddress! + t * stride, Int64(cols)) }
                }
            }
        }
        return xq
    }

    @Test("bit-identical to pl_matmul_q (one input: three streams in lockstep, leftover groups, a partial last group in or out of a triple)",
          arguments: [(16, 64, 1), (48, 576, 1), (37, 96, 1), (83, 64, 1), (101, 64, 1), (117, 64, 1), (200, 1536, 1),
                      (37, 96, 3), (5, 32, 2), (200, 1536, 4)])
    func matchesRowKernel(rows: Int, cols: Int, tokens: Int) throws {
        try #require(pl_packed_supported() != 0, "this CPU lacks AVX-512 VNNI: the packed kernel is not used here")
        for (type, blockBytes) in Self.types {
            let w = Self.randomMatrix(type: type, blockBytes: blockBytes, rows: rows, cols: cols, seed: UInt64(rows * cols) + UInt64(type))
            var rng = SplitMix64(seed: 99)
            let x = (0..<(tokens * cols)).map { _ in Float(rng.nextUnit() * 4 - 2) }
            let stride = (cols / 32) * 36
            let xq = Self.quantizedInputs(x, type: type, tokens: tokens, columns: cols, stride: stride)
            let rowBytes = cols / 32 * blockBytes
            var packed = [UInt8](repeating: 0xAA, count: pl_packed_bytes(type, Int64(rows), Int64(cols)))
            var expected = [Float](repeating: 0, count: tokens * rows), got = [Float](repeating: -1, count: tokens * rows)
            w.withUnsafeBytes { wp in
                packed.withUnsafeMutableBytes { pp in
                    pl_pack_rows(type, wp.baseAddress, rowBytes, Int64(rows), Int64(cols), pp.baseAddress, 0, Int64((rows + 15) / 16))
                }
                xq.withUnsafeBytes { q in
                    expected.withUnsafeMutableBufferPointer {
                        pl_matmul_q(type, wp.baseAddress, rowBytes, q.baseAddress, stride, Int64(tokens), $0.baseAddress, Int64(rows), Int64(cols), 0, Int64(rows))
                    }
                    packed.withUnsafeBytes { pp in
                        got.withUnsafeMutableBufferPointer { out in
                            // Two row ranges, as two threads would split them.
                            let mid = min(rows, 16)
                            pl_matmul_packed(type, pp.baseAddress, Int64(rows), Int64(cols), q.baseAddress, stride, Int64(tokens),
                                             out.baseAddress, Int64(rows), 0, Int64(mid))
                            pl_matmul_packed(type, pp.baseAddress, Int64(rows), Int64(cols), q.baseAddress, stride, Int64(tokens),
                                             out.baseAddress, Int64(rows), Int64(mid), Int64(rows))
                        }
                    }
                }
            }
            #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "type \(type) \(rows)×\(cols) × \(tokens) tokens")
        }
    }

    /// A decode step of a few slots: 2…8 inputs of Q4_1 or Q8_0 go through the few-inputs kernel (each group visited
    /// once, two inputs per weight load); each input must get exactly what a lone call (the one-input kernel) gives it.
    @Test("few inputs (Q4_1, Q8_0; 2…8) equal one lone call per input (odd rows, split ranges, 1,536 columns)",
          arguments: [(37, 96), (200, 1536), (61, 576), (16, 64)])
    func fewInputsMatchLoneCalls(rows: Int, cols: Int) throws {
        try #require(pl_packed_supported() != 0, "this CPU lacks AVX-512 VNNI: the packed kernel is not used here")
        for (type, blockBytes) in Self.types where type == 3 || type == 8 {
            let w = Self.randomMatrix(type: type, blockBytes: blockBytes, rows: rows, cols: cols, seed: UInt64(rows + cols) + UInt64(type))
            let rowBytes = cols / 32 * blockBytes
            var packed = [UInt8](repeating: 0xAA, count: pl_packed_bytes(type, Int64(rows), Int64(cols)))
            w.withUnsafeBytes { wp in
                packed.withUnsafeMutableBytes { pp in
                    pl_pack_rows(type, wp.baseAddress, rowBytes, Int64(rows), Int64(cols), pp.baseAddress, 0, Int64((rows + 15) / 16))
                }
            }
            for tokens in 2...8 {
                #expect(pl_packed_few_owns(type, Int64(tokens), Int64(cols)) == 1, "type \(type), \(tokens) inputs")
                var rng = SplitMix64(seed: UInt64(tokens) * 7 + UInt64(type))
                let x = (0..<(tokens * cols)).map { _ in Float(rng.nextUnit() * 4 - 2) }
                let stride = (cols / 32) * 36 + 4   // a stride wider than the blocks, as Linear's scratch has
                let xq = Self.quantizedInputs(x, type: type, tokens: tokens, columns: cols, stride: stride)
                var lone = [Float](repeating: .nan, count: tokens * rows), few = [Float](repeating: .nan, count: tokens * rows)
                packed.withUnsafeBytes { pp in
                    xq.withUnsafeBytes { q in
                        for t in 0..<tokens {
                            lone.withUnsafeMutableBufferPointer { out in
                                pl_matmul_packed(type, pp.baseAddress, Int64(rows), Int64(cols), q.baseAddress! + t * stride, stride, 1,
                                                 out.baseAddress! + t * rows, Int64(rows), 0, Int64(rows))
                            }
                        }
                        few.withUnsafeMutableBufferPointer { out in
                            let mid = min(rows, 32)   // two threads' row ranges
                            pl_matmul_packed(type, pp.baseAddress, Int64(rows), Int64(cols), q.baseAddress, stride, Int64(tokens),
                                             out.baseAddress, Int64(rows), 0, Int64(mid))
                            pl_matmul_packed(type, pp.baseAddress, Int64(rows), Int64(cols), q.baseAddress, stride, Int64(tokens),
                                             out.baseAddress, Int64(rows), Int64(mid), Int64(rows))
                        }
                    }
                }
                #expect(few.map(\.bitPattern) == lone.map(\.bitPattern), "type \(type) \(rows)×\(cols) × \(tokens) inputs")
            }
        }
        #expect(pl_packed_few_owns(3, 9, 576) == 0 && pl_packed_few_owns(2, 4, 576) == 0 && pl_packed_few_owns(3, 1, 576) == 0)
    }

    /// Q5_0 is most of a Q4_K_M file. Its row kernels (portable and VNNI) follow llama.cpp's lanes, so the packed
    /// kernel must equal both, for every batch size the batched path handles (1 streams three groups far apart;
    /// more go three neighbouring groups at a time), odd row counts, partial last groups and split row ranges.
    @Test("packed Q5_0 equals the portable and the VNNI row bodies (batches 1…5, odd rows, split ranges)",
          arguments: [(37, 96), (83, 64), (117, 576), (200, 1536), (5, 32), (49, 640), (16, 64)])
    func q5_0MatchesPortable(rows: Int, cols: Int) throws {
        try #require(pl_packed_supported() != 0, "this CPU lacks AVX-512 VNNI: the packed kernel is not used here")
        try #require(pl_quant_fast_body(6) == 1, "the Q5_0 VNNI row body is not selected on this CPU")
        let w = Self.randomMatrix(type: 6, blockBytes: 22, rows: rows, cols: cols, seed: UInt64(rows &* 31 &+ cols))
        let rowBytes = cols / 32 * 22, stride = cols / 32 * 34
        var packed = [UInt8](repeating: 0x5A, count: pl_packed_bytes(6, Int64(rows), Int64(cols)))
        #expect(packed.count == (rows + 15) / 16 * 16 * rowBytes, "packed Q5_0 keeps the file's bytes per block")
        w.withUnsafeBytes { wp in
            packed.withUnsafeMutableBytes { pp in
                // Two calls, as the loader's parts pack their own groups.
                let groups = Int64((rows + 15) / 16), half = groups / 2
                pl_pack_rows(6, wp.baseAddress, rowBytes, Int64(rows), Int64(cols), pp.baseAddress, 0, half)
                pl_pack_rows(6, wp.baseAddress, rowBytes, Int64(rows), Int64(cols), pp.baseAddress, half, groups)
            }
        }
        for tokens in 1...5 {
            var rng = SplitMix64(seed: UInt64(tokens * 7 + cols))
            let x = (0..<(tokens * cols)).map { _ in Float((rng.nextUnit() * 4 - 2) * (rng.nextUnit() < 0.05 ? 40 : 1)) }
            var xq = [UInt8](repeating: 0, count: tokens * stride)
            x.withUnsafeBufferPointer { xp in
                xq.withUnsafeMutableBytes { q in
                    for t in 0..<tokens { pl_quantize_q8_0(xp.baseAddress! + t * cols, q.baseAddress! + t * stride, Int64(cols)) }
                }
            }
            func rowKernel(portable: Bool) -> [UInt32] {
                var y = [Float](repeating: .nan, count: tokens * rows)
                pl_force_portable(portable ? 1 : 0)
                defer { pl_force_portable(0) }
                w.withUnsafeBytes { wp in
                    xq.withUnsafeBytes { q in
                        y.withUnsafeMutableBufferPointer {
                            pl_matmul_q(6, wp.baseAddress, rowBytes, q.baseAddress, stride, Int64(tokens), $0.baseAddress,
                                        Int64(rows), Int64(cols), 0, Int64(rows))
                        }
                    }
                }
                return y.map(\.bitPattern)
            }
            let portable = rowKernel(portable: true), vnni = rowKernel(portable: false)
            var got = [Float](repeating: .nan, count: tokens * rows)
            xq.withUnsafeBytes { q in
                packed.withUnsafeBytes { pp in
                    got.withUnsafeMutableBufferPointer { out in
                        // Three row ranges on group boundaries, as three threads would split them.
                        let cuts = [0, min(rows, 16), min(rows, 48), rows]
                        for i in 0..<3 where cuts[i] < cuts[i + 1] {
                            pl_matmul_packed(6, pp.baseAddress, Int64(rows), Int64(cols), q.baseAddress, stride, Int64(tokens),
                                             out.baseAddress, Int64(rows), Int64(cuts[i]), Int64(cuts[i + 1]))
                        }
                    }
                }
            }
            #expect(portable == vnni, "Q5_0 row bodies differ \(rows)×\(cols) × \(tokens)")
            #expect(got.map(\.bitPattern) == portable, "packed Q5_0 \(rows)×\(cols) × \(tokens) tokens")
            #expect(got.allSatisfy { $0.isFinite })
        }
    }

    /// Prefill over Q4_0, Q5_0 and Q8_0 (packed_batch.c): each group's blocks are unpacked once into scratch and
    /// used by the whole batch, inputs two at a time (an odd batch ends with a lone one); rows longer than 24
    /// blocks are cut in chunks whose accumulators wait between chunks for tiles of 32 inputs. Every output must
    /// equal the row body bit for bit (Q5_0: the portable one): batches 1…11 and 33, 70 (several tiles, a partial one), one and
    /// several chunks (800 and 1536 columns: 25 and 48 blocks), odd rows, four row ranges.
    @Test("packed batch (Q4_0, Q5_0, Q8_0) equals the row bodies (Q5_0 the portable one; batches 1…11, 33, 70; chunked rows; split ranges)",
          arguments: [(37, 96), (83, 64), (49, 640), (117, 800), (21, 1536), (5, 32)])
    func batchMatchesPortable(rows: Int, cols: Int) throws {
        try #require(pl_packed_supported() != 0, "this CPU lacks AVX-512 VNNI: the packed kernel is not used here")
        for (type, blockBytes) in [(Int32(2), 18), (Int32(6), 22), (Int32(8), 34)] {
            let w = Self.randomMatrix(type: type, blockBytes: blockBytes, rows: rows, cols: cols,
                                      seed: UInt64(rows &* 131 &+ cols) &+ UInt64(type))
            let rowBytes = cols / 32 * blockBytes, stride = cols / 32 * 34
            var packed = [UInt8](repeating: 0x5A, count: pl_packed_bytes(type, Int64(rows), Int64(cols)))
            w.withUnsafeBytes { wp in
                packed.withUnsafeMutableBytes { pp in
                    pl_pack_rows(type, wp.baseAddress, rowBytes, Int64(rows), Int64(cols), pp.baseAddress, 0, Int64((rows + 15) / 16))
                }
            }
            for tokens in Array(1...11) + [33, 70] {
                var rng = SplitMix64(seed: UInt64(tokens &* 13 &+ cols) &+ UInt64(type))
                let x = (0..<(tokens * cols)).map { _ in Float((rng.nextUnit() * 4 - 2) * (rng.nextUnit() < 0.05 ? 40 : 1)) }
                var xq = [UInt8](repeating: 0, count: tokens * stride)
                x.withUnsafeBufferPointer { xp in
                    xq.withUnsafeMutableBytes { q in
                        for t in 0..<tokens { pl_quantize_q8_0(xp.baseAddress! + t * cols, q.baseAddress! + t * stride, Int64(cols)) }
                    }
                }
                var expected = [Float](repeating: .nan, count: tokens * rows), got = expected
                // Q5_0's reference is the portable body; Q4_0/Q8_0's portable bodies sum in another order, so
                // theirs is the row-layout VNNI body (llama.cpp's order, which the packed kernel follows).
                pl_force_portable(type == 6 ? 1 : 0)
                w.withUnsafeBytes { wp in
                    xq.withUnsafeBytes { q in
                        expected.withUnsafeMutableBufferPointer {
                            pl_matmul_q(type, wp.baseAddress, rowBytes, q.baseAddress, stride, Int64(tokens), $0.baseAddress,
                                        Int64(rows), Int64(cols), 0, Int64(rows))
                        }
                    }
                }
                pl_force_portable(0)
                xq.withUnsafeBytes { q in
                    packed.withUnsafeBytes { pp in
                        got.withUnsafeMutableBufferPointer { out in
                            // Four row ranges on group boundaries, as four threads would split them.
                            let cuts = [0, min(rows, 16), min(rows, 32), min(rows, 80), rows]
                            for i in 0..<4 where cuts[i] < cuts[i + 1] {
                                pl_matmul_packed(type, pp.baseAddress, Int64(rows), Int64(cols), q.baseAddress, stride,
                                                 Int64(tokens), out.baseAddress, Int64(rows), Int64(cuts[i]), Int64(cuts[i + 1]))
                            }
                        }
                    }
                }
                #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "packed type \(type) \(rows)×\(cols) × \(tokens) tokens")
                #expect(got.allSatisfy { $0.isFinite })
            }
        }
    }
}
