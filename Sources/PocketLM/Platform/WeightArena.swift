#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Memory for the repacked weight matrices: large page-aligned chunks, carved in the order the matrices are
/// loaded. Freed all at once, with the store that owns it.
///
/// The chunks are ordinary 4 KiB pages, not transparent huge pages. Every page of the repacked weights is fresh
/// memory the kernel must clear, and on a VM whose balloon reports free pages to the host (Firecracker here) a
/// 2 MiB page is usually one the host took back: faulting 250 MiB of huge pages took 47–1057 ms from run to run
/// (AMD EPYC VM, 2026-12-06) against a steady 190 ms for 4 KiB pages, or 135 ms populated with
/// MADV_POPULATE_WRITE (`prefault`), which the packing threads do for their own slices.
final class WeightArena {
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
            // A matrix larger than a chunk gets a chunk of its own.
            let chunk = max(chunkBytes, size)
            var p: UnsafeMutableRawPointer?
            guard posix_memalign(&p, 4096, chunk) == 0, let p else {
                fatalError("out of memory: \(chunk) bytes for weights")
            }
            chunks.append(p)
            cursor = p
            left = chunk
        }
        let out = cursor!
        cursor = out + size
        left -= size
        return out
    }

    /// Faults in the whole pages inside [start, start + bytes) in one system call (Linux ≥ 5.14), which is ~30%
    /// cheaper than taking the faults one page at a time as the packing first writes them. Elsewhere, or on an
    /// older kernel, it does nothing and the pages fault on first write as before.
    static func prefault(_ start: UnsafeMutableRawPointer, bytes: Int) {
        #if os(Linux)
        let page = 4096
        let first = (Int(bitPattern: start) + page - 1) & ~(page - 1)
        let end = (Int(bitPattern: start) + bytes) & ~(page - 1)
        guard end > first, let p = UnsafeMutableRawPointer(bitPattern: first) else { return }
        _ = madvise(p, end - first, populateWrite)
        #endif
    }

    /// MADV_POPULATE_WRITE, which Glibc's headers as Swift sees them may not define yet.
    private static let populateWrite: Int32 = 23
}
