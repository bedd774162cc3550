import Foundation
import Policy
import Trust
import XMPP
import XMLModel

/// The wire form of `urn:intercloud:negotiation:0`, always inside a signed envelope
/// (`SignedRequests`), sent as an IQ set:
///
/// ```xml
/// <negotiation xmlns='urn:intercloud:negotiation:0' signature='BASE64'?>{JSON NegotiationMessage}</negotiation>
/// ```
/// answered, once the receiver has stored its new state, by `<ack xmlns='…' message='ID'/>`.
///
/// The message is JSON (dates as Unix seconds, decimals as JSON numbers parsed exactly by
/// Foundation's decoder) because `Terms` is a nested record that both sides already encode for
/// their journals; the envelope signature covers these exact bytes. `signature` carries the
/// detached signature over `Agreement.canonicalBytes()`: the provider's on the `agreement`
/// message, the consumer's countersignature on `verify`.
public enum NegotiationWire {
    public static let namespace = "urn:intercloud:negotiation:0"
    /// A message with a full rate card fits in a few KiB; 32 KiB leaves room and bounds parsing.
    public static let maxMessageBytes = 32 * 1024
    public static let maxIdentifierLength = 160
    public static let maxListItems = 256
    public static let maxTextLength = 1024

    public struct Decoded: Sendable {
        public var message: NegotiationMessage
        public var signature: [UInt8]?
    }

    public static func encode(_ message: NegotiationMessage, signature: [UInt8]?) throws -> [UInt8] {
        let json = String(decoding: try NegotiationStore.encoder.encode(message), as: UTF8.self)
        var attributes: [String: String] = [:]
        if let signature { attributes["signature"] = Data(signature).base64EncodedString() }
        return Array(XMLElement("negotiation", namespace: namespace, attributes: attributes, text: json).serialized().utf8)
    }

    /// Parses and validates a peer's message; every problem is a `bad-request` naming it.
    public static func decode(_ bytes: [UInt8]) throws(StanzaError) -> Decoded {
        guard bytes.count <= maxMessageBytes * 2,
            let element = try? XMLElement.parse(String(decoding: bytes, as: UTF8.self), maxBytes: maxMessageBytes * 2),
            element.name == "negotiation", element.namespace == namespace, element.elements.isEmpty
        else { throw .badRequest("expected <negotiation xmlns='\(namespace)'>JSON</negotiation> of at most \(maxMessageBytes) bytes") }
        guard element.attributes.allSatisfy({ $0.name == "signature" }) else {
            throw .badRequest("unknown attribute on <negotiation/>")
        }
        var signature: [UInt8]?
        if let text = element[attribute: "signature"] {
            guard text.utf8.count <= 512, let data = Data(base64Encoded: text) else { throw .badRequest("signature is not base64") }
            signature = Array(data)
        }
        let json = Data(element.text.utf8)
        guard json.count <= maxMessageBytes else { throw .badRequest("message larger than \(maxMessageBytes) bytes") }
        let message: NegotiationMessage
        do { message = try NegotiationStore.decoder.decode(NegotiationMessage.self, from: json) } catch {
            throw .badRequest("malformed negotiation message: \(String(describing: error).prefix(300))")
        }
        if let problem = problem(in: message) { throw .badRequest(problem) }
        return Decoded(message: message, signature: signature)
    }

    /// Bounds on everything a peer controls; nil when the message is acceptable.
    public static func problem(in message: NegotiationMessage) -> String? {
        func badID(_ value: String) -> Bool {
            value.isEmpty || value.count > maxIdentifierLength
                || !value.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "-_.:/@".unicodeScalars.contains($0) }
        }
        if badID(message.negotiationID) { return "negotiation id must be 1-\(maxIdentifierLength) characters of A-Z a-z 0-9 - _ . : / @" }
        if badID(message.messageID) { return "message id must be 1-\(maxIdentifierLength) characters of A-Z a-z 0-9 - _ . : / @" }
        if let reply = message.inReplyTo, badID(reply) { return "inReplyTo is not a valid message id" }
        func termsProblem(_ terms: Terms) -> String? {
            let r = terms.resources
            if r.instances < 0 || r.vcpu < 0 || r.memoryGiB < 0 || r.storageGiB < 0 || r.transferGB < 0 {
                return "resources must not be negative"
            }
            if terms.instanceTypes.count > maxListItems || terms.rates.instanceHour.count > maxListItems
                || terms.placement.regions.count > maxListItems || terms.placement.jurisdictions.count > maxListItems
            {
                return "too many list items (at most \(maxListItems))"
            }
            let texts = terms.instanceTypes + terms.placement.regions + terms.placement.jurisdictions + Array(terms.rates.instanceHour.keys)
                + [terms.rates.currency, terms.sla.support]
            if texts.contains(where: { $0.count > maxTextLength }) { return "a text field is longer than \(maxTextLength) characters" }
            if terms.rates.instanceHour.values.contains(where: { $0 < 0 }) || terms.rates.perGBTransferred < 0 || terms.rates.perGBMonthStored < 0
                || terms.rates.perThousandCalls < 0
            {
                return "prices must not be negative"
            }
            if terms.sla.availabilityPercent < 0 || terms.sla.availabilityPercent > 100 { return "availability must be within 0-100" }
            if let from = terms.period.from, let until = terms.period.until, until <= from { return "period ends before it starts" }
            return nil
        }
        switch message.body {
        case .request(let terms), .offer(let terms):
            return termsProblem(terms)
        case .agreement(let agreement):
            if badID(agreement.id) { return "agreement id is not valid" }
            return termsProblem(agreement.terms)
        case .terminate(let reason):
            return reason.count > maxTextLength ? "reason longer than \(maxTextLength) characters" : nil
        case .accept, .verify, .finalize:
            return nil
        }
    }

    public static func ack(_ messageID: String) -> [UInt8] {
        Array(XMLElement("ack", namespace: namespace, attributes: ["message": messageID]).serialized().utf8)
    }

    public static func parseAck(_ bytes: [UInt8]) -> String? {
        guard let element = try? XMLElement.parse(String(decoding: bytes, as: UTF8.self), maxBytes: 1024),
            element.name == "ack", element.namespace == namespace
        else { return nil }
        return element[attribute: "message"]
    }
}
