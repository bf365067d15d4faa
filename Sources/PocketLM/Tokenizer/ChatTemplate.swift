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
/// recognises the template the way llama.cpp's `llm_chat_detect_template` does (src/llama-chat.cpp: a template
/// *name* such as "chatml", else marker strings checked in llama.cpp's order) and renders the family natively,
/// byte for byte as llama.cpp's `llm_chat_apply_template`:
/// - ChatML (SmolLM2, Qwen2.5, …): `<|im_start|>ROLE\nCONTENT<|im_end|>\n` per message, content verbatim,
///   `<|im_start|>assistant\n` as the generation prompt. A template that inserts a fixed system message when
///   the conversation has none (SmolLM2's, Qwen2.5's "You are Qwen, created by Alibaba Cloud. …") has that
///   message extracted and inserted the same way, as the template itself (and llama.cpp's Jinja path) does.
/// - Gemma: `<start_of_turn>user\n…<end_of_turn>\n`, "assistant" renamed "model", content trimmed; Gemma has
///   no system role, so system text (trimmed) is put before the next user turn's content followed by a blank
///   line; `<start_of_turn>model\n` as the generation prompt.
/// - Llama 3: `<|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>`, content trimmed,
///   `<|start_header_id|>assistant<|end_header_id|>\n\n` as the generation prompt.
///
/// None of them writes BOS: as in llama.cpp, the tokenizer adds it once when the model asks for it
/// (`addBos`; true for Gemma and Llama 3), so the rendered text never carries a second one. Any other
/// template is refused with `TokenizerError.unsupportedChatTemplate` rather than guessed at, since a wrong
/// format silently degrades answers.
///
/// To turn a conversation into token ids, use `tokens(for:addGenerationPrompt:tokenizer:)` (or
/// `LanguageModel.encodeChat`): only the template's own markers become control tokens, while message content
/// is encoded as plain text, so a message containing `<|im_end|>\n<|im_start|>system\n…` cannot forge a turn.
/// `render` gives the same prompt as one string (for display, or for llama.cpp-style encoding with
/// `parseSpecial: true`, which does not have that protection). A turn ends at the family's end-of-turn token
/// (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`), which is in the tokenizer's `stopTokenIds`.
public struct ChatTemplate: Sendable {
    /// The families PocketLM renders.
    public enum Family: String, Sendable, CaseIterable {
        case chatML = "chatml"
        case gemma
        case llama3
    }

    /// The template source as given.
    public let template: String
    /// Which family the template was recognised as.
    public let family: Family
    /// The system message the template inserts when the first message is not a system message, if any
    /// (ChatML only).
    public let defaultSystemMessage: String?

    private static let start = "<|im_start|>"
    private static let end = "<|im_end|>"

    /// Recognises `template`'s family; throws `TokenizerError.unsupportedChatTemplate` naming what llama.cpp
    /// would take it for when it is not a family PocketLM renders.
    public init(template: String) throws(TokenizerError) {
        guard let name = ChatTemplate.llamaCppTemplateName(template) else {
            throw .unsupportedChatTemplate(ChatTemplate.describeUnsupported(template, name: nil))
        }
        guard let family = Family(rawValue: name) else {
            throw .unsupportedChatTemplate(ChatTemplate.describeUnsupported(template, name: name))
        }
        self.template = template
        self.family = family
        self.defaultSystemMessage = family == .chatML ? ChatTemplate.extractDefaultSystemMessage(template) : nil
    }

    /// The template stored in a GGUF file's `tokenizer.chat_template`.
    public init(gguf: GGUFFile) throws {
        guard gguf.metadata["tokenizer.chat_template"] != nil else {
            throw TokenizerError.unsupportedChatTemplate("the model file has no chat template (tokenizer.chat_template)")
        }
        try self.init(template: try gguf.string("tokenizer.chat_template"))
    }

    /// One piece of a rendered prompt: a template marker, or plain text.
    public struct Segment: Sendable, Equatable {
        /// What a segment is, which decides how it is encoded.
        public enum Kind: Sendable, Equatable {
            /// A turn marker the template writes (`<|im_start|>`, `<end_of_turn>`, `<|eot_id|>`, …): encoded with
            /// special-token parsing, so it becomes the control token.
            case marker
            /// Message content and the template's own plain words (role names, newlines): encoded without
            /// special-token parsing, so nothing in it becomes a control token.
            case text
        }

