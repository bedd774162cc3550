import XMLModel

/// XEP-0199: XMPP Ping.
public enum Ping {
    public static let namespace = "urn:xmpp:ping"
}

extension XMPPClient {
    /// Answers pings on the hot path.
    public func servePing() {
        setIQHandler(namespace: Ping.namespace, maxPayloadBytes: 256, .immediate { request throws(StanzaError) in
            guard request.type == "get" else { throw .badRequest("ping is a get") }
            return nil
        })
    }

    /// Pings an entity; returns the round-trip time.
    public func ping(_ jid: JID?, timeout: Duration = .seconds(5)) async throws -> Duration {
        let start = ContinuousClock.now
        _ = try await iq(.get, to: jid, payload: XMLElement("ping", namespace: Ping.namespace), timeout: timeout)
        return ContinuousClock.now - start
    }
}
