/// Gemma 3 (text): embeddings scaled by sqrt(hidden_size); per-head RMSNorm on queries and keys; RMSNorm before
/// and after attention and the FFN; GeGLU (tanh GELU) gate × up; queries scaled by 1/sqrt(key_length); RoPE in the
/// NEOX layout. Five of every six layers attend over a sliding window with their own RoPE base (10 000); every
/// sixth is global with `rope.freq_base` — as llama.cpp assigns them (a layer is local unless (i + 1) % 6 == 0).
/// Norm weights in GGUF already include Gemma's "+1", so they multiply like any RMSNorm weight.
public enum Gemma3: Architecture {
    public static let name = "gemma3"
    public static let traits: DecoderTraits = {
        var t = DecoderTraits()
        t.ropeLayout = .halves
        t.activation = .geluTanh
        t.scalesEmbedding = true
        t.normalizesQueryKey = true
        t.normalizesBlockOutputs = true
        return t
    }()

    /// llama.cpp's fixed layer pattern for gemma3 (`set_swa_pattern(6)`), and its local RoPE base.
    static let slidingWindowPattern = 6
    static let localRopeBase = 10000.0

    public static func config(from gguf: GGUFFile) throws -> ModelConfig {
        var c = try ModelConfig.common(from: gguf, architecture: name, defaultRopeBase: 1_000_000)
        c.explicitHeadDim = (try? gguf.int("\(name).attention.key_length")) ?? c.headDim
        c.slidingWindow = try gguf.int("\(name).attention.sliding_window")
        c.slidingWindowPattern = (try? gguf.int("\(name).attention.sliding_window_pattern")) ?? slidingWindowPattern
        c.ropeLocalBaseFreq = (try? gguf.double("\(name).rope.freq_base_swa")) ?? localRopeBase
        c.queryPreAttnScalar = Double(c.headDim)
        c.hiddenAct = "gelu_pytorch_tanh"
        return c
    }
}
