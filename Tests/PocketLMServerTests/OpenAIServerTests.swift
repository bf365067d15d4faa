import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Hummingbird
import Logging
import PocketLM
import PocketLMServer
import ServiceLifecycle
import Testing

/// The OpenAI-compatible routes over a live socket on the real SmolLM2-135M-Instruct Q4_1 (greedy): replies equal
/// the library's own generation, streams carry the same text as whole replies, usage counts are exact, a
/// follow-up turn reports its cached prefix, and every bad request gets a 4xx OpenAI error object.
@Suite("OpenAI server", .serialized)
struct OpenAIServerTests {
    static let modelFile = "SmolLM2-135M-Instruct.Q4_1.gguf"

    static func modelPath() throws -> String {
        let cache = ProcessInfo.processInfo.environment["POCKETLM_CACHE"].flatMap { $0.isEmpty ? nil : $0 }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/pocketlm").path
        let path = cache + "/" + modelFile
        guard FileManager.default.fileExists(atPath: path) else {
            throw SetupError(description: "missing \(path): run `make fetch` first")
        }
        return path
    }

    struct SetupError: Error, CustomStringConvertible { let description: String }

    /// A server with `slots` slots, a queue of `queue`, and `context` tokens per slot.
    static func server(slots: Int = 2, queue: Int = 4, context: Int = 512) throws -> (OpenAIServer, LanguageModel) {
        let (server, reference) = try serverOnly(slots: slots, queue: queue, context: context, reference: true)
        return (server, reference!)
    }

    static func serverOnly(slots: Int = 1, queue: Int = 4, context: Int = 512, reference wanted: Bool = false) throws -> (OpenAIServer, LanguageModel?) {
        let path = try modelPath()
        let lm = try LanguageModel(path: path, options: LoadOptions(threads: 2, contextLength: context, sequences: slots))
        let template = Result { try lm.chatTemplate() }
        // A second, single-sequence model computes the expected replies.
        let reference = wanted ? try LanguageModel(path: path, options: LoadOptions(threads: 2, contextLength: context)) : nil
        return (OpenAIServer(generator: ParallelGenerator(model: lm, queueLimit: queue), modelName: "smollm2", chatTemplate: template),
                reference)
    }

    /// A response as the tests read it.
    struct Reply: Sendable {
        let status: HTTPResponse.Status
        /// Header values by lowercased name.
        let headers: [String: String]
        let body: Data
    }

    /// Foundation's HTTP client on the running server (no test-only HTTP stack to build); its timeout is generous,
    /// since the whole suite runs at once on two cores.
    struct Client: Sendable {
        let base: URL

        func post(_ uri: String, _ body: String) async throws -> Reply {
            try await post(uri, Data(body.utf8))
        }

        func post(_ uri: String, _ body: Data) async throws -> Reply {
            var request = URLRequest(url: base.appendingPathComponent(uri), timeoutInterval: 600)
            request.httpMethod = "POST"
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = body
            return try await send(request)
        }

        func get(_ uri: String) async throws -> Reply {
            try await send(URLRequest(url: base.appendingPathComponent(uri), timeoutInterval: 600))
        }

        private func send(_ request: URLRequest) async throws -> Reply {
            let (data, response) = try await URLSession.shared.data(for: request)
            let http = try #require(response as? HTTPURLResponse)
            var headers: [String: String] = [:]
            for (key, value) in http.allHeaderFields { headers["\(key)".lowercased()] = "\(value)" }
            return Reply(status: HTTPResponse.Status(code: http.statusCode), headers: headers, body: data)
        }
    }

    /// Runs `server` on a free loopback port with its generator service, calls `body` with a client, then shuts
    /// the service group down gracefully.
    static func withServer<R: Sendable>(_ server: OpenAIServer, _ body: @Sendable (Client) async throws -> R) async throws -> R {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let (ports, listening) = AsyncStream<Int>.makeStream()
        let app = server.application(host: "127.0.0.1", port: 0, logger: logger) { listening.yield($0) }
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var it = ports.makeAsyncIterator()
            let port = try #require(await it.next())
            do {
                let value = try await body(Client(base: URL(string: "http://127.0.0.1:\(port)")!))
                await group.triggerGracefulShutdown()
                return value
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
        }
    }

