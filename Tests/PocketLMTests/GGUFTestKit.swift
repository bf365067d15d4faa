import Foundation
import Testing
import PocketLM
import CKernels

// A tiny GGUF writer for tests (GGUF reader, fuzz, model config and architecture tests).

/// One metadata value as the writer encodes it. `raw` writes any type tag with any payload, for corrupt files.
enum GGUFTestValue {
    case u8(UInt8), i8(Int8), u16(UInt16), i16(Int16), u32(UInt32), i32(Int32), f32(Float), bool(Bool)
    case str(String), u64(UInt64), i64(Int64), f64(Double)
    /// Element type tag and the elements (all of that type).
    case array(UInt32, [GGUFTestValue])
    case raw(type: UInt32, payload: [UInt8])

    var typeCode: UInt32 {
        switch self {
        case .u8: 0
        case .i8: 1
        case .u16: 2
        case .i16: 3
        case .u32: 4
        case .i32: 5
        case .f32: 6
        case .bool: 7
        case .str: 8
        case .array: 9
        case .u64: 10
        case .i64: 11
        case .f64: 12
        case .raw(let t, _): t
        }
    }

    func writePayload(_ w: inout GGUFTestBytes) {
        switch self {
        case .u8(let v): w.u8(v)
        case .i8(let v): w.u8(UInt8(bitPattern: v))
        case .u16(let v): w.u16(v)
        case .i16(let v): w.u16(UInt16(bitPattern: v))
        case .u32(let v): w.u32(v)
        case .i32(let v): w.u32(UInt32(bitPattern: v))
        case .f32(let v): w.u32(v.bitPattern)
        case .bool(let v): w.u8(v ? 1 : 0)
        case .str(let s): w.string(s)
        case .u64(let v): w.u64(v)
        case .i64(let v): w.u64(UInt64(bitPattern: v))
        case .f64(let v): w.u64(v.bitPattern)
        case .array(let type, let items):
            w.u32(type)
            w.u64(UInt64(items.count))
            for item in items { item.writePayload(&w) }
        case .raw(_, let payload): w.bytes += payload
        }
    }

    /// What `GGUFFile` should return for this value.
    var expected: GGUFValue? {
        switch self {
        case .u8(let v): .uint8(v)
        case .i8(let v): .int8(v)
        case .u16(let v): .uint16(v)
        case .i16(let v): .int16(v)
        case .u32(let v): .uint32(v)
        case .i32(let v): .int32(v)
        case .f32(let v): .float32(v)
        case .bool(let v): .bool(v)
        case .str(let s): .string(s)
        case .u64(let v): .uint64(v)
        case .i64(let v): .int64(v)
        case .f64(let v): .float64(v)
        case .array(_, let items):
            items.allSatisfy { $0.expected != nil } ? .array(GGUFArray(items.map { $0.expected! })) : nil
        case .raw: nil
        }
    }
}

/// Little-endian byte accumulator.
struct GGUFTestBytes {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func string(_ s: String) {
        u64(UInt64(s.utf8.count))
        bytes += Array(s.utf8)
    }
}

struct GGUFTestTensor {
    var name: String
    /// ggml order: dims[0] is the column count.
    var dims: [UInt64]
    var type: UInt32
    var data: [UInt8]
    /// Offset relative to the data section; nil = next aligned position after the previous tensor.
    var offset: UInt64? = nil
    /// false: the tensor table claims the data but the file does not contain it.
    var placeData = true
}

/// A whole GGUF file, every field of which a test may override.
struct GGUFTestFile {
    var magic: [UInt8] = Array("GGUF".utf8)
    var version: UInt32 = 3
    var tensorCountOverride: UInt64? = nil
    var kvCountOverride: UInt64? = nil
    var metadata: [(String, GGUFTestValue)] = []
    var tensors: [GGUFTestTensor] = []
    /// Alignment used to place the data section and auto offsets (write `general.alignment` yourself to change it).
    var alignment = 32

    struct Built {
        var bytes: [UInt8]
        /// Where the tensor table ends (the header's last byte + 1).
        var headerEnd: Int
        var dataOffset: Int
        /// Per tensor, offset relative to the data section.
        var offsets: [UInt64]
    }

    func build() -> Built {
        var w = GGUFTestBytes()
        w.bytes += magic
        w.u32(version)
        w.u64(tensorCountOverride ?? UInt64(tensors.count))
        w.u64(kvCountOverride ?? UInt64(metadata.count))
        for (key, value) in metadata {
            w.string(key)
            w.u32(value.typeCode)
            value.writePayload(&w)
        }
        var offsets: [UInt64] = []
        var next: UInt64 = 0
        for t in tensors {
            let off = t.offset ?? next
            offsets.append(off)
            let end = off &+ UInt64(t.data.count)
            next = (end + UInt64(alignment) - 1) / UInt64(alignment) * UInt64(alignment)
            w.string(t.name)
            w.u32(UInt32(t.dims.count))
            for d in t.dims { w.u64(d) }
            w.u32(t.type)
            w.u64(off)
        }
        let headerEnd = w.bytes.count
        let dataOffset = (headerEnd + alignment - 1) / alignment * alignment
        if !tensors.isEmpty {
            // Pad to the data section, then place each tensor's bytes; the file ends with the last tensor's data.
            let end = zip(tensors, offsets).map { t, off in t.placeData ? Int(off) + t.data.count : 0 }.max() ?? 0
            var out = w.bytes + [UInt8](repeating: 0, count: dataOffset - headerEnd + end)
            for (t, off) in zip(tensors, offsets) where t.placeData {
                out.replaceSubrange((dataOffset + Int(off))..<(dataOffset + Int(off) + t.data.count), with: t.data)
            }
            w.bytes = out
        }
        return Built(bytes: w.bytes, headerEnd: headerEnd, dataOffset: dataOffset, offsets: offsets)
    }

