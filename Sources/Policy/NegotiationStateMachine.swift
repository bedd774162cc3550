import Foundation

/// One side of a contract negotiation (`urn:intercloud:negotiation:0`) as a value type with no IO
/// and no clock: every input is a `mutating func` that takes `now` and returns the one `Action`
/// the caller must perform (postgres-nio's `ConnectionStateMachine` pattern).
///
/// **Persistence.** Before performing any action other than `.none`, the caller stores
/// `snapshot` (SQLite, in the same transaction as anything else it records). A state is therefore
/// always on disk before the peer can learn of it, through either our message or our IQ result.
///
/// **Transitions.** A side that sends a message keeps its state until the peer's IQ result
/// (`acknowledged`) arrives; the receiver moves as soon as the message is valid, and acknowledges
/// after storing. A message that is not valid for the current state and the sender's role
/// terminates the negotiation with a reason (and notifies the peer); a message for another
/// negotiation is only refused, since it says nothing about this one.
///
/// **Resume rule** (`init(resuming:)` then `resume(now:)`), which keeps both sides consistent after a restart:
/// 1. FINALIZED and TERMINATED stay as they are.
/// 2. A message stored as pending (sent or about to be sent, not acknowledged) is sent again
///    with the same message ID if attempts remain. The peer either has not applied it and applies
///    it now, or has and acknowledges the duplicate: both sides reach the message's target state.
///    With no attempts left, the side terminates and notifies the peer.
/// 3. With nothing pending, the side waits in its stored state if its step deadline
///    (`stateEnteredAt + decisionTimeout`) has not passed: if our IQ result was lost in the crash,
///    the peer retransmits and we acknowledge the duplicate. Past the deadline it terminates and
///    notifies, because the peer's own timers will have terminated it (or soon will).
/// So a restart at any state ends, on both sides, in the same state, or in TERMINATED: the side
/// that gives up tells the other, and a side that does not hear it terminates on its own timers.
public struct NegotiationStateMachine: Sendable {
    public struct Configuration: Codable, Sendable, Hashable {
        /// How long to wait for the IQ result of one attempt.
        public var stepTimeout: TimeInterval
        /// Attempts per message, including the first.
        public var maxAttempts: Int
        /// How long a state may last without either side moving it on.
        public var decisionTimeout: TimeInterval
        /// Requests plus offers allowed in one negotiation, to stop endless counter-offers.
        public var maxRounds: Int

        public init(stepTimeout: TimeInterval = 5, maxAttempts: Int = 3, decisionTimeout: TimeInterval = 60, maxRounds: Int = 8) {
            self.stepTimeout = stepTimeout
            self.maxAttempts = maxAttempts
            self.decisionTimeout = decisionTimeout
            self.maxRounds = maxRounds
        }
    }

    /// A message sent (or about to be) and not yet acknowledged.
    public struct Pending: Codable, Sendable, Hashable {
        public var message: NegotiationMessage
        public var attempts: Int
        public var deadline: Date
    }

    /// Everything the machine knows; storing and restoring it loses nothing.
    public struct Snapshot: Codable, Sendable, Hashable {
        public var negotiationID: String
        public var role: NegotiationRole
        /// Bare JIDs; the agreement must name these.
        public var local: String
        public var peer: String
        public var configuration: Configuration
        public var state: NegotiationState
        public var stateEnteredAt: Date
        /// The terms on the table: the last acknowledged request or offer.
        public var terms: Terms?
        public var agreement: Agreement?
        public var pending: Pending?
        public var lastReceivedMessageID: String?
        /// Messages sent so far, for unique message IDs.
        public var sent: Int
        /// Requests and offers exchanged so far.
        public var rounds: Int
        public var terminationReason: String?
    }