    static func post(_ client: Client, _ uri: String, _ body: String) async throws -> Reply {
        try await client.post(uri, body)
    }

    static func object(_ response: Reply) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: response.body) as? [String: Any])
    }

    /// The greedy reply `Generator` gives the chat `messages` alone.
    static func expectedReply(_ lm: LanguageModel, _ messages: [ChatMessage], maxTokens: Int) throws -> (text: String, prompt: Int, tokens: Int) {
        let prompt = try lm.encodeChat(messages: messages)
        let r = try lm.generator().generate(prompt: prompt, options: GenerationOptions(maxTokens: maxTokens, sampling: .greedy))
        return (r.text, prompt.count, r.tokens.count)
    }

    @Test("chat completion: the library's greedy reply, exact usage; the next turn reports its cached prefix")
    func chatCompletion() async throws {
        let (server, model) = try Self.server()
        // Used by the test closure only, after the server's own model has been handed over.
        nonisolated(unsafe) let reference = model
        let question = "What is the capital of France?"
        let expected = try Self.expectedReply(reference, [ChatMessage(role: "user", content: question)], maxTokens: 30)
        try await Self.withServer(server) { client in
            let r = try await Self.post(client, "/v1/chat/completions",
                                        #"{"model":"x","messages":[{"role":"user","content":"\#(question)"}],"temperature":0,"max_tokens":30}"#)
            #expect(r.status == .ok)
            let o = try Self.object(r)
            #expect(o["object"] as? String == "chat.completion")
            let choice = try #require((o["choices"] as? [[String: Any]])?.first)
            let message = try #require(choice["message"] as? [String: Any])
            #expect(message["role"] as? String == "assistant")
            let reply = try #require(message["content"] as? String)
            #expect(reply == expected.text)
            #expect(choice["finish_reason"] as? String == (expected.tokens == 30 ? "length" : "stop"))
            let usage = try #require(o["usage"] as? [String: Any])
            #expect(usage["prompt_tokens"] as? Int == expected.prompt)
            #expect(usage["completion_tokens"] as? Int == expected.tokens)
            #expect(usage["total_tokens"] as? Int == expected.prompt + expected.tokens)
            #expect((usage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int == 0)

            // Turn 2 carries turn 1: its prompt's prefix is in the slot's cache.
            let body2 = #"{"messages":[{"role":"user","content":"\#(question)"},{"role":"assistant","content":\#(Self.quoted(reply))},{"role":"user","content":"And of Italy?"}],"temperature":0,"max_tokens":20}"#
            let r2 = try await Self.post(client, "/v1/chat/completions", body2)
            #expect(r2.status == .ok)
            let o2 = try Self.object(r2)
            let usage2 = try #require(o2["usage"] as? [String: Any])
            let cached = try #require((usage2["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int)
            #expect(cached >= expected.prompt)
            let expected2 = try Self.expectedReply(reference, [ChatMessage(role: "user", content: question),
                                                               ChatMessage(role: "assistant", content: reply),
                                                               ChatMessage(role: "user", content: "And of Italy?")], maxTokens: 20)
            let reply2 = ((o2["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
            #expect(reply2 == expected2.text)
            #expect(usage2["prompt_tokens"] as? Int == expected2.prompt)
        }
    }

    static func quoted(_ s: String) -> String {
        String(decoding: try! JSONEncoder().encode(s), as: UTF8.self)
    }

    @Test("streamed chat and text completions carry the whole reply's text, end with [DONE], and report usage")
    func streaming() async throws {
        let (server, reference) = try Self.server()
        let expected = try Self.expectedReply(reference, [ChatMessage(role: "user", content: "Name three fruits.")], maxTokens: 24)
        let completionPrompt = reference.encodePrompt("The capital of France is", parseSpecial: false)
        let completion = try reference.generator().generate(prompt: completionPrompt, options: GenerationOptions(maxTokens: 16, sampling: .greedy))
        try await Self.withServer(server) { client in
            let r = try await Self.post(client, "/v1/chat/completions",
                                        #"{"messages":[{"role":"user","content":"Name three fruits."}],"temperature":0,"max_tokens":24,"stream":true,"stream_options":{"include_usage":true}}"#)
            #expect(r.status == .ok)
            #expect(r.headers["content-type"] == "text/event-stream")
            let events = Self.events(r)
            #expect(events.last == "[DONE]")
            let chunks = try events.dropLast().map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
            var text = ""
            var finish: String?
            var usage: [String: Any]?
            for c in chunks {
                #expect(c["object"] as? String == "chat.completion.chunk")
                if let u = c["usage"] as? [String: Any] { usage = u }
                guard let choice = (c["choices"] as? [[String: Any]])?.first else { continue }
                text += ((choice["delta"] as? [String: Any])?["content"] as? String) ?? ""
                if let f = choice["finish_reason"] as? String { finish = f }
            }
            #expect(((chunks.first?["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])?["role"] as? String == "assistant")
            #expect(text == expected.text)
            #expect(finish == (expected.tokens == 24 ? "length" : "stop"))
            #expect(usage?["completion_tokens"] as? Int == expected.tokens)
            #expect(usage?["prompt_tokens"] as? Int == expected.prompt)

            let t = try await Self.post(client, "/v1/completions", #"{"prompt":"The capital of France is","temperature":0,"stream":true}"#)
            let tEvents = Self.events(t)
            #expect(tEvents.last == "[DONE]")
            let pieces = try tEvents.dropLast().map { e -> String in
                let o = try #require(try JSONSerialization.jsonObject(with: Data(e.utf8)) as? [String: Any])
                #expect(o["object"] as? String == "text_completion")
                return ((o["choices"] as? [[String: Any]])?.first?["text"] as? String) ?? ""
            }
            // OpenAI's default max_tokens for completions is 16.
            #expect(pieces.joined() == completion.text)
            let whole = try await Self.post(client, "/v1/completions", #"{"prompt":["The capital of France is"],"temperature":0}"#)
            let wo = try Self.object(whole)
            #expect((wo["choices"] as? [[String: Any]])?.first?["text"] as? String == completion.text)
            #expect((wo["usage"] as? [String: Any])?["completion_tokens"] as? Int == completion.tokens.count)
        }
    }

    /// The `data:` payloads of a server-sent event stream.
    static func events(_ r: Reply) -> [String] {
        String(decoding: r.body, as: UTF8.self).components(separatedBy: "\n\n").compactMap { e in
            e.hasPrefix("data: ") ? String(e.dropFirst(6)) : nil
        }
    }

    @Test("bad requests get a 4xx with an OpenAI error object naming the problem, and the server keeps serving",
          arguments: [
            ("/v1/chat/completions", #"{"messages": [ "#, 400, nil, "not valid JSON"),
            ("/v1/chat/completions", #"[1, 2]"#, 400, nil, "JSON object"),
            ("/v1/chat/completions", #"{"model": "x"}"#, 400, "messages", "'messages' is required"),
            ("/v1/chat/completions", #"{"messages": "hi"}"#, 400, "messages", "must be an array"),
            ("/v1/chat/completions", #"{"messages": [{"role": "wizard", "content": "hi"}]}"#, 400, "messages[0].role", "unknown role 'wizard'"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": 5}]}"#, 400, "messages[0].content", "must be a string"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#, 400, "temperature", "must be a number"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "temperature": 3}"#, 400, "temperature", "between 0 and 2"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}"#, 400, "top_p", "between 0 and 1"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}"#, 400, "max_tokens", "at least 1"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2.5}"#, 400, "max_tokens", "integer"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": null, "max_tokens": -3}"#, 400, "max_tokens", "at least 1"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}"#, 400, "max_completion_tokens", "at least 1"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}"#, 400, "stream", "true or false"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "stop": ["a","b","c","d","e"]}"#, 400, "stop", "up to 4"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "n": 2}"#, 400, "n", "not supported"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}"#, 400, "tools", "not supported"),
            ("/v1/completions", #"{"prompt": 42}"#, 400, "prompt", "must be a string"),
            ("/v1/completions", #"{"prompt": "hi", "logprobs": 3}"#, 400, "logprobs", "not supported"),
          ] as [(String, String, Int, String?, String)])
    func badRequests(uri: String, body: String, status: Int, param: String?, message: String) async throws {
        let (server, _) = try Self.serverOnly()
        try await Self.withServer(server) { client in
            let r = try await Self.post(client, uri, body)
            #expect(r.status.code == status)
            let error = try #require(try Self.object(r)["error"] as? [String: Any])
            #expect(error["type"] as? String == "invalid_request_error")
            #expect((error["message"] as? String)?.contains(message) == true, "\(error)")
            #expect(error["param"] as? String == param)
            // Still serving.
            let ok = try await Self.post(client, "/v1/completions", #"{"prompt":"Hi","max_tokens":2,"temperature":0}"#)
            #expect(ok.status == .ok)
        }
    }

    @Test("a body that is not UTF-8, a lone surrogate, an unrepresentable number: 400 saying so, not a type mismatch")
    func malformedBodies() async throws {
        let (server, _) = try Self.serverOnly()
        try await Self.withServer(server) { client in
            // Each used to read "expected value of type Dictionary<String, Any> … found a string/an array/number instead".
            let bodies: [(Data, String)] = [
                (Data(#"{"messages":[{"role":"user","content":""#.utf8) + Data([0xFF, 0xFE]) + Data(#""}]}"#.utf8), "not valid UTF-8"),
                (Data(#"{"prompt":"Hi \ud800","max_tokens":2}"#.utf8), "not valid JSON"),
                (Data(#"{"prompt":"Hi","temperature":1e999}"#.utf8), "not valid JSON"),
                (Data(#"{"prompt":"Hi","metadata":{"x":[1,{"a":"\udc00"}]}}"#.utf8), "not valid JSON"),
            ]
            for (body, message) in bodies {
                let r = try await client.post("/v1/completions", body)
                #expect(r.status == .badRequest)
                let text = try #require((try Self.object(r)["error"] as? [String: Any])?["message"] as? String)
                #expect(text.contains(message), "\(text)")
                #expect(!text.contains("Dictionary") && !text.contains("instead"), "\(text)")
            }
            // Nested values of every kind still parse.
            let ok = try await client.post("/v1/completions", #"{"prompt":"Hi","max_tokens":2,"metadata":{"x":[1,{"a":"b"},true,null,2.5e3]}}"#)
            #expect(ok.status == .ok)
        }
    }

    @Test("any 64-bit seed is taken exactly and reproduces its text; an integer past 64 bits is refused saying so")
    func seeds() async throws {
        let (server, _) = try Self.serverOnly()
        try await Self.withServer(server) { client in
            // Seeds at or past 10^15 used to be refused as "'seed' must be an integer"; past 2^53 a Double merges them.
            func text(_ seed: String) async throws -> String {
                let r = try await client.post("/v1/completions", #"{"prompt":"Once upon a time","max_tokens":24,"temperature":1.5,"seed":\#(seed)}"#)
                #expect(r.status == .ok, "\(String(decoding: r.body, as: UTF8.self))")
                return try #require((try Self.object(r)["choices"] as? [[String: Any]])?.first?["text"] as? String)
            }
            let a = try await text("4611686018427387905")   // 2^62 + 1
            #expect(try await text("4611686018427387905") == a)
            #expect(try await text("4611686018427387904") != a)
            #expect(try await text("-9223372036854775808") == (try await text("-9223372036854775808")))

            let big = try await client.post("/v1/completions", #"{"prompt":"Hi","seed":1e20}"#)
            #expect(big.status == .badRequest)
            let e = try #require(try Self.object(big)["error"] as? [String: Any])
            #expect(e["param"] as? String == "seed")
            #expect((e["message"] as? String)?.contains("between -9223372036854775808 and 9223372036854775807") == true, "\(e)")
        }
    }

    @Test("a top_p too small for a Float (1e-50) is greedy, as top_p 0 is, streamed or whole")
    func tinyTopP() async throws {
        let (server, _) = try Self.serverOnly()
        try await Self.withServer(server) { client in
            // It used to reach the sampler as top-p 0: a 500 "generation failed", and a stream without [DONE].
            let greedy = try await client.post("/v1/completions", #"{"prompt":"The capital of France is","max_tokens":8,"temperature":0}"#)
            let expected = try #require((try Self.object(greedy)["choices"] as? [[String: Any]])?.first?["text"] as? String)
            let body = #"{"prompt":"The capital of France is","max_tokens":8,"temperature":1,"top_p":1e-50"#
            let whole = try await client.post("/v1/completions", body + "}")
            #expect(whole.status == .ok)
            #expect((try Self.object(whole)["choices"] as? [[String: Any]])?.first?["text"] as? String == expected)
            let streamed = Self.events(try await client.post("/v1/completions", body + #","stream":true}"#))
            #expect(streamed.last == "[DONE]", "\(streamed)")
            let text = try streamed.dropLast().map { e -> String in
                let o = try #require(try JSONSerialization.jsonObject(with: Data(e.utf8)) as? [String: Any])
                return ((o["choices"] as? [[String: Any]])?.first?["text"] as? String) ?? ""
            }.joined()
            #expect(text == expected)
        }
    }

    @Test("a prompt past the context, a body past the limit, an unknown route: 400, 413, 404 as error objects")
    func limits() async throws {
        let (server, _) = try Self.serverOnly(context: 64)
        try await Self.withServer(server) { client in
            let long = String(repeating: "word ", count: 200)
            let r = try await Self.post(client, "/v1/completions", #"{"prompt":"\#(long)"}"#)
            #expect(r.status == .badRequest)
            let e = try #require(try Self.object(r)["error"] as? [String: Any])
            #expect(e["code"] as? String == "context_length_exceeded")
            #expect((e["message"] as? String)?.contains("context holds 64 tokens") == true)

            // A token limit far past the context fills it ("length"); the server once died reserving 10^14 tokens.
            let far = try await Self.post(client, "/v1/completions",
                                          #"{"prompt":"The capital of France is","max_tokens":100000000000000,"temperature":0}"#)
            #expect(far.status == .ok)
            let fo = try Self.object(far)
            #expect((fo["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String == "length")
            let fu = try #require(fo["usage"] as? [String: Any])
            #expect(fu["prompt_tokens"] as? Int == 5 && fu["completion_tokens"] as? Int == 60)   // 64 fed, the last sampled

            let huge = #"{"prompt":""# + String(repeating: "x", count: 2 << 20) + #""}"#
            let big = try await Self.post(client, "/v1/completions", huge)
            #expect(big.status == .contentTooLarge)
            #expect((try Self.object(big)["error"] as? [String: Any])?["message"] as? String != nil)

            let missing = try await client.get("/v1/engines")
            #expect(missing.status == .notFound)
            #expect(((try Self.object(missing)["error"] as? [String: Any])?["message"] as? String)?.contains("/v1/engines") == true)

            let models = try Self.object(try await client.get("/v1/models"))
            #expect((models["data"] as? [[String: Any]])?.first?["id"] as? String == "smollm2")
            // OpenAI's retrieve-model route (it was a 404 "no route" for the served model too).
            let one = try await client.get("/v1/models/smollm2")
            #expect(one.status == .ok)
            let model = try Self.object(one)
            #expect(model["id"] as? String == "smollm2" && model["object"] as? String == "model")
            let other = try await client.get("/v1/models/gpt-4o")
            #expect(other.status == .notFound)
            #expect((try Self.object(other)["error"] as? [String: Any])?["code"] as? String == "model_not_found")
            let health = try Self.object(try await client.get("/health"))
            #expect(health["status"] as? String == "ok" && health["slots"] as? Int == 1)
        }
    }
}
