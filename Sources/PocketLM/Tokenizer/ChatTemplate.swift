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
/// The rendered text contains the turn markers literally: encode it with `parseSpecial: true`. A turn ends
/// at the family's end-of-turn token (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`), which is in the
/// tokenizer's `stopTokenIds`.
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

    /// The prompt for `messages`, ending with the assistant's turn opener when `addGenerationPrompt` is set.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        switch family {
        case .chatML: renderChatML(messages, addGenerationPrompt)
        case .gemma: renderGemma(messages, addGenerationPrompt)
        case .llama3: renderLlama3(messages, addGenerationPrompt)
        }
    }

    /// Content verbatim; the default system message (if the template has one) goes before the first message
    /// unless that message is a system message; with no messages, only the generation prompt.
    private func renderChatML(_ messages: [ChatMessage], _ addGenerationPrompt: Bool) -> String {
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

    /// llama.cpp's LLM_CHAT_TEMPLATE_GEMMA: system text accumulates (trimmed, concatenated) until the next
    /// non-model turn, which gets it followed by a blank line before its own trimmed content.
    private func renderGemma(_ messages: [ChatMessage], _ addGenerationPrompt: Bool) -> String {
        var out = ""
        var system = ""
        for m in messages {
            if m.role == "system" {
                system += ChatTemplate.trim(m.content)
                continue
            }
            let role = m.role == "assistant" ? "model" : m.role
            out += "<start_of_turn>\(role)\n"
            if !system.isEmpty && role != "model" {
                out += system + "\n\n"
                system = ""
            }
            out += ChatTemplate.trim(m.content) + "<end_of_turn>\n"
        }
        if addGenerationPrompt { out += "<start_of_turn>model\n" }
        return out
    }

    /// llama.cpp's LLM_CHAT_TEMPLATE_LLAMA_3: every role as given, content trimmed.
    private func renderLlama3(_ messages: [ChatMessage], _ addGenerationPrompt: Bool) -> String {
        var out = ""
        for m in messages {
            out += "<|start_header_id|>\(m.role)<|end_header_id|>\n\n\(ChatTemplate.trim(m.content))<|eot_id|>"
        }
        if addGenerationPrompt { out += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        return out
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
