import ArgumentParser
import Foundation
import PocketLM

struct Pack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rewrite a model into the flash layout: resident tensors together, each layer's FFN as row-column bundles in aligned reads.")

    @Option(help: "The model to pack (GGUF; FFN weights of any type PocketLM computes: Q8_0 as neuron columns, the others — Q4_x, Q5_x, K-quants, F32, F16, BF16 — as block rows).") var model: String
    @Option(help: "The packed file to write.") var out: String
    @Option(name: .customLong("bundle-bytes"), parsing: .number, help: "Bytes per read: consecutive neurons' bundles grouped to fill it (rounded up to 4 KiB), e.g. 64K; at most 16M (a layer's FFN or more makes one group per layer).")
    var bundleBytes: String = "64K"
    @Option(help: "A predictor file from weights-tools/train_predictor.py to store alongside.") var predictor: String?
    @Flag(help: "Print the layout as JSON.") var json = false

    /// Checked in validate(), so its error's usage line is pack's, not "pocketlm <subcommand>" (as it was from run()).
    func validate() throws {
        // The size parser's own message has no usage line and says nothing of the range.
        guard let bytes = try? ByteCount.parse(bundleBytes) else {
            throw ValidationError("--bundle-bytes takes a read size such as 64K (at most 16M), found '\(bundleBytes)'")
        }
        guard bytes <= 16 << 20 else { throw ValidationError("--bundle-bytes must be at most 16M, found \(bundleBytes)") }
    }

    func run() async throws {
        let bytes = try ByteCount.parse(bundleBytes)
        let start = Date()
        let bar = ProgressBar(label: "packing")
        // Ctrl-C or a kill while packing: the packed file is written beside --out and renamed at the end, so --out
        // is untouched; the partial file goes too.
        let cleanup = OnTerminatingSignal { GGUFWriter.removePartialFiles() }
        defer { cleanup.cancel() }
        let layout = try FlashPacker.pack(source: model, output: out, bundleBytes: bytes, predictor: predictor) { bar.update($0) }
        bar.finish()
        let seconds = Date().timeIntervalSince(start)
        if json {
            struct Out: Encodable {
                let out: String; let bundle_bytes: Int; let group_neurons: Int; let neuron_bytes: Int
                let groups_per_layer: Int; let layer_bytes: Int; let seconds: Double
            }
            try Console.json(Out(out: out, bundle_bytes: layout.bundleBytes, group_neurons: layout.groupNeurons,
                                 neuron_bytes: layout.neuronBytes, groups_per_layer: layout.groupsPerLayer,
                                 layer_bytes: layout.layerBytes, seconds: seconds))
        } else {
            // A read at or past a layer's FFN makes one group per layer: "1 group", not "1 groups" (neurons alike).
            func count(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }
            Console.error(String(format: "wrote %@: %d-byte bundles of %@ (%d bytes each), %@ per layer, in %.1f s",
                                 out, layout.bundleBytes, count(layout.groupNeurons, "neuron"), layout.neuronBytes,
                                 count(layout.groupsPerLayer, "group"), seconds))
        }
    }
}

/// A one-line progress bar on stderr (only when stderr is a terminal).
final class ProgressBar {
    let label: String
    let enabled = isatty(2) != 0
    private var shown = -1

    init(label: String) { self.label = label }

    func update(_ fraction: Double) {
        guard enabled else { return }
        let percent = Int(fraction * 100)
        guard percent != shown else { return }
        shown = percent
        let width = 30, filled = width * percent / 100
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(percent)%".utf8))
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

/// Runs `cleanup` when SIGINT, SIGTERM or SIGHUP arrives, then dies of that signal as it would have (a signal the
/// process was started ignoring stays ignored).
final class OnTerminatingSignal {
    private var sources: [(signal: Int32, source: DispatchSourceSignal)] = []

    init(cleanup: @escaping @Sendable () -> Void) {
        for s in [SIGINT, SIGTERM, SIGHUP] {
            let previous = signal(s, SIG_IGN)
            guard previous.map({ unsafeBitCast($0, to: Int.self) }) != 1 else { continue }   // SIG_IGN
            let source = DispatchSource.makeSignalSource(signal: s, queue: .global())
            source.setEventHandler {
                cleanup()
                // Dispatch's threads block signals: unblocked here, the default action ends the process.
                signal(s, SIG_DFL)
                var set = sigset_t()
                sigemptyset(&set)
                sigaddset(&set, s)
                pthread_sigmask(SIG_UNBLOCK, &set, nil)
                raise(s)
                _exit(128 + s)
            }
            source.resume()
            sources.append((s, source))
        }
    }

    func cancel() {
        for (s, source) in sources {
            source.cancel()
            signal(s, SIG_DFL)
        }
        sources = []
    }
}
