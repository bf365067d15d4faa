/// Splits text into the pieces that byte-level BPE then merges independently ("pre-tokenisation").
///
/// The splitting rules are regular expressions in the original tokenizers; here they are hand-written scanners
/// over Unicode scalars that mirror llama.cpp's own custom implementations (`unicode_regex_split_custom_gpt2`,
/// `unicode_regex_split_custom_llama3`) step for step. Regex engines are avoided on purpose: they are slow on
/// long prompts and disagree with each other on `\s`, `\p{L}` and look-ahead details, and llama.cpp — which
/// produced the reference ids — does not run a regex engine for these patterns either.
///
/// Character classes: `\p{L}` is general category L* (Lu Ll Lt Lm Lo), `\p{N}` is N* (Nd Nl No), and `\s` is the
/// Unicode White_Space set as llama.cpp lists it (which, unlike C++ `std::regex`, includes U+0085 and U+00A0).
public struct PreTokenizer: Sendable, Equatable {
    /// The splitting rule set.
    public enum Kind: String, Sendable, CaseIterable {
        /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
        /// (contractions are case-sensitive).
        case gpt2
        /// Every `\p{N}` scalar becomes its own piece first, then the `gpt2` rules split the rest
        /// (llama.cpp's pre-types smollm, starcoder, refact, command-r, codeshell, exaone).
        case smollm
        /// Llama 3's rules: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
        /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
        case llama3
        /// Qwen2's rules: Llama 3's with `\p{N}` instead of `\p{N}{1,3}` (every digit its own piece).
        case qwen2
    }

    public let kind: Kind
    /// llama.cpp's `ignore_merges` for this pre-tokenizer: a piece that is itself a vocabulary entry becomes that
    /// token without merging (Llama 3 and the names llama.cpp groups with it).
    public let ignoresMerges: Bool
    /// Whether a BOS is added when the file has no `tokenizer.ggml.add_bos_token` (llama.cpp sets it for the
    /// Llama 3 group only; every other BPE pre-tokenizer leaves it off).
    public let defaultAddBos: Bool

    /// The rule set alone; the vocabulary flags are those of the llama.cpp group the rule set is named after.
    public init(kind: Kind) {
        self.kind = kind
        self.ignoresMerges = kind == .llama3
        self.defaultAddBos = kind == .llama3
    }

    private init(kind: Kind, ignoresMerges: Bool, defaultAddBos: Bool) {
        self.kind = kind
        self.ignoresMerges = ignoresMerges
        self.defaultAddBos = defaultAddBos
    }

    /// The pre-tokenizer named by GGUF's `tokenizer.ggml.pre`, as llama.cpp's `llama_vocab::impl::load` maps
    /// the name (src/llama-vocab.cpp). A name llama.cpp splits with a rule set PocketLM does not implement —
    /// or does not know at all — is refused rather than approximated, since a different split gives different
    /// ids and silently worse output.
    public init(preName: String?) throws(TokenizerError) {
        guard let p = PreTokenizer.llamaCppGroups[preName ?? ""] else {
            throw .unsupportedPreTokenizer(preName ?? "")
        }
        self = p
    }

    /// Maps a `tokenizer.ggml.pre` value to a rule set, or nil when it is not one PocketLM implements.
    public static func kind(forPreName name: String?) -> Kind? {
        llamaCppGroups[name ?? ""]?.kind
    }

    /// Every `tokenizer.ggml.pre` value PocketLM accepts, sorted.
    public static var supportedPreNames: [String] { llamaCppGroups.keys.sorted() }

