import Foundation
import PocketLM

/// The body of `POST /v1/chat/completions` or `POST /v1/completions`, checked field by field.
///
/// Every mistake becomes an `APIError` naming the field: a body that is not JSON, a field of the wrong type, an
/// unknown role, a value out of range, and any OpenAI feature this server does not implement (tools, logprobs,
/// n > 1, penalties…) — refused, never silently ignored. Unknown fields that change nothing are ignored, as
/// OpenAI-compatible servers do.
struct OpenAIRequest {
    enum Kind {
        case chat([ChatMessage])
        case completion(String)
    }

    var kind: Kind
    var temperature: Double?
    var topP: Double?
    var maxTokens: Int?
    var stop: [String]
    var seed: UInt64?
    var stream: Bool
    var includeUsage: Bool

    /// Roles a chat message may have; "developer" is OpenAI's newer name for "system".
    static let roles: Set<String> = ["system", "developer", "user", "assistant"]
    /// Fields whose features this server does not implement, with the value that would be harmless.
    static let unsupported: [(field: String, harmless: @Sendable (JSONValue) -> Bool)] = [
        ("tools", { $0.isNull || $0.array?.isEmpty == true }), ("tool_choice", { $0.isNull || $0.string == "none" }),
        ("functions", { $0.isNull }), ("function_call", { $0.isNull || $0.string == "none" }),
        ("logit_bias", { $0.isNull || $0.object?.isEmpty == true }), ("logprobs", { $0.isNull || $0.bool == false }),
        ("top_logprobs", { $0.isNull }), ("n", { $0.isNull || $0.number == 1 }), ("best_of", { $0.isNull || $0.number == 1 }),
        ("echo", { $0.isNull || $0.bool == false }), ("suffix", { $0.isNull }),
        ("presence_penalty", { $0.isNull || $0.number == 0 }), ("frequency_penalty", { $0.isNull || $0.number == 0 }),
        ("audio", { $0.isNull }), ("response_format", { $0.isNull || $0.object?["type"]?.string == "text" }),
    ]

