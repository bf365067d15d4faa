import Foundation
import Testing
import PocketLM
import CKernels

// MARK: - Swift references for the kernels

/// Half-precision decoding independent of the C code (Swift's own Float16 where the platform has it).
func kernelTestHalf(_ bits: UInt16) -> Float {
    #if os(macOS) && arch(x86_64)
    let sign: Float = bits & 0x8000 != 0 ? -1 : 1
    let e = Int(bits >> 10) & 0x1f, m = Float(bits & 0x3ff)
    if e == 0 { return sign * m * 0x1p-24 }
    if e == 31 { return m == 0 ? sign * .infinity : .nan }
    return sign * (1 + m / 1024) * Float(sign: .plus, exponent: e - 15, significand: 1)
    #else
    return Float(Float16(bitPattern: bits))
    #endif
}

/// Weights quantized in Swift by ggml's reference rules, and dequantized back, for kernel checks.
enum QuantRef {
    static let blockBytes: [UInt32: Int] = [8: 34, 2: 18, 3: 20]

    static func f16(_ x: Float) -> UInt16 { pl_f32_to_f16(x) }

    /// Q8_0: d = amax/127, q = round(x/d).
    static func q8_0(_ x: ArraySlice<Float>) -> [UInt8] {
        var out = GGUFTestBytes()
        var i = x.startIndex
        while i < x.endIndex {
            let b = x[i..<(i + 32)]
            let amax = b.map(abs).max()!
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            out.u16(f16(d))
            for v in b { out.u8(UInt8(bitPattern: Int8((v * id).rounded()))) }
            i += 32
        }
        return out.bytes
    }

    /// Q4_0: d = max/-8 with max the signed value of largest magnitude, q = min(15, Int(x/d + 8.5)).
    static func q4_0(_ x: ArraySlice<Float>) -> [UInt8] {
        var out = GGUFTestBytes()
        var i = x.startIndex
        while i < x.endIndex {
            let b = Array(x[i..<(i + 32)])
            var amax: Float = 0, mx: Float = 0
            for v in b where abs(v) > amax { amax = abs(v); mx = v }
            let d = mx / -8
            let id: Float = d != 0 ? 1 / d : 0
            out.u16(f16(d))
            for j in 0..<16 {
                let lo = UInt8(min(15, Int(b[j] * id + 8.5)))
                let hi = UInt8(min(15, Int(b[j + 16] * id + 8.5)))
                out.u8(lo | hi << 4)
            }
            i += 32
        }
        return out.bytes
    }

    /// Q4_1: d = (max-min)/15, m = min, q = min(15, Int((x-min)/d + 0.5)).
    static func q4_1(_ x: ArraySlice<Float>) -> [UInt8] {
        var out = GGUFTestBytes()
        var i = x.startIndex
        while i < x.endIndex {
            let b = Array(x[i..<(i + 32)])
            let mn = b.min()!, mx = b.max()!
            let d = (mx - mn) / 15
            let id: Float = d != 0 ? 1 / d : 0
            out.u16(f16(d))
            out.u16(f16(mn))
            for j in 0..<16 {
                let lo = UInt8(min(15, Int((b[j] - mn) * id + 0.5)))
                let hi = UInt8(min(15, Int((b[j + 16] - mn) * id + 0.5)))
                out.u8(lo | hi << 4)
            }
            i += 32
        }
        return out.bytes
    }

