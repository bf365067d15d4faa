import ArgumentParser
import Foundation
import PocketLM

struct Perplexity: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Perplexity of a model over a text file.",
        discussion: """
        Defined as llama.cpp's llama-perplexity does: the file's tokens are cut into non-overlapping windows of
        --context tokens (a partial last window is dropped); each window is evaluated from an empty cache, and
        only the second half of each window is scored, so every scored token sees at least context/2 tokens
        before it. Perplexity = exp(mean negative log-likelihood of the scored tokens).
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var pagingArguments: PagingArguments
    @Option(help: "The text file.") var file: String
    @Option(parsing: .number, help: "Window length in tokens.") var context: Int = 512
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard context >= 4 else { throw ValidationError("--context must be at least 4, found \(context)") }
    }

    func run() async throws {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw CLIError(description: "cannot read text file \(file)")
        }
        let lm = try LanguageModel(path: modelOptions.model,
                                   options: LoadOptions(threads: modelOptions.threads, kvCacheType: modelOptions.kvCacheType, contextLength: context,
                                                        paging: try pagingArguments.options(modelPath: modelOptions.model)))
        let text = String(decoding: data, as: UTF8.self)
        let result = try PerplexityEvaluator(model: lm).evaluate(text: text, window: context) { done, total, running in
            if !json { Console.error(String(format: "[%d/%d] running perplexity %.4f", done, total, running)) }
        }
        if json {
            try Console.json(result, snakeCaseKeys: true)
        } else {
            Console.write(String(format: "perplexity %.4f ± %.4f over %d scored tokens (%d windows of %d, %d tokens in the file) in %.1f s\n",
                                 result.perplexity, result.standardError, result.scoredTokens, result.windows,
                                 result.context, result.fileTokens, result.seconds))
        }
    }
}
