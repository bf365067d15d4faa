import ArgumentParser
import Foundation
import PocketLM
import Synchronization

struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Talk with a model, turn after turn, keeping its KV cache between turns.",
        discussion: """
            Each line is a message; the answer streams to stdout. Commands: /reset (forget the conversation), \
            /system TEXT (set the system message), /system alone (back to the chat template's own, as without \
            --system), /show (print the system message in effect), /stats (tokens in the cache, the last turn's \
            prefill and decode speed, and a paged model's reads), /exit. Ctrl-C stops the current answer; \
            Ctrl-D or /exit quits. A packed model (pocketlm pack) runs under --memory-budget as in run: the whole \
            process, its KV cache at --context included, fits in it. With stdin from a pipe or file, each line is \
            one turn and nothing but the answers (and /stats, /show) is printed to stdout, so a conversation can be scripted; \
            as an answer may span lines, --jsonl prints one JSON object per line instead of text.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var pagingArguments: PagingArguments

    @Option(help: "System message (default: the chat template's own).") var system: String?
    @Option(name: .customLong("max-tokens"), parsing: .number, help: "Most tokens per answer (default 512, at most half the context). Room for this many is kept free before each turn, dropping the oldest turns if needed.")
    var maxTokens: Int?
    @OptionGroup var samplingOptions: SamplingOptions
    @Option(parsing: .number, help: "Context length in tokens (default: the model's, at most 8192). When it is full, the oldest turns are dropped.")
    var context: Int?
    @Option(name: .customLong("stop"), help: "End an answer before this text (repeatable).") var stops: [String] = []
    @Option(help: ArgumentHelp(stringLiteral: SpeculateOption.helpText)) var speculate: SpeculateOption?
    @OptionGroup var templateOption: ChatTemplateOption
    @Flag(help: """
        Print one JSON object per line instead of streaming text, so a script can tell an answer that spans lines \
        from the next turn: {"role":"assistant","content":...} with stop_reason, prompt_tokens, reused_tokens and \
        completion_tokens for each answer (whole, once it ends), {"error":...} for a failed turn or command, in its \
        place, {"stats":{...}} for /stats and {"role":"system","content":...} for /show.
        """)
    var jsonl = false

    func validate() throws {
        if let m = maxTokens, m < 1 { throw ValidationError("--max-tokens must be at least 1, found \(m)") }
        if let c = context, c < 1 { throw ValidationError("--context must be at least 1, found \(c)") }
    }

    func run() async throws {
        let interactive = isatty(STDIN_FILENO) != 0
        let lm = try LanguageModel(path: modelOptions.model,
                                   options: LoadOptions(threads: modelOptions.threads, kvCacheType: modelOptions.kvCacheType, contextLength: context,
                                                        paging: try pagingArguments.options(modelPath: modelOptions.model)))
        Console.warnIfPastTrainedContext(lm)
        // Before the first line is read: without a template every turn would fail the same way.
        let template = try templateOption.template(for: lm)
        let speculation = try speculate?.decoder(for: lm, threads: modelOptions.threads)
        let paging = PagingSummary(lm.transformer.feedForward)
        let container = ModelContainer(model: lm)
        // The session keeps room for a whole answer before each turn: a limit as large as the context would drop
        // every earlier turn, so the chat would silently forget the conversation.
        let contextLength = container.contextLength
        if let m = maxTokens, m >= contextLength {
            throw ValidationError("--max-tokens \(m) leaves no room for the conversation in the context of \(contextLength) tokens; give less, or a larger --context")
        }
        let maxTokens = self.maxTokens ?? max(1, min(512, contextLength / 2))
        let sampling = samplingOptions.parameters
        try sampling.validate()
        let session = ChatSession(container, systemPrompt: system, sampling: sampling, maxTokens: maxTokens,
                                  stopStrings: stops, template: template)
        session.speculation = speculation

        // Ctrl-C cancels the turn in progress; the program goes on.
        let current = Mutex<(@Sendable () -> Void)?>(nil)
        signal(SIGINT, SIG_IGN)
        let interrupts = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        interrupts.setEventHandler {
            if let cancel = current.withLock({ $0 }) {
                cancel()
            } else if interactive {
                Console.error("\n(Ctrl-C stops an answer; /exit or Ctrl-D quits)")
                Console.write("> ")
            }
        }
        interrupts.resume()
        defer { interrupts.cancel() }

        if interactive {
            Console.error("PocketLM chat: \(modelOptions.model) (context \(container.contextLength) tokens). "
                + "/reset, /system [TEXT], /show, /stats, /exit; Ctrl-C stops an answer.")
        }
        let jsonl = self.jsonl
        // A failed turn or command: on stderr, and in its place in --jsonl's output.
        func report(_ message: String) {
            if jsonl { try? Console.json(ChatJSONLine.Failure(error: message)) }
            Console.error(message)
        }
        var failed = false
        conversation: while true {
            if interactive { Console.write("> ") }
            guard let line = readLine(strippingNewline: true) else { break }
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            if text.hasPrefix("/") {
                let (command, argument) = Self.split(text)
                switch command {
                case "/exit", "/quit":
                    // Out of the loop, not the function: a script's failed turns still set the exit status.
                    break conversation
                case "/reset":
                    session.reset()
                    if interactive { Console.error("(conversation cleared)") }
                case "/system":
                    // Alone, it goes back to the template's own message: once one was set there was no way back.
                    session.systemPrompt = argument.isEmpty ? nil : argument
                    if interactive {
                        Console.error(argument.isEmpty ? "(system message: the chat template's own)" : "(system message set)")
                    }
                case "/show" where argument.isEmpty:
                    // What the session sends: the message set, else the template's default (ChatML templates have one).
                    let system = session.systemPrompt ?? template.defaultSystemMessage
                    if jsonl { try Console.json(ChatJSONLine.System(content: system)) } else { Console.write((system ?? "(none)") + "\n") }
                case "/stats":
                    let turn = session.lastTurn
                    let speculation = turn == nil ? nil : session.speculation?.stats.summary
                    let reads = paging.flatMap { p in turn.flatMap { t in t.paging.map { p.line($0, steps: t.generatedTokens + 1) } } }
                    if jsonl {
                        try Console.json(ChatJSONLine.Stats(turn, speculation: speculation, paging: reads), snakeCaseKeys: true)
                    } else {
                        Console.write(([Self.describe(turn)] + [speculation, reads].compactMap { $0 }).joined(separator: "\n") + "\n")
                    }
                default:
                    report("unknown command \(text) (/reset, /system [TEXT], /show, /stats, /exit)")
                    failed = failed || !interactive
                }
                continue
            }
            let turn = Task { () -> Bool in
                do {
                    // In this task, so a cancelled answer returns only once the session has recorded it.
                    let answer = try await session.respond(to: line) { chunk in if !jsonl { Console.write(chunk.text) } }
                    if jsonl, let stats = session.lastTurn {
                        try Console.json(ChatJSONLine.Answer(content: answer, turn: stats), snakeCaseKeys: true)
                    } else {
                        Console.write("\n")
                    }
                    return true
                } catch {
                    if !jsonl { Console.write("\n") }
                    report((error as? LocalizedError)?.errorDescription ?? "\(error)")
                    return false
                }
            }
            current.withLock { $0 = { turn.cancel() } }
            if await !turn.value { failed = true }
            current.withLock { $0 = nil }
            if turn.isCancelled && interactive { Console.error("(stopped)") }
        }
        if interactive { Console.write("\n") }
        if failed { throw ExitCode(1) }
    }

    /// "/system Be brief." → ("/system", "Be brief.").
    static func split(_ line: String) -> (String, String) {
        guard let space = line.firstIndex(where: \.isWhitespace) else { return (line, "") }
        return (String(line[..<space]), line[space...].trimmingCharacters(in: .whitespaces))
    }

    static func describe(_ turn: ChatTurnStats?) -> String {
        guard let t = turn else { return "cache: 0 tokens | no turn yet" }
        return String(format: "cache: %d tokens | last turn: prompt %d tokens (%d reused, %d fed) at %.1f tok/s | answer %d tokens at %.1f tok/s | first token %.1f ms | stop: %@",
                      t.cachedTokens, t.promptTokens, t.reusedTokens, t.prefilledTokens, t.prefillTokensPerSecond,
                      t.generatedTokens, t.decodeTokensPerSecond, t.timeToFirstToken * 1000, t.stopReason.rawValue)
    }
}