    static func quantize(_ type: UInt32, _ x: ArraySlice<Float>) -> [UInt8] {
        switch type {
        case 8: q8_0(x)
        case 2: q4_0(x)
        case 3: q4_1(x)
        case 0: x.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init) }
        case 1: x.flatMap { v in withUnsafeBytes(of: f16(v).littleEndian, Array.init) }
        case 30: x.flatMap { v in withUnsafeBytes(of: UInt16(truncatingIfNeeded: v.bitPattern >> 16).littleEndian, Array.init) }
        default: fatalError("type \(type)")
        }
    }

    static func u16(_ p: ArraySlice<UInt8>, _ at: Int) -> UInt16 {
        UInt16(p[p.startIndex + at]) | UInt16(p[p.startIndex + at + 1]) << 8
    }

    /// Pure-Swift dequantization of one row (float arithmetic as gguf-py does it: d·q, d·q + m).
    static func dequantize(_ type: UInt32, _ row: ArraySlice<UInt8>, _ n: Int) -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(n)
        switch type {
        case 0:
            for i in 0..<n {
                let s = row.startIndex + 4 * i
                out.append(Float(bitPattern: UInt32(row[s]) | UInt32(row[s + 1]) << 8 | UInt32(row[s + 2]) << 16 | UInt32(row[s + 3]) << 24))
            }
        case 1: for i in 0..<n { out.append(kernelTestHalf(u16(row, 2 * i))) }
        case 30: for i in 0..<n { out.append(Float(bitPattern: UInt32(u16(row, 2 * i)) << 16)) }
        case 8:
            for b in 0..<(n / 32) {
                let d = kernelTestHalf(u16(row, 34 * b))
                for j in 0..<32 { out.append(d * Float(Int8(bitPattern: row[row.startIndex + 34 * b + 2 + j]))) }
            }
        case 2:
            for b in 0..<(n / 32) {
                let d = kernelTestHalf(u16(row, 18 * b))
                let q = row[(row.startIndex + 18 * b + 2)...].prefix(16)
                out += q.map { d * Float(Int($0 & 15) - 8) }
                out += q.map { d * Float(Int($0 >> 4) - 8) }
            }
        case 3:
            for b in 0..<(n / 32) {
                let d = kernelTestHalf(u16(row, 20 * b)), m = kernelTestHalf(u16(row, 20 * b + 2))
                let q = row[(row.startIndex + 20 * b + 4)...].prefix(16)
                out += q.map { d * Float($0 & 15) + m }
                out += q.map { d * Float($0 >> 4) + m }
            }
        default: fatalError("type \(type)")
        }
        return out
    }

    static func rowBytes(_ type: UInt32, _ n: Int) -> Int {
        switch type {
        case 0: 4 * n
        case 1, 30: 2 * n
        default: n / 32 * blockBytes[type]!
        }
    }

    /// A parsed Q8_0 / Q8_1 activation block.
    struct ActBlock { var d: Float; var s: Float; var q: [Int] }

    static func parseActivations(_ bytes: [UInt8], q8_1: Bool, n: Int) -> [ActBlock] {
        let bb = q8_1 ? 36 : 34, h = q8_1 ? 4 : 2
        return (0..<(n / 32)).map { b in
            let p = bytes[(b * bb)...]
            return ActBlock(d: kernelTestHalf(u16(p, 0)), s: q8_1 ? kernelTestHalf(u16(p, 2)) : .nan,
                            q: (0..<32).map { Int(Int8(bitPattern: p[p.startIndex + h + $0])) })
        }
    }

    /// Σ w·x over weights as stored and activations as quantized (Q8_1's stored s = d·Σq is used for the
    /// min term, as ggml does), in double; with Σ|terms| for the tolerance.
    static func dotQuantized(_ type: UInt32, _ row: ArraySlice<UInt8>, _ act: [ActBlock]) -> (value: Double, scale: Double) {
        let bb = blockBytes[type]!
        var value = 0.0, scale = 0.0
        for (b, a) in act.enumerated() {
            let blk = row[(row.startIndex + b * bb)...].prefix(bb)
            let dw = Double(kernelTestHalf(u16(blk, 0)))
            var qw: [Int]
            switch type {
            case 8: qw = (0..<32).map { Int(Int8(bitPattern: blk[blk.startIndex + 2 + $0])) }
            case 2: let q = blk.dropFirst(2); qw = q.map { Int($0 & 15) - 8 } + q.map { Int($0 >> 4) - 8 }
            default: let q = blk.dropFirst(4); qw = q.map { Int($0 & 15) } + q.map { Int($0 >> 4) }
            }
            var s = 0, sa = 0
            for j in 0..<32 { s += qw[j] * a.q[j]; sa += abs(qw[j] * a.q[j]) }
            value += dw * Double(a.d) * Double(s)
            scale += abs(dw * Double(a.d)) * Double(sa)
            if type == 3 {
                let m = Double(kernelTestHalf(u16(blk, 2)))
                value += m * Double(a.s)
                scale += abs(m * Double(a.s))
            }
        }
        return (value, scale)
    }
}

extension SeededSplitMix64 {
    /// Test data with character: most blocks normal, some zero, constant, huge, tiny or with an outlier.
    mutating func kernelData(_ n: Int) -> [Float] {
        var x: [Float] = []
        x.reserveCapacity(n)
        var i = 0
        while i < n {
            let len = min(32, n - i)
            let mode = below(10)
            for j in 0..<len {
                let g = normal()
                switch mode {
                case 0: x.append(0)
                case 1: x.append(0.75)
                case 2: x.append(g * 1000)
                case 3: x.append(g * 1e-4)
                case 4: x.append(j == 5 ? 40 : g * 0.1)
                case 5: x.append(-abs(g) - 0.5)
                default: x.append(g)
                }
            }
            i += len
        }
        return x
    }
}
