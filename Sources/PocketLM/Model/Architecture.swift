import Foundation

/// What distinguishes one decoder family from another in the shared forward pass (`Transformer.forwardChunk`).
/// Each architecture file in Model/Architectures/ says which of these its checkpoints use.
public struct DecoderTraits: Sendable, Equatable {
    /// How RoPE pairs a head's elements. llama.cpp's converter permutes `llama` Q/K rows so pairs are adjacent
    /// (x[2i], x[2i+1]); the NEOX layout (Qwen2, Gemma) rotates x[i] with x[i + headDim/2].
    public enum RopeLayout: Sendable { case adjacentPairs, halves }
    /// The gate's activation in the gated FFN: SwiGLU (silu) or GeGLU (GELU, tanh form).
    public enum Activation: Sendable { case silu, geluTanh }

    public var ropeLayout: RopeLayout = .adjacentPairs
    public var activation: Activation = .silu
    /// Embedding rows are multiplied by sqrt(hidden_size) (Gemma).
    public var scalesEmbedding = false
    /// Per-head RMSNorm of queries and keys before RoPE (`attn_q_norm`, `attn_k_norm`; Gemma 3).
    public var normalizesQueryKey = false
    /// RMSNorm of the attention and FFN outputs before they join the residual (`post_attention_norm`,
    /// `post_ffw_norm`; Gemma 2/3's "sandwich" norms).
    public var normalizesBlockOutputs = false

    public init() {}
}

/// A decoder family PocketLM runs, keyed by GGUF `general.architecture`: reads its hyper-parameters from the file
/// (refusing what would change the math and is not implemented, naming the key) and states its `DecoderTraits`.
public protocol Architecture: Sendable {
    /// `general.architecture`, e.g. "llama".
    static var name: String { get }
    static var traits: DecoderTraits { get }
    /// The configuration a file of this architecture describes, in Hugging Face names.
    static func config(from gguf: GGUFFile) throws -> ModelConfig
}

/// The architectures PocketLM runs, by `general.architecture` (the factory `LanguageModel` builds from).
public enum Architectures {
    public static let all: [String: any Architecture.Type] = [
        Llama.name: Llama.self,
        Qwen2.name: Qwen2.self,
        Gemma3.name: Gemma3.self,
    ]

    /// The traits of a config's `model_type` (configs/*.json of MobileLLM models run as llama).
    public static func traits(of modelType: String) -> DecoderTraits {
        all[modelType]?.traits ?? Llama.traits
    }
}

extension ModelConfig {
    /// The keys every llama.cpp decoder stores under `<arch>.`: the shape, context, norm epsilon and RoPE base,
    /// with the checks that apply to all families (partial rotary, key/value widths, rope scaling, soft-caps, MoE).
    static func common(from gguf: GGUFFile, architecture arch: String, defaultRopeBase: Double = 10000) throws -> ModelConfig {
        let hidden = try gguf.int("\(arch).embedding_length")
        let heads = try gguf.int("\(arch).attention.head_count")
        var config = ModelConfig(
            modelType: arch, hiddenSize: hidden, numHiddenLayers: try gguf.int("\(arch).block_count"),
            numAttentionHeads: heads,
            numKeyValueHeads: (try? gguf.int("\(arch).attention.head_count_kv")) ?? heads,
            intermediateSize: try gguf.int("\(arch).feed_forward_length"),
            vocabSize: 0, ropeTheta: (try? gguf.double("\(arch).rope.freq_base")) ?? defaultRopeBase,
            rmsNormEps: try gguf.double("\(arch).attention.layer_norm_rms_epsilon"),
            maxPositionEmbeddings: try gguf.int("\(arch).context_length"))
        if let v = try? gguf.int("\(arch).vocab_size") {
            config.vocabSize = v
        } else if let t = gguf.tensorInfo("token_embd.weight"), t.shape.count == 2 {
            config.vocabSize = t.shape[1]
        } else {
            throw GGUFError.missingMetadata("\(arch).vocab_size")
        }
        // Queries and keys may be wider than hidden_size / heads (Gemma 3); values must match keys.
        let keyLength = try? gguf.int("\(arch).attention.key_length")
        let valueLength = try? gguf.int("\(arch).attention.value_length")
        if let k = keyLength, let v = valueLength, k != v {
            throw ModelError.unsupportedFeature(key: "\(arch).attention.value_length",
                                                reason: "value heads of \(v) with key heads of \(k) (they must be equal)")
        }
        if let k = keyLength, heads > 0, k != hidden / heads || hidden % heads != 0 { config.explicitHeadDim = k }
        if let rot = try? gguf.int("\(arch).rope.dimension_count"), rot != config.headDim {
            throw ModelError.unsupportedFeature(key: "\(arch).rope.dimension_count",
                                                reason: "partial rotary embeddings (\(rot) of \(config.headDim) dimensions)")
        }
        config.ropeScaling = try ropeScaling(from: gguf, architecture: arch)
        // Keys that change the math in ways the forward pass does not implement: refused, never ignored.
        for key in ["attn_logit_softcapping", "final_logit_softcapping", "embedding_scale", "residual_scale", "logit_scale",
                    "attention.scale"] {
            if let v = gguf.metadata["\(arch).\(key)"], (v.double ?? 1) != 0 {
                throw ModelError.unsupportedFeature(key: "\(arch).\(key)", reason: "\(key.replacingOccurrences(of: "_", with: " ")) = \(v.double.map { "\($0)" } ?? "set")")
            }
        }
        if let experts = try? gguf.int("\(arch).expert_count"), experts > 0 {
            throw ModelError.unsupportedFeature(key: "\(arch).expert_count", reason: "a mixture of \(experts) experts")
        }
        return config
    }

    /// `<arch>.rope.scaling.*` as llama.cpp reads them: the type (none, linear, yarn) and factor (or the older
    /// `rope.scale_linear`). A type the forward pass does not implement is refused, naming the key.
    static func ropeScaling(from gguf: GGUFFile, architecture arch: String) throws -> RopeScaling? {
        let typeKey = "\(arch).rope.scaling.type"
        var factor = (try? gguf.double("\(arch).rope.scaling.factor")) ?? 0
        if factor == 0 { factor = (try? gguf.double("\(arch).rope.scale_linear")) ?? 0 }
        let type = gguf.metadata[typeKey]?.string ?? (factor != 0 ? "linear" : "none")
        switch type {
        case "none":
            return nil
        case "linear":
            return factor == 0 || factor == 1 ? nil : RopeScaling(ropeType: "linear", factor: factor)
        case "yarn":
            var s = RopeScaling(ropeType: "yarn", factor: factor == 0 ? 1 : factor)
            s.originalMaxPositionEmbeddings = try? gguf.int("\(arch).rope.scaling.original_context_length")
            s.betaFast = try? gguf.double("\(arch).rope.scaling.yarn_beta_fast")
            s.betaSlow = try? gguf.double("\(arch).rope.scaling.yarn_beta_slow")
            s.attentionFactor = try? gguf.double("\(arch).rope.scaling.attn_factor")
            for key in ["yarn_log_multiplier", "yarn_ext_factor"] where gguf.metadata["\(arch).rope.scaling.\(key)"] != nil {
                throw ModelError.unsupportedFeature(key: "\(arch).rope.scaling.\(key)", reason: "a YaRN variant PocketLM does not implement")
            }
            return s
        default:
            throw ModelError.unsupportedFeature(key: typeKey, reason: "RoPE scaling '\(type)' (implemented: none, linear, yarn)")
        }
    }
}
