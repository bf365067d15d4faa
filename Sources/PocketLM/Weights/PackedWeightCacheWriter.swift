import CKernels
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file's first load: packs every matrix straight into a new `PackedWeightCache` file, through a small staging
/// buffer per thread, and hands out pointers into that file's mapping, so the packed weights the model runs on are
/// the cache's own pages.
///
/// Why not pack into fresh memory and write that out afterwards (as a load that must not write a cache does): the
/// kernel clears every fresh anonymous page before the packing writes it, and the write then copies every byte
/// again into the page cache on one thread — for Gemma 3 270M's 250 MB, ~40% of the first load's cycles went to
/// those two (perf, AMD EPYC, 2026-12-06). Here each thread packs a slice into its staging buffer (the same few
/// hundred KiB each time, so it stays in cache and is cleared once) and pwrites it: page-cache pages that a write
/// fills whole are not cleared, and both threads copy at once. pwrite, not stores into a writable mapping: a full
/// disk is then an error the load recovers from (the matrix is packed in memory instead), not a SIGBUS.
///
/// The layout covers every matrix the store packs, all packed up front (`packAll`); the header written at the end
/// lists those written whole (after a failed write, the others stay holes of the sparse file). The file is written under a temporary name and
/// renamed when the model has accepted the file, so a reader never sees half a cache, and a refused file leaves none.
final class PackedWeightCacheWriter {
    private let source: String
    private let directory: URL
    private let identity: [String]
    private let path: String
    private let temporary: String
    private let fd: Int32
    private let base: UnsafeMutableRawPointer
    private let size: Int
    private let layout: [String: PackedWeightCache.Entry]
    private var written: [String: PackedWeightCache.Entry] = [:]
    private var finished = false
    /// Why the cache could not be written, once a write failed.
    private(set) var failure: String?
    /// Per-thread staging buffers (`stagingBytes` each, at least one group of 16 rows of any matrix), allocated
    /// with the writer.
    private let staging: [UnsafeMutableRawPointer]
    private let stagingBytes: Int

