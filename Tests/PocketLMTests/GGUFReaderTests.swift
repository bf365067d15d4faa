import Foundation
import Testing
import PocketLM
import CKernels

// MARK: - A tiny GGUF writer for tests (shared with GGUFFuzzTests)

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
            items.allSatisfy { $0.expected != nil } ? .array(items.map { $0.expected! }) : nil
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
}

// MARK: - Tests

@Suite("GGUF reader")
struct GGUFReaderTests {
    typealias Kit = GGUFTestKit

    /// Every metadata value type, in file order, with the value the reader must return.
    static let allTypes: [(String, GGUFTestValue)] = [
        ("t.u8", .u8(200)),
        ("t.i8", .i8(-128)),
        ("t.u16", .u16(65535)),
        ("t.i16", .i16(-32768)),
        ("t.u32", .u32(4_000_000_000)),
        ("t.i32", .i32(Int32.min)),
        ("t.f32", .f32(-3.25)),
        ("t.bool.true", .bool(true)),
        ("t.bool.false", .bool(false)),
        ("t.string", .str("héllo ✓ wörld")),
        ("t.empty-string", .str("")),
        ("t.ints", .array(5, [.i32(1), .i32(-2), .i32(Int32.max)])),
        ("t.u8s", .array(0, [.u8(0), .u8(255)])),
        ("t.floats", .array(6, [.f32(0.5), .f32(-1e30)])),
        ("t.strings", .array(8, [.str("a"), .str(""), .str("ü✓"), .str("<|im_start|>")])),
        ("t.empty-array", .array(4, [])),
        ("t.nested", .array(9, [.array(4, [.u32(1), .u32(2)]), .array(8, [.str("x")])])),
        ("t.u64", .u64(UInt64.max)),
        ("t.i64", .i64(Int64.min)),
        ("t.f64", .f64(-1.5e300)),
    ]

    /// 3×5 F32 matrix, a 2-row Q8_0 matrix of 64 columns, and a 7-element F32 vector.
    static func sampleTensors() -> [GGUFTestTensor] {
        var f32 = GGUFTestBytes()
        for i in 0..<15 { f32.u32((Float(i) * 0.5 - 3).bitPattern) }
        var q8: [UInt8] = []
        for r in 0..<2 {
            for b in 0..<2 {
                q8 += Kit.q8Block(ggufTestF16Bits(Float(r + 1) * 0.01 * Float(b + 1))) { j in Int8(j * 4 - 64 + r) }
            }
        }
        var vec = GGUFTestBytes()
        for i in 0..<7 { vec.u32(Float(i * i).bitPattern) }
        return [
            GGUFTestTensor(name: "w.f32", dims: [5, 3], type: 0, data: f32.bytes),
            GGUFTestTensor(name: "w.q8_0", dims: [64, 2], type: 8, data: q8),
            GGUFTestTensor(name: "v", dims: [7], type: 0, data: vec.bytes),
        ]
    }

    static func sampleFile(alignment: Int? = nil, version: UInt32 = 3) -> GGUFTestFile {
        var f = GGUFTestFile()
        f.version = version
        f.metadata = allTypes
        if let a = alignment {
            f.metadata.insert(("general.alignment", .u32(UInt32(a))), at: 0)
            f.alignment = a
        }
        f.tensors = sampleTensors()
        return f
    }

