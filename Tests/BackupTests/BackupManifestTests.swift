import Backup
import Foundation
import Providers
import Testing

/// Manifests read back from a store are hostile input: only what this broker would write passes.
@Suite("backup manifests")
struct BackupManifestTests {
    static let digest = String(repeating: "ab", count: 32)

    func manifest() -> BackupManifest {
        BackupManifest(
            backupID: "bk-20261207-031500-9f2c1a", policy: "nightly", runID: "br-1", method: .snapshot, createdAt: Date(timeIntervalSince1970: 1_800_000_000),
            source: .init(driver: "simcloud", instanceID: "sim-i-1", instanceName: "web-1", sizeID: "sim.small", imageID: nil),
            disk: .init(name: "disk.qcow2", format: .qcow2, bytes: 1024, sha256: Self.digest, contentSHA256: nil))
    }

    func json(_ change: (inout [String: Any]) -> Void) throws -> Data {
        var object = try JSONSerialization.jsonObject(with: try manifest().encoded()) as! [String: Any]
        change(&object)
        return try JSONSerialization.data(withJSONObject: object)
    }

    /// A JSON value written as JSON text (test arguments must be Sendable).
    static func fragment(_ json: String) -> Any {
        try! JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)
    }

    @Test("what we write reads back")
    func roundTrip() throws {
        let decoded = try BackupManifest.decode(try manifest().encoded(), policy: "nightly", backupID: "bk-20261207-031500-9f2c1a")
        #expect(decoded == manifest())
    }

    @Test("a manifest of another backup, another policy, a disk elsewhere, a bad digest or an unknown version is refused",
          arguments: [
            ("backupID", #""bk-20261207-000000-000000""#, "names backup"),
            ("policy", #""weekly""#, "belongs to policy"),
            ("format", #""intercloud-backup/9""#, "format"),
          ])
    func refusedTop(field: String, value: String, message: String) throws {
        let data = try json { $0[field] = Self.fragment(value) }
        #expect {
            try BackupManifest.decode(data, policy: "nightly", backupID: "bk-20261207-031500-9f2c1a")
        } throws: { error in
            (error as? BackupError)?.description.contains(message) == true
        }
    }

    @Test("disk fields: a path for a name, a format we do not write, a negative size, a malformed digest",
          arguments: [
            ("name", #""../../../etc/shadow""#),
            ("format", #""vmdk""#),
            ("bytes", "-1"),
            ("sha256", #""ZZ""#),
          ])
    func refusedDisk(field: String, value: String) throws {
        let data = try json { object in
            var disk = object["disk"] as! [String: Any]
            disk[field] = Self.fragment(value)
            object["disk"] = disk
        }
        #expect(throws: BackupError.self) {
            try BackupManifest.decode(data, policy: "nightly", backupID: "bk-20261207-031500-9f2c1a")
        }
    }

    @Test("source fields with control characters are refused (escape sequences, newlines, C1 controls)",
          arguments: [
            ("instanceName", #""web-1\u001b[2J""#),
            ("instanceID", #""sim-i-1\nforged log line""#),
            ("sizeID", #""sim.small\u009b31m""#),
            ("imageID", #""img\u007f""#),
          ])
    func refusedControlCharacters(field: String, value: String) throws {
        let data = try json { object in
            var source = object["source"] as! [String: Any]
            source[field] = Self.fragment(value)
            object["source"] = source
        }
        #expect {
            try BackupManifest.decode(data, policy: "nightly", backupID: "bk-20261207-031500-9f2c1a")
        } throws: { error in
            (error as? BackupError)?.description.contains("control characters") == true
        }
    }

    @Test("an oversized manifest is refused before it is parsed")
    func oversized() {
        let data = Data(repeating: 0x20, count: BackupManifest.maximumBytes + 1)
        #expect {
            try BackupManifest.decode(data, policy: "nightly", backupID: "bk-20261207-031500-9f2c1a")
        } throws: { error in
            (error as? BackupError)?.description.contains("larger than") == true
        }
    }

    @Test("backup ids: only bk- with lowercase letters, digits and dashes")
    func ids() {
        #expect(BackupManifest.isBackupID("bk-20261207-031500-9f2c1a"))
        for bad in ["bk-", "../bk-1", "bk-20261207/../x", "BK-20261207-031500", "bk-20261207-031500-9F2C1A", "bk-" + String(repeating: "a", count: 60)] {
            #expect(!BackupManifest.isBackupID(bad), "\(bad)")
        }
    }
}