    var bytes: [UInt8] { build().bytes }
}

enum GGUFTestKit {
    /// Writes `bytes` to a uniquely named temporary file, runs `body` on its path, then deletes it.
    static func withTempFile<T>(_ bytes: [UInt8], _ body: (String) throws -> T) throws -> T {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("pocketlm-test-\(UUID().uuidString).gguf").path
        try writeFile(bytes, path)
        defer { unlink(path) }
        return try body(path)
    }

    /// Writes `bytes` to a new file at `path` (plain POSIX: Foundation's writer costs more than parsing the file).
    static func writeFile(_ bytes: [UInt8], _ path: String) throws {
        let fd = ggufTestCreateFile(path)
        guard fd >= 0 else { throw TestSetupError("cannot create \(path)") }
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw TestSetupError("short write to \(path)") }
    }

    /// The GGUFError opening `bytes` throws, or nil when the file loads.
    static func openError(_ bytes: [UInt8]) throws -> GGUFError? {
        try withTempFile(bytes) { path -> GGUFError? in
            do throws(GGUFError) {
                _ = try GGUFFile(path: path)
                return nil
            } catch {
                return error
            }
        }
    }

    /// Opens `bytes` as a GGUFFile and hands it to `body` (the file is deleted afterwards; the map stays valid).
    @discardableResult
    static func open<T>(_ bytes: [UInt8], _ body: (GGUFFile) throws -> T) throws -> T {
        try withTempFile(bytes) { path in try body(try GGUFFile(path: path)) }
    }

    static func caseName(_ e: GGUFError) -> String {
        switch e {
        case .fileNotFound: "fileNotFound"
        case .io: "io"
        case .writeFailed: "writeFailed"
        case .notGGUF: "notGGUF"
        case .unsupportedVersion: "unsupportedVersion"
        case .truncated: "truncated"
        case .corrupt: "corrupt"
        case .unsupportedTensorType: "unsupportedTensorType"
        case .missingTensor: "missingTensor"
        case .tensorShape: "tensorShape"
        case .missingMetadata: "missingMetadata"
        case .badMetadata: "badMetadata"
        }
    }

    static func q8Block(_ scaleBits: UInt16, _ q: (Int) -> Int8) -> [UInt8] {
        var b = GGUFTestBytes()
        b.u16(scaleBits)
        for j in 0..<32 { b.u8(UInt8(bitPattern: q(j))) }
        return b.bytes
    }

    /// A llama-shaped metadata set: `overrides` replace or add keys, `removing` drops keys.
    static func llamaMetadata(_ overrides: [(String, GGUFTestValue)] = [], removing: Set<String> = [])
        -> [(String, GGUFTestValue)] {
        var md: [(String, GGUFTestValue)] = [
            ("general.architecture", .str("llama")),
            ("llama.embedding_length", .u32(64)),
            ("llama.block_count", .u32(2)),
            ("llama.attention.head_count", .u32(4)),
            ("llama.attention.head_count_kv", .u32(2)),
            ("llama.feed_forward_length", .u32(128)),
            ("llama.rope.freq_base", .f32(500000)),
            ("llama.attention.layer_norm_rms_epsilon", .f32(1e-5)),
            ("llama.context_length", .u32(256)),
        ]
        for (k, v) in overrides {
            if let i = md.firstIndex(where: { $0.0 == k }) { md[i].1 = v } else { md.append((k, v)) }
        }
        return md.filter { !removing.contains($0.0) }
    }

    /// A llama file with `metadata`, an F32 embedding of `vocab` × `dim` and an output norm (no blocks).
    static func llamaFile(_ metadata: [(String, GGUFTestValue)], vocab: Int = 10, dim: Int = 64) -> [UInt8] {
        var f = GGUFTestFile()
        f.metadata = metadata
        var data = GGUFTestBytes()
        for i in 0..<(vocab * dim) { data.u32(Float(i).bitPattern) }
        f.tensors = [
            GGUFTestTensor(name: "token_embd.weight", dims: [UInt64(dim), UInt64(vocab)], type: 0, data: data.bytes),
            GGUFTestTensor(name: "output_norm.weight", dims: [UInt64(dim), 1], type: 0,
                           data: Array(data.bytes[0..<(4 * dim)])),
        ]
        return f.bytes
    }
}
