import Foundation
import PocketLM

/// Where the suite finds the repository, llama.cpp's recorded outputs (weights-tools/reference), the model cache and the fixtures.
enum TestPaths {
    static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var cacheDir: URL {
        if let c = ProcessInfo.processInfo.environment["POCKETLM_CACHE"], !c.isEmpty { return URL(fileURLWithPath: c) }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/pocketlm")
    }

    static var fixturesDir: URL {
        if let c = ProcessInfo.processInfo.environment["POCKETLM_FIXTURES"], !c.isEmpty { return URL(fileURLWithPath: c) }
        return repoRoot.appendingPathComponent(".fixtures")
    }

    static let referenceJSON = repoRoot.appendingPathComponent("weights-tools/reference/smollm2-llamacpp.json")

    /// A model in the cache; a missing file is a failure that says how to get it (never a skip).
    static func model(_ name: String) throws -> String {
        let url = cacheDir.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TestSetupError("missing \(url.path): run `make fetch` (weights-tools/fetch.py and variants.py) first")
        }
        return url.path
    }

    static func fixture(_ name: String) throws -> String {
        let url = fixturesDir.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TestSetupError("missing fixture \(url.path): run `make fixtures` (weights-tools/make_fixtures.py) first")
        }
        return url.path
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// One record of weights-tools/reference/smollm2-llamacpp.json (llama.cpp's outputs).
struct ReferenceRecord: Decodable {
    let model_file: String
    let prompt_kind: String
    let prompt: String
    let tokens: [Int]
    let last_pos_top5_ids: [Int]
    let last_pos_top5_logits: [Double]
    let per_position_top1_ids: [Int]
    let greedy_ids: [Int]
    let greedy_text: String
    let greedy_top1_top2_margin: [Double]
}

enum Reference {
    struct File: Decodable { let records: [ReferenceRecord] }
    static func records() throws -> [ReferenceRecord] {
        let data = try Data(contentsOf: TestPaths.referenceJSON)
        return try JSONDecoder().decode(File.self, from: data).records
    }
}

/// Indices of the k largest values, largest first.
func topK(_ v: UnsafeBufferPointer<Float>, _ k: Int) -> [Int] {
    var best: [(Float, Int)] = []
    for (i, x) in v.enumerated() {
        if best.count < k { best.append((x, i)); best.sort { $0.0 > $1.0 }; continue }
        if x > best[k - 1].0 { best[k - 1] = (x, i); best.sort { $0.0 > $1.0 } }
    }
    return best.map(\.1)
}
