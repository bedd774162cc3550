import Foundation
import Policy
import Testing
import XMPP

@testable import Negotiation

/// The JSON of `urn:intercloud:negotiation:0` byte for byte (docs/protocol/negotiation.md): one
/// golden payload per message kind. The names on the wire are written out in the coding of
/// `NegotiationMessage`, `Terms` and `Agreement`, so renaming a Swift property or case cannot
/// change them; if one of these tests fails, the wire changed.
@Suite struct NegotiationWireGoldenTests {
    static let t0 = Date(timeIntervalSince1970: 1_780_315_200)

    static let terms = Terms(
        resources: ResourceAmount(instances: 2, vcpu: 4, memoryGiB: 8, storageGiB: 40, transferGB: Decimal(string: "10.5")!),
        instanceTypes: ["m1.small"],
        period: ValidityPeriod(from: t0, until: t0.addingTimeInterval(30 * 86_400)),
        rates: RateCard(
            currency: "EUR", instanceHour: ["m1.small": Decimal(string: "0.045")!], perGBTransferred: Decimal(string: "0.02")!,
            perGBMonthStored: Decimal(string: "0.04")!, perThousandCalls: Decimal(string: "0.5")!),
        sla: ServiceLevel(availabilityPercent: Decimal(string: "99.9")!, maxMigrationDowntimeSeconds: 300, support: "24x7"),
        entitlements: [.query],
        placement: Placement(regions: ["eu-west"], jurisdictions: ["EU"]))

    static let termsJSON = #"{"entitlements":["query"],"instanceTypes":["m1.small"],"period":{"from":1780315200,"until":1782907200},"placement":{"jurisdictions":["EU"],"regions":["eu-west"]},"rates":{"currency":"EUR","instanceHour":{"m1.small":0.045},"perGBMonthStored":0.04,"perGBTransferred":0.02,"perThousandCalls":0.5},"resources":{"instances":2,"memoryGiB":8,"storageGiB":40,"transferGB":10.5,"vcpu":4},"sla":{"availabilityPercent":99.9,"maxMigrationDowntimeSeconds":300,"support":"24x7"}}"#

    static let agreement = Agreement(
        id: "agr-0123456789abcdef", negotiationID: "neg-1", consumer: "broker@cloud1.example", provider: "broker@cloud2.example",
        terms: terms, createdAt: t0.addingTimeInterval(2))

