import Foundation
import PocketLM
import Testing

/// ModelContainer and ChatSession on the real SmolLM2-135M-Instruct Q4_1, greedy: KV-cache reuse between turns
/// gives the replies a fresh context gives, edited history re-feeds from the change, cancellation stops within
/// a token, a full context drops the oldest turns, and one container serves concurrent tasks.
@Suite("Chat sessions", .serialized)
struct ChatSessionTests {
    static let modelFile = "SmolLM2-135M-Instruct.Q4_1.gguf"

    /// One container for the suite (1024 tokens of context).
    private static let shared: Result<ModelContainer, any Error> = Result {
        try ModelContainer(path: try TestPaths.model(modelFile), options: LoadOptions(threads: 2, contextLength: 1024))
    }

    static func container() throws -> ModelContainer { try shared.get() }

    static func template() throws -> ChatTemplate { try ChatTemplate(gguf: TokenizerFixtures.gguf()) }

    /// The prompt ids a turn with `history` and `message` sends (SmolLM2's default system message, no BOS).
    static func prompt(_ history: [ChatMessage], _ message: String, system: String? = nil) throws -> [Int] {
        let sys = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
        return try template().tokens(for: sys + history + [ChatMessage(role: "user", content: message)],
                                     addGenerationPrompt: true, tokenizer: try container().tokenizer)
    }

    /// The reply a session with `history` gives when its prompt is fed whole: the container's record of the
    /// cache is cleared first, so nothing is reused.
    static func freshReply(_ container: ModelContainer, history: [ChatMessage], _ message: String,
                           system: String? = nil, maxTokens: Int) async throws -> (String, ChatTurnStats) {
        _ = try await container.perform { _ in 0 }
        let fresh = ChatSession(container, systemPrompt: system, history: history, sampling: .greedy, maxTokens: maxTokens)
        let reply = try await fresh.respond(to: message)
        let stats = try #require(fresh.lastTurn)
        #expect(stats.reusedTokens == 0)
        return (reply, stats)
    }

    static func commonPrefix(_ a: [Int], _ b: [Int]) -> Int {
        zip(a, b).prefix { $0 == $1 }.count
    }

    @Test("turn 2 feeds only its new tokens and replies as a fresh context does")
    func secondTurnReusesTheCache() async throws {
        let container = try Self.container()
        _ = try await container.perform { _ in 0 }
        let session = ChatSession(container, sampling: .greedy, maxTokens: 40)
        let q1 = "What is the capital of France?", q2 = "And what is the capital of Italy?"
        let reply1 = try await session.respond(to: q1)
        let turn1 = try #require(session.lastTurn)
        #expect(!reply1.isEmpty)
        #expect(turn1.reusedTokens == 0)
        #expect(turn1.promptTokens == (try Self.prompt([], q1)).count)
        #expect(turn1.stopReason == .stopToken)
        // The cache holds the prompt and every reply token (the stop token is not fed).
        #expect(turn1.cachedTokens == turn1.promptTokens + turn1.generatedTokens)
        #expect(session.messages == [ChatMessage(role: "user", content: q1), ChatMessage(role: "assistant", content: reply1)])

        let reply2 = try await session.respond(to: q2)
        let turn2 = try #require(session.lastTurn)
        let prompt2 = try Self.prompt(session.messages.dropLast(2).map { $0 }, q2)
        #expect(turn2.promptTokens == prompt2.count)
        // Everything turn 1 left in the cache is reused; only the reply's end, the new message and the
        // assistant's opener are fed.
        #expect(turn2.reusedTokens == turn1.cachedTokens)
        let tok = container.tokenizer
        let newTokens = tok.encode("<|im_end|>\n<|im_start|>", parseSpecial: true) + tok.encode("user\n" + q2, parseSpecial: false)
            + tok.encode("<|im_end|>\n<|im_start|>assistant\n", parseSpecial: true)
        #expect(turn2.prefilledTokens == newTokens.count)
        #expect(Array(prompt2[turn2.reusedTokens...]) == newTokens)

        let (fresh, freshStats) = try await Self.freshReply(
            container, history: [ChatMessage(role: "user", content: q1), ChatMessage(role: "assistant", content: reply1)],
            q2, maxTokens: 40)
        #expect(freshStats.prefilledTokens == prompt2.count)
        #expect(reply2 == fresh)
        #expect(!reply2.isEmpty)
    }

