import Foundation

/// Files that hold secrets (a broker's private key, its XMPP password) must be readable by their
/// owner alone: a key that other users can read is a key we can no longer call ours, so the broker
/// refuses to start with it and says how to fix it, as ssh does for its keys.
public enum SecretFile {
    public struct Exposed: Error, CustomStringConvertible {
        public var path: String
        public var setting: String
        public var mode: Int
        public var description: String {
            "\(setting) \(path) is readable by others (mode \(String(mode, radix: 8))): run `chmod 600 \(path)` and start again"
        }
    }

    /// Throws `Exposed` when `path` grants any permission to its group or to others. A file that
    /// does not exist passes (the reader reports that, with its own message).
    public static func checkPrivate(_ path: String, setting: String) throws(Exposed) {
        // The file a symbolic link points to is the one whose mode matters (stat, not lstat).
        // FileManager rather than stat(): which module defines `struct stat` differs between
        // builds, and its fields are visible only where that module is imported.
        let target = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: target),
            let permissions = attributes[.posixPermissions] as? NSNumber
        else { return }
        let mode = permissions.intValue & 0o777
        if mode & 0o077 != 0 { throw Exposed(path: path, setting: setting, mode: mode) }
    }
}
