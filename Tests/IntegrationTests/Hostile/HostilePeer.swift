import Broker
import Crypto
import Foundation
import Metering
import Migration
import Peering
import Policy
import Providers
import Synchronization
import TestSupport
import Testing
import Transfer
import Trust
import XMPP
import XMLModel

/// The attacker of the hostile-peer harness (`HostilePeerHarnessTests`): a broker built from this
/// project's own code, an in-process `BrokerNode` with its own PKI leaf and policy file, that the
/// victim (a real `intercloud serve`) trusts after the real trust handshake and with which it
/// negotiates real agreements. Everything the attacker sends is a signed request over the real
/// transport (`SignedRequests.request`, the Transfer module's TLS sender): the victim cannot tell
/// it from an honest broker until it looks at what it says.
///
/// Each misbehaviour is one method that performs the lie and returns what the victim answered
/// (`VictimAnswer`: the stanza error condition and text, or the answer's payload):
///
/// - `sendUsageRecord(lying:)`: usage records signed with the attacker's key as the agreement's
///   provider, lying as `UsageLie` says (a period before or after the agreement, overlapping a
///   countersigned record, running seconds that overflow, vCPU seconds above the agreement, calls
///   billed without federated services);
/// - `propose(...)`: migration proposals, under any id, including one of the victim's own
///   migrations (`MigrationProposal`, sent as the source would);
/// - `announce(...)` + `claimTransferred(...)`: a transfer announced for a reservation and never
///   connected to, with `transferred` claimed or not;
/// - `sendImage(...)`: a disk image (a hostile qcow2 made by the real `qemu-img`) sent over the
///   real mutual-TLS transfer channel, then `transferred`: the victim's import path end to end;
/// - `requestNegotiation(...)`: negotiation requests, one per id, as fast as answered (a flood);
/// - `actAsDestination(_:)`: the switch for migrations the victim sends to the attacker
///   (`DestinationLie`): refuse them (optionally holding the answer until `releaseProposals()`),
///   or answer a live proposal with a hypervisor URI of the attacker's choosing;
/// - `blackHole(namespace:)`: never answer the victim's messages in a namespace in time (its
///   negotiations with the attacker stay open until its own timers end them).
final class HostilePeer: Sendable {
    /// How a usage record signed by the attacker as provider lies.
    enum UsageLie: String, Sendable, CaseIterable {
        /// The period is one of the agreement's, an hour before it starts.
        case beforeAgreement
        /// The period ends after the agreement does.
        case afterAgreement
        /// The first period again, under a new sequence number, once the first record was countersigned.
        case overlapsSettled
        /// Ten instance types whose running seconds (each the largest a record can carry) overflow Int64 together.
        case runningSecondsOverflow
        /// vCPU seconds no agreement of this size could run (the largest a record can carry).
        case vcpuAboveAgreement
        /// A billion calls billed to a consumer that selected no federated service.
        case callsWithoutServices
    }

    /// How the attacker answers the victim when the victim is the source of a migration to it.
    enum DestinationLie: Sendable {
        /// Every proposal is answered `abort`; with `hold`, only after `releaseProposals()` (or 30 s).
        case refuseProposals(hold: Bool)
        /// A live proposal is answered `reserved` with this hypervisor URI (and paths of its
        /// choosing); `status` is answered "reserved, the guest is not here"; `abort` "rolled back".
        case offerLiveTarget(uri: String)
    }

    let broker: RunningBroker
    let jid: String
    let keyPath: String
    let chainPath: String
    let victim: JID
    let victimBare: String
    private let seen = MessageLog()
    private let gate = Latch()

    var node: BrokerNode { broker.node }

    init(broker: RunningBroker, jid: String, keyPath: String, chainPath: String, victim: JID) {
        self.broker = broker
        self.jid = jid
        self.keyPath = keyPath
        self.chainPath = chainPath
        self.victim = victim
        victimBare = victim.bare.description
    }

