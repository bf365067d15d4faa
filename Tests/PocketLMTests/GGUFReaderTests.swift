import Foundation
import Testing
import PocketLM
import CKernels

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
        // Every fixed width an array packs its elements at (GGUFArray keeps a file's arrays as stored bytes).
        ("t.i8s", .array(1, [.i8(-128), .i8(127)])),
        ("t.u16s", .array(2, [.u16(7), .u16(65535)])),
        ("t.i16s", .array(3, [.i16(-5), .i16(Int16.min)])),
        ("t.bools", .array(7, [.bool(true), .bool(false), .bool(true)])),
        ("t.u64s", .array(10, [.u64(UInt64.max), .u64(0)])),
        ("t.i64s", .array(11, [.i64(Int64.min)])),
        ("t.f64s", .array(12, [.f64(2.5), .f64(-0.0)])),
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

    @Test("metadata read from a file writes back unchanged: every array's element type (an empty one's too), strings, scalars, nesting")
    func metadataWritesBackUnchanged() throws {
        var spec = Self.sampleFile()
        spec.metadata.append(("t.empty-f32", .array(6, [])))
        spec.metadata.append(("t.long-string", .array(8, [.str(String(repeating: "x", count: 300)), .str("é")])))
        spec.tensors = []
        let bytes = spec.build().bytes
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pocketlm-gguf-writeback-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Kit.open(bytes) { read throws in
            #expect(read.metadata["t.empty-f32"]?.array?.elementTypeCode == 6)
            #expect(read.metadata["t.long-string"]?.array?[0] == .string(String(repeating: "x", count: 300)))
            #expect(try read.stringArray("t.strings") == ["a", "", "ü✓", "<|im_start|>"])
            #expect(try read.intArray("t.u16s") == [7, 65535])
            #expect(try read.floatArray("t.f64s") == [2.5, -0.0])
            try GGUFWriter(path: path, metadata: read.metadataKeys.map { ($0, read.metadata[$0]!) }, tensors: [],
                           alignment: read.alignment).finish()
        }
        let again = try GGUFFile(path: path)
        for key in spec.metadata.map(\.0) {
            let before = try #require(try Self.readBack(bytes, key)), after = try #require(again.metadata[key])
            #expect(after == before, "\(key)")
            #expect(after.typeCode == before.typeCode && after.array?.elementTypeCode == before.array?.elementTypeCode, "\(key)")
        }
    }

    /// Metadata `key` of the file `bytes`.
    static func readBack(_ bytes: [UInt8], _ key: String) throws -> GGUFValue? {
        try Kit.open(bytes) { $0.metadata[key] }
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
        // In an array too.
        f = Self.sampleFile()
        f.metadata.append(("flags", .array(7, [.u8(1), .u8(0), .u8(2)])))
        try expectError(f.bytes, "badMetadata", ["'flags'", "bool value 2"])
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
}
