import Foundation
import PocketLM

/// Token counts as OpenAI reports them; `cached_tokens` is the prompt prefix reused from a slot's KV cache.
struct Usage: Encodable, Equatable {
    struct PromptDetails: Encodable, Equatable {
        let cached_tokens: Int
    }
    let prompt_tokens: Int
    let completion_tokens: Int
    let total_tokens: Int
    let prompt_tokens_details: PromptDetails

    init(_ s: GenerationSummary) {
        prompt_tokens = s.promptTokens
        completion_tokens = s.generatedTokens
        total_tokens = s.promptTokens + s.generatedTokens
        prompt_tokens_details = .init(cached_tokens: s.cachedTokens)
    }
}

/// Where the request's time went, as llama.cpp's server reports it (`timings`, an extension OpenAI clients ignore):
/// `prompt_ms` runs from taking a slot to the first generated token, `predicted_ms` from there to the last.
struct Timings: Encodable, Equatable {
    let queue_ms: Double
    let prompt_n: Int
    let cache_n: Int
    let prompt_ms: Double
    let predicted_n: Int
    let predicted_ms: Double
    /// With speculative decoding (`serve --speculate`): tokens drafted and how many the model accepted.
    let draft_n: Int?
    let draft_n_accepted: Int?

    init(_ s: GenerationSummary) {
        queue_ms = s.queueSeconds * 1000
        prompt_n = s.promptTokens - s.cachedTokens
        cache_n = s.cachedTokens
        prompt_ms = s.timeToFirstToken * 1000
        predicted_n = s.generatedTokens
        predicted_ms = s.decodeSeconds * 1000
        draft_n = s.speculation?.drafted
        draft_n_accepted = s.speculation?.accepted
    }
}

/// `finish_reason`: "stop" for a stop token or string, "length" for the token limit or a full context.
func finishReason(_ reason: StopReason) -> String {
    switch reason {
    case .stopToken, .stopString, .cancelled: "stop"
    case .maxTokens, .contextFull: "length"
    }
}

/// `chat.completion` and `text_completion` objects, whole or as stream chunks.
struct CompletionObject: Encodable {
    struct Message: Encodable {
        let role: String?
        let content: String?
    }

    struct Choice: Encodable {
        let index: Int
        let message: Message?
        let delta: Message?
        let text: String?
        let finish_reason: String?
        let logprobs: String? = nil

        enum CodingKeys: String, CodingKey { case index, message, delta, text, finish_reason, logprobs }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encodeIfPresent(message, forKey: .message)
            try c.encodeIfPresent(delta, forKey: .delta)
            try c.encodeIfPresent(text, forKey: .text)
            try c.encode(finish_reason, forKey: .finish_reason)   // null until the last chunk, as OpenAI sends it
            try c.encode(logprobs, forKey: .logprobs)
        }
    }

    let id: String
    let object: String
    let created: Int
    let model: String
    let system_fingerprint: String
    let choices: [Choice]
    let usage: Usage?
    var timings: Timings? = nil

    enum CodingKeys: String, CodingKey { case id, object, created, model, system_fingerprint, choices, usage, timings }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(object, forKey: .object)
        try c.encode(created, forKey: .created)
        try c.encode(model, forKey: .model)
        try c.encode(system_fingerprint, forKey: .system_fingerprint)
        try c.encode(choices, forKey: .choices)
        if let usage { try c.encode(usage, forKey: .usage) }
        if let timings { try c.encode(timings, forKey: .timings) }
    }
}

/// `GET /v1/models`.
struct ModelList: Encodable {
    struct Model: Encodable {
        let id: String
        let object = "model"
        let created: Int
        let owned_by = "pocketlm"
    }
    let object = "list"
    let data: [Model]
}

/// `GET /health`.
struct Health: Encodable {
    let status: String
    let slots: Int
    let running: Int
    let waiting: Int
}
