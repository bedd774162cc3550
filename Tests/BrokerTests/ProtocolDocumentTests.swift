import Catalog
import Crypto
@testable import Federation
import CatalogQueries
import Discovery
import Metering
import Foundation
import Negotiation
import Policy
import Providers
import TestSupport
import Testing
import X509

@testable import Broker
@testable import Migration
@testable import Trust
@testable import XMPP
import XMLModel

/// docs/protocol against the code: every XML example of every document is validated against its
/// namespace's RELAX NG schema with `xmllint` and parsed with the broker's own decoders (valid
/// examples accepted by both, `<!-- invalid: … -->` ones refused by both); every signature in the
/// examples verifies with the example certificates, every hex dump is the byte layout the code
/// signs, answers are bound to the requests they answer, and the documented reason codes and
/// stanza error types are exactly the code's.
@Suite struct ProtocolDocumentTests {
    static let documents = ["presence", "trust", "envelope", "session", "catalog", "negotiation", "migration", "metering", "federation"]
    /// The examples' time stamps are of 2026-06-01T12:00:00Z.
    static let exampleTime = Date(timeIntervalSince1970: 1_780_315_200)

    // MARK: The documents

    struct Example {
        var document: String
        var line: Int
        var xml: String
        var invalid: Bool { xml.drop(while: \.isWhitespace).hasPrefix("<!-- invalid") }
        /// Well-formed XML whose JSON content (or other content the schema does not describe, such
        /// as a usage record's text) is refused: the schema accepts it, the decoder not.
        var invalidJSON: Bool {
            let text = xml.drop(while: \.isWhitespace)
            return text.hasPrefix("<!-- invalid JSON:") || text.hasPrefix("<!-- invalid content:")
        }
        var label: String { "\(document).md:\(line)" }
    }

    enum Block {
        case xml(Example)
        case hex(line: Int, bytes: [UInt8])
        /// A negotiation message as JSON.
        case json(line: Int, text: String)
        /// An agreement's canonical text.
        case canonical(line: Int, text: String)
    }

    struct DocumentError: Error, CustomStringConvertible {
        var description: String
    }

    static func directory() throws -> URL {
        try TestProsody.repositoryRoot().appendingPathComponent("docs/protocol")
    }

    static func text(_ document: String) throws -> String {
        try String(contentsOf: directory().appendingPathComponent("\(document).md"), encoding: .utf8)
    }

    /// The fenced ```xml and ```hex blocks of a document, in order.
    static func blocks(_ document: String) throws -> [Block] {
        var blocks: [Block] = []
        var open: (kind: String, line: Int, lines: [String])?
        for (number, line) in try text(document).components(separatedBy: "\n").enumerated() {
            if var current = open {
                if line == "```" {
                    let body = current.lines.joined(separator: "\n")
                    switch current.kind {
                    case "xml": blocks.append(.xml(Example(document: document, line: current.line, xml: body)))
                    case "hex": blocks.append(.hex(line: current.line, bytes: try hexBytes(body, at: "\(document).md:\(current.line)")))
                    case "json": blocks.append(.json(line: current.line, text: body))
                    default: blocks.append(.canonical(line: current.line, text: body + "\n"))
                    }
                    open = nil
                } else {
                    current.lines.append(line)
                    open = current
                }
            } else if ["```xml", "```hex", "```json", "```canonical"].contains(line) {
                open = (String(line.dropFirst(3)), number + 1, [])
            }
        }
        guard open == nil else { throw DocumentError(description: "\(document).md: unterminated code block") }
        return blocks
    }

    /// `0000  00 01 …` lines: an offset, then bytes in hex.
    static func hexBytes(_ body: String, at place: String) throws -> [UInt8] {
        var bytes: [UInt8] = []
        for line in body.split(separator: "\n") {
            let tokens = line.split(separator: " ")
            guard let offset = tokens.first.flatMap({ Int($0, radix: 16) }), offset == bytes.count else {
                throw DocumentError(description: "\(place): hex line without the right offset: \(line)")
            }
            for token in tokens.dropFirst() {
                guard token.count == 2, let byte = UInt8(token, radix: 16) else {
                    throw DocumentError(description: "\(place): not a byte: \(token)")
                }
                bytes.append(byte)
            }
        }
        return bytes
    }

    // MARK: The schemas (xmllint)

