import Backup
import Crypto
import Foundation
import Providers
import TestSupport
import Testing

/// Backups in moto's S3 with every request's signature checked, cross-checked with awscli.
@Suite("backup to S3 (moto)", .serialized, .timeLimit(.minutes(5)))
struct BackupS3Tests {
    static let bucket = "cloud1-backups"

    func policy(_ session: TestMoto.Session, _ f: BackupFixture) -> BackupPolicy {
        BackupPolicy(
            name: "nightly", instances: ["web-1"], keepLast: 2, powerTimeout: 10,
            target: .s3(endpoint: session.endpoint, region: "us-east-1", bucket: Self.bucket, prefix: "cloud1/"))
    }

    /// A fixture whose stores sign as `session` (the runner reads keys from its environment).
    func fixture(_ session: TestMoto.Session, observer: BackupRunner.JournalObserver? = nil, directory: TemporaryDirectory? = nil) throws -> BackupFixture {
        try BackupFixture(directory: directory, observer: observer, environment: session.environment)
    }

    func aws(_ session: TestMoto.Session, _ arguments: [String]) throws -> String {
        let aws = try RequiredProgram.path("aws", package: "awscli from PyPI")
        return try runProgram(aws, ["--endpoint-url", session.endpoint.absoluteString] + arguments, environment: session.environment)
    }

    @Test("a run stores disk and manifest under the prefix; awscli downloads the same bytes; a second cloud restores from the bucket")
    func runAndRestore() async throws {
        let session = try TestMoto.shared.session()
        let f = try fixture(session)
        try await f.instance("web-1")
        let run = try await f.runner.run(policy(session, f))
        #expect(run.phase == .completed, "\(run.reason ?? "")")
        let id = run.units[0].backupID
        // A prefix without "/": moto mis-checks signatures of query values with one (see S3ObjectStore.serverPrefix).
        let listed = try aws(session, ["s3api", "list-objects-v2", "--bucket", Self.bucket, "--prefix", "cloud1", "--query", "Contents[].Key"])
        #expect(listed.contains("cloud1/nightly/\(id)/disk.qcow2") && listed.contains("cloud1/nightly/\(id)/manifest.json"), "\(listed)")
        let copy = f.directory.url.appendingPathComponent("aws-copy.qcow2")
        _ = try aws(session, ["s3", "cp", "--quiet", "s3://\(Self.bucket)/cloud1/nightly/\(id)/disk.qcow2", copy.path])
        let digest = SHA256.hash(data: try Data(contentsOf: copy)).map { String(format: "%02x", $0) }.joined()
        #expect(digest == run.units[0].storedSHA256)

        // Another cloud, another journal: only the bucket is shared.
        let other = try fixture(session)
        let restored = try await other.runner.restore(
            backupID: id, policy: "nightly", target: policy(session, f).target, instanceName: "web-1", sizeID: "sim.nano")
        #expect(restored.phase == .restored, "\(restored.reason ?? "")")
        #expect(try await other.cloud.describe(instance: try #require(restored.instanceID)).state == .running)
    }

    @Test("a run killed before its upload leaves an unfinished multipart upload; resume aborts it and finishes")
    func resumeAbortsUpload() async throws {
        let session = try TestMoto.shared.session()
        let killed = KillAtStep("upload")
        let f = try fixture(session, observer: killed.observer)
        try await f.instance("web-1")
        await #expect(throws: BackupError.halted) { try await f.runner.run(policy(session, f)) }
        let unit = try #require(try f.journal.runs().first?.units.first)
        let key = "cloud1/nightly/\(unit.backupID)/disk.qcow2"
        // What a process killed mid-upload leaves in S3: an upload with parts never completed.
        _ = try aws(session, ["s3api", "create-multipart-upload", "--bucket", Self.bucket, "--key", key])
        #expect(try aws(session, ["s3api", "list-multipart-uploads", "--bucket", Self.bucket]).contains(key))
        let after = try fixture(session, directory: f.directory)
        let run = try #require(try await after.runner.resume().runs.first)
        #expect(run.phase == .completed, "\(run.reason ?? "")")
        #expect(!(try aws(session, ["s3api", "list-multipart-uploads", "--bucket", Self.bucket]).contains(key)))
    }

    @Test("a wrong secret is refused by S3's signature check, with nothing stored")
    func wrongSecret() async throws {
        var session = try TestMoto.shared.session()
        session.secretAccessKey = "not-the-secret"
        let f = try fixture(session)
        try await f.instance("web-1")
        await #expect {
            try await f.runner.run(policy(session, f))
        } throws: { error in
            "\(error)".contains("authentication") || "\(error)".contains("Signature")
        }
        #expect(try f.journal.runs().isEmpty)
    }

    @Test("an oversized or forged manifest in the bucket is listed as refused, never read whole")
    func hostileManifest() async throws {
        let session = try TestMoto.shared.session()
        let f = try fixture(session)
        try await f.instance("web-1")
        let run = try await f.runner.run(policy(session, f))
        let big = f.directory.url.appendingPathComponent("big.json")
        try Data(repeating: 0x7b, count: BackupManifest.maximumBytes * 4).write(to: big)
        _ = try aws(session, ["s3", "cp", "--quiet", big.path, "s3://\(Self.bucket)/cloud1/nightly/\(run.units[0].backupID)/manifest.json"])
        let listing = try await BackupInventory(audit: f.audit).backups(of: policy(session, f), environment: session.environment)
        #expect(listing.map(\.status) == ["refused"])
        #expect(listing.first?.refusal?.contains("at most") == true, "\(listing.first?.refusal ?? "")")
    }
}

/// Stops the runner (as a kill would) just before the first action of the named step.
final class KillAtStep: Sendable {
    let step: String
    init(_ step: String) { self.step = step }

    var observer: BackupRunner.JournalObserver {
        { [step] event in
            if event.step == step && event.stage == .journaled { throw CancellationError() }
        }
    }
}
