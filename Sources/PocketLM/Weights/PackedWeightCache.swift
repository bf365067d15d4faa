import CKernels
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The repacked (16-row interleaved) matrices of one GGUF file, kept in a file next to nothing else so the next load
/// maps them instead of repacking.
///
/// Why: repacking writes every packed byte into fresh anonymous memory, and the kernel must clear each of those pages
/// first. On this project's VM (Firecracker, AMD EPYC, the balloon reporting free pages to the host) that was most of
/// a K-quant load: 190–1000 ms for Gemma 3 270M's 250 MB. A file the page cache already holds maps in ~40 ms
/// (MAP_POPULATE, 253 MB), which is how llama.cpp loads its mmapped GGUF. So the first load packs as before and
/// writes the packed bytes here; later loads of the same file map them.
///
/// A cache is used only if it was made from this very file (device, inode, size and modification time) by this very
/// packing code: the header records a fingerprint of `pl_pack_rows`'s output on a fixed matrix of every packed type,
/// so a change to the packed layout makes old caches stale instead of wrong. Files are written under a temporary
/// name and renamed, so a reader never sees half a cache; caches whose source is gone or changed are deleted when a
/// new one is written.
final class PackedWeightCache: @unchecked Sendable {
    struct Entry: Codable {
        var offset: Int
        var bytes: Int
    }

    private struct Header: Codable {
        var source: String
        // Strings: these 64-bit values need not survive a JSON number's double precision.
        var identity: [String]
        var layout: String
        var tensors: [String: Entry]
    }

    static let magic: [UInt8] = Array("PLPACK01".utf8)
    static let fileExtension = "plpack"
    private static let alignment = 4096

    let path: String
    private let base: UnsafeRawPointer
    private let size: Int
    private let tensors: [String: Entry]

    /// The directory the CLI and `LoadOptions` use by default: `$POCKETLM_CACHE/packed` when that is set (as the
    /// weights tools use it), else the platform's caches directory (`~/.cache` on Linux) + `pocketlm/packed`.
    static var defaultDirectory: URL? {
        if let root = ProcessInfo.processInfo.environment["POCKETLM_CACHE"], !root.isEmpty {
            return URL(fileURLWithPath: root).appendingPathComponent("packed")
        }
        return FileManager.default.urls(for: .cachesDirectory, in: .userDomainMask).first?
            .appendingPathComponent("pocketlm/packed")
    }

    /// The cache file for `source` in `directory` (whether or not it exists).
    static func cachePath(for source: String, in directory: URL) -> String {
        let absolute = URL(fileURLWithPath: source).standardizedFileURL.path
        let name = URL(fileURLWithPath: absolute).deletingPathExtension().lastPathComponent
        let key = String(fnv1a(Array(absolute.utf8)), radix: 16)
        return directory.appendingPathComponent("\(name)-\(key).\(fileExtension)").path
    }

