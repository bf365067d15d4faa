/// A GGUF (v2/v3) model file, memory-mapped and validated before any tensor is touched.
///
/// Layout: magic "GGUF", version, tensor count, metadata count, the metadata key/value pairs, the tensor
/// table (name, dims, type, offset), padding to `general.alignment`, then the tensor data. Every length and
/// offset read from the file is checked against the bytes that remain, so a corrupt file is an error and never
/// an out-of-bounds read.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order (for `inspect`).
    public let metadataKeys: [String]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    public let dataOffset: Int
    public let file: MappedFile
    private let tensorIndex: [String: Int]

    public var fileSize: Int { file.size }

    public convenience init(path: String) throws(GGUFError) {
        try self.init(mapped: try MappedFile(path: path))
    }

    public init(mapped file: MappedFile) throws(GGUFError) {
        self.file = file
        self.path = file.path
        var r = ByteReader(base: file.base, size: file.size)

        guard file.size >= 4, r.peekMagic() == 0x4655_4747 else {
            throw .notGGUF(path: file.path, reason: "missing the 'GGUF' magic bytes")
        }
        r.offset = 4
        version = try r.u32("version")
        guard version == 2 || version == 3 else { throw .unsupportedVersion(version) }
        let tensorCount = try r.count("tensor count", minBytesEach: 24)
        let kvCount = try r.count("metadata count", minBytesEach: 12)

        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        keys.reserveCapacity(kvCount)
        for _ in 0..<kvCount {
            let key = try r.string("metadata key")
            let type = try r.u32("type of metadata '\(key)'")
            let value = try r.value(type: type, key: key, depth: 0)
            if metadata.updateValue(value, forKey: key) != nil {
                throw .corrupt("metadata key '\(key)' appears twice")
            }
            keys.append(key)
        }
        self.metadata = metadata
        self.metadataKeys = keys

        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard let v = a.int, v > 0, v & (v - 1) == 0, v <= 1 << 20 else {
                throw .badMetadata(key: "general.alignment", reason: "must be a power of two, found \(a)")
            }
            alignment = v
        }
        self.alignment = alignment

        struct RawInfo { var name: String; var dims: [Int]; var type: UInt32; var offset: UInt64 }
        var raw: [RawInfo] = []
        raw.reserveCapacity(tensorCount)
        for i in 0..<tensorCount {
            let name = try r.string("name of tensor #\(i)")
            let nDims = Int(try r.u32("dimension count of '\(name)'"))
            guard (1...4).contains(nDims) else { throw .corrupt("tensor '\(name)' has \(nDims) dimensions (1 to 4 allowed)") }
            var dims: [Int] = []
            for _ in 0..<nDims {
                let d = try r.u64("dimensions of '\(name)'")
                guard d >= 1, d <= 1 << 32 else { throw .corrupt("tensor '\(name)' has an absurd dimension \(d)") }
                dims.append(Int(d))
            }
            let type = try r.u32("type of '\(name)'")
            let offset = try r.u64("offset of '\(name)'")
            raw.append(RawInfo(name: name, dims: dims, type: type, offset: offset))
        }

        let dataOffset = (r.offset + alignment - 1) / alignment * alignment
        // A file without tensors (vocabulary only) may end right after its header, unpadded, as gguf-py writes it.
        guard raw.isEmpty || dataOffset <= file.size else { throw .truncated(what: "tensor data", offset: dataOffset) }
        self.dataOffset = dataOffset

        var infos: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
        infos.reserveCapacity(raw.count)
        for t in raw {
            let type = GGMLType(rawValue: t.type)
            // Any format ggml defines has a known size, so the file reads (inspect, tokenize); whether the kernels
            // compute with it is checked when a model is built from it.
            guard type.isSupported else { throw .unsupportedTensorType(tensor: t.name, type: type.description) }
            var elements = 1
            for d in t.dims {
                let (p, o) = elements.multipliedReportingOverflow(by: d)
                guard !o, p <= 1 << 40 else { throw .corrupt("tensor '\(t.name)' has too many elements") }
                elements = p
            }
            guard let rowBytes = type.rowBytes(columns: t.dims[0]) else {
                throw .corrupt("tensor '\(t.name)': \(t.dims[0]) columns is not a multiple of the \(type) block size \(type.blockSize)")
            }
            let bytes = rowBytes * (elements / t.dims[0])
            guard t.offset % UInt64(alignment) == 0 else {
                throw .corrupt("tensor '\(t.name)' data offset \(t.offset) is not aligned to \(alignment)")
            }
            guard t.offset <= UInt64(file.size), UInt64(dataOffset) + t.offset + UInt64(bytes) <= UInt64(file.size) else {
                throw .truncated(what: "data of tensor '\(t.name)' (\(bytes) bytes at offset \(t.offset))", offset: file.size)
            }
            guard index[t.name] == nil else { throw .corrupt("tensor name '\(t.name)' appears twice") }
            index[t.name] = infos.count
            infos.append(GGUFTensorInfo(name: t.name, type: type, shape: t.dims,
                                        fileOffset: dataOffset + Int(t.offset), byteCount: bytes))
        }
        self.tensors = infos
        self.tensorIndex = index
    }

    public func tensorInfo(_ name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// Pointer to a tensor's bytes inside the map.
    public func data(of info: GGUFTensorInfo) -> UnsafeRawPointer {
        file.base + info.fileOffset
    }

    // MARK: typed metadata access with errors that name the key

    public func int(_ key: String) throws(GGUFError) -> Int {
        guard let v = metadata[key] else { throw .missingMetadata(key) }
        guard let i = v.int else { throw .badMetadata(key: key, reason: "expected an integer, found \(v.typeName)") }
        return i
    }

    public func double(_ key: String) throws(GGUFError) -> Double {
        guard let v = metadata[key] else { throw .missingMetadata(key) }
        guard let d = v.double else { throw .badMetadata(key: key, reason: "expected a number, found \(v.typeName)") }
        return d
    }

    public func string(_ key: String) throws(GGUFError) -> String {
        guard let v = metadata[key] else { throw .missingMetadata(key) }
        guard let s = v.string else { throw .badMetadata(key: key, reason: "expected a string, found \(v.typeName)") }
        return s
    }

    public func stringArray(_ key: String) throws(GGUFError) -> [String] {
        guard let v = metadata[key] else { throw .missingMetadata(key) }
        guard let a = v.array else { throw .badMetadata(key: key, reason: "expected an array, found \(v.typeName)") }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for e in a {
            guard let s = e.string else { throw .badMetadata(key: key, reason: "expected strings, found \(e.typeName)") }
            out.append(s)
        }
        return out
    }

    public func intArray(_ key: String) throws(GGUFError) -> [Int] {
        guard let v = metadata[key] else { throw .missingMetadata(key) }
        guard let a = v.array else { throw .badMetadata(key: key, reason: "expected an array, found \(v.typeName)") }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for e in a {
            guard let i = e.int else { throw .badMetadata(key: key, reason: "expected integers, found \(e.typeName)") }
            out.append(i)
        }
        return out
    }

    public func floatArray(_ key: String) throws(GGUFError) -> [Float] {
        guard let v = metadata[key] else { throw .missingMetadata(key) }
        guard let a = v.array else { throw .badMetadata(key: key, reason: "expected an array, found \(v.typeName)") }
        var out: [Float] = []
        out.reserveCapacity(a.count)
        for e in a {
            guard let d = e.double else { throw .badMetadata(key: key, reason: "expected numbers, found \(e.typeName)") }
            out.append(Float(d))
        }
        return out
    }
}

