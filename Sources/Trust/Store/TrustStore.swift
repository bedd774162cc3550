import Foundation
import GRDB
import Storage
import SwiftASN1
import X509

/// What the broker knows and the operator decided about one peer JID.
public enum PinState: String, Sendable, Codable, CaseIterable {
    /// A handshake succeeded (or the operator re-allowed a pinned key): envelopes are accepted.
    case trusted
    /// The operator revoked the pin: envelopes and new handshakes are refused until `allow`.
    case revoked
    /// The operator refuses this JID altogether, pinned or not, until `allow`.
    case distrusted
    /// The pinned chain stopped validating (leaf expired, revoked by a CRL, anchor removed):
    /// envelopes are refused, and the next handshake may pin a new key only as `[trust]
    /// key_change` allows, measured against this pin's anchor. Kept rather than deleted so a lapse
    /// is no way around the key-change policy.
    case lapsed
}

/// A pinned peer.
public struct PeerPin: Sendable, Codable, Hashable {
    public var jid: String
    public var state: PinState
    public var fingerprint: String?
    public var leafDER: [UInt8]?
    /// The chain the peer presented (leaf first), as a DER SEQUENCE OF Certificate.
    public var chainDER: [UInt8]?
    public var notBefore: Date?
    public var notAfter: Date?
    public var firstTrusted: Date?
    public var lastVerified: Date?
    public var updatedAt: Date
    public var note: String
    /// SHA-256 of the anchor the pinned chain ended at (nil for pins made before it was kept).
    public var anchorFingerprint: String?
    /// The operator consented to this peer's next key (`intercloud trust allow --new-key`).
    public var acceptsNewKey: Bool

    /// The pinned leaf, parsed.
    public func leaf() throws -> Certificate? {
        try leafDER.map { try Certificate(derEncoded: $0) }
    }

    /// The presented chain, parsed (leaf first).
    public func chain() throws -> [Certificate] {
        guard let chainDER else { return try leaf().map { [$0] } ?? [] }
        let root = try DER.parse(chainDER)
        guard case .constructed(let nodes) = root.content else { throw TrustSetupError.emptyChain }
        return try nodes.map { try Certificate(derEncoded: $0) }
    }

    init(row: Row) {
        jid = row["jid"]
        state = PinState(rawValue: row["state"]) ?? .distrusted
        fingerprint = row["fingerprint"]
        leafDER = (row["leaf_der"] as Data?).map { Array($0) }
        chainDER = (row["chain_der"] as Data?).map { Array($0) }
        notBefore = (row["not_before"] as Double?).map(Date.init(timeIntervalSince1970:))
        notAfter = (row["not_after"] as Double?).map(Date.init(timeIntervalSince1970:))
        firstTrusted = (row["first_trusted"] as Double?).map(Date.init(timeIntervalSince1970:))
        lastVerified = (row["last_verified"] as Double?).map(Date.init(timeIntervalSince1970:))
        updatedAt = Date(timeIntervalSince1970: row["updated_at"])
        note = row["note"]
        anchorFingerprint = row["anchor_fingerprint"]
        acceptsNewKey = (row["accept_new_key"] as Int?) == 1
    }
}

/// Pinned peers and operator decisions, in the broker database (tables of `TrustSchema`).
///
/// The CLI (`intercloud trust revoke …`) writes the same database while the broker runs, so the
/// broker reads the pin on every check instead of caching decisions in memory; WAL keeps those
/// reads cheap and never blocked by the CLI's write.
public struct TrustStore: Sendable {
    public let database: DatabasePool

    public init(database: DatabasePool) { self.database = database }

