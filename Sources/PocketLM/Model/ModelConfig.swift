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
    /// Per-head width when it is not hidden_size / num_attention_heads (Gemma 3: 256 for a 640-wide model).
    public var explicitHeadDim: Int?
    /// Sliding-window attention (Gemma 3): local layers see this many positions, their own included.
    public var slidingWindow: Int?
    /// Every `slidingWindowPattern`-th layer is global, the others local (Gemma 3: 6).
    public var slidingWindowPattern: Int?
    /// RoPE base of the local (sliding-window) layers (Gemma 3: 10 000; global layers use rope_theta).
    public var ropeLocalBaseFreq: Double?
    /// Queries are scaled by 1/sqrt(query_pre_attn_scalar) instead of 1/sqrt(head_dim) (Gemma 3).
    public var queryPreAttnScalar: Double?
    /// Rotary-embedding scaling (linear, yarn, llama3 frequency factors), as Hugging Face writes it.
    public var ropeScaling: RopeScaling?
    /// The FFN gate's activation: "silu" (SwiGLU) or "gelu_pytorch_tanh" (GeGLU, Gemma).
    public var hiddenAct: String?

    public struct RopeScaling: Codable, Sendable, Equatable {
        /// "linear", "yarn" or "llama3" (Hugging Face's `rope_type`, older configs' `type`).
        public var ropeType: String
        public var factor: Double
        public var originalMaxPositionEmbeddings: Int?
        public var lowFreqFactor: Double?
        public var highFreqFactor: Double?
        public var betaFast: Double?
        public var betaSlow: Double?
        public var attentionFactor: Double?

        enum CodingKeys: String, CodingKey {
            case ropeType = "rope_type", type, factor
            case originalMaxPositionEmbeddings = "original_max_position_embeddings"
            case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
            case betaFast = "beta_fast", betaSlow = "beta_slow", attentionFactor = "attention_factor"
        }

        public init(ropeType: String, factor: Double) {
            self.ropeType = ropeType
            self.factor = factor
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            guard let t = try c.decodeIfPresent(String.self, forKey: .ropeType) ?? c.decodeIfPresent(String.self, forKey: .type) else {
                throw DecodingError.keyNotFound(CodingKeys.ropeType, .init(codingPath: c.codingPath, debugDescription: "rope_scaling needs rope_type"))
            }
            ropeType = t
            factor = try c.decodeIfPresent(Double.self, forKey: .factor) ?? 1
            originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings)
            lowFreqFactor = try c.decodeIfPresent(Double.self, forKey: .lowFreqFactor)
            highFreqFactor = try c.decodeIfPresent(Double.self, forKey: .highFreqFactor)
            betaFast = try c.decodeIfPresent(Double.self, forKey: .betaFast)
            betaSlow = try c.decodeIfPresent(Double.self, forKey: .betaSlow)
            attentionFactor = try c.decodeIfPresent(Double.self, forKey: .attentionFactor)
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(ropeType, forKey: .ropeType)
            try c.encode(factor, forKey: .factor)
            try c.encodeIfPresent(originalMaxPositionEmbeddings, forKey: .originalMaxPositionEmbeddings)
            try c.encodeIfPresent(lowFreqFactor, forKey: .lowFreqFactor)
            try c.encodeIfPresent(highFreqFactor, forKey: .highFreqFactor)
            try c.encodeIfPresent(betaFast, forKey: .betaFast)
            try c.encodeIfPresent(betaSlow, forKey: .betaSlow)
            try c.encodeIfPresent(attentionFactor, forKey: .attentionFactor)
        }
    }

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
        case explicitHeadDim = "head_dim"
        case slidingWindow = "sliding_window"
        case slidingWindowPattern = "sliding_window_pattern"
        case ropeLocalBaseFreq = "rope_local_base_freq"
        case queryPreAttnScalar = "query_pre_attn_scalar"
        case ropeScaling = "rope_scaling"
        case hiddenAct = "hidden_act"
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

    public var headDim: Int { explicitHeadDim ?? hiddenSize / numAttentionHeads }
    /// Width of all query heads together (= hidden_size unless head_dim is explicit).
    public var queryDim: Int { numAttentionHeads * headDim }
    public var kvDim: Int { numKeyValueHeads * headDim }

    /// Whether block `block` attends over a sliding window (local) rather than the whole context (global).
    public func isSlidingLayer(_ block: Int) -> Bool {
        guard slidingWindow != nil, let pattern = slidingWindowPattern, pattern > 0 else { return false }
        return (block + 1) % pattern != 0
    }
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
        public let weightBytes: [String: Int]
        public let effectiveLayers: Int
        /// F16 keys and values of every executed global pass (a sliding-window pass holds a fixed ring).
        public let kvCacheBytesPerToken: Int
    }

    public func footprint(schedule: LayerSchedule? = nil) throws -> Footprint {
        let dim = hiddenSize, kv = kvDim, ffn = intermediateSize
        let perLayerMatrices = 2 * dim * queryDim + 2 * dim * kv + 3 * dim * ffn
        let embeddings = vocabSize * dim * (tiedEmbeddings ? 1 : 2)
        let matrices = embeddings + numHiddenLayers * perLayerMatrices
        let norms = numHiddenLayers * 2 * dim + dim
        var bytes: [String: Int] = [:]
        for (name, type) in [("f32", GGMLType.f32), ("f16", .f16), ("bf16", .bf16), ("q8_0", .q8_0), ("q4_0", .q4_0), ("q4_1", .q4_1)] {
            bytes[name] = matrices / type.blockSize * type.blockBytes + norms * 4
        }
        let passes = try (schedule ?? self.schedule()).passes
        let global = passes.filter { !isSlidingLayer($0) }.count
        return Footprint(parameters: matrices + norms, weightBytes: bytes, effectiveLayers: passes.count,
                         kvCacheBytesPerToken: 2 * global * kv * 2)
    }

    /// The architectures PocketLM runs (GGUF `general.architecture`), each described in Model/Architectures/.
    public static var supportedArchitectures: [String] { Architectures.all.keys.sorted() }

    /// Reads the hyper-parameters from the file's `<arch>.*` keys through that architecture's reader, which refuses
    /// what would change the math and is not implemented (naming the key): never a silently different model.
    public init(gguf: GGUFFile) throws {
        let arch = try gguf.string("general.architecture")
        guard let architecture = Architectures.all[arch] else { throw ModelError.unsupportedArchitecture(arch) }
        self = try architecture.config(from: gguf)
        try validate()
    }

    /// Rejects shapes the forward pass cannot run, naming the field at fault.
    public func validate() throws {
        func need(_ ok: Bool, _ field: String, _ reason: String) throws {
            if !ok { throw ModelError.invalidConfig(field: field, reason: reason) }
        }
        try need(hiddenSize > 0, "hidden_size", "must be positive, found \(hiddenSize)")
        try need(numHiddenLayers > 0 && numHiddenLayers <= 512, "num_hidden_layers", "must be between 1 and 512, found \(numHiddenLayers)")
        try need(numAttentionHeads > 0, "num_attention_heads", "must be positive, found \(numAttentionHeads)")
        try need(explicitHeadDim != nil || hiddenSize % numAttentionHeads == 0, "num_attention_heads",
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
        if let w = slidingWindow { try need(w > 0, "sliding_window", "must be positive, found \(w)") }
        if let b = ropeLocalBaseFreq { try need(b > 1, "rope_local_base_freq", "must be greater than 1, found \(b)") }
        if let r = ropeScaling { try need(r.factor > 0, "rope_scaling.factor", "must be positive, found \(r.factor)") }
    }
}