/// One row of the tensor table.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    public let type: GGMLType
    /// ggml order: `shape[0]` is the contiguous (column) dimension.
    public let shape: [Int]
    /// Absolute offset of the first byte in the file.
    public let fileOffset: Int
    public let byteCount: Int

    public var columns: Int { shape[0] }
    public var rows: Int { shape.dropFirst().reduce(1, *) }
    public var elementCount: Int { shape.reduce(1, *) }
}

/// Bounds-checked little-endian reader over the mapped header.
struct ByteReader {
    let base: UnsafeRawPointer
    let size: Int
    var offset = 0

    func peekMagic() -> UInt32 { base.loadUnaligned(as: UInt32.self) }

    private mutating func take<T: FixedWidthInteger>(_ what: @autoclosure () -> String, as: T.Type) throws(GGUFError) -> T {
        let n = MemoryLayout<T>.size
        guard size - offset >= n else { throw .truncated(what: what(), offset: offset) }
        let v = T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += n
        return v
    }

    mutating func u32(_ what: @autoclosure () -> String) throws(GGUFError) -> UInt32 { try take(what(), as: UInt32.self) }
    mutating func u64(_ what: @autoclosure () -> String) throws(GGUFError) -> UInt64 { try take(what(), as: UInt64.self) }

    /// A count whose items each take at least `minBytesEach` bytes: more than the file could hold is corrupt.
    mutating func count(_ what: String, minBytesEach: Int) throws(GGUFError) -> Int {
        let c = try u64(what)
        guard c <= UInt64((size - offset) / max(minBytesEach, 1)) else {
            throw .truncated(what: "\(what) \(c) (more items than the file could hold)", offset: offset)
        }
        return Int(c)
    }

