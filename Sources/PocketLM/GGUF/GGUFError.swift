import Foundation

/// Everything that can be wrong with a model file, each case naming the file, field or tensor at fault.
public enum GGUFError: Error, LocalizedError, Equatable {
    case fileNotFound(String)
    case io(path: String, message: String)
    /// Writing a file failed (`GGUFWriter`): a missing or read-only directory, a full disk.
    case writeFailed(path: String, message: String)
    case notGGUF(path: String, reason: String)
    case unsupportedVersion(UInt32)
    case truncated(what: String, offset: Int)
    case corrupt(String)
    case unsupportedTensorType(tensor: String, type: String)
    case missingTensor(String)
    case tensorShape(tensor: String, expected: [Int], found: [Int])
    case missingMetadata(String)
    case badMetadata(key: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .fileNotFound(let p): "model file not found: \(p)"
        case .io(let p, let m): "cannot read \(p): \(m)"
        case .writeFailed(let p, let m): "cannot write \(p): \(m)"
        case .notGGUF(let p, let r): "\(p) is not a GGUF file: \(r)"
        case .unsupportedVersion(let v): "unsupported GGUF version \(v) (this reader handles versions 2 and 3)"
        case .truncated(let what, let off): "GGUF file is truncated or corrupt: \(what) runs past the end of the file (at byte \(off))"
        case .corrupt(let m): "corrupt GGUF file: \(m)"
        case .unsupportedTensorType(let t, let ty): "tensor '\(t)' has type \(ty), which PocketLM does not compute with (supported: \(GGMLType.computableNames))"
        case .missingTensor(let t): "the model file has no tensor named '\(t)'"
        case .tensorShape(let t, let e, let f): "tensor '\(t)' has shape \(f), expected \(e)"
        case .missingMetadata(let k): "the model file lacks the metadata key '\(k)'"
        case .badMetadata(let k, let r): "metadata '\(k)' is invalid: \(r)"
        }
    }
}