    /// llama.cpp's name → pre-type table, restricted to the pre-types whose regexes are implemented here, with the
    /// flags llama.cpp sets beside the pre-type. Left out on purpose: a missing name and `default` (llama.cpp
    /// then runs four regexes — punctuation runs, GPT-2, `\p{N}+`, `[0-9]{3}` — not the GPT-2 rules alone), and
    /// `dbrx`/`smaug-bpe` (Llama 3's regex but without `ignore_merges`) — both refused until implemented.
    private static let llamaCppGroups: [String: PreTokenizer] = {
        var t: [String: PreTokenizer] = [:]
        // LLAMA_VOCAB_PRE_TYPE_LLAMA3: ignore_merges = true, add_bos = true.
        for n in ["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                  "jina-v5-nano"] {
            t[n] = PreTokenizer(kind: .llama3, ignoresMerges: true, defaultAddBos: true)
        }
        // LLAMA_VOCAB_PRE_TYPE_QWEN2 (and STABLELM2, HUNYUAN, SOLAR_OPEN, which share its regex and flags).
        for n in ["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "hunyuan", "solar-open"] {
            t[n] = PreTokenizer(kind: .qwen2, ignoresMerges: false, defaultAddBos: false)
        }
        // STARCODER, REFACT, COMMAND_R, SMOLLM, CODESHELL, EXAONE, MINERVA, MELLUM2: `\p{N}` then GPT-2.
        for n in ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"] {
            t[n] = PreTokenizer(kind: .smollm, ignoresMerges: false, defaultAddBos: false)
        }
        // GPT2, MPT, OLMO, JAIS, TRILLION, GRANITE_DOCLING: the GPT-2 regex alone. "gpt2" is not a llama.cpp
        // name; PocketLM's own converter (convert_hf.py) writes it for a plain byte-level BPE.
        for n in ["gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
                  "mellum", "modern-bert", "exaone4", "mpt", "olmo", "jais", "trillion", "granite-docling", "gpt2"] {
            t[n] = PreTokenizer(kind: .gpt2, ignoresMerges: false, defaultAddBos: false)
        }
        return t
    }()

    /// The pieces of `text`, in order; they concatenate back to `text`.
    public func split(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        let ends = pieceEnds(scalars.map(\.value))
        var pieces: [String] = []
        pieces.reserveCapacity(ends.count)
        var start = 0
        for end in ends {
            var s = String.UnicodeScalarView()
            s.append(contentsOf: scalars[start..<end])
            pieces.append(String(s))
            start = end
        }
        return pieces
    }

    /// The exclusive end index (in scalars) of each piece of `scalars`; pieces are contiguous and cover it all.
    func pieceEnds(_ scalars: [UInt32]) -> [Int] {
        var ends: [Int] = []
        let flags = scalars.map(CharClass.flags)
        scalars.withUnsafeBufferPointer { c in
            flags.withUnsafeBufferPointer { f in
                var s = Scanner(c: c, f: f, ends: [], end: 0, prevEnd: 0)
                s.ends.reserveCapacity(c.count / 3 + 1)
                switch kind {
                case .gpt2:
                    s.gpt2(from: 0, to: c.count)
                case .llama3:
                    s.llama3(from: 0, to: c.count, digitRun: 3)
                case .qwen2:
                    s.llama3(from: 0, to: c.count, digitRun: 1)
                case .smollm:
                    // First pass (`\p{N}`): each number scalar alone; the stretches between are then split
                    // by the GPT-2 rules, which never look across a stretch's ends.
                    var runStart = 0
                    for i in 0..<c.count where f[i] & CharClass.number != 0 {
                        if runStart < i { s.gpt2(from: runStart, to: i) }
                        s.ends.append(i + 1)
                        runStart = i + 1
                    }
                    if runStart < c.count { s.gpt2(from: runStart, to: c.count) }
                }
                ends = s.ends
            }
        }
        return ends
    }
}

/// The three character classes the patterns use, as bit flags per scalar.
private enum CharClass {
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let whitespace: UInt8 = 4
    /// Set for every real scalar, so "past the end of the stretch" (flags 0) differs from "none of the classes".
    static let present: UInt8 = 8

    private static let ascii: [UInt8] = (0..<128).map { slowFlags(UInt32($0)) }

    static func flags(_ v: UInt32) -> UInt8 {
        v < 128 ? ascii[Int(v)] : slowFlags(v)
    }

    static func isWhitespace(_ v: UInt32) -> Bool {
        switch v {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: true
        default: false
        }
    }

    private static func slowFlags(_ v: UInt32) -> UInt8 {
        if isWhitespace(v) { return present | whitespace }
        guard let scalar = Unicode.Scalar(v) else { return present }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return present | letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return present | number
        default:
            return present
        }
    }
}

/// One left-to-right scan over a stretch of scalars, recording where each piece ends.
///
/// A line-for-line port of llama.cpp's scanners so that edge cases (a lone space before punctuation, whitespace
/// at the end of a stretch, an apostrophe at the end) come out the same.
private struct Scanner {
    let c: UnsafeBufferPointer<UInt32>
    let f: UnsafeBufferPointer<UInt8>
    var ends: [Int]
    /// End of the current stretch: lookups at or past it behave as "no character".
    var end: Int
    var prevEnd: Int

    private static let apostrophe = UInt32(UInt8(ascii: "'"))
    private static let space = UInt32(UInt8(ascii: " "))
    private static let cr = UInt32(UInt8(ascii: "\r"))
    private static let lf = UInt32(UInt8(ascii: "\n"))

    @inline(__always) func cpt(_ p: Int) -> UInt32? { p < end ? c[p] : nil }
    @inline(__always) func fl(_ p: Int) -> UInt8 { p < end ? f[p] : 0 }

