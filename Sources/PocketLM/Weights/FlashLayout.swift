import CKernels

/// The flash layout of a model file (written by `FlashPacker`, `pocketlm pack`): still a GGUF file, with the
/// resident tensors (embeddings, norms, attention) as they were, and each layer's FFN stored as row-column
/// bundles that a paged store reads from storage.
///
/// Two formats:
/// - `columns` (version 1, Q8_0 files): neuron i of a layer is one bundle: gate row i and up row i (Q8_0 blocks, as
///   in the source file) followed by down column i (the `dim` int8 quants of the down matrix at column i; the down
///   rows' f16 block scales are a small resident tensor).
/// - `blockRows` (version 2, every other type: the other quantized ones, F32, F16, BF16): a group of `groupNeurons`
///   consecutive neurons (a multiple of the down type's block, 32 or 256) holds their gate rows, their up rows and,
///   for each of the `dim` down rows, the down blocks covering those neurons — every block exactly as in the source,
///   whatever its type (a K-quant block keeps its super-block scales and minimums; a float "block" is one element).
///   A down column cannot be cut out of a block with sub-block scales without requantizing it, so the group, not
///   the neuron, is the unit: the smallest group is one block of neurons (32, or 256 for K-quants; 32 for floats,
///   whose kernels take rows in 16s).
/// `groupNeurons` consecutive bundles fill one read of `bundleBytes` (a multiple of 4 KiB, zero-padded), and every
/// layer's bundle tensor starts 4 KiB-aligned in the file, so any run of groups is one direct-I/O read.
public struct FlashLayout: Sendable, Equatable {
    public static let versionKey = "pocketlm.flash.version"
    public static let bundleBytesKey = "pocketlm.flash.bundle_bytes"
    public static let groupNeuronsKey = "pocketlm.flash.group_neurons"
    public static let neuronBytesKey = "pocketlm.flash.neuron_bytes"
    public static let weightTypeKey = "pocketlm.flash.weight_type"
    public static let gateTypeKey = "pocketlm.flash.gate_type"
    public static let upTypeKey = "pocketlm.flash.up_type"
    public static let downTypeKey = "pocketlm.flash.down_type"
    public static let version = 1
    public static let blockRowsVersion = 2

    public enum Format: Sendable, Equatable {
        case columns
        case blockRows
    }
    /// Alignment of every tensor in a packed file: direct I/O needs offsets and lengths in whole blocks.
    public static let ioAlignment = 4096

    public let bundleBytes: Int
    public let groupNeurons: Int
    public let neuronBytes: Int
    public let weightType: GGMLType
    public let hiddenSize: Int
    public let intermediateSize: Int
    public let format: Format
    /// Source types of one layer's gate, up and down matrices.
    public struct FFNTypes: Sendable, Equatable {
        public let gate: GGMLType
        public let up: GGMLType
        public let down: GGMLType
        public init(gate: GGMLType, up: GGMLType, down: GGMLType) { (self.gate, self.up, self.down) = (gate, up, down) }
        static let q8_0 = FFNTypes(gate: .q8_0, up: .q8_0, down: .q8_0)
    }
    /// Per layer (block rows; a Q4_K_M file's `ffn_down` is Q6_K in some layers and Q4_K in others); empty for the
    /// columns format, whose matrices are all Q8_0.
    public let layerTypes: [FFNTypes]

    public func types(_ layer: Int) -> FFNTypes { layerTypes.isEmpty ? .q8_0 : layerTypes[layer] }
    public func gateRowBytes(_ layer: Int) -> Int { types(layer).gate.rowBytes(columns: hiddenSize) ?? 0 }
    public func upRowBytes(_ layer: Int) -> Int { types(layer).up.rowBytes(columns: hiddenSize) ?? 0 }
    /// Bytes of one down row (ffn elements), as the dense kernels read it.
    public func downRowBytes(_ layer: Int) -> Int { types(layer).down.rowBytes(columns: intermediateSize) ?? 0 }
    /// Bytes of a group's slice of one down row (block rows): its neurons' blocks.
    public func downSliceBytes(_ layer: Int) -> Int { groupNeurons / types(layer).down.blockSize * types(layer).down.blockBytes }
    /// Where a group's up rows and down slices start inside its bundle (block rows).
    public func upOffset(_ layer: Int) -> Int { groupNeurons * gateRowBytes(layer) }
    public func downOffset(_ layer: Int) -> Int { groupNeurons * (gateRowBytes(layer) + upRowBytes(layer)) }
    /// Bytes read for one group of layer `layer`: its rows and down slices rounded up to whole 4 KiB blocks. Every
    /// group is `bundleBytes` apart (the largest layer's size), so a layer of smaller blocks (a Q4_K_M file's Q4_K
    /// `ffn_down` beside Q6_K ones: 436 KiB of 492 for Qwen2.5-0.5B's shape) leaves its padding unread.
    public func groupReadBytes(_ layer: Int) -> Int {
        guard format == .blockRows else { return bundleBytes }
        let align = FlashLayout.ioAlignment
        return min(bundleBytes, (downOffset(layer) + hiddenSize * downSliceBytes(layer) + align - 1) / align * align)
    }
    /// The largest down matrix of any layer, bytes.
    public var largestDownBytes: Int { (0..<max(1, layerTypes.count)).map { hiddenSize * downRowBytes($0) }.max() ?? 0 }

