import Foundation

/// Runs `work` on a thread of its own, at once; `wait()` returns its result (or throws its error), waiting for it
/// to finish if it has not. Lets load-time work that does not depend on the weights (the tokenizer) overlap
/// with loading them.
final class BackgroundResult<Value>: @unchecked Sendable {
    private var result: Result<Value, any Error>?
    private let done = DispatchSemaphore(value: 0)
    private var finished = false

    init(_ work: @escaping @Sendable () throws -> Value) {
        let thread = Thread { [self] in
            result = Result { try work() }
            done.signal()
        }
        thread.name = "pocketlm-background"
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// The work's value; the first call waits for the thread. Call it from one thread only.
    func wait() throws -> Value {
        if !finished {
            done.wait()
            finished = true
        }
        return try result!.get()
    }
}
