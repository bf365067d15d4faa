/// Every vocabulary string, stored once as UTF-8, with an open-addressing hash index from bytes to id.
///
/// Why not `[String: Int32]`: a 262,144-entry vocabulary (Gemma 3) built into a Swift dictionary costs a String
/// hash (Unicode-normalising) per entry at load and a String allocation per lookup while merging. Here the pieces
/// are one byte array, the index is an `[Int32]` of slots probed linearly, and lookups hash raw bytes, so a
/// merge step never allocates. Semantics are llama.cpp's `token_to_id` map: exact bytes, later duplicates win.
struct PieceTable: Sendable {
    private let bytes: [UInt8]
    /// Piece `i` is `bytes[starts[i]..<starts[i + 1]]`.
    private let starts: [Int32]
    /// Ids by hash slot, -1 where empty; the count is a power of two at least twice the vocabulary.
    private let slots: [Int32]
    private let mask: Int

    init(pieces: [String]) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(pieces.count * 8)
        var starts: [Int32] = []
        starts.reserveCapacity(pieces.count + 1)
        starts.append(0)
        for p in pieces {
            var p = p
            p.withUTF8 { bytes.append(contentsOf: $0) }
            starts.append(Int32(bytes.count))
        }
        var capacity = 16
        while capacity < pieces.count * 2 { capacity <<= 1 }
        var slots = [Int32](repeating: -1, count: capacity)
        let mask = capacity - 1
        bytes.withUnsafeBufferPointer { b in
            starts.withUnsafeBufferPointer { s in
                slots.withUnsafeMutableBufferPointer { slot in
                    for i in 0..<pieces.count {
                        let start = Int(s[i]), count = Int(s[i + 1]) - start
                        let key = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(b)[start..<(start + count)])
                        var h = Int(truncatingIfNeeded: PieceTable.hash(key)) & mask
                        while true {
                            let other = Int(slot[h])
                            if other < 0 { slot[h] = Int32(i); break }
                            let os = Int(s[other]), oc = Int(s[other + 1]) - os
                            if oc == count && PieceTable.equal(b, os, key) { slot[h] = Int32(i); break }
                            h = (h + 1) & mask
                        }
                    }
                }
            }
        }
        self.bytes = bytes
        self.starts = starts
        self.slots = slots
        self.mask = mask
    }

    var count: Int { starts.count - 1 }

    /// FNV-1a over the bytes: short keys (a piece is ~7 bytes), so a byte loop is as fast as anything wider.
    @inline(__always) static func hash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h ^ (h >> 29)
    }

    @inline(__always) private static func equal(_ b: UnsafeBufferPointer<UInt8>, _ start: Int,
                                                _ key: UnsafeRawBufferPointer) -> Bool {
        for k in 0..<key.count where b[start + k] != key[k] { return false }
        return true
    }

    /// The id of the piece whose bytes are exactly `key`, or -1.
    @inline(__always) func id(_ key: UnsafeRawBufferPointer) -> Int32 {
        bytes.withUnsafeBufferPointer { b in
            starts.withUnsafeBufferPointer { s in
                slots.withUnsafeBufferPointer { slot in
                    var h = Int(truncatingIfNeeded: PieceTable.hash(key)) & mask
                    while true {
                        let other = Int(slot[h])
                        if other < 0 { return -1 }
                        let os = Int(s[other])
                        if Int(s[other + 1]) - os == key.count && PieceTable.equal(b, os, key) { return Int32(other) }
                        h = (h + 1) & mask
                    }
                }
            }
        }
    }

    func id(_ piece: String) -> Int32 {
        var piece = piece
        return piece.withUTF8 { id(UnsafeRawBufferPointer($0)) }
    }

    /// The stored UTF-8 of piece `i`.
    func utf8(_ i: Int) -> ArraySlice<UInt8> {
        bytes[Int(starts[i])..<Int(starts[i + 1])]
    }
}
