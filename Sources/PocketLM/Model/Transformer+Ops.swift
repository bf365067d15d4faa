import CKernels
import Foundation
import Synchronization

// The forward pass's element-wise steps (norms, RoPE, biases, the gated activation) and the per-head follow-ups of
// the Q/K/V projections. `forwardChunk` (Transformer.swift) calls them in order.
extension Transformer {
    /// out = x / sqrt(mean(x²) + eps) ⊙ weight for each of `rows` vectors of `width` (in place when out == input).
    /// Four rows at a time: each row's sum is still one sequential chain (ggml's order, so the same bits), but four
    /// independent chains keep the adder busy instead of waiting out each addition's latency.
    func rmsNorm(_ input: UnsafeMutablePointer<Float>, _ weight: [Float], _ out: UnsafeMutablePointer<Float>,
                 rows: Int, width: Int, eps: Float, stride: Int? = nil) {
        let stride = stride ?? width
        // ggml's rms_norm: float squares summed in double, the mean and scale in float, then × weight.
        func scaleRow(_ xi: UnsafeMutablePointer<Float>, _ yo: UnsafeMutablePointer<Float>, _ ss: Double,
                      _ w: UnsafeBufferPointer<Float>) {
            let mean = Float(ss / Double(width))
            let scale = 1 / (mean + eps).squareRoot()
            for j in 0..<width { yo[j] = xi[j] * scale * w[j] }
        }
        weight.withUnsafeBufferPointer { w in
            var r = 0
            while r + 4 <= rows {
                let x0 = input + r * stride, x1 = x0 + stride, x2 = x1 + stride, x3 = x2 + stride
                var s0: Double = 0, s1: Double = 0, s2: Double = 0, s3: Double = 0
                for j in 0..<width {
                    s0 += Double(x0[j] * x0[j])
                    s1 += Double(x1[j] * x1[j])
                    s2 += Double(x2[j] * x2[j])
                    s3 += Double(x3[j] * x3[j])
                }
                let y0 = out + r * stride
                scaleRow(x0, y0, s0, w)
                scaleRow(x1, y0 + stride, s1, w)
                scaleRow(x2, y0 + 2 * stride, s2, w)
                scaleRow(x3, y0 + 3 * stride, s3, w)
                r += 4
            }
            while r < rows {
                let xi = input + r * stride
                var ss: Double = 0
                for j in 0..<width { ss += Double(xi[j] * xi[j]) }
                scaleRow(xi, out + r * stride, ss, w)
                r += 1
            }
        }
    }

    /// `rmsNorm` of a chunk's `rows` vectors of `width`, the rows spread over the threads when there are enough of
    /// them (a prompt chunk: otherwise one thread normed while the other waited). Each row is computed as alone.
    func normRows(_ input: UnsafeMutablePointer<Float>, _ weight: [Float], _ out: UnsafeMutablePointer<Float>,
                  rows: Int, width: Int, eps: Float) {
        guard rows >= 16 else { return rmsNorm(input, weight, out, rows: rows, width: width, eps: eps) }
        pool.parallelRanges(rows, granularity: 4) { range in
            self.rmsNorm(input + range.lowerBound * width, weight, out + range.lowerBound * width, rows: range.count,
                         width: width, eps: eps)
        }
    }

    func scale(_ a: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        for i in 0..<count { a[i] *= factor }
    }

    /// Adds `bias` to `columns` of each of the `rows` vectors of `width`.
    func addBias(_ v: UnsafeMutablePointer<Float>, _ bias: [Float], width: Int, rows: Int, columns: Range<Int>) {
        bias.withUnsafeBufferPointer { b in
            for r in 0..<rows {
                let p = v + r * width
                for j in columns { p[j] += b[j] }
            }
        }
    }

