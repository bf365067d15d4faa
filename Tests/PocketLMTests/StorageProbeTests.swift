import Foundation
import Testing
import PocketLM

/// bench-flash's storage reference: reads over the layers' bundle tensors (what flash reads), a layer a batch, in
/// the patterns flash uses and deeper ones; bad ranges are errors naming the problem.
@Suite("Storage probe", .serialized)
struct StorageProbeTests {
    @Test("the probe reads the bundle tensors whole, round after round until the bytes asked for, in every reference pattern")
    func readsBundles() throws {
        let path = try FlashPagingTests.packed("tiny-q8_0.gguf")
        let file = try GGUFFile(path: path)
        let config = try ModelConfig(gguf: file)
        let layout = try #require(try FlashLayout(file: file, config: config))
        let ranges = PagedFeedForward.bundleRanges(file: file, layers: config.numHiddenLayers)
        #expect(ranges.count == config.numHiddenLayers)
        for (l, r) in ranges.enumerated() {
            let info = try #require(file.tensorInfo(FlashLayout.bundlesName(l)))
            #expect(r.offset == info.fileOffset && r.length == layout.layerBytes)
        }
        let total = ranges.reduce(0) { $0 + $1.length }
        let patterns = DirectReader.referencePatterns(readBytes: 3 * 4096, threads: 2)
        #expect(patterns.contains(DirectReader.ReadPattern(readBytes: 3 * 4096, threads: 2, inFlight: 2)))
        #expect(Set(patterns.map(\.inFlight)).count > 1 && patterns.contains { $0.threads > 2 })
        for p in patterns {
            // Less than one round still reads every layer once; more reads whole rounds.
            let once = try DirectReader.parallelThroughput(path: path, layers: ranges, bytes: 1, pattern: p)
            #expect(once.bytesRead == total && once.bytesPerSecond > 0)
            let thrice = try DirectReader.parallelThroughput(path: path, layers: ranges, bytes: 2 * total + 1, pattern: p)
            #expect(thrice.bytesRead == 3 * total && thrice.bytesPerSecond > 0)
        }
    }

    @Test("a reader's busy time covers its reads: none before any, within the wall time around them, unchanged while idle")
    func busyTime() throws {
        let path = try FlashPagingTests.packed("tiny-q8_0.gguf")
        let file = try GGUFFile(path: path)
        let config = try ModelConfig(gguf: file)
        let ranges = PagedFeedForward.bundleRanges(file: file, layers: config.numHiddenLayers)
        let reader = try DirectReader(path: path, threads: 2)
        defer { reader.shutdown() }
        #expect(reader.busySeconds == 0)
        let bytes = ranges.map(\.length).max()!
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: FlashLayout.ioAlignment)
        defer { buffer.deallocate() }
        let batch = ReadBatch(maxSegments: bytes / 4096)
        var wall = 0.0
        for r in ranges {
            batch.reset()
            for k in stride(from: 0, to: r.length, by: 4096) {
                batch.add(offset: r.offset + k, length: min(4096, r.length - k), into: buffer + k, maxRead: 4096)
            }
            let t0 = DispatchTime.now().uptimeNanoseconds
            reader.submit(batch)
            try batch.wait()
            wall += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        }
        // A batch's wait returns once its last read is counted finished, so every busy span lies inside one wait.
        let busy = reader.busySeconds
        #expect(busy > 0 && busy <= wall)
        usleep(20_000)
        #expect(reader.busySeconds == busy)
        // An empty batch is no work.
        batch.reset()
        reader.submit(batch)
        try batch.wait()
        #expect(reader.busySeconds == busy)
    }

    @Test("a probed range off the 4 KiB grid or past the end of the file is an error naming the problem")
    func badRanges() throws {
        let path = try FlashPagingTests.packed("tiny-q8_0.gguf")
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        let pattern = DirectReader.ReadPattern(readBytes: 8192, threads: 2, inFlight: 2)
        #expect {
            _ = try DirectReader.parallelThroughput(path: path, layers: [(offset: 100, length: 8192)], bytes: 1, pattern: pattern)
        } throws: { error in
            guard case PagingError.invalidOption(let message) = error else { return false }
            return message.contains("4096-byte boundaries") && message.contains("offset 100")
        }
        let end = (size + 4095) / 4096 * 4096
        #expect {
            _ = try DirectReader.parallelThroughput(path: path, layers: [(offset: end, length: 8192)], bytes: 1, pattern: pattern)
        } throws: { error in
            guard case PagingError.shortRead(let p, _, _, _) = error else { return false }
            return p == path
        }
    }
}
