import CKernels
import Foundation

// Attention over the KV cache: one query at a time (decode, decode batches) or a prompt chunk's queries as tiles,
// and the stores of new keys and values into the cache.
extension Transformer {
    /// Writes `columns` of the `rows` new key (or value) vectors into their sequences' caches at their positions,
    /// as the caches' element type, head by head.
    func store(_ src: UnsafeMutablePointer<Float>, rows: Int, columns: Range<Int>, slot: Int, values: Bool) {
        let hd = config.headDim, kvDim = config.kvDim
        var c = columns.lowerBound
        while c < columns.upperBound {
            let head = c / hd, end = min(columns.upperBound, (head + 1) * hd)
            for t in 0..<rows {
                caches[rowSequence[t]].store(src + t * kvDim + c, count: end - c, slot: slot, head: head,
                                             position: rowPosition[t], column: c - head * hd, values: values)
            }
            c = end
        }
    }

    /// Consecutive queries of a prompt chunk that attend as one tile (each K/V row loaded once for all their heads):
    /// as many as fill the kernel's (query, head) pairs.
    static func attentionTileQueries(group: Int) -> Int { max(1, Int(PL_ATTENTION_TILE_PAIRS) / max(1, group)) }

    /// Floats of attention scores each thread needs: a tile of queries, a group of heads each, over the context
    /// (one more row each for the BF16 tile, which packs probabilities in pairs).
    public static func attentionScoresPerThread(config: ModelConfig, contextLength: Int) -> Int {
        attentionTileQueries(group: config.attentionGroup) * config.attentionGroup * (contextLength + 1)
    }

    /// Causal grouped-query attention for `rows` queries, each over its own sequence's cache up to its own position
    /// (from the start of its window on a sliding-window pass); the (query, head) items are spread over the
    /// threads. A thread takes its consecutive heads that share a KV head in one pass over that head's keys and
    /// values.
    func attention(_ q: UnsafeMutablePointer<Float>, slot: Int, rows: Int, out: UnsafeMutablePointer<Float>) {
        if rows > 1 && attentionTiles(q, slot: slot, rows: rows, out: out) { return }
        let heads = config.numAttentionHeads, hd = config.headDim, qDim = config.queryDim
        let caches = self.caches, rowSequence = self.rowSequence, rowPosition = self.rowPosition
        let group = config.attentionGroup
        let scale = attentionScale
        let attendGroup = kvCacheType == .bf16 ? pl_attention_group_bf16 : pl_attention_group_f16
        let items = rows * heads
        let parts = min(pool.threadCount, items)
        let scoresPerThread = Transformer.attentionScoresPerThread(config: config, contextLength: contextLength)
        let scores = self.scores
        // Causal: a later query sees more positions, so the items are split by work (positions seen), not count;
        // an equal split left one thread ~3× the other's work on a prompt.
        let bounds = attentionBounds
        func seen(_ r: Int) -> Int { rowPosition[r] + 1 - caches[rowSequence[r]].firstVisible(slot: slot, position: rowPosition[r]) }
        var total = 0
        for r in 0..<rows { total += heads * seen(r) }
        var done = 0, part = 1
        bounds[0] = 0
        for item in 0..<items where part < parts {
            done += seen(item / heads)
            while part < parts && done * parts >= total * part {
                bounds[part] = item + 1
                part += 1
            }
        }
        while part <= parts { bounds[part] = items; part += 1 }
        pool.run(parts: parts) { part in
            var item = bounds[part]
            let end = bounds[part + 1]
            while item < end {
                let r = item / heads, h = item % heads
                // The run of this thread's heads on the same query and KV head.
                let kvHead = h / group
                let n = min(end - item, (kvHead + 1) * group - h)
                let cache = caches[rowSequence[r]]
                let pos = rowPosition[r], first = cache.firstVisible(slot: slot, position: pos)
                let row = cache.row(slot: slot, position: first) * hd
                attendGroup(q + r * qDim + h * hd, Int64(n), cache.keys(slot: slot, head: kvHead) + row,
                            cache.values(slot: slot, head: kvHead) + row, Int64(hd), Int64(pos - first + 1),
                            Int64(hd), scale, scores + part * scoresPerThread, out + r * qDim + h * hd)
                item += n
            }
        }
    }

