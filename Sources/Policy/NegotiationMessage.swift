import Foundation

/// The states of a contract negotiation, named as in the Dataspace Protocol. `initial` is ours:
/// the machine exists (persisted) but nothing has been acknowledged yet.
public enum NegotiationState: String, Codable, Sendable, Hashable, CaseIterable {
    case initial = "INITIAL"
    case requested = "REQUESTED"
    case offered = "OFFERED"
    case accepted = "ACCEPTED"
    case agreed = "AGREED"
    case verified = "VERIFIED"
    case finalized = "FINALIZED"
    case terminated = "TERMINATED"

    public var isFinal: Bool { self == .finalized || self == .terminated }
}

public enum NegotiationRole: String, Codable, Sendable, Hashable {
    case consumer
    case provider

    public var peer: NegotiationRole { self == .consumer ? .provider : .consumer }
}

/// One message of `urn:intercloud:negotiation:0`, carried in an IQ set; the peer's IQ result is
/// the acknowledgement that moves the sender's state.
public struct NegotiationMessage: Codable, Sendable, Hashable {
    public var negotiationID: String
    /// Unique per message. A retransmission reuses it, so a receiver that already applied the
    /// message acknowledges it again instead of applying it twice.
    public var messageID: String
    /// The last message the sender received from us in this negotiation. A receiver still
    /// waiting for the result of that message learns from this that the peer applied it.
    public var inReplyTo: String?
    public var body: Body

    public enum Body: Codable, Sendable, Hashable {
        /// Consumer: the first request, or a counter to the provider's offer.
        case request(Terms)
        /// Provider: the first offer, or a counter to the consumer's request.
        case offer(Terms)
        /// Consumer accepts the terms on the table (the last offer).
        case accept
        /// Provider: the agreement over the terms on the table.
        case agreement(Agreement)
        /// Consumer: the agreement checked (and, once wired, countersigned).
        case verify
        /// Provider: the agreement is in force.
        case finalize
        /// Either side ends the negotiation.
        case terminate(reason: String)
    }

    public init(negotiationID: String, messageID: String, inReplyTo: String? = nil, body: Body) {
        self.negotiationID = negotiationID
        self.messageID = messageID
        self.inReplyTo = inReplyTo
        self.body = body
    }

    /// Short name for reasons and logs.
    public var kind: String {
        switch body {
        case .request: "request"
        case .offer: "offer"
        case .accept: "accept"
        case .agreement: "agreement"
        case .verify: "verify"
        case .finalize: "finalize"
        case .terminate: "terminate"
        }
    }

    /// Who may send it; nil for terminate (either side).
    var sender: NegotiationRole? {
        switch body {
        case .request, .accept, .verify: .consumer
        case .offer, .agreement, .finalize: .provider
        case .terminate: nil
        }
    }

    /// The state both sides are in once it is acknowledged.
    var target: NegotiationState {
        switch body {
        case .request: .requested
        case .offer: .offered
        case .accept: .accepted
        case .agreement: .agreed
        case .verify: .verified
        case .finalize: .finalized
        case .terminate: .terminated
        }
    }

    /// States from which the message may be sent (DSP contract negotiation transitions).
    var allowedFrom: Set<NegotiationState> {
        switch body {
        case .request: [.initial, .offered]
        case .offer: [.initial, .requested]
        case .accept: [.offered]
        case .agreement: [.requested, .accepted]
        case .verify: [.agreed]
        case .finalize: [.verified]
        case .terminate: Set(NegotiationState.allCases.filter { !$0.isFinal })
        }
    }
}
