/// A GGUF metadata array: a random-access collection of `GGUFValue`s.
///
/// An array read from a file keeps its elements packed as the file stores them (a vocabulary's tokens as one UTF-8
/// byte string and where each ends, its token types as 4-byte integers) and decodes an element when it is asked
/// for. A `GGUFValue` apiece costs 24 bytes plus a heap string past 15 bytes: held that way, the tokens, types and
/// merges of a 151,936-token vocabulary took 8.4 MiB for the life of the model, packed 3.6 (Gemma 3's 262,144
/// tokens with their scores: 14.7 MiB less) — memory a run inside a process budget gives to its weights instead
/// (and reads that much less per token when paging).
/// Arrays built in code (`GGUFArray([...])`, or a literal) keep their values as given.
public struct GGUFArray: Sendable, RandomAccessCollection, ExpressibleByArrayLiteral {
    enum Storage: Sendable {
        /// Values as given, or nested arrays.
        case values([GGUFValue])
        /// Strings: their UTF-8 bytes one after another; `ends[i]` is where string i ends.
        case strings(bytes: [UInt8], ends: [UInt32])
        /// Fixed-width scalars of GGUF type `type`, little-endian, `width` bytes each.
        case scalars(type: UInt32, width: Int, bytes: [UInt8])
    }

    let storage: Storage
    /// The GGUF type code the file gave the elements (kept for an empty array, which has no element to say it).
    private let fileElementType: UInt32?

    public init(_ values: [GGUFValue]) {
        storage = .values(values)
        fileElementType = nil
    }

    public init(arrayLiteral elements: GGUFValue...) { self.init(elements) }

    init(storage: Storage, elementType: UInt32) {
        self.storage = storage
        fileElementType = elementType
    }

    /// The elements' GGUF type code: the file's, else the first element's; nil for an empty array built in code.
    public var elementTypeCode: UInt32? { fileElementType ?? first?.typeCode }

    public var startIndex: Int { 0 }

    public var endIndex: Int {
        switch storage {
        case .values(let v): v.count
        case .strings(_, let ends): ends.count
        case .scalars(_, let width, let bytes): bytes.count / width
        }
    }

    public subscript(i: Int) -> GGUFValue {
        switch storage {
        case .values(let v):
            return v[i]
        case .strings(let bytes, let ends):
            precondition(i >= 0 && i < ends.count, "GGUFArray index \(i) out of range 0..<\(ends.count)")
            let start = i == 0 ? 0 : Int(ends[i - 1])
            return .string(bytes.withUnsafeBufferPointer { String(decoding: $0[start..<Int(ends[i])], as: UTF8.self) })
        case .scalars(let type, let width, let bytes):
            precondition(i >= 0 && i < bytes.count / width, "GGUFArray index \(i) out of range 0..<\(bytes.count / width)")
            return bytes.withUnsafeBytes { GGUFArray.scalar(type: type, at: $0.baseAddress! + i * width) }
        }
    }

    /// The element of GGUF type `type` (a fixed-width scalar) stored little-endian at `p`.
    static func scalar(type: UInt32, at p: UnsafeRawPointer) -> GGUFValue {
        switch type {
        case 0: .uint8(p.load(as: UInt8.self))
        case 1: .int8(Int8(bitPattern: p.load(as: UInt8.self)))
        case 2: .uint16(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)))
        case 3: .int16(Int16(bitPattern: UInt16(littleEndian: p.loadUnaligned(as: UInt16.self))))
        case 4: .uint32(UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)))
        case 5: .int32(Int32(bitPattern: UInt32(littleEndian: p.loadUnaligned(as: UInt32.self))))
        case 6: .float32(Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(as: UInt32.self))))
        case 7: .bool(p.load(as: UInt8.self) != 0)
        case 10: .uint64(UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)))
        case 11: .int64(Int64(bitPattern: UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))))
        case 12: .float64(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))))
        default: preconditionFailure("GGUF type \(type) is not a fixed-width scalar")
        }
    }

    /// Bytes per element of the fixed-width GGUF scalar type `type`; nil for strings, arrays and unknown types.
    static func scalarWidth(_ type: UInt32) -> Int? {
        switch type {
        case 0, 1, 7: 1
        case 2, 3: 2
        case 4, 5, 6: 4
        case 10, 11, 12: 8
        default: nil
        }
    }
}

extension GGUFArray: Equatable {
    /// Equal elements in the same order, however each array stores them.
    public static func == (a: GGUFArray, b: GGUFArray) -> Bool {
        a.count == b.count && a.elementsEqual(b)
    }
}
