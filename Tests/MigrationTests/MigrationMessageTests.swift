import Foundation
import Providers
import Testing
@testable import Migration

@Suite("MigrationMessage: encoding and validation of peer input")
struct MigrationMessageTests {
    static let spec = MigratingInstanceSpec(
        name: "web-1", instanceType: "sim.nano", vCPU: 1, memoryMiB: 512, diskGiB: 1, imageFormats: [.raw, .qcow2],
        canConvert: true, addresses: ["198.51.100.7"], networkName: "lan", region: "eu-1")

    @Test("every message kind survives encode and decode")
    func roundTrip() throws {
        let sha = String(repeating: "ab", count: 32)
        let bodies: [MigrationMessage.Body] = [
            .propose(MigrationProposal(agreementID: "agr-1", instance: Self.spec)),
            .reserved(MigrationReservation(sizeID: "sim.nano", acceptedFormats: [.qcow2], region: "eu-1",
                                           offer: TransferOffer(host: "cloud2.test", port: "7443", token: "t0k3n"))),
            .transferred(TransferredImage(format: .qcow2, bytes: 1234, sha256: sha)),
            .started(StartedInstance(instanceID: "sim-i-1", addresses: ["198.51.100.9"])),
            .cutover, .abort(reason: "no"), .status,
            .state(MigrationPeerState(phase: .started, instance: StartedInstance(instanceID: "i-1", addresses: []))),
        ]
        for body in bodies {
            let message = MigrationMessage(migrationID: "mig-1", body: body)
            #expect(try MigrationMessage.decode(try message.encoded()) == message)
        }
    }

    @Test("oversized, malformed and out-of-bounds messages are refused with a reason")
    func hostileInput() throws {
        func refused(_ json: String) -> String? {
            do { _ = try MigrationMessage.decode(Data(json.utf8)); return nil } catch { return error.message }
        }
        #expect(refused(String(repeating: " ", count: 20_000))?.contains("limit") == true)
        #expect(refused("{\"migrationID\":\"x\"}")?.contains("not a migration message") == true)
        #expect(refused(#"{"migrationID":"../etc","body":{"status":{}}}"#)?.contains("migration id") == true)
        #expect(refused(#"{"migrationID":"m","body":{"transferred":{"_0":{"format":"raw","bytes":5,"sha256":"XYZ"}}}}"#)?.contains("sha256") == true)
        #expect(refused(#"{"migrationID":"m","body":{"transferred":{"_0":{"format":"iso","bytes":5,"sha256":"00"}}}}"#) != nil)
        var spec = Self.spec
        spec.addresses = Array(repeating: "10.0.0.1", count: 17)
        let tooMany = MigrationMessage(migrationID: "m", body: .propose(MigrationProposal(agreementID: "a", instance: spec)))
        #expect(throws: MigrationMessageError.self) { try tooMany.validate() }
        spec = Self.spec
        spec.vCPU = 0
        let noCPU = MigrationMessage(migrationID: "m", body: .propose(MigrationProposal(agreementID: "a", instance: spec)))
        #expect(throws: MigrationMessageError.self) { try noCPU.validate() }
        spec = Self.spec
        spec.name = "web\n1"
        let control = MigrationMessage(migrationID: "m", body: .propose(MigrationProposal(agreementID: "a", instance: spec)))
        #expect(throws: MigrationMessageError.self) { try control.validate() }
    }
}