    public var groupsPerLayer: Int { (intermediateSize + groupNeurons - 1) / groupNeurons }
    /// Bytes of one layer's bundle tensor.
    public var layerBytes: Int { groupsPerLayer * bundleBytes }

    public static func bundlesName(_ layer: Int) -> String { "blk.\(layer).ffn_bundles" }
    public static func downScaleName(_ layer: Int) -> String { "blk.\(layer).ffn_down_scale" }

    /// The layout of `bundleBytes`-sized groups for a model's FFN shape (Q8_0 weights).
    public init(hiddenSize: Int, intermediateSize: Int, bundleBytes requested: Int) throws(ModelError) {
        guard hiddenSize % 32 == 0, intermediateSize % 32 == 0 else {
            throw .invalidConfig(field: "hidden_size", reason: "the flash layout needs hidden and FFN sizes in whole 32-element blocks")
        }
        let neuron = Int(pl_bundle_bytes_q8_0(Int64(hiddenSize)))
        // Round the read size up to whole 4 KiB blocks, to at least one neuron and at most the whole layer (a larger
        // read had been zero padding in the file: --bundle-bytes 16M packed SmolLM2 Q8_0 into 566 MB, not 147).
        let align = FlashLayout.ioAlignment
        let bytes = (min(max(requested, neuron), intermediateSize * neuron) + align - 1) / align * align
        self.bundleBytes = bytes
        self.groupNeurons = min(intermediateSize, bytes / neuron)
        self.neuronBytes = neuron
        self.weightType = .q8_0
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.format = .columns
        self.layerTypes = []
    }

    /// The block-rows layout for each layer's gate/up/down types: groups of whole down blocks (the largest block of
    /// any layer, 256 once a K-quant is present; at least 32 neurons), as many as fit in `bundleBytes` for the
    /// largest layer, rounded up to 4 KiB.
    public init(hiddenSize: Int, intermediateSize: Int, layerTypes: [FFNTypes], bundleBytes requested: Int) throws(ModelError) {
        let block = max(FlashLayout.smallestGroup, layerTypes.map(\.down.blockSize).max() ?? 0)
        var perBlock = 0   // one group of `block` neurons, bytes, in the largest layer
        for t in layerTypes {
            guard let g = t.gate.rowBytes(columns: hiddenSize), let u = t.up.rowBytes(columns: hiddenSize),
                  t.down.blockSize > 0, block % t.down.blockSize == 0, intermediateSize % block == 0,
                  t.down.rowBytes(columns: intermediateSize) != nil else {
                throw .invalidConfig(field: "hidden_size", reason: "\(hiddenSize) × \(intermediateSize) is not whole blocks of \(t.gate)/\(t.up)/\(t.down)")
            }
            perBlock = max(perBlock, block * (g + u) + hiddenSize * block / t.down.blockSize * t.down.blockBytes)
        }
        guard perBlock > 0 else { throw .invalidConfig(field: "block_count", reason: "no layers to pack") }
        // As many whole blocks of neurons as the requested read holds (at least one), then rounded up to 4 KiB: a
        // group is not a divisor of 64 KiB, so rounding the read instead would leave up to half of it padding.
        let align = FlashLayout.ioAlignment
        let blocks = min(intermediateSize / block, max(1, requested / perBlock))
        self.bundleBytes = (blocks * perBlock + align - 1) / align * align
        self.groupNeurons = blocks * block
        self.neuronBytes = perBlock / block
        self.weightType = layerTypes[0].down
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.format = .blockRows
        self.layerTypes = layerTypes
    }