    static let golden: [(NegotiationMessage.Body, String)] = [
        (.request(terms), #"{"body":{"request":{"_0":\#(termsJSON)}},"messageID":"neg-1\/consumer\/1","negotiationID":"neg-1"}"#),
        (.offer(terms), #"{"body":{"offer":{"_0":\#(termsJSON)}},"messageID":"neg-1\/consumer\/1","negotiationID":"neg-1"}"#),
        (.accept, #"{"body":{"accept":{}},"messageID":"neg-1\/consumer\/1","negotiationID":"neg-1"}"#),
        (.agreement(agreement),
         #"{"body":{"agreement":{"_0":{"consumer":"broker@cloud1.example","createdAt":1780315202,"id":"agr-0123456789abcdef","negotiationID":"neg-1","provider":"broker@cloud2.example","terms":\#(termsJSON)}}},"messageID":"neg-1\/consumer\/1","negotiationID":"neg-1"}"#),
        (.verify, #"{"body":{"verify":{}},"messageID":"neg-1\/consumer\/1","negotiationID":"neg-1"}"#),
        (.finalize, #"{"body":{"finalize":{}},"messageID":"neg-1\/consumer\/1","negotiationID":"neg-1"}"#),
        (.terminate(reason: "price-too-high: 0.045 > 0.04"),
         #"{"body":{"terminate":{"reason":"price-too-high: 0.045 > 0.04"}},"messageID":"neg-1\/consumer\/1","negotiationID":"neg-1"}"#),
    ]

    /// The JSON is the text of <negotiation/>: XML-escaped (`&`, `<`, `>`, `'`, `"` as entities).
    static func xml(_ json: String) -> String {
        json.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "'", with: "&apos;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    @Test func everyMessageKindEncodesToItsGoldenBytes() throws {
        for (body, json) in Self.golden {
            let message = NegotiationMessage(negotiationID: "neg-1", messageID: "neg-1/consumer/1", body: body)
            let payload = try NegotiationWire.encode(message, signature: nil)
            #expect(String(decoding: payload, as: UTF8.self) == "<negotiation xmlns='urn:intercloud:negotiation:0'>\(Self.xml(json))</negotiation>", "\(message.kind)")
            let decoded = try NegotiationWire.decode(payload)
            #expect(decoded.message == message && decoded.signature == nil, "\(message.kind)")
        }
    }

    @Test func inReplyToAndSignatureHaveTheirNames() throws {
        let message = NegotiationMessage(negotiationID: "neg-1", messageID: "neg-1/provider/2", inReplyTo: "neg-1/consumer/1", body: .finalize)
        let payload = try NegotiationWire.encode(message, signature: [1, 2, 3])
        let json = #"{"body":{"finalize":{}},"inReplyTo":"neg-1\/consumer\/1","messageID":"neg-1\/provider\/2","negotiationID":"neg-1"}"#
        #expect(String(decoding: payload, as: UTF8.self)
            == "<negotiation xmlns='urn:intercloud:negotiation:0' signature='AQID'>\(Self.xml(json))</negotiation>")
        #expect(try NegotiationWire.decode(payload).signature == [1, 2, 3])
    }

    /// Entitlements go out sorted, by their wire names, whatever the set's order in memory.
    @Test func entitlementsAreSortedWireNames() throws {
        var terms = Self.terms
        terms.entitlements = [.query, .migrateLive, .federate, .migrateOut, .migrateIn]
        let payload = try NegotiationWire.encode(NegotiationMessage(negotiationID: "n", messageID: "m", body: .request(terms)), signature: nil)
        #expect(String(decoding: payload, as: UTF8.self).contains(Self.xml(#""entitlements":["federate","migrate-in","migrate-live","migrate-out","query"]"#)))
    }

    /// What a peer may leave out, and what it must not add.
    @Test func optionalFieldsAndUnknownNames() throws {
        // Without inReplyTo, period bounds and perThousandCalls (an earlier peer's terms).
        let minimal = #"<negotiation xmlns='urn:intercloud:negotiation:0'>{"negotiationID":"n","messageID":"m","body":{"request":{"_0":{"entitlements":["query"],"instanceTypes":[],"period":{},"placement":{"jurisdictions":[],"regions":[]},"rates":{"currency":"EUR","instanceHour":{},"perGBMonthStored":0,"perGBTransferred":0},"resources":{"instances":1,"memoryGiB":1,"storageGiB":1,"transferGB":0,"vcpu":1},"sla":{"availabilityPercent":99,"maxMigrationDowntimeSeconds":60,"support":""}}}}}</negotiation>"#
        let decoded = try NegotiationWire.decode(Array(minimal.utf8))
        guard case .request(let terms) = decoded.message.body else { Issue.record("not a request"); return }
        #expect(terms.period == .always && terms.rates.perThousandCalls == 0 && decoded.message.inReplyTo == nil)
        // An unknown message kind or entitlement is refused (bad-request), not guessed.
        for bad in [
            #"{"negotiationID":"n","messageID":"m","body":{"haggle":{}}}"#,
            #"{"negotiationID":"n","messageID":"m","body":{"accept":{},"verify":{}}}"#,
            minimal.replacingOccurrences(of: #"["query"]"#, with: #"["queries"]"#)
                .replacingOccurrences(of: "<negotiation xmlns='urn:intercloud:negotiation:0'>", with: "").replacingOccurrences(of: "</negotiation>", with: ""),
        ] {
            let payload = "<negotiation xmlns='urn:intercloud:negotiation:0'>\(bad)</negotiation>"
            #expect(throws: StanzaError.self, "\(bad)") { try NegotiationWire.decode(Array(payload.utf8)) }
        }
    }
}
