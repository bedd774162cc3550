import Foundation
import Providers
import Testing
import XMPP

@testable import Migration

/// The JSON of `urn:intercloud:migration:0` byte for byte (docs/protocol/migration.md): one golden
/// payload per message kind, with and without the optional members. The names on the wire are
/// written out in the coding of `MigrationMessage` and the types it carries, so renaming a Swift
/// property or case cannot change them; if one of these tests fails, the wire changed.
@Suite struct MigrationWireGoldenTests {
    static let spec = MigratingInstanceSpec(
        name: "web-1", instanceType: "m1.small", vCPU: 2, memoryMiB: 2048, diskGiB: 20, imageFormats: [.qcow2, .raw],
        canConvert: true, addresses: ["10.0.0.5"], networkName: "default", region: "eu-west")
    static let specJSON = #"{"addresses":["10.0.0.5"],"canConvert":true,"diskGiB":20,"imageFormats":["qcow2","raw"],"instanceType":"m1.small","memoryMiB":2048,"name":"web-1","networkName":"default","region":"eu-west","vCPU":2}"#
    static let minimalSpec = MigratingInstanceSpec(
        name: "web-1", instanceType: "m1.small", vCPU: 1, memoryMiB: 512, diskGiB: 0, imageFormats: [], canConvert: true)
    static let minimalSpecJSON = #"{"addresses":[],"canConvert":true,"diskGiB":0,"imageFormats":[],"instanceType":"m1.small","memoryMiB":512,"name":"web-1","vCPU":1}"#
    static let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    static let instance = StartedInstance(instanceID: "i-7f3a", addresses: ["10.1.0.7"])

