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

/// llama.cpp's text-based special-token rules (`llama_vocab::impl::load`, src/llama-vocab.cpp): which tokens end
/// generation (EOG) and which get their type overridden because a converter mislabelled them.
///
/// llama.cpp does not trust GGUF token types for turn markers: it recognises them by their text. A token spelled
/// like an end-of-turn marker (`<end_of_turn>`, `<|eot_id|>`, `<|im_end|>`, `</s>`, …) ends generation and is
/// made a control token, so it is cut out of rendered prompts (special parsing on) and kept out of plain text;
/// so are the fill-in-the-middle markers. Mirroring this keeps prompt ids and stopping identical to llama.cpp's
/// for files whose types are wrong, and gives the stop set of every family (Gemma's `<end_of_turn>`, Llama 3's
/// `<|eot_id|>` and `<|eom_id|>`, ChatML's `<|im_end|>`) without a per-family list.
enum LlamaCppSpecialRules {
    /// Texts that end generation (llama.cpp's EOG list).
    static let endOfGenerationTexts: [String] = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
        "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
        "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<｜end▁of▁sentence｜>", "[e~[",
    ]
    /// Fill-in-the-middle markers, per kind, in llama.cpp's order. llama.cpp takes the first one it meets in its
    /// hash-map order when a vocabulary has several of a kind (none of the families here does); this takes the
    /// first in list order.
    static let fimPrefixTexts = ["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                                 "▁<PRE>", "<|code_prefix|>", "<|prefix|>"]
    static let fimSuffixTexts = ["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                                 "▁<SUF>", "<|code_suffix|>", "<|suffix|>"]
    static let fimMiddleTexts = ["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                                 "▁<MID>", "<|code_middle|>", "<|middle|>"]
    static let fimPadTexts = ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"]
    static let fimRepoTexts = ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"]
    static let fimSeparatorTexts = ["<|file_sep|>"]
    /// gpt-oss's channel markers, which llama.cpp always renders (user-defined, matched in any text).
    static let alwaysRenderedTexts = ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"]

    /// The special ids a GGUF may give (`tokenizer.ggml.*_token_id`); nil when absent.
    struct MetadataIds {
        var eos: Int?
        var eot: Int?
        var eom: Int?
        var fimPad: Int?
        var fimRepo: Int?
        var fimSeparator: Int?
        var fimPrefix: Int?
        var fimSuffix: Int?
        var fimMiddle: Int?
    }

    /// Applies the rules to `types` (in place) and returns the EOG ids. `lookup` finds the id of an exact
    /// vocabulary string (the last of duplicates, as llama.cpp's `token_to_id`).
    static func apply(types: inout [TokenType], ids: MetadataIds, lookup: (String) -> Int?) -> Set<Int> {
        func forceControl(_ id: Int) {
            if types[id] != .control { types[id] = .control }
        }
        func detect(_ given: Int?, _ texts: [String]) -> Int? {
            if let given { return given }
            for t in texts { if let id = lookup(t) { forceControl(id); return id } }
            return nil
        }
        var eog: Set<Int> = []
        _ = detect(ids.fimPrefix, fimPrefixTexts)
        _ = detect(ids.fimSuffix, fimSuffixTexts)
        _ = detect(ids.fimMiddle, fimMiddleTexts)
        for id in [detect(ids.fimPad, fimPadTexts), detect(ids.fimRepo, fimRepoTexts),
                   detect(ids.fimSeparator, fimSeparatorTexts)].compactMap({ $0 }) {
            eog.insert(id)
        }
        for t in endOfGenerationTexts {
            if let id = lookup(t) { eog.insert(id); forceControl(id) }
        }
        for t in alwaysRenderedTexts {
            if let id = lookup(t) { types[id] = .userDefined }
        }
        // EOS, EOT and EOM are always EOG (llama.cpp's "sanity checks"); an EOT/EOM the file does not name is
        // found by its text above.
        for id in [ids.eos, ids.eot, ids.eom].compactMap({ $0 }) { eog.insert(id) }
        // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation, when these are present.
        func has(_ t: String) -> Bool { lookup(t).map { eog.contains($0) } ?? false }
        if let end = lookup("<|end|>"), eog.contains(end),
           (has("<|return|>") && has("<|call|>")) || (has("<|calls|>") && has("<|flush|>")) {
            eog.remove(end)
            types[end] = .userDefined
        }
        // Gemma 4 and PLaMo-2 use "</s>" as ordinary text.
        if let s = lookup("</s>"), eog.contains(s), has("<|tool_response>") || has("<|plamo:eos|>") {
            eog.remove(s)
            types[s] = .normal
        }
        return eog
    }
}

extension LlamaCppSpecialRules.MetadataIds {
    /// The EOM and fill-in-the-middle ids a GGUF names. As in llama.cpp, an id outside the vocabulary is ignored
    /// (the text-based detection then applies); EOS and EOT are read by each tokenizer, which refuses bad ones.
    init(gguf: GGUFFile, eos: Int?, eot: Int?, vocabularySize n: Int) {
        func id(_ key: String) -> Int? {
            guard let v = gguf.metadata["tokenizer.ggml.\(key)"]?.int, v >= 0, v < n else { return nil }
            return v
        }
        self.init(eos: eos, eot: eot, eom: id("eom_token_id"),
                  fimPad: id("fim_pad_token_id"), fimRepo: id("fim_rep_token_id"),
                  fimSeparator: id("fim_sep_token_id"),
                  // The deprecated keys are read after the new ones in llama.cpp, so they win when both exist.
                  fimPrefix: id("prefix_token_id") ?? id("fim_pre_token_id"),
                  fimSuffix: id("suffix_token_id") ?? id("fim_suf_token_id"),
                  fimMiddle: id("middle_token_id") ?? id("fim_mid_token_id"))
    }
}
