import Foundation

/// Any JSON value, decoded without a schema, so a request can be checked field by field with messages that name
/// the field (JSONDecoder keeps booleans and numbers apart, unlike JSONSerialization's NSNumbers).
enum JSONValue: Decodable, Equatable {
    case null
    case bool(Bool)
    /// A number written without a fraction or exponent that fits 64 bits, kept exact (a seed past 2^53 would
    /// not survive a Double).
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try Self.ifThisType({ try c.decode(Bool.self) }) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .integer(i)
        } else if let n = try Self.ifThisType({ try c.decode(Double.self) }) {
            self = .number(n)
        } else if let s = try Self.ifThisType({ try c.decode(String.self) }) {
            self = .string(s)
        } else if let a = try Self.ifThisType({ try c.decode([JSONValue].self) }) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    /// The decoded value, or nil when the JSON value is of another type. Any other failure — a string that is not
    /// UTF-8 or holds a lone surrogate, a number out of range, a bad value deeper inside an array — is rethrown,
    /// so the client reads what is wrong rather than "expected a dictionary but found a string".
    private static func ifThisType<T>(_ decode: () throws -> T) throws -> T? {
        do {
            return try decode()
        } catch DecodingError.typeMismatch(_, let context) where context.underlyingError == nil {
            return nil
        }
    }

    var isNull: Bool { self == .null }
    var string: String? { if case .string(let s) = self { s } else { nil } }
    var number: Double? {
        switch self {
        case .integer(let i): Double(i)
        case .number(let n): n
        default: nil
        }
    }
    var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    var array: [JSONValue]? { if case .array(let a) = self { a } else { nil } }
    var object: [String: JSONValue]? { if case .object(let o) = self { o } else { nil } }
}
