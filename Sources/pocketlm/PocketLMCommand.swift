import ArgumentParser
import PocketLM
import Foundation

@main
struct PocketLMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pocketlm", abstract: "Run tiny language models fast on a CPU.")
}
