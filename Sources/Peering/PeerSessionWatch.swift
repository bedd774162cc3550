import Foundation
import Synchronization
import XMPP

/// Whether peer brokers' XMPP sessions are up, from the presence this broker receives (directly
/// from a peer's full JID, or from an exchange room that shows real JIDs). Migration requests use
/// it so that a peer killed while it handles a request costs the source seconds, not the request
/// timeout: the request fails as soon as the session it went to ends, and a request to a peer whose
/// session is known to have ended waits for it to be available again before it is sent.
///
/// Only transitions seen by this process count: a peer never heard of is taken as up (the server
/// answers an IQ to a session that does not exist with an error at once anyway).
public final class PeerSessionWatch: Sendable {
    private struct Waiter {
        var jid: String
        var available: Bool
        var continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        /// Full JID → whether its last presence said available.
        var available: [String: Bool] = [:]
        var waiters: [UUID: Waiter] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Watches `client`'s incoming presence for as long as the client runs.
    @discardableResult
    public func observe(_ client: XMPPClient) -> UUID {
        client.observe { [weak self] event in
            guard case .stanza(let stanza) = event, let (jid, available) = Self.session(in: stanza) else { return }
            self?.record(jid, available: available)
        }
    }

    /// The full JID a presence is about and whether it says available; nil for anything else
    /// (subscriptions, errors, our own room presence, an anonymous room occupant).
    static func session(in stanza: Stanza) -> (String, Bool)? {
        guard stanza.kind == .presence else { return nil }
        if let occupant = MultiUserChat.occupantPresence(stanza) {
            guard !occupant.isSelf, let real = occupant.realJID, !real.isBare else { return nil }
            return (real.description, occupant.available)
        }
        guard let from = stanza.from, !from.isBare else { return nil }
        switch stanza.type {
        case nil: return (from.description, true)
        case "unavailable": return (from.description, false)
        default: return nil
        }
    }

    public func record(_ jid: String, available: Bool) {
        let woken: [CheckedContinuation<Void, Never>] = state.withLock { state in
            state.available[jid] = available
            let matching = state.waiters.filter { $0.value.jid == jid && $0.value.available == available }
            for id in matching.keys { state.waiters[id] = nil }
            return matching.values.map(\.continuation)
        }
        for continuation in woken { continuation.resume() }
    }

    /// Whether the last presence from `jid` said its session ended.
    public func isGone(_ jid: String) -> Bool { state.withLock { $0.available[jid] == false } }

    /// Returns once presence from `jid` says `available` (at once when waiting for available and it
    /// is), or when the task is cancelled. Waiting for unavailable needs a new presence: a session
    /// already gone when the wait starts is the server's to report, as an IQ error.
    public func wait(for jid: String, available: Bool) async {
        let id = UUID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    // Checked under the lock the cancellation handler takes, so a wait cancelled
                    // before it is registered is not left behind.
                    if Task.isCancelled || (available && state.available[jid] == true) { return true }
                    state.waiters[id] = Waiter(jid: jid, available: available, continuation: continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.continuation.resume()
        }
    }
}

/// A migration request whose peer's XMPP session ended before it answered (`waited` nil), or
/// had ended and did not come back within `waited` (`.zero`: not waited for).
public struct PeerSessionEnded: Error, CustomStringConvertible {
    public var peer: String
    public var waited: Duration?

    public init(peer: String, waited: Duration?) {
        self.peer = peer
        self.waited = waited
    }

    public var description: String {
        if waited == .zero { return "\(peer) is offline (its session ended)" }
        if let waited { return "\(peer) is offline (its session ended) and did not come back within \(waited)" }
        return "\(peer) went offline (its session ended) before it answered"
    }
}