    static let golden: [(MigrationMessage.Body, String)] = [
        (.propose(MigrationProposal(agreementID: "agr-1", instance: spec)),
         #"{"propose":{"_0":{"agreementID":"agr-1","instance":\#(specJSON)}}}"#),
        (.propose(MigrationProposal(agreementID: "agr-1", instance: minimalSpec)),
         #"{"propose":{"_0":{"agreementID":"agr-1","instance":\#(minimalSpecJSON)}}}"#),
        (.propose(MigrationProposal(agreementID: "agr-1", instance: spec, live: LiveMigrationRequest(instanceID: "6f1c2d3e", diskBytes: 21_474_836_480))),
         #"{"propose":{"_0":{"agreementID":"agr-1","instance":\#(specJSON),"live":{"diskBytes":21474836480,"instanceID":"6f1c2d3e"}}}}"#),
        (.reserved(MigrationReservation(
            sizeID: "m1.small", acceptedFormats: [.qcow2, .raw], region: "eu-west",
            offer: TransferOffer(host: "transfer.cloud2.example", port: "7443", token: "0a1b2c"))),
         #"{"reserved":{"_0":{"acceptedFormats":["qcow2","raw"],"offer":{"host":"transfer.cloud2.example","port":"7443","token":"0a1b2c"},"region":"eu-west","sizeID":"m1.small"}}}"#),
        (.reserved(MigrationReservation(
            sizeID: "m1.small", acceptedFormats: [], region: "eu-west", offer: TransferOffer(host: "", port: "", token: ""),
            live: LiveMigrationOffer(uri: "qemu+tls://hv1.cloud2.example/system", diskPath: "/var/lib/intercloud/m/disk.qcow2", consoleLogPath: "/var/lib/intercloud/m/console.log"))),
         #"{"reserved":{"_0":{"acceptedFormats":[],"live":{"consoleLogPath":"\/var\/lib\/intercloud\/m\/console.log","diskPath":"\/var\/lib\/intercloud\/m\/disk.qcow2","uri":"qemu+tls:\/\/hv1.cloud2.example\/system"},"offer":{"host":"","port":"","token":""},"region":"eu-west","sizeID":"m1.small"}}}"#),
        (.transferred(TransferredImage(format: .qcow2, bytes: 1_073_741_824, sha256: sha)),
         #"{"transferred":{"_0":{"bytes":1073741824,"format":"qcow2","sha256":"\#(sha)"}}}"#),
        (.liveMigrated, #"{"liveMigrated":{}}"#),
        (.started(instance), #"{"started":{"_0":{"addresses":["10.1.0.7"],"instanceID":"i-7f3a"}}}"#),
        (.cutover, #"{"cutover":{}}"#),
        (.abort(reason: "image format vpc was not accepted"), #"{"abort":{"reason":"image format vpc was not accepted"}}"#),
        (.status, #"{"status":{}}"#),
        (.state(MigrationPeerState(phase: .unknown)), #"{"state":{"_0":{"phase":"unknown"}}}"#),
        (.state(MigrationPeerState(phase: .rolledBack, instance: instance, reason: "source aborted: operator", guest: .arriving, sourcePhase: .rolledBack)),
         #"{"state":{"_0":{"guest":"arriving","instance":{"addresses":["10.1.0.7"],"instanceID":"i-7f3a"},"phase":"rolledBack","reason":"source aborted: operator","sourcePhase":"rolledBack"}}}"#),
    ]

    /// The JSON is the text of <migration/>: XML-escaped (`&`, `<`, `>`, `'`, `"` as entities).
    static func xml(_ json: String) -> String {
        json.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "'", with: "&apos;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    @Test func everyMessageKindEncodesToItsGoldenBytes() throws {
        for (body, bodyJSON) in Self.golden {
            let message = MigrationMessage(migrationID: "mig-1", body: body)
            let json = #"{"body":\#(bodyJSON),"migrationID":"mig-1"}"#
            #expect(String(decoding: try message.encoded(), as: UTF8.self) == json, "\(message.kind)")
            let payload = try MigrationWire.encode(message)
            #expect(String(decoding: payload, as: UTF8.self) == "<migration xmlns='urn:intercloud:migration:0'>\(Self.xml(json))</migration>", "\(message.kind)")
            // The decoder reads the golden text back to the same message (bounds not checked here).
            #expect(try JSONDecoder().decode(MigrationMessage.self, from: Data(json.utf8)) == message, "\(message.kind)")
        }
    }

    /// The phases, guest presences and image formats are wire names: every value, in `state` and
    /// in the lists that carry them.
    @Test func enumeratedValuesHaveTheirWireNames() throws {
        let destination = ["unknown", "authorizing", "inspecting", "offering", "preparing", "reserved", "receiving", "importing", "creating",
                           "starting", "arriving", "started", "completing", "completed", "rollingBack", "rolledBack"]
        let source = ["authorizing", "proposing", "stopping", "poweringOff", "snapshotting", "exporting", "converting", "transferring",
                      "migratingLive", "verifyingLive", "announcing", "cuttingOver", "terminating", "cleaningUp", "handingOverMetering",
                      "completed", "rollingBack", "rolledBack"]
        #expect(DestinationPhase.allCases.count == destination.count && SourcePhase.allCases.count == source.count)
        for (phase, name) in zip(DestinationPhase.allCases, destination) {
            let message = MigrationMessage(migrationID: "m", body: .state(MigrationPeerState(phase: phase)))
            let json = #"{"body":{"state":{"_0":{"phase":"\#(name)"}}},"migrationID":"m"}"#
            #expect(String(decoding: try message.encoded(), as: UTF8.self) == json)
            #expect(try MigrationMessage.decode(Data(json.utf8)) == message)
        }
        for (phase, name) in zip(SourcePhase.allCases, source) {
            let message = MigrationMessage(migrationID: "m", body: .state(MigrationPeerState(phase: .unknown, sourcePhase: phase)))
            let json = #"{"body":{"state":{"_0":{"phase":"unknown","sourcePhase":"\#(name)"}}},"migrationID":"m"}"#
            #expect(String(decoding: try message.encoded(), as: UTF8.self) == json)
            #expect(try MigrationMessage.decode(Data(json.utf8)) == message)
        }
        for (guest, name) in [(GuestPresence.absent, "absent"), (.arriving, "arriving"), (.running, "running")] {
            let message = MigrationMessage(migrationID: "m", body: .state(MigrationPeerState(phase: .reserved, guest: guest)))
            let json = #"{"body":{"state":{"_0":{"guest":"\#(name)","phase":"reserved"}}},"migrationID":"m"}"#
            #expect(String(decoding: try message.encoded(), as: UTF8.self) == json)
            #expect(try MigrationMessage.decode(Data(json.utf8)) == message)
        }
        let formats = ["raw", "qcow2", "vmdk", "vdi", "vhdx", "vpc"]
        #expect(ImageFormat.allCases.count == formats.count)
        for (format, name) in zip(ImageFormat.allCases, formats) {
            let message = MigrationMessage(migrationID: "m", body: .transferred(TransferredImage(format: format, bytes: 1, sha256: Self.sha)))
            let json = #"{"body":{"transferred":{"_0":{"bytes":1,"format":"\#(name)","sha256":"\#(Self.sha)"}}},"migrationID":"m"}"#
            #expect(String(decoding: try message.encoded(), as: UTF8.self) == json)
            #expect(try MigrationMessage.decode(Data(json.utf8)) == message)
        }
    }

    /// What a peer may leave out or add, and what it must not send.
    @Test func optionalMembersAndUnknownNames() throws {
        // Unknown members are ignored; optional members may be absent or null.
        let extra = #"{"migrationID":"m","extra":1,"body":{"state":{"_0":{"phase":"started","reason":null,"later":true}}}}"#
        #expect(try MigrationMessage.decode(Data(extra.utf8)) == MigrationMessage(migrationID: "m", body: .state(MigrationPeerState(phase: .started))))
        for bad in [
            #"{"migrationID":"m","body":{"haggle":{}}}"#,
            #"{"migrationID":"m","body":{"cutover":{},"status":{}}}"#,
            #"{"migrationID":"m","body":{}}"#,
            #"{"migrationID":"m","body":{"state":{"_0":{"phase":"Started"}}}}"#,
            #"{"migrationID":"m","body":{"state":{"_0":{"phase":"started","guest":"gone"}}}}"#,
            #"{"migrationID":"m","body":{"transferred":{"_0":{"bytes":1,"format":"vhd","sha256":"\#(Self.sha)"}}}}"#,
            #"{"migrationID":"m","body":{"abort":{}}}"#,
            #"{"body":{"status":{}}}"#,
        ] {
            #expect(throws: MigrationMessageError.self, "\(bad)") { try MigrationMessage.decode(Data(bad.utf8)) }
        }
    }
}
