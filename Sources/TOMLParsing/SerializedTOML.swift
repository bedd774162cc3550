import Foundation
@_exported import TOMLKit

/// Every TOMLKit (toml++) parse in the process goes through one lock.
///
/// A heap corruption (`malloc_consolidate(): unaligned fastbin chunk detected`) was seen once while
/// the test suite parsed invalid TOML documents on several threads at once, and TOMLKit's error path
/// is known to be fragile (its issue #30: SIGABRT on some invalid table headers). Whether toml++'s
/// exception path is safe to run concurrently is not established, and serializing costs nothing for
/// configuration and policy files that are read once.
public enum SerializedTOML {
    private static let lock = NSLock()

    public static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try TOMLDecoder().decode(type, from: text)
    }

    public static func table(from text: String) throws -> TOMLTable {
        lock.lock()
        defer { lock.unlock() }
        return try TOMLTable(string: text)
    }
}
