import Foundation
import Trust

/// What a backup store holds for a policy, read as hostile input: only keys of the form
/// `<policy>/<backupID>/<name>` count, and every manifest is bounded and checked
/// (`BackupManifest.decode`); a refused one is audited and listed with the reason, never used.
public struct BackupInventory: Sendable {
    public let audit: AuditLog?

    public init(audit: AuditLog? = nil) { self.audit = audit }

    /// The backups of `policy` in `target`'s store, newest first: finished ones with their
    /// manifests, unfinished ones (no manifest) and refused ones.
    /// S3 keys come from `environment`.
    public func backups(
        of policy: BackupPolicy, environment: [String: String] = ProcessInfo.processInfo.environment
    ) async throws(BackupError) -> [BackupListing] {
        try await listing(policy: policy.name, store: try policy.target.store(environment: environment))
    }

    /// Reads and checks the manifest of one backup.
    public func manifest(policy: String, backupID: String, store: any BackupStore) async throws(BackupError) -> BackupManifest {
        let data: Data?
        do { data = try await store.get(key: BackupRun.key(policy: policy, backupID: backupID, BackupManifest.fileName), limit: BackupManifest.maximumBytes) } catch {
            throw .store("reading the manifest of \(backupID): \(BackupRunner.describe(error))")
        }
        guard let data else { throw .unknownBackup("\(backupID) (policy \(policy), \(store.location))") }
        do { return try BackupManifest.decode(data, policy: policy, backupID: backupID) } catch {
            _ = try? audit?.recordRefusal(AuditEvent(
                at: Date(), module: "backup", kind: "backup.manifest", peer: "", action: backupID, outcome: .refused,
                reason: "invalid-manifest", detail: error.description))
            throw error
        }
    }

    public func listing(policy: String, store: any BackupStore) async throws(BackupError) -> [BackupListing] {
        let keys: [String]
        do { keys = try await store.list(prefix: "\(policy)/") } catch { throw .store("listing \(store.location)\(policy)/: \(BackupRunner.describe(error))") }
        var byBackup: [String: Set<String>] = [:]
        for key in keys {
            let parts = key.split(separator: "/", omittingEmptySubsequences: false)
            // Only `<policy>/<backupID>/<name>`: anything else in the store is not ours.
            guard parts.count == 3, parts[0] == policy, BackupManifest.isBackupID(String(parts[1])) else { continue }
            byBackup[String(parts[1]), default: []].insert(String(parts[2]))
        }
        var result: [BackupListing] = []
        for (backupID, names) in byBackup {
            let created = BackupListing.creationTime(of: backupID) ?? .distantPast
            guard names.contains(BackupManifest.fileName) else {
                result.append(BackupListing(backupID: backupID, createdAt: created, manifest: nil, refusal: nil))
                continue
            }
            do {
                let manifest = try await manifest(policy: policy, backupID: backupID, store: store)
                // Ordered by the time in the id, which was checked, not by the manifest's own claim.
                result.append(BackupListing(backupID: backupID, createdAt: created, manifest: manifest, refusal: nil))
            } catch {
                result.append(BackupListing(backupID: backupID, createdAt: created, manifest: nil, refusal: error.description))
            }
        }
        return result.sorted { ($0.createdAt, $0.backupID) > ($1.createdAt, $1.backupID) }
    }

}
