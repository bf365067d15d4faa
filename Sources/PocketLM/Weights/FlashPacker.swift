import CKernels
import Foundation

/// Rewrites a model into the flash layout (`FlashLayout`): resident tensors first and together, then one
/// 4 KiB-aligned bundle tensor per layer. Quantized blocks are copied as they are, so the packed model computes the
/// same numbers: a Q8_0 file gets the columns format (a down column keeps its int8 quants; its block scales go to
/// the resident `ffn_down_scale` tensor), any other file (other quantized types, F32, F16, BF16) the block-rows
/// format (each group of neurons keeps its gate rows, up rows and the down blocks covering it, whatever their types). A predictor file from weights-tools/train_predictor.py is copied in alongside.
public enum FlashPacker {
    /// Tensors a predictor file contributes per layer (see weights-tools/train_predictor.py).
    public static let predictorSuffixes = ["ffn_pred_a", "ffn_pred_b", "ffn_pred_bias", "ffn_mass"]
    public static let predictorMetadataPrefix = "pocketlm.predictor."

    /// Packs `source` into `output`; `progress` gets the fraction done after each tensor.
    public static func pack(source path: String, output: String, bundleBytes: Int = 64 * 1024,
                            predictor predictorPath: String? = nil,
                            progress: (Double) -> Void = { _ in }) throws -> FlashLayout {
        let source = try GGUFFile(path: path)
        // Any architecture PocketLM runs (an unknown one is refused here, naming it): each has a gated FFN in
        // ffn_gate/ffn_up/ffn_down, and what differs — SwiGLU or GeGLU, a norm after the FFN, biases, an untied
        // head — is the architecture's to apply at run time (DecoderTraits), not the bundles'.
        let config = try ModelConfig(gguf: source)
        if FlashLayout.metadataPresent(in: source) {
            throw PagingError.invalidOption("\(path) is already packed")
        }
        // The same file by identity, not by name: through a symbolic or hard link the source would be replaced.
        var sourceStat = stat(), outputStat = stat()
        if stat(path, &sourceStat) == 0, stat(output, &outputStat) == 0,
           sourceStat.st_dev == outputStat.st_dev, sourceStat.st_ino == outputStat.st_ino {
            throw PagingError.invalidOption("the packed file must be another file than its source \(path)")
        }
        let dim = config.hiddenSize, ffn = config.intermediateSize, layers = config.numHiddenLayers
        func ffnTensor(_ layer: Int, _ part: String, shape: [Int]) throws -> GGUFTensorInfo {
            let name = "blk.\(layer).\(part).weight"
            guard let info = source.tensorInfo(name) else { throw GGUFError.missingTensor(name) }
            guard info.shape == shape else { throw GGUFError.tensorShape(tensor: name, expected: shape, found: info.shape) }
            guard FlashLayout.packs(info.type) else {
                throw PagingError.unsupportedWeights(tensor: name, type: info.type.description)
            }
            return info
        }
        var ffnNames = Set<String>()
        var layerTypes: [FlashLayout.FFNTypes] = []
        for l in 0..<layers {
            let gate = try ffnTensor(l, "ffn_gate", shape: [dim, ffn]), up = try ffnTensor(l, "ffn_up", shape: [dim, ffn])
            let down = try ffnTensor(l, "ffn_down", shape: [ffn, dim])
            layerTypes.append(.init(gate: gate.type, up: up.type, down: down.type))
            ffnNames.formUnion([gate.name, up.name, down.name])
        }
        // All Q8_0: the columns format (neuron-sized bundles, its own gather kernels); anything else: block rows.
        let columns = layerTypes.allSatisfy { $0 == .init(gate: .q8_0, up: .q8_0, down: .q8_0) }
        let layout = columns ? try FlashLayout(hiddenSize: dim, intermediateSize: ffn, bundleBytes: bundleBytes)
            : try FlashLayout(hiddenSize: dim, intermediateSize: ffn, layerTypes: layerTypes, bundleBytes: bundleBytes)

        // A missing file or one of another kind had been reported as a model file's problem ("model file not found",
        // "the model file lacks the metadata key 'pocketlm.predictor.block_count'"), naming neither the predictor
        // nor where one comes from.
        let predictor = try predictorPath.map { path throws(PagingError) -> GGUFFile in
            guard FileManager.default.fileExists(atPath: path) else {
                throw PagingError.invalidOption("predictor file not found: \(path)")
            }
            do { return try GGUFFile(path: path) } catch {
                throw PagingError.invalidOption("cannot read the predictor \(path): \(error.localizedDescription)")
            }
        }
        var predictorTensors: [GGUFTensorInfo] = []
        if let predictor, let path = predictorPath {
            let notPredictor = "\(path) is not an FFN predictor (weights-tools/train_predictor.py writes one for a model)"
            guard let blocks = try? predictor.int(FlashPacker.predictorMetadataPrefix + "block_count") else {
                throw PagingError.invalidOption(notPredictor)
            }
            guard blocks == layers else {
                throw PagingError.invalidOption("the predictor \(path) has \(blocks) layers, the model \(layers): train one for this model")
            }
            for l in 0..<layers {
                for suffix in predictorSuffixes {
                    let name = "blk.\(l).\(suffix)"
                    guard let info = predictor.tensorInfo(name) else {
                        throw PagingError.invalidOption("\(notPredictor): it lacks the tensor '\(name)'")
                    }
                    predictorTensors.append(info)
                }
            }
        }

        // Header: the source's keys, the layout's, and the predictor's; resident tensors, then the bundles.
        var metadata = source.metadataKeys.compactMap { k in source.metadata[k].map { (k, $0) } }
        metadata += layout.metadata
        if let predictor {
            metadata += predictor.metadataKeys.filter { $0.hasPrefix(predictorMetadataPrefix) }
                .compactMap { k in predictor.metadata[k].map { (k, $0) } }
        }
        let resident = source.tensors.filter { !ffnNames.contains($0.name) }
        var declarations = resident.map { GGUFWriter.TensorDeclaration(name: $0.name, shape: $0.shape, type: $0.type) }
        if columns {
            declarations += (0..<layers).map {
                GGUFWriter.TensorDeclaration(name: FlashLayout.downScaleName($0), shape: [ffn / 32, dim], type: .f16)
            }
        }
        declarations += predictorTensors.map { GGUFWriter.TensorDeclaration(name: $0.name, shape: $0.shape, type: $0.type) }
        declarations += (0..<layers).map {
            GGUFWriter.TensorDeclaration(name: FlashLayout.bundlesName($0), shape: [layout.layerBytes], type: .i8)
        }
        let writer = try GGUFWriter(path: output, metadata: metadata, tensors: declarations, alignment: FlashLayout.ioAlignment)
        let steps = Double(declarations.count)
        var done = 0.0
        func step() { done += 1; progress(done / steps) }

        for info in resident {
            try writer.write(UnsafeRawBufferPointer(start: source.data(of: info), count: info.byteCount))
            step()
        }
        let scales = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: ffn / 32 * dim)
        defer { scales.deallocate() }
        for l in 0..<layers where columns {
            let down = try ffnTensor(l, "ffn_down", shape: [ffn, dim])
            pl_bundle_down_scales_q8_0(source.data(of: down), Int64(dim), Int64(ffn), scales.baseAddress)
            try writer.write(UnsafeRawBufferPointer(scales))
            source.file.adviseDontNeed(offset: down.fileOffset, length: down.byteCount)
            step()
        }
        if let predictor {
            for info in predictorTensors {
                try writer.write(UnsafeRawBufferPointer(start: predictor.data(of: info), count: info.byteCount))
                step()
            }
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: layout.layerBytes, alignment: FlashLayout.ioAlignment)
        defer { buffer.deallocate() }
        for l in 0..<layers {
            let gate = try ffnTensor(l, "ffn_gate", shape: [dim, ffn])
            let up = try ffnTensor(l, "ffn_up", shape: [dim, ffn])
            let down = try ffnTensor(l, "ffn_down", shape: [ffn, dim])
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            if columns {
                for i in 0..<ffn {
                    let g = i / layout.groupNeurons, k = i % layout.groupNeurons
                    pl_bundle_pack_q8_0(source.data(of: gate), source.data(of: up), source.data(of: down), Int64(dim), Int64(ffn),
                                        Int64(i), buffer.baseAddress! + g * layout.bundleBytes + k * layout.neuronBytes)
                }
            } else {
                packBlockRows(layout, layer: l, gate: source.data(of: gate), up: source.data(of: up), down: source.data(of: down),
                              into: buffer.baseAddress!)
            }
            try writer.write(UnsafeRawBufferPointer(buffer))
            for t in [gate, up, down] { source.file.adviseDontNeed(offset: t.fileOffset, length: t.byteCount) }
            step()
        }
        try writer.finish()
        return layout
    }
}