    /// Migration messages the victim sent to the attacker's destination route, in order.
    var receivedFromVictim: [MigrationMessage] { seen.all }

    // MARK: the transport

    /// One signed request to the victim; its answer or its stanza error.
    func request(_ namespace: String, _ payload: [UInt8], type: Stanza.IQType = .set, timeout: Duration = .seconds(15)) async -> VictimAnswer {
        do {
            return VictimAnswer(payload: try await node.signed.request(type, to: victim, namespace: namespace, payload: payload, timeout: timeout))
        } catch XMPPError.stanza(let error) {
            return VictimAnswer(condition: error.condition, text: error.text)
        } catch {
            return VictimAnswer(condition: "no-answer", text: "\(error)")
        }
    }

    // MARK: usage records (the attacker as the agreement's provider)

    static let meteringNamespace = "urn:intercloud:metering:0"

    /// A record of the agreement's `index`-th period (from its start, one hour each) with no usage:
    /// what an honest provider with nothing placed sends.
    func usageRecord(_ agreement: Agreement, period index: Int, sequence: Int64, usage: MeasuredUsage = MeasuredUsage()) -> UsageRecord {
        let from = agreement.terms.period.from!.addingTimeInterval(TimeInterval(index) * 3600)
        return UsageRecord(
            agreementID: agreement.id, provider: jid, consumer: victimBare, period: MeteringPeriod(from: from, until: from.addingTimeInterval(3600)),
            sequence: sequence, usage: usage, createdAt: from.addingTimeInterval(3600))
    }

    /// Sends `record` signed with the attacker's own broker key (the key the victim pinned).
    func sendUsageRecord(_ record: UsageRecord) async throws -> VictimAnswer {
        let bytes = record.canonicalBytes()
        let signature = try #require(node.trust?.service.identity).sign(bytes)
        let payload = XMLElement(
            "usage", namespace: Self.meteringNamespace,
            attributes: ["record": Data(bytes).base64EncodedString(), "signature": Data(signature).base64EncodedString()])
        return await request(Self.meteringNamespace, Array(payload.serialized().utf8))
    }

    /// The lying record for `lie` under `agreement` (sequence numbers are the caller's).
    func lyingRecord(_ lie: UsageLie, _ agreement: Agreement, sequence: Int64) -> UsageRecord {
        switch lie {
        case .beforeAgreement:
            return usageRecord(agreement, period: -1, sequence: sequence)
        case .afterAgreement:
            let days = agreement.terms.period.until!.timeIntervalSince(agreement.terms.period.from!) / 3600
            return usageRecord(agreement, period: Int(days), sequence: sequence)
        case .overlapsSettled:
            return usageRecord(agreement, period: 0, sequence: sequence)
        case .runningSecondsOverflow:
            // The largest count a canonical record can carry (18 digits), ten times over.
            return usageRecord(agreement, period: 2, sequence: sequence, usage: MeasuredUsage(instanceTypes: (0..<10).map {
                InstanceTypeUsage(instanceType: "sim.small.\($0)", instances: Self.largestCount, runningSeconds: Self.largestCount)
            }))
        case .vcpuAboveAgreement:
            return usageRecord(agreement, period: 3, sequence: sequence, usage: MeasuredUsage(vcpuSeconds: Self.largestCount))
        case .callsWithoutServices:
            return usageRecord(agreement, period: 4, sequence: sequence, usage: MeasuredUsage(calls: 1_000_000_000))
        }
    }

    /// The largest number a canonical usage record carries (18 digits).
    static let largestCount: Int64 = 999_999_999_999_999_999

    func sendUsageRecord(lying lie: UsageLie, _ agreement: Agreement, sequence: Int64) async throws -> (UsageRecord, VictimAnswer) {
        let record = lyingRecord(lie, agreement, sequence: sequence)
        return (record, try await sendUsageRecord(record))
    }

    // MARK: migrations (the attacker as source)

