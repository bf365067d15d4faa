import Foundation
import Testing
import PocketLM
import CKernels

/// The attention kernels (one query, a grouped-query head group, a prompt chunk's tile) against a double reference
/// and each other; part of the serialized "C kernels" suite (`bothPaths` forces the portable kernels process-wide).
extension KernelTests {

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
            for (queries, heads) in [(1, 3), (2, 3), (4, 3), (5, 3), (6, 3), (3, 1), (16, 1), (4, 4), (2, 5), (10, 3), (8, 4), (32, 1), (21, 3), (16, 4), (9, 7), (64, 1)] {
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
}