    @Test("reads every metadata type, tensor shapes, offsets and bytes",
          arguments: [(nil, UInt32(3)), (64, 3), (1, 3), (256, 3), (nil, 2)] as [(Int?, UInt32)])
    func readsValidFile(alignment: Int?, version: UInt32) throws {
        let spec = Self.sampleFile(alignment: alignment, version: version)
        let built = spec.build()
        let align = alignment ?? 32
        try Kit.open(built.bytes) { g throws in
            #expect(g.version == version)
            #expect(g.alignment == align)
            #expect(g.fileSize == built.bytes.count)
            #expect(g.dataOffset == built.dataOffset)
            #expect(g.dataOffset % align == 0)
            #expect(g.dataOffset >= built.headerEnd && g.dataOffset < built.headerEnd + align)
            #expect(g.metadataKeys == spec.metadata.map(\.0))
            #expect(g.metadata.count == spec.metadata.count)
            for (key, value) in spec.metadata {
                #expect(g.metadata[key] == value.expected, "\(key)")
            }

            #expect(g.tensors.map(\.name) == ["w.f32", "w.q8_0", "v"])
            let expectations: [(String, GGMLType, [Int], Int, Int, Int)] = [
                // name, type, shape, byteCount, rows, columns
                ("w.f32", .f32, [5, 3], 60, 3, 5),
                ("w.q8_0", .q8_0, [64, 2], 136, 2, 64),
                ("v", .f32, [7], 28, 1, 7),
            ]
            for (i, (name, type, shape, bytes, rows, cols)) in expectations.enumerated() {
                let info = try #require(g.tensorInfo(name))
                #expect(info == g.tensors[i])
                #expect(info.type == type)
                #expect(info.shape == shape)
                #expect(info.byteCount == bytes)
                #expect(info.rows == rows && info.columns == cols && info.elementCount == rows * cols)
                #expect(info.fileOffset == built.dataOffset + Int(built.offsets[i]))
                #expect(info.fileOffset % align == 0)
                let stored = Array(UnsafeRawBufferPointer(start: g.data(of: info), count: info.byteCount))
                #expect(stored == spec.tensors[i].data, "bytes of \(name)")
            }
            #expect(g.tensorInfo("nope") == nil)
            // Offsets in the file are the auto-aligned ones: 0, then 64 (60 rounded to 32), then 64+136 → 224.
            if align == 32 { #expect(built.offsets == [0, 64, 224]) }
        }
    }

    @Test("typed metadata accessors convert and name the key on errors")
    func typedAccessors() throws {
        try Kit.open(Self.sampleFile().bytes) { g throws in
            #expect(try g.int("t.u8") == 200)
            #expect(try g.int("t.i8") == -128)
            #expect(try g.int("t.u32") == 4_000_000_000)
            #expect(try g.int("t.i64") == Int(Int64.min))
            #expect(try g.int("t.bool.true") == 1)
            #expect(try g.double("t.f32") == -3.25)
            #expect(try g.double("t.f64") == -1.5e300)
            #expect(try g.double("t.i16") == -32768)
            #expect(try g.string("t.string") == "héllo ✓ wörld")
            #expect(try g.string("t.empty-string") == "")
            #expect(try g.intArray("t.ints") == [1, -2, Int(Int32.max)])
            #expect(try g.intArray("t.u8s") == [0, 255])
            #expect(try g.intArray("t.empty-array") == [])
            #expect(try g.floatArray("t.floats") == [0.5, -1e30])
            #expect(try g.floatArray("t.ints") == [1, -2, Float(Int32.max)])
            #expect(try g.stringArray("t.strings") == ["a", "", "ü✓", "<|im_start|>"])
            #expect(g.metadata["t.u64"]?.int == nil, "UInt64.max does not fit an Int")
            #expect(g.metadata["t.u64"]?.typeName == "u64")
            #expect(g.metadata["t.strings"]?.typeName == "arr[str,4]")

            #expect(throws: GGUFError.missingMetadata("absent")) { try g.int("absent") }
            #expect(throws: GGUFError.missingMetadata("absent")) { try g.stringArray("absent") }
            #expect(throws: GGUFError.badMetadata(key: "t.string", reason: "expected an integer, found str")) {
                try g.int("t.string")
            }
            #expect(throws: GGUFError.badMetadata(key: "t.u32", reason: "expected a string, found u32")) {
                try g.string("t.u32")
            }
            #expect(throws: GGUFError.badMetadata(key: "t.ints", reason: "expected strings, found i32")) {
                try g.stringArray("t.ints")
            }
            #expect(throws: GGUFError.badMetadata(key: "t.strings", reason: "expected integers, found str")) {
                try g.intArray("t.strings")
            }
            #expect(throws: GGUFError.badMetadata(key: "t.f64", reason: "expected an array, found f64")) {
                try g.floatArray("t.f64")
            }
        }
    }

    @Test("a file with metadata only (no tensors) loads")
    func metadataOnly() throws {
        var f = GGUFTestFile()
        f.metadata = [("general.architecture", .str("llama")), ("x", .u32(7))]
        // Pad the header to the alignment as gguf-py does before the (empty) data section.
        var bytes = f.bytes
        while bytes.count % 32 != 0 { bytes.append(0) }
        try Kit.open(bytes) { g throws in
            #expect(g.tensors.isEmpty)
            #expect(g.metadata["x"] == .uint32(7))
        }
    }

    // MARK: corrupt files

    /// Opens `bytes`, requires a GGUFError of case `name` whose description contains every fragment.
    func expectError(_ bytes: [UInt8], _ name: String, _ fragments: [String],
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
        try expectError(bytes, [name], fragments, sourceLocation: sourceLocation)
    }

    /// Same, accepting any of several cases (an absurd count is as much "truncated" as "corrupt").
    func expectError(_ bytes: [UInt8], _ names: Set<String>, _ fragments: [String],
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
        let error = try #require(try Kit.openError(bytes), "expected \(names) error", sourceLocation: sourceLocation)
        #expect(names.contains(Kit.caseName(error)), "\(error)", sourceLocation: sourceLocation)
        let text = error.errorDescription ?? ""
        for f in fragments {
            #expect(text.contains(f), "'\(text)' should mention '\(f)'", sourceLocation: sourceLocation)
        }
    }

    @Test("bad magic")
    func badMagic() throws {
        var f = Self.sampleFile()
        f.magic = Array("GGML".utf8)
        try expectError(f.bytes, "notGGUF", ["magic"])
        f.magic = [0, 0, 0, 0]
        try expectError(f.bytes, "notGGUF", ["magic"])
        try expectError(Array("GGU".utf8), "notGGUF", ["magic"])
        try expectError(Array("GGUF".utf8), "truncated", ["version"])
    }

    @Test("unsupported versions", arguments: [UInt32(0), 1, 4, 0xFFFF_FFFF])
    func badVersion(version: UInt32) throws {
        var f = Self.sampleFile()
        f.version = version
        let e = try #require(try Kit.openError(f.bytes))
        #expect(e == .unsupportedVersion(version))
        #expect(e.errorDescription?.contains("version \(version)") == true)
    }

    @Test("every truncated prefix of a valid file throws, never crashes")
    func everyPrefixThrows() throws {
        var f = GGUFTestFile()
        f.metadata = [("general.architecture", .str("llama")), ("a", .array(8, [.str("xy"), .str("z")])),
                      ("b", .u64(5)), ("c", .f32(1))]
        f.tensors = Self.sampleTensors()
        let bytes = f.bytes
        try Kit.open(bytes) { g throws in #expect(g.tensors.count == 3) }
        var seen: [String: Int] = [:]
        for n in 0..<bytes.count {
            let e = try #require(try Kit.openError(Array(bytes[0..<n])), "prefix of \(n) bytes loaded")
            seen[Kit.caseName(e), default: 0] += 1
            switch e {
            case .notGGUF: #expect(n < 4, "prefix \(n): \(e)")
            case .truncated, .corrupt: #expect(n >= 4, "prefix \(n): \(e)")
            default: Issue.record("prefix \(n): unexpected \(e)")
            }
        }
        // 0 bytes = empty file, 1...3 = no magic; the rest run out of bytes somewhere.
        #expect(seen["notGGUF"] == 4)
        #expect((seen["truncated"] ?? 0) > bytes.count / 2)
    }

    @Test("tensor offset past the end of the file")
    func offsetPastEnd() throws {
        for offset: UInt64 in [1 << 20, 1 << 40, UInt64.max & ~31] {
            var f = Self.sampleFile()
            f.tensors[1].offset = offset
            f.tensors[1].placeData = false
            f.tensors[2].offset = 64
            try expectError(f.bytes, "truncated", ["w.q8_0", "\(offset)"])
        }
    }

    @Test("tensor data overrunning the end of the file")
    func dataOverrun() throws {
        let bytes = Self.sampleFile().bytes
        try expectError(Array(bytes.dropLast()), "truncated", ["data of tensor 'v'", "28 bytes"])
        // A tensor whose claimed shape needs more bytes than the file holds.
        var f = Self.sampleFile()
        f.tensors[2].dims = [7, 1000]
        try expectError(f.bytes, "truncated", ["'v'", "28000 bytes"])
    }

    @Test("absurd counts and lengths")
    func absurdCounts() throws {
        var f = Self.sampleFile()
        f.tensorCountOverride = 1 << 60
        try expectError(f.bytes, ["corrupt", "truncated"], ["tensor count", "\(UInt64(1) << 60)"])

        f = Self.sampleFile()
        f.kvCountOverride = 1 << 60
        try expectError(f.bytes, ["corrupt", "truncated"], ["metadata count"])
        f.kvCountOverride = UInt64.max
        try expectError(f.bytes, ["corrupt", "truncated"], ["metadata count", "\(UInt64.max)"])

        // A metadata value string claiming 2^62 bytes.
        f = Self.sampleFile()
        var payload = GGUFTestBytes()
        payload.u64(1 << 62)
        payload.bytes += Array("short".utf8)
        f.metadata.insert(("long.string", .raw(type: 8, payload: payload.bytes)), at: 2)
        try expectError(f.bytes, "truncated", ["long.string", "\(UInt64(1) << 62)"])

        // A key whose length is UInt64.max: the bytes are written by hand after an otherwise valid header.
        var w = GGUFTestBytes()
        w.bytes += Array("GGUF".utf8)
        w.u32(3)
        w.u64(0)
        w.u64(1)
        w.u64(UInt64.max)
        w.bytes += [UInt8](repeating: 65, count: 64)
        try expectError(w.bytes, "truncated", ["metadata key"])

        // An array claiming 2^60 elements.
        f = Self.sampleFile()
        var arr = GGUFTestBytes()
        arr.u32(4)
        arr.u64(1 << 60)
        arr.u32(1)
        f.metadata.insert(("huge.array", .raw(type: 9, payload: arr.bytes)), at: 0)
        try expectError(f.bytes, ["corrupt", "truncated"], ["element count of metadata 'huge.array'", "\(UInt64(1) << 60)"])

        // A tensor name claiming 2^40 bytes.
        f = Self.sampleFile()
        f.tensors[0].name = String(repeating: "n", count: 3)
        var built = f.build()
        let nameAt = built.headerEnd - f.tensors.reduce(0) { $0 + 8 + $1.name.utf8.count + 4 + 8 * $1.dims.count + 4 + 8 }
        built.bytes.replaceSubrange(nameAt..<(nameAt + 8), with: withUnsafeBytes(of: (UInt64(1) << 40).littleEndian, Array.init))
        try expectError(built.bytes, "truncated", ["name of tensor #0"])
    }

    @Test("misaligned tensor offset")
    func misaligned() throws {
        var f = Self.sampleFile()
        f.tensors[1].offset = 68
        try expectError(f.bytes, "corrupt", ["w.q8_0", "offset 68", "aligned to 32"])
        f = Self.sampleFile(alignment: 64)
        f.tensors[1].offset = 96
        try expectError(f.bytes, "corrupt", ["w.q8_0", "aligned to 64"])
    }

    @Test("duplicate tensor names and metadata keys")
    func duplicates() throws {
        var f = Self.sampleFile()
        f.tensors[2].name = "w.f32"
        try expectError(f.bytes, "corrupt", ["'w.f32'", "twice"])
        f = Self.sampleFile()
        f.metadata.append(("t.u8", .u8(1)))
        try expectError(f.bytes, "corrupt", ["'t.u8'", "twice"])
    }

    @Test("unknown metadata value and array element types")
    func unknownTypes() throws {
        for type: UInt32 in [13, 99, 0xFFFF_FFFF] {
            var f = Self.sampleFile()
            f.metadata.insert(("weird", .raw(type: type, payload: [0, 0, 0, 0])), at: 3)
            try expectError(f.bytes, "corrupt", ["'weird'", "unknown value type \(type)"])
        }
        var f = Self.sampleFile()
        var arr = GGUFTestBytes()
        arr.u32(42)
        arr.u64(1)
        arr.u32(0)
        f.metadata.append(("weird.array", .raw(type: 9, payload: arr.bytes)))
        try expectError(f.bytes, "corrupt", ["'weird.array'", "unknown array element type 42"])
        // Arrays of arrays of arrays are not GGUF.
        f = Self.sampleFile()
        f.metadata.append(("deep", .array(9, [.array(9, [.array(0, [.u8(1)])])])))
        try expectError(f.bytes, "corrupt", ["'deep'", "nests arrays too deeply"])
        // A bool must be 0 or 1.
        f = Self.sampleFile()
        f.metadata.append(("flag", .raw(type: 7, payload: [2])))
        try expectError(f.bytes, "badMetadata", ["'flag'", "bool value 2"])
    }

    @Test("bad general.alignment")
    func badAlignment() throws {
        for value: GGUFTestValue in [.u32(0), .u32(48), .u32(1 << 21), .str("32"), .i32(-32)] {
            var f = Self.sampleFile()
            f.metadata.insert(("general.alignment", value), at: 0)
            try expectError(f.bytes, "badMetadata", ["general.alignment", "power of two"])
        }
    }

    @Test("tensor dimension counts and sizes")
    func badDimensions() throws {
        var f = Self.sampleFile()
        f.tensors[0].dims = [5, 3, 1, 1, 1]
        try expectError(f.bytes, "corrupt", ["'w.f32'", "5 dimensions"])
        f.tensors[0].dims = []
        try expectError(f.bytes, "corrupt", ["'w.f32'", "0 dimensions"])
        f = Self.sampleFile()
        f.tensors[0].dims = [5, 0]
        try expectError(f.bytes, "corrupt", ["'w.f32'", "absurd dimension 0"])
        f.tensors[0].dims = [5, 1 << 33]
        try expectError(f.bytes, "corrupt", ["'w.f32'", "absurd dimension"])
        f.tensors[0].dims = [1 << 32, 1 << 32]
        try expectError(f.bytes, "corrupt", ["'w.f32'", "too many elements"])
        // 4 dimensions are fine (trailing ones).
        f = Self.sampleFile()
        f.tensors[0].dims = [5, 3, 1, 1]
        try Kit.open(f.bytes) { g throws in
            #expect(g.tensorInfo("w.f32")?.shape == [5, 3, 1, 1])
            #expect(g.tensorInfo("w.f32")?.rows == 3)
        }
    }

    @Test("columns that do not fill whole quantization blocks")
    func partialBlocks() throws {
        var f = Self.sampleFile()
        f.tensors[1].dims = [48, 2]
        try expectError(f.bytes, "corrupt", ["'w.q8_0'", "48 columns", "Q8_0 block size 32"])
        f.tensors[1].dims = [16, 4]
        f.tensors[1].type = 2 // Q4_0
        try expectError(f.bytes, "corrupt", ["'w.q8_0'", "16 columns", "Q4_0"])
    }

    @Test("every format ggml defines reads; an undefined type number is refused, named")
    func unsupportedTypeInline() throws {
        var f = Self.sampleFile()
        f.tensors.append(GGUFTestTensor(name: "w.q5", dims: [32, 1], type: 6, data: [UInt8](repeating: 0, count: 22)))
        try Kit.open(f.bytes) { g in
            #expect(g.tensorInfo("w.q5")?.type == .q5_0 && g.tensorInfo("w.q5")?.byteCount == 22)
        }

        f.tensors[3] = GGUFTestTensor(name: "w.iq2", dims: [256, 1], type: 16, data: [UInt8](repeating: 0, count: 66))
        try Kit.open(f.bytes) { g in
            #expect(g.tensorInfo("w.iq2")?.type == .iq2_xxs && g.tensorInfo("w.iq2")?.type.isComputable == false)
        }

        f.tensors[3] = GGUFTestTensor(name: "w.x", dims: [32, 1], type: 200, data: [UInt8](repeating: 0, count: 32))
        let e = try #require(try Kit.openError(f.bytes))
        #expect(e == .unsupportedTensorType(tensor: "w.x", type: "type #200"))
        #expect(e.errorDescription?.contains("'w.x'") == true && e.errorDescription?.contains("#200") == true)
        f.tensors[3].type = 4
        #expect(try Kit.openError(f.bytes) == .unsupportedTensorType(tensor: "w.x", type: "Q4_2"))
    }

    @Test("a format PocketLM does not compute with (fixture unsupported-type.gguf, MXFP4) is refused at model load, named")
    func unsupportedTypeFixture() throws {
        let path = try TestPaths.fixture("unsupported-type.gguf")
        let file = try GGUFFile(path: path)
        #expect(file.tensorInfo("blk.0.ffn_up.weight")?.type == .mxfp4)
        #expect(throws: GGUFError.unsupportedTensorType(tensor: "blk.0.ffn_up.weight", type: "MXFP4")) {
            try LanguageModel(path: path)
        }
        do {
            _ = try LanguageModel(path: path)
        } catch let error as GGUFError {
            let text = error.errorDescription ?? ""
            #expect(text.contains("blk.0.ffn_up.weight") && text.contains("MXFP4"), "\(text)")
        }
    }

    @Test("ggml's block geometry for every defined format")
    func blockGeometry() {
        let expected: [(UInt32, Int, Int)] = [(0, 1, 4), (1, 1, 2), (2, 32, 18), (3, 32, 20), (6, 32, 22), (7, 32, 24),
                                              (8, 32, 34), (10, 256, 84), (11, 256, 110), (12, 256, 144), (13, 256, 176),
                                              (14, 256, 210), (15, 256, 292), (20, 32, 18), (23, 256, 136), (30, 1, 2), (39, 32, 17)]
        for (n, block, bytes) in expected {
            let t = GGMLType(rawValue: n)
            #expect(t.rawValue == n && t.blockSize == block && t.blockBytes == bytes, "\(t)")
        }
        #expect(GGMLType(rawValue: 12).description == "Q4_K" && GGMLType(rawValue: 14).rowBytes(columns: 640) == nil)
    }

    @Test("missing file, directory, empty file")
    func notFiles() throws {
        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("pocketlm-missing-\(UUID().uuidString).gguf").path
        #expect(throws: GGUFError.fileNotFound(missing)) { try GGUFFile(path: missing) }

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pocketlm-dir-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(throws: GGUFError.io(path: dir.path, message: "not a regular file")) { try GGUFFile(path: dir.path) }

        #expect(try Kit.openError([]).map(Kit.caseName) == "notGGUF")
        #expect(try Kit.openError([])?.errorDescription?.contains("empty") == true)
    }

    // MARK: model config and weight store

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

    @Test("ModelConfig reads llama metadata, with defaults")
    func configReads() throws {
        try Kit.open(Self.llamaFile(Kit.llamaMetadata())) { g throws in
            let c = try ModelConfig(gguf: g)
            #expect(c == ModelConfig(modelType: "llama", hiddenSize: 64, numHiddenLayers: 2, numAttentionHeads: 4,
                                     numKeyValueHeads: 2, intermediateSize: 128, vocabSize: 10, ropeTheta: 500000,
                                     rmsNormEps: Double(Float(1e-5)), maxPositionEmbeddings: 256))
            #expect(c.headDim == 16 && c.kvDim == 32)
        }
        let md = Kit.llamaMetadata([("llama.vocab_size", .u64(10))],
                                   removing: ["llama.attention.head_count_kv", "llama.rope.freq_base"])
        try Kit.open(Self.llamaFile(md)) { g throws in
            let c = try ModelConfig(gguf: g)
            #expect(c.numKeyValueHeads == 4)
            #expect(c.ropeTheta == 10000)
            #expect(c.vocabSize == 10)
        }
    }

    @Test("ModelConfig rejects other architectures and bad shapes, naming the field")
    func configErrors() throws {
        try Kit.open(Self.llamaFile(Kit.llamaMetadata([("general.architecture", .str("gpt2"))]))) { g throws in
            #expect(throws: ModelError.unsupportedArchitecture("gpt2")) { try ModelConfig(gguf: g) }
        }
        try Kit.open(Self.llamaFile(Kit.llamaMetadata([("llama.attention.head_count", .u32(3))]))) { g throws in
            #expect(throws: ModelError.invalidConfig(field: "num_attention_heads",
                                                     reason: "3 heads do not divide hidden_size 64")) {
                try ModelConfig(gguf: g)
            }
        }
        try Kit.open(Self.llamaFile(Kit.llamaMetadata([("llama.attention.head_count_kv", .u32(3))]))) { g throws in
            let e = #expect(throws: ModelError.self) { try ModelConfig(gguf: g) }
            guard case .invalidConfig(let field, _)? = e else { Issue.record("\(String(describing: e))"); return }
            #expect(field == "num_key_value_heads")
        }
        try Kit.open(Self.llamaFile(Kit.llamaMetadata([("llama.rope.dimension_count", .u32(8))]))) { g throws in
            let e = #expect(throws: ModelError.self) { try ModelConfig(gguf: g) }
            guard case .unsupportedFeature(let key, _)? = e else { Issue.record("\(String(describing: e))"); return }
            #expect(key == "llama.rope.dimension_count")
        }
        try Kit.open(Self.llamaFile(Kit.llamaMetadata(removing: ["llama.embedding_length"]))) { g throws in
            #expect(throws: GGUFError.missingMetadata("llama.embedding_length")) { try ModelConfig(gguf: g) }
        }
        try Kit.open(Self.llamaFile(Kit.llamaMetadata([("llama.block_count", .str("two"))]))) { g throws in
            #expect(throws: GGUFError.badMetadata(key: "llama.block_count", reason: "expected an integer, found str")) {
                try ModelConfig(gguf: g)
            }
        }
    }

    @Test("MappedWeightStore checks names and shapes")
    func weightStore() throws {
        try Kit.open(Self.llamaFile(Kit.llamaMetadata())) { g throws in
            let store = MappedWeightStore(file: g)
            #expect(store.contains("token_embd.weight"))
            #expect(!store.contains("output.weight"))
            let t = try store.tensor("token_embd.weight", shape: [64, 10])
            #expect(t.rows == 10 && t.columns == 64 && t.rowBytes == 256 && t.type == .f32)
            #expect(t.data == g.data(of: g.tensorInfo("token_embd.weight")!))
            #expect(t.row(3).loadUnaligned(fromByteOffset: 4, as: Float.self) == Float(3 * 64 + 1))
            // Trailing 1s do not matter: [64, 1] is the vector [64].
            let norm = try store.tensor("output_norm.weight", shape: [64])
            #expect(norm.rows == 1 && norm.columns == 64)

            #expect(throws: GGUFError.tensorShape(tensor: "token_embd.weight", expected: [64, 11], found: [64, 10])) {
                try store.tensor("token_embd.weight", shape: [64, 11])
            }
            #expect(throws: GGUFError.tensorShape(tensor: "token_embd.weight", expected: [10, 64], found: [64, 10])) {
                try store.tensor("token_embd.weight", shape: [10, 64])
            }
            #expect(throws: GGUFError.missingTensor("output.weight")) { try store.tensor("output.weight", shape: [64, 10]) }
            #expect(GGUFError.missingTensor("output.weight").errorDescription?.contains("'output.weight'") == true)
        }
    }

    @Test("Transformer refuses a file whose tensors do not match its config")
    func transformerShapeMismatch() throws {
        try Kit.open(Self.llamaFile(Kit.llamaMetadata())) { g throws in
            let config = try ModelConfig(gguf: g)
            // The file has only the embedding and final norm: the first block's norm is missing.
            #expect(throws: GGUFError.missingTensor("blk.0.attn_norm.weight")) {
                try Transformer(store: MappedWeightStore(file: g), config: config, contextLength: 8)
            }
            var wrong = config
            wrong.vocabSize = 11
            #expect(throws: GGUFError.tensorShape(tensor: "token_embd.weight", expected: [64, 11], found: [64, 10])) {
                try Transformer(store: MappedWeightStore(file: g), config: wrong, contextLength: 8)
            }
        }
    }
}

/// `open(2)` for writing a new file (outside GGUFTestKit, whose own `open` would shadow it).
func ggufTestCreateFile(_ path: String) -> Int32 { open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o600) }

/// The f16 bits of a float, for scales written by tests.
func ggufTestF16Bits(_ x: Float) -> UInt16 { pl_f32_to_f16(x) }
