import CKernels
import Foundation
import Testing
import PocketLM

/// The packed-weight cache: a second load maps what the first packed and computes the same logits bit for bit; a
/// changed source, a damaged cache or one made by other packing code is not used; stale caches are deleted.
@Suite("Packed weight cache", .serialized)
struct PackedWeightCacheTests {
    /// A fresh directory holding a copy of `fixture` (its own inode and mtime) and an empty cache directory.
    static func workspace(_ fixture: String) throws -> (model: String, cache: URL) {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("pocketlm-packcache-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let model = dir.appendingPathComponent(fixture).path
        try FileManager.default.copyItem(atPath: try TestPaths.fixture(fixture), toPath: model)
        return (model, dir.appendingPathComponent("packed"))
    }

    static func cacheFiles(_ dir: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.hasSuffix(".plpack") }.sorted()
    }

    /// Logits of a few tokens decoded one at a time, then as one batch, from a transformer over `store`.
    static func logits(_ store: MappedWeightStore) throws -> [UInt32] {
        let config = try ModelConfig(gguf: store.file)
        let t = try Transformer(store: store, config: config, contextLength: 32, threads: 2)
        let tokens = [1, 270, 340, 285, 223, 40]
        var out: [UInt32] = []
        for token in tokens { out += Array(try t.decode(token)).map(\.bitPattern) }
        t.reset()
        out += Array(try tokens.withUnsafeBufferPointer { try t.forward($0, allLogits: true) }).map(\.bitPattern)
        return out
    }

    static var packs: Bool { pl_packed_supported() != 0 }

    @Test("a second load maps the packed matrices the first wrote, with logits bit for bit those of repacking")
    func roundTrip() throws {
        let (model, cache) = try Self.workspace("tiny-q8_0.gguf")
        let reference = try Self.logits(MappedWeightStore(file: GGUFFile(path: model)))
        let first = MappedWeightStore(file: try GGUFFile(path: model), cacheDirectory: cache)
        #expect(try Self.logits(first) == reference)
        #expect(!first.packedFromCache)
        #expect(first.persistPacked(minimumBytes: 0) == nil)
        guard Self.packs else {
            // Without the packed kernel nothing is packed, so there is nothing to cache.
            print("packed kernel not supported on this CPU: the cache is never written (checked)")
            #expect(Self.cacheFiles(cache).isEmpty)
            return
        }
        #expect(Self.cacheFiles(cache).count == 1)
        // The path LoadOptions names for this model is the file written (bench-flash drops its pages before a
        // limited run); without a cache directory there is none.
        #expect(LoadOptions(packCacheDirectory: cache).packCachePath(for: model) == cache.appendingPathComponent(Self.cacheFiles(cache)[0]).path)
        #expect(LoadOptions(packCacheDirectory: nil).packCachePath(for: model) == nil)
        let second = MappedWeightStore(file: try GGUFFile(path: model), cacheDirectory: cache)
        #expect(try Self.logits(second) == reference)
        #expect(second.packedFromCache)
        // Nothing was packed by the second load, so there is nothing to write.
        let before = try FileManager.default.attributesOfItem(atPath: cache.appendingPathComponent(Self.cacheFiles(cache)[0]).path)
        #expect(second.persistPacked(minimumBytes: 0) == nil)
        let after = try FileManager.default.attributesOfItem(atPath: cache.appendingPathComponent(Self.cacheFiles(cache)[0]).path)
        #expect(before[.modificationDate] as? Date == after[.modificationDate] as? Date)
        // Below the minimum size no cache is written.
        let (small, smallCache) = try Self.workspace("tiny-q8_0.gguf")
        let store = MappedWeightStore(file: try GGUFFile(path: small), cacheDirectory: smallCache)
        _ = try Self.logits(store)
        #expect(store.persistPacked(minimumBytes: 1 << 30) == nil)
        #expect(Self.cacheFiles(smallCache).isEmpty)
    }

