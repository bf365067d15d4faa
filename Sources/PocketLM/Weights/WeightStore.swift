import CKernels
import Foundation

/// A weight matrix (or vector) as the forward pass sees it: rows of `columns` elements in `type`'s layout,
/// `rowBytes` apart. The bytes stay in their stored (quantized) form; kernels read them in place.
public struct WeightTensor: @unchecked Sendable {
    public let name: String
    public let type: GGMLType
    public let rows: Int
    public let columns: Int
    public let rowBytes: Int
    public let data: UnsafeRawPointer
    /// The same matrix in the 16-row interleaved layout of the VNNI kernel (see ckernels.h), when the store
    /// packed it; `data` stays valid for row access (embedding lookups).
    public let packed: UnsafeRawPointer?

    public var byteCount: Int { rows * rowBytes }

    public init(name: String, type: GGMLType, rows: Int, columns: Int, rowBytes: Int, data: UnsafeRawPointer,
                packed: UnsafeRawPointer? = nil) {
        self.name = name
        self.type = type
        self.rows = rows
        self.columns = columns
        self.rowBytes = rowBytes
        self.data = data
        self.packed = packed
    }

    public func row(_ r: Int) -> UnsafeRawPointer { data + r * rowBytes }
}

/// Where the forward pass gets its weights from. The resident/mapped store hands out pointers into memory;
/// a store that pages from storage plugs in here without the forward pass changing.
public protocol WeightStore: AnyObject, Sendable {
    /// A tensor by its GGUF name, checked against the shape the caller expects (`[columns, rows]` in ggml
    /// order; a vector is `[columns]`).
    func tensor(_ name: String, shape: [Int]) throws(GGUFError) -> WeightTensor
    /// Whether the file has a tensor of that name (for optional tensors such as `output.weight`).
    func contains(_ name: String) -> Bool
}

/// Weights from the memory-mapped GGUF file. Vectors and float matrices are used in place (no copy). Quantized
/// matrices are repacked once, at load, into the 16-row interleaved layout that the VNNI kernel streams ~4× faster
/// than the file's row layout; the packed copy is the same size, and the file pages it was made from are dropped
/// from memory afterwards, so resident memory stays about one model's worth.
///
/// With a cache directory, the packed matrices of a file are mapped from its `PackedWeightCache` when one matches,
/// and `persistPacked()` writes one after a load that had to pack: repacking is paid on a file's first load only.
public final class MappedWeightStore: WeightStore, @unchecked Sendable {
    public let file: GGUFFile
    /// Whether quantized matrices are packed (only on CPUs with the packed kernel).
    public let packs: Bool
    /// The types packed at load. Q6_K stays in the file's layout: its packed kernel measured no faster than the
    /// four-row body (C driver, one thread, DRAM: 27.8 vs 27.5 GB/s at 576x1536, 28 vs 30 at 1536x2048; 128 inputs
    /// 67-71 GMAC/s alike).
    static let packedTypes: [GGMLType] = [.q8_0, .q4_0, .q4_1, .q5_0, .q4_K]
    /// Whether this process's kernel tier packs `type` (AVX-512 VNNI: all of `packedTypes`; AVX2: Q4_0/Q4_1).
    static func tierPacks(_ type: GGMLType) -> Bool { pl_packed_type_supported(Int32(type.rawValue)) != 0 }
    /// Whether matrices of `type` are packed here: a type in `packedTypes` that this tier packs.
    static func packs(type: GGMLType) -> Bool { packedTypes.contains(type) && tierPacks(type) }
    /// A matrix this store packs: more than one row, of a type it packs.
    static func isPackable(_ info: GGUFTensorInfo) -> Bool { info.rows > 1 && packs(type: info.type) }
    private var packed: [String: UnsafeRawPointer] = [:]
    /// Matrices packed into the arena by this load (not found in the cache): what `persistPacked` writes.
    private var packedHere: [(name: String, data: UnsafeRawPointer, bytes: Int)] = []
    private var packedBytes = 0
    private let arena = WeightArena()
    private let lock = NSLock()
    private let cacheDirectory: URL?
    private let cache: PackedWeightCache?

    /// Packs straight into a new cache file, when this load has to pack and may keep what it packs.
    private var writer: PackedWeightCacheWriter?
    private var writerTried = false
    private let minimumCacheBytes: Int

    /// Whether the file pages a matrix was packed from also leave the page cache (a run inside a memory limit).
    private let evictsPageCache: Bool
    /// Matrices only ever read a row at a time (an untied model's input embedding): used in the file's rows, never
    /// packed (packing one would make a resident copy of a tensor that is read a row per token).
    private let rowLookups: Set<String>
    /// Matrices the model does not take from this store (a flash file's paged FFN): never packed, not in the cache.
    private let takenElsewhere: Set<String>

