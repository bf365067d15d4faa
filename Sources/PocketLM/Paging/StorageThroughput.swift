import Foundation

/// The storage reference a paged run is held against, measured the way flash reads: `threads` readers, reads of the
/// size flash issues, one layer's reads in flight at a time. A single sequential stream understates what this
/// storage gives (a virtual disk here: ~1.5 GB/s for one stream, more with several requests queued), so a bound
/// from it alone would let flash report more than 100% of it.
extension DirectReader {
    /// Bytes per second reading the first `bytes` of `path` in batches of `batchBytes` (a layer's bundles), each
    /// split into reads of `readBytes` handed to `threads` reader threads, waiting for each batch before the next.
    public static func parallelThroughput(path: String, bytes: Int, readBytes: Int, batchBytes: Int,
                                          threads: Int) throws(PagingError) -> (bytesPerSecond: Double, direct: Bool) {
        let align = FlashLayout.ioAlignment
        let read = max(align, readBytes / align * align)
        let perBatch = max(1, batchBytes / read)
        let total = bytes / (read * perBatch) * (read * perBatch)
        guard total > 0 else { return (0, true) }
        let reader = try DirectReader(path: path, threads: threads)
        defer { reader.shutdown() }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: read * perBatch, alignment: align)
        defer { buffer.deallocate() }
        let batch = ReadBatch(maxSegments: perBatch)
        let t0 = DispatchTime.now().uptimeNanoseconds
        var offset = 0
        while offset < total {
            batch.reset()
            // maxRead = one read: adjacent reads stay separate requests, as flash's groups do.
            for k in 0..<perBatch { batch.add(offset: offset + k * read, length: read, into: buffer + k * read, maxRead: read) }
            reader.submit(batch)
            try batch.wait()
            offset += read * perBatch
        }
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
