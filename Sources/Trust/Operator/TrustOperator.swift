import Foundation

/// Operator decisions (`intercloud trust list|show|revoke|allow|distrust`), each audited as
/// outcome `operator`. Thin over `TrustStore` so the CLI and the broker's admin commands share it.
public struct TrustOperator: Sendable {
    public var store: TrustStore
    public var audit: AuditLog

    public init(store: TrustStore, audit: AuditLog) {
        self.store = store
        self.audit = audit
    }

    public func list(state: PinState? = nil) throws -> [PeerPin] { try store.pins(state: state) }

    public func show(_ jid: String) throws -> PeerPin? { try store.pin(for: jid) }

    @discardableResult
    public func revoke(_ jid: String, note: String = "", at now: Date) throws -> Bool {
        let changed = try store.revoke(jid, at: now, note: note)
        try record("revoke", jid: jid, detail: changed ? note : "no pin for \(XmppAddr.bare(jid))", at: now)
        return changed
    }

    public func distrust(_ jid: String, note: String = "", at now: Date) throws {
        try store.distrust(jid, at: now, note: note)
        try record("distrust", jid: jid, detail: note, at: now)
    }

    @discardableResult
    public func allow(_ jid: String, note: String = "", at now: Date) throws -> PeerPin? {
        let pin = try store.allow(jid, at: now, note: note)
        try record("allow", jid: jid, detail: pin.map { "trusted again: \($0.fingerprint ?? "")" } ?? "forgotten; next handshake decides", at: now)
        return pin
    }

    /// Consents to `jid`'s next key (one re-pin); see `KeyChangePolicy`.
    @discardableResult
    public func acceptNewKey(_ jid: String, note: String = "", at now: Date) throws -> Bool {
        let changed = try store.acceptNewKey(jid, at: now, note: note)
        try record("accept-new-key", jid: jid, detail: changed ? note : "no trusted pin for \(XmppAddr.bare(jid))", at: now)
        return changed
    }

    private func record(_ action: String, jid: String, detail: String, at now: Date) throws {
        try audit.record(AuditEvent(
            at: now, module: "trust", kind: "trust.operator", peer: XmppAddr.bare(jid), action: action,
            outcome: .operator, reason: action, detail: detail))
    }

    /// `intercloud trust list` table.
    public static func table(_ pins: [PeerPin]) -> String {
        let formatter = ISO8601DateFormatter()
        var rows = [["JID", "STATE", "FINGERPRINT", "NOT AFTER", "FIRST TRUSTED", "NOTE"]]
        for pin in pins {
            rows.append([
                pin.jid, pin.state.rawValue, pin.fingerprint.map { String($0.prefix(16)) + "…" } ?? "-",
                pin.notAfter.map(formatter.string(from:)) ?? "-", pin.firstTrusted.map(formatter.string(from:)) ?? "-",
                pin.note,
            ])
        }
        return TextTable.render(rows)
    }
}

/// Plain fixed-width tables for CLI output.
public enum TextTable {
    public static func render(_ rows: [[String]]) -> String {
        guard let header = rows.first else { return "" }
        var widths = header.map(\.count)
        for row in rows { for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) } }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }
}
