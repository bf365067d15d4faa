/// A weight matrix (or vector) as the forward pass sees it: rows of `columns` elements in `type`'s layout,
/// `rowBytes` apart. The bytes stay in their stored (quantized) form; kernels read them in place.
public struct WeightTensor: @unchecked Sendable {
    public let name: String
    public let type: GGMLType
    public let rows: Int
    public let columns: Int
    public let rowBytes: Int
    public let data: UnsafeRawPointer

    public var byteCount: Int { rows * rowBytes }

    public init(name: String, type: GGMLType, rows: Int, columns: Int, rowBytes: Int, data: UnsafeRawPointer) {
        self.name = name
        self.type = type
        self.rows = rows
        self.columns = columns
        self.rowBytes = rowBytes
        self.data = data
    }

    public func row(_ r: Int) -> UnsafeRawPointer { data + r * rowBytes }
}

/// Where the forward pass gets its weights from. The resident/mapped store hands out pointers into memory;
/// a store that pages from storage plugs in here without the forward pass changing.
public protocol WeightStore: AnyObject, Sendable {
    /// The model file's metadata and tensor table.
    var file: GGUFFile { get }
    /// A tensor by its GGUF name, checked against the shape the caller expects (`[columns, rows]` in ggml
    /// order; a vector is `[columns]`).
    func tensor(_ name: String, shape: [Int]) throws(GGUFError) -> WeightTensor
    /// Whether the file has a tensor of that name (for optional tensors such as `output.weight`).
    func contains(_ name: String) -> Bool
}

/// Weights used in place from the memory-mapped GGUF file: loading costs no copy and the OS shares pages.
public final class MappedWeightStore: WeightStore {
    public let file: GGUFFile

    public init(file: GGUFFile) {
        self.file = file
    }

    public func contains(_ name: String) -> Bool { file.tensorInfo(name) != nil }

    public func tensor(_ name: String, shape: [Int]) throws(GGUFError) -> WeightTensor {
        guard let info = file.tensorInfo(name) else { throw .missingTensor(name) }
        // Trailing 1s are equivalent in ggml's convention.
        func trimmed(_ s: [Int]) -> [Int] {
            var s = s
            while s.count > 1, s.last == 1 { s.removeLast() }
            return s
        }
        guard trimmed(info.shape) == trimmed(shape) else {
            throw .tensorShape(tensor: name, expected: shape, found: info.shape)
        }
        let rowBytes = info.type.rowBytes(columns: info.columns)!
        return WeightTensor(name: name, type: info.type, rows: info.rows, columns: info.columns,
                            rowBytes: rowBytes, data: file.data(of: info))
    }
}