    static func wire(_ message: MigrationMessage) throws -> [UInt8] {
        let json = String(decoding: try message.encoded(), as: UTF8.self)
        return Array(XMLElement("migration", namespace: MigrationMessage.namespace, text: json).serialized().utf8)
    }

    static func unwire(_ bytes: [UInt8]) -> MigrationMessage? {
        guard let element = try? XMLElement.parse(String(decoding: bytes, as: UTF8.self), maxBytes: 64 * 1024),
            element.name == "migration", element.namespace == MigrationMessage.namespace
        else { return nil }
        return try? MigrationMessage.decode(Data(element.text.utf8))
    }

    func send(_ message: MigrationMessage, timeout: Duration = .seconds(20)) async throws -> VictimAnswer {
        await request(MigrationMessage.namespace, try Self.wire(message), timeout: timeout)
    }

    /// A cold migration proposal under `migrationID` (any id: the attacker chooses it).
    func propose(migrationID: String, agreementID: String, spec: MigratingInstanceSpec) async throws -> VictimAnswer {
        try await send(MigrationMessage(migrationID: migrationID, body: .propose(MigrationProposal(agreementID: agreementID, instance: spec))))
    }

    static func spec(name: String = "hostile", formats: [ImageFormat] = [.qcow2], diskGiB: Int = 20) -> MigratingInstanceSpec {
        MigratingInstanceSpec(
            name: name, instanceType: "sim.small", vCPU: 1, memoryMiB: 2048, diskGiB: diskGiB, imageFormats: formats, canConvert: false)
    }

    /// Announces a file of `bytes` and `sha256` for the reservation's transfer, as a source does
    /// before it connects (the victim registers the transfer with its TLS server).
    func announce(migrationID: String, offer: Migration.TransferOffer, bytes: Int64, sha256: String) async -> VictimAnswer {
        let announcement = TransferAnnouncement(migrationID: migrationID, token: offer.token, size: bytes, sha256: sha256)
        return await request(TransferAnnouncement.namespace, announcement.payload)
    }

    /// Says the disk was sent (`transferred`) and waits up to `timeout` for the victim's answer.
    func claimTransferred(migrationID: String, image: TransferredImage, timeout: Duration) async throws -> VictimAnswer {
        try await send(MigrationMessage(migrationID: migrationID, body: .transferred(image)), timeout: timeout)
    }

    /// Sends `file` over the victim's real transfer channel (mutual TLS with the attacker's broker
    /// certificate, the victim's pinned fingerprint), announced first, then says `transferred`.
    func sendImage(_ file: URL, format: ImageFormat, migrationID: String, offer: Migration.TransferOffer) async throws -> (announce: VictimAnswer, transferred: VictimAnswer) {
        let data = try Data(contentsOf: file)
        let sha256 = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        let announced = await announce(migrationID: migrationID, offer: offer, bytes: Int64(data.count), sha256: sha256)
        guard announced.condition == nil else { return (announced, announced) }
        let identity = try TransferIdentity(certificateChainFile: URL(fileURLWithPath: chainPath), privateKeyFile: URL(fileURLWithPath: keyPath))
        let fingerprint = try #require(try node.trust?.service.store.pin(for: victimBare)?.fingerprint)
        _ = try await TransferSender(identity: identity).send(
            file: file, host: offer.host, port: try #require(UInt16(offer.port)), transferID: migrationID, token: offer.token,
            expectedPeerFingerprint: fingerprint)
        let transferred = try await claimTransferred(
            migrationID: migrationID, image: TransferredImage(format: format, bytes: Int64(data.count), sha256: sha256), timeout: .seconds(60))
        return (announced, transferred)
    }

    // MARK: migrations (the attacker as destination)

