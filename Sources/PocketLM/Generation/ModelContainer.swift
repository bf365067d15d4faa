import Dispatch
import Synchronization

/// A loaded model that any number of tasks can share.
///
/// A `LanguageModel` has one KV cache and scratch buffers that every forward pass writes, so two tasks must
/// never run it at once. The container owns the model and runs work on it one task at a time, in arrival
/// order, under an async mutex held for the whole of the work — across its suspension points too, which an
/// actor would not guarantee. Tasks waiting their turn are suspended, not blocking a thread, and a task
/// cancelled while it waits leaves the queue with `CancellationError`.
///
/// ```swift
/// let container = try ModelContainer(path: "SmolLM2-135M-Instruct.Q4_1.gguf")
/// let session = ChatSession(container)
/// print(try await session.respond(to: "What is the capital of France?"))
/// ```
///
/// The work runs on the container's own thread (a task executor preference), not on Swift's cooperative thread
/// pool: a forward pass blocks its thread for milliseconds to seconds, and the pool has only as many threads as
/// cores. Other tasks (a stream's consumer, a server's connections) keep running meanwhile.
///
/// The container also remembers which tokens its KV cache holds, so `ChatSession`s reuse the longest prefix of
/// their prompt already computed — their own previous turns, or a system prompt another session shares.
public final class ModelContainer: Sendable {
    /// Touched only while `lock` is held.
    nonisolated(unsafe) private let model: LanguageModel
    /// The tokens the model's KV cache holds, in order (position i holds token i); touched only under `lock`.
    nonisolated(unsafe) private var cachedTokens: [Int] = []
    private let lock = AsyncMutex()
    private let executor = SerialThreadExecutor(label: "PocketLM.ModelContainer")

    /// The model's tokenizer (immutable, safe to use from any task).
    public let tokenizer: any Tokenizer
    /// Tokens the model's context holds.
    public let contextLength: Int

    /// Takes ownership of `model`: from now on it is used only through `perform`.
    public init(model: sending LanguageModel) {
        self.model = model
        tokenizer = model.tokenizer
        contextLength = model.transformer.contextLength
    }

    /// Loads the model at `path` (see `LanguageModel.init(path:options:)`).
    public convenience init(path: String, options: LoadOptions = .init()) throws {
        self.init(model: try LanguageModel(path: path, options: options))
    }

    /// Runs `body` with exclusive use of the model and returns its result. Other callers wait until it returns.
    ///
    /// `body` may do anything with the model, including generating from a fresh context, so afterwards the
    /// container no longer assumes anything about the KV cache's contents (the next chat turn re-feeds its
    /// prompt). Throws `CancellationError` if the calling task is cancelled while waiting for its turn.
    public func perform<R: Sendable>(_ body: @Sendable (LanguageModel) async throws -> R) async throws -> R {
        try await lock.lock()
        defer {
            cachedTokens = []
            lock.unlock()
        }
        return try await withTaskExecutorPreference(executor) { try await body(model) }
    }

    /// Runs `body` with exclusive use of the model and the record of the tokens its KV cache holds, which `body`
    /// must keep true.
    func withCache<R>(_ body: (LanguageModel, inout [Int]) async throws -> R) async throws -> R {
        try await lock.lock()
        defer { lock.unlock() }
        return try await withTaskExecutorPreference(executor) { try await body(model, &cachedTokens) }
    }

    /// Calls `action` once, as soon as another caller waits for the model (at once if one already does), unless
    /// the current holder releases it first. Only the holder calls this, from inside `withCache`.
    func whenContended(_ action: @escaping @Sendable () -> Void) {
        lock.whenContended(action)
    }
}

/// Runs jobs one at a time on a dispatch queue, off the cooperative pool.
final class SerialThreadExecutor: TaskExecutor {
    private let queue: DispatchQueue

    init(label: String) {
        queue = DispatchQueue(label: label)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }
}

/// A first-in, first-out lock for async code, held across suspension points. Waiters are suspended (no thread
/// blocks); a waiter whose task is cancelled leaves the queue and gets `CancellationError`.
final class AsyncMutex: Sendable {
    private struct State {
        var locked = false
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        var nextId: UInt64 = 0
        /// The holder's request to hear of the first waiter (`whenContended`).
        var onContention: (@Sendable () -> Void)?
    }

    private let state = Mutex(State())

    func lock() async throws {
        let id: UInt64? = state.withLock { s in
            if !s.locked {
                s.locked = true
                return nil
            }
            s.nextId += 1
            return s.nextId
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                // The lock may have been released, or the task cancelled, since the first look.
                var contended: (@Sendable () -> Void)?
                let outcome: Bool? = state.withLock { s in
                    if !s.locked {
                        s.locked = true
                        return true
                    }
                    if Task.isCancelled { return false }
                    s.waiters.append((id, c))
                    contended = s.onContention
                    s.onContention = nil
                    return nil
                }
                contended?()
                switch outcome {
                case true?: c.resume()
                case false?: c.resume(throwing: CancellationError())
                case nil: break
                }
            }
        } onCancel: {
            let waiter = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return s.waiters.remove(at: i).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// While the lock is held: calls `action` once when a caller starts waiting, or at once if one already waits.
    /// Forgotten when the lock changes hands.
    func whenContended(_ action: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if !s.waiters.isEmpty { return true }
            s.onContention = action
            return false
        }
        if now { action() }
    }

    /// Hands the lock to the longest waiter, or releases it.
    func unlock() {
        let next = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            s.onContention = nil
            guard !s.waiters.isEmpty else {
                s.locked = false
                return nil
            }
            return s.waiters.removeFirst().continuation
        }
        next?.resume()
    }
}
