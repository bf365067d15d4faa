import Foundation

/// One layer kind's rotary position embedding, computed as ggml's `rope` computes it so positions far into the
/// context rotate by exactly llama.cpp's angles: θ for pair i at position p is p · base^(−2i/d), formed by repeated
/// single-precision multiplication (ggml's cache loop), divided by the Llama 3 frequency factor of pair i when the
/// file has `rope_freqs.weight`, scaled by `freqScale` (1/factor for linear and YaRN scaling), blended with the
/// unscaled angle by YaRN's ramp, then cos/sin times YaRN's magnitude scale.
public struct RotaryEmbedding: Sendable, Equatable {
    /// Rotated elements per head (= head dimension: partial rotary is refused at load).
    public let dimensions: Int
    public let base: Float
    public let freqScale: Float
    public let frequencyFactors: [Float]?
    /// YaRN: 0 = off; otherwise the ramp's weight, the corrected dimension range and the magnitude scale.
    public let extFactor: Float
    public let correctionDims: (low: Float, high: Float)
    public let magnitude: Float

    public static func == (a: RotaryEmbedding, b: RotaryEmbedding) -> Bool {
        a.dimensions == b.dimensions && a.base == b.base && a.freqScale == b.freqScale
            && a.frequencyFactors == b.frequencyFactors && a.extFactor == b.extFactor
            && a.correctionDims == b.correctionDims && a.magnitude == b.magnitude
    }

    /// `scaling` nil or linear: plain or position-interpolated RoPE; yarn: ggml's YaRN with llama.cpp's defaults
    /// (beta_fast 32, beta_slow 1, attention factor 1, ext factor 1).
    public init(dimensions: Int, base: Double, scaling: ModelConfig.RopeScaling?, frequencyFactors: [Float]?,
                contextLength: Int) {
        self.dimensions = dimensions
        self.base = Float(base)
        self.frequencyFactors = frequencyFactors
        let factor = Float(scaling?.factor ?? 1)
        freqScale = 1 / factor
        var mscale = Float(scaling?.attentionFactor ?? 1)
        if scaling?.ropeType == "yarn" {
            extFactor = 1
            let original = Float(scaling?.originalMaxPositionEmbeddings ?? contextLength)
            let fast = Float(scaling?.betaFast ?? 32), slow = Float(scaling?.betaSlow ?? 1)
            func corrDim(_ rotations: Float) -> Float {
                Float(dimensions) * logf(original / (rotations * 2 * Float.pi)) / (2 * logf(Float(base)))
            }
            correctionDims = (max(0, floorf(corrDim(fast))), min(Float(dimensions - 1), ceilf(corrDim(slow))))
            mscale *= 1 + 0.1 * logf(1 / freqScale)
        } else {
            extFactor = 0
            correctionDims = (0, 0)
        }
        magnitude = mscale
    }

    /// cos and sin of each pair's angle for positions start ..< start + rows, `dimensions / 2` per position.
    public func table(start: Int, rows: Int, cos cosOut: UnsafeMutablePointer<Float>, sin sinOut: UnsafeMutablePointer<Float>) {
        let half = dimensions / 2
        let thetaScale = powf(base, -2 / Float(dimensions))
        for r in 0..<rows {
            var theta = Float(start + r)
            for i in 0..<half {
                let extrapolated = theta / (frequencyFactors?[i] ?? 1)
                let interpolated = freqScale * extrapolated
                var angle = interpolated
                if extFactor != 0 {
                    let y = (Float(i) - correctionDims.low) / max(0.001, correctionDims.high - correctionDims.low)
                    let mix = (1 - min(1, max(0, y))) * extFactor
                    angle = interpolated * (1 - mix) + extrapolated * mix
                }
                cosOut[r * half + i] = cosf(angle) * magnitude
                sinOut[r * half + i] = sinf(angle) * magnitude
                theta *= thetaScale
            }
        }
    }
}
