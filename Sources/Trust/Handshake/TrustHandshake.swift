import Foundation
import X509

/// The mutual trust handshake as a value-type state machine: no IO, no clock, no randomness inside
/// (nonce and times are passed in). Each input returns the one `Action` the orchestrator performs.
///
/// Chain verification is asynchronous in swift-certificates, so it is an action too: the machine
/// asks for `.verifyChain`, the orchestrator runs `PeerVerifier` and feeds the result back through
/// `chainVerified(_:now:)`. The peer becomes trusted (`.trust`) only after *both* sides proved
/// possession: the initiator after the responder's `ok` (which the responder sends only after
/// checking the initiator's signature), the responder after checking the initiator's `finish`.
public struct TrustHandshake: Sendable {
    public typealias Role = TrustTranscript.Role

    public enum State: Sendable, Hashable {
        case idle
        /// Initiator: hello sent.
        case awaitingResult
        /// Initiator: result received, its chain is being verified.
        case verifyingResponder(TrustMessage.Result)
        /// Initiator: finish sent, responder proved possession.
        case awaitingOk(VerifiedPeer)
        /// Responder: hello received, its chain is being verified.
        case verifyingInitiator(TrustMessage.Hello)
        /// Responder: result sent.
        case awaitingFinish(VerifiedPeer, initiatorNonce: [UInt8])
        case trusted(VerifiedPeer)
        case refused(TrustRefusal)
    }

    public enum Action: Sendable, Hashable {
        /// Send this message: initiator as an IQ set, responder as the IQ result of the request.
        case send(TrustMessage)
        /// Verify the peer's chain (`PeerVerifier.verify(chain:peerJID:at:)`) and call `chainVerified`.
        case verifyChain([Certificate], peerJID: String, at: Date)
        /// Both sides proved possession: pin the peer and audit. A responder also sends `reply`.
        case trust(VerifiedPeer, reply: TrustMessage?)
        /// The handshake is over without trust: audit, store nothing. Send `reply` if present (a
        /// responder as IQ error; an initiator may notify the peer with an IQ set).
        case refuse(TrustRefusal, reply: TrustMessage?)
        /// Nothing to do (e.g. the peer acknowledged our refusal).
        case none
    }

    public let role: Role
    public let myJID: String
    public let peerJID: String
    public let identity: BrokerIdentity
    public let nonce: [UInt8]
    public let deadline: Date
    public internal(set) var state: State = .idle

    /// - Parameters:
    ///   - myJID / peerJID: the bare JIDs as routed by the XMPP server (never taken from payloads).
    ///   - nonce: fresh random bytes (16–64), from `TrustHandshake.makeNonce()` in production.
    ///   - now / timeout: inputs after `now + timeout` are refused with `.timeout`.
    public init(
        role: Role, myJID: String, peerJID: String, identity: BrokerIdentity, now: Date,
        nonce: [UInt8] = TrustHandshake.makeNonce(), timeout: TimeInterval = 30
    ) {
        self.role = role
        self.myJID = XmppAddr.bare(myJID)
        self.peerJID = XmppAddr.bare(peerJID)
        self.identity = identity
        self.nonce = nonce
        self.deadline = now + timeout
    }

    public static func makeNonce() -> [UInt8] { EnvelopeNonce.randomBytes(32) }

    public var isFinished: Bool {
        switch state {
        case .trusted, .refused: true
        default: false
        }
    }

    /// Initiator only: the hello to send.
    public mutating func start(now: Date) -> Action {
        guard role == .initiator, case .idle = state else {
            return refuse(.unexpectedMessage, "start on a \(role.rawValue) in \(state)", notify: false)
        }
        state = .awaitingResult
        return .send(.hello(.init(chain: identity.chain, nonce: nonce)))
    }

    public mutating func received(_ message: TrustMessage, now: Date) -> Action {
        if isFinished {
            // A late message after the end changes nothing; refusals are not answered.
            if case .refused = message { return .none }
            return .refuse(TrustRefusal(.unexpectedMessage, "handshake already finished"), reply: nil)
        }
        if now > deadline { return refuse(.timeout, "handshake deadline passed", notify: true) }
        switch (role, state, message) {
        case (_, _, .refused(let refused)):
            // The peer ended the handshake; nothing to answer.
            let refusal = TrustRefusal(.peerRefused, "\(refused.reason.rawValue): \(refused.detail)")
            state = .refused(refusal)
            return .refuse(refusal, reply: nil)

        case (.responder, .idle, .hello(let hello)):
            state = .verifyingInitiator(hello)
            return .verifyChain(hello.chain, peerJID: peerJID, at: now)

        case (.initiator, .awaitingResult, .result(let result)):
            guard result.echo == nonce else {
                return refuse(.replayedNonce, "result answers another handshake's nonce", notify: true)
            }
            guard result.nonce != nonce else {
                return refuse(.replayedNonce, "responder reflected our nonce", notify: true)
            }
            state = .verifyingResponder(result)
            return .verifyChain(result.chain, peerJID: peerJID, at: now)

        case (.responder, .awaitingFinish(let peer, let initiatorNonce), .finish(let finish)):
            guard finish.session == initiatorNonce else {
                return refuse(.unexpectedMessage, "finish for another handshake", notify: true)
            }
            guard finish.echo == nonce else {
                return refuse(.replayedNonce, "finish answers another handshake's nonce", notify: true)
            }
            let transcript = TrustTranscript(
                initiatorJID: peerJID, responderJID: myJID, initiatorNonce: initiatorNonce, responderNonce: nonce,
                initiatorLeaf: peer.leaf, responderLeaf: identity.leaf)
            guard SignatureScheme.isValid(
                signature: finish.signature, for: transcript.bytes(signer: .initiator), key: peer.leaf.publicKey)
            else {
                return refuse(.badSignature, "initiator's proof of possession does not verify", notify: true)
            }
            state = .trusted(peer)
            return .trust(peer, reply: .ok(.init(session: initiatorNonce)))

        case (.initiator, .awaitingOk(let peer), .ok(let ok)):
            guard ok.session == nonce else {
                return refuse(.replayedNonce, "ok for another handshake", notify: true)
            }
            state = .trusted(peer)
            return .trust(peer, reply: nil)

        default:
            return refuse(.unexpectedMessage, "\(role.rawValue) cannot accept \(message.name) in \(state.name)", notify: true)
        }
    }

