/// Llama (and SmolLM2, MobileLLM, Llama 3.x): RMSNorm, RoPE on adjacent pairs (llama.cpp's converter permutes Q/K
/// rows for it), grouped-query attention, SwiGLU, optional Q/K/V/O biases, tied or separate output head.
/// Llama 3's RoPE comes as a `rope_freqs.weight` tensor of per-frequency divisors, read with the weights.
public enum Llama: Architecture {
    public static let name = "llama"
    public static let traits = DecoderTraits()

    public static func config(from gguf: GGUFFile) throws -> ModelConfig {
        try .common(from: gguf, architecture: name)
    }
}