    /// Validates every example of `document` with one `xmllint --relaxng` run; returns the
    /// examples' labels that validated.
    static func validate(_ examples: [Example], document: String) throws -> Set<String> {
        let xmllint = try RequiredProgram.path("xmllint", package: "libxml2-utils")
        let schema = try directory().appendingPathComponent("schemas/\(document).rng").path
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("protocol-docs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        var files: [String: String] = [:]
        for (index, example) in examples.enumerated() {
            let path = scratch.appendingPathComponent("example-\(index).xml").path
            try Data(example.xml.utf8).write(to: URL(fileURLWithPath: path))
            files[path] = example.label
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: xmllint)
        process.arguments = ["--noout", "--relaxng", schema] + files.keys.sorted()
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // xmllint ends with one line per file: "<file> validates" or "<file> fails to validate".
        guard !output.contains("failed to compile") else {
            throw DocumentError(description: "schema \(schema) does not compile:\n\(output)")
        }
        var validated: Set<String> = []
        var verdicts = 0
        for line in output.split(separator: "\n") {
            if line.hasSuffix(" validates"), let label = files[String(line.dropLast(" validates".count))] {
                validated.insert(label)
                verdicts += 1
            } else if line.hasSuffix(" fails to validate"), files[String(line.dropLast(" fails to validate".count))] != nil {
                verdicts += 1
            }
        }
        guard verdicts == examples.count else {
            throw DocumentError(description: "xmllint gave \(verdicts) verdicts for \(examples.count) examples:\n\(output)")
        }
        return validated
    }

    // MARK: The decoders

    indirect enum Decoded {
        case announce(Announcement)
        case status
        case trust(TrustMessage)
        case envelope(SignedEnvelope, payload: Decoded)
        case query(String)
        case answer(QueryResult)
        case error(StanzaError, application: Decoded?)
        case negotiation(NegotiationMessage, signature: [UInt8]?)
        case ack(String)
        case migration(MigrationMessage)
        /// `<announce xmlns='urn:intercloud:transfer:0'/>`: migration, token, size, SHA-256.
        case transferAnnounce(migration: String, token: String, size: Int64, sha256: String)
        case transferAccepted(migration: String)
        case usage(UsageRecord, signature: [UInt8])
        case federation(FederationMessage)
        case ping(String)
        case pong(FederationPing.Pong)
        case countersigned([UInt8])
        case disputed([String])
        case sessionOffer(key: [UInt8])
        case sessionAccept(SessionExchange.Accept)
        case empty
    }

    struct Received {
        var from: String?
        var to: String?
        var type: String?
        var decoded: Decoded
    }

    /// Decodes an example as a receiver would: a stanza's payload, or a bare payload, with the
    /// broker's own decoders. Throws where a receiver refuses.
    static func decode(_ example: Example) throws -> Received {
        let root = try XMLElement.parse(example.xml, maxBytes: 1 << 20)
        guard root.namespace == "jabber:client" else {
            return Received(decoded: try decodePayload(root, raw: Array(example.xml.utf8)))
        }
        var stanza = Received(from: root[attribute: "from"], to: root[attribute: "to"], type: root[attribute: "type"], decoded: .empty)
        switch root.name {
        case "presence":
            // As PeerDiscovery reads it: the announcement in the presence, if any.
            guard let found = Announcement.find(in: Stanza(root)) else {
                throw DocumentError(description: "presence without an announcement")
            }
            stanza.decoded = .announce(try found.get())
        case "iq":
            if let error = root.child(named: "error") {
                guard let parsed = StanzaError(parsing: error) else {
                    throw DocumentError(description: "unreadable stanza error")
                }
                // An application condition travels as the client hands it on (BrokerTrust.exchange).
                let application = try parsed.applicationCondition.map { element in
                    let xml = element.serialized()
                    return try decodePayload(try XMLElement.parse(xml), raw: Array(xml.utf8))
                }
                stanza.decoded = .error(parsed, application: application)
            } else {
                guard root.elements.count <= 1 else { throw DocumentError(description: "an IQ with more than one payload") }
                if let payload = root.elements.first {
                    // The payload as the XMPP layer hands it to a handler: serialised with its xmlns.
                    let xml = payload.serialized()
                    stanza.decoded = try decodePayload(try XMLElement.parse(xml), raw: Array(xml.utf8))
                }
            }
        default:
            throw DocumentError(description: "unexpected stanza <\(root.name)>")
        }
        return stanza
    }

    static func decodePayload(_ element: XMLElement, raw: [UInt8]) throws -> Decoded {
        switch element.namespace {
        case Announcement.namespace where element.name == "announce":
            return .announce(try Announcement(parsing: element))
        case Announcement.namespace where element.name == "status":
            // BrokerNode's status handler: an empty <status/>, nothing else.
            guard element.elements.isEmpty, element.attributes.isEmpty, element.text.isEmpty else {
                throw DocumentError(description: "status with content")
            }
            return .status
        case TrustNamespace.handshake:
            return .trust(try TrustWire.decode(element))
        case TrustNamespace.session where element.name == "offer":
            return .sessionOffer(key: try SessionExchange.decodeOffer(raw))
        case TrustNamespace.session:
            return .sessionAccept(try SessionExchange.Accept.decode(raw))
        case TrustNamespace.envelope:
            let envelope = try SignedEnvelope.decode(element)
            let payload: Decoded
            switch (envelope.namespace, envelope.isAnswer) {
            case (CatalogProtocol.namespace, true): payload = .answer(try CatalogProtocol.parseAnswer(envelope.payload))
            case (CatalogProtocol.namespace, false): payload = .query(try query(envelope.payload))
            case (NegotiationWire.namespace, true): payload = .ack(try ack(envelope.payload))
            case (NegotiationWire.namespace, false): payload = try negotiation(envelope.payload)
            case (MigrationMessage.namespace, _): payload = .migration(try MigrationWire.decode(envelope.payload))
            case (FederationMessage.namespace, _): payload = .federation(try FederationWire.decode(envelope.payload))
            case (FederationPing.namespace, false): payload = .ping(try FederationPing.parseRequest(envelope.payload))
            case (FederationPing.namespace, true): payload = .pong(try FederationPing.parseAnswer(envelope.payload))
            case (MeteringService.namespace, _):
                payload = try decodePayload(try XMLElement.parse(String(decoding: envelope.payload, as: UTF8.self)), raw: envelope.payload)
            case (BrokerImageTransport.namespace, _):
                payload = try decodePayload(try XMLElement.parse(String(decoding: envelope.payload, as: UTF8.self)), raw: envelope.payload)
            default: throw DocumentError(description: "an envelope for \(envelope.namespace), which no document here describes")
            }
            return .envelope(envelope, payload: payload)
        case NegotiationWire.namespace where element.name == "ack":
            return .ack(try ack(raw))
        case NegotiationWire.namespace:
            return try negotiation(raw)
        case MigrationMessage.namespace:
            return .migration(try MigrationWire.decode(raw))
        case FederationMessage.namespace:
            return .federation(try FederationWire.decode(raw))
        case FederationPing.namespace where element.name == "ping":
            return .ping(try FederationPing.parseRequest(raw))
        case FederationPing.namespace:
            return .pong(try FederationPing.parseAnswer(raw))
        case MeteringService.namespace where element.name == "usage":
            // As MeteringService's handler reads a record: the element, then the canonical text.
            let parsed = try MeteringWire.parseUsage(raw)
            return .usage(try UsageRecord(canonicalBytes: parsed.record), signature: parsed.signature)
        case MeteringService.namespace:
            switch try MeteringWire.parseAnswer(raw) {
            case .countersigned(let signature): return .countersigned(signature)
            case .disputed(let reasons): return .disputed(reasons)
            }
        case TransferAnnouncement.namespace where element.name == "announce":
            let announcement = try TransferAnnouncement(parsing: raw)
            return .transferAnnounce(
                migration: announcement.migrationID, token: announcement.token, size: announcement.size, sha256: announcement.sha256)
        case TransferAnnouncement.namespace where element.name == "accepted":
            return .transferAccepted(migration: try TransferAnnouncement.parseAccepted(raw))
        case "http://www.w3.org/2005/sparql-results#":
            return .answer(try CatalogProtocol.parseAnswer(raw))
        case let namespace? where namespace.hasPrefix("urn:intercloud:catalog:"):
            return .query(try query(raw))
        default:
            throw DocumentError(description: "<\(element.name)> in \(element.namespace ?? "no namespace") is not a payload these documents describe")
        }
    }

    static func negotiation(_ bytes: [UInt8]) throws -> Decoded {
        let decoded = try NegotiationWire.decode(bytes)
        return .negotiation(decoded.message, signature: decoded.signature)
    }

    static func ack(_ bytes: [UInt8]) throws -> String {
        guard let message = NegotiationWire.parseAck(bytes) else { throw DocumentError(description: "not an acknowledgement") }
        return message
    }

    static func query(_ bytes: [UInt8]) throws -> String {
        guard let text = CatalogProtocol.parseRequest(bytes) else { throw DocumentError(description: "not a catalog query") }
        return text
    }

    // MARK: The example PKI

    struct ExamplePKI {
        var root: [Certificate]
        /// Leaf certificates by their XmppAddr.
        var leaves: [String: Certificate]
    }

    static func examplePKI() throws -> ExamplePKI {
        let examples = try directory().appendingPathComponent("examples")
        let root = try PEMFiles.certificates(atPath: examples.appendingPathComponent("example-root.pem").path)
        var leaves: [String: Certificate] = [:]
        for name in ["broker-cloud1.example.pem", "broker-cloud2.example.pem"] {
            for certificate in try PEMFiles.certificates(atPath: examples.appendingPathComponent(name).path) {
                for jid in XmppAddr.values(in: certificate) { leaves[XmppAddr.bare(jid)] = certificate }
            }
        }
        return ExamplePKI(root: root, leaves: leaves)
    }

    // MARK: Tests

    @Test(arguments: documents)
    func everyExampleMatchesSchemaAndDecoder(_ document: String) throws {
        let examples = try Self.blocks(document).compactMap { block -> Example? in
            if case .xml(let example) = block { return example } else { return nil }
        }
        #expect(examples.contains { !$0.invalid }, "\(document).md has no valid example")
        #expect(examples.contains { $0.invalid }, "\(document).md has no invalid example")
        let validated = try Self.validate(examples, document: document)
        for example in examples {
            let decoded = Result { try Self.decode(example) }
            if example.invalidJSON {
                #expect(validated.contains(example.label), "\(example.label): the schema refuses well-formed XML (its JSON is the invalid part)")
                #expect(throws: (any Error).self, "\(example.label): an invalid example passes the decoder") { try decoded.get() }
            } else if example.invalid {
                #expect(!validated.contains(example.label), "\(example.label): an invalid example passes the schema")
                #expect(throws: (any Error).self, "\(example.label): an invalid example passes the decoder") { try decoded.get() }
            } else {
                #expect(validated.contains(example.label), "\(example.label): the schema refuses a valid example")
                #expect(throws: Never.self, "\(example.label): the decoder refuses a valid example") { try decoded.get() }
            }
        }
    }

    /// Signatures, hex dumps, handshake and exchange bindings, chains and fingerprints of the
    /// examples, checked with the code's own byte layouts and verifiers.
    @Test(arguments: documents)
    func examplesAreSignedAndBoundAsDocumented(_ document: String) async throws {
        let pki = try Self.examplePKI()
        #expect(pki.root.count == 1 && pki.leaves.count == 2)
        var counts = (signatures: 0, hex: 0, bindings: 0, chains: 0, fingerprints: 0, agreementSignatures: 0, texts: 0, macs: 0, sessions: 0)
        var requests: [(envelope: SignedEnvelope, from: String, to: String)] = []
        var hello: (message: TrustMessage.Hello, from: String, to: String)?
        var result: TrustMessage.Result?
        var last: Received?
        var agreement: Agreement?
        var lastMessage: NegotiationMessage?
        var lastMigration: MigrationMessage?
        var lastFederation: FederationMessage?
        var kinds: Set<String> = []

        func key(_ jid: String?, _ label: String) throws -> Certificate {
            guard let jid, let certificate = pki.leaves[XmppAddr.bare(jid)] else {
                throw DocumentError(description: "\(label): no example certificate for \(jid ?? "a stanza without from")")
            }
            return certificate
        }
        func verifyChain(_ chain: [Certificate], for jid: String, _ label: String) async {
            let verdict = await PeerVerifier(anchors: pki.root).verify(chain: chain, peerJID: jid, at: Self.exampleTime)
            if case .failure(let refusal) = verdict { Issue.record("\(label): the example chain of \(jid) does not verify: \(refusal)") }
            counts.chains += 1
        }

        for block in try Self.blocks(document) {
            switch block {
            case .json(let line, let text) where document == "migration":
                // A migration message as JSON: the same message as the example before it.
                let decoded = try MigrationMessage.decode(Data(text.utf8))
                #expect(decoded == lastMigration, "\(document).md:\(line): not the message of the example before it")
                counts.texts += 1
            case .json(let line, let text) where document == "federation":
                let decoded = try FederationMessage.decode(Data(text.utf8))
                #expect(decoded == lastFederation, "\(document).md:\(line): not the message of the example before it")
                counts.texts += 1
            case .json(let line, let text):
                // A negotiation message as JSON: the same message as the example before it.
                let escaped = text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                let decoded = try NegotiationWire.decode(Array("<negotiation xmlns='\(NegotiationWire.namespace)'>\(escaped)</negotiation>".utf8))
                #expect(decoded.message == lastMessage, "\(document).md:\(line): not the message of the example before it")
                counts.texts += 1
            case .canonical(let line, let text) where document == "metering":
                // The record's canonical text: the bytes of the usage example before it.
                guard case .usage(let record, _)? = last?.decoded else {
                    Issue.record("\(document).md:\(line): canonical text without a usage record before it")
                    continue
                }
                #expect(text == String(decoding: record.canonicalBytes(), as: UTF8.self), "\(document).md:\(line): not the record's canonical text")
                #expect(try UsageRecord(canonicalBytes: Array(text.utf8)) == record)
                counts.texts += 1
            case .canonical(let line, let text):
                let signed = try #require(agreement, "\(document).md:\(line): canonical text without an agreement before it")
                #expect(text == String(decoding: signed.canonicalBytes(), as: UTF8.self), "\(document).md:\(line): not the text the code signs")
                counts.texts += 1
            case .hex(let line, let bytes):
                let label = "\(document).md:\(line)"
                switch last?.decoded {
                case .envelope(let envelope, _)?:
                    let from = try #require(last?.from), to = try #require(last?.to)
                    #expect(bytes == envelope.signedBytes(sender: from, recipient: to), "\(label): not the bytes the code signs")
                case .trust(.result(let answer))?:
                    let opened = try #require(hello, "\(label): a transcript without a hello before it")
                    let transcript = TrustTranscript(
                        initiatorJID: opened.from, responderJID: opened.to, initiatorNonce: opened.message.nonce,
                        responderNonce: answer.nonce, initiatorLeaf: opened.message.chain[0], responderLeaf: answer.chain[0])
                    #expect(bytes == transcript.bytes(signer: .responder), "\(label): not the transcript the code signs")
                case .sessionAccept?:
                    let vector = try SessionVector()
                    #expect(bytes == SessionExchange.info(
                        requester: SessionVector.requester, responder: SessionVector.responder, requesterKey: vector.offer.publicKey,
                        responderKey: vector.accept.key), "\(label): not the info the code derives with")
                default:
                    Issue.record("\(label): a hex dump after an example that signs nothing")
                }
                counts.hex += 1

            case .xml(let example) where !example.invalid:
                let stanza = try Self.decode(example)
                last = stanza
                switch stanza.decoded {
                case .envelope(let envelope, _):
                    guard let from = stanza.from, let to = stanza.to else { break }
                    let signer = try key(from, example.label)
                    if let id = envelope.session {
                        // Under session.md's test vector session, made by these two brokers.
                        let session = try SessionVector().requesterSession
                        #expect(id == session.id && XmppAddr.bare(from) == SessionVector.requester && XmppAddr.bare(to) == SessionVector.responder)
                        #expect(session.isValid(tag: envelope.signature, for: envelope.signedBytes(sender: from, recipient: to)),
                            "\(example.label): the envelope's MAC does not verify with the session's key")
                        counts.macs += 1
                    } else {
                        #expect(
                            DetachedSignature.isValid(envelope.signature, for: envelope.signedBytes(sender: from, recipient: to), signedBy: signer),
                            "\(example.label): the envelope's signature does not verify")
                        counts.signatures += 1
                    }
                    if case .negotiation(let message, let signature) = stanza.decoded.envelopePayload {
                        // Byte for byte what the broker writes for this message.
                        #expect(try NegotiationWire.encode(message, signature: signature) == envelope.payload, "\(example.label): not the broker's bytes")
                        lastMessage = message
                        switch message.body {
                        case .agreement(let concluded):
                            let text = concluded.canonicalBytes()
                            #expect(DetachedSignature.isValid(try #require(signature), for: text, signedBy: signer), "\(example.label): provider's signature")
                            agreement = concluded
                            counts.agreementSignatures += 1
                        case .verify:
                            let text = try #require(agreement, "\(example.label): verify without an agreement before it").canonicalBytes()
                            #expect(DetachedSignature.isValid(try #require(signature), for: text, signedBy: signer), "\(example.label): countersignature")
                            counts.agreementSignatures += 1
                        default:
                            #expect(signature == nil, "\(example.label): a signature on \(message.kind)")
                        }
                    }
                    if let answered = envelope.inReplyTo {
                        let request = requests.first { $0.envelope.nonce == answered }
                        #expect(request != nil, "\(example.label): answers no request of this document")
                        if let request {
                            #expect(XmppAddr.bare(request.from) == XmppAddr.bare(to) && XmppAddr.bare(request.to) == XmppAddr.bare(from))
                            #expect(request.envelope.namespace == envelope.namespace)
                            #expect(throws: Never.self) { try EnvelopeVerifier.checkExchange(envelope, answering: request.envelope.nonce) }
                            // Presented as a request, or as the answer to another request, it is refused.
                            #expect(throws: EnvelopeError.self) { try EnvelopeVerifier.checkExchange(envelope, answering: nil) }
                            #expect(throws: EnvelopeError.self) {
                                try EnvelopeVerifier.checkExchange(envelope, answering: Array(repeating: 0, count: 16))
                            }
                            counts.bindings += 1
                        }
                    } else {
                        #expect(throws: Never.self) { try EnvelopeVerifier.checkExchange(envelope, answering: nil) }
                        requests.append((envelope, from, to))
                    }
                case .migration(let message):
                    // The example's JSON is byte for byte what the broker writes for this message.
                    let written = try XMLElement.parse(String(decoding: try MigrationWire.encode(message), as: UTF8.self))
                    #expect(written.text == (try XMLElement.parse(example.xml)).text, "\(example.label): not the broker's bytes")
                    lastMigration = message
                    kinds.insert(message.kind)
                case .federation(let message):
                    // The example's JSON is byte for byte what the broker writes for this message.
                    let written = try XMLElement.parse(String(decoding: try FederationWire.encode(message), as: UTF8.self))
                    #expect(written.text == (try XMLElement.parse(example.xml)).text, "\(example.label): not the broker's bytes")
                    lastFederation = message
                    kinds.insert(message.kind)
                case .sessionOffer(let offered):
                    #expect(offered == (try SessionVector().offer.publicKey), "\(example.label): not the test vector's requester key")
                    #expect(Array(example.xml.utf8) == (try SessionVector().offer.payload), "\(example.label): not the broker's offer")
                    counts.sessions += 1
                case .sessionAccept(let accept):
                    // Byte for byte what the broker answers to the offer, with the test vector's keys.
                    let vector = try SessionVector()
                    #expect(Array(example.xml.utf8) == vector.answer, "\(example.label): not the broker's answer to the offer")
                    #expect(accept.id == vector.requesterSession.id)
                    counts.sessions += 1
                case .ping(let text):
                    // Byte for byte what the broker writes.
                    #expect(FederationPing.request(text: text) == Array(example.xml.utf8), "\(example.label): not the broker's bytes")
                    kinds.insert("ping")
                case .pong(let pong):
                    let announcement = Announcement(cloud: pong.cloud, regions: [], load: pong.load, fingerprint: "")
                    #expect(FederationPing.answer(text: pong.text, announcement: announcement) == Array(example.xml.utf8), "\(example.label): not the broker's bytes")
                    kinds.insert("pong")
                case .usage, .countersigned, .disputed:
                    kinds.insert(example.xml.split(separator: " ").first.map { String($0.dropFirst()) } ?? "")
                case .transferAnnounce(let migration, _, let size, let sha256):
                    // The announcement of the file of the example's transferred message.
                    #expect(migration == "mig-8d2f6a1c" && size == 1_073_741_824 && sha256 == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
                    kinds.insert("announce")
                case .trust(.hello(let message)):
                    let from = try #require(stanza.from), to = try #require(stanza.to)
                    hello = (message, from, to)
                    result = nil
                    await verifyChain(message.chain, for: from, example.label)
                case .trust(.result(let answer)):
                    let opened = try #require(hello, "\(example.label): a result without a hello before it")
                    #expect(answer.echo == opened.message.nonce && answer.nonce != opened.message.nonce)
                    #expect(XmppAddr.bare(try #require(stanza.from)) == XmppAddr.bare(opened.to))
                    await verifyChain(answer.chain, for: opened.to, example.label)
                    let transcript = TrustTranscript(
                        initiatorJID: opened.from, responderJID: opened.to, initiatorNonce: opened.message.nonce,
                        responderNonce: answer.nonce, initiatorLeaf: opened.message.chain[0], responderLeaf: answer.chain[0])
                    #expect(
                        DetachedSignature.isValid(answer.signature, for: transcript.bytes(signer: .responder), signedBy: answer.chain[0]),
                        "\(example.label): the responder's proof does not verify")
                    // The proof is bound to its role: it does not verify as the initiator's.
                    #expect(!DetachedSignature.isValid(answer.signature, for: transcript.bytes(signer: .initiator), signedBy: answer.chain[0]))
                    result = answer
                    counts.signatures += 1
                case .trust(.finish(let finish)):
                    let opened = try #require(hello), answer = try #require(result, "\(example.label): a finish without a result before it")
                    #expect(finish.session == opened.message.nonce && finish.echo == answer.nonce)
                    let transcript = TrustTranscript(
                        initiatorJID: opened.from, responderJID: opened.to, initiatorNonce: opened.message.nonce,
                        responderNonce: answer.nonce, initiatorLeaf: opened.message.chain[0], responderLeaf: answer.chain[0])
                    #expect(
                        DetachedSignature.isValid(finish.signature, for: transcript.bytes(signer: .initiator), signedBy: opened.message.chain[0]),
                        "\(example.label): the initiator's proof does not verify")
                    counts.signatures += 1
                case .trust(.ok(let ok)):
                    #expect(ok.session == hello?.message.nonce, "\(example.label): ok for another handshake")
                case .announce(let announcement) where !announcement.fingerprint.isEmpty:
                    // The announced fingerprint is the example certificate of the announcing broker.
                    let leaf = try key(stanza.from, example.label)
                    #expect(announcement.fingerprint == CertificateFingerprint.sha256(leaf), "\(example.label): another fingerprint")
                    counts.fingerprints += 1
                case .error(let error, let application):
                    // The documented type is the one the code sends with this condition.
                    #expect(error.type == Self.errorTypes[error.condition], "\(example.label): \(error.condition) is sent as \(String(describing: Self.errorTypes[error.condition]))")
                    if case .trust(.refused(let refused))? = application {
                        #expect(error.condition == "not-authorized" && error.type == .auth)
                        #expect(refused.reason != .peerRefused || example.xml.contains("reason='peerRefused'"), "\(example.label): an unknown reason code")
                    }
                default:
                    break
                }

            case .xml:
                continue
            }
        }

        switch document {
        case "trust": #expect(counts.signatures == 2 && counts.hex == 1 && counts.chains == 2, "\(counts)")
        case "envelope": #expect(counts.signatures == 2 && counts.hex == 2 && counts.bindings == 1 && counts.macs == 1, "\(counts)")
        case "session":
            #expect(counts.sessions == 2 && counts.hex == 1, "\(counts)")
            try SessionVector.checkTable(try Self.text("session"))
        case "catalog": #expect(counts.signatures == 2 && counts.bindings == 1, "\(counts)")
        case "presence": #expect(counts.fingerprints == 3, "\(counts)")
        case "negotiation": #expect(counts.signatures == 5 && counts.bindings == 1 && counts.agreementSignatures == 2 && counts.texts == 2, "\(counts)")
        case "migration":
            // Every message kind has an example, and so has the announcement of the disk image.
            #expect(kinds == ["propose", "reserved", "transferred", "liveMigrated", "started", "cutover", "abort", "status", "state", "announce"],
                    "\(kinds.sorted())")
            #expect(counts.texts == 1, "\(counts)")
        case "federation":
            #expect(kinds == ["select", "provisioned", "status", "state", "renew", "renewed", "teardown", "done", "refused", "ping", "pong"],
                    "\(kinds.sorted())")
            #expect(counts.texts == 1, "\(counts)")
        case "metering":
            #expect(kinds == ["usage", "countersigned", "disputed"], "\(kinds.sorted())")
            #expect(counts.texts == 1, "\(counts)")
        default: Issue.record("no expectations for \(document)")
        }
    }

    // MARK: helpers

    /// The condition → type pairs the code sends (XMPP's `StanzaError` factories).
    static let errorTypes: [String: StanzaError.ErrorType] = Dictionary(uniqueKeysWithValues: [
        StanzaError.badRequest(), .serviceUnavailable(), .featureNotImplemented(), .notAuthorized(), .forbidden(),
        .policyViolation(), .internalServerError(), .itemNotFound(), .notAcceptable(), .resourceConstraint(), .conflict(),
        .jidMalformed(),
    ].map { ($0.condition, $0.type) })

    /// Every error table row (`| when | \`condition\` | \`type\` | text |`) names a condition the
    /// code sends, with the type it sends it with.
    @Test(arguments: documents)
    func documentedErrorTypesAreTheCodes(_ document: String) throws {
        var rows = 0
        for line in try Self.text(document).split(separator: "\n") where line.hasPrefix("|") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            for index in cells.indices.dropLast() {
                guard let condition = Self.code(cells[index]), let type = Self.code(cells[index + 1]),
                    StanzaError.ErrorType(rawValue: type) != nil
                else { continue }
                #expect(Self.errorTypes[condition]?.rawValue == type, "\(document).md: `\(condition)` `\(type)` is not what the code sends: \(line)")
                rows += 1
            }
        }
        #expect(rows >= (document == "presence" ? 5 : 4), "\(document).md: \(rows) error rows")
    }

    static func code(_ cell: String) -> String? {
        guard cell.count > 2, cell.hasPrefix("`"), cell.hasSuffix("`"), !cell.dropFirst().dropLast().contains("`") else { return nil }
        return String(cell.dropFirst().dropLast())
    }

    /// The codes of a `| \`code\` | meaning |` table under `heading`.
    static func codes(in document: String, under heading: String) throws -> [String] {
        let text = try Self.text(document)
        guard let start = text.range(of: "\n\(heading)\n") else { throw DocumentError(description: "\(document).md has no \(heading)") }
        var codes: [String] = []
        for line in text[start.upperBound...].split(separator: "\n") {
            if line.hasPrefix("#") { break }
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if line.hasPrefix("|"), let code = cells.first.flatMap(Self.code) { codes.append(code) }
        }
        return codes
    }

    /// The reason codes are wire values: the documented lists are exactly the code's, so renaming
    /// a Swift case (which would change the wire) fails here.
    @Test func documentedReasonCodesAreTheWireValues() throws {
        #expect(try Self.codes(in: "trust", under: "### Refusal reasons") == TrustRefusalReason.allCases.map(\.rawValue))
        #expect(try Self.codes(in: "envelope", under: "### Refusal codes") == EnvelopeError.Code.allCases.map(\.rawValue))
        #expect(try Self.names(in: "migration", after: "Destination phases:") == DestinationPhase.allCases.map(\.migrationWireName))
        #expect(try Self.names(in: "migration", after: "Source phases:") == SourcePhase.allCases.map(\.migrationWireName))
        #expect(try Self.names(in: "federation", after: "Service phases:") == FederatedService.Phase.allCases.map(\.federationWireName))
        #expect(Set(try Self.names(in: "federation", after: "| `protocolName` | one of", end: "\n")) == ServiceInterface.knownProtocols)
        #expect(try Self.names(in: "migration", after: "Image formats are named as `qemu-img` names\nthem:") == ImageFormat.allCases.map(\.migrationWireName))
    }

    /// The `code` names after `lead`, up to the first `end` (a full stop: the end of a sentence).
    static func names(in document: String, after lead: String, end: Character = ".") throws -> [String] {
        let text = try Self.text(document)
        guard let start = text.range(of: lead) else { throw DocumentError(description: "\(document).md has no \(lead)") }
        let paragraph = text[start.upperBound...].prefix { $0 != end }
        return paragraph.split(separator: "`", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
    }

    /// The byte layouts the documents describe field by field, rebuilt here from the tables'
    /// rules and compared with the code's.
    @Test func signedLayoutsAreTheDocumentedOnes() throws {
        func field(_ bytes: [UInt8]) -> [UInt8] {
            let count = UInt32(bytes.count)
            return [UInt8(count >> 24), UInt8(count >> 16 & 0xff), UInt8(count >> 8 & 0xff), UInt8(count & 0xff)] + bytes
        }
        let payload = Array("<x xmlns='urn:y'/>".utf8)
        let nonce: [UInt8] = Array(1...16), answered: [UInt8] = Array(17...32)
        let timestamp: Int64 = -2
        let request = SignedEnvelope.signedBytes(
            sender: "Broker@Cloud1.Example/res", recipient: "broker@cloud2.example", namespace: "urn:intercloud:catalog:0",
            timestampMilliseconds: timestamp, nonce: nonce, payload: payload)
        let answer = SignedEnvelope.signedBytes(
            sender: "broker@cloud2.example/broker", recipient: "broker@cloud1.example", namespace: "urn:intercloud:catalog:0",
            timestampMilliseconds: 1_780_315_200_164, nonce: answered, inReplyTo: nonce, payload: payload)
        let common = field(Array("urn:intercloud:envelope:0".utf8))
        #expect(request == common + field(Array("broker@cloud1.example".utf8)) + field(Array("broker@cloud2.example".utf8))
            + field(Array("urn:intercloud:catalog:0".utf8)) + field([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe])
            + field(nonce) + field(Array("request".utf8)) + field([]) + field(payload))
        #expect(answer == common + field(Array("broker@cloud2.example".utf8)) + field(Array("broker@cloud1.example".utf8))
            + field(Array("urn:intercloud:catalog:0".utf8)) + field([0, 0, 0x01, 0x9e, 0x83, 0x0e, 0x1a, 0xa4])
            + field(answered) + field(Array("answer".utf8)) + field(nonce) + field(payload))
        #expect(Array(SignedEnvelope.label.utf8).count == 25 && Array(TrustTranscript.label.utf8).count == 28)
    }
}