    public mutating func chainVerified(_ result: Swift.Result<VerifiedPeer, TrustRefusal>, now: Date) -> Action {
        if now > deadline { return refuse(.timeout, "handshake deadline passed", notify: true) }
        switch (state, result) {
        case (.verifyingInitiator, .failure(let refusal)), (.verifyingResponder, .failure(let refusal)):
            return refuse(refusal.reason, refusal.detail, notify: true)

        case (.verifyingInitiator(let hello), .success(let peer)):
            let transcript = TrustTranscript(
                initiatorJID: peerJID, responderJID: myJID, initiatorNonce: hello.nonce, responderNonce: nonce,
                initiatorLeaf: peer.leaf, responderLeaf: identity.leaf)
            guard hello.nonce != nonce else {
                return refuse(.replayedNonce, "initiator used our nonce", notify: true)
            }
            guard let signature = try? identity.sign(transcript.bytes(signer: .responder)) else {
                return refuse(.unsupportedKey, "cannot sign with our key", notify: true)
            }
            state = .awaitingFinish(peer, initiatorNonce: hello.nonce)
            return .send(.result(.init(chain: identity.chain, nonce: nonce, echo: hello.nonce, signature: signature)))

        case (.verifyingResponder(let result), .success(let peer)):
            let transcript = TrustTranscript(
                initiatorJID: myJID, responderJID: peerJID, initiatorNonce: nonce, responderNonce: result.nonce,
                initiatorLeaf: identity.leaf, responderLeaf: peer.leaf)
            guard SignatureScheme.isValid(
                signature: result.signature, for: transcript.bytes(signer: .responder), key: peer.leaf.publicKey)
            else {
                return refuse(.badSignature, "responder's proof of possession does not verify", notify: true)
            }
            guard let signature = try? identity.sign(transcript.bytes(signer: .initiator)) else {
                return refuse(.unsupportedKey, "cannot sign with our key", notify: true)
            }
            state = .awaitingOk(peer)
            return .send(.finish(.init(session: nonce, echo: result.nonce, signature: signature)))

        default:
            return refuse(.unexpectedMessage, "chain verification result in \(state.name)", notify: false)
        }
    }

    /// The orchestrator's timer fired (or the IQ timed out).
    public mutating func timedOut(now: Date) -> Action {
        guard !isFinished else { return .none }
        return refuse(.timeout, "no answer from \(peerJID)", notify: true)
    }

    /// Ends the handshake without trust. The refusal is echoed to the peer with this handshake's
    /// session so it can end its own machine; the initiator's session id is its own nonce.
    private mutating func refuse(_ reason: TrustRefusalReason, _ detail: String, notify: Bool) -> Action {
        let refusal = TrustRefusal(reason, detail)
        state = .refused(refusal)
        guard notify else { return .refuse(refusal, reply: nil) }
        return .refuse(refusal, reply: .refused(.init(reason: reason, detail: detail, session: sessionID)))
    }

    /// The initiator's nonce, which names the handshake on both sides.
    public var sessionID: [UInt8]? {
        switch (role, state) {
        case (.initiator, _): nonce
        case (.responder, .verifyingInitiator(let hello)): hello.nonce
        case (.responder, .awaitingFinish(_, let initiatorNonce)): initiatorNonce
        default: nil
        }
    }
}

extension TrustMessage {
    var name: String {
        switch self {
        case .hello: "hello"
        case .result: "result"
        case .finish: "finish"
        case .ok: "ok"
        case .refused: "refused"
        }
    }
}

extension TrustHandshake.State {
    var name: String {
        switch self {
        case .idle: "idle"
        case .awaitingResult: "awaitingResult"
        case .verifyingResponder: "verifyingResponder"
        case .awaitingOk: "awaitingOk"
        case .verifyingInitiator: "verifyingInitiator"
        case .awaitingFinish: "awaitingFinish"
        case .trusted: "trusted"
        case .refused: "refused"
        }
    }
}