    /// The one side effect the caller performs (after storing `snapshot`).
    public enum Action: Sendable, Hashable {
        case none
        /// Send the message as an IQ set; report its IQ result to `acknowledged`, an IQ error to
        /// `peerRefused`, and call `tick` at `nextDeadline`.
        case send(NegotiationMessage)
        /// Answer the received message with an IQ result.
        case acknowledge(messageID: String)
        /// State advanced after an acknowledgement; nothing to send.
        case persist
        /// Answer the received message with an IQ error; this negotiation is unchanged.
        case refuse(messageID: String, reason: String)
        /// The negotiation is over. Send `notify` (best effort: no retries; the peer's own
        /// timers cover a lost notice) and answer `refusing` with an IQ error if set.
        case terminated(reason: String, notify: NegotiationMessage?, refusing: String?)
    }

    public private(set) var snapshot: Snapshot

    public var state: NegotiationState { snapshot.state }
    public var role: NegotiationRole { snapshot.role }
    public var terms: Terms? { snapshot.terms }
    public var agreement: Agreement? { snapshot.agreement }
    public var terminationReason: String? { snapshot.terminationReason }
    public var pending: Pending? { snapshot.pending }

    /// When the caller must call `tick` next, or nil when the negotiation is over.
    public var nextDeadline: Date? {
        if snapshot.state.isFinal { return nil }
        if let pending = snapshot.pending { return pending.deadline }
        return snapshot.stateEnteredAt.addingTimeInterval(snapshot.configuration.decisionTimeout)
    }

    public init(negotiationID: String, role: NegotiationRole, local: String, peer: String, configuration: Configuration = .init(), now: Date) {
        snapshot = Snapshot(
            negotiationID: negotiationID, role: role, local: local, peer: peer, configuration: configuration,
            state: .initial, stateEnteredAt: now, terms: nil, agreement: nil, pending: nil,
            lastReceivedMessageID: nil, sent: 0, rounds: 0, terminationReason: nil)
    }

    /// Restores a stored machine; call `resume(now:)` next and perform its action.
    public init(resuming stored: Snapshot) {
        snapshot = stored
    }

    /// Applies the resume rule (see the type's documentation) after `init(resuming:)`.
    public mutating func resume(now: Date) -> Action {
        if snapshot.state.isFinal { return .none }
        if var pending = snapshot.pending {
            guard pending.attempts < snapshot.configuration.maxAttempts else {
                return terminate(reason: "restarted with \(pending.message.kind) unacknowledged after \(pending.attempts) attempts", now: now)
            }
            pending.attempts += 1
            pending.deadline = now.addingTimeInterval(snapshot.configuration.stepTimeout)
            snapshot.pending = pending
            return .send(pending.message)
        }
        if let deadline = nextDeadline, now >= deadline {
            return terminate(reason: "restarted after the \(snapshot.state.rawValue) deadline", now: now)
        }
        return .none
    }

    // MARK: local decisions (the broker's policy engine decides; the machine checks the protocol)

    /// Consumer: first request, or a counter to the provider's offer.
    public mutating func request(_ terms: Terms, now: Date) throws(NegotiationError) -> Action {
        try propose(.request(terms), now: now)
    }

    /// Provider: first offer, or a counter to the consumer's request.
    public mutating func offer(_ terms: Terms, now: Date) throws(NegotiationError) -> Action {
        try propose(.offer(terms), now: now)
    }

    /// Consumer: accept the terms on the table.
    public mutating func accept(now: Date) throws(NegotiationError) -> Action {
        try propose(.accept, now: now)
    }

