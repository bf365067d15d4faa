import Foundation

/// The storage reference a paged run is held against, measured the way flash reads: `threads` readers, reads of the
/// size flash issues, `inFlight` layers' reads queued at a time (flash keeps two: the next layer's and the one after).
/// A single sequential stream understates what this storage gives (a virtual disk here: ~1.5 GB/s for one stream,
/// more with several requests queued), and so does one layer's batch at a time once flash queues two, so a bound from
/// either alone would let flash report more than 100% of it.
extension DirectReader {
    /// Bytes per second reading the first `bytes` of `path` in batches of `batchBytes` (a layer's bundles), each
    /// split into reads of `readBytes` handed to `threads` reader threads, with `inFlight` batches queued: each
    /// batch waited for is replaced by the next.
    public static func parallelThroughput(path: String, bytes: Int, readBytes: Int, batchBytes: Int, threads: Int,
                                          inFlight: Int = 2) throws(PagingError) -> (bytesPerSecond: Double, direct: Bool) {
        let align = FlashLayout.ioAlignment
        let read = max(align, readBytes / align * align)
        let perBatch = max(1, batchBytes / read)
        let batchSpan = read * perBatch
        let total = bytes / batchSpan * batchSpan
        guard total > 0 else { return (0, true) }
        let depth = max(1, min(inFlight, total / batchSpan))
        let reader = try DirectReader(path: path, threads: threads)
        defer { reader.shutdown() }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: batchSpan * depth, alignment: align)
        defer { buffer.deallocate() }
        let batches = (0..<depth).map { _ in ReadBatch(maxSegments: perBatch) }
        var offset = 0
        func submit(_ slot: Int) {
            let batch = batches[slot], into = buffer + slot * batchSpan
            batch.reset()
            // maxRead = one read: adjacent reads stay separate requests, as flash's groups do.
            for k in 0..<perBatch { batch.add(offset: offset + k * read, length: read, into: into + k * read, maxRead: read) }
            reader.submit(batch)
            offset += batchSpan
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        for slot in 0..<depth { submit(slot) }
        var waited = 0, slot = 0
        var failure: PagingError?
        while waited < total / batchSpan {
            do throws(PagingError) { try batches[slot].wait() } catch { failure = failure ?? error }
            waited += 1
            if failure == nil && offset < total { submit(slot) }
            slot = (slot + 1) % depth
        }
        if let failure { throw failure }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return (Double(total) / max(seconds, 1e-9), reader.direct)
    }
}

extension PagedFeedForward {
    /// The size of flash's per-token reads for `layout`: a group on its own when it is at least `maxRead`, else
    /// runs of adjacent groups joined up to `maxRead` (what `ReadBatch.add` makes of a layer's missing groups).
    public static func readBytes(layout: FlashLayout) -> Int {
        layout.bundleBytes >= maxRead ? layout.bundleBytes : max(1, maxRead / layout.bundleBytes) * layout.bundleBytes
    }
}
