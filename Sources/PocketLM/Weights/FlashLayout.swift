import CKernels

/// The flash layout of a model file (written by `FlashPacker`, `pocketlm pack`): still a GGUF file, with the
/// resident tensors (embeddings, norms, attention) as they were, and each layer's FFN stored as row-column
/// bundles that a paged store reads from storage.
///
/// Neuron i of a layer is one bundle: gate row i and up row i (Q8_0 blocks, as in the source file) followed by
/// down column i (the `dim` int8 quants of the down matrix at column i; the down rows' f16 block scales are a
/// small resident tensor). `groupNeurons` consecutive bundles fill one read of `bundleBytes` (a multiple of
/// 4 KiB, zero-padded), and every layer's bundle tensor starts 4 KiB-aligned in the file, so any run of groups
/// is one direct-I/O read.
public struct FlashLayout: Sendable, Equatable {
    public static let versionKey = "pocketlm.flash.version"
    public static let bundleBytesKey = "pocketlm.flash.bundle_bytes"
    public static let groupNeuronsKey = "pocketlm.flash.group_neurons"
    public static let neuronBytesKey = "pocketlm.flash.neuron_bytes"
    public static let weightTypeKey = "pocketlm.flash.weight_type"
    public static let version = 1
    /// Alignment of every tensor in a packed file: direct I/O needs offsets and lengths in whole blocks.
    public static let ioAlignment = 4096

    public let bundleBytes: Int
    public let groupNeurons: Int
    public let neuronBytes: Int
    public let weightType: GGMLType
    public let hiddenSize: Int
    public let intermediateSize: Int

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
        // Round the read size up to whole 4 KiB blocks, and to at least one neuron.
        let align = FlashLayout.ioAlignment
        let bytes = (max(requested, neuron) + align - 1) / align * align
        self.bundleBytes = bytes
        self.groupNeurons = min(intermediateSize, bytes / neuron)
        self.neuronBytes = neuron
        self.weightType = .q8_0
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
    }

    /// The layout a packed file records, or nil for an ordinary file.
    public init?(file: GGUFFile, config: ModelConfig) throws(GGUFError) {
        guard file.metadata[FlashLayout.versionKey] != nil else { return nil }
        let version = try file.int(FlashLayout.versionKey)
        guard version == FlashLayout.version else {
            throw .badMetadata(key: FlashLayout.versionKey, reason: "flash layout version \(version); this build reads version \(FlashLayout.version)")
        }
        bundleBytes = try file.int(FlashLayout.bundleBytesKey)
        groupNeurons = try file.int(FlashLayout.groupNeuronsKey)
        neuronBytes = try file.int(FlashLayout.neuronBytesKey)
        weightType = GGMLType(rawValue: UInt32(truncatingIfNeeded: try file.int(FlashLayout.weightTypeKey)))
        hiddenSize = config.hiddenSize
        intermediateSize = config.intermediateSize
        guard weightType == .q8_0 else {
            throw .badMetadata(key: FlashLayout.weightTypeKey, reason: "bundles of \(weightType) weights are not supported (Q8_0 only)")
        }
        guard neuronBytes == Int(pl_bundle_bytes_q8_0(Int64(hiddenSize))), groupNeurons >= 1,
              groupNeurons * neuronBytes <= bundleBytes, bundleBytes % FlashLayout.ioAlignment == 0 else {
            throw .badMetadata(key: FlashLayout.bundleBytesKey,
                               reason: "\(groupNeurons) neurons of \(neuronBytes) bytes do not fit bundles of \(bundleBytes) bytes for hidden size \(hiddenSize)")
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
        [(FlashLayout.versionKey, .uint32(UInt32(FlashLayout.version))),
         (FlashLayout.bundleBytesKey, .uint32(UInt32(bundleBytes))),
         (FlashLayout.groupNeuronsKey, .uint32(UInt32(groupNeurons))),
         (FlashLayout.neuronBytesKey, .uint32(UInt32(neuronBytes))),
         (FlashLayout.weightTypeKey, .uint32(weightType.rawValue))]
    }

    /// Neurons of group `g`: the last group may be short.
    public func neurons(inGroup g: Int) -> Range<Int> {
        (g * groupNeurons)..<min(intermediateSize, (g + 1) * groupNeurons)
    }
}
