import Backup
import Foundation
import Providers
import TOMLParsing
import Testing

@Suite("backup policy files")
struct BackupPolicyLoaderTests {
    @Test("a full S3 policy reads back field by field")
    func s3Policy() throws {
        let policy = try BackupPolicyLoader.parse(
            """
            version = 1
            name = "nightly"
            instances = ["web-1", "sim-i-0123"]
            method = "stop-and-export"
            format = "raw"
            every = "6h"
            keep_last = 3
            keep_days = 30
            power_timeout_seconds = 90

            [target]
            kind = "s3"
            endpoint = "http://127.0.0.1:5000"
            region = "eu-west-1"
            bucket = "cloud1-backups"
            prefix = "intercloud/"
            """, file: "nightly.toml")
        #expect(policy.name == "nightly")
        #expect(policy.instances == ["web-1", "sim-i-0123"])
        #expect(policy.method == .stopAndExport)
        #expect(policy.format == .raw)
        #expect(policy.every == TimeInterval(6 * 3600))
        #expect(policy.keepLast == 3)
        #expect(policy.keepDays == 30)
        #expect(policy.powerTimeout == 90)
        #expect(policy.target == .s3(endpoint: URL(string: "http://127.0.0.1:5000")!, region: "eu-west-1", bucket: "cloud1-backups", prefix: "intercloud/"))
    }

    @Test("defaults: snapshot, qcow2, keep 7, on demand only")
    func defaults() throws {
        let policy = try BackupPolicyLoader.parse(
            """
            version = 1
            name = "adhoc"
            instances = ["db-1"]
            [target]
            kind = "directory"
            path = "/srv/backups"
            """, file: "adhoc.toml")
        #expect(policy.method == .snapshot)
        #expect(policy.format == .qcow2)
        #expect(policy.keepLast == BackupPolicyLoader.defaultKeepLast)
        #expect(policy.every == nil)
        #expect(policy.target == .directory(path: "/srv/backups"))
    }

    @Test("every mistake is reported at its line, all at once")
    func errors() throws {
        let text = """
            version = 1
            name = "9lives"
            instances = []
            method = "rsync"
            format = "vmdk"
            every = "5s"
            keep_last = 0
            colour = "blue"

            [target]
            kind = "s3"
            endpoint = "ftp://example.net"
            bucket = "Not_A_Bucket"
            prefix = "../escape/"
            """
        #expect {
            try BackupPolicyLoader.parse(text, file: "bad.toml")
        } throws: { error in
            guard let error = error as? TOMLLoadError else { return false }
            let lines = error.diagnostics.map { "\($0.line) \($0.field)" }
            let expected = [
                "2 name", "3 instances", "4 method", "5 format", "6 every", "7 keep_last", "8 colour", "12 target.endpoint", "13 target.bucket",
                "14 target.prefix",
            ]
            return Set(lines) == Set(expected) && error.description.contains("bad.toml:6")
        }
    }

    @Test("missing target and instances are named with what to write")
    func missing() throws {
        #expect {
            try BackupPolicyLoader.parse("version = 1\nname = \"x\"\n", file: "x.toml")
        } throws: { error in
            let text = (error as? TOMLLoadError)?.description ?? ""
            return text.contains("instances: missing") && text.contains("target: missing")
        }
    }

    @Test("a directory target must be absolute; an unknown kind is refused")
    func directoryTarget() throws {
        for (target, message) in [("kind = \"directory\"\npath = \"relative/dir\"", "absolute"), ("kind = \"tape\"", "not a target kind")] {
            #expect {
                try BackupPolicyLoader.parse("version = 1\nname = \"x\"\ninstances = [\"a\"]\n[target]\n\(target)\n", file: "x.toml")
            } throws: { error in
                (error as? TOMLLoadError)?.description.contains(message) == true
            }
        }
    }

    @Test("durations: s, m, h, d or bare seconds; nothing else")
    func durations() {
        #expect(BackupPolicyLoader.duration("90") == 90)
        #expect(BackupPolicyLoader.duration("90s") == 90)
        #expect(BackupPolicyLoader.duration("30m") == 1800)
        #expect(BackupPolicyLoader.duration("6h") == 21_600)
        #expect(BackupPolicyLoader.duration("1d") == 86_400)
        for bad in ["", "h", "-1h", "1w", "1.5.h", "nan", "inf", "١h"] {
            #expect(BackupPolicyLoader.duration(bad) == nil, "\(bad)")
        }
    }

    @Test("a folder of policies: two with one name are refused")
    func folder() throws {
        let directory = try TemporaryDirectory()
        let body = "version = 1\nname = \"same\"\ninstances = [\"a\"]\n[target]\nkind = \"directory\"\npath = \"/b\"\n"
        _ = try directory.file("a.toml", body)
        _ = try directory.file("b.toml", body)
        _ = try directory.file("notes.txt", "not a policy")
        #expect {
            try BackupPolicyLoader.load(paths: [directory.url.path])
        } throws: { error in
            (error as? TOMLLoadError)?.description.contains("also defined in") == true
        }
    }

    @Test("the shipped example policy is valid")
    func shipped() throws {
        let policy = try BackupPolicyLoader.load(path: repositoryRoot.appendingPathComponent("backups/nightly.toml").path)
        #expect(policy.name == "nightly")
        #expect(policy.every != nil)
    }
}
