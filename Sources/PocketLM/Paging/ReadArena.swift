#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The paged FFN's group slots and staging buffers, which every per-token read lands in: one anonymous mapping,
/// 2 MiB-aligned and, on Linux, open to transparent huge pages (MADV_HUGEPAGE).
///
/// A direct read pins its destination pages for the device and unpins them after. Per 4 KiB page that came to 7% of
/// the CPU samples of a Qwen2.5-0.5B-shaped Q4_K_M token under flash paging (`gup_fast_fallback`: 147 MiB, ~37,600
/// pages read per token, on a 2-core machine whose cores also compute); a page-table entry that maps 2 MiB is pinned
/// as one. The budget counts the whole arena (the slots and both staging buffers, every group of a layer), so a huge
/// page committing a staging buffer's unused part costs nothing the budget did not already count; the mapping's
/// alignment slack is never touched. Where huge pages are off or none is free, the kernel maps 4 KiB pages.
public final class ReadArena {
    public let base: UnsafeMutableRawPointer
    public let bytes: Int
    private let mapping: UnsafeMutableRawPointer?
    private let mappedBytes: Int

    public static let hugePage = 2 << 20

    /// nil for zero bytes.
    public init?(bytes: Int) {
        guard bytes > 0 else { return nil }
        self.bytes = bytes
        let total = bytes + Self.hugePage
        if let p = mmap(nil, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED {
            mapping = p
            mappedBytes = total
            let aligned = (Int(bitPattern: p) + Self.hugePage - 1) / Self.hugePage * Self.hugePage
            base = UnsafeMutableRawPointer(bitPattern: aligned)!
            #if os(Linux)
            _ = madvise(base, bytes, MADV_HUGEPAGE)
            #endif
        } else {
            // No address space for the slack: an ordinary aligned allocation (4 KiB pages).
            mapping = nil
            mappedBytes = 0
            base = .allocate(byteCount: bytes, alignment: FlashLayout.ioAlignment)
        }
    }

    deinit {
        if let mapping { munmap(mapping, mappedBytes) } else { base.deallocate() }
    }
}
