import Foundation
import Testing
import PocketLM

/// SplitMix64: a tiny deterministic generator, so every fuzz run and random kernel test is reproducible.
struct SeededSplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<n.
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    /// Uniform in [0, 1).
    mutating func unit() -> Float { Float(next() >> 40) * 0x1p-24 }
    /// Standard normal (Box–Muller).
    mutating func normal() -> Float {
        let u1 = max(Double(next() >> 11) * 0x1p-53, 1e-300), u2 = Double(next() >> 11) * 0x1p-53
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}

/// Where the structural fields of a GGUF file are (counts, lengths, type tags, dims, offsets).
struct GGUFFieldMap {
    struct Field { var offset: Int; var width: Int }
    /// Header counts, key lengths, type tags, scalar values, array headers and the whole tensor table.
    var core: [Field] = []
    /// Lengths of strings inside arrays (the tokenizer's vocabulary and merges).
    var arrayStrings: [Field] = []
    var headerEnd = 0

    init(_ b: [UInt8]) {
        var o = 0
        func u64(_ at: Int) -> Int { (0..<8).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) } }
        func u32(_ at: Int) -> Int { (0..<4).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) } }
        core += [Field(offset: 4, width: 4), Field(offset: 8, width: 8), Field(offset: 16, width: 8)]
        let tensors = u64(8), kvs = u64(16)
        o = 24
        func value(_ type: Int, inArray: Bool) {
            let sizes = [0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8]
            if let s = sizes[type] {
                if !inArray { core.append(Field(offset: o, width: s)) }
                o += s
            } else if type == 8 {
                let f = Field(offset: o, width: 8)
                if inArray { arrayStrings.append(f) } else { core.append(f) }
                o += 8 + u64(o)
            } else {
                precondition(type == 9)
                core += [Field(offset: o, width: 4), Field(offset: o + 4, width: 8)]
                let et = u32(o), n = u64(o + 4)
                o += 12
                for _ in 0..<n { value(et, inArray: true) }
            }
        }
        for _ in 0..<kvs {
            core.append(Field(offset: o, width: 8))
            o += 8 + u64(o)
            core.append(Field(offset: o, width: 4))
            let t = u32(o)
            o += 4
            value(t, inArray: false)
        }
        for _ in 0..<tensors {
            core.append(Field(offset: o, width: 8))
            o += 8 + u64(o)
            core.append(Field(offset: o, width: 4))
            let nd = u32(o)
            o += 4
            for _ in 0..<nd { core.append(Field(offset: o, width: 8)); o += 8 }
            core += [Field(offset: o, width: 4), Field(offset: o + 4, width: 8)]
            o += 12
        }
        headerEnd = o
    }
}

@Suite("GGUF fuzzing")
struct GGUFFuzzTests {
    enum Outcome { case ran, openFailed, modelFailed }

    /// Opens `path`; when it loads, checks the reader's invariants, builds the model and runs token 0.
    /// Problems are returned as text (one `#expect` per attempt would dominate the run time).
    static func attempt(_ path: String) -> (Outcome, problem: String?) {
        let g: GGUFFile
        do {
            g = try GGUFFile(path: path)
        } catch {
            return (.openFailed, nil)
        }
        // Whatever loaded must describe bytes inside the file.
        guard g.dataOffset <= g.fileSize, g.dataOffset % g.alignment == 0 else {
            return (.ran, "data offset \(g.dataOffset) of \(g.fileSize) bytes, alignment \(g.alignment)")
        }
        for t in g.tensors {
            guard t.fileOffset >= g.dataOffset, t.fileOffset + t.byteCount <= g.fileSize,
                  t.type.rowBytes(columns: t.columns).map({ $0 * t.rows }) == t.byteCount else {
                return (.ran, "tensor \(t.name) at \(t.fileOffset)+\(t.byteCount) of \(g.fileSize) bytes")
            }
        }
        do {
            let config = try ModelConfig(gguf: g)
            let model = try Transformer(store: MappedWeightStore(file: g), config: config, contextLength: 16, threads: 1)
            let logits = try model.decode(0)
            return (.ran, logits.count == config.vocabSize ? nil : "\(logits.count) logits for vocab \(config.vocabSize)")
        } catch {
            return (.modelFailed, error is GGUFError || error is ModelError ? nil : "unexpected error type: \(error)")
        }
    }

