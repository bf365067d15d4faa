import Foundation
import Hummingbird
import NIOCore
import PocketLM

/// What every object of one completion shares (id, kind, time, model), and how its whole or streamed form is built.
struct Frame: Sendable {
    let id: String
    /// "chat.completion" or "text_completion".
    let object: String
    let created: Int
    let model: String
    let chat: Bool

    /// Identifies the build that produced a reply, as OpenAI's `system_fingerprint` does.
    static let fingerprint = "pocketlm"

    func whole(text: String, summary: GenerationSummary) -> CompletionObject {
        let choice = chat
            ? CompletionObject.Choice(index: 0, message: .init(role: "assistant", content: text), delta: nil, text: nil,
                                      finish_reason: finishReason(summary.stopReason))
            : CompletionObject.Choice(index: 0, message: nil, delta: nil, text: text, finish_reason: finishReason(summary.stopReason))
        return CompletionObject(id: id, object: object, created: created, model: model, system_fingerprint: Frame.fingerprint,
                                choices: [choice], usage: Usage(summary), timings: Timings(summary))
    }

    /// A stream chunk: a piece of text (or the assistant role first), or the end with its finish reason.
    func chunk(role: String? = nil, text: String?, finish: StopReason? = nil) -> CompletionObject {
        let reason = finish.map(finishReason)
        let choice = chat
            ? CompletionObject.Choice(index: 0, message: nil, delta: .init(role: role, content: text), text: nil, finish_reason: reason)
            : CompletionObject.Choice(index: 0, message: nil, delta: nil, text: text ?? "", finish_reason: reason)
        return CompletionObject(id: id, object: chat ? "chat.completion.chunk" : "text_completion", created: created,
                                model: model, system_fingerprint: Frame.fingerprint, choices: [choice], usage: nil)
    }

    /// The last chunk with `stream_options.include_usage`: no choices, the usage.
    func usageChunk(_ summary: GenerationSummary) -> CompletionObject {
        CompletionObject(id: id, object: chat ? "chat.completion.chunk" : "text_completion", created: created, model: model,
                         system_fingerprint: Frame.fingerprint, choices: [], usage: Usage(summary), timings: Timings(summary))
    }
}

/// A JSON response.
func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    let data = try JSONEncoder().encode(value)
    return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// One server-sent event carrying `value` as JSON.
func event(_ value: some Encodable) throws -> ByteBuffer {
    var buffer = ByteBuffer(string: "data: ")
    buffer.writeBytes(try JSONEncoder().encode(value))
    buffer.writeString("\n\n")
    return buffer
}

extension OpenAIServer {
    /// The completion as server-sent events: each piece of text as it is generated, then the finish reason,
    /// the usage if asked, and `data: [DONE]`. A failed write (the client has gone) cancels the generation.
    /// `onEnd` runs once the body is written or abandoned.
    func streamed(_ handle: GenerationHandle, frame: Frame, includeUsage: Bool,
                  onEnd: @escaping @Sendable () -> Void) -> Response {
        let body = ResponseBody { writer in
            var finished = false
            defer {
                if !finished { handle.cancel() }
                onEnd()
            }
            if frame.chat { try await writer.write(event(frame.chunk(role: "assistant", text: ""))) }
            var events = handle.events.makeAsyncIterator()
            while true {
                let next: GenerationEvent?
                do {
                    next = try await events.next()
                } catch {
                    // Headers are sent: the error travels as an event, as OpenAI's streams report them.
                    let failure = APIError.Body(error: .init(message: "generation failed: \(error)", type: "server_error",
                                                             param: nil, code: nil))
                    try await writer.write(event(failure))
                    break
                }
                guard let next else { break }
                switch next {
                case .started: break
                case .text(let piece, _):
                    if !piece.isEmpty { try await writer.write(event(frame.chunk(text: piece))) }
                case .finished(let summary):
                    finished = true
                    try await writer.write(event(frame.chunk(text: frame.chat ? nil : "", finish: summary.stopReason)))
                    if includeUsage { try await writer.write(event(frame.usageChunk(summary))) }
                }
            }
            if finished { try await writer.write(ByteBuffer(string: "data: [DONE]\n\n")) }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}
