import CKernels
import CPlatform
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An untied model's input embedding left on storage: only the output head reads the whole vocabulary each token,
/// the input side needs one row per token (Qwen2.5-0.5B's 151,936 × 896 Q5_0 rows are 89 MiB). Each row is read
/// when its token is embedded — the 4 KiB blocks covering it, with O_DIRECT, so no page cache is left behind (where
/// the filesystem refuses O_DIRECT, those pages are dropped after the read) — and dequantized into the residual
/// stream, exactly as a row of the mapped tensor would be.
public final class StorageEmbedding {
    public let path: String
    public let type: GGMLType
    public let rows: Int
    public let columns: Int
    public let rowBytes: Int
    private let offset: Int
    private let fd: Int32
    private let direct: Bool
    private let buffer: UnsafeMutableRawPointer
    private let bufferBytes: Int
    /// Bytes read from storage since load (whole 4 KiB blocks).
    public private(set) var bytesRead = 0

    init(path: String, tensor info: GGUFTensorInfo) throws(PagingError) {
        guard info.type.isComputable, let rowBytes = info.type.rowBytes(columns: info.columns) else {
            throw .unsupportedWeights(tensor: info.name, type: info.type.description)
        }
        self.path = path
        type = info.type
        rows = info.rows
        columns = info.columns
        self.rowBytes = rowBytes
        offset = info.fileOffset
        (fd, direct) = try DirectReader.open(path)
        // A row spans at most its own length rounded up to blocks, plus one block for an unaligned start.
        let align = FlashLayout.ioAlignment
        bufferBytes = (rowBytes + align - 1) / align * align + align
        buffer = .allocate(byteCount: bufferBytes, alignment: align)
    }

    deinit {
        close(fd)
        buffer.deallocate()
    }

    /// Reads row `r` and dequantizes it into `out` (`columns` floats).
    func dequantize(row r: Int, into out: UnsafeMutablePointer<Float>) throws(PagingError) {
        guard r >= 0 && r < rows else { throw .invalidOption("token id \(r) is outside the vocabulary (0..<\(rows))") }
        let align = FlashLayout.ioAlignment
        let start = offset + r * rowBytes
        let first = start / align * align
        let length = (start + rowBytes - first + align - 1) / align * align
        let got = pl_pread_full(fd, buffer, Int64(length), Int64(first))
        if got < 0 { throw .readFailed(path: path, offset: first, message: String(cString: strerror(Int32(-got)))) }
        // The file may end inside the last block: only the row itself must be there.
        guard Int(got) >= start + rowBytes - first else {
            throw .shortRead(path: path, offset: start, expected: rowBytes, got: max(0, Int(got) - (start - first)))
        }
        if !direct { _ = pl_drop_cached(fd, Int64(first), Int64(length)) }
        bytesRead += length
        pl_dequantize_row(Int32(type.rawValue), buffer + (start - first), out, Int64(columns))
    }
}
