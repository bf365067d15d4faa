/// Turns generated tokens into text one token at a time without ever splitting a UTF-8 character.
///
/// Byte-level BPE tokens often carry part of a character (an emoji is typically two to four tokens), so a
/// token's bytes are held back while they are the unfinished start of a character that could still become
/// valid. A byte sequence that can no longer become valid is emitted as U+FFFD at once (never twice), so one
/// bad token cannot stall the stream. The pieces returned by `append` and `flush` concatenate to exactly
/// `tokenizer.decode(ids, skipSpecial:)` of the same ids.
public struct StreamingDetokenizer: Sendable {
    public let tokenizer: any Tokenizer
    /// Drop control tokens (e.g. `<|im_end|>`) instead of emitting their text.
    public let skipSpecial: Bool
    private var pending: [UInt8] = []

    public init(tokenizer: any Tokenizer, skipSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecial = skipSpecial
    }

    /// Adds one token and returns the text that is now complete (possibly empty).
    public mutating func append(_ id: Int) -> String {
        if skipSpecial && tokenizer.isControl(id) { return "" }
        pending.append(contentsOf: tokenizer.tokenBytes(id))
        let cut = StreamingDetokenizer.completeLength(pending)
        guard cut > 0 else { return "" }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Returns whatever is still held back (an unfinished character becomes U+FFFD) and starts afresh.
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the prefix of `bytes` that can be decoded now: everything except a trailing lead byte plus
    /// continuation bytes that are a valid, unfinished start of a character.
    static func completeLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        // Find the last non-continuation byte within the longest possible character (4 bytes).
        var i = n - 1
        while i >= 0 && n - i <= 4 && bytes[i] & 0xC0 == 0x80 { i -= 1 }
        guard i >= 0, n - i <= 4 else { return n }
        let lead = bytes[i]
        let need: Int
        switch lead {
        case 0xC2...0xDF: need = 2
        case 0xE0...0xEF: need = 3
        case 0xF0...0xF4: need = 4
        default: return n  // ASCII (complete) or a byte that never starts a character (invalid either way)
        }
        let have = n - i
        guard have < need else { return n }
        if have >= 2 {
            // The second byte's allowed range depends on the lead (no overlongs, surrogates or > U+10FFFF).
            let b1 = bytes[i + 1]
            let ok: Bool
            switch lead {
            case 0xE0: ok = (0xA0...0xBF).contains(b1)
            case 0xED: ok = (0x80...0x9F).contains(b1)
            case 0xF0: ok = (0x90...0xBF).contains(b1)
            case 0xF4: ok = (0x80...0x8F).contains(b1)
            default: ok = true
            }
            if !ok { return n }
        }
        return i
    }
}
