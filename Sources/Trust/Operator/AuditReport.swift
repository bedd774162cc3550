import Foundation

/// Rendering behind `intercloud audit` (table or JSON).
public enum AuditReport {
    public static func table(_ events: [AuditEvent]) -> String {
        let formatter = ISO8601DateFormatter()
        var rows = [["TIME", "MODULE", "KIND", "PEER", "ACTION", "OUTCOME", "REASON", "DETAIL"]]
        for event in events {
            rows.append([
                formatter.string(from: event.at), event.module, event.kind, event.peer.isEmpty ? "-" : event.peer,
                event.action, event.outcome.rawValue, event.reason, event.detail,
            ])
        }
        return TextTable.render(rows)
    }

    /// JSON array, ISO 8601 times, stable key order.
    public static func json(_ events: [AuditEvent]) throws -> String {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(events), as: UTF8.self) + "\n"
    }
}