    /// Provider: conclude an agreement over the terms on the table.
    public mutating func agree(agreementID: String, now: Date) throws(NegotiationError) -> Action {
        guard let terms = snapshot.terms else { throw NegotiationError("no terms on the table to agree on") }
        let agreement = Agreement(
            id: agreementID, negotiationID: snapshot.negotiationID, consumer: snapshot.peer, provider: snapshot.local,
            terms: terms, createdAt: Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down)))
        return try propose(.agreement(agreement), now: now)
    }

    /// Consumer: the agreement has been checked.
    public mutating func verify(now: Date) throws(NegotiationError) -> Action {
        try propose(.verify, now: now)
    }

    /// Provider: the agreement is in force.
    public mutating func finalize(now: Date) throws(NegotiationError) -> Action {
        try propose(.finalize, now: now)
    }

    /// Either side ends the negotiation at once. It does not wait for the peer's IQ result:
    /// ending must not depend on a peer that may be unreachable.
    public mutating func terminate(reason: String, now: Date) -> Action {
        terminate(reason: reason, now: now, refusing: nil)
    }

    private mutating func propose(_ body: NegotiationMessage.Body, now: Date) throws(NegotiationError) -> Action {
        let message = NegotiationMessage(
            negotiationID: snapshot.negotiationID, messageID: nextMessageID(), inReplyTo: snapshot.lastReceivedMessageID, body: body)
        if snapshot.state.isFinal { throw NegotiationError("negotiation is \(snapshot.state.rawValue)") }
        if let pending = snapshot.pending { throw NegotiationError("waiting for the result of \(pending.message.kind)") }
        guard message.sender == snapshot.role else { throw NegotiationError("a \(snapshot.role.rawValue) cannot send \(message.kind)") }
        guard message.allowedFrom.contains(snapshot.state) else {
            throw NegotiationError("cannot send \(message.kind) in state \(snapshot.state.rawValue)")
        }
        if message.target == .requested || message.target == .offered, snapshot.rounds >= snapshot.configuration.maxRounds {
            throw NegotiationError("no more than \(snapshot.configuration.maxRounds) requests and offers")
        }
        snapshot.sent += 1
        snapshot.pending = Pending(message: message, attempts: 1, deadline: now.addingTimeInterval(snapshot.configuration.stepTimeout))
        return .send(message)
    }

    private func nextMessageID() -> String {
        "\(snapshot.negotiationID)/\(snapshot.role.rawValue)/\(snapshot.sent + 1)"
    }

    // MARK: events from the peer and the clock

    /// The peer's IQ result for `messageID`: the state moves to the message's target.
    public mutating func acknowledged(messageID: String, now: Date) -> Action {
        guard !snapshot.state.isFinal, let pending = snapshot.pending, pending.message.messageID == messageID else {
            return .none  // the result of an earlier attempt, already counted
        }
        apply(pending.message, now: now)
        snapshot.pending = nil
        return .persist
    }

    /// The peer answered `messageID` with an IQ error: it will not move, so neither can we.
    public mutating func peerRefused(messageID: String, reason: String, now: Date) -> Action {
        guard !snapshot.state.isFinal, let pending = snapshot.pending, pending.message.messageID == messageID else { return .none }
        return terminate(reason: "peer refused \(pending.message.kind): \(reason)", now: now)
    }

    /// A message from the peer (an IQ set).
    public mutating func received(_ message: NegotiationMessage, now: Date) -> Action {
        guard message.negotiationID == snapshot.negotiationID else {
            return .refuse(messageID: message.messageID, reason: "unknown negotiation \(message.negotiationID)")
        }
        if message.messageID == snapshot.lastReceivedMessageID {
            return .acknowledge(messageID: message.messageID)  // a retransmission: our result was lost
        }
        if case .terminate(let reason) = message.body {
            if snapshot.state == .terminated { return .acknowledge(messageID: message.messageID) }
            if snapshot.state == .finalized {
                return .refuse(messageID: message.messageID, reason: "negotiation is FINALIZED")
            }
            snapshot.lastReceivedMessageID = message.messageID
            finish(.terminated, reason: "peer terminated: \(reason)", now: now)
            return .acknowledge(messageID: message.messageID)
        }
        if snapshot.state.isFinal {
            return .refuse(messageID: message.messageID, reason: "negotiation is \(snapshot.state.rawValue)")
        }
        // A reply to our pending message proves the peer applied it even if its result was lost.
        // Anything else while we wait (e.g. both sides opening at once) is a crossing.
        if let pending = snapshot.pending, message.inReplyTo == pending.message.messageID {
            apply(pending.message, now: now)
            snapshot.pending = nil
        }
        if let pending = snapshot.pending {
            return terminate(reason: "received \(message.kind) while waiting for the result of \(pending.message.kind)", now: now, refusing: message.messageID)
        }
        guard message.sender == snapshot.role.peer else {
            return terminate(reason: "a \(snapshot.role.peer.rawValue) cannot send \(message.kind)", now: now, refusing: message.messageID)
        }
        guard message.allowedFrom.contains(snapshot.state) else {
            return terminate(reason: "unexpected \(message.kind) in state \(snapshot.state.rawValue)", now: now, refusing: message.messageID)
        }
        if message.target == .requested || message.target == .offered, snapshot.rounds >= snapshot.configuration.maxRounds {
            return terminate(reason: "more than \(snapshot.configuration.maxRounds) requests and offers", now: now, refusing: message.messageID)
        }
        if case .agreement(let agreement) = message.body, let problem = mismatch(agreement) {
            return terminate(reason: "agreement does not match: \(problem)", now: now, refusing: message.messageID)
        }
        snapshot.lastReceivedMessageID = message.messageID
        apply(message, now: now)
        return .acknowledge(messageID: message.messageID)
    }

    /// Call at `nextDeadline`: retries an unacknowledged message or gives up.
    public mutating func tick(now: Date) -> Action {
        guard let deadline = nextDeadline, now >= deadline else { return .none }
        if var pending = snapshot.pending {
            guard pending.attempts < snapshot.configuration.maxAttempts else {
                return terminate(reason: "no result for \(pending.message.kind) after \(pending.attempts) attempts", now: now)
            }
            pending.attempts += 1
            pending.deadline = now.addingTimeInterval(snapshot.configuration.stepTimeout)
            snapshot.pending = pending
            return .send(pending.message)
        }
        return terminate(reason: "no progress in \(snapshot.state.rawValue) for \(Int(snapshot.configuration.decisionTimeout)) s", now: now)
    }

    // MARK: internals

    private mutating func apply(_ message: NegotiationMessage, now: Date) {
        switch message.body {
        case .request(let terms), .offer(let terms):
            snapshot.terms = terms
            snapshot.rounds += 1
        case .agreement(let agreement):
            snapshot.agreement = agreement
        case .accept, .verify, .finalize, .terminate:
            break
        }
        snapshot.state = message.target
        snapshot.stateEnteredAt = now
    }

    /// The agreement must be over exactly the terms on the table, between exactly these parties.
    private func mismatch(_ agreement: Agreement) -> String? {
        if agreement.negotiationID != snapshot.negotiationID { return "negotiation \(agreement.negotiationID)" }
        let (consumer, provider) = snapshot.role == .consumer ? (snapshot.local, snapshot.peer) : (snapshot.peer, snapshot.local)
        if agreement.consumer != consumer || agreement.provider != provider {
            return "parties \(agreement.consumer), \(agreement.provider)"
        }
        if agreement.terms != snapshot.terms { return "terms differ from those on the table" }
        return nil
    }

    private mutating func finish(_ state: NegotiationState, reason: String?, now: Date) {
        snapshot.state = state
        snapshot.stateEnteredAt = now
        snapshot.pending = nil
        snapshot.terminationReason = reason
    }

    private mutating func terminate(reason: String, now: Date, refusing: String?) -> Action {
        if snapshot.state.isFinal { return .none }
        let notice = NegotiationMessage(negotiationID: snapshot.negotiationID, messageID: nextMessageID(), body: .terminate(reason: reason))
        snapshot.sent += 1
        finish(.terminated, reason: reason, now: now)
        return .terminated(reason: reason, notify: notice, refusing: refusing)
    }
}

/// A local call the protocol does not allow (wrong role, wrong state, already waiting). The
/// machine is unchanged; this is a bug or a race in the caller, not a reason to terminate.
public struct NegotiationError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
