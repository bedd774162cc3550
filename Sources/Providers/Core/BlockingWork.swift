import Dispatch

/// Work that blocks a thread (reading and hashing parts of a disk, whole-file copies, fsyncs),
/// run on a dispatch queue so the cooperative pool's few threads stay free for the broker.
package enum BlockingWork {
    package static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global(qos: .utility).async {
                continuation.resume(with: Result { try body() })
            }
        }
    }
}