    /// Maps the cache of `source`, or nil if there is none usable (missing, made from another version of the file
    /// or by other packing code, or damaged).
    init?(source: String, directory: URL) {
        guard let identity = Self.identity(of: source) else { return nil }
        let path = Self.cachePath(for: source, in: directory)
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size > 16 else { return nil }
        let size = Int(st.st_size)
        // Not populated here: a load populates the matrices it takes (`packed`), so a cache written by another kernel
        // tier, holding matrices this tier does not pack, costs none of its pages (it doubled the resident set of a
        // Q8_0 file run with POCKETLM_ISA=avx2 after an AVX-512 run had written the cache).
        guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else { return nil }
        let base = UnsafeRawPointer(p)
        func unmapAndFail() { munmap(p, size) }
        guard Array(UnsafeRawBufferPointer(start: base, count: 8)) == Self.magic else { unmapAndFail(); return nil }
        let headerBytes = Int(base.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        guard headerBytes > 0, 16 + headerBytes <= size,
              let header = try? JSONDecoder().decode(Header.self, from: Data(bytes: base + 16, count: headerBytes)),
              header.identity == identity, header.layout == Self.layoutKey,
              header.tensors.values.allSatisfy({ $0.offset >= 16 + headerBytes && $0.bytes >= 0 && $0.offset + $0.bytes <= size })
        else { unmapAndFail(); return nil }
        self.path = path
        self.base = base
        self.size = size
        self.tensors = header.tensors
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), size)
    }

    /// The packed bytes of tensor `name`, if the cache holds them with the expected size, their pages mapped in now:
    /// every packed matrix is read by the first token anyway, and a fault per page later costs more.
    func packed(_ name: String, bytes: Int) -> UnsafeRawPointer? {
        guard let e = tensors[name], e.bytes == bytes else { return nil }
        Self.populate(base + e.offset, bytes: e.bytes)
        return base + e.offset
    }

    /// Faults in the pages of `bytes` from `p` (page-aligned: entries start on a page), as MAP_POPULATE would for the
    /// whole file: one madvise where the kernel has MADV_POPULATE_READ (Linux 5.14), else by reading them.
    static func populate(_ p: UnsafeRawPointer, bytes: Int) {
        guard bytes > 0 else { return }
        #if os(Linux)
        if madvise(UnsafeMutableRawPointer(mutating: p), bytes, 22 /* MADV_POPULATE_READ */) == 0 { return }
        #endif
        _ = pl_read_memory(p, bytes)
    }

    var tensorNames: Set<String> { Set(tensors.keys) }

    /// Where each of `matrices` (name, packed byte count) goes in a cache file of `source`, and the file's header: the
    /// magic, the header's length and the JSON header, padded so the first matrix starts on a page. A header listing
    /// only some of these matrices (at the same offsets) fits in the same room. nil if the header cannot be encoded.
    static func layout(source: String, identity: [String], matrices: [(name: String, bytes: Int)])
        -> (entries: [String: Entry], head: [UInt8], total: Int)? {
        // Offsets depend on the header's length, which depends on the offsets' digits: reserve room, then fix up.
        var reserved = 4096
        while true {
            var entries: [String: Entry] = [:]
            var offset = align(16 + reserved)
            for m in matrices {
                entries[m.name] = Entry(offset: offset, bytes: m.bytes)
                offset = align(offset + m.bytes)
            }
            guard let head = self.head(source: source, identity: identity, tensors: entries) else { return nil }
            if head.count <= 16 + reserved { return (entries, head, offset) }
            reserved = align(head.count + 1024)
        }
    }

    /// The bytes a cache file starts with: magic, header length (little-endian UInt64), the JSON header.
    static func head(source: String, identity: [String], tensors: [String: Entry]) -> [UInt8]? {
        let absolute = URL(fileURLWithPath: source).standardizedFileURL.path
        guard let json = try? JSONEncoder().encode(Header(source: absolute, identity: identity, layout: layoutKey,
                                                          tensors: tensors))
        else { return nil }
        return magic + withUnsafeBytes(of: UInt64(json.count).littleEndian, Array.init) + Array(json)
    }

    /// Writes the cache of `source`: `matrices` are (name, packed bytes, byte count). Errors are returned, not thrown:
    /// a cache that cannot be written (read-only home, full disk) only costs the next load its speed.
    @discardableResult
    static func write(source: String, directory: URL,
                      matrices: [(name: String, data: UnsafeRawPointer, bytes: Int)]) -> String? {
        guard let identity = identity(of: source) else { return "cannot stat \(source)" }
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            return "cannot create \(directory.path): \(error.localizedDescription)"
        }
        guard let plan = layout(source: source, identity: identity, matrices: matrices.map { ($0.name, $0.bytes) })
        else { return "cannot encode the cache header" }
        let path = cachePath(for: source, in: directory)
        let temporary = path + ".\(getpid()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { return "cannot create \(temporary): \(String(cString: strerror(errno)))" }
        var failure = writeAll(fd, plan.head, at: 0, path: temporary)
        for m in matrices where failure == nil {
            failure = writeAll(fd, UnsafeRawBufferPointer(start: m.data, count: m.bytes), at: plan.entries[m.name]!.offset,
                               path: temporary)
        }
        if failure == nil, ftruncate(fd, off_t(plan.total)) != 0 { failure = "cannot size \(temporary)" }
        close(fd)
        if failure == nil, rename(temporary, path) != 0 { failure = "cannot rename \(temporary): \(String(cString: strerror(errno)))" }
        if failure != nil { unlink(temporary) }
        pruneStale(in: directory, keeping: path)
        return failure
    }

    /// pwrite until all of `bytes` is written at `offset`; the error, or nil.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String) -> String? {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n <= 0 { return "cannot write \(path): \(n < 0 ? String(cString: strerror(errno)) : "no space")" }
            done += n
        }
        return nil
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int, path: String) -> String? {
        bytes.withUnsafeBytes { writeAll(fd, $0, at: offset, path: path) }
    }

    /// Deletes caches in `directory` whose source file is gone or has changed since (a model deleted or replaced,
    /// a test's temporary file), and temporary files left by a process that died while writing.
    static func pruneStale(in directory: URL, keeping kept: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return }
        for name in names {
            let path = directory.appendingPathComponent(name).path
            guard path != kept else { continue }
            if name.hasSuffix(".tmp") {
                // "<cache>.<pid>.tmp": stale when that process is gone.
                let parts = name.split(separator: ".")
                if parts.count >= 3, let pid = Int32(parts[parts.count - 2]), kill(pid, 0) != 0, errno == ESRCH {
                    unlink(path)
                }
                continue
            }
            guard name.hasSuffix("." + fileExtension), let source = sourceRecorded(in: path) else { continue }
            if identity(of: source.path) != source.identity { unlink(path) }
        }
    }

    private static func sourceRecorded(in path: String) -> (path: String, identity: [String])? {
        guard let h = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? h.close() }
        guard let head = try? h.read(upToCount: 16), head.count == 16, Array(head.prefix(8)) == magic else { return nil }
        let length = head.suffix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        guard length > 0, length < 64 << 20, let json = try? h.read(upToCount: length),
              let header = try? JSONDecoder().decode(Header.self, from: json) else { return nil }
        return (header.source, header.identity)
    }

    /// What identifies one version of a file: device, inode, size, modification time (ns). nil if it cannot be stat'ed.
    static func identity(of path: String) -> [String]? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        #if os(Linux)
        let mtime = Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec)
        #else
        let mtime = Int(st.st_mtimespec.tv_sec) * 1_000_000_000 + Int(st.st_mtimespec.tv_nsec)
        #endif
        return [Int(st.st_dev), Int(st.st_ino), Int(st.st_size), mtime].map { String($0) }
    }

    /// A hash of what `pl_pack_rows` makes of a fixed 17-row, 256-column matrix of every packed type (17 rows: a
    /// full group and a padded one). Any change to the packed layout changes it, so old caches are not used.
    static let layoutFingerprint: UInt64 = {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for type in MappedWeightStore.packedTypes {
            let t = Int32(type.rawValue)
            let rows = 17, columns = 256
            let rowBytes = type.rowBytes(columns: columns)!
            var src = [UInt8](repeating: 0, count: rows * rowBytes)
            for i in src.indices {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                src[i] = UInt8(truncatingIfNeeded: state >> 56)
            }
            let bytes = pl_packed_bytes(t, Int64(rows), Int64(columns))
            var dst = [UInt8](repeating: 0, count: bytes)
            src.withUnsafeBytes { s in
                dst.withUnsafeMutableBytes { d in
                    pl_pack_rows(t, s.baseAddress, rowBytes, Int64(rows), Int64(columns), d.baseAddress, 0, Int64((rows + 15) / 16))
                }
            }
            hash = fnv1a(dst, seed: hash ^ UInt64(type.rawValue))
        }
        return hash
    }()

    private static var layoutKey: String { String(layoutFingerprint, radix: 16) }

    private static func align(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    private static func fnv1a(_ bytes: [UInt8], seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
        var h = seed
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }
}
