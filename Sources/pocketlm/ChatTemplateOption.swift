import ArgumentParser
import PocketLM

/// `--chat-template`: how run --chat, chat and serve render a conversation. A model file without a template (a
/// base model such as Gemma 3 270M) can then still chat, in the format its instruction-tuned sibling uses.
struct ChatTemplateOption: ParsableArguments {
    @Option(name: .customLong("chat-template"),
            help: "Chat template: chatml, gemma or llama3 (llama.cpp's names), or a Jinja template's text, recognised as llama.cpp does (default: the model file's).")
    var chatTemplate: String?

    /// The template given, else the model file's; an error naming this option when there is neither.
    func template(for lm: LanguageModel) throws -> ChatTemplate {
        if let chatTemplate { return try ChatTemplate(template: chatTemplate) }
        do {
            return try lm.chatTemplate()
        } catch let error as TokenizerError {
            throw CLIError(description: "\(error.localizedDescription); give one with --chat-template chatml, gemma or llama3")
        }
    }
}
