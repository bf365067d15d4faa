import ArgumentParser
import Foundation
import PocketLM

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a GGUF file's architecture, hyper-parameters, tokenizer and tensor table.")

    @Argument(help: "Path to a GGUF model file.") var path: String?
    @Option(help: "A config.json (see configs/): print its parameter count, weight bytes per format and KV-cache bytes per token instead.")
    var config: String?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard (path == nil) != (config == nil) else { throw ValidationError("give a GGUF path or --config FILE") }
    }

    struct ConfigReport: Encodable {
        let config: ModelConfig
        let layerSchedule: String
        let footprint: ModelConfig.Footprint
    }

    func inspectConfig(_ file: String) throws {
        let c = try ModelConfig.load(configFile: file)
        let schedule = try c.schedule()
        let f = try c.footprint(schedule: schedule)
        if json {
            try Console.json(ConfigReport(config: c, layerSchedule: schedule.description, footprint: f), snakeCaseKeys: true)
            return
        }
        var out = "\(file)\n  \(c.modelType): layers \(c.numHiddenLayers), dim \(c.hiddenSize), heads \(c.numAttentionHeads) (KV \(c.numKeyValueHeads)), FFN \(c.intermediateSize), vocab \(c.vocabSize), tied embeddings: \(c.tiedEmbeddings ? "yes" : "no")\n"
        out += "  layer schedule: \(schedule) (\(f.effectiveLayers) effective layers)\n"
        out += "  parameters: \(f.parameters)\n  weight bytes:\n"
        for name in ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"] {
            out += "    \(name.padding(toLength: 5, withPad: " ", startingAt: 0)) \(Self.bytes(f.weightBytes[name]!)) (\(f.weightBytes[name]!) bytes)\n"
        }
        out += "  KV cache (F16): \(f.kvCacheBytesPerToken) bytes per token\n"
        Console.write(out)
    }

    struct TensorRow: Encodable { let name: String; let type: String; let shape: [Int]; let bytes: Int }
    struct TypeTotal: Encodable { let type: String; let tensors: Int; let parameters: Int; let bytes: Int }
    struct Report: Encodable {
        let path: String
        let file_bytes: Int
        let gguf_version: Int
        let architecture: String
        let name: String?
        let config: ModelConfig?
        let config_error: String?
        /// F16 keys and values one more position of context costs (global layers only: sliding-window layers keep a
        /// fixed ring).
        let kv_cache_bytes_per_token: Int?
        let tokenizer: [String: String]
        let metadata: [String: String]
        let tensors: [TensorRow]
        let totals: [TypeTotal]
        let parameters: Int
        let tensor_bytes: Int
    }

    func run() async throws {
        if let config { return try inspectConfig(config) }
        guard let path else { return }
        let file = try GGUFFile(path: path)
        var config: ModelConfig?
        var configError: String?
        do { config = try ModelConfig(gguf: file) } catch { configError = (error as? LocalizedError)?.errorDescription ?? "\(error)" }

        var tok: [String: String] = [:]
        for key in ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                    "tokenizer.ggml.add_bos_token"] {
            if let v = file.metadata[key] { tok[String(key.dropFirst("tokenizer.ggml.".count))] = Self.render(v) }
        }
        if let t = file.metadata["tokenizer.ggml.tokens"]?.array { tok["vocabulary"] = "\(t.count)" }
        if let m = file.metadata["tokenizer.ggml.merges"]?.array { tok["merges"] = "\(m.count)" }
        tok["chat_template"] = file.metadata["tokenizer.chat_template"] == nil ? "none" : "present"

        var meta: [String: String] = [:]
        for key in file.metadataKeys where !key.hasPrefix("tokenizer.ggml.") && key != "tokenizer.chat_template" {
            meta[key] = Self.render(file.metadata[key]!)
        }
        let rows = file.tensors.map { TensorRow(name: $0.name, type: $0.type.description, shape: $0.shape, bytes: $0.byteCount) }
        var byType: [String: TypeTotal] = [:]
        for t in file.tensors {
            let old = byType[t.type.description] ?? TypeTotal(type: t.type.description, tensors: 0, parameters: 0, bytes: 0)
            byType[t.type.description] = TypeTotal(type: old.type, tensors: old.tensors + 1,
                                                   parameters: old.parameters + t.elementCount, bytes: old.bytes + t.byteCount)
        }
        let report = Report(
            path: path, file_bytes: file.fileSize, gguf_version: Int(file.version),
            architecture: file.metadata["general.architecture"]?.string ?? "?",
            name: file.metadata["general.name"]?.string, config: config, config_error: configError,
            kv_cache_bytes_per_token: config.flatMap { c in
                try? c.footprint(schedule: LanguageModel.schedule(in: file, blocks: c.numHiddenLayers)).kvCacheBytesPerToken
            },
            tokenizer: tok, metadata: meta, tensors: rows, totals: byType.values.sorted { $0.bytes > $1.bytes },
            parameters: file.tensors.reduce(0) { $0 + $1.elementCount },
            tensor_bytes: file.tensors.reduce(0) { $0 + $1.byteCount })
        if json {
            try Console.json(report)
            return
        }
        var out = "\(path)\n  GGUF v\(report.gguf_version), \(Self.bytes(report.file_bytes)), architecture \(report.architecture)"
        if let n = report.name { out += ", \"\(n)\"" }
        out += "\n\nHyper-parameters\n"
        if let c = config {
            out += "  layers \(c.numHiddenLayers), dim \(c.hiddenSize), heads \(c.numAttentionHeads) (KV \(c.numKeyValueHeads), head dim \(c.headDim)), FFN \(c.intermediateSize)\n"
            out += "  vocab \(c.vocabSize), context \(c.maxPositionEmbeddings), RoPE base \(c.ropeTheta), RMSNorm eps \(c.rmsNormEps)\n"
            out += "  tied embeddings: \(file.tensorInfo("output.weight") == nil ? "yes" : "no")\n"
            if let f = try? c.footprint(schedule: LanguageModel.schedule(in: file, blocks: c.numHiddenLayers)) {
                out += "  KV cache (F16): \(Self.bytes(f.kvCacheBytesPerToken)) per token of context"
                if let w = c.slidingWindow {
                    let local = (0..<c.numHiddenLayers).filter(c.isSlidingLayer).count
                    out += " (\(c.numHiddenLayers - local) global layers; \(local) sliding-window layers keep \(w) positions each)"
                }
                out += "\n"
            }
        } else {
            out += "  cannot run this model: \(configError ?? "?")\n"
        }
        out += "\nTokenizer\n"
        for k in tok.keys.sorted() { out += "  \(k): \(tok[k]!)\n" }
        out += "\nTensors\n"
        let width = max(20, rows.map(\.name.count).max() ?? 0)
        for r in rows {
            out += "  " + r.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                + r.type.padding(toLength: 5, withPad: " ", startingAt: 0) + "  "
                + r.shape.map(String.init).joined(separator: " × ").padding(toLength: 14, withPad: " ", startingAt: 0)
                + "  " + Self.bytes(r.bytes) + "\n"
        }
        out += "\nTotals\n"
        for t in report.totals {
            out += "  \(t.type.padding(toLength: 5, withPad: " ", startingAt: 0))  \(t.tensors) tensors, \(t.parameters) parameters, \(Self.bytes(t.bytes))\n"
        }
        out += "  all    \(rows.count) tensors, \(report.parameters) parameters, \(Self.bytes(report.tensor_bytes))\n"
        Console.write(out)
    }

    static func render(_ v: GGUFValue) -> String {
        switch v {
        case .string(let s): return s.count > 80 ? quoted(String(s.prefix(77)) + "...") : quoted(s)
        case .array(let a): return "[\(a.count) × \(a.first?.typeName ?? "?")]"
        case .float32(let f): return "\(f)"
        case .float64(let d): return "\(d)"
        case .bool(let b): return "\(b)"
        default: return v.int.map(String.init) ?? "?"
        }
    }

    static func quoted(_ s: String) -> String {
        var out = "'"
        for ch in s.unicodeScalars {
            switch ch {
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out + "'"
    }

    static func bytes(_ n: Int) -> String {
        if n >= 1 << 30 { return String(format: "%.2f GiB", Double(n) / Double(1 << 30)) }
        if n >= 1 << 20 { return String(format: "%.1f MiB", Double(n) / Double(1 << 20)) }
        if n >= 1 << 10 { return String(format: "%.1f KiB", Double(n) / Double(1 << 10)) }
        return "\(n) B"
    }
}
