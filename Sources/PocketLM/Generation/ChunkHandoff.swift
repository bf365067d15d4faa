import Dispatch
import Synchronization

/// Hands chunks from a producer running on its own thread (a chat turn on the model's executor) to an async
/// consumer one at a time, with backpressure: `send` returns only once the consumer has taken the chunk (or asked
/// for it before it existed), so the producer never runs more than one chunk ahead of what has been read.
/// `cancel()` — the consumer has gone — makes the pending and every later `send` return false at once.
final class ChunkHandoff<Element: Sendable>: Sendable {
    private struct State {
        var pending: Element?
        var consumer: CheckedContinuation<Element?, any Error>?
        var end: Result<Void, any Error>?
        var cancelled = false
    }

    private let state = Mutex(State())
    /// Signalled when the pending element is taken or dropped by `cancel()`.
    private let taken = DispatchSemaphore(value: 0)

    /// Producer side (blocks its thread): delivers `element`; false when the consumer has gone.
    func send(_ element: Element) -> Bool {
        let outcome: HandoffSend<Element> = state.withLock { s in
            if s.cancelled { return .gone }
            if let c = s.consumer {
                s.consumer = nil
                return .delivered(c)
            }
            s.pending = element
            return .parked
        }
        switch outcome {
        case .gone: return false
        case .delivered(let c):
            c.resume(returning: element)
            return true
        case .parked:
            taken.wait()
            return !state.withLock { $0.cancelled }
        }
    }

    /// Producer side: no more elements; the consumer's next call returns nil (or throws `error`).
    func finish(throwing error: (any Error)? = nil) {
        let waiting = state.withLock { s -> CheckedContinuation<Element?, any Error>? in
            s.end = error.map { .failure($0) } ?? .success(())
            defer { s.consumer = nil }
            return s.consumer
        }
        if let waiting {
            if let error { waiting.resume(throwing: error) } else { waiting.resume(returning: nil) }
        }
    }

    /// Consumer side: the next element, or nil at the end. Cancelling the calling task cancels the handoff.
    func next() async throws -> Element? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Element?, any Error>) in
                let action: HandoffReceive<Element> = state.withLock { s in
                    if let e = s.pending {
                        s.pending = nil
                        return .take(e)
                    }
                    if let end = s.end { return .end(end) }
                    if s.cancelled { return .end(nil) }
                    s.consumer = c
                    return .wait
                }
                switch action {
                case .take(let e):
                    taken.signal()
                    c.resume(returning: e)
                case .end(let end):
                    if case .failure(let error)? = end { c.resume(throwing: error) } else { c.resume(returning: nil) }
                case .wait: break
                }
            }
        } onCancel: {
            cancel()
        }
    }

    /// The consumer has gone: the producer's pending and later `send`s return false.
    func cancel() {
        let (hadPending, waiting) = state.withLock { s -> (Bool, CheckedContinuation<Element?, any Error>?) in
            s.cancelled = true
            let had = s.pending != nil
            s.pending = nil
            defer { s.consumer = nil }
            return (had, s.consumer)
        }
        if hadPending { taken.signal() }
        waiting?.resume(returning: nil)
    }
}

private enum HandoffSend<Element: Sendable> {
    case gone, delivered(CheckedContinuation<Element?, any Error>), parked
}

private enum HandoffReceive<Element: Sendable> {
    case take(Element), end(Result<Void, any Error>?), wait
}

/// Runs `action` when the last reference goes: a stream's closure holds one, so dropping the stream (leaving a
/// `for await` loop early) cancels what feeds it.
final class DeinitAction: Sendable {
    private let action: @Sendable () -> Void
    init(_ action: @escaping @Sendable () -> Void) { self.action = action }
    deinit { action() }
}
