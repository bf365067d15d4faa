import Dispatch
import Synchronization

/// Hands chunks from a producer running on its own thread (a chat turn on the model's executor) to an async
/// consumer, with backpressure: `send` returns only once the consumer has taken the chunk (or asked for it
/// before it existed), so the producer never runs more than one chunk ahead of what has been read — until
/// `stopWaiting()`, after which chunks queue for the consumer and `send` never blocks. `cancel()` — the consumer
/// has gone — makes the pending and every later `send` return false at once.
final class ChunkHandoff<Element: Sendable>: Sendable {
    private struct State {
        /// Chunks not yet taken: at most one while the producer waits for the reader.
        var pending: [Element] = []
        var consumer: CheckedContinuation<Element?, any Error>?
        var end: Result<Void, any Error>?
        var cancelled = false
        var waitsForReader = true
        /// The producer is blocked on `taken`.
        var parked = false
    }

    private let state = Mutex(State())
    /// Signalled when the parked producer may go on: its chunk was taken, dropped by `cancel()`, or queued by
    /// `stopWaiting()`.
    private let taken = DispatchSemaphore(value: 0)

    /// Producer side (blocks its thread until the chunk is taken, unless `stopWaiting()` was called): delivers
    /// `element`; false when the consumer has gone.
    func send(_ element: Element) -> Bool {
        let outcome: HandoffSend<Element> = state.withLock { s in
            if s.cancelled { return .gone }
            if let c = s.consumer {
                s.consumer = nil
                return .delivered(c)
            }
            s.pending.append(element)
            guard s.waitsForReader else { return .queued }
            s.parked = true
            return .parked
        }
        switch outcome {
        case .gone: return false
        case .delivered(let c):
            c.resume(returning: element)
            return true
        case .queued: return true
        case .parked:
            taken.wait()
            return !state.withLock { $0.cancelled }
        }
    }

    /// Producer side: no more elements; the consumer's next call returns nil (or throws `error`) once it has
    /// taken the queued ones.
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

    /// The producer stops waiting for the reader: a parked `send` returns (its chunk stays queued), and later
    /// ones queue their chunks without blocking.
    func stopWaiting() {
        let wake = state.withLock { s -> Bool in
            s.waitsForReader = false
            defer { s.parked = false }
            return s.parked
        }
        if wake { taken.signal() }
    }

    /// Consumer side: the next element, or nil at the end. Cancelling the calling task cancels the handoff.
    func next() async throws -> Element? {
        try await withTaskCancellationHandler {
            try await receive()
        } onCancel: {
            cancel()
        }
    }

    /// Consumer side, for a reader that stays to the end: the next element, or nil at the end. Cancelling the
    /// calling task does not end the handoff — the producer is expected to notice the cancellation itself, send
    /// what it still has and finish, so the reader gets everything the producer counted as delivered.
    func nextUntilFinished() async throws -> Element? {
        try await receive()
    }

    private func receive() async throws -> Element? {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Element?, any Error>) in
            let action: HandoffReceive<Element> = state.withLock { s in
                if !s.pending.isEmpty {
                    let e = s.pending.removeFirst()
                    defer { s.parked = false }
                    return .take(e, wake: s.parked)
                }
                if let end = s.end { return .end(end) }
                if s.cancelled { return .end(nil) }
                s.consumer = c
                return .wait
            }
            switch action {
            case .take(let e, let wake):
                if wake { taken.signal() }
                c.resume(returning: e)
            case .end(let end):
                if case .failure(let error)? = end { c.resume(throwing: error) } else { c.resume(returning: nil) }
            case .wait: break
            }
        }
    }

    /// The consumer has gone (`cancel()`): nothing sent from now on is delivered.
    var isCancelled: Bool { state.withLock { $0.cancelled } }

    /// The consumer has gone: the producer's pending and later `send`s return false.
    func cancel() {
        let (wake, waiting) = state.withLock { s -> (Bool, CheckedContinuation<Element?, any Error>?) in
            s.cancelled = true
            s.pending = []
            defer {
                s.consumer = nil
                s.parked = false
            }
            return (s.parked, s.consumer)
        }
        if wake { taken.signal() }
        waiting?.resume(returning: nil)
    }
}

private enum HandoffSend<Element: Sendable> {
    case gone, delivered(CheckedContinuation<Element?, any Error>), queued, parked
}

private enum HandoffReceive<Element: Sendable> {
    case take(Element, wake: Bool), end(Result<Void, any Error>?), wait
}

/// Runs `action` when the last reference goes: a stream's closure holds one, so dropping the stream (leaving a
/// `for await` loop early) cancels what feeds it.
final class DeinitAction: Sendable {
    private let action: @Sendable () -> Void
    init(_ action: @escaping @Sendable () -> Void) { self.action = action }
    deinit { action() }
}
