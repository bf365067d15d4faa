import Foundation
import PocketLM
import Testing

/// A prompt chunk's attention is split among the threads as ranges of (KV head, query) units of equal work, each
/// thread tiling its own range: every unit is computed exactly once, and since each output has the bits the
/// one-query kernel gives it whatever tile it falls in, the logits cannot depend on the split.
@Suite("Attention tile split")
struct AttentionTileSplitTests {
    @Test("attentionTileRanges covers every unit once, in order, with equal work to within one unit")
    func rangesCoverAndBalance() {
        let bounds = UnsafeMutablePointer<Int>.allocate(capacity: 9)
        defer { bounds.deallocate() }
        for (rows, heads, start) in [(45, 3, 1570), (343, 3, 1570), (1, 3, 0), (2, 1, 0), (7, 5, 3), (512, 3, 0), (64, 1, 8000)] {
            for parts in 1...8 where parts <= rows * heads {
                Transformer.attentionTileRanges(rows: rows, heads: heads, start: start, parts: parts, into: bounds)
                #expect(bounds[0] == 0 && bounds[parts] == rows * heads)
                let work = { (u: Int) in start + u % rows + 1 }
                let total = (0..<(rows * heads)).reduce(0) { $0 + work($1) }
                let largest = start + rows
                for p in 0..<parts {
                    #expect(bounds[p] <= bounds[p + 1], "rows \(rows) heads \(heads) parts \(parts): bounds go back at \(p)")
                    let share = (bounds[p]..<bounds[p + 1]).reduce(0) { $0 + work($1) }
                    // Each part's work is within one unit of its fair share.
                    #expect(abs(share * parts - total) <= largest * parts,
                            "rows \(rows) heads \(heads) start \(start) parts \(parts): part \(p) has \(share) of \(total)")
                }
            }
        }
    }

    @Test("SmolLM2: a prompt chunk deep in the cache gives the same logits on 1, 2 and 3 threads and token by token")
    func chunkAtDepthSameBits() throws {
        let path = try TestPaths.model("SmolLM2-135M-Instruct.Q4_1.gguf")
        var reference: [UInt32]?
        // A 200-token prefix, then a 37-token chunk (odd, so tiles and thread ranges end mid-head).
        let ids = (0..<237).map { ($0 * 7919 + 13) % 40000 + 100 }
        for threads in [1, 2, 3] {
            let lm = try LanguageModel(path: path, options: LoadOptions(threads: threads, contextLength: 512))
            let t = lm.transformer
            _ = try ids[0..<200].withUnsafeBufferPointer { try t.forward(UnsafeBufferPointer(rebasing: $0[...])) }
            let chunk = try ids[200...].withUnsafeBufferPointer { try t.forward(UnsafeBufferPointer(rebasing: $0[...]), allLogits: true) }
            let bits = chunk.map(\.bitPattern)
            #expect(bits.allSatisfy { Float(bitPattern: $0).isFinite })
            if let reference {
                let diffs = zip(reference, bits).filter { $0 != $1 }.count
                #expect(diffs == 0, "\(threads) threads: \(diffs) logits differ from 1 thread")
            } else {
                reference = bits
                // Token by token (the one-query kernel), the chunk's last logits.
                t.reset()
                _ = try ids[0..<200].withUnsafeBufferPointer { try t.forward(UnsafeBufferPointer(rebasing: $0[...])) }
                var last: [Float] = []
                for id in ids[200...] { last = Array(try t.decode(id)) }
                let vocab = lm.config.vocabSize
                let diffs = zip(last.map(\.bitPattern), bits[(bits.count - vocab)...]).filter { $0 != $1 }.count
                #expect(diffs == 0, "token by token: \(diffs) of the last logits differ from the chunk's")
            }
        }
    }
}
