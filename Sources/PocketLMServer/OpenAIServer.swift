import Foundation
import Hummingbird
import Logging
import NIOCore
import PocketLM
import ServiceLifecycle

/// The request context of every route: Hummingbird's basics plus the connection, so a request whose client has
/// gone away stops generating.
public struct ServerRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client's connection.
    public let channel: any Channel
    /// Bodies larger than this are refused with 413 (a prompt filling an 8K context is ~40 KB of text).
    public var maxUploadSize: Int { 1 << 20 }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// An OpenAI-compatible HTTP API over a `ParallelGenerator`: `POST /v1/chat/completions` and
/// `POST /v1/completions` (whole, or streamed as server-sent events ending with `data: [DONE]`), `GET /v1/models`,
/// `GET /v1/models/{id}`, `GET /health`.
///
/// Requests run in the generator's slots (several decode in one batch per step); a conversation that comes back
/// with another turn reuses the KV cache of its earlier turns (`usage.prompt_tokens_details.cached_tokens`).
/// Requests past the slots wait in the generator's queue; past that they get 503 with Retry-After. A client that
/// disconnects cancels its generation. Every error is an OpenAI error object with a 4xx (the client's mistake)
/// or 5xx status, and the server keeps serving.
public struct OpenAIServer: Sendable {
    public let generator: ParallelGenerator
    /// The name `/v1/models` lists and responses carry (requests may name any model: there is one).
    public let modelName: String
    /// The model's chat template; nil when the file has none usable, with the reason for `/v1/chat/completions`.
    let template: Result<ChatTemplate, APIError>
    let created = Int(Date().timeIntervalSince1970)
    /// Cancels a request's generation when its client goes away.
    let connections = ConnectionWatch()

    /// - Parameters:
    ///   - chatTemplate: the template chat requests are rendered with, or the error that says why there is none.
    public init(generator: ParallelGenerator, modelName: String, chatTemplate: Result<ChatTemplate, any Error>) {
        self.generator = generator
        self.modelName = modelName
        template = chatTemplate.mapError { error in
            APIError(.badRequest, "this model has no usable chat template (\((error as? LocalizedError)?.errorDescription ?? "\(error)")); use /v1/completions",
                     param: "messages", code: "no_chat_template")
        }
    }

    /// The routes, behind the middleware that turns every error into an OpenAI error object.
    public func router() -> Router<ServerRequestContext> {
        let router = Router(context: ServerRequestContext.self)
        router.add(middleware: APIErrorMiddleware())
        router.get("/health") { _, _ in
            let load = generator.load
            return try json(Health(status: "ok", slots: generator.slotCount, running: load.running, waiting: load.waiting))
        }
        router.get("/v1/models") { _, _ in
            try json(ModelList(data: [.init(id: modelName, created: created)]))
        }
        // OpenAI's "retrieve model" (`client.models.retrieve(id)`): the one model, or 404 as OpenAI answers it.
        router.get("/v1/models/{id}") { _, context in
            let id = context.parameters.get("id") ?? ""
            guard id == modelName else {
                throw APIError(.notFound, "the model '\(id)' does not exist; this server has '\(modelName)'", param: "model",
                               code: "model_not_found")
            }
            return try json(ModelList.Model(id: modelName, created: created))
        }
        router.post("/v1/chat/completions") { request, context in
            try await complete(request, context: context, chat: true)
        }
        router.post("/v1/completions") { request, context in
            try await complete(request, context: context, chat: false)
        }
        return router
    }

    /// The application: the server on `host:port` (port 0: any free port) with the generator as a service beside
    /// it. `onListening` gets the port actually bound. Its service group stops on SIGTERM or SIGINT: the server
    /// stops accepting connections and lets in-flight requests finish, then the generator stops.
    public func application(host: String, port: Int, logger: Logger,
                            onListening: @escaping @Sendable (Int) -> Void = { _ in }) -> some ApplicationProtocol {
        Application(
            router: router(),
            configuration: .init(address: .hostname(host, port: port), serverName: "PocketLM"),
            services: [GeneratorService(generator: generator)],
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? port) },
            logger: logger)
    }

    /// Runs `application(host:port:logger:onListening:)` until SIGTERM or SIGINT, then drains and returns.
    public func run(host: String, port: Int, logger: Logger, onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        try await application(host: host, port: port, logger: logger, onListening: onListening).runService()
    }

    // MARK: - Completions

    private func complete(_ request: Request, context: ServerRequestContext, chat: Bool) async throws -> Response {
        var request = request
        let body = try await request.collectBody(upTo: context.maxUploadSize)
        let asked = try OpenAIRequest(json: Data(buffer: body), chat: chat)
        let prompt: [Int]
        switch asked.kind {
        case .chat(let messages):
            prompt = try template.get().tokens(for: messages, addGenerationPrompt: true, tokenizer: generator.tokenizer)
        case .completion(let text):
            prompt = generator.tokenizer.encodePrompt(text, parseSpecial: false)
        }
        let contextLength = generator.contextLength
        guard prompt.count < contextLength else {
            throw APIError.invalid(chat ? "messages" : "prompt",
                                   "this model's context holds \(contextLength) tokens, but the prompt is \(prompt.count) tokens and at least one must be generated",
                                   code: "context_length_exceeded")
        }
        // OpenAI's defaults: a chat reply may fill the context; a completion stops after 16 tokens.
        let maxTokens = asked.maxTokens ?? (chat ? contextLength - prompt.count : 16)
        let generation = GenerationRequest(prompt: prompt, sampling: asked.sampling(defaultSeed: .random(in: 0...UInt64.max)),
                                           maxTokens: maxTokens, stopStrings: asked.stop)
        let handle: GenerationHandle
        do {
            handle = try generator.submit(generation)
        } catch .queueFull(let limit) {
            throw APIError(.serviceUnavailable, "the server is busy: every slot is generating and \(limit) requests are waiting; retry shortly",
                           type: "server_error", code: "server_busy", retryAfter: 1)
        } catch .shuttingDown {
            throw APIError(.serviceUnavailable, "the server is shutting down", type: "server_error", code: "shutting_down")
        } catch {
            throw APIError.invalid(nil, error.errorDescription ?? "\(error)")
        }
        // A client that goes away stops its generation (checked before every token).
        let channel = context.channel, connections = self.connections
        let ticket = connections.watch(handle, on: channel)
        let id = (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let frame = Frame(id: id, object: chat ? "chat.completion" : "text_completion", created: Int(Date().timeIntervalSince1970),
                          model: modelName, chat: chat)
        if asked.stream {
            return streamed(handle, frame: frame, includeUsage: asked.includeUsage) { connections.end(ticket, on: channel) }
        }
        defer { connections.end(ticket, on: channel) }
        var text = ""
        var summary: GenerationSummary?
        do {
            for try await event in handle.events {
                switch event {
                case .started: break
                case .text(let piece, _): text += piece
                case .finished(let s): summary = s
                }
            }
        } catch {
            throw APIError(.internalServerError, "generation failed: \(error)", type: "server_error")
        }
        guard let summary else {
            throw APIError(.serviceUnavailable, "the generation was cancelled", type: "server_error", code: "cancelled")
        }
        return try json(frame.whole(text: text, summary: summary))
    }
}
