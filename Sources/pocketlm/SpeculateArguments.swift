import ArgumentParser
import Foundation
import PocketLM

/// `--speculate lookup[:N]` or `--speculate draft:MODEL.gguf[:N]`, for run, bench, chat and serve.
struct SpeculateOption: ExpressibleByArgument, CustomStringConvertible {
    enum Method: Equatable {
        case lookup
        case draftModel(path: String)
    }
    let method: Method
    /// Most tokens drafted per pass.
    let maxDraft: Int

    /// A pass of 7 drafts + 1 token is 8 inputs, the most the few-inputs kernels take (Linear.smallBatch);
    /// a ninth input moves a pass onto the prefill kernels and nearly doubles its cost (measured on SmolLM2 Q4_1:
    /// 4 drafts 1.6 decode steps, 8 drafts 3.5).
    static let defaultLookupDraft = 7
    static let defaultModelDraft = 4
    static let helpText = """
        Speculative decoding, same output: lookup[:N] drafts up to N tokens (default \(defaultLookupDraft)) by \
        matching the last tokens against the prompt and the text so far; draft:MODEL.gguf[:N] drafts N tokens \
        (default \(defaultModelDraft)) with a smaller model of the same vocabulary.
        """

    init?(argument: String) {
        let parts = argument.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        switch parts.first {
        case "lookup":
            guard parts.count <= 2 else { return nil }
            let n = parts.count == 2 ? Int(parts[1]) : Self.defaultLookupDraft
            guard let n, n >= 1 else { return nil }
            method = .lookup
            maxDraft = n
        case "draft":
            guard parts.count >= 2 else { return nil }
            var rest = Array(parts.dropFirst())
            var n = Self.defaultModelDraft
            // A trailing number is the draft length; the path itself may contain colons.
            if rest.count >= 2, let last = Int(rest.last!) {
                n = last
                rest.removeLast()
            }
            let path = rest.joined(separator: ":")
            guard !path.isEmpty, n >= 1 else { return nil }
            method = .draftModel(path: path)
            maxDraft = n
        default:
            return nil
        }
    }

    var description: String {
        switch method {
        case .lookup: "lookup:\(maxDraft)"
        case .draftModel(let path): "draft:\(path):\(maxDraft)"
        }
    }

    /// Checks the draft length against the model's batch and loads a draft model if one is named.
    func decoder(for target: LanguageModel, threads: Int) throws -> SpeculativeDecoder {
        guard maxDraft + 1 <= target.transformer.maxBatch else {
            throw ValidationError("--speculate: draft length \(maxDraft) is more than the \(target.transformer.maxBatch - 1) one pass can verify")
        }
        switch method {
        case .lookup:
            return try SpeculativeDecoder(drafter: PromptLookupDrafter(), maxDraft: maxDraft)
        case .draftModel(let path):
            // The budget is the whole process's and was spent on the target: a second model would not fit in it.
            if target.processBudget != nil {
                throw ValidationError("--speculate draft: loads a second model outside --memory-budget, so the process would not fit in it; use --speculate lookup under a budget")
            }
            guard FileManager.default.fileExists(atPath: path) else {
                throw CLIError(description: "--speculate: no draft model file at \(path)")
            }
            let draft = try LanguageModel(path: path, options: LoadOptions(threads: threads,
                                                                            contextLength: target.transformer.contextLength))
            let drafter = DraftModelDrafter(model: draft.transformer)
            try drafter.check(target: target.transformer)
            return try SpeculativeDecoder(drafter: drafter, maxDraft: maxDraft)
        }
    }
}

extension SpeculationStats {
    /// One line for stderr.
    var summary: String {
        String(format: "speculation: %d verify passes + %d plain steps, %d of %d drafted tokens accepted (%.0f%%), %.2f tokens per pass",
               verifyPasses, plainSteps, accepted, drafted, acceptanceRate * 100, tokensPerPass)
    }
}
