import CKernels
import Foundation
import Testing
import PocketLM

/// Block-rows packed files (every quantized type but Q8_0): what a group keeps, and the ordinary file's logits bit
/// for bit in every mode. In an extension so they stay in the serialized "Flash paging" suite (its scratch files).
extension FlashPagingTests {
    @Test("block rows: Q4_0, Q4_1, F32, F16 and BF16 files pack (each group keeps its gate rows, up rows and down blocks as in the source) and compute the original's logits bit for bit in every mode, a float prompt's through OpenBLAS too",
          arguments: ["tiny-q4_0.gguf", "tiny-q4_1.gguf", "tiny-f32.gguf", "tiny-f16.gguf", "tiny-bf16.gguf"])
    func blockRows(fixture: String) throws {
        let path = try Self.packed(fixture, bundleBytes: 4096)
        let f = try GGUFFile(path: path), source = try GGUFFile(path: try TestPaths.fixture(fixture))
        let layout = try #require(try FlashLayout(file: f, config: try ModelConfig(gguf: f)))
        #expect(layout.format == .blockRows)
        let type = try #require(source.tensorInfo("blk.1.ffn_down.weight")).type
        #expect(layout.layerTypes == Array(repeating: .init(gate: type, up: type, down: type), count: 2))
        #expect(layout.groupNeurons % 32 == 0 && layout.groupsPerLayer == 128 / layout.groupNeurons)
        #expect(f.tensorInfo("blk.0.ffn_down_scale") == nil)
        // Group 1 of layer 1: gate row 32 + j is the source's, byte for byte; so is down row 5's block 1.
        let bundles = f.data(of: try #require(f.tensorInfo(FlashLayout.bundlesName(1)))) + layout.bundleBytes
        let gate = source.data(of: try #require(source.tensorInfo("blk.1.ffn_gate.weight")))
        let down = source.data(of: try #require(source.tensorInfo("blk.1.ffn_down.weight")))
        for j in [0, 7, 31] {
            #expect(memcmp(bundles + j * layout.gateRowBytes(1), gate + (32 + j) * layout.gateRowBytes(1), layout.gateRowBytes(1)) == 0)
        }
        // (Group 1 starts at neuron 32: one block in, or 32 float elements.)
        let groupStart = 32 / type.blockSize * type.blockBytes
        #expect(layout.downSliceBytes(1) == layout.groupNeurons / type.blockSize * type.blockBytes)
        #expect(memcmp(bundles + layout.downOffset(1) + 5 * layout.downSliceBytes(1), down + 5 * layout.downRowBytes(1) + groupStart,
                       layout.downSliceBytes(1)) == 0)

        let original = try Self.logits(try TestPaths.fixture(fixture), Self.tokens)
        // A prompt's F16/BF16 rows (and F32's where our AVX-512 panel kernel does not run) go through OpenBLAS sgemm,
        // whose edges sum in an order that follows the call's shape: the paged file's batch gathers each matrix whole
        // and makes the ordinary file's call, so these too are equal bit for bit (they differed in the last digits
        // group by group under OpenBLAS's Haswell and SkylakeX kernels; its Prescott ones, which Debian's build picks
        // on CPUs it does not know when OPENBLAS_CORETYPE is unset, summed these shapes alike either way).
        for paging in [PagingOptions.resident, PagingOptions(mode: .flash), PagingOptions(mode: .naive), PagingOptions(mode: .mmap),
                       PagingOptions(mode: .flash, memoryBudget: 1 << 40), PagingOptions(mode: .flash, memoryBudget: 1 << 40, window: 1)] {
            let packed = try Self.logits(path, Self.tokens, paging: paging)
            let differing = zip(packed, original).filter { $0 != $1 }.count
            #expect(packed.count == original.count && differing == 0, "\(fixture) \(paging.mode): \(differing) logits differ")
        }
        // Every group in memory and no window (resident, or a budget that holds the whole FFN): the layers are
        // reassembled once at load into the ordinary matrices and run as the ordinary file's; otherwise per group.
        for (paging, reassembled) in [(PagingOptions.resident, 2), (PagingOptions(mode: .flash, memoryBudget: 1 << 40), 2),
                                      (PagingOptions(mode: .flash, memoryBudget: 1 << 40, window: 1), 0), (PagingOptions(mode: .naive), 0)] {
            let lm = try LanguageModel(path: path, options: LoadOptions(threads: 1, paging: paging))
            #expect(lm.transformer.feedForward?.reassembledLayers == reassembled, "\(paging)")
        }
        // A file whose FFN matrices change type between layers, and the rules that need the column format, are refused.
        #expect(throws: PagingError.self) {
            try LanguageModel(path: path, options: LoadOptions(threads: 1, paging: PagingOptions(mode: .naive, sparsity: .exact(keep: 0.5))))
        }
    }

