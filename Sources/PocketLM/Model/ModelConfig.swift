import Foundation

/// Hyper-parameters of a llama-style decoder, with the Hugging Face `config.json` names as CodingKeys so a
/// checkpoint's config decodes directly; `init(gguf:)` reads the same facts from GGUF metadata.
public struct ModelConfig: Codable, Sendable, Equatable {
    public var modelType: String
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var intermediateSize: Int
    public var vocabSize: Int
    public var ropeTheta: Double
    public var rmsNormEps: Double
    public var maxPositionEmbeddings: Int
    /// MobileLLM's flag for tied input/output embeddings (its checkpoints say `tie_word_embeddings: false`).
    public var shareEmbedding: Bool?
    public var tieWordEmbeddings: Bool?
    /// MobileLLM-LS: each block runs twice in a row.
    public var layerSharing: Bool?
    /// The runtime's block order (PocketLM's own key, next to the Hugging Face ones).
    public var layerSchedule: ScheduleSpec?

    public struct ScheduleSpec: Codable, Sendable, Equatable {
        public var strategy: String
        public var repeats: Int
        public init(strategy: String, repeats: Int) {
            self.strategy = strategy
            self.repeats = repeats
        }
    }

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case intermediateSize = "intermediate_size"
        case vocabSize = "vocab_size"
        case ropeTheta = "rope_theta"
        case rmsNormEps = "rms_norm_eps"
        case maxPositionEmbeddings = "max_position_embeddings"
        case shareEmbedding = "share_embedding"
        case tieWordEmbeddings = "tie_word_embeddings"
        case layerSharing = "layer_sharing"
        case layerSchedule = "layer_schedule"
    }

    /// Input and output embeddings are one matrix (either flag says so).
    public var tiedEmbeddings: Bool { (shareEmbedding ?? false) || (tieWordEmbeddings ?? true) }

    /// The schedule the config asks for: `layer_schedule` if given, else `immediate`×2 when `layer_sharing`.
    public func schedule() throws -> LayerSchedule {
        if let spec = layerSchedule {
            guard let strategy = LayerSchedule.Strategy(rawValue: spec.strategy) else {
                throw ModelError.invalidConfig(field: "layer_schedule.strategy",
                                               reason: "unknown strategy '\(spec.strategy)' (none, immediate, repeat-all, reverse)")
            }
            return try LayerSchedule(strategy: strategy, repeats: spec.repeats, blocks: numHiddenLayers)
        }
        if layerSharing == true { return try LayerSchedule(strategy: .immediate, repeats: 2, blocks: numHiddenLayers) }
        return .plain(blocks: numHiddenLayers)
    }

    /// Reads a Hugging Face style config.json (as in configs/), validated.
    public static func load(configFile path: String) throws -> ModelConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelError.invalidConfig(field: path, reason: "cannot read the config file")
        }
        let config: ModelConfig
        do {
            config = try JSONDecoder().decode(ModelConfig.self, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw ModelError.invalidConfig(field: key.stringValue, reason: "missing from \(path)")
        } catch let DecodingError.typeMismatch(_, context) {
            throw ModelError.invalidConfig(field: context.codingPath.map(\.stringValue).joined(separator: "."),
                                           reason: "has the wrong type in \(path)")
        } catch {
            throw ModelError.invalidConfig(field: path, reason: "not a valid config.json: \(error.localizedDescription)")
        }
        try config.validate()
        _ = try config.schedule()
        return config
    }

    public var headDim: Int { hiddenSize / numAttentionHeads }
    public var kvDim: Int { numKeyValueHeads * headDim }
    /// Query heads per KV head (grouped-query attention).
    public var attentionGroup: Int { numAttentionHeads / numKeyValueHeads }

    public init(modelType: String, hiddenSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numKeyValueHeads: Int, intermediateSize: Int, vocabSize: Int, ropeTheta: Double,
                rmsNormEps: Double, maxPositionEmbeddings: Int) {
        self.modelType = modelType
        self.hiddenSize = hiddenSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.intermediateSize = intermediateSize
        self.vocabSize = vocabSize
        self.ropeTheta = ropeTheta
        self.rmsNormEps = rmsNormEps
        self.maxPositionEmbeddings = maxPositionEmbeddings
    }

    /// MobileLLM-LS-125M (configs/mobilellm-ls-125m.json), built in so `compare-sharing` runs with no files.
    public static let mobileLLMLS125M: ModelConfig = {
        var c = ModelConfig(modelType: "mobilellm", hiddenSize: 576, numHiddenLayers: 30, numAttentionHeads: 9,
                            numKeyValueHeads: 3, intermediateSize: 1536, vocabSize: 32000, ropeTheta: 10000,
                            rmsNormEps: 1e-5, maxPositionEmbeddings: 2048)
        c.shareEmbedding = true
        c.tieWordEmbeddings = false
        c.layerSharing = true
        c.layerSchedule = ScheduleSpec(strategy: "immediate", repeats: 2)
        return c
    }()

    /// Parameters, weight bytes per storage format and KV-cache bytes per token of a model of this shape.
    public struct Footprint: Codable, Sendable {
        public let parameters: Int
        /// Matrices in the format, norms in F32 (as GGUF files store them).
        public let weight_bytes: [String: Int]
        public let effective_layers: Int
        /// F16 keys and values of every executed pass.
        public let kv_cache_bytes_per_token: Int
    }

    public func footprint(schedule: LayerSchedule? = nil) throws -> Footprint {
        let dim = hiddenSize, kv = kvDim, ffn = intermediateSize
        let perLayerMatrices = 2 * dim * dim + 2 * dim * kv + 3 * dim * ffn
        let embeddings = vocabSize * dim * (tiedEmbeddings ? 1 : 2)
        let matrices = embeddings + numHiddenLayers * perLayerMatrices
        let norms = numHiddenLayers * 2 * dim + dim
        var bytes: [String: Int] = [:]
        for (name, type) in [("f32", GGMLType.f32), ("f16", .f16), ("bf16", .bf16), ("q8_0", .q8_0), ("q4_0", .q4_0), ("q4_1", .q4_1)] {
            bytes[name] = matrices / type.blockSize * type.blockBytes + norms * 4
        }
        let passes = try (schedule ?? self.schedule()).passes.count
        return Footprint(parameters: matrices + norms, weight_bytes: bytes, effective_layers: passes,
                         kv_cache_bytes_per_token: 2 * passes * kv * 2)
    }

    /// Architectures whose GGUF tensors follow llama.cpp's `llama` naming and Q/K layout.
    public static let supportedArchitectures: Set<String> = ["llama"]

    /// Reads `<arch>.*` keys. Only `llama` is accepted: other architectures name or lay out tensors differently,
    /// and running them as llama would give silently wrong text.
    public init(gguf: GGUFFile) throws {
        let arch = try gguf.string("general.architecture")
        guard ModelConfig.supportedArchitectures.contains(arch) else { throw ModelError.unsupportedArchitecture(arch) }
        modelType = arch
        hiddenSize = try gguf.int("\(arch).embedding_length")
        numHiddenLayers = try gguf.int("\(arch).block_count")
        numAttentionHeads = try gguf.int("\(arch).attention.head_count")
        numKeyValueHeads = (try? gguf.int("\(arch).attention.head_count_kv")) ?? numAttentionHeads
        intermediateSize = try gguf.int("\(arch).feed_forward_length")
        ropeTheta = (try? gguf.double("\(arch).rope.freq_base")) ?? 10000
        rmsNormEps = try gguf.double("\(arch).attention.layer_norm_rms_epsilon")
        maxPositionEmbeddings = try gguf.int("\(arch).context_length")
        if let v = try? gguf.int("\(arch).vocab_size") {
            vocabSize = v
        } else if let t = gguf.tensorInfo("token_embd.weight"), t.shape.count == 2 {
            vocabSize = t.shape[1]
        } else {
            throw GGUFError.missingMetadata("\(arch).vocab_size")
        }
        try validate()
        if let rot = try? gguf.int("\(arch).rope.dimension_count"), rot != headDim {
            throw ModelError.invalidConfig(field: "\(arch).rope.dimension_count",
                                           reason: "partial rotary embeddings (\(rot) of \(headDim)) are not supported")
        }
    }

    /// Rejects shapes the forward pass cannot run, naming the field at fault.
    public func validate() throws {
        func need(_ ok: Bool, _ field: String, _ reason: String) throws {
            if !ok { throw ModelError.invalidConfig(field: field, reason: reason) }
        }
        try need(hiddenSize > 0, "hidden_size", "must be positive, found \(hiddenSize)")
        try need(numHiddenLayers > 0 && numHiddenLayers <= 512, "num_hidden_layers", "must be between 1 and 512, found \(numHiddenLayers)")
        try need(numAttentionHeads > 0, "num_attention_heads", "must be positive, found \(numAttentionHeads)")
        try need(hiddenSize % numAttentionHeads == 0, "num_attention_heads",
                 "\(numAttentionHeads) heads do not divide hidden_size \(hiddenSize)")
        try need(numKeyValueHeads > 0 && numAttentionHeads % numKeyValueHeads == 0, "num_key_value_heads",
                 "\(numKeyValueHeads) KV heads do not divide \(numAttentionHeads) attention heads")
        try need(headDim % 2 == 0 && headDim <= 512, "hidden_size",
                 "head dimension \(headDim) must be even and at most 512")
        try need(intermediateSize > 0, "intermediate_size", "must be positive, found \(intermediateSize)")
        try need(vocabSize > 0, "vocab_size", "must be positive, found \(vocabSize)")
        try need(maxPositionEmbeddings > 0, "max_position_embeddings", "must be positive")
        try need(rmsNormEps > 0 && rmsNormEps < 1, "rms_norm_eps", "must be in (0, 1), found \(rmsNormEps)")
        try need(ropeTheta > 1, "rope_theta", "must be greater than 1, found \(ropeTheta)")
    }
}