    @Test("an edited earlier message re-feeds from the change and replies as a fresh context does")
    func editedHistory() async throws {
        let container = try Self.container()
        _ = try await container.perform { _ in 0 }
        let session = ChatSession(container, systemPrompt: "You are a geography teacher.", sampling: .greedy, maxTokens: 32)
        _ = try await session.respond(to: "What is the capital of France?")
        _ = try await session.respond(to: "How many people live there?")
        let before = session.messages
        let cachedBefore = try #require(session.lastTurn).cachedTokens
        var edited = before
        edited[0].content = "What is the capital of Spain?"
        session.messages = edited
        let q3 = "Tell me one famous building in that city."
        let reply = try await session.respond(to: q3)
        let turn = try #require(session.lastTurn)
        let prompt3 = try Self.prompt(edited, q3, system: "You are a geography teacher.")
        let oldConversation = try Self.template().tokens(
            for: [ChatMessage(role: "system", content: "You are a geography teacher.")] + before,
            addGenerationPrompt: false, tokenizer: container.tokenizer)
        // Reused: the system prompt and the first message up to the edit, nothing after it.
        let unchanged = Self.commonPrefix(prompt3, oldConversation)
        #expect(turn.reusedTokens == unchanged)
        #expect(unchanged > 5 && unchanged < cachedBefore / 2)
        #expect(turn.prefilledTokens == prompt3.count - unchanged)
        #expect(session.messages.count == 6 && session.messages[0].content == "What is the capital of Spain?")

        let (fresh, _) = try await Self.freshReply(container, history: edited, q3, system: "You are a geography teacher.",
                                                   maxTokens: 32)
        #expect(reply == fresh)
    }

    @Test("cancellation: a cancelled task gets at most one token; an abandoned stream stops within a chunk of what was read")
    func cancellation() async throws {
        let container = try Self.container()
        let session = ChatSession(container, sampling: .greedy, maxTokens: 100)
        let question = "Count from 1 to 60, separated by commas."
        // The task is cancelled before the turn starts: the prompt is fed, one token sampled, then it stops.
        let task = Task { () -> String in
            withUnsafeCurrentTask { $0?.cancel() }
            return try await session.respond(to: question)
        }
        let partial = try await task.value
        let turn = try #require(session.lastTurn)
        #expect(turn.stopReason == .cancelled)
        #expect(turn.generatedTokens <= 1)
        #expect(session.messages.last == ChatMessage(role: "assistant", content: partial))

        // The whole greedy answer, for comparison.
        session.reset()
        let full = try await session.respond(to: question)
        #expect(try #require(session.lastTurn).generatedTokens > 20)

        // A stream abandoned after two chunks. The stream has backpressure (its producer waits for the reader, at
        // most one chunk ahead), so however the threads are scheduled the turn stops right there: cancelled, with
        // at most the next chunk's tokens generated beyond what was read.
        session.reset()
        var received = ""
        var receivedIds: [Int] = []
        var chunks = 0
        for try await chunk in session.stream(to: question) {
            received += chunk.text
            receivedIds += chunk.tokenIds
            chunks += 1
            if chunks == 2 {
                // A slow reader: generation must not run ahead meanwhile.
                try await Task.sleep(for: .milliseconds(300))
                break
            }
        }
        _ = try await container.perform { _ in 0 }   // waits for the turn to finish
        let stopped = try #require(session.lastTurn)
        #expect(stopped.stopReason == .cancelled)
        #expect(stopped.generatedTokens <= receivedIds.count + 3, "generated \(stopped.generatedTokens), read \(receivedIds.count)")
        let kept = try #require(session.messages.last).content
        #expect(kept.hasPrefix(received))
        #expect(full.hasPrefix(kept))
        _ = try await session.respond(to: "Thanks.")
        #expect(session.messages.count == 4 && session.messages[2] == ChatMessage(role: "user", content: "Thanks."))
    }

