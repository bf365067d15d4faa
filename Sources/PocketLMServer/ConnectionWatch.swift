import NIOCore
import PocketLM
import Synchronization

/// Cancels the generations still in flight on a connection when the client closes it.
///
/// NIO cannot remove a `closeFuture` callback, so one callback per request stayed registered — holding that
/// request's event stream — until the connection closed: a keep-alive client's connection grew by ~0.5 KB per
/// completion. Here each open connection has one callback and a table of its requests in flight, which a request
/// leaves when it ends.
final class ConnectionWatch: Sendable {
    private struct State {
        var next: UInt64 = 0
        var connections: [ObjectIdentifier: [UInt64: GenerationHandle]] = [:]
    }
    private let state = Mutex(State())

    /// Cancels `handle` if `channel` closes before `end` is called with the returned ticket.
    func watch(_ handle: GenerationHandle, on channel: any Channel) -> UInt64 {
        let key = ObjectIdentifier(channel)
        let (ticket, first) = state.withLock { s in
            s.next += 1
            let first = s.connections[key] == nil
            s.connections[key, default: [:]][s.next] = handle
            return (s.next, first)
        }
        // Registered once per connection (again after it has closed, when the callback runs at once).
        if first {
            channel.closeFuture.whenComplete { [self] _ in
                let open = state.withLock { $0.connections.removeValue(forKey: key) } ?? [:]
                for handle in open.values { handle.cancel() }
            }
        }
        return ticket
    }

    /// The request of `ticket` has ended: its connection's closing no longer concerns it.
    func end(_ ticket: UInt64, on channel: any Channel) {
        state.withLock { _ = $0.connections[ObjectIdentifier(channel)]?.removeValue(forKey: ticket) }
    }
}
