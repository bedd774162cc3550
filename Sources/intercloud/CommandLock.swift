import Foundation

/// Runs `body` holding an exclusive lock on the file at `path` (created if missing), so two
/// commands that journal the same things never act at once: each would undo the other's steps.
/// A second command does not wait: it fails with `busy`.
func withCommandLock<T>(_ path: String, busy: String, _ body: () async throws -> T) async throws -> T {
    let descriptor = open(path, O_CREAT | O_RDWR, 0o600)
    guard descriptor >= 0 else { throw CommandLockError(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(descriptor) }
    guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else { throw CommandLockError(description: busy) }
    defer { flock(descriptor, LOCK_UN) }
    return try await body()
}

/// The lock could not be taken: printed as `Error: ...`, exit 1.
struct CommandLockError: Error, CustomStringConvertible {
    var description: String
}
