/// One turn of a conversation.
public struct ChatMessage: Sendable, Codable, Equatable {
    /// "system", "user" or "assistant" (rendered as given).
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// Renders a conversation into the prompt text a model was trained on.
///
/// Models ship a Jinja template (`tokenizer.chat_template`); rather than embed a Jinja interpreter, PocketLM
/// recognises template families and renders them natively. Implemented: ChatML
/// (`<|im_start|>ROLE\nCONTENT<|im_end|>\n` per message, `<|im_start|>assistant\n` as the generation prompt),
/// used by SmolLM2, Qwen and others. A ChatML template that inserts a fixed system message when the conversation
/// has none (as SmolLM2's does) has that message extracted and is mirrored. Any other template is refused with
/// `TokenizerError.unsupportedChatTemplate` rather than guessed at, since a wrong format silently degrades
/// answers.
///
/// The rendered text contains the turn markers literally: encode it with `parseSpecial: true`.
public struct ChatTemplate: Sendable {
    /// The template source as given.
    public let template: String
    /// The system message the template inserts when the first message is not a system message, if any.
    public let defaultSystemMessage: String?

    private static let start = "<|im_start|>"
    private static let end = "<|im_end|>"

    /// Recognises `template`'s family; throws `TokenizerError.unsupportedChatTemplate` naming what it looks
    /// like when it is not ChatML.
    public init(template: String) throws(TokenizerError) {
        guard template.contains(ChatTemplate.start) else {
            throw .unsupportedChatTemplate(ChatTemplate.describeUnsupported(template))
        }
        self.template = template
        self.defaultSystemMessage = ChatTemplate.extractDefaultSystemMessage(template)
    }

    /// The template stored in a GGUF file's `tokenizer.chat_template`.
    public init(gguf: GGUFFile) throws {
        guard gguf.metadata["tokenizer.chat_template"] != nil else {
            throw TokenizerError.unsupportedChatTemplate("the model file has no chat template (tokenizer.chat_template)")
        }
        try self.init(template: try gguf.string("tokenizer.chat_template"))
    }

    /// The prompt for `messages`, ending with the assistant's turn opener when `addGenerationPrompt` is set.
    ///
    /// Mirrors the template: the default system message (if the template has one) is put before the first
    /// message unless that message is a system message; with no messages at all, only the generation prompt
    /// is rendered. Content is inserted verbatim.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        var out = ""
        for (i, m) in messages.enumerated() {
            if i == 0, m.role != "system", let system = defaultSystemMessage {
                out += "\(ChatTemplate.start)system\n\(system)\(ChatTemplate.end)\n"
            }
            out += "\(ChatTemplate.start)\(m.role)\n\(m.content)\(ChatTemplate.end)\n"
        }
        if addGenerationPrompt { out += "\(ChatTemplate.start)assistant\n" }
        return out
    }

    /// The text of a string literal `'<|im_start|>system\n…<|im_end|>'` in the template, if there is one whose
    /// content is literal (no Jinja expression spliced in, as in Qwen's `'…system\n' + messages[0]['content']`).
    static func extractDefaultSystemMessage(_ template: String) -> String? {
        var rest = template[...]
        while let marker = rest.range(of: "\(start)system") {
            rest = rest[marker.upperBound...]
            let body: Substring
            if rest.hasPrefix("\n") {
                body = rest.dropFirst()
            } else if rest.hasPrefix("\\n") {
                body = rest.dropFirst(2)
            } else {
                continue
            }
            guard let close = body.range(of: end) else { return nil }
            let raw = body[..<close.lowerBound]
            if let text = unescapeLiteral(raw) { return text }
        }
        return nil
    }

    /// Undoes Jinja string-literal escapes; nil when the text leaves the literal (an unescaped quote) or holds
    /// template syntax.
    private static func unescapeLiteral(_ raw: Substring) -> String? {
        var out = ""
        var escaped = false
        for ch in raw {
            if escaped {
                switch ch {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                default: out.append(ch)
                }
                escaped = false
            } else if ch == "\\" {
                escaped = true
            } else if ch == "'" || ch == "\"" || ch == "{" || ch == "}" {
                return nil
            } else {
                out.append(ch)
            }
        }
        return escaped ? nil : out
    }

    private static func describeUnsupported(_ template: String) -> String {
        if template.allSatisfy(\.isWhitespace) {
            return "the chat template is empty; only ChatML templates (<|im_start|>ROLE … <|im_end|>) are supported"
        }
        let families: [(String, String)] = [
            ("[INST]", "Llama 2 / Mistral ([INST] … [/INST])"),
            ("<|start_header_id|>", "Llama 3 (<|start_header_id|>ROLE<|end_header_id|>)"),
            ("<start_of_turn>", "Gemma (<start_of_turn>ROLE … <end_of_turn>)"),
            ("<|user|>", "Zephyr / Phi-3 (<|user|> … <|end|>)"),
        ]
        let family = families.first { template.contains($0.0) }?.1 ?? "not ChatML"
        return "this template looks like \(family); only ChatML templates (<|im_start|>ROLE … <|im_end|>) are supported"
    }
}
