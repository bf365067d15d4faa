import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a GGUF (version 3) file as a stream: the header with every key and tensor description first, then
/// each tensor's bytes in the order they were declared, each starting at a multiple of `alignment`.
///
/// Tensors are declared up front (name, shape, type) because the header records their offsets; their bytes
/// are then produced one at a time by the caller, so a model larger than memory can be rewritten.
///
/// The bytes go to a partial file beside the destination (`partialPath`), renamed over it by `finish()`: until
/// then a file already at the destination keeps its bytes (a process mapping it reads them on), an error or a
/// writer dropped unfinished removes the partial file, and the destination never holds a half-written model.
public final class GGUFWriter {
    public struct TensorDeclaration: Sendable {
        public let name: String
        /// ggml order: `shape[0]` is the row length.
        public let shape: [Int]
        public let type: GGMLType
        public var byteCount: Int { type.rowBytes(columns: shape[0])! * shape.dropFirst().reduce(1, *) }

        public init(name: String, shape: [Int], type: GGMLType) {
            self.name = name
            self.shape = shape
            self.type = type
        }
    }

    public let path: String
    /// Where the bytes go until `finish()` renames them to `path`.
    public let partialPath: String
    /// `path`, or the file it names through symbolic links.
    private let destination: String
    public let alignment: Int
    private let declarations: [TensorDeclaration]
    private var next = 0
    private var written = 0
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var finished = false

    private let id: Int

    /// The partial files of this process's unfinished writers, by writer.
    private static let unfinished = Mutex<(next: Int, paths: [Int: String])>((0, [:]))

    /// Removes the partial files of every unfinished writer in this process: for a process ending on a signal (the
    /// destinations keep what they held).
    public static func removePartialFiles() {
        unfinished.withLock { state in
            for path in state.paths.values { unlink(path) }
            state.paths = [:]
        }
    }

    /// Creates the partial file for `path` and writes the header. `metadata` keeps its order; `general.alignment`
    /// is set to `alignment`.
    public init(path: String, metadata: [(String, GGUFValue)], tensors: [TensorDeclaration], alignment: Int = 32) throws(GGUFError) {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "alignment must be a power of two")
        for t in tensors where t.type.rowBytes(columns: t.shape.first ?? 0) == nil {
            throw .corrupt("tensor '\(t.name)': \(t.shape) does not fill whole \(t.type) blocks")
        }
        self.path = path
        // Beside the file `path` names (through a symbolic link, whose target the finished file replaces), so that
        // the rename stays in one file system; named by process and writer, so that no two writers share one.
        destination = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        id = GGUFWriter.unfinished.withLock { state in
            state.next += 1
            return state.next
        }
        partialPath = destination + ".partial-\(getpid())-\(id)"
        // Now, not after the whole file is written: the rename would fail.
        var st = stat()
        if stat(destination, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            throw .writeFailed(path: path, message: String(cString: strerror(EISDIR)))
        }
        self.alignment = alignment
        self.declarations = tensors
        fd = open(partialPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw .writeFailed(path: path, message: String(cString: strerror(errno))) }
        GGUFWriter.unfinished.withLock { [id, partialPath] in $0.paths[id] = partialPath }

        var meta = metadata.filter { $0.0 != "general.alignment" }
        meta.append(("general.alignment", .uint32(UInt32(alignment))))
        put(UInt32(0x4655_4747))  // "GGUF"
        put(UInt32(3))
        put(UInt64(tensors.count))
        put(UInt64(meta.count))
        for (key, value) in meta {
            put(key)
            put(value)
        }
        var offset = 0
        for t in tensors {
            put(t.name)
            put(UInt32(t.shape.count))
            for d in t.shape { put(UInt64(d)) }
            put(t.type.rawValue)
            put(UInt64(offset))
            offset = (offset + t.byteCount + alignment - 1) / alignment * alignment
        }
        padBuffer()
        try flush()
    }

    deinit {
        close(fd)
        if !finished { unlink(partialPath) }
        GGUFWriter.unfinished.withLock { [id] in _ = $0.paths.removeValue(forKey: id) }
    }

    /// The declared tensors, in file order.
    public var tensors: [TensorDeclaration] { declarations }

    /// Appends the next declared tensor's bytes, which may come in several calls; the writer pads once the
    /// tensor is complete.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(GGUFError) {
        guard next < declarations.count else { throw .corrupt("more tensor data than declared") }
        let t = declarations[next]
        guard written + bytes.count <= t.byteCount else {
            throw .corrupt("tensor '\(t.name)' given \(written + bytes.count) bytes, declared \(t.byteCount)")
        }
        try writeAll(bytes)
        written += bytes.count
        if written == t.byteCount {
            written = 0
            next += 1
            padBuffer()
            try flush()
        }
    }

    /// Checks that every declared tensor was written, syncs the file and renames it to `path`.
    public func finish() throws(GGUFError) {
        guard next == declarations.count, written == 0 else {
            throw .corrupt("only \(next) of \(declarations.count) tensors were written")
        }
        try flush()
        guard fsync(fd) == 0 else { throw .writeFailed(path: path, message: String(cString: strerror(errno))) }
        guard rename(partialPath, destination) == 0 else {
            throw .writeFailed(path: path, message: String(cString: strerror(errno)))
        }
        finished = true
    }

    // MARK: - Encoding

    private var position = 0  // bytes of the file so far, flushed or buffered

    private func put<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { buffer.append(contentsOf: $0) }
        position += MemoryLayout<T>.size
    }

    private func put(_ s: String) {
        let bytes = Array(s.utf8)
        put(UInt64(bytes.count))
        buffer.append(contentsOf: bytes)
        position += bytes.count
    }

    private func put(_ v: GGUFValue) {
        put(v.typeCode)
        putPayload(v)
    }

    private func putPayload(_ v: GGUFValue) {
        switch v {
        case .uint8(let x): put(x)
        case .int8(let x): put(x)
        case .uint16(let x): put(x)
        case .int16(let x): put(x)
        case .uint32(let x): put(x)
        case .int32(let x): put(x)
        case .float32(let x): put(x.bitPattern)
        case .bool(let x): put(UInt8(x ? 1 : 0))
        case .string(let s): put(s)
        case .uint64(let x): put(x)
        case .int64(let x): put(x)
        case .float64(let x): put(x.bitPattern)
        case .array(let a):
            put(a.elementTypeCode ?? 4)
            put(UInt64(a.count))
            for e in a { putPayload(e) }
        }
    }

    private func padBuffer() {
        let pad = (alignment - position % alignment) % alignment
        buffer.append(contentsOf: repeatElement(0, count: pad))
        position += pad
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws(GGUFError) {
        if !buffer.isEmpty { try flush() }
        var done = 0
        while done < bytes.count {
            let n = posixWrite(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw .writeFailed(path: path, message: String(cString: strerror(errno)))
            }
            done += n
        }
        position += bytes.count
    }

    private func flush() throws(GGUFError) {
        guard !buffer.isEmpty else { return }
        let bytes = buffer
        buffer.removeAll(keepingCapacity: true)
        position -= bytes.count  // writeAll counts them again
        var failure: GGUFError?
        bytes.withUnsafeBytes { b in
            do throws(GGUFError) { try writeAll(b) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}

/// `write(2)`, reachable from inside a type that has its own `write` method.
private func posixWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }
