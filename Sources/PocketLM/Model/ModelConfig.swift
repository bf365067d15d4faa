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
    }

    public var headDim: Int { hiddenSize / numAttentionHeads }
    public var kvDim: Int { numKeyValueHeads * headDim }

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
