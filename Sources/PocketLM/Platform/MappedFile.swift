import CPlatform
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory map of a whole file.
///
/// Weights are used in place from the map (no copy, no dequantize-at-load): the OS pages them in on first
/// touch and shares them between processes, which is what makes loading fast and keeps RSS honest.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: Int
    public let base: UnsafeRawPointer
    /// Kept open to drop ranges from the page cache (`evict`).
    private let fd: Int32

    public init(path: String) throws(GGUFError) {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw .fileNotFound(path) }
            throw .io(path: path, message: String(cString: strerror(code)))
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else { close(fd); throw .io(path: path, message: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { close(fd); throw .io(path: path, message: "not a regular file") }
        let size = Int(st.st_size)
        guard size > 0 else { close(fd); throw .notGGUF(path: path, reason: "the file is empty") }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            close(fd)
            throw .io(path: path, message: "mmap failed: \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        self.size = size
        self.base = UnsafeRawPointer(p)
    }

    /// Starts reading [offset, offset+length) (whole pages covering it) into the page cache in large requests, and
    /// nothing outside it: with `adviseRandom` on the map, faults there then read no neighbours.
    ///
    /// One advice per `willNeedChunkBytes`: Linux reads only the start of a longer range (its readahead caps one
    /// call's reads: 8 MiB on the 6.18 kernel of the test machine, max(read-ahead, largest request) — 128 KiB to a
    /// few MiB — on older ones) and silently drops the rest, which then came in a 4 KiB fault at a time: a budgeted
    /// AVX2 run of SmolLM2 Q8_0 from a cold file took 5,700 faults and 360 ms to its first token, 70 ms after this.
    public func adviseWillNeed(offset: Int, length: Int) {
        var start = offset
        let end = offset + length
        while start < end {
            let next = min(end, start + Self.willNeedChunkBytes)
            advise(Int32(MADV_WILLNEED), offset: start, length: next - start)
            start = next
        }
    }

    /// The largest range one `MADV_WILLNEED` is given (within every kernel's one-call readahead cap seen).
    static let willNeedChunkBytes = 1 << 20

    /// Tells the kernel that [offset, offset+length) is read a row here and there: a page fault there reads that page
    /// alone, not the read-around window (up to read_ahead_kb — 8 MiB on some disks — of page cache per fault).
    public func adviseRandom(offset: Int, length: Int) { advise(Int32(MADV_RANDOM), offset: offset, length: length) }

    /// Undoes `adviseRandom` on [offset, offset+length): faults there read around them again (the mmap paging mode
    /// streams its layers through faults, and one page per fault would make it crawl).
    public func adviseNormal(offset: Int, length: Int) { advise(Int32(MADV_NORMAL), offset: offset, length: length) }

    /// madvise over the whole pages covering [offset, offset+length).
    private func advise(_ advice: Int32, offset: Int, length: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        let end = min(size, (offset + length + page - 1) / page * page)
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base) + start, end - start, advice)
    }

    /// Drops the map's pages in [offset, offset+length) from this process's memory (whole pages inside the
    /// range only); a later access reads them again from the file. Used once a tensor has been repacked.
    /// `evict` also drops them from the page cache (where no other process maps them), so a run inside a memory
    /// limit is not charged for file pages it no longer uses: page cache counts against a cgroup's limit.
    public func adviseDontNeed(offset: Int, length: Int, evict: Bool = false) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (offset + page - 1) / page * page
        let end = (offset + length) / page * page
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base) + start, end - start, Int32(MADV_DONTNEED))
        // Unmapped first: the page cache keeps pages a mapping still holds.
        if evict { _ = pl_drop_cached(fd, Int64(offset), Int64(length)) }
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), size)
        close(fd)
    }
}