    /// `cacheDirectory`: where packed matrices persist between loads (nil: pack on every load, write nothing).
    /// A file with fewer packable bytes than `minimumCacheBytes` gets no cache (it repacks in a few milliseconds).
    public init(file: GGUFFile, pack: Bool = true, cacheDirectory: URL? = nil, evictsPageCache: Bool = false,
                minimumCacheBytes: Int = 16 << 20, rowLookups: Set<String> = [], takenElsewhere: Set<String> = []) {
        self.file = file
        self.rowLookups = rowLookups
        self.takenElsewhere = takenElsewhere
        self.evictsPageCache = evictsPageCache
        self.minimumCacheBytes = minimumCacheBytes
        self.packs = pack && Self.packedTypes.contains { Self.tierPacks($0) }
        self.cacheDirectory = packs ? cacheDirectory : nil
        self.cache = self.cacheDirectory.flatMap { PackedWeightCache(source: file.path, directory: $0) }
    }

    /// The matrices this store packs (quantized, of a packed type, more than one row, taken from this store and
    /// not only a row at a time).
    private var packableMatrices: [GGUFTensorInfo] {
        file.tensors.filter { Self.isPackable($0) && !rowLookups.contains($0.name) && !takenElsewhere.contains($0.name) }
    }

    /// The cache writer, made on the first matrix to pack when there is no cache at all and this load may write one
    /// (not inside a memory limit: its dirty pages would be charged to the process). It packs every packable matrix
    /// into the new file right away, on all threads (`PackedWeightCacheWriter.packAll`); `pack` then hands them out.
    private func cacheWriter() -> PackedWeightCacheWriter? {
        if writerTried { return writer }
        writerTried = true
        guard let dir = cacheDirectory, cache == nil, !evictsPageCache else { return nil }
        let matrices = packableMatrices
        let sizes = matrices.map {
            let t = Int32($0.type.rawValue)
            return ($0.name, pl_packed_bytes(t, Int64($0.rows), Int64($0.columns)), pl_packed_bytes(t, 16, Int64($0.columns)))
        }
        guard sizes.reduce(0, { $0 + $1.1 }) >= minimumCacheBytes,
              let writer = PackedWeightCacheWriter(source: file.path, directory: dir, matrices: sizes,
                                                   threads: ProcessInfo.processInfo.activeProcessorCount)
        else { return nil }
        self.writer = writer
        let sources = matrices.map { PackedWeightCacheWriter.Source(info: $0, data: file.data(of: $0),
                                                                    rowBytes: $0.type.rowBytes(columns: $0.columns)!) }
        writer.packAll(sources) { [self] info, groups in dropSource(of: info, groups: groups) }
        return writer
    }

    /// Drops the file pages of `info`'s row groups `groups` from this process's memory (once packed), and from the
    /// page cache too under a memory limit.
    private func dropSource(of info: GGUFTensorInfo, groups: Range<Int>) {
        let rowBytes = info.type.rowBytes(columns: info.columns)!
        let first = groups.lowerBound * 16 * rowBytes, last = min(info.byteCount, groups.upperBound * 16 * rowBytes)
        file.file.adviseDontNeed(offset: info.fileOffset + first, length: last - first, evict: evictsPageCache)
    }

    /// Whether this load's packed matrices all came from a cache file (nothing was repacked).
    public var packedFromCache: Bool {
        lock.lock()
        defer { lock.unlock() }
        return cache != nil && packedHere.isEmpty
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
        let data = file.data(of: info)
        var packedData: UnsafeRawPointer?
        if packs, Self.isPackable(info), !rowLookups.contains(name), !takenElsewhere.contains(name) {
            packedData = pack(info, data: data, rowBytes: rowBytes)
        } else if !rowLookups.contains(name) {
            // Used in place and resident from now on: read in large requests while the model loads, exactly its own
            // pages (the map has no read-around under a budget; without one, faults would read 128 KiB at a time).
            file.file.adviseWillNeed(offset: info.fileOffset, length: info.byteCount)
        }
        return WeightTensor(name: name, type: info.type, rows: info.rows, columns: info.columns,
                            rowBytes: rowBytes, data: data, packed: packedData)
    }

