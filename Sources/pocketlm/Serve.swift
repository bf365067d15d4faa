import ArgumentParser
import Foundation
import Logging
import PocketLM
import PocketLMServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the model over an OpenAI-compatible HTTP API (chat and text completions, streaming).",
        discussion: """
            POST /v1/chat/completions, POST /v1/completions, GET /v1/models (and /v1/models/ID), GET /health. Up to --parallel requests \
            generate at once, decoded as one batch per step; more wait in a queue of --queue, and past that get \
            503 with Retry-After. Listens on loopback unless --host says otherwise. SIGTERM or Ctrl-C finishes the \
            requests in flight, then exits. A packed model (pocketlm pack) serves under --memory-budget (the whole \
            process fits in it) with --parallel 1.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var pagingArguments: PagingArguments
    @Option(help: "Address to listen on (default loopback only).") var host = "127.0.0.1"
    @Option(parsing: .number, help: "TCP port (0: any free port, printed when listening).") var port = 8080
    @Option(parsing: .number, help: "Requests generating at once; each has its own KV cache of --context tokens.") var parallel = 1
    @Option(parsing: .number, help: "Requests that may wait for a free slot before the server answers 503.") var queue = 64
    @Option(parsing: .number, help: "Context length of each slot in tokens (default: the model's, at most 8192).") var context: Int?
    @Option(name: .customLong("log-level"), help: "Server log level: trace, debug, info, notice, warning, error.")
    var logLevel = "notice"
    @OptionGroup var templateOption: ChatTemplateOption
    @Option(help: ArgumentHelp(stringLiteral: SpeculateOption.helpText + " Used while one request alone is decoding."))
    var speculate: SpeculateOption?

    func validate() throws {
        guard (1...64).contains(parallel) else { throw ValidationError("--parallel must be between 1 and 64, found \(parallel)") }
        guard queue >= 0 else { throw ValidationError("--queue must be ≥ 0, found \(queue)") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, found \(port)") }
        if let c = context, c < 2 { throw ValidationError("--context must be at least 2, found \(c)") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        if pagingArguments.memoryBudget != nil && parallel > 1 {
            // The budget sets aside one KV cache; each slot has its own.
            throw ValidationError("--memory-budget plans for one request at a time: use --parallel 1 with it, found \(parallel)")
        }
    }

    func run() async throws {
        let lm = try LanguageModel(path: modelOptions.model,
                                   options: LoadOptions(threads: modelOptions.threads, kvCacheType: modelOptions.kvCacheType, contextLength: context,
                                                        paging: try pagingArguments.options(modelPath: modelOptions.model),
                                                        sequences: parallel))
        Console.warnIfPastTrainedContext(lm)
        // A template given must be usable; a file without one still serves completions (chat requests get the error).
        let template: Result<ChatTemplate, any Error> = if let given = templateOption.chatTemplate {
            .success(try ChatTemplate(template: given))
        } else {
            Result { try lm.chatTemplate() }
        }
        let name = URL(fileURLWithPath: modelOptions.model).deletingPathExtension().lastPathComponent
        let load = lm.loadSeconds
        let decoder = try speculate?.decoder(for: lm, threads: modelOptions.threads)
        let generator = if let decoder {
            try ParallelGenerator(model: lm, queueLimit: queue, speculation: decoder)
        } else {
            ParallelGenerator(model: lm, queueLimit: queue)
        }
        let server = OpenAIServer(generator: generator, modelName: name, chatTemplate: template)
        var logger = Logger(label: "pocketlm.serve")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .notice
        let host = self.host, parallel = self.parallel
        try await server.run(host: host, port: port, logger: logger) { bound in
            Console.error(String(format: "pocketlm serve: %@ on http://%@:%d (%d slot%@, model loaded in %.0f ms)",
                                 name, host, bound, parallel, parallel == 1 ? "" : "s", load * 1000))
        }
    }
}
