import CKernels
import CPlatform
import Foundation
import Testing
import PocketLM
#if canImport(Glibc)
import Glibc
#endif

/// A run under a memory budget leaves in the page cache only the file pages it uses in place: page cache counts
/// against a memory limit, and pages nobody drops make a run inside one hit its limit.
@Suite("Page cache under a budget")
struct PageCacheTests {
    /// Bytes of `path` in the page cache (mincore over a mapping of the whole file).
    static func cachedBytes(_ path: String) throws -> Int {
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        var st = stat()
        try #require(fstat(fd, &st) == 0)
        let size = Int(st.st_size), page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let p = try #require(mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0))
        try #require(p != MAP_FAILED)
        defer { munmap(p, size) }
        var vec = [UInt8](repeating: 0, count: (size + page - 1) / page)
        try #require(mincore(p, size, &vec) == 0)
        return vec.reduce(0) { $0 + Int($1 & 1) } * page
    }

    @Test("a budgeted load and decode leave only the tensors used in place in the page cache (no read-around, packed sources dropped)")
    func onlyInPlaceTensorsStayCached() throws {
        // A private copy, so no other test's reads of the same file count here.
        let source = try TestPaths.model("SmolLM2-135M-Instruct.Q4_K_M.gguf")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pocketlm-pagecache-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("packed.gguf").path
        _ = try FlashPacker.pack(source: source, output: path)
        // Tensors the store does not repack on this tier stay mapped and resident: those pages may stay cached.
        // (Read here, before the pages are dropped: parsing the header reads it.)
        let (inPlace, tensorCount) = try {
            let file = try GGUFFile(path: path)
            let bytes = file.tensors.filter { t in
                !t.name.hasSuffix("ffn_bundles") && !(t.rows > 1 && pl_packed_type_supported(Int32(t.type.rawValue)) != 0)
            }.reduce(0) { $0 + $1.byteCount }
            return (bytes, file.tensors.count)
        }()
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        fsync(fd)
        _ = pl_drop_cached(fd, 0, 0)
        close(fd)
        let before = try Self.cachedBytes(path)
        try #require(before == 0, "the packed file's pages could not be dropped before the run (\(before) bytes cached): the check would mean nothing")

        let lm = try LanguageModel(path: path, options: LoadOptions(threads: 2, contextLength: 64,
                                                                    paging: PagingOptions(mode: .flash, memoryBudget: 1 << 40)))
        let prompt: [Int] = [1, 504, 3458, 282, 4649, 314, 1345, 30]
        _ = try prompt.withUnsafeBufferPointer { try lm.transformer.forward($0) }
        for t in prompt.prefix(3) { _ = try lm.transformer.decode(t) }
        // The last step's embedding rows (one row on up to two pages each, dropped at the next step) and each
        // in-place tensor's partial first and last pages.
        let slack = 2 * 4096 + 2 * 4096 * tensorCount
        let cached = try Self.cachedBytes(path)
        #expect(cached <= inPlace + slack,
                "\(cached >> 10) KiB of the file cached after a budgeted run; tensors used in place: \(inPlace >> 10) KiB (+\(slack >> 10) KiB slack)")
        withExtendedLifetime(lm) {}
    }

    @Test("a range advised as needed is read whole, past the kernel's one-call readahead cap (a map without read-around)")
    func willNeedReadsTheWholeRange() throws {
        // 24 MiB: three times the 8 MiB one MADV_WILLNEED read on the test machine's kernel before it was split.
        let bytes = 24 << 20, page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pocketlm-willneed-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("range.bin").path
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        for i in chunk.indices { chunk[i] = UInt8(truncatingIfNeeded: i &* 31 &+ 7) }
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        try #require(fd >= 0)
        for _ in 0..<(bytes + 2 * page) / chunk.count + 1 { try #require(write(fd, chunk, chunk.count) == chunk.count) }
        fsync(fd)
        _ = pl_drop_cached(fd, 0, 0)
        close(fd)
        let before = try Self.cachedBytes(path)
        try #require(before == 0, "the file's pages could not be dropped (\(before) bytes cached): the check would mean nothing")

        let map = try MappedFile(path: path)
        map.adviseRandom(offset: 0, length: map.size)
        map.adviseWillNeed(offset: page, length: bytes)
        // The reads are asynchronous: wait for them (a range cut short stays short, however long this waits).
        var cached = 0
        for _ in 0..<400 {
            cached = try Self.cachedBytes(path)
            if cached >= bytes { break }
            usleep(50_000)
        }
        #expect(cached >= bytes && cached <= bytes + 2 * page,
                "\(cached >> 10) KiB of the file cached after advising \(bytes >> 10) KiB of it as needed")
        withExtendedLifetime(map) {}
    }
}
