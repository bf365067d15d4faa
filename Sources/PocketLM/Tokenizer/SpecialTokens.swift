#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The vocabulary's special tokens and llama.cpp's `tokenizer_st_partition`: each special token in turn,
/// longest first, is cut out of every stretch of text not yet claimed. Control and unknown tokens are matched
/// only when special parsing is on (rendered chat prompts); user-defined tokens always, as llama.cpp does.
struct SpecialTokens: Sendable {
    struct Token: Sendable {
        let id: Int32
        let bytes: [UInt8]
        let alwaysMatched: Bool
    }

    enum Fragment {
        case text(Range<Int>)
        case token(Int32)
    }

    /// Longest first, so "<|im_start|>" is never cut short by a shorter special token inside it.
    let tokens: [Token]

    init(pieces: [String], types: [TokenType]) {
        var found: [Token] = []
        for (i, t) in pieces.enumerated() where !t.isEmpty {
            switch types[i] {
            case .control, .unknown: found.append(Token(id: Int32(i), bytes: Array(t.utf8), alwaysMatched: false))
            case .userDefined: found.append(Token(id: Int32(i), bytes: Array(t.utf8), alwaysMatched: true))
            default: break
            }
        }
        found.sort { $0.bytes.count != $1.bytes.count ? $0.bytes.count > $1.bytes.count : $0.id < $1.id }
        tokens = found
    }

    func partition(_ bytes: [UInt8], parseSpecial: Bool) -> [Fragment] {
        var fragments: [Fragment] = [.text(0..<bytes.count)]
        bytes.withUnsafeBytes { hay in
            for special in tokens where parseSpecial || special.alwaysMatched {
                var next: [Fragment] = []
                var found = false
                for fragment in fragments {
                    guard case .text(let range) = fragment else { next.append(fragment); continue }
                    var start = range.lowerBound
                    while start < range.upperBound,
                          let m = Self.find(special.bytes, in: hay, from: start, to: range.upperBound) {
                        found = true
                        if m > start { next.append(.text(start..<m)) }
                        next.append(.token(special.id))
                        start = m + special.bytes.count
                    }
                    if start < range.upperBound { next.append(.text(start..<range.upperBound)) }
                }
                if found { fragments = next }
            }
        }
        return fragments
    }

    /// First occurrence of `needle` in `hay[from..<to]` (memchr for the first byte, then memcmp; Glibc's Swift
    /// module does not export memmem).
    private static func find(_ needle: [UInt8], in hay: UnsafeRawBufferPointer, from: Int, to: Int) -> Int? {
        guard let base = hay.baseAddress, let first = needle.first else { return nil }
        return needle.withUnsafeBytes { nb -> Int? in
            var p = from
            while to - p >= nb.count {
                guard let hit = memchr(base + p, Int32(first), to - p - nb.count + 1) else { return nil }
                let offset = UnsafeRawPointer(hit) - base
                if memcmp(base + offset, nb.baseAddress!, nb.count) == 0 { return offset }
                p = offset + 1
            }
            return nil
        }
    }
}

/// The priority queue of mergeable adjacent pairs both BPE flavours use: a binary min-heap ordered by the
/// candidate's own `before` (merge rank for GPT-2 BPE, score for SentencePiece; leftmost first on ties).
protocol MergeCandidate {
    static func before(_ a: Self, _ b: Self) -> Bool
}

struct MergeQueue<Candidate: MergeCandidate> {
    private var heap: [Candidate] = []

    mutating func removeAll() { heap.removeAll(keepingCapacity: true) }

    @inline(__always) mutating func push(_ c: Candidate) {
        heap.append(c)
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard Candidate.before(heap[i], heap[p]) else { break }
            heap.swapAt(i, p)
            i = p
        }
    }

    @inline(__always) mutating func pop() -> Candidate? {
        guard let last = heap.popLast() else { return nil }
        guard !heap.isEmpty else { return last }
        let top = heap[0]
        heap[0] = last
        var i = 0
        let n = heap.count
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < n && Candidate.before(heap[l], heap[m]) { m = l }
            if r < n && Candidate.before(heap[r], heap[m]) { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return top
    }
}