    /// Writes the packed matrices to the cache directory when this load packed any (the cache was missing, stale or
    /// incomplete) and they are worth keeping (≥ `minimumBytes`: a small file repacks in a few milliseconds).
    /// Returns why it could not, or nil. Call it once the model has taken every tensor it uses.
    @discardableResult
    public func persistPacked(minimumBytes: Int = 16 << 20) -> String? {
        lock.lock()
        defer { lock.unlock() }
        if let writer {
            // Everything this load packed went through the writer: name the file, or drop it.
            if let failure = writer.failure { return failure }
            guard !packedHere.isEmpty, packedBytes >= minimumBytes else {
                writer.abandon()
                return nil
            }
            return writer.finish()
        }
        guard let dir = cacheDirectory, !packedHere.isEmpty, packedBytes >= minimumBytes else { return nil }
        var all = packedHere
        // Matrices that did come from an older cache are rewritten too: the new file replaces it.
        let fresh = Set(packedHere.map(\.name))
        for (name, p) in packed where !fresh.contains(name) {
            guard let info = file.tensorInfo(name) else { continue }
            all.append((name, p, pl_packed_bytes(Int32(info.type.rawValue), Int64(info.rows), Int64(info.columns))))
        }
        return PackedWeightCache.write(source: file.path, directory: dir, matrices: all)
    }

    private func pack(_ info: GGUFTensorInfo, data: UnsafeRawPointer, rowBytes: Int) -> UnsafeRawPointer {
        lock.lock()
        defer { lock.unlock() }
        if let p = packed[info.name] { return p }
        let bytes = pl_packed_bytes(Int32(info.type.rawValue), Int64(info.rows), Int64(info.columns))
        packedBytes += bytes
        if let cached = cache?.packed(info.name, bytes: bytes) {
            packed[info.name] = cached
            return cached
        }
        // Either way in slices of ~`packSliceBytes` of source rows, each slice's file pages dropped once packed: a
        // large matrix (Gemma 3's 178 MB tied head) is never resident twice, so peak RSS stays about one model's worth.
        if let p = cacheWriter()?.packedBytes(of: info.name) {
            packed[info.name] = p
            packedHere.append((info.name, p, bytes))
            return p
        }
        // Not in the cache file: packed in memory. After a failed write (full disk) that is every matrix the writer
        // had not finished, and no cache is kept (the writer stays: the matrices it packed live in its mapping).
        let dst = arena.allocate(bytes)
        let groups = (info.rows + 15) / 16
        let slice = max(1, packSliceBytes / (16 * rowBytes))
        for g0 in stride(from: 0, to: groups, by: slice) {
            let g1 = min(groups, g0 + slice)
            // Exactly this slice's source, in large requests (no read-around past it under a budget).
            let first = g0 * 16 * rowBytes, last = min(info.byteCount, g1 * 16 * rowBytes)
            file.file.adviseWillNeed(offset: info.fileOffset + first, length: last - first)
            packMatrix(type: info.type, rows: info.rows, columns: info.columns, rowBytes: rowBytes, data: data, into: dst,
                       groups: g0..<g1)
            dropSource(of: info, groups: g0..<g1)
        }
        packed[info.name] = UnsafeRawPointer(dst)
        packedHere.append((info.name, UnsafeRawPointer(dst), bytes))
        return UnsafeRawPointer(dst)
    }
}

/// Source bytes packed between drops of their file pages (`MappedWeightStore` and `PackedWeightCacheWriter` alike).
let packSliceBytes = 8 << 20

/// Copies a quantized matrix into the packed layout at `dst` (pl_packed_bytes of it, 64-byte aligned), on all cores.
func packMatrix(type: GGMLType, rows: Int, columns: Int, rowBytes: Int, data: UnsafeRawPointer,
                into dst: UnsafeMutableRawPointer, groups range: Range<Int>? = nil) {
    let t = Int32(type.rawValue)
    let range = range ?? 0..<(rows + 15) / 16
    let first = range.lowerBound, groups = range.count
    let parts = min(ProcessInfo.processInfo.activeProcessorCount, max(1, groups / 8))
    // Addresses cross into the concurrent closure as integers: each part writes its own row groups.
    let src = UInt(bitPattern: data), out = UInt(bitPattern: dst)
    let groupBytes = pl_packed_bytes(t, 16, Int64(columns))
    let body: @Sendable (Int) -> Void = { part in
        let g0 = first + groups * part / parts, g1 = first + groups * (part + 1) / parts
        // Each part faults in its own slice of fresh pages first: the kernel clears them on both cores at once.
        WeightArena.prefault(UnsafeMutableRawPointer(bitPattern: out)! + g0 * groupBytes, bytes: (g1 - g0) * groupBytes)
        pl_pack_rows(t, UnsafeRawPointer(bitPattern: src), rowBytes, Int64(rows), Int64(columns),
                     UnsafeMutableRawPointer(bitPattern: out), Int64(g0), Int64(g1))
    }
    DispatchQueue.concurrentPerform(iterations: parts, execute: body)
}