    @Test("a cancelled turn: the history holds what the caller was given, text held back for a stop string included")
    func cancelledTurnHeldBackText() async throws {
        let container = try Self.container()
        let question = "What is the capital of France?"
        let full = try await Self.freshReply(container, history: [], question, maxTokens: 24).0
        // A stop string the reply's opening begins but never completes: the first token's text is held back.
        let stop = String(full.prefix(20)) + "§"
        let session = ChatSession(container, sampling: .greedy, maxTokens: 24, stopStrings: [stop])

        // respond(to:onChunk:) in a cancelled task stops after one token; its held-back text still reaches onChunk,
        // with the last chunk. It used to be recorded and returned, but never given to onChunk.
        let seen = try await Task { () -> (text: String, reply: String, stats: ChatTurnStats?) in
            withUnsafeCurrentTask { $0?.cancel() }
            var text = ""
            var stats: ChatTurnStats?
            let reply = try await session.respond(to: question) { chunk in
                text += chunk.text
                if let s = chunk.stats { stats = s }
            }
            return (text, reply, stats)
        }.value
        #expect(!seen.reply.isEmpty && full.hasPrefix(seen.reply), "\(seen.reply.debugDescription)")
        #expect(seen.text == seen.reply)
        #expect(session.messages.last == ChatMessage(role: "assistant", content: seen.reply))
        let stats = try #require(seen.stats)
        #expect(stats == session.lastTurn && stats.stopReason == .cancelled && stats.generatedTokens == 1)

        // A stream whose reader's task is cancelled ends at once; its reader can be given nothing more, so the
        // history records none of the text generated after (it used to record up to the first released chunk).
        let streamed = ChatSession(container, sampling: .greedy, maxTokens: 24, stopStrings: [stop])
        let read = try await Task { () -> String in
            withUnsafeCurrentTask { $0?.cancel() }
            var text = ""
            for try await chunk in streamed.stream(to: question) { text += chunk.text }
            return text
        }.value
        #expect(read.isEmpty)
        // The turn runs on after the reader has gone, until it notices (how far it gets depends on the scheduling).
        let deadline = ContinuousClock.now + .seconds(120)
        while streamed.lastTurn == nil && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(try #require(streamed.lastTurn).stopReason == .cancelled)
        #expect(streamed.messages == [ChatMessage(role: "user", content: question), ChatMessage(role: "assistant", content: read)])
    }

    @Test("a stream left with break but still held does not block the model: the next turn runs after its reply")
    func heldStreamDoesNotBlock() async throws {
        let container = try Self.container()
        let session = ChatSession(container, sampling: .greedy, maxTokens: 40)
        let question = "Count from 1 to 60, separated by commas."
        let full = try await Self.freshReply(container, history: [], question, maxTokens: 40).0
        // Held as an app's stored property would hold it (or as main.swift's top-level code holds a loop's
        // iterator): leaving the loop does not release it, so only the other task's wait can free the model.
        let stream = session.stream(to: question)
        var read = ""
        for try await chunk in stream {
            read += chunk.text
            if read.count >= 4 { break }
        }
        let other = ChatSession(container, sampling: .greedy, maxTokens: 8)
        struct Deadlock: Error {}
        // It used to wait forever: the turn stayed parked on its unread chunk, holding the model.
        let answer = try await withThrowingTaskGroup(of: String.self) { group in
            group.addTask { try await other.respond(to: "Name a fruit.") }
            group.addTask {
                try await Task.sleep(for: .seconds(120))
                throw Deadlock()
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
        #expect(!answer.isEmpty)
        // The abandoned turn ran to the end of its reply, which the session recorded whole.
        #expect(session.lastTurn?.stopReason == .maxTokens)
        #expect(session.messages.last == ChatMessage(role: "assistant", content: full))
        // The reader still gets the rest of the reply, then the end.
        var rest = ""
        var last: ChatChunk?
        for try await chunk in stream {
            rest += chunk.text
            last = chunk
        }
        #expect(read + rest == full)
        #expect(last?.stats == session.lastTurn)
    }

    @Test("respond(to:onChunk:) from an actor's code: the chunks arrive on that actor, as a view model needs them")
    func onChunkOnTheCallersActor() async throws {
        let container = try Self.container()
        let model = ReplyModel(ChatSession(container, sampling: .greedy, maxTokens: 16))
        let reply = try await model.ask("Name three fruits.")
        let (text, chunks, offActor) = await model.counts
        #expect(offActor == 0)
        #expect(text == reply && !reply.isEmpty && chunks > 2)
        #expect(reply == (try await Self.freshReply(container, history: [], "Name three fruits.", maxTokens: 16).0))
        // The same from the main actor, where an app's view model lives.
        let onMain = try await Self.askOnMain(ChatSession(container, sampling: .greedy, maxTokens: 16), "Name three fruits.")
        #expect(onMain.text == onMain.reply && onMain.reply == reply)
    }

    @MainActor static func askOnMain(_ session: ChatSession, _ question: String) async throws -> (text: String, reply: String) {
        var text = ""
        let reply = try await session.respond(to: question) { chunk in text += chunk.text }
        return (text, reply)
    }

    @Test("streamed chunks: text, token ids and timings add up to the reply")
    func streamChunks() async throws {
        let container = try Self.container()
        let session = ChatSession(container, sampling: .greedy, maxTokens: 24)
        var text = ""
        var ids: [Int] = []
        var last: ChatChunk?
        var elapsed = 0.0
        for try await chunk in session.stream(to: "Say hello in French.") {
            text += chunk.text
            ids += chunk.tokenIds
            #expect(chunk.elapsed >= elapsed)
            elapsed = chunk.elapsed
            last = chunk
        }
        let stats = try #require(last?.stats)
        #expect(stats == session.lastTurn)
        #expect(text == session.messages.last?.content)
        #expect(ids.count == stats.generatedTokens)
        #expect(container.tokenizer.decode(ids, skipSpecial: true) == text)
        #expect(stats.prefillSeconds > 0 && stats.timeToFirstToken >= stats.prefillSeconds)
    }

    @Test("stop strings end the reply before them")
    func stopStrings() async throws {
        let container = try Self.container()
        let session = ChatSession(container, sampling: .greedy, maxTokens: 40)
        let reply = try await session.respond(to: "What is the capital of France?")
        let word = "Paris"
        let cut = try #require(reply.range(of: word), "the greedy reply \(reply.debugDescription) names Paris")
        session.reset()
        session.stopStrings = ["nothing like this", word]
        let stopped = try await session.respond(to: "What is the capital of France?")
        #expect(stopped == String(reply[..<cut.lowerBound]))
        #expect(session.lastTurn?.stopReason == .stopString)
    }

    @Test("a full context drops the oldest turns (keeping the system prompt) or throws; never crashes")
    func contextPolicy() async throws {
        let small = try ModelContainer(path: try TestPaths.model(Self.modelFile),
                                       options: LoadOptions(threads: 2, contextLength: 128))
        #expect(small.contextLength == 128)
        let system = "Be brief."
        let session = ChatSession(small, systemPrompt: system, sampling: .greedy, maxTokens: 24)
        let questions = ["What is 2+2?", "What color is the sky?", "Name a fruit.", "What is ice made of?",
                         "Name a big animal.", "What do bees make?"]
        var droppedAny = false
        for q in questions {
            let history = session.messages
            let reply = try await session.respond(to: q)
            let turn = try #require(session.lastTurn)
            #expect(turn.promptTokens + 24 <= 128, "\(q)")
            #expect(turn.cachedTokens <= 128)
            if turn.droppedMessages > 0 {
                droppedAny = true
                // The oldest exchanges went; the rest is kept in order, then this turn.
                #expect(Array(history.dropFirst(turn.droppedMessages)) == Array(session.messages.dropLast(2)))
                #expect(turn.droppedMessages % 2 == 0)
                // The reply is the one a fresh context with the shortened history gives.
                let (fresh, _) = try await Self.freshReply(small, history: Array(session.messages.dropLast(2)), q,
                                                           system: system, maxTokens: 24)
                #expect(reply == fresh, "\(q)")
            }
        }
        #expect(droppedAny)

        // A reply that runs into the end of the context stops there, and the next turn still works.
        session.maxTokens = 200
        _ = try await session.respond(to: "Count from 1 to 100, separated by commas.")
        let full = try #require(session.lastTurn)
        #expect(full.stopReason == .contextFull)
        #expect(full.cachedTokens == 128)
        // A limit past the whole context (Int.max, "as many as fit"; it used to trap on overflow): every earlier
        // turn goes and the reply fills the context.
        session.maxTokens = Int.max
        _ = try await session.respond(to: "Count from 1 to 100, separated by commas.")
        let all = try #require(session.lastTurn)
        #expect(all.stopReason == .contextFull && all.cachedTokens == 128 && all.droppedMessages == 2)
        #expect(session.messages.count == 2)
        session.maxTokens = 24
        _ = try await session.respond(to: "Thanks!")
        #expect(try #require(session.lastTurn).droppedMessages >= 2)

        // The newest message alone does not fit: a clear error, nothing changed.
        let before = session.messages
        let long = String(repeating: "This sentence is far too long for the context. ", count: 20)
        await #expect(throws: ChatSessionError.self) { try await session.respond(to: long) }
        do {
            _ = try await session.respond(to: long)
        } catch let error as ChatSessionError {
            guard case .messageTooLong(let p, let c) = error else { Issue.record("\(error)"); return }
            #expect(p > 128 && c == 128)
            #expect(error.localizedDescription.contains("\(p) tokens"))
        }
        #expect(session.messages == before)

        // With the .error policy a conversation that does not fit throws instead of dropping turns.
        session.contextPolicy = .error
        session.maxTokens = 100
        await #expect(throws: ChatSessionError.self) { try await session.respond(to: "One more question?") }
        #expect(session.messages == before)
    }

    @Test("a full context drops only user and assistant messages: a system message in the history stays, leading or in the middle")
    func droppingKeepsSystemMessages() async throws {
        let small = try ModelContainer(path: try TestPaths.model(Self.modelFile),
                                       options: LoadOptions(threads: 2, contextLength: 128))
        let lead = ChatMessage(role: "system", content: "Be brief.")
        let middle = ChatMessage(role: "system", content: "From now on, answer in French.")
        let history = [lead, ChatMessage(role: "user", content: "What is 2+2?"), ChatMessage(role: "assistant", content: "4."),
                       middle, ChatMessage(role: "user", content: "What color is the sky?"),
                       ChatMessage(role: "assistant", content: "Blue.")]
        // Room for 100 tokens of reply leaves no room for any earlier exchange.
        let session = ChatSession(small, history: history, sampling: .greedy, maxTokens: 100)
        let question = "Name a fruit."
        let reply = try await session.respond(to: question)
        let turn = try #require(session.lastTurn)
        #expect(turn.droppedMessages == 4)
        // The middle system message used to go with the exchange before it.
        let kept = [lead, middle, ChatMessage(role: "user", content: question)]
        #expect(session.messages == kept + [ChatMessage(role: "assistant", content: reply)])
        #expect(turn.promptTokens == (try Self.prompt([lead, middle], question)).count)
    }

    @Test("invalid settings are refused before anything runs")
    func invalidSettings() async throws {
        let session = ChatSession(try Self.container(), sampling: SamplingParameters(topP: 0))
        await #expect(throws: GenerationError.self) { try await session.respond(to: "Hi") }
        session.sampling = .greedy
        session.maxTokens = 0
        await #expect(throws: ChatSessionError.invalidMaxTokens(0)) { try await session.respond(to: "Hi") }
        #expect(session.messages.isEmpty && session.lastTurn == nil)
    }

    @Test("a turn refused for its settings keeps the KV cache: the next turn reuses the conversation")
    func refusedTurnKeepsTheCache() async throws {
        let container = try Self.container()
        let session = ChatSession(container, sampling: .greedy, maxTokens: 16)
        _ = try await session.respond(to: "What is the capital of France?")
        let cached = try #require(session.lastTurn).cachedTokens
        let history = session.messages
        session.sampling = SamplingParameters(temperature: 0.7, topP: 0)
        await #expect(throws: GenerationError.self) { try await session.respond(to: "And of Italy?") }
        #expect(session.messages == history)
        session.sampling = .greedy
        let reply = try await session.respond(to: "And of Italy?")
        // It used to reuse nothing: the refused turn had reset the cache.
        #expect(try #require(session.lastTurn).reusedTokens == cached)
        #expect(reply == (try await Self.freshReply(container, history: history, "And of Italy?", maxTokens: 16).0))
    }

    @Test("one container shared by concurrent tasks gives each the answer it gives alone")
    func sharedContainer() async throws {
        let container = try Self.container()
        let questions = ["What is the capital of France?", "Name three colors.", "What is 3 times 4?",
                         "Who wrote Romeo and Juliet?"]
        var alone: [String] = []
        for q in questions {
            alone.append(try await Self.freshReply(container, history: [], q, maxTokens: 24).0)
        }
        let together = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (i, q) in questions.enumerated() {
                group.addTask {
                    // Each task holds its own two-turn conversation on the shared model.
                    let session = ChatSession(container, sampling: .greedy, maxTokens: 24)
                    let first = try await session.respond(to: q)
                    _ = try await session.respond(to: "Thanks.")
                    return (i, first)
                }
            }
            var out = [String](repeating: "", count: questions.count)
            for try await (i, reply) in group { out[i] = reply }
            return out
        }
        #expect(together == alone)
    }

    @Test("Gemma 3: a sliding-window ring that cannot rewind is reset and re-fed, with the same reply")
    func slidingWindowRewind() async throws {
        // Ring = window + largest batch (16 here): rewinding more than 16 positions is beyond what it keeps.
        let gemma = try ModelContainer(path: try TestPaths.model("gemma-3-270m-q4_k_m.gguf"),
                                       options: LoadOptions(threads: 2, contextLength: 1024, maxBatch: 16))
        // The file has no chat template: the session is given Gemma's.
        let template = try ChatTemplate(template: "gemma")
        let session = ChatSession(gemma, sampling: .greedy, maxTokens: 24, template: template)
        _ = try await session.respond(to: "What is the capital of France?")
        _ = try await session.respond(to: "And of Germany?")
        #expect(try #require(session.lastTurn).reusedTokens > 16)   // a short step back: the ring still has it
        var edited = session.messages
        edited[0].content = "What is the capital of Spain?"
        session.messages = edited
        let reply = try await session.respond(to: "Name a river there.")
        let turn = try #require(session.lastTurn)
        #expect(turn.reusedTokens == 0)
        #expect(turn.prefilledTokens == turn.promptTokens)
        _ = try await gemma.perform { _ in 0 }
        let fresh = ChatSession(gemma, history: edited, sampling: .greedy, maxTokens: 24, template: template)
        #expect(try await fresh.respond(to: "Name a river there.") == reply)
        #expect(!reply.isEmpty)
    }
}

/// An app's state updated as a reply streams in, on an actor whose executor is a known queue, so a chunk delivered
/// anywhere else is seen. Passing such a closure to `respond(to:onChunk:)` did not compile before ("sending value of
/// non-Sendable type '(ChatChunk) -> Void' risks causing data races"): the chunks were delivered on the
/// container's thread.
actor ReplyModel {
    final class QueueExecutor: SerialExecutor {
        static let key = DispatchSpecificKey<Bool>()
        let queue = DispatchQueue(label: "ReplyModel")
        init() { queue.setSpecific(key: Self.key, value: true) }
        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            let executor = asUnownedSerialExecutor()
            queue.async { job.runSynchronously(on: executor) }
        }
    }

    private let executor = QueueExecutor()
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    let session: ChatSession
    var text = ""
    var chunks = 0
    var offActor = 0

    init(_ session: ChatSession) { self.session = session }

    var counts: (String, Int, Int) { (text, chunks, offActor) }

    func ask(_ question: String) async throws -> String {
        try await session.respond(to: question) { chunk in
            if DispatchQueue.getSpecific(key: QueueExecutor.key) != true { offActor += 1 }
            text += chunk.text
            chunks += 1
        }
    }
}