/// session.md's test vector: broker@cloud1.example and broker@cloud2.example with the X25519
/// private keys of RFC 7748 §6.1 (Alice's for the requester, Bob's for the responder), through
/// the code's own exchange.
struct SessionVector {
    static let requester = "broker@cloud1.example", responder = "broker@cloud2.example"
    static let requesterPrivate = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
    static let responderPrivate = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
    /// RFC 7748's, for these keys.
    static let sharedSecret = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"

    let offer: SessionExchange.Offer
    let answer: [UInt8]
    let accept: SessionExchange.Accept
    let responderSession: EnvelopeSession
    let requesterSession: EnvelopeSession

    init() throws {
        offer = try SessionExchange.Offer(privateKey: Self.bytes(Self.requesterPrivate))
        (answer, responderSession) = try SessionExchange.accept(
            offer: offer.payload, requester: Self.requester, responder: Self.responder, fingerprint: "", now: ProtocolDocumentTests.exampleTime,
            privateKey: Self.bytes(Self.responderPrivate))
        accept = try SessionExchange.Accept.decode(answer)
        requesterSession = try offer.complete(accept: answer, requester: Self.requester, responder: Self.responder, fingerprint: "", now: ProtocolDocumentTests.exampleTime)
    }

    static func bytes(_ hex: String) -> [UInt8] {
        stride(from: 0, to: hex.count, by: 2).map { UInt8(hex.dropFirst($0).prefix(2), radix: 16)! }
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// The document's test vector table holds the code's values.
    static func checkTable(_ text: String) throws {
        let vector = try SessionVector()
        #expect(vector.requesterSession.key == vector.responderSession.key && vector.requesterSession.id == vector.responderSession.id)
        let key = vector.requesterSession.key.withUnsafeBytes { hex($0) }
        for (name, value) in [
            ("requester private key", requesterPrivate), ("responder private key", responderPrivate), ("shared secret", sharedSecret),
            ("MAC key", key), ("session id", hex(vector.requesterSession.id)),
        ] {
            #expect(text.contains("| \(name) | `\(value)` |"), "session.md: the \(name) is not \(value)")
        }
    }
}

extension ProtocolDocumentTests.Decoded {
    var envelopePayload: ProtocolDocumentTests.Decoded? {
        if case .envelope(_, let payload) = self { return payload }
        return nil
    }
}
