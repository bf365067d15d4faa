import Foundation
import PocketLM
import Testing

@Suite struct ChatTemplateTests {
    static let smolSystem = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

    @Test func smolLM2TemplateMatchesReferencePrompt() throws {
        let template = try ChatTemplate(gguf: TokenizerFixtures.gguf())
        #expect(template.defaultSystemMessage == ChatTemplateTests.smolSystem)
        let rendered = try template.render([ChatMessage(role: "user", content: "What is 2+2?")], addGenerationPrompt: true)
        let chat = try #require(TokenizerFixtures.reference().records.first { $0.promptKind == "chat" })
        #expect(rendered == chat.prompt)
        // End to end: rendered text → llama.cpp's ids (special parsing on; no BOS for this model).
        let tok = try TokenizerFixtures.tokenizer()
        #expect(tok.encode(rendered, parseSpecial: true) == chat.tokens)
    }

    @Test func explicitSystemMessageReplacesTheDefault() throws {
        let template = try ChatTemplate(gguf: TokenizerFixtures.gguf())
        let rendered = try template.render(
            [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi"),
             ChatMessage(role: "assistant", content: "Hello!"), ChatMessage(role: "user", content: "Bye")],
            addGenerationPrompt: false)
        #expect(rendered == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            + "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n")
    }

    @Test func emptyConversationRendersOnlyTheGenerationPrompt() throws {
        let template = try ChatTemplate(gguf: TokenizerFixtures.gguf())
        #expect(try template.render([], addGenerationPrompt: true) == "<|im_start|>assistant\n")
        #expect(try template.render([], addGenerationPrompt: false) == "")
    }

    @Test func plainChatMLHasNoDefaultSystemMessage() throws {
        let template = try ChatTemplate(template: """
            {% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
            """)
        #expect(template.defaultSystemMessage == nil)
        #expect(try template.render([ChatMessage(role: "user", content: "x")], addGenerationPrompt: true)
            == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n")
    }

    @Test func qwenStyleDefaultSystemMessageIsFoundPastSplicedExpressions() throws {
        let template = try ChatTemplate(template: """
            {%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}\
            {%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}\
            {%- endif %}{%- for message in messages %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endfor %}
            """)
        #expect(template.defaultSystemMessage == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        // A template stored with the escape sequence rather than a real newline works too.
        let escaped = try ChatTemplate(template: "{{ '<|im_start|>system\\nIt\\'s me.<|im_end|>\\n' }}")
        #expect(escaped.defaultSystemMessage == "It's me.")
    }

    @Test func messagesAreCodable() throws {
        let m = ChatMessage(role: "user", content: "héllo")
        let back = try JSONDecoder().decode(ChatMessage.self, from: JSONEncoder().encode(m))
        #expect(back == m)
    }

    @Test func unsupportedTemplatesAreRefused() {
        let llama2 = "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% endfor %}"
        #expect {
            try ChatTemplate(template: llama2)
        } throws: { error in
            guard case TokenizerError.unsupportedChatTemplate(let why) = error else { return false }
            return why.contains("Llama 2") && why.contains("ChatML")
        }
        #expect {
            try ChatTemplate(template: "")
        } throws: { error in
            guard case TokenizerError.unsupportedChatTemplate(let why) = error else { return false }
            return why.contains("empty")
        }
        let llama3 = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
        #expect(throws: TokenizerError.self) { try ChatTemplate(template: llama3) }
        let error = TokenizerError.unsupportedChatTemplate("x")
        #expect(error.localizedDescription == "unsupported chat template: x")
    }
}