    /// Rotates each head's pairs by pos·θ_i (table `table` of `ropes`), for `columns` (even bounds, whole heads in
    /// the NEOX layout) of each of the `rows` vectors of `width` elements, the first at table row `firstRow`.
    /// Adjacent pairs: GGUF's llama layout
    /// permuted Q/K rows for (x[2i], x[2i+1]); halves (NEOX): (x[i], x[i + d/2]).
    func rope(_ v: UnsafeMutablePointer<Float>, width: Int, rows: Int, columns: Range<Int>, table: Int,
              row firstRow: Int = 0) {
        let hd = config.headDim, half = hd / 2
        let cosT = ropeCos + (table * maxBatch + firstRow) * half, sinT = ropeSin + (table * maxBatch + firstRow) * half
        for r in 0..<rows {
            let p = v + r * width
            switch traits.ropeLayout {
            case .adjacentPairs:
                var j = columns.lowerBound
                while j < columns.upperBound {
                    let i = (j % hd) / 2
                    let c = cosT[r * half + i], s = sinT[r * half + i]
                    let a = p[j], b = p[j + 1]
                    p[j] = a * c - b * s
                    p[j + 1] = a * s + b * c
                    j += 2
                }
            case .halves:
                var head = columns.lowerBound
                while head < columns.upperBound {
                    for i in 0..<half {
                        let c = cosT[r * half + i], s = sinT[r * half + i]
                        let a = p[head + i], b = p[head + i + half]
                        p[head + i] = a * c - b * s
                        p[head + i + half] = a * s + b * c
                    }
                    head += hd
                }
            }
        }
    }

    func resetHeadCounts() {
        for i in 0..<(config.numAttentionHeads + config.numKeyValueHeads) { headRowsDone[i].store(0, ordering: .relaxed) }
    }

    /// One decoded token's query (or key) rows `rows` are computed: counts them against their heads, and for each
    /// head they complete — whichever thread computed its other rows — norms and rotates it (a key head is then
    /// cached). The same arithmetic as `prepareHeads`, on the thread at hand instead of in a round of its own.
    func finishHeads(_ block: Block, keys: Bool, rows: Range<Int>, slot: Int) {
        let hd = config.headDim
        var head = rows.lowerBound / hd
        while head * hd < rows.upperBound {
            let overlap = min(rows.upperBound, (head + 1) * hd) - max(rows.lowerBound, head * hd)
            let counter = keys ? config.numAttentionHeads + head : head
            // Acquire-release: the thread that completes the head sees the other thread's rows of it.
            let done = headRowsDone[counter].add(overlap, ordering: .acquiringAndReleasing).newValue
            if done == hd {
                if keys { prepareKeyHead(block, row: 0, head: head, slot: slot) } else { prepareQueryHead(block, row: 0, head: head) }
            }
            head += 1
        }
    }

    /// Q/K/V after their projections when a head's work needs the whole head (per-head norms, NEOX RoPE): per
    /// (position, head) item, norm and rotate the query heads; norm, rotate and cache the key heads; cache the values.
    func prepareHeads(_ block: Block, rows n: Int, slot: Int) {
        let heads = config.numAttentionHeads, kvHeads = config.numKeyValueHeads, hd = config.headDim, kvDim = config.kvDim
        let v = self.v, rowSequence = self.rowSequence, rowPosition = self.rowPosition
        let perRow = heads + kvHeads
        pool.parallelRanges(n * perRow) { range in
            for item in range {
                let t = item / perRow, h = item % perRow
                if h < heads {
                    self.prepareQueryHead(block, row: t, head: h)
                } else {
                    self.prepareKeyHead(block, row: t, head: h - heads, slot: slot)
                    self.caches[rowSequence[t]].store(v + t * kvDim + (h - heads) * hd, count: hd, slot: slot, head: h - heads,
                                                      position: rowPosition[t], column: 0, values: true)
                }
            }
        }
    }

    /// Query head `h` of chunk row `t`: its per-head norm (if the model has one), then RoPE.
    func prepareQueryHead(_ block: Block, row t: Int, head h: Int) {
        let hd = config.headDim, qDim = config.queryDim
        let p = q + t * qDim + h * hd
        if let norm = block.qNorm { rmsNorm(p, norm, p, rows: 1, width: hd, eps: Float(config.rmsNormEps)) }
        rope(q + t * qDim, width: qDim, rows: 1, columns: h * hd..<(h + 1) * hd, table: block.rope, row: t)
    }

    /// Key head `kh` of chunk row `t`: its per-head norm, RoPE, then into its sequence's cache at its position.
    func prepareKeyHead(_ block: Block, row t: Int, head kh: Int, slot: Int) {
        let hd = config.headDim, kvDim = config.kvDim
        let p = k + t * kvDim + kh * hd
        if let norm = block.kNorm { rmsNorm(p, norm, p, rows: 1, width: hd, eps: Float(config.rmsNormEps)) }
        rope(k + t * kvDim, width: kvDim, rows: 1, columns: kh * hd..<(kh + 1) * hd, table: block.rope, row: t)
        caches[rowSequence[t]].store(p, count: hd, slot: slot, head: kh, position: rowPosition[t], column: 0, values: false)
    }

    func add(_ a: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { a[i] += b[i] }
    }
}
