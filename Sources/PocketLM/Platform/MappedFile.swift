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

    public init(path: String) throws(GGUFError) {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw .fileNotFound(path) }
            throw .io(path: path, message: String(cString: strerror(code)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(path: path, message: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .io(path: path, message: "not a regular file") }
        let size = Int(st.st_size)
        guard size > 0 else { throw .notGGUF(path: path, reason: "the file is empty") }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw .io(path: path, message: "mmap failed: \(String(cString: strerror(errno)))")
        }
        self.size = size
        self.base = UnsafeRawPointer(p)
    }

    /// Tells the kernel the whole mapping will be needed soon, so the first tokens do not wait on page faults.
    public func adviseWillNeed() {
        _ = madvise(UnsafeMutableRawPointer(mutating: base), size, Int32(MADV_WILLNEED))
    }

    /// Drops the map's pages in [offset, offset+length) from this process's memory (whole pages inside the
    /// range only); a later access reads them again from the file. Used once a tensor has been repacked.
    public func adviseDontNeed(offset: Int, length: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (offset + page - 1) / page * page
        let end = (offset + length) / page * page
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base) + start, end - start, Int32(MADV_DONTNEED))
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), size)
    }
}
