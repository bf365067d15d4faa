import CKernels
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file's first load: packs each matrix straight into a new `PackedWeightCache` file, through a small staging
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
/// The layout covers every matrix the store may pack; the header written at the end lists those it did (a matrix
/// the model never asked for stays a hole of the sparse file). The file is written under a temporary name and
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

    /// Packs `info`'s matrix (`data`, rows `rowBytes` apart) into the file and returns its packed bytes in the
    /// mapping; `slice` is called with each range of row groups once packed (to drop the source's pages). nil when
    /// the matrix is not in the layout or a write failed (the caller packs it in memory; no cache is kept).
    func pack(_ info: GGUFTensorInfo, data: UnsafeRawPointer, rowBytes: Int,
              packed slice: (_ groups: Range<Int>) -> Void) -> UnsafeRawPointer? {
        guard !finished, let entry = layout[info.name] else { return nil }
        let t = Int32(info.type.rawValue)
        let groups = (info.rows + 15) / 16
        let groupBytes = pl_packed_bytes(t, 16, Int64(info.columns))
        guard entry.bytes == groups * groupBytes, groupBytes <= stagingBytes else { return nil }
        let perStage = stagingBytes / groupBytes
        // ~`packSliceBytes` of source rows at a time, so the source's pages can leave memory as the packing goes.
        let chunk = max(perStage, packSliceBytes / (16 * rowBytes) / perStage * perStage)
        let src = UInt(bitPattern: data), fd = self.fd, temporary = self.temporary
        let stages = staging.map { UInt(bitPattern: $0) }
        let reasons = FirstFailure()
        for c0 in stride(from: 0, to: groups, by: chunk) {
            let c1 = min(groups, c0 + chunk)
            let parts = min(stages.count, max(1, (c1 - c0) / perStage))
            // Each part packs its own run of groups, a staging buffer at a time, and writes it in place.
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                let g0 = c0 + (c1 - c0) * part / parts, g1 = c0 + (c1 - c0) * (part + 1) / parts
                let stage = stages[part]
                var g = g0
                while g < g1 {
                    let e = min(g1, g + perStage)
                    // pl_pack_rows writes group g at dst + g·groupBytes: aim dst so group g lands at the stage's start.
                    let dst = UnsafeMutableRawPointer(bitPattern: stage &- UInt(g * groupBytes))
                    pl_pack_rows(t, UnsafeRawPointer(bitPattern: src), rowBytes, Int64(info.rows), Int64(info.columns),
                                 dst, Int64(g), Int64(e))
                    let bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: stage), count: (e - g) * groupBytes)
                    if let why = PackedWeightCache.writeAll(fd, bytes, at: entry.offset + g * groupBytes, path: temporary) {
                        reasons.set(why)
                        return
                    }
                    g = e
                }
            }
            if let why = reasons.value {
                failure = why
                abandon()
                return nil
            }
            slice(c0..<c1)
        }
        written[info.name] = entry
        let p = base + entry.offset
        // The pages just written are in the page cache: this maps them in one call instead of a fault per page.
        PackedWeightCache.populate(p, bytes: entry.bytes)
        return UnsafeRawPointer(p)
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

/// The first of the reasons several threads may report.
private final class FirstFailure: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var value: String?

    func set(_ reason: String) {
        lock.lock()
        defer { lock.unlock() }
        if value == nil { value = reason }
    }
}
