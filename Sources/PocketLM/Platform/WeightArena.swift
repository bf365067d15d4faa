#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Memory for the repacked weight matrices: large 2 MiB-aligned chunks, carved in the order the matrices are
/// loaded, which Linux may back with transparent huge pages.
///
/// A fresh process faults in every page of its repacked weights once (143 MB for SmolLM2 Q8_0): with 4 KiB pages
/// that is ~35,000 page faults at load, with 2 MiB pages ~70. Freed all at once, with the store that owns it.
final class WeightArena {
    static let hugePage = 2 << 20
    private let chunkBytes: Int
    private var chunks: [UnsafeMutableRawPointer] = []
    private var cursor: UnsafeMutableRawPointer?
    private var left = 0

    init(chunkBytes: Int = 16 << 20) {
        self.chunkBytes = chunkBytes
    }

    deinit {
        for c in chunks { free(c) }
    }

    /// `bytes` of uninitialised memory, 4 KiB-aligned, valid while the arena lives.
    func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        let size = (bytes + 4095) & ~4095
        if size > left {
            // A matrix larger than a chunk gets a chunk of its own (rounded to whole huge pages).
            let chunk = max(chunkBytes, (size + Self.hugePage - 1) / Self.hugePage * Self.hugePage)
            var p: UnsafeMutableRawPointer?
            guard posix_memalign(&p, Self.hugePage, chunk) == 0, let p else {
                fatalError("out of memory: \(chunk) bytes for weights")
            }
            #if os(Linux)
            _ = madvise(p, chunk, MADV_HUGEPAGE)   // a hint: without THP the chunk is ordinary pages
            #endif
            chunks.append(p)
            cursor = p
            left = chunk
        }
        let out = cursor!
        cursor = out + size
        left -= size
        return out
    }
}
