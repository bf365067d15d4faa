import Foundation

/// The storage reference a paged run is held against, measured the way flash reads: over the layers' bundle tensors
/// (the very bytes flash reads, in the cache state the virtual disk's host keeps for them), a layer's bundles a batch,
/// split into reads of flash's size, landing in a pre-touched arena as flash's do, with reader threads and layers
/// queued as flash keeps them and with more (the fastest is the storage's best for this pattern). The probe this
/// replaces read the file's first 256 MiB (embeddings and attention, read once at load) into fresh 4 KiB pages and
/// measured 1.2–1.7 GB/s while flash drew 2.0–2.5 GB/s from its bundles; one sequential stream is as low.
extension DirectReader {
    /// One way of reading a layer's bundles: reads of up to `readBytes`, `threads` reader threads, `inFlight` layers
    /// queued at a time (each waited for is replaced by the next).
    public struct ReadPattern: Sendable, Equatable {
        public var readBytes: Int
        public var threads: Int
        public var inFlight: Int
        public init(readBytes: Int, threads: Int, inFlight: Int) {
            self.readBytes = readBytes
            self.threads = threads
            self.inFlight = inFlight
        }
    }

    /// Bytes per second reading whole `layers` (file ranges: offsets and lengths multiples of
    /// `FlashLayout.ioAlignment`), one batch per layer, in order and round again until at least `bytes` are read
    /// (each layer once at least, all of them at most once more than the others), as `pattern` says.
    /// Returns the bytes read too.
    public static func parallelThroughput(path: String, layers: [(offset: Int, length: Int)], bytes: Int,
                                          pattern: ReadPattern) throws(PagingError)
        -> (bytesPerSecond: Double, bytesRead: Int, direct: Bool) {
        let align = FlashLayout.ioAlignment
        let layers = layers.filter { $0.length > 0 }
        guard !layers.isEmpty else { return (0, 0, true) }
        for l in layers where l.offset % align != 0 || l.length % align != 0 {
            throw .invalidOption("a probed range must start and end on \(align)-byte boundaries (offset \(l.offset), \(l.length) bytes)")
        }
        let read = max(align, pattern.readBytes / align * align)
        let span = layers.map(\.length).max()!
        let perLayer = (span + read - 1) / read
        let total = layers.reduce(0) { $0 + $1.length }
        let batchCount = max(layers.count, (bytes + total - 1) / total * layers.count)
        let depth = max(1, min(pattern.inFlight, batchCount))
        let reader = try DirectReader(path: path, threads: pattern.threads)
        defer { reader.shutdown() }
        // Where flash's reads land: an arena open to huge pages, touched before the clock starts.
        guard let arena = ReadArena(bytes: span * depth) else { return (0, 0, true) }
        arena.base.initializeMemory(as: UInt8.self, repeating: 0, count: span * depth)
        let batches = (0..<depth).map { _ in ReadBatch(maxSegments: perLayer) }
        var submitted = 0, bytesRead = 0
        func submit(_ slot: Int) {
            let batch = batches[slot], into = arena.base + slot * span, layer = layers[submitted % layers.count]
            batch.reset()
            var done = 0
            // maxRead = one read: adjacent reads stay separate requests, as flash's are.
            while done < layer.length {
                let n = min(read, layer.length - done)
                batch.add(offset: layer.offset + done, length: n, into: into + done, maxRead: n)
                done += n
            }
            reader.submit(batch)
            bytesRead += layer.length
            submitted += 1
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        for slot in 0..<depth { submit(slot) }
        var waited = 0, slot = 0
        var failure: PagingError?
        while waited < submitted {
            do throws(PagingError) { try batches[slot].wait() } catch { failure = failure ?? error }
            waited += 1
            if failure == nil && submitted < batchCount { submit(slot) }
            slot = (slot + 1) % depth
        }
        if let failure { throw failure }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return (Double(bytesRead) / max(seconds, 1e-9), bytesRead, reader.direct)
    }

    /// The patterns the storage reference tries for a paged run: flash's own (its read size, `threads` readers, the
    /// two layers it keeps queued), deeper queues, and twice the readers; the fastest is the storage's best for reads
    /// of this size. (Bench figures of the test machine: a fourth queued layer or twice the readers gave 0–10% more.)
    public static func referencePatterns(readBytes: Int, threads: Int) -> [ReadPattern] {
        [ReadPattern(readBytes: readBytes, threads: threads, inFlight: 2),
         ReadPattern(readBytes: readBytes, threads: threads, inFlight: 4),
         ReadPattern(readBytes: readBytes, threads: 2 * threads, inFlight: 4)]
    }
}

extension PagedFeedForward {
    /// The size of flash's per-token reads for `layout`: a group on its own when it is at least `maxRead`, else
    /// runs of adjacent groups joined up to `maxRead` (what `ReadBatch.add` makes of a layer's missing groups).
    public static func readBytes(layout: FlashLayout) -> Int {
        layout.bundleBytes >= maxRead ? layout.bundleBytes : max(1, maxRead / layout.bundleBytes) * layout.bundleBytes
    }

    /// The file ranges of a packed model's bundle tensors, one per layer: what flash reads from.
    public static func bundleRanges(file: GGUFFile, layers: Int) -> [(offset: Int, length: Int)] {
        (0..<layers).compactMap { l in file.tensorInfo(FlashLayout.bundlesName(l)).map { ($0.fileOffset, $0.byteCount) } }
    }
}