    @Test("a first load packs straight into the cache file, named only once the load is accepted", arguments: ["tiny-q8_0.gguf", "tiny-q4_1.gguf"])
    func packsIntoCacheFile(fixture: String) throws {
        guard Self.packs else {
            print("packed kernel not supported on this CPU: nothing is packed or cached (see roundTrip)")
            return
        }
        let (model, cache) = try Self.workspace(fixture)
        let reference = try Self.logits(MappedWeightStore(file: GGUFFile(path: model)))
        func entries() -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: cache.path)) ?? [] }

        // minimumCacheBytes 0: this small file takes the path a real model's first load takes.
        let first = MappedWeightStore(file: try GGUFFile(path: model), cacheDirectory: cache, minimumCacheBytes: 0)
        #expect(try Self.logits(first) == reference)
        #expect(!first.packedFromCache)
        // Being written: only the temporary file exists until the load is accepted.
        #expect(Self.cacheFiles(cache).isEmpty)
        #expect(entries().count == 1 && entries()[0].hasSuffix(".tmp"))
        #expect(first.persistPacked(minimumBytes: 0) == nil)
        #expect(Self.cacheFiles(cache).count == 1 && entries().count == 1)
        // The first store keeps computing from the renamed file's pages.
        #expect(try Self.logits(first) == reference)
        let second = MappedWeightStore(file: try GGUFFile(path: model), cacheDirectory: cache, minimumCacheBytes: 0)
        #expect(try Self.logits(second) == reference)
        #expect(second.packedFromCache)

        // A load that is never accepted (the model refused, the process gave up) leaves nothing behind.
        let (other, otherCache) = try Self.workspace(fixture)
        do {
            let store = MappedWeightStore(file: try GGUFFile(path: other), cacheDirectory: otherCache, minimumCacheBytes: 0)
            #expect(try Self.logits(store) == reference)
        }
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: otherCache.path)) ?? []).isEmpty)
        // Below the caller's minimum at the end, the file is dropped too.
        let small = MappedWeightStore(file: try GGUFFile(path: other), cacheDirectory: otherCache, minimumCacheBytes: 0)
        _ = try Self.logits(small)
        #expect(small.persistPacked(minimumBytes: 1 << 30) == nil)
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: otherCache.path)) ?? []).isEmpty)
    }

    /// Resident bytes of this process's mappings of the file at `path` (/proc/self/smaps; read to its end: procfs
    /// files report a size of 0). Other suites' caches, mapped in the same process, are not counted.
    static func residentBytes(of path: String) throws -> Int {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/smaps"))
        defer { try? handle.close() }
        let smaps = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        var inCache = false, total = 0
        for line in smaps.split(separator: "\n") {
            let address = line.prefix { $0 != " " }
            if address.contains("-") && !address.hasSuffix(":") {   // a mapping's header line: "start-end perms ... path"
                inCache = line.hasSuffix(" " + path)
            } else if inCache && line.hasPrefix("Rss:") {
                total += (Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0) * 1024
            }
        }
        return total
    }

    @Test("a cache's matrices a load does not take (another kernel tier's, a row-lookup tensor's) cost it no memory")
    func untakenMatricesStayOut() throws {
        #if os(Linux)
        guard Self.packs else {
            print("packed kernel not supported on this CPU: no cache is written, nothing to map (checked in roundTrip)")
            return
        }
        let (model, cache) = try Self.workspace("tiny-q8_0.gguf")
        let first = MappedWeightStore(file: try GGUFFile(path: model), cacheDirectory: cache)
        _ = try Self.logits(first)
        #expect(first.persistPacked(minimumBytes: 0) == nil)
        try #require(Self.cacheFiles(cache).count == 1)
        let cachePath = cache.appendingPathComponent(Self.cacheFiles(cache)[0]).path
        let cacheBytes = try FileManager.default.attributesOfItem(atPath: cachePath)[.size] as! Int
        // A load that takes every matrix from the cache has it resident: the measurement sees the mapping.
        do {
            let taking = MappedWeightStore(file: try GGUFFile(path: model), cacheDirectory: cache)
            _ = try Self.logits(taking)
            let whole = try withExtendedLifetime(taking) { try Self.residentBytes(of: cachePath) }
            #expect(taking.packedFromCache)
            #expect(whole > cacheBytes / 2, "a load taking every matrix has only \(whole) of \(cacheBytes) cache bytes resident")
        }
        // Every matrix read by rows instead: the cache is mapped (it matches the file) but none of it is taken, so
        // only its header's pages may be resident.
        let names = Set(try GGUFFile(path: model).tensors.filter { $0.rows > 1 }.map(\.name))
        let store = MappedWeightStore(file: try GGUFFile(path: model), cacheDirectory: cache, rowLookups: names)
        _ = try Self.logits(store)
        let untaken = try withExtendedLifetime(store) { try Self.residentBytes(of: cachePath) }
        #expect(untaken < cacheBytes / 2, "\(untaken) bytes of a \(cacheBytes)-byte cache resident, none of it taken")
        #endif
    }

    @Test("a changed source, a damaged cache or one made by other packing code is not used, and is replaced")
    func staleOrDamaged() throws {
        guard Self.packs else {
            print("packed kernel not supported on this CPU: nothing is packed or cached (see roundTrip)")
            return
        }
        let (model, cache) = try Self.workspace("tiny-q8_0.gguf")
        let reference = try Self.logits(MappedWeightStore(file: GGUFFile(path: model)))
        func load() throws -> MappedWeightStore {
            let store = MappedWeightStore(file: try GGUFFile(path: model), cacheDirectory: cache)
            #expect(try Self.logits(store) == reference)
            return store
        }
        #expect(try load().persistPacked(minimumBytes: 0) == nil)
        #expect(try load().packedFromCache)
        let cacheFile = cache.appendingPathComponent(Self.cacheFiles(cache)[0]).path

        // The source touched (same bytes, new modification time): not the file the cache was made from.
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: 10)], ofItemAtPath: model)
        var store = try load()
        #expect(!store.packedFromCache)
        #expect(store.persistPacked(minimumBytes: 0) == nil)
        #expect(try load().packedFromCache)

        // Another packed layout: the header's layout fingerprint differs (one hex digit changed).
        var bytes = try Data(contentsOf: URL(fileURLWithPath: cacheFile))
        let key = Data("\"layout\":\"".utf8)
        let at = try #require(bytes.range(of: key)).upperBound
        bytes[at] = bytes[at] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
        try bytes.write(to: URL(fileURLWithPath: cacheFile))
        store = try load()
        #expect(!store.packedFromCache)
        #expect(store.persistPacked(minimumBytes: 0) == nil)
        #expect(try load().packedFromCache)

        // Truncated (a full disk, a crash): its tensors lie past the end.
        let full = try Data(contentsOf: URL(fileURLWithPath: cacheFile))
        try full.prefix(full.count / 2).write(to: URL(fileURLWithPath: cacheFile))
        #expect(try !load().packedFromCache)
        // Not a cache at all.
        try Data("not a cache".utf8).write(to: URL(fileURLWithPath: cacheFile))
        #expect(try !load().packedFromCache)
    }

    @Test("a K-quant model's first load packs every matrix at once into the cache, bit for bit the in-memory repack")
    func realModelFirstLoad() throws {
        guard Self.packs else {
            print("packed kernel not supported on this CPU: nothing is packed or cached (see roundTrip)")
            return
        }
        // SmolLM2's Q4_K_M: 93 MB to pack (above the store's minimum, so the first load packs straight into the cache
        // file): a 30 MB Q8_0 embedding that spans several slices and many staging buffers, and 30 blocks of
        // Q5_0/Q8_0/Q4_K matrices of one staging buffer or less, all shared out between the threads at once.
        let model = try TestPaths.model("SmolLM2-135M-Instruct.Q4_K_M.gguf")
        let cache = FileManager.default.temporaryDirectory
            .appendingPathComponent("pocketlm-packcache-\(getpid())-\(UUID().uuidString.prefix(8))/packed")
        defer { try? FileManager.default.removeItem(at: cache.deletingLastPathComponent()) }
        let reference = try Self.logits(MappedWeightStore(file: GGUFFile(path: model)))
        #expect(Set(reference).count > 1000, "the logits vary")
        func load() throws -> MappedWeightStore {
            let store = MappedWeightStore(file: try GGUFFile(path: model), cacheDirectory: cache)
            #expect(try Self.logits(store) == reference)
            return store
        }
        let first = try load()
        #expect(!first.packedFromCache)
        // Packed into the cache file itself (only its temporary name exists until the load is accepted).
        let written = (try? FileManager.default.contentsOfDirectory(atPath: cache.path)) ?? []
        #expect(written.count == 1 && written[0].hasSuffix(".tmp"), "\(written)")
        #expect(first.persistPacked() == nil)
        let files = Self.cacheFiles(cache)
        try #require(files.count == 1)
        let cacheFile = cache.appendingPathComponent(files[0]).path
        let cacheBytes = try FileManager.default.attributesOfItem(atPath: cacheFile)[.size] as! Int
        #expect(cacheBytes > 90_000_000, "every packable matrix is in the cache (\(cacheBytes) bytes)")
        #expect(try load().packedFromCache)

        // Cut short (a crash mid-write would leave only a temporary file; a damaged disk could do this): its matrices
        // lie past the end, so it is not used, the load repacks, and the rewritten cache is used again.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: cacheFile))
        try handle.truncate(atOffset: UInt64(cacheBytes / 2))
        try handle.close()
        let repacked = try load()
        #expect(!repacked.packedFromCache)
        #expect(repacked.persistPacked() == nil)
        #expect(try FileManager.default.attributesOfItem(atPath: cacheFile)[.size] as! Int == cacheBytes)
        #expect(try load().packedFromCache)
    }

    @Test("writing a cache deletes the caches whose source file is gone")
    func prunesStale() throws {
        guard Self.packs else {
            print("packed kernel not supported on this CPU: nothing is packed or cached (see roundTrip)")
            return
        }
        let (model, cache) = try Self.workspace("tiny-q8_0.gguf")
        let other = URL(fileURLWithPath: model).deletingLastPathComponent().appendingPathComponent("other.gguf").path
        try FileManager.default.copyItem(atPath: model, toPath: other)
        for path in [model, other] {
            let store = MappedWeightStore(file: try GGUFFile(path: path), cacheDirectory: cache)
            _ = try Self.logits(store)
            #expect(store.persistPacked(minimumBytes: 0) == nil)
        }
        #expect(Self.cacheFiles(cache).count == 2)
        try FileManager.default.removeItem(atPath: other)
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: 10)], ofItemAtPath: model)
        let store = MappedWeightStore(file: try GGUFFile(path: model), cacheDirectory: cache)
        _ = try Self.logits(store)
        #expect(store.persistPacked(minimumBytes: 0) == nil)
        let left = Self.cacheFiles(cache)
        #expect(left.count == 1 && left[0].hasPrefix("tiny-q8_0-"))
    }
}
