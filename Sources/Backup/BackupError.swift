import Foundation

/// Why a backup request was refused or could not finish; printed as is to operators.
public enum BackupError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The request cannot be carried out as asked (nothing was changed).
    case refused(String)
    case unknownRun(String)
    case unknownBackup(String)
    /// A manifest in the store is not one this broker would have written.
    case invalidManifest(String, String)
    /// The store failed (a file could not be written, a size did not match).
    case store(String)
    case journal(String)
    /// The task was cancelled (a shutdown): the job stays under way for the next resume.
    case interrupted(String)
    /// The runner stopped on purpose (the crash tests' observer threw): nothing more is done.
    case halted

    public var description: String {
        switch self {
        case .refused(let reason): reason
        case .unknownRun(let id): "no backup run \(id)"
        case .unknownBackup(let id): "no backup \(id) in the store"
        case .invalidManifest(let id, let reason): "backup \(id): manifest refused: \(reason)"
        case .store(let reason): "backup store: \(reason)"
        case .journal(let reason): "backup journal: \(reason)"
        case .interrupted(let id): "\(id) was interrupted; `intercloud backup resume` (or the next `intercloud serve`) finishes it"
        case .halted: "the backup runner was stopped"
        }
    }
}
