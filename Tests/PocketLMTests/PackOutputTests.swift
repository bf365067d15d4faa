import Foundation
import Testing
import PocketLM

/// What packing does to the file it writes and to the files around it, and inputs a budgeted load refuses: the
/// cases a user probing `pocketlm pack` and `run --memory-budget` found broken.
@Suite("Pack output and budgeted load inputs", .serialized)
struct PackOutputTests {
    /// A fresh, empty directory of this test run.
    static func directory(_ name: String) throws -> String {
        let dir = FlashPagingTests.scratch("pack-output-\(name)")
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func listing(_ dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
    }

    static func bytes(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

    @Test("a budgeted load with a context past the longest accepted is an error naming the context, not an arithmetic overflow")
    func hugeContextWithBudget() throws {
        let path = try FlashPagingTests.packed("tiny-q8_0.gguf")
        for context in [(1 << 20) + 1, Int.max / 2, Int.max] {
            let error = #expect(throws: ModelError.self) {
                try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: context, paging: PagingOptions(
                    mode: .flash, memoryBudget: 1 << 30)))
            }
            guard case .invalidConfig(let field, let reason)? = error else {
                Issue.record("context \(context): wrong error \(String(describing: error))")
                continue
            }
            #expect(field == "context" && reason.contains("1048576") && reason.contains("found \(context)"), "\(reason)")
        }
        // The longest accepted context still gets to the budget's own check (its KV cache is larger than the budget).
        #expect(throws: PagingError.self) {
            try LanguageModel(path: path, options: LoadOptions(threads: 1, contextLength: 1 << 20, paging: PagingOptions(
                mode: .flash, memoryBudget: 64 << 20)))
        }
    }

    @Test("sizes: a percentage or size past 1e15 bytes or under one byte is an error, not an overflow trap or a budget of 0 B")
    func byteCountBounds() throws {
        #expect(try ByteCount.parse("150%", reference: 1000) == 1500)
        #expect(try ByteCount.parse("1.5G") == 3 << 29 && ByteCount.parse("150MB") == 150 << 20 && ByteCount.parse("1") == 1)
        for text in ["1e20%", "1e300%", "0.5", "0.0000001%", "99999999G", "1e16"] {
            let error = #expect(throws: PagingError.self, "\(text)") { try ByteCount.parse(text, reference: 100 << 20) }
            #expect(error?.localizedDescription.contains("cannot read '\(text)' as a size") == true, "\(String(describing: error))")
        }
    }

    @Test("resident mode under a budget keeps every group, so the budget must hold them all: short of that it is an error stating that minimum, at it the weights fit")
    func residentModeBudget() throws {
        let (_, path) = try FlashPagingTests.packedSmolLM2KQuant()
        let flash = try FlashPagingTests.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: 1 << 40)).plan
        let layout = try #require(try FlashLayout(file: GGUFFile(path: path), config: ModelConfig(gguf: GGUFFile(path: path))))
        let layers = try ModelConfig(gguf: GGUFFile(path: path)).numHiddenLayers
        let everything = flash.residentBytes + layers * layout.layerBytes
        #expect(layers > 2 && flash.minimumBytes < everything)
        // Flash's minimum runs flash; resident mode there would hold every group past its budget.
        let short = #expect(throws: PagingError.self) {
            try FlashPagingTests.pagedModel(path, PagingOptions(mode: .resident, memoryBudget: flash.minimumBytes))
        }
        guard case .budgetTooSmall(let budget, let minimum, _)? = short else {
            Issue.record("resident mode at flash's minimum: \(String(describing: short))")
            return
        }
        #expect(budget == flash.minimumBytes && minimum == everything)
        #expect(short?.localizedDescription.contains("raise the memory budget to at least") == true)
        let fits = try FlashPagingTests.pagedModel(path, PagingOptions(mode: .resident, memoryBudget: everything)).plan
        #expect(fits.weightBytes <= everything && fits.pinnedGroups == layout.groupsPerLayer)
    }

    @Test("a budget that keeps every group (the layers reassembled at load): the peak resident set stays within it, run after run")
    func everyGroupKeptWithinBudget() throws {
        let packed = FlashPagingTests.scratch("smollm2-q4_1.packed.gguf")
        if !FileManager.default.fileExists(atPath: packed) {
            _ = try FlashPacker.pack(source: try TestPaths.model("SmolLM2-135M-Instruct.Q4_1.gguf"), output: packed)
        }
        let budget = 175 << 20
        // The reassembly's transient row layouts once stayed in malloc's heap in most runs (peak 175–179 MiB, else
        // 132–137): several runs, each within the budget.
        for run in 0..<4 {
            let r = try CLITests.pocketlm(["run", "--model", packed, "--memory-budget", "175M", "--context", "256", "--prompt",
                                           "The capital of France is", "--max-tokens", "8", "--temperature", "0", "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            let object = try CLITests.json(r.stdout)
            let plan = try #require((object["paging"] as? [String: Any])?["plan"] as? [String: Any])
            #expect(plan["pinned_groups"] as? Int == plan["groups_per_layer"] as? Int, "not every group kept: \(plan)")
            let peak = try #require(object["peak_rss_bytes"] as? Int)
            #expect(peak <= budget, "run \(run): peak RSS \(peak >> 20) MiB > budget 175 MiB")
        }
    }

    @Test("pack refuses an output that is its source through a symbolic or a hard link, and leaves the source as it was")
    func outputIsSourceThroughLink() throws {
        let dir = try Self.directory("links")
        let source = dir + "/source.gguf"
        try FileManager.default.copyItem(atPath: try TestPaths.fixture("tiny-q8_0.gguf"), toPath: source)
        let original = try #require(Self.bytes(source))
        try FileManager.default.createSymbolicLink(atPath: dir + "/symbolic.gguf", withDestinationPath: "source.gguf")
        try FileManager.default.linkItem(atPath: source, toPath: dir + "/hard.gguf")
        for out in [dir + "/symbolic.gguf", dir + "/hard.gguf", dir + "/./source.gguf"] {
            let error = #expect(throws: PagingError.self) { try FlashPacker.pack(source: source, output: out, bundleBytes: 4096) }
            #expect(error?.localizedDescription.contains("another file than its source") == true, "\(out): \(String(describing: error))")
            #expect(Self.bytes(source) == original, "\(out) changed the source")
        }
        #expect(try Self.listing(dir) == ["hard.gguf", "source.gguf", "symbolic.gguf"])
    }

    @Test("pack over an existing file: the file keeps its old bytes while packing runs, holds the packed model after, and nothing else is left in its directory")
    func existingOutputReplacedWhenComplete() throws {
        let dir = try Self.directory("existing")
        let out = dir + "/out.gguf"
        let old = Data("an older file under the same name".utf8)
        try old.write(to: URL(fileURLWithPath: out))
        var checks = 0, unchanged = 0
        let layout = try FlashPacker.pack(source: try TestPaths.fixture("tiny-q8_0.gguf"), output: out, bundleBytes: 4096) { _ in
            checks += 1
            if Self.bytes(out) == old { unchanged += 1 }
        }
        #expect(checks > 2 && unchanged == checks, "the old file changed during \(checks - unchanged) of \(checks) steps")
        let packed = try GGUFFile(path: out)
        #expect(try FlashLayout(file: packed, config: ModelConfig(gguf: packed))?.bundleBytes == layout.bundleBytes)
        #expect(try Self.listing(dir) == ["out.gguf"])
    }

    @Test("a writer dropped unfinished leaves the destination as it was and no partial file; a missing directory or a directory as the destination is an error saying it cannot write, raised before any bytes are produced")
    func unfinishedWriterAndBadDestinations() throws {
        let dir = try Self.directory("writer")
        let out = dir + "/x.gguf"
        let old = Data("old".utf8)
        try old.write(to: URL(fileURLWithPath: out))
        do {
            let w = try GGUFWriter(path: out, metadata: [], tensors: [.init(name: "a", shape: [64], type: .i8)])
            try [UInt8](repeating: 7, count: 10).withUnsafeBytes { try w.write($0) }
            #expect(Self.bytes(out) == old)
            #expect(throws: GGUFError.self) { try w.finish() }   // 10 of 64 bytes
        }
        #expect(Self.bytes(out) == old)
        #expect(try Self.listing(dir) == ["x.gguf"])

        let missing = dir + "/no-such-directory/y.gguf"
        let e1 = #expect(throws: GGUFError.self) { try GGUFWriter(path: missing, metadata: [], tensors: []) }
        #expect(e1?.localizedDescription == "cannot write \(missing): No such file or directory")
        let sub = dir + "/sub"
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: false)
        let e2 = #expect(throws: GGUFError.self) { try GGUFWriter(path: sub, metadata: [], tensors: []) }
        #expect(e2?.localizedDescription == "cannot write \(sub): Is a directory")
        #expect(try Self.listing(dir) == ["sub", "x.gguf"])
        #expect(try Self.listing(sub).isEmpty)
    }

    @Test("pocketlm pack interrupted (SIGINT) once writing began: it dies of the signal, --out keeps its old bytes and no partial file is left")
    func interruptedPackLeavesOutputAlone() throws {
        let binary = CLITests.binary
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw TestSetupError("missing \(binary): run `make test` (it builds the CLI in release first)")
        }
        // The largest SmolLM2 file: its packing writes for long enough to be interrupted in the middle.
        let source = try TestPaths.model("SmolLM2-135M-Instruct.F32.gguf")
        let dir = try Self.directory("interrupted")
        let out = dir + "/out.gguf"
        let old = Data("an older file under the same name".utf8)
        try old.write(to: URL(fileURLWithPath: out))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["pack", "--model", source, "--out", out]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Writing has begun once the directory holds another file or --out changed.
        var began = false
        while p.isRunning {
            if try Self.listing(dir).count > 1 || Self.bytes(out) != old { began = true; break }
            usleep(2_000)
        }
        try #require(began, "the pack ended (status \(p.terminationStatus)) before it was seen writing")
        p.interrupt()
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal && p.terminationStatus == SIGINT,
                "reason \(p.terminationReason.rawValue), status \(p.terminationStatus)")
        #expect(Self.bytes(out) == old, "--out was changed")
        #expect(try Self.listing(dir) == ["out.gguf"])
    }
}
