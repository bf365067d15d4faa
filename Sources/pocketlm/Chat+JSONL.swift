import PocketLM

/// `chat --jsonl`'s output: one JSON object per line (snake_case keys), so a script can tell an answer that spans
/// lines from the next turn. Each object says what it is: a `role` (an answer, or /show's system message), an
/// `error` (a failed turn or command, in its place), or `stats`.
enum ChatJSONLine {
    /// A turn's answer, whole, with why it ended and what it cost.
    struct Answer: Encodable {
        var role = "assistant"
        let content: String
        let stopReason: String
        let promptTokens: Int
        let reusedTokens: Int
        let completionTokens: Int

        init(content: String, turn: ChatTurnStats) {
            self.content = content
            stopReason = turn.stopReason.rawValue
            promptTokens = turn.promptTokens
            reusedTokens = turn.reusedTokens
            completionTokens = turn.generatedTokens
        }
    }

    /// /show: the system message in effect; `content` is null when there is none.
    struct System: Encodable {
        let content: String?

        enum CodingKeys: String, CodingKey { case role, content }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode("system", forKey: .role)
            try c.encode(content, forKey: .content)   // null, not left out: "no system message" is an answer
        }
    }

    /// A failed turn or an unknown command (also reported on stderr).
    struct Failure: Encodable {
        let error: String
    }

    /// /stats: the cache, and the last turn's figures once there is one.
    struct Stats: Encodable {
        struct Figures: Encodable {
            var cacheTokens = 0
            var promptTokens: Int?
            var reusedTokens: Int?
            var prefillTokensPerSecond: Double?
            var completionTokens: Int?
            var decodeTokensPerSecond: Double?
            var timeToFirstTokenMs: Double?
            var stopReason: String?
        }

        var stats = Figures()
        /// The speculative decoder's summary and a paged model's reads, as the text output's extra lines.
        let speculation: String?
        let paging: String?

        init(_ turn: ChatTurnStats?, speculation: String?, paging: String?) {
            self.speculation = speculation
            self.paging = paging
            guard let t = turn else { return }
            stats = Figures(cacheTokens: t.cachedTokens, promptTokens: t.promptTokens, reusedTokens: t.reusedTokens,
                            prefillTokensPerSecond: t.prefillTokensPerSecond, completionTokens: t.generatedTokens,
                            decodeTokensPerSecond: t.decodeTokensPerSecond, timeToFirstTokenMs: t.timeToFirstToken * 1000,
                            stopReason: t.stopReason.rawValue)
        }
    }
}