    /// Serves `urn:intercloud:migration:0` at the attacker the hostile way (replacing its own route).
    func actAsDestination(_ lie: DestinationLie) {
        node.signed.serve(namespace: MigrationMessage.namespace, maxPayloadBytes: 64 * 1024) { [seen, gate] request throws(StanzaError) in
            guard let message = Self.unwire(request.payload) else { throw .badRequest("not a migration message") }
            seen.append(message)
            let body: MigrationMessage.Body
            switch (message.body, lie) {
            case (.propose, .refuseProposals(let hold)):
                if hold { await gate.wait(timeout: .seconds(30)) }
                body = .abort(reason: "refused by the hostile peer")
            case (.propose(let proposal), .offerLiveTarget(let uri)):
                let name = proposal.live?.instanceID ?? "guest"
                body = .reserved(MigrationReservation(
                    sizeID: "lv.tiny", acceptedFormats: [], region: "attacker-a", offer: Migration.TransferOffer(host: "", port: "", token: ""),
                    live: LiveMigrationOffer(uri: uri, diskPath: "/var/lib/attacker/\(name).qcow2", consoleLogPath: "/var/lib/attacker/\(name).log")))
            case (.status, .offerLiveTarget):
                body = .state(MigrationPeerState(phase: .reserved, guest: .absent))
            case (.abort, _):
                body = .state(MigrationPeerState(phase: .rolledBack))
            default:
                body = .state(MigrationPeerState(phase: .unknown))
            }
            do { return try Self.wire(MigrationMessage(migrationID: message.migrationID, body: body)) } catch {
                throw .internalServerError("\(error)")
            }
        }
    }

    /// Lets held proposals be answered (`DestinationLie.refuseProposals(hold: true)`).
    func releaseProposals() { gate.open() }

    // MARK: negotiations (the attacker as consumer)

    static let negotiationNamespace = "urn:intercloud:negotiation:0"

    /// One negotiation request under `id`, in the wire form the victim reads.
    func requestNegotiation(id: String, terms: Terms) async throws -> VictimAnswer {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        encoder.outputFormatting = .sortedKeys
        let message = NegotiationMessage(negotiationID: id, messageID: "\(id)/1", body: .request(terms))
        let json = String(decoding: try encoder.encode(message), as: UTF8.self)
        return await request(Self.negotiationNamespace, Array(XMLElement("negotiation", namespace: Self.negotiationNamespace, text: json).serialized().utf8))
    }

    /// Answers nothing in `namespace` for a minute (replacing the attacker's own route): the
    /// victim's requests to it time out.
    func blackHole(namespace: String) {
        node.signed.serve(namespace: namespace) { _ throws(StanzaError) in
            try? await Task.sleep(for: .seconds(60))
            throw .serviceUnavailable("no answer")
        }
    }
}

/// What the victim answered to one request of the attacker: its stanza error, or its payload.
struct VictimAnswer: Sendable, CustomStringConvertible {
    var condition: String?
    var text: String?
    var payload: [UInt8] = []

    /// The victim's answer as a migration message, when it is one.
    var migration: MigrationMessage? { condition == nil ? HostilePeer.unwire(payload) : nil }

    /// The text of an `abort` the victim answered, if it did.
    var abortReason: String? {
        if case .abort(let reason)? = migration?.body { return reason }
        return nil
    }

    var reservation: MigrationReservation? {
        if case .reserved(let reservation)? = migration?.body { return reservation }
        return nil
    }

    var description: String {
        if let condition { return "\(condition): \(text ?? "")" }
        return migration.map { "\($0.kind): \($0.body)" } ?? String(decoding: payload, as: UTF8.self)
    }
}

/// Messages received, in order, from any thread.
final class MessageLog: Sendable {
    private let messages = Mutex<[MigrationMessage]>([])

    func append(_ message: MigrationMessage) { messages.withLock { $0.append(message) } }
    var all: [MigrationMessage] { messages.withLock { $0 } }
}

/// Opens once; waiters go on then, or at their timeout.
final class Latch: Sendable {
    private let isOpen = Atomic<Bool>(false)

    func open() { isOpen.store(true, ordering: .releasing) }

    func wait(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while !isOpen.load(ordering: .acquiring), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