    public func pin(for jid: String) throws -> PeerPin? {
        let bare = XmppAddr.bare(jid)
        return try database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM trust_pin WHERE jid = ?", arguments: [bare]).map(PeerPin.init(row:))
        }
    }

    /// The fields an envelope check needs, without the certificate blobs (read per message).
    public struct PinStatus: Sendable, Hashable {
        public var jid: String
        public var state: PinState
        public var fingerprint: String?
        public var notAfter: Date?
    }

    public func status(for jid: String) throws -> PinStatus? {
        let bare = XmppAddr.bare(jid)
        return try database.read { db in
            try Row.fetchOne(
                db, sql: "SELECT state, fingerprint, not_after FROM trust_pin WHERE jid = ?", arguments: [bare]
            ).map { row in
                PinStatus(
                    jid: bare, state: PinState(rawValue: row[0]) ?? .distrusted, fingerprint: row[1],
                    notAfter: (row[2] as Double?).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    public func pins(state: PinState? = nil) throws -> [PeerPin] {
        try database.read { db in
            if let state {
                return try Row.fetchAll(db, sql: "SELECT * FROM trust_pin WHERE state = ? ORDER BY jid", arguments: [state.rawValue])
                    .map(PeerPin.init(row:))
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM trust_pin ORDER BY jid").map(PeerPin.init(row:))
        }
    }

    /// Refusal if the operator blocked this JID (revoked pin or distrust); checked before a
    /// handshake starts and again when its result is recorded.
    public func operatorRefusal(for jid: String) throws -> TrustRefusal? {
        guard let pin = try pin(for: jid) else { return nil }
        switch pin.state {
        case .trusted, .lapsed: return nil
        case .revoked: return TrustRefusal(.pinRevoked, "operator revoked the pin of \(pin.jid)")
        case .distrusted: return TrustRefusal(.distrusted, "operator distrusts \(pin.jid)")
        }
    }

    /// Pins a peer after a successful handshake. `firstTrusted` is kept while the fingerprint stays
    /// the same and restarts when the peer presents a new (validated) leaf. Refuses, without
    /// writing, if the operator blocked the JID meanwhile (checked in the same transaction).
    /// Returns the new pin and the fingerprint it replaced, if the key changed.
    @discardableResult
    /// Pins `peer` after its chain verified. A peer already pinned with another key is re-pinned
    /// only as `keyChange` allows: with `.sameAnchor`, when the new chain ends at the anchor the
    /// old one did; with `.operatorOnly`, only after the operator consented
    /// (`acceptNewKey`). Otherwise `keyChangeRefused` is thrown and the old pin stays.
    public func recordTrusted(
        _ peer: VerifiedPeer, at now: Date, keyChange: KeyChangePolicy = .sameAnchor
    ) async throws -> (pin: PeerPin, replacedFingerprint: String?) {
        let der = Array(try peer.leaf.derBytes())
        // The chain as presented, without the anchor (which is ours): enough to re-verify later.
        let presented = peer.chain.count > 1 ? Array(peer.chain.dropLast()) : peer.chain
        var chainSerializer = DER.Serializer()
        try chainSerializer.appendConstructedNode(identifier: .sequence) { coder in
            for certificate in presented { try coder.serialize(certificate) }
        }
        let chainDER = chainSerializer.serializedBytes
        let fingerprint = peer.fingerprint
        // Off the cooperative pool (`durableWrite`): the handshake that called waits, no thread does.
        return try await database.durableWrite { db in
            let existing = try Row.fetchOne(db, sql: "SELECT * FROM trust_pin WHERE jid = ?", arguments: [peer.jid])
                .map(PeerPin.init(row:))
            if let existing, existing.state == .revoked || existing.state == .distrusted {
                throw TrustRefusal(existing.state == .revoked ? .pinRevoked : .distrusted,
                                   "operator decision on \(peer.jid) is \(existing.state.rawValue)")
            }
            let anchor = peer.chain.last.map(CertificateFingerprint.sha256)
            // A lapsed pin counts as a key change even for the same leaf: it stopped validating.
            let keyChanged = existing.map { $0.state == .lapsed || ($0.fingerprint.map { $0 != fingerprint } ?? false) } ?? false
            if let existing, keyChanged, !existing.acceptsNewKey {
                switch keyChange {
                case .sameAnchor where existing.anchorFingerprint == nil || existing.anchorFingerprint == anchor:
                    break
                case .sameAnchor:
                    throw TrustRefusal(
                        .keyChangeRefused,
                        "\(peer.jid) presented a new key from another anchor than its pinned one; the operator accepts it with `intercloud trust allow \(peer.jid) --new-key`")
                case .operatorOnly:
                    throw TrustRefusal(
                        .keyChangeRefused,
                        "\(peer.jid) presented a new key; the operator accepts it with `intercloud trust allow \(peer.jid) --new-key`")
                }
            }
            let firstTrusted = existing?.fingerprint == fingerprint ? (existing?.firstTrusted ?? now) : now
            try db.execute(
                sql: """
                    INSERT INTO trust_pin (jid, state, fingerprint, leaf_der, chain_der, not_before, not_after,
                                           first_trusted, last_verified, updated_at, note, anchor_fingerprint, accept_new_key)
                    VALUES (?, 'trusted', ?, ?, ?, ?, ?, ?, ?, ?, '', ?, 0)
                    ON CONFLICT(jid) DO UPDATE SET state = 'trusted', fingerprint = excluded.fingerprint,
                        leaf_der = excluded.leaf_der, chain_der = excluded.chain_der, not_before = excluded.not_before,
                        not_after = excluded.not_after, first_trusted = excluded.first_trusted,
                        last_verified = excluded.last_verified, updated_at = excluded.updated_at,
                        anchor_fingerprint = excluded.anchor_fingerprint, accept_new_key = 0
                    """,
                arguments: [
                    peer.jid, fingerprint, Data(der), Data(chainDER), peer.leaf.notValidBefore.timeIntervalSince1970,
                    peer.leaf.notValidAfter.timeIntervalSince1970, firstTrusted.timeIntervalSince1970,
                    now.timeIntervalSince1970, now.timeIntervalSince1970, anchor,
                ])
            let pin = try Row.fetchOne(db, sql: "SELECT * FROM trust_pin WHERE jid = ?", arguments: [peer.jid])
                .map(PeerPin.init(row:))!
            let replaced = existing?.fingerprint.flatMap { $0 == fingerprint ? nil : $0 }
            return (pin, replaced)
        }
    }

    // MARK: Operator decisions

    /// Revokes the pin: envelopes from this JID are refused (`pinRevoked`), and so are new
    /// handshakes until `allow`. Returns false if there is no pin for the JID.
    @discardableResult
    public func revoke(_ jid: String, at now: Date, note: String = "") throws -> Bool {
        try database.write { db in
            try db.execute(
                sql: "UPDATE trust_pin SET state = 'revoked', updated_at = ?, note = ? WHERE jid = ?",
                arguments: [now.timeIntervalSince1970, note, XmppAddr.bare(jid)])
            return db.changesCount > 0
        }
    }

    /// Refuses a JID whether or not it is pinned (e.g. before it ever handshakes).
    public func distrust(_ jid: String, at now: Date, note: String = "") throws {
        try database.write { db in
            try db.execute(
                sql: """
                    INSERT INTO trust_pin (jid, state, updated_at, note) VALUES (?, 'distrusted', ?, ?)
                    ON CONFLICT(jid) DO UPDATE SET state = 'distrusted', updated_at = excluded.updated_at,
                        note = excluded.note
                    """,
                arguments: [XmppAddr.bare(jid), now.timeIntervalSince1970, note])
        }
    }

    /// Lifts a revoke or distrust. A JID with a pinned leaf goes back to `trusted` (that key); one
    /// without is forgotten, so its next handshake decides. Returns the resulting pin, if any.
    @discardableResult
    public func allow(_ jid: String, at now: Date, note: String = "") throws -> PeerPin? {
        let bare = XmppAddr.bare(jid)
        return try database.write { db in
            try db.execute(sql: "DELETE FROM trust_pin WHERE jid = ? AND fingerprint IS NULL", arguments: [bare])
            // A lapsed pin stays lapsed: its chain no longer validates, so only a handshake (or
            // `acceptNewKey`) may trust the peer again.
            try db.execute(
                sql: "UPDATE trust_pin SET state = 'trusted', updated_at = ?, note = ? WHERE jid = ? AND state != 'lapsed'",
                arguments: [now.timeIntervalSince1970, note, bare])
            return try Row.fetchOne(db, sql: "SELECT * FROM trust_pin WHERE jid = ?", arguments: [bare])
                .map(PeerPin.init(row:))
        }
    }

    /// The operator's consent to `jid`'s next key: its next handshake may re-pin it with any key that
    /// verifies, once. Returns false when there is no trusted pin for it.
    @discardableResult
    public func acceptNewKey(_ jid: String, at now: Date, note: String = "") throws -> Bool {
        try database.write { db in
            try db.execute(
                sql: "UPDATE trust_pin SET accept_new_key = 1, updated_at = ?, note = ? WHERE jid = ? AND state IN ('trusted', 'lapsed')",
                arguments: [now.timeIntervalSince1970, note, XmppAddr.bare(jid)])
            return db.changesCount > 0
        }
    }

    /// Marks a trusted pin lapsed (revalidation found its chain no longer valid), if it still has
    /// `fingerprint`; returns false if a concurrent handshake replaced it meanwhile.
    @discardableResult
    public func lapse(_ jid: String, fingerprint: String, at now: Date, note: String) async throws -> Bool {
        try await database.durableWrite { db in
            try db.execute(
                sql: "UPDATE trust_pin SET state = 'lapsed', updated_at = ?, note = ? WHERE jid = ? AND fingerprint = ? AND state = 'trusted'",
                arguments: [now.timeIntervalSince1970, note, XmppAddr.bare(jid), fingerprint])
            return db.changesCount > 0
        }
    }

    /// Removes the pin entirely (e.g. a peer that left the federation). With `fingerprint`, only
    /// if the pin still has that fingerprint and is trusted (used by revalidation).
    @discardableResult
    public func forget(_ jid: String, fingerprint: String? = nil) throws -> Bool {
        try database.write { db in
            if let fingerprint {
                try db.execute(
                    sql: "DELETE FROM trust_pin WHERE jid = ? AND fingerprint = ? AND state = 'trusted'",
                    arguments: [XmppAddr.bare(jid), fingerprint])
            } else {
                try db.execute(sql: "DELETE FROM trust_pin WHERE jid = ?", arguments: [XmppAddr.bare(jid)])
            }
            return db.changesCount > 0
        }
    }
}

extension Certificate {
    func derBytes() throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(self)
        return serializer.serializedBytes
    }
}