extension FlashPacker {
    /// One layer in the block-rows format: per group, its neurons' gate rows, up rows, then for each down row the
    /// blocks covering its neurons (all bytes as in the source).
    static func packBlockRows(_ layout: FlashLayout, layer l: Int, gate: UnsafeRawPointer, up: UnsafeRawPointer,
                              down: UnsafeRawPointer, into out: UnsafeMutableRawPointer) {
        let gr = layout.gateRowBytes(l), ur = layout.upRowBytes(l), dr = layout.downRowBytes(l)
        let block = layout.types(l).down.blockSize, blockBytes = layout.types(l).down.blockBytes
        for g in 0..<layout.groupsPerLayer {
            let neurons = layout.neurons(inGroup: g)
            let base = out + g * layout.bundleBytes
            base.copyMemory(from: gate + neurons.lowerBound * gr, byteCount: neurons.count * gr)
            (base + layout.upOffset(l)).copyMemory(from: up + neurons.lowerBound * ur, byteCount: neurons.count * ur)
            let first = neurons.lowerBound / block * blockBytes, bytes = neurons.count / block * blockBytes
            for r in 0..<layout.hiddenSize {
                (base + layout.downOffset(l) + r * layout.downSliceBytes(l)).copyMemory(from: down + r * dr + first, byteCount: bytes)
            }
        }
    }
}

extension FlashLayout {
    /// Whether a file carries flash-layout metadata (without validating it).
    public static func metadataPresent(in file: GGUFFile) -> Bool { file.metadata[versionKey] != nil }
}
