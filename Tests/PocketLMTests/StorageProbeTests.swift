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