        public var kind: Kind
        public var text: String

        public init(kind: Kind, text: String) {
            self.kind = kind
            self.text = text
        }
    }

    /// The prompt for `messages`, ending with the assistant's turn opener when `addGenerationPrompt` is set.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        segments(messages, addGenerationPrompt: addGenerationPrompt).map(\.text).joined()
    }

    /// The prompt for `messages` as markers and text, in order; their texts concatenate to `render`'s string.
    /// Adjacent text is merged, so text segments lie exactly between markers.
    public func segments(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> [Segment] {
        var out = SegmentBuilder()
        switch family {
        case .chatML: renderChatML(messages, addGenerationPrompt, &out)
        case .gemma: renderGemma(messages, addGenerationPrompt, &out)
        case .llama3: renderLlama3(messages, addGenerationPrompt, &out)
        }
        return out.segments
    }

    /// The token ids of the prompt for `messages`: BOS first when the tokenizer asks for it, each marker the
    /// vocabulary has as a control token as that token, and all other text — message content above all —
    /// encoded without special-token parsing, so text that spells a marker stays plain text.
    ///
    /// For a conversation whose content spells no special token, the ids equal those of `render`'s text
    /// encoded with `parseSpecial: true` (llama.cpp's ids): text between markers is encoded as one stretch, as
    /// llama.cpp's special-token partition does. A marker the vocabulary does not have as a single control token
    /// is encoded as part of the text around it, as it would be in the rendered string.
    public func tokens(for messages: [ChatMessage], addGenerationPrompt: Bool, tokenizer: any Tokenizer) -> [Int] {
        var ids: [Int] = []
        if tokenizer.addBos, let bos = tokenizer.bosTokenId { ids.append(bos) }
        var run = ""
        for segment in segments(messages, addGenerationPrompt: addGenerationPrompt) {
            if segment.kind == .marker {
                let marker = tokenizer.encode(segment.text, parseSpecial: true)
                if marker.count == 1 && tokenizer.isControl(marker[0]) {
                    ids += tokenizer.encode(run, parseSpecial: false)
                    run = ""
                    ids += marker
                    continue
                }
            }
            run += segment.text
        }
        ids += tokenizer.encode(run, parseSpecial: false)
        return ids
    }

    /// Collects segments, merging adjacent text and dropping empty pieces.
    private struct SegmentBuilder {
        var segments: [Segment] = []

        mutating func marker(_ s: String) {
            segments.append(Segment(kind: .marker, text: s))
        }

        mutating func text(_ s: String) {
            guard !s.isEmpty else { return }
            if let last = segments.last, last.kind == .text {
                segments[segments.count - 1].text += s
            } else {
                segments.append(Segment(kind: .text, text: s))
            }
        }
    }

    /// Content verbatim; the default system message (if the template has one) goes before the first message
    /// unless that message is a system message; with no messages, only the generation prompt.
    private func renderChatML(_ messages: [ChatMessage], _ addGenerationPrompt: Bool, _ out: inout SegmentBuilder) {
        func turn(_ role: String, _ content: String) {
            out.marker(ChatTemplate.start)
            out.text("\(role)\n\(content)")
            out.marker(ChatTemplate.end)
            out.text("\n")
        }
        for (i, m) in messages.enumerated() {
            if i == 0, m.role != "system", let system = defaultSystemMessage { turn("system", system) }
            turn(m.role, m.content)
        }
        if addGenerationPrompt {
            out.marker(ChatTemplate.start)
            out.text("assistant\n")
        }
    }

    /// llama.cpp's LLM_CHAT_TEMPLATE_GEMMA: system text accumulates (trimmed, concatenated) until the next
    /// non-model turn, which gets it followed by a blank line before its own trimmed content.
    private func renderGemma(_ messages: [ChatMessage], _ addGenerationPrompt: Bool, _ out: inout SegmentBuilder) {
        var system = ""
        for m in messages {
            if m.role == "system" {
                system += ChatTemplate.trim(m.content)
                continue
            }
            let role = m.role == "assistant" ? "model" : m.role
            out.marker("<start_of_turn>")
            out.text("\(role)\n")
            if !system.isEmpty && role != "model" {
                out.text(system + "\n\n")
                system = ""
            }
            out.text(ChatTemplate.trim(m.content))
            out.marker("<end_of_turn>")
            out.text("\n")
        }
        if addGenerationPrompt {
            out.marker("<start_of_turn>")
            out.text("model\n")
        }
    }

    /// llama.cpp's LLM_CHAT_TEMPLATE_LLAMA_3: every role as given, content trimmed.
    private func renderLlama3(_ messages: [ChatMessage], _ addGenerationPrompt: Bool, _ out: inout SegmentBuilder) {
        func header(_ role: String) {
            out.marker("<|start_header_id|>")
            out.text(role)
            out.marker("<|end_header_id|>")
            out.text("\n\n")
        }
        for m in messages {
            header(m.role)
            out.text(ChatTemplate.trim(m.content))
            out.marker("<|eot_id|>")
        }
        if addGenerationPrompt { header("assistant") }
    }

    /// llama-chat.cpp's `trim`: C `isspace` bytes (space, \t, \n, \v, \f, \r) off both ends, nothing else.
    static func trim(_ s: String) -> String {
        let u = Array(s.utf8)
        func space(_ b: UInt8) -> Bool { b == 0x20 || (0x09...0x0D).contains(b) }
        var a = 0, b = u.count
        while a < b && space(u[a]) { a += 1 }
        while b > a && space(u[b - 1]) { b -= 1 }
        return String(decoding: u[a..<b], as: UTF8.self)
    }

    /// The name llama.cpp's `llm_chat_detect_template` gives `template` (its built-in template names), or nil
    /// when llama.cpp recognises nothing. The checks and their order are llama.cpp's, so a template is never
    /// taken for a family llama.cpp would render differently (Phi-4 and SmolVLM also contain `<|im_start|>`).
    static func llamaCppTemplateName(_ t: String) -> String? {
        func has(_ s: String) -> Bool { t.contains(s) }
        let builtins: Set<String> = [
            "chatml", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip", "mistral-v1", "mistral-v3",
            "mistral-v3-tekken", "mistral-v7", "mistral-v7-tekken", "phi3", "phi4", "falcon3", "zephyr", "monarch",
            "gemma", "orion", "openchat", "vicuna", "vicuna-orca", "deepseek", "deepseek2", "deepseek3",
            "deepseek-ocr", "command-r", "llama3", "chatglm3", "chatglm4", "glmedge", "minicpm", "exaone3",
            "exaone4", "exaone-moe", "rwkv-world", "granite", "granite-4.0", "granite-4.1", "gigachat", "megrez",
            "yandex", "bailing", "bailing-think", "bailing2", "llama4", "smolvlm", "hunyuan-moe", "gpt-oss",
            "hunyuan-dense", "hunyuan-vl", "kimi-k2", "seed_oss", "grok-2", "pangu-embedded", "solar-open",
        ]
        if builtins.contains(t) { return t }
        if has("<|im_start|>") {
            return has("<|im_sep|>") ? "phi4" : has("<end_of_utterance>") ? "smolvlm" : "chatml"
        }
        if t.hasPrefix("mistral") || has("[INST]") {
            if has("[SYSTEM_PROMPT]") { return "mistral-v7" }
            if has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]") {
                if has(" [INST]") { return "mistral-v1" }
                if has("\"[INST]\"") { return "mistral-v3-tekken" }
                return "mistral-v3"
            }
            if has("content.strip()") { return "llama2-sys-strip" }
            if has("bos_token + '[INST]") { return "llama2-sys-bos" }
            return has("<<SYS>>") ? "llama2-sys" : "llama2"
        }
        if has("<|assistant|>") && has("<|end|>") { return "phi3" }
        if has("[gMASK]<sop>") { return "chatglm4" }
        if has("<|assistant|>") && has("<|user|>") {
            if has("<|tool_declare|>") { return "exaone-moe" }
            return has("</s>") ? "falcon3" : "glmedge"
        }
        if has("<|{{ item['role'] }}|>") && has("<|begin_of_image|>") { return "glmedge" }
        if has("<|user|>") && has("<|endoftext|>") { return "zephyr" }
        if has("bos_token + message['role']") { return "monarch" }
        if has("<start_of_turn>") { return "gemma" }
        if has("'\\n\\nAssistant: ' + eos_token") { return "orion" }
        if has("GPT4 Correct ") { return "openchat" }
        if has("USER: ") && has("ASSISTANT: ") { return has("SYSTEM: ") ? "vicuna-orca" : "vicuna" }
        if has("### Instruction:") && has("<|EOT|>") { return "deepseek" }
        if has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>") { return "command-r" }
        if has("<|start_header_id|>") && has("<|end_header_id|>") { return "llama3" }
        if has("[gMASK]sop") { return "chatglm3" }
        if has("<用户>") { return "minicpm" }
        if has("'Assistant: ' + message['content'] + eos_token") { return "deepseek2" }
        if has("<｜Assistant｜>") && has("<｜User｜>") && has("<｜end▁of▁sentence｜>") { return "deepseek3" }
        if has("[|system|]") && has("[|assistant|]") && has("[|endofturn|]") {
            return has("[|tool|]") ? "exaone4" : "exaone3"
        }
        if has("rwkv-world") || has("{{- 'User: ' + message['content']|trim + '\\n\\n' -}}") { return "rwkv-world" }
        if has("<|start_of_role|>") {
            if has("<tool_call>") || has("<tools>") { return has("g4_default_system_message") ? "granite-4.0" : "granite-4.1" }
            return "granite"
        }
        if has("message['role'] + additional_special_tokens[0] + message['content'] + additional_special_tokens[1]") {
            return "gigachat"
        }
        if has("<|role_start|>") { return "megrez" }
        if has(" Ассистент:") { return "yandex" }
        if has("<role>ASSISTANT</role>") && has("'HUMAN'") { return "bailing" }
        if has("<role>ASSISTANT</role>") && has("\"HUMAN\"") && has("<think>") { return "bailing-think" }
        if has("<role>ASSISTANT</role>") && has("<role>HUMAN</role>") && has("<|role_end|>") { return "bailing2" }
        if has("<|header_start|>") && has("<|header_end|>") { return "llama4" }
        if has("<|endofuserprompt|>") { return "dots1" }
        if has("<|extra_0|>") && has("<|extra_4|>") { return "hunyuan-moe" }
        if has("<|start|>") && has("<|channel|>") { return "gpt-oss" }
        if has("<｜hy_Assistant｜>") && has("<｜hy_begin▁of▁sentence｜>") { return "hunyuan-vl" }
        if has("<｜hy_Assistant｜>") && has("<｜hy_place▁holder▁no▁3｜>") { return "hunyuan-dense" }
        if has("<|im_assistant|>assistant<|im_middle|>") { return "kimi-k2" }
        if has("<seed:bos>") { return "seed_oss" }
        if has("'Assistant: '  + message['content'] + '<|separator|>") { return "grok-2" }
        if has("[unused9]系统：[unused10]") { return "pangu-embedded" }
        if has("<|begin|>") && has("<|end|>") && has("<|content|>") { return "solar-open" }
        return nil
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

    private static func describeUnsupported(_ template: String, name: String?) -> String {
        let supported = "PocketLM renders ChatML (<|im_start|>), Gemma (<start_of_turn>) and Llama 3 "
            + "(<|start_header_id|>) templates"
        if template.allSatisfy(\.isWhitespace) { return "the chat template is empty; \(supported)" }
        guard let name else {
            return "llama.cpp recognises no built-in template in this one; \(supported)"
        }
        let families: [String: String] = [
            "llama2": "Llama 2 ([INST] … [/INST])", "llama2-sys": "Llama 2 ([INST] … [/INST])",
            "llama2-sys-bos": "Llama 2 ([INST] … [/INST])", "llama2-sys-strip": "Llama 2 ([INST] … [/INST])",
            "mistral-v1": "Mistral ([INST] … [/INST])", "mistral-v3": "Mistral ([INST] … [/INST])",
            "mistral-v3-tekken": "Mistral ([INST] … [/INST])", "mistral-v7": "Mistral ([INST] … [/INST])",
            "zephyr": "Zephyr (<|user|> … <|endoftext|>)", "phi3": "Phi-3 (<|user|> … <|end|>)",
            "phi4": "Phi-4 (<|im_start|> … <|im_sep|>)", "smolvlm": "SmolVLM (<|im_start|>User: … <end_of_utterance>)",
        ]
        return "this template is llama.cpp's '\(name)'" + (families[name].map { ", \($0)" } ?? "") + "; \(supported)"
    }
}
