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

// MARK: Wire form

/// The JSON of `urn:intercloud:negotiation:0` (docs/protocol/negotiation.md), written out by hand:
/// every name on the wire is a string literal here, so renaming a Swift property or case cannot
/// change it. (The same coding serves the negotiation journal.)
extension NegotiationMessage {
    private enum WireKey: String, CodingKey {
        case negotiationID = "negotiationID"
        case messageID = "messageID"
        case inReplyTo = "inReplyTo"
        case body = "body"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: WireKey.self)
        self.init(
            negotiationID: try container.decode(String.self, forKey: .negotiationID),
            messageID: try container.decode(String.self, forKey: .messageID),
            inReplyTo: try container.decodeIfPresent(String.self, forKey: .inReplyTo),
            body: try container.decode(Body.self, forKey: .body))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: WireKey.self)
        try container.encode(negotiationID, forKey: .negotiationID)
        try container.encode(messageID, forKey: .messageID)
        try container.encodeIfPresent(inReplyTo, forKey: .inReplyTo)
        try container.encode(body, forKey: .body)
    }
}

/// A body is an object with exactly one member, named by the message kind, whose value is an
/// object: `{"request":{"_0":TERMS}}`, `{"accept":{}}`, `{"terminate":{"reason":"…"}}`.
extension NegotiationMessage.Body {
    private enum Kind: String, CodingKey {
        case request = "request"
        case offer = "offer"
        case accept = "accept"
        case agreement = "agreement"
        case verify = "verify"
        case finalize = "finalize"
        case terminate = "terminate"
    }

    private enum ValueKey: String, CodingKey {
        case value = "_0"
        case reason = "reason"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Kind.self)
        guard container.allKeys.count == 1, let kind = container.allKeys.first else {
            throw DecodingError.dataCorrupted(.init(
                codingPath: container.codingPath, debugDescription: "a negotiation body has exactly one known message kind"))
        }
        let value = try container.nestedContainer(keyedBy: ValueKey.self, forKey: kind)
        switch kind {
        case .request: self = .request(try value.decode(Terms.self, forKey: .value))
        case .offer: self = .offer(try value.decode(Terms.self, forKey: .value))
        case .accept: self = .accept
        case .agreement: self = .agreement(try value.decode(Agreement.self, forKey: .value))
        case .verify: self = .verify
        case .finalize: self = .finalize
        case .terminate: self = .terminate(reason: try value.decode(String.self, forKey: .reason))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Kind.self)
        switch self {
        case .request(let terms):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .request)
            try value.encode(terms, forKey: .value)
        case .offer(let terms):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .offer)
            try value.encode(terms, forKey: .value)
        case .accept:
            _ = container.nestedContainer(keyedBy: ValueKey.self, forKey: .accept)
        case .agreement(let agreement):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .agreement)
            try value.encode(agreement, forKey: .value)
        case .verify:
            _ = container.nestedContainer(keyedBy: ValueKey.self, forKey: .verify)
        case .finalize:
            _ = container.nestedContainer(keyedBy: ValueKey.self, forKey: .finalize)
        case .terminate(let reason):
            var value = container.nestedContainer(keyedBy: ValueKey.self, forKey: .terminate)
            try value.encode(reason, forKey: .reason)
        }
    }
}