    @Test("block rows: SmolLM2 Q4_K_M (Q5_0 gate/up, ffn_down Q6_K in some layers and Q4_K in others) packs with per-layer types and computes the ordinary file's logits bit for bit")
    func blockRowsKQuant() throws {
        let (source, path) = try Self.packedSmolLM2KQuant()
        let f = try GGUFFile(path: path)
        let layout = try #require(try FlashLayout(file: f, config: try ModelConfig(gguf: f)))
        #expect(layout.format == .blockRows && layout.groupNeurons % 256 == 0)
        #expect(Set(layout.layerTypes.map(\.down)) == [.q6_K, .q4_K] && Set(layout.layerTypes.map(\.gate)) == [.q5_0])
        // More tokens than the few-inputs kernels take: the prompt's groups go through the packed batch kernel a tile
        // at a time (`Linear.matmulPackingTiles`) where this tier packs their types.
        let tokens = [1, 504, 3458, 282, 4649, 314, 1345, 30, 378, 3458, 282, 30]
        let original = try Self.logits(source, tokens)
        for paging in [PagingOptions.resident, PagingOptions(mode: .naive), PagingOptions(mode: .flash, memoryBudget: 1 << 40, window: 1)] {
            let packed = try Self.logits(path, tokens, paging: paging)
            let differing = zip(packed, original).filter { $0 != $1 }.count
            #expect(packed.count == original.count && differing == 0, "\(paging.mode): \(differing) logits differ")
        }
        // A Q4_K layer's groups are read without the padding up to the Q6_K layers' size: naive reads exactly the
        // groups' blocks (in 4 KiB units), and the same logits.
        let q4 = try #require(layout.layerTypes.firstIndex { $0.down == .q4_K }), q6 = try #require(layout.layerTypes.firstIndex { $0.down == .q6_K })
        #expect(layout.groupReadBytes(q6) == layout.bundleBytes && layout.groupReadBytes(q4) < layout.bundleBytes)
        #expect(layout.groupReadBytes(q4) % 4096 == 0 && layout.groupReadBytes(q4) - 4096 < layout.downOffset(q4) + layout.hiddenSize * layout.downSliceBytes(q4))
        let lm = try LanguageModel(path: path, options: LoadOptions(threads: 2, contextLength: 64, paging: PagingOptions(mode: .naive)))
        _ = try lm.transformer.decode(tokens[0])
        let ffn = try #require(lm.transformer.feedForward), before = ffn.stats
        let naiveLogits = Array(try lm.transformer.decode(tokens[1])).map(\.bitPattern)
        #expect(naiveLogits == Array(original[(original.count / (2 * tokens.count))..<(2 * original.count / (2 * tokens.count))]))
        let perToken = (0..<layout.layerTypes.count).reduce(0) { $0 + layout.groupsPerLayer * layout.groupReadBytes($1) }
        #expect((ffn.stats - before).bytesRead == perToken)
        // A budget's remainder pins its extra groups in the Q6_K layers first (their groups are the larger reads).
        let minimum = try Self.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: 1 << 40)).plan.minimumBytes
        let plan = try Self.pagedModel(path, PagingOptions(mode: .flash, memoryBudget: minimum + 2 * layout.bundleBytes)).plan
        #expect(plan.pinnedGroups == 0 && plan.extraPinnedLayers.count == 2)
        #expect(plan.extraPinnedLayers.allSatisfy { layout.layerTypes[$0].down == .q6_K })
    }
}