    mutating func string(_ what: @autoclosure () -> String) throws(GGUFError) -> String {
        String(decoding: try stringBytes(what()), as: UTF8.self)
    }

    /// A string's bytes, in the map (its length checked against the bytes that remain).
    mutating func stringBytes(_ what: @autoclosure () -> String) throws(GGUFError) -> UnsafeRawBufferPointer {
        let n = try u64(what())
        guard n <= UInt64(size - offset) else { throw .truncated(what: "\(what()) (a string of \(n) bytes)", offset: offset) }
        let bytes = UnsafeRawBufferPointer(start: base + offset, count: Int(n))
        offset += Int(n)
        return bytes
    }

    mutating func value(type: UInt32, key: String, depth: Int) throws(GGUFError) -> GGUFValue {
        // A fixed-width scalar decodes as an array's element does (`GGUFArray.scalar`).
        if let width = GGUFArray.scalarWidth(type) {
            guard size - offset >= width else { throw .truncated(what: key, offset: offset) }
            if type == 7, case let b = base.load(fromByteOffset: offset, as: UInt8.self), b > 1 {
                throw .badMetadata(key: key, reason: "bool value \(b)")
            }
            defer { offset += width }
            return GGUFArray.scalar(type: type, at: base + offset)
        }
        switch type {
        case 8: return .string(try string(key))
        case 9:
            guard depth < 2 else { throw .corrupt("metadata '\(key)' nests arrays too deeply") }
            let elementType = try u32(key)
            let width = GGUFArray.scalarWidth(elementType)
            // The fewest bytes an element takes: a string its 8-byte length, a nested array its type and count.
            let least: Int? = switch elementType {
            case 8: 8
            case 9: 12
            default: width
            }
            guard let minBytes = least else { throw .corrupt("metadata '\(key)' has unknown array element type \(elementType)") }
            let n = try count("element count of metadata '\(key)'", minBytesEach: minBytes)
            // Kept packed as stored (GGUFArray): a vocabulary's strings as one byte string, its scalars as bytes.
            if let width {
                let bytes = Array(UnsafeRawBufferPointer(start: base + offset, count: n * width))
                if elementType == 7, let b = bytes.first(where: { $0 > 1 }) {
                    throw .badMetadata(key: key, reason: "bool value \(b)")
                }
                offset += n * width
                return .array(GGUFArray(storage: .scalars(type: elementType, width: width, bytes: bytes), elementType: elementType))
            }
            if elementType == 8 {
                // Two passes: check every length and sum them, then copy into a byte string of exactly that size.
                let start = offset
                var total = 0
                for _ in 0..<n { total += try stringBytes(key).count }
                guard total <= Int(UInt32.max) else { throw .corrupt("metadata '\(key)' holds more than 4 GiB of strings") }
                offset = start
                var bytes: [UInt8] = []
                var ends: [UInt32] = []
                bytes.reserveCapacity(total)
                ends.reserveCapacity(n)
                for _ in 0..<n {
                    bytes.append(contentsOf: try stringBytes(key))
                    ends.append(UInt32(bytes.count))
                }
                return .array(GGUFArray(storage: .strings(bytes: bytes, ends: ends), elementType: 8))
            }
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try value(type: elementType, key: key, depth: depth + 1)) }
            return .array(GGUFArray(storage: .values(items), elementType: elementType))
        default: throw .corrupt("metadata '\(key)' has unknown value type \(type)")
        }
    }
}
