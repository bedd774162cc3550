import Federation
import Foundation
import Testing
import XMPP

@testable import Federation

/// The JSON of `urn:intercloud:federation:0` byte for byte (docs/protocol/federation.md): one
/// golden payload per message kind, with and without the optional members. The names on the wire
/// are written out in the coding of `FederationMessage` and the types it carries, so renaming a
/// Swift property or case cannot change them; if one of these tests fails, the wire changed.
@Suite struct FederationWireGoldenTests {
    static let expires = Date(timeIntervalSince1970: 1_780_318_800)
    static let endpoint = ServiceEndpoint(host: "203.0.113.10", port: 5432, protocolName: "postgresql", path: "/db")
    static let credentials = ServiceCredentials(username: "svc-7c1e", token: "q2Vx8yJb3LkP0nT5wR7sD1fG4hK6mZ9a", expiresAt: expires)
    static let credentialsJSON = #"{"expiresAt":"2026-06-01T13:00:00Z","token":"q2Vx8yJb3LkP0nT5wR7sD1fG4hK6mZ9a","username":"svc-7c1e"}"#

    static let golden: [(FederationMessage.Body, String)] = [
        (.select(ServiceSelection(templateName: "postgres-small", parameters: ["version": "16", "db_name": "app"], agreementID: "agr-1")),
         #"{"select":{"_0":{"agreementID":"agr-1","parameters":{"db_name":"app","version":"16"},"templateName":"postgres-small"}}}"#),
        (.select(ServiceSelection(templateName: "postgres-small", agreementID: "agr-1")),
         #"{"select":{"_0":{"agreementID":"agr-1","parameters":{},"templateName":"postgres-small"}}}"#),
        (.provisioned(ProvisionedService(endpoint: endpoint, interfaceDescription: "PostgreSQL 16", credentials: credentials)),
         #"{"provisioned":{"_0":{"credentials":\#(credentialsJSON),"endpoint":{"host":"203.0.113.10","path":"\/db","port":5432,"protocolName":"postgresql"},"interfaceDescription":"PostgreSQL 16"}}}"#),
        (.provisioned(ProvisionedService(
            endpoint: ServiceEndpoint(host: "db.cloud2.example", port: 5432, protocolName: "postgresql"), interfaceDescription: nil, credentials: credentials)),
         #"{"provisioned":{"_0":{"credentials":\#(credentialsJSON),"endpoint":{"host":"db.cloud2.example","port":5432,"protocolName":"postgresql"}}}}"#),
        (.status, #"{"status":{}}"#),
        (.state(ServiceStatus(phase: .active, endpoint: endpoint, credentialsExpireAt: expires, reason: "ok")),
         #"{"state":{"_0":{"credentialsExpireAt":"2026-06-01T13:00:00Z","endpoint":{"host":"203.0.113.10","path":"\/db","port":5432,"protocolName":"postgresql"},"phase":"active","reason":"ok"}}}"#),
        (.state(ServiceStatus(phase: .tearingDown)), #"{"state":{"_0":{"phase":"tearing-down"}}}"#),
        (.renew, #"{"renew":{}}"#),
        (.renewed(credentials), #"{"renewed":{"_0":\#(credentialsJSON)}}"#),
        (.teardown, #"{"teardown":{}}"#),
        (.done, #"{"done":{}}"#),
        (.refused(reason: "no template named mysql"), #"{"refused":{"reason":"no template named mysql"}}"#),
    ]

    /// The JSON is the text of <federation/>: XML-escaped (`&`, `<`, `>`, `'`, `"` as entities).
    static func xml(_ json: String) -> String {
        json.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "'", with: "&apos;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    @Test func everyMessageKindEncodesToItsGoldenBytes() throws {
        for (body, bodyJSON) in Self.golden {
            let message = FederationMessage(serviceID: "svc-1", body: body)
            let json = #"{"body":\#(bodyJSON),"serviceID":"svc-1"}"#
            #expect(String(decoding: try message.encoded(), as: UTF8.self) == json, "\(message.kind)")
            let payload = try FederationWire.encode(message)
            #expect(String(decoding: payload, as: UTF8.self) == "<federation xmlns='urn:intercloud:federation:0'>\(Self.xml(json))</federation>", "\(message.kind)")
            #expect(try FederationWire.decode(payload) == message, "\(message.kind)")
        }
    }

    /// The service phases are wire names.
    @Test func phasesHaveTheirWireNames() throws {
        let names = ["requested", "provisioning", "starting", "active", "tearing-down", "ended", "failed"]
        #expect(FederatedService.Phase.allCases.count == names.count)
        for (phase, name) in zip(FederatedService.Phase.allCases, names) {
            let message = FederationMessage(serviceID: "s", body: .state(ServiceStatus(phase: phase)))
            let json = #"{"body":{"state":{"_0":{"phase":"\#(name)"}}},"serviceID":"s"}"#
            #expect(String(decoding: try message.encoded(), as: UTF8.self) == json)
            #expect(try FederationMessage.decode(Data(json.utf8)) == message)
        }
    }

    /// What a peer may leave out or add, and what it must not send.
    @Test func optionalMembersAndUnknownNames() throws {
        let extra = #"{"serviceID":"s","extra":1,"body":{"state":{"_0":{"phase":"active","reason":null,"later":true}}}}"#
        #expect(try FederationMessage.decode(Data(extra.utf8)) == FederationMessage(serviceID: "s", body: .state(ServiceStatus(phase: .active))))
        // Times are written in whole seconds (a fraction is dropped); a fraction sent by a peer is read.
        let fractional = FederationMessage(
            serviceID: "s", body: .renewed(ServiceCredentials(username: "u", token: "q2Vx8yJb3LkP0nT5wR7sD1fG4hK6mZ9a", expiresAt: Self.expires.addingTimeInterval(0.75))))
        #expect(String(decoding: try fractional.encoded(), as: UTF8.self)
            == #"{"body":{"renewed":{"_0":{"expiresAt":"2026-06-01T13:00:00Z","token":"q2Vx8yJb3LkP0nT5wR7sD1fG4hK6mZ9a","username":"u"}}},"serviceID":"s"}"#)
        let sent = #"{"serviceID":"s","body":{"renewed":{"_0":{"expiresAt":"2026-06-01T13:00:00.5Z","token":"q2Vx8yJb3LkP0nT5wR7sD1fG4hK6mZ9a","username":"u"}}}}"#
        guard case .renewed(let read) = try FederationMessage.decode(Data(sent.utf8)).body else { Issue.record("not renewed"); return }
        #expect(read.expiresAt == Self.expires.addingTimeInterval(0.5))
        for bad in [
            #"{"serviceID":"s","body":{"pause":{}}}"#,
            #"{"serviceID":"s","body":{"status":{},"renew":{}}}"#,
            #"{"serviceID":"s","body":{}}"#,
            #"{"serviceID":"s","body":{"state":{"_0":{"phase":"tearingDown"}}}}"#,
            #"{"serviceID":"s","body":{"renewed":{"_0":{"expiresAt":1780318800,"token":"q2Vx8yJb3LkP0nT5wR7sD1fG4hK6mZ9a","username":"u"}}}}"#,
            #"{"serviceID":"s","body":{"refused":{}}}"#,
            #"{"body":{"status":{}}}"#,
        ] {
            #expect(throws: FederationMessageError.self, "\(bad)") { try FederationMessage.decode(Data(bad.utf8)) }
        }
    }
}
