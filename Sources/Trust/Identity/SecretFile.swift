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
        var status = stat()
        guard stat(path, &status) == 0 else { return }
        let mode = Int(status.st_mode) & 0o777
        if mode & 0o077 != 0 { throw Exposed(path: path, setting: setting, mode: mode) }
    }
}