    /// A writer for `source`'s cache in `directory` laying out `matrices` (name, packed bytes, bytes of one group of
    /// 16 rows), or nil when the directory or file cannot be made (the load then packs into memory as without a cache).
    init?(source: String, directory: URL, matrices: [(name: String, bytes: Int, groupBytes: Int)], threads: Int) {
        guard let identity = PackedWeightCache.identity(of: source),
              (try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)) != nil,
              let plan = PackedWeightCache.layout(source: source, identity: identity,
                                                  matrices: matrices.map { ($0.name, $0.bytes) })
        else { return nil }
        let path = PackedWeightCache.cachePath(for: source, in: directory)
        let temporary = path + ".\(getpid()).tmp"
        let fd = open(temporary, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { return nil }
        guard ftruncate(fd, off_t(plan.total)) == 0,
              let p = mmap(nil, plan.total, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED
        else {
            close(fd)
            unlink(temporary)
            return nil
        }
        self.source = source
        self.directory = directory
        self.identity = identity
        self.path = path
        self.temporary = temporary
        self.fd = fd
        self.base = p
        self.size = plan.total
        self.layout = plan.entries
        let stagingBytes = max(512 << 10, matrices.map(\.groupBytes).max() ?? 0)
        self.stagingBytes = stagingBytes
        self.staging = (0..<max(1, threads)).map { _ in
            var s: UnsafeMutableRawPointer?
            guard posix_memalign(&s, 4096, stagingBytes) == 0, let s else { fatalError("out of memory: staging") }
            return s
        }
    }

    deinit {
        for s in staging { free(s) }
        // The mapping stays valid for the model after the rename; it goes with the store.
        munmap(base, size)
        close(fd)
        if !finished { unlink(temporary) }
    }

    /// One matrix to pack: its tensor, its bytes in the source file's mapping, its source row stride.
    struct Source {
        let info: GGUFTensorInfo
        let data: UnsafeRawPointer
        let rowBytes: Int
    }

    /// Packs all of `matrices` into the file at once, on every thread; `packedBytes(of:)` then gives each one now in
    /// it (all of them unless a write failed: the caller packs the rest in memory; no cache is kept then).
    /// `slice` is called with each matrix's ranges of row groups once packed (to drop the source's pages), from
    /// whichever thread finished them.
    ///
    /// Why all at once, not as the model asks for each: most matrices are a few hundred KiB, one staging buffer's
    /// worth, so packing them one by one ran on one thread (SmolLM2's 30 blocks of 0.1–0.6 MB matrices, two thirds
    /// of its packed bytes). Here the threads take the next staging buffer's worth of groups of any matrix, in file
    /// order, until none is left.
    func packAll(_ matrices: [Source], packed slice: @escaping @Sendable (GGUFTensorInfo, Range<Int>) -> Void) {
        guard !finished else { return }
        var chunks: [PackChunk] = []
        var slices: [(matrix: Int, groups: Range<Int>, chunks: Int)] = []
        var accepted: [(source: Source, entry: PackedWeightCache.Entry, groupBytes: Int)] = []
        var slicesPerMatrix: [Int] = []
        for m in matrices.sorted(by: { $0.info.fileOffset < $1.info.fileOffset }) {
            guard let entry = layout[m.info.name] else { continue }
            let groups = (m.info.rows + 15) / 16
            let groupBytes = pl_packed_bytes(Int32(m.info.type.rawValue), 16, Int64(m.info.columns))
            guard entry.bytes == groups * groupBytes, groupBytes <= stagingBytes else { continue }
            let perStage = stagingBytes / groupBytes
            // ~`packSliceBytes` of source rows per slice, so the source's pages can leave memory as the packing goes.
            let sliceGroups = max(perStage, packSliceBytes / (16 * m.rowBytes) / perStage * perStage)
            let matrix = accepted.count
            accepted.append((m, entry, groupBytes))
            let firstSlice = slices.count
            for s0 in stride(from: 0, to: groups, by: sliceGroups) {
                let s1 = min(groups, s0 + sliceGroups)
                for c0 in stride(from: s0, to: s1, by: perStage) {
                    chunks.append(PackChunk(matrix: matrix, slice: slices.count, groups: c0..<min(s1, c0 + perStage)))
                }
                slices.append((matrix, s0..<s1, (s1 - s0 + perStage - 1) / perStage))
            }
            slicesPerMatrix.append(slices.count - firstSlice)
        }
        guard !accepted.isEmpty else { return }
        let progress = PackProgress(slices: slices.map(\.chunks), matrices: slicesPerMatrix)
        let fd = self.fd, temporary = self.temporary, base = UInt(bitPattern: base)
        let stages = staging.map { UInt(bitPattern: $0) }
        // Unchecked: the closure reads `chunks` and the matrices' addresses only; each chunk writes its own bytes.
        let plan = UncheckedBox((chunks: chunks, slices: slices, accepted: accepted))
        DispatchQueue.concurrentPerform(iterations: min(stages.count, chunks.count)) { thread in
            let (chunks, slices, accepted) = plan.value
            let stage = stages[thread]
            while let i = progress.next(of: chunks.count) {
                let chunk = chunks[i]
                let (m, entry, groupBytes) = accepted[chunk.matrix]
                let g = chunk.groups
                // pl_pack_rows writes group g at dst + g·groupBytes: aim dst so group g lands at the stage's start.
                let dst = UnsafeMutableRawPointer(bitPattern: stage &- UInt(g.lowerBound * groupBytes))
                pl_pack_rows(Int32(m.info.type.rawValue), m.data, m.rowBytes, Int64(m.info.rows), Int64(m.info.columns),
                             dst, Int64(g.lowerBound), Int64(g.upperBound))
                let bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: stage), count: g.count * groupBytes)
                let why = PackedWeightCache.writeAll(fd, bytes, at: entry.offset + g.lowerBound * groupBytes, path: temporary)
                switch progress.finish(chunk, failure: why) {
                case .pending: break
                case .slice:
                    slice(m.info, slices[chunk.slice].groups)
                case .matrix:
                    slice(m.info, slices[chunk.slice].groups)
                    // The pages just written are in the page cache: this maps them in one call, not a fault per page.
                    PackedWeightCache.populate(UnsafeRawPointer(bitPattern: base + UInt(entry.offset))!, bytes: entry.bytes)
                }
            }
        }
        if let why = progress.failure {
            failure = why
            abandon()
        }
        for (i, a) in accepted.enumerated() where progress.matrixDone(i) { written[a.source.info.name] = a.entry }
    }

    /// The packed bytes of `name` in the mapping (a matrix `packAll` wrote).
    func packedBytes(of name: String) -> UnsafeRawPointer? {
        written[name].map { UnsafeRawPointer(base + $0.offset) }
    }

    /// Writes the header listing the packed matrices and gives the file its final name. The error, or nil.
    func finish() -> String? {
        guard !finished else { return nil }
        finished = true
        guard let head = PackedWeightCache.head(source: source, identity: identity, tensors: written),
              head.count <= (written.values.map(\.offset).min() ?? size)
        else {
            unlink(temporary)
            return "cannot encode the cache header"
        }
        if let failure = PackedWeightCache.writeAll(fd, head, at: 0, path: temporary) {
            unlink(temporary)
            return failure
        }
        guard rename(temporary, path) == 0 else {
            let failure = "cannot rename \(temporary): \(String(cString: strerror(errno)))"
            unlink(temporary)
            return failure
        }
        PackedWeightCache.pruneStale(in: directory, keeping: path)
        return nil
    }

    /// Gives up on the cache: the temporary file goes (matrices already handed out keep their mapped pages).
    func abandon() {
        guard !finished else { return }
        finished = true
        unlink(temporary)
    }
}

/// A staging buffer's worth of one matrix's row groups, in one slice of it.
private struct PackChunk {
    let matrix: Int
    let slice: Int
    let groups: Range<Int>
}

/// Hands out chunks to the packing threads and counts what is finished: a slice once all its chunks are written, a
/// matrix once all its slices are. After the first failed write no more chunks are handed out.
private final class PackProgress: @unchecked Sendable {
    enum Finished { case pending, slice, matrix }

    private let lock = NSLock()
    private var nextChunk = 0
    private var slicesLeft: [Int]
    private var matricesLeft: [Int]
    private(set) var failure: String?

    init(slices: [Int], matrices: [Int]) {
        slicesLeft = slices
        matricesLeft = matrices
    }

    func next(of count: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard failure == nil, nextChunk < count else { return nil }
        nextChunk += 1
        return nextChunk - 1
    }

    func finish(_ chunk: PackChunk, failure why: String?) -> Finished {
        lock.lock()
        defer { lock.unlock() }
        if let why {
            if failure == nil { failure = why }
            return .pending
        }
        slicesLeft[chunk.slice] -= 1
        guard slicesLeft[chunk.slice] == 0 else { return .pending }
        matricesLeft[chunk.matrix] -= 1
        return matricesLeft[chunk.matrix] == 0 ? .matrix : .slice
    }

    func matrixDone(_ matrix: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return matricesLeft[matrix] == 0
    }
}

/// Lets a value the threads only read cross into a concurrent closure.
private struct UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