    static let extremes64: [UInt64] = [0, 1, 2, 3, 4, 5, 7, 8, 31, 32, 33, 63, 64, 65, 255, 256, 1 << 16, 1 << 31,
                                       1 << 32, (1 << 32) + 1, 1 << 40, 1 << 60, 1 << 62, 1 << 63, UInt64.max,
                                       UInt64.max - 1, UInt64.max - 31]
    static let extremes32: [UInt32] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 29, 30, 31, 32, 64, 1 << 16,
                                       0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF]

    static func write(_ v: UInt64, width: Int, at o: Int, into b: inout [UInt8]) {
        for i in 0..<width where o + i < b.count { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    static func read(width: Int, at o: Int, _ b: [UInt8]) -> UInt64 {
        (0..<width).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) }
    }

    static func mutate(_ b: inout [UInt8], map: GGUFFieldMap, dataStart: Int, rng: inout SeededSplitMix64) -> String {
        let kind = rng.below(100)
        let headerEnd = min(map.headerEnd, b.count)
        switch kind {
        case 0..<40:
            // A structural field: an extreme, random or nearby value.
            let fields = rng.below(5) == 0 && !map.arrayStrings.isEmpty ? map.arrayStrings : map.core
            let f = fields[rng.below(fields.count)]
            guard f.offset + f.width <= b.count else { return "skip" }
            let cur = read(width: f.width, at: f.offset, b)
            var v: UInt64
            switch rng.below(4) {
            case 0: v = f.width == 8 ? extremes64[rng.below(extremes64.count)] : UInt64(extremes32[rng.below(extremes32.count)])
            case 1: v = rng.next()
            case 2: v = cur &+ UInt64(rng.below(5)) &- 2
            default: v = rng.below(2) == 0 ? cur &* 2 : cur / 2
            }
            write(v, width: f.width, at: f.offset, into: &b)
            return "field@\(f.offset)/\(f.width)=\(v)"
        case 40..<65:
            // Flip a few bytes of the header, mostly near the start and in the tensor table.
            for _ in 0...rng.below(4) {
                let o = rng.below(3) == 0 ? rng.below(min(256, headerEnd)) : rng.below(headerEnd)
                b[o] ^= UInt8(1 + rng.below(255))
            }
            return "flip"
        case 65..<73:
            // Any 8 header bytes (aligned or not) overwritten with an extreme or random value.
            let o = rng.below(max(1, headerEnd - 8))
            let v = rng.below(2) == 0 ? extremes64[rng.below(extremes64.count)] : rng.next()
            write(v, width: 8, at: o, into: &b)
            return "u64@\(o)"
        case 73..<81:
            let n = rng.below(3) == 0 ? rng.below(b.count) : rng.below(headerEnd + 64)
            b.removeSubrange(min(n, b.count)...)
            return "truncate \(n)"
        case 81..<88:
            let o = rng.below(headerEnd)
            b.insert(contentsOf: (0...rng.below(16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: o)
            return "insert@\(o)"
        case 88..<94:
            let o = rng.below(headerEnd)
            b.removeSubrange(o..<min(b.count, o + 1 + rng.below(16)))
            return "delete@\(o)"
        default:
            // Garbage in the weights (NaN/inf scales and all): must still run without crashing.
            guard dataStart < b.count else { return "skip" }
            for _ in 0..<(1 + rng.below(64)) {
                b[dataStart + rng.below(b.count - dataStart)] = UInt8(truncatingIfNeeded: rng.next())
            }
            return "data"
        }
    }

    @Test("3000 seeded mutations of tiny-q8_0.gguf: each loads and runs, or throws")
    func mutateFixture() throws {
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try TestPaths.fixture("tiny-q8_0.gguf"))))
        let map = GGUFFieldMap(original)
        let dataStart = try GGUFTestKit.open(original) { g in
            #expect(g.dataOffset == (map.headerEnd + g.alignment - 1) / g.alignment * g.alignment)
            return g.dataOffset
        }
        #expect(map.core.count > 100 && map.arrayStrings.count > 400)
        // The unmodified file runs.
        #expect(try GGUFTestKit.withTempFile(original) { Self.attempt($0) }.0 == .ran)

        var rng = SeededSplitMix64(seed: 0x6007_F022)
        var counts: [Outcome: Int] = [:]
        var problems: [String] = []
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pocketlm-fuzz-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let start = Date()
        for i in 0..<3000 {
            var b = original
            var log: [String] = []
            for _ in 0...(rng.below(4) == 0 ? 2 : 0) { log.append(Self.mutate(&b, map: map, dataStart: dataStart, rng: &rng)) }
            let path = dir.appendingPathComponent("\(i).gguf").path
            try GGUFTestKit.writeFile(b, path)
            let (outcome, problem) = Self.attempt(path)
            unlink(path)
            counts[outcome, default: 0] += 1
            if let problem { problems.append("mutation \(i) \(log): \(problem)") }
        }
        #expect(problems.isEmpty, "\(problems.count) problems, first: \(problems.prefix(5))")
        let ran = counts[.ran] ?? 0, open = counts[.openFailed] ?? 0, model = counts[.modelFailed] ?? 0
        print("[fuzz] 3000 mutations in \(String(format: "%.1f", Date().timeIntervalSince(start)))s: ran \(ran), reader threw \(open), config/model threw \(model)")
        #expect(ran + open + model == 3000)
        #expect(ran >= 100, "too few mutated files loaded and ran: \(ran)")
        #expect(open >= 300, "too few mutated files were rejected by the reader: \(open)")
        #expect(model >= 10, "too few mutated files were rejected by ModelConfig/Transformer: \(model)")
    }

    @Test("every single-byte change of a small GGUF loads or throws")
    func everyByte() throws {
        let bytes = GGUFReaderTests.sampleFile().bytes
        var loaded = 0, rejected = 0
        var problems: [String] = []
        for o in 0..<bytes.count {
            for v: UInt8 in [0x00, 0x01, 0x7F, 0x80, 0xFF] where v != bytes[o] {
                var b = bytes
                b[o] = v
                try GGUFTestKit.withTempFile(b) { path in
                    guard let g = try? GGUFFile(path: path) else { rejected += 1; return }
                    loaded += 1
                    // A file that loads describes only bytes inside itself.
                    for t in g.tensors where t.fileOffset < g.dataOffset || t.fileOffset + t.byteCount > g.fileSize {
                        problems.append("byte \(o) = \(v): tensor \(t.name) at \(t.fileOffset)+\(t.byteCount) of \(g.fileSize)")
                    }
                }
            }
        }
        #expect(problems.isEmpty, "\(problems.prefix(5))")
        #expect(loaded > 100 && rejected > 100, "loaded \(loaded), rejected \(rejected)")
    }
}
