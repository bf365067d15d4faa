/// Qwen2 / Qwen2.5: the llama block with biases on the Q, K and V projections, RoPE in the NEOX layout (halves
/// of each head rotate together; llama.cpp does not permute qwen2's rows), base 1e6, separate `output.weight`
/// when the checkpoint does not tie it.
public enum Qwen2: Architecture {
    public static let name = "qwen2"
    public static let traits: DecoderTraits = {
        var t = DecoderTraits()
        t.ropeLayout = .halves
        return t
    }()

    public static func config(from gguf: GGUFFile) throws -> ModelConfig {
        try .common(from: gguf, architecture: name)
    }
}