    /// A prompt chunk's attention (one sequence, consecutive positions, every query seeing the cache from its first
    /// row) as tiles of consecutive queries over one KV head: at depth each K and V row then serves a tile's queries
    /// instead of one, which is most of a deep chunk's attention. Each output has the bits the one-query kernel
    /// gives it, whatever tile it is computed in. Returns false (nothing done) for other batches: a decode batch of
    /// several sequences, or a sliding window whose start moves within the chunk.
    ///
    /// The threads split the (KV head, query) pairs, KV head by KV head, into ranges of equal work (positions seen),
    /// and each tiles its own range: a thread's tiles of one KV head follow each other, so that head's keys and
    /// values (~0.4 MB at 1,600 positions) stay in its L2 from one tile to the next, instead of three other heads'
    /// passing through in between; and the split is exact to a query, not to a whole tile of one head (with 45
    /// queries, 27 tiles could only split 14 to 13).
    func attentionTiles(_ q: UnsafeMutablePointer<Float>, slot: Int, rows: Int, out: UnsafeMutablePointer<Float>) -> Bool {
        let sequence = rowSequence[0], start = rowPosition[0]
        let cache = caches[sequence]
        for r in 1..<rows where rowSequence[r] != sequence || rowPosition[r] != start + r { return false }
        guard cache.firstVisible(slot: slot, position: start + rows - 1) == 0 else { return false }
        let kvHeads = config.numKeyValueHeads, hd = config.headDim, qDim = config.queryDim
        let group = config.attentionGroup, scale = attentionScale
        let attendTile = kvCacheType == .bf16 ? pl_attention_tile_bf16 : pl_attention_tile_f16
        let tile = Transformer.attentionTileQueries(group: group)
        let parts = min(pool.threadCount, kvHeads * rows)
        let scoresPerThread = Transformer.attentionScoresPerThread(config: config, contextLength: contextLength)
        let scores = self.scores, bounds = attentionBounds
        Transformer.attentionTileRanges(rows: rows, heads: kvHeads, start: start, parts: parts, into: bounds)
        let ranges = bounds
        let row0 = cache.row(slot: slot, position: 0) * hd
        pool.run(parts: parts) { part in
            var unit = ranges[part]
            let end = ranges[part + 1]
            while unit < end {
                let kvHead = unit / rows, r0 = unit % rows
                let n = min(tile, end - unit, rows - r0)
                let head0 = kvHead * group
                attendTile(q + r0 * qDim + head0 * hd, Int64(qDim), Int64(n), Int64(group),
                           cache.keys(slot: slot, head: kvHead) + row0, cache.values(slot: slot, head: kvHead) + row0,
                           Int64(hd), Int64(start + r0 + 1), Int64(hd), scale, scores + part * scoresPerThread,
                           out + r0 * qDim + head0 * hd, Int64(qDim))
                unit += n
            }
        }
        return true
    }

    /// Splits a prompt chunk's attention, the units kvHead · rows + r (KV head, query r at position start + r), into
    /// `parts` consecutive ranges of equal work to within one unit (query r sees start + r + 1 positions): part p
    /// takes units bounds[p] ..< bounds[p + 1] (bounds holds parts + 1 values).
    public static func attentionTileRanges(rows: Int, heads: Int, start: Int, parts: Int, into bounds: UnsafeMutablePointer<Int>) {
        // Work of one head's first k queries: k·(start + 1) + k(k−1)/2.
        func headWork(_ k: Int) -> Int { k * (start + 1) + k * (k - 1) / 2 }
        let perHead = headWork(rows), total = perHead * heads
        bounds[0] = 0
        for part in 1..<parts {
            // The first unit at which the work done reaches part/parts of the total.
            let target = (total * part + parts - 1) / parts
            let head = min(heads - 1, target / perHead)
            var lo = 0, hi = rows
            let rest = target - head * perHead
            while lo < hi {
                let mid = (lo + hi) / 2
                if headWork(mid) >= rest { hi = mid } else { lo = mid + 1 }
            }
            bounds[part] = max(bounds[part - 1], head * rows + lo)
        }
        bounds[parts] = heads * rows
    }
}