    /// The layout a packed file records, or nil for an ordinary file.
    public init?(file: GGUFFile, config: ModelConfig) throws(GGUFError) {
        guard file.metadata[FlashLayout.versionKey] != nil else { return nil }
        let version = try file.int(FlashLayout.versionKey)
        guard version == FlashLayout.version || version == FlashLayout.blockRowsVersion else {
            throw .badMetadata(key: FlashLayout.versionKey, reason: "flash layout version \(version); this build reads versions \(FlashLayout.version) and \(FlashLayout.blockRowsVersion)")
        }
        bundleBytes = try file.int(FlashLayout.bundleBytesKey)
        groupNeurons = try file.int(FlashLayout.groupNeuronsKey)
        neuronBytes = try file.int(FlashLayout.neuronBytesKey)
        weightType = GGMLType(rawValue: UInt32(truncatingIfNeeded: try file.int(FlashLayout.weightTypeKey)))
        hiddenSize = config.hiddenSize
        intermediateSize = config.intermediateSize
        if version == FlashLayout.version {
            format = .columns
            layerTypes = []
            guard weightType == .q8_0 else {
                throw .badMetadata(key: FlashLayout.weightTypeKey, reason: "bundles of \(weightType) weights are not supported (Q8_0 only)")
            }
            guard neuronBytes == Int(pl_bundle_bytes_q8_0(Int64(hiddenSize))), groupNeurons >= 1,
                  groupNeurons * neuronBytes <= bundleBytes, bundleBytes % FlashLayout.ioAlignment == 0 else {
                throw .badMetadata(key: FlashLayout.bundleBytesKey,
                                   reason: "\(groupNeurons) neurons of \(neuronBytes) bytes do not fit bundles of \(bundleBytes) bytes for hidden size \(hiddenSize)")
            }
        } else {
            format = .blockRows
            let layers = config.numHiddenLayers
            func types(_ key: String) throws(GGUFError) -> [GGMLType] {
                guard case .array(let items) = file.metadata[key], items.count == layers else {
                    throw .badMetadata(key: key, reason: "expected one type per layer (\(layers))")
                }
                var out: [GGMLType] = []
                for item in items {
                    let t = GGMLType(rawValue: UInt32(truncatingIfNeeded: item.int ?? -1))
                    guard FlashLayout.packs(t) else {
                        throw .badMetadata(key: key, reason: "bundles of \(t) weights are not supported (\(GGMLType.computableNames))")
                    }
                    out.append(t)
                }
                return out
            }
            let gates = try types(FlashLayout.gateTypeKey), ups = try types(FlashLayout.upTypeKey), downs = try types(FlashLayout.downTypeKey)
            layerTypes = (0..<layers).map { FFNTypes(gate: gates[$0], up: ups[$0], down: downs[$0]) }
            for l in 0..<layers {
                let t = layerTypes[l]
                guard t.gate.rowBytes(columns: hiddenSize) != nil, t.up.rowBytes(columns: hiddenSize) != nil,
                      t.down.rowBytes(columns: intermediateSize) != nil, groupNeurons >= t.down.blockSize,
                      groupNeurons % t.down.blockSize == 0, downOffset(l) + hiddenSize * downSliceBytes(l) <= bundleBytes,
                      bundleBytes % FlashLayout.ioAlignment == 0 else {
                    throw .badMetadata(key: FlashLayout.bundleBytesKey,
                                       reason: "groups of \(groupNeurons) \(t.gate)/\(t.up)/\(t.down) neurons (layer \(l)) do not fit bundles of \(bundleBytes) bytes for hidden size \(hiddenSize)")
                }
            }
        }
        let align = FlashLayout.ioAlignment
        for layer in 0..<config.numHiddenLayers {
            let name = FlashLayout.bundlesName(layer)
            guard let info = file.tensorInfo(name) else { throw .missingTensor(name) }
            guard info.type == .i8, info.byteCount == layerBytes else {
                throw .tensorShape(tensor: name, expected: [layerBytes], found: info.shape)
            }
            guard info.fileOffset % align == 0 else {
                throw .corrupt("tensor '\(name)' starts at byte \(info.fileOffset), not on a \(align)-byte boundary")
            }
        }
    }

    public var metadata: [(String, GGUFValue)] {
        var m: [(String, GGUFValue)] = [
            (FlashLayout.versionKey, .uint32(UInt32(format == .columns ? FlashLayout.version : FlashLayout.blockRowsVersion))),
            (FlashLayout.bundleBytesKey, .uint32(UInt32(bundleBytes))),
            (FlashLayout.groupNeuronsKey, .uint32(UInt32(groupNeurons))),
            (FlashLayout.neuronBytesKey, .uint32(UInt32(neuronBytes))),
            (FlashLayout.weightTypeKey, .uint32(weightType.rawValue))]
        if format == .blockRows {
            m += [(FlashLayout.gateTypeKey, .array(GGUFArray(layerTypes.map { .uint32($0.gate.rawValue) }))),
                  (FlashLayout.upTypeKey, .array(GGUFArray(layerTypes.map { .uint32($0.up.rawValue) }))),
                  (FlashLayout.downTypeKey, .array(GGUFArray(layerTypes.map { .uint32($0.down.rawValue) })))]
        }
        return m
    }

    /// Whether FFN matrices of type `type` pack: every type the kernels compute (floats and quantized).
    public static func packs(_ type: GGMLType) -> Bool { type.isComputable }

    /// The fewest neurons of a block-rows group: float rows have no blocks of their own, and the kernels take rows
    /// 16 at a time.
    static let smallestGroup = 32

    /// Neurons of group `g`: the last group may be short.
    public func neurons(inGroup g: Int) -> Range<Int> {
        (g * groupNeurons)..<min(intermediateSize, (g + 1) * groupNeurons)
    }
}