    /// Parses `data` as a chat request (`chat` true) or a completion request.
    init(json data: Data, chat: Bool) throws(APIError) {
        guard String(data: data, encoding: .utf8) != nil else { throw .invalid(nil, "the request body is not valid UTF-8") }
        let object: JSONValue
        do {
            object = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw .invalid(nil, "the request body is not valid JSON: \(Self.describe(error))")
        }
        guard let fields = object.object else { throw .invalid(nil, "the request body must be a JSON object") }
        for (field, harmless) in Self.unsupported {
            if let value = fields[field], !harmless(value) {
                throw .invalid(field, "'\(field)' is not supported by this server", code: "unsupported_parameter")
            }
        }

        func number(_ key: String) throws(APIError) -> Double? {
            guard let v = fields[key], !v.isNull else { return nil }
            guard let n = v.number else { throw .invalid(key, "'\(key)' must be a number") }
            return n
        }
        func integer(_ key: String) throws(APIError) -> Int? {
            if case .integer(let i)? = fields[key] { return Int(i) }
            guard let d = try number(key) else { return nil }
            guard d == d.rounded() else { throw .invalid(key, "'\(key)' must be an integer, found \(d)") }
            // Written with an exponent (1e3) or past 64 bits.
            guard let i = Int(exactly: d) else {
                throw .invalid(key, "'\(key)' must be an integer between \(Int64.min) and \(Int64.max), found \(d)")
            }
            return i
        }
        func bool(_ key: String) throws(APIError) -> Bool? {
            guard let v = fields[key], !v.isNull else { return nil }
            guard let b = v.bool else { throw .invalid(key, "'\(key)' must be true or false") }
            return b
        }

        if chat {
            guard let raw = fields["messages"] else { throw .invalid("messages", "'messages' is required") }
            guard let list = raw.array else { throw .invalid("messages", "'messages' must be an array") }
            guard !list.isEmpty else { throw .invalid("messages", "'messages' must not be empty") }
            var messages: [ChatMessage] = []
            for (i, item) in list.enumerated() {
                let at = "messages[\(i)]"
                guard let m = item.object else { throw .invalid(at, "'\(at)' must be an object") }
                guard let role = m["role"]?.string else { throw .invalid("\(at).role", "'\(at).role' must be a string") }
                guard Self.roles.contains(role) else {
                    throw .invalid("\(at).role", "unknown role '\(role)' in \(at): expected system, developer, user or assistant")
                }
                messages.append(ChatMessage(role: role == "developer" ? "system" : role,
                                            content: try Self.content(m["content"], at: "\(at).content",
                                                                      optional: role == "assistant")))
            }
            kind = .chat(messages)
        } else {
            guard let raw = fields["prompt"] else { throw .invalid("prompt", "'prompt' is required") }
            if let text = raw.string {
                kind = .completion(text)
            } else if let list = raw.array, list.count == 1, let text = list[0].string {
                kind = .completion(text)
            } else {
                throw .invalid("prompt", "'prompt' must be a string (one prompt per request)")
            }
        }

        temperature = try number("temperature")
        if let t = temperature, !(0...2).contains(t) { throw .invalid("temperature", "'temperature' must be between 0 and 2, found \(t)") }
        topP = try number("top_p")
        if let p = topP, !(0...1).contains(p) { throw .invalid("top_p", "'top_p' must be between 0 and 1, found \(p)") }
        let newName = try integer("max_completion_tokens")
        maxTokens = newName != nil ? newName : try integer("max_tokens")
        if let m = maxTokens, m < 1 {
            throw .invalid(newName != nil ? "max_completion_tokens" : "max_tokens",
                           "the token limit must be at least 1, found \(m)")
        }
        if let s = try integer("seed") { seed = UInt64(bitPattern: Int64(s)) }
        stream = try bool("stream") ?? false
        includeUsage = false
        if let options = fields["stream_options"], !options.isNull {
            guard let o = options.object else { throw .invalid("stream_options", "'stream_options' must be an object") }
            if let u = o["include_usage"], !u.isNull {
                guard let b = u.bool else {
                    throw .invalid("stream_options.include_usage", "'stream_options.include_usage' must be true or false")
                }
                includeUsage = b
            }
        }
        switch fields["stop"] {
        case nil, .null?: stop = []
        case .string(let s)?: stop = [s]
        case .array(let list)?:
            let strings = list.compactMap(\.string)
            guard list.count <= 4, strings.count == list.count else {
                throw .invalid("stop", "'stop' must be a string or an array of up to 4 strings")
            }
            stop = strings
        default: throw .invalid("stop", "'stop' must be a string or an array of up to 4 strings")
        }
        if stop.contains("") { throw .invalid("stop", "a stop string must not be empty") }
    }

    /// Sampling as asked: OpenAI's temperature and top_p over llama.cpp server's defaults (temperature 0.8,
    /// top-k 40, top-p 0.95, min-p 0.05); temperature 0 or top_p 0 is greedy.
    func sampling(defaultSeed: UInt64) -> SamplingParameters {
        var p = SamplingParameters()
        if let t = temperature { p.temperature = Float(t) }
        if let tp = topP {
            // A top_p that rounds to 0 as a Float (1e-50) keeps only the likeliest token, as 0 does; the sampler
            // refuses a top-p of 0, which made such a request fail inside the generator (500).
            if Float(tp) == 0 { p.temperature = 0 } else { p.topP = Float(tp) }
        }
        p.seed = seed ?? defaultSeed
        return p
    }

    /// A message's text: a string, or an array of `{"type": "text", "text": …}` parts joined.
    static func content(_ value: JSONValue?, at: String, optional: Bool) throws(APIError) -> String {
        switch value {
        case .string(let s)?: return s
        case nil, .null?:
            guard optional else { throw .invalid(at, "'\(at)' is required") }
            return ""
        case .array(let parts)?:
            var text = ""
            for (i, part) in parts.enumerated() {
                guard let p = part.object, let type = p["type"]?.string else {
                    throw .invalid("\(at)[\(i)]", "'\(at)[\(i)]' must be an object with a 'type'")
                }
                guard type == "text" else {
                    throw .invalid("\(at)[\(i)].type", "content of type '\(type)' is not supported (text only)", code: "unsupported_parameter")
                }
                guard let t = p["text"]?.string else { throw .invalid("\(at)[\(i)].text", "'\(at)[\(i)].text' must be a string") }
                text += t
            }
            return text
        default:
            throw .invalid(at, "'\(at)' must be a string or an array of text parts")
        }
    }

    static func describe(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            let underlying = context.underlyingError.map { ($0 as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\($0)" }
            return underlying ?? context.debugDescription
        }
        return "\(error)"
    }
}
