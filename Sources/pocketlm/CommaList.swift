import ArgumentParser

/// Options that take a comma-separated list (bench-flash's --budgets, --modes, --sparsity; compare-sharing's
/// --strategies).
enum CommaList {
    /// The entries of `list`. An empty entry (a,,b, a stray comma, or an empty list) is a typo, perhaps of an entry
    /// the user meant to measure: an error naming `option`, not skipped silently (which could leave no rows at all).
    static func entries(_ list: String, option: String, entry: String, example: String) throws -> [Substring] {
        let entries = list.split(separator: ",", omittingEmptySubsequences: false)
        guard !entries.contains(where: { $0.allSatisfy(\.isWhitespace) }) else {
            throw ValidationError("empty \(entry) in \(option) '\(list)': separate the entries with single commas, e.g. \(example)")
        }
        return entries
    }
}
