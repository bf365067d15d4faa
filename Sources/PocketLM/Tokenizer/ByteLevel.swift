/// GPT-2's reversible byte ↔ character mapping (`bytes_to_unicode`), which byte-level BPE vocabularies are
/// written in.
///
/// Every byte gets a printable, non-whitespace character so that any byte string — including partial UTF-8 —
/// can be a vocabulary entry: the printable Latin-1 bytes (33...126, 161...172, 174...255) stand for
/// themselves, and the other 68 bytes, in increasing order, take U+0100, U+0101, … (so a space is "Ġ" U+0120 and
/// a newline is "Ċ" U+010A).
enum ByteLevel {
    /// The scalar each byte is written as.
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                table[b] = Unicode.Scalar(UInt8(b))
            } else {
                table[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The inverse of `byteToScalar`, indexed by scalar value (all of them are below U+0144); -1 where none.
    private static let scalarToByteTable: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for (b, s) in byteToScalar.enumerated() { table[Int(s.value)] = Int16(b) }
        return table
    }()

    /// The byte `scalar` stands for, or nil when it is not in the alphabet.
    @inline(__always) static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        let v = Int(scalar.value)
        guard v < scalarToByteTable.count, scalarToByteTable[v] >= 0 else { return nil }
        return UInt8(scalarToByteTable[v])
    }

    /// `bytes` written in the byte-level alphabet (how the vocabulary spells them).
    static func encode<C: Collection<UInt8>>(_ bytes: C) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(byteToScalar[Int(b)]) }
        return String(s)
    }
}
