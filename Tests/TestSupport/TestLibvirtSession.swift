import Foundation

/// A private libvirt session daemon (`scripts/libvirt-session.sh`) for this test process, with
/// the tiny test guest (`scripts/guest-build.sh`: kernel, initramfs, disk). QEMU runs as uid
/// 65534, so folders it writes to must belong to that user (`prepareFolders`). Started once per
/// process and stopped when the process exits; suites of every target share it.
public enum TestLibvirtSession {
    /// The user QEMU runs as.
    public static let uid = 65534
    /// Where the guest is built (kept between runs: building takes a while the first time).
    public static let guest = URL(fileURLWithPath: ProcessInfo.processInfo.environment["INTERCLOUD_GUEST_DIR"] ?? "/tmp/intercloud-test-guest")
    /// What the guest prints on its serial console once it has booted.
    public static let bootMarker = "INTERCLOUD-GUEST-READY"

    private static let started: Result<String, any Error> = {
        do {
            let root = try TestProsody.repositoryRoot().path
            // Short: QEMU's monitor socket lies below it, and a socket path has at most 108 bytes.
            let directory = "/tmp/ic-lv-\(getpid())"
            try runShell("bash \(shellQuoted(root))/scripts/guest-build.sh \(shellQuoted(guest.path))")
            try runShell("bash \(shellQuoted(root))/scripts/libvirt-session.sh start \(shellQuoted(directory)) \(getpid())")
            return .success("qemu+unix:///session?socket=\(directory)/run/libvirt/libvirt-sock")
        } catch {
            return .failure(error)
        }
    }()

    /// The daemon's URI, starting it (off the cooperative pool) on first use.
    public static func uri() async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: started) }
        }
    }

    /// Creates `folders` owned by the QEMU user.
    public static func prepareFolders(_ folders: [URL]) throws {
        for folder in folders {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try FileManager.default.setAttributes(
                [.posixPermissions: 0o755, .ownerAccountID: NSNumber(value: uid), .groupOwnerAccountID: NSNumber(value: uid)],
                ofItemAtPath: folder.path)
        }
    }
}