    @inline(__always) mutating func add(_ e: Int) {
        if e > prevEnd { ends.append(e) }
        prevEnd = e
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d`, optionally ASCII case-insensitive; returns the contraction's length or 0.
    @inline(__always) func contraction(at pos: Int, caseInsensitive: Bool) -> Int {
        guard c[pos] == Scanner.apostrophe, pos + 1 < end else { return 0 }
        func lower(_ v: UInt32) -> UInt32 {
            // Only ASCII letters matter: no other scalar lowercases to one of s t m d r e v l.
            caseInsensitive && v >= 0x41 && v <= 0x5A ? v + 32 : v
        }
        let n = lower(c[pos + 1])
        switch n {
        case 0x73, 0x74, 0x6D, 0x64: return 2  // s t m d
        default: break
        }
        guard pos + 2 < end else { return 0 }
        let nn = lower(c[pos + 2])
        if (n == 0x72 && nn == 0x65) || (n == 0x76 && nn == 0x65) || (n == 0x6C && nn == 0x6C) { return 3 }  // re ve ll
        return 0
    }

    /// Whitespace rules shared by both patterns once nothing else matched: `\s+(?!\S)` keeps the last
    /// whitespace scalar back so it can lead the next word, but only when something follows in the stretch.
    @inline(__always) mutating func whitespaceRun(_ pos: inout Int) {
        var n = 0
        while fl(pos + n) & CharClass.whitespace != 0 { n += 1 }
        if n > 1 && pos + n < end {
            pos += n - 1
        } else if n > 0 {
            pos += n
        } else {
            pos += 1
        }
        add(pos)
    }

    mutating func gpt2(from start: Int, to stop: Int) {
        end = stop
        prevEnd = start
        var pos = start
        while pos < end {
            let cp = c[pos]
            let k = contraction(at: pos, caseInsensitive: false)
            if k > 0 {
                pos += k
                add(pos)
                continue
            }
            let isSpace = cp == Scanner.space
            var f2 = isSpace ? fl(pos + 1) : f[pos]
            // ` ?\p{L}+`
            if f2 & CharClass.letter != 0 {
                if isSpace { pos += 1 }
                while f2 & CharClass.letter != 0 { pos += 1; f2 = fl(pos) }
                add(pos)
                continue
            }
            // ` ?\p{N}+`
            if f2 & CharClass.number != 0 {
                if isSpace { pos += 1 }
                while f2 & CharClass.number != 0 { pos += 1; f2 = fl(pos) }
                add(pos)
                continue
            }
            // ` ?[^\s\p{L}\p{N}]+`
            let classes = CharClass.whitespace | CharClass.letter | CharClass.number
            if f2 & classes == 0 && f2 != 0 {
                if isSpace { pos += 1 }
                while f2 & classes == 0 && f2 != 0 { pos += 1; f2 = fl(pos) }
                add(pos)
                continue
            }
            // `\s+(?!\S)|\s+`
            whitespaceRun(&pos)
        }
    }

    /// Llama 3's scanner (`unicode_regex_split_custom_llama3`); with `digitRun` 1 it is Qwen2's
    /// (`unicode_regex_split_custom_qwen2`), which differs only in taking one digit at a time.
    mutating func llama3(from start: Int, to stop: Int, digitRun: Int) {
        end = stop
        prevEnd = start
        var pos = start
        let classes = CharClass.whitespace | CharClass.letter | CharClass.number
        while pos < end {
            let cp = c[pos]
            let fc = f[pos]
            let k = contraction(at: pos, caseInsensitive: true)
            if k > 0 {
                pos += k
                add(pos)
                continue
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(cp == Scanner.cr || cp == Scanner.lf || fc & CharClass.number != 0) {
                if fc & CharClass.letter != 0 || fl(pos + 1) & CharClass.letter != 0 {
                    pos += 1
                    while fl(pos) & CharClass.letter != 0 { pos += 1 }
                    add(pos)
                    continue
                }
            }
            // `\p{N}{1,3}` (Qwen2: `\p{N}`)
            if fc & CharClass.number != 0 {
                var ini = pos
                while fl(pos) & CharClass.number != 0 {
                    pos += 1
                    if pos - ini >= digitRun {
                        add(pos)
                        ini = pos
                    }
                }
                add(pos)
                continue
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            var f2 = cp == Scanner.space ? fl(pos + 1) : fc
            if f2 & classes == 0 && fc != 0 {
                if cp == Scanner.space { pos += 1 }
                while f2 & classes == 0 && f2 != 0 { pos += 1; f2 = fl(pos) }
                while let c2 = cpt(pos), c2 == Scanner.cr || c2 == Scanner.lf { pos += 1 }
                add(pos)
                continue
            }
            // `\s*[\r\n]+`: a whitespace run containing line breaks ends at its last line break.
            var n = 0
            var lastBreakEnd = 0
            while fl(pos + n) & CharClass.whitespace != 0 {
                let c2 = c[pos + n]
                if c2 == Scanner.cr || c2 == Scanner.lf { lastBreakEnd = pos + n + 1 }
                n += 1
            }
            if lastBreakEnd > 0 {
                pos = lastBreakEnd
                add(pos)
                continue
            }
            // `\s+(?!\S)|\s+`
            whitespaceRun(&pos)
        }
    }
}
