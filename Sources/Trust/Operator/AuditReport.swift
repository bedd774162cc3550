import Foundation

/// Rendering behind `intercloud audit` (table or JSON).
public enum AuditReport {
    public static func table(_ events: [AuditEvent]) -> String {
        let formatter = ISO8601DateFormatter()
        // COUNT: how many decisions a row stands for (a summary of aggregated refusals counts many).
        var rows = [["TIME", "MODULE", "KIND", "PEER", "ACTION", "OUTCOME", "REASON", "COUNT", "DETAIL"]]
        for event in events {
            rows.append([
                formatter.string(from: event.at), event.module, event.kind, event.peer.isEmpty ? "-" : event.peer,
                event.action, event.outcome.rawValue, event.reason, String(event.count), event.detail,
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

extension AuditQuery {
    /// Parses a `--since` value: an ISO 8601 time (`2026-11-22T03:00:00Z`) or an age relative to
    /// `now` (`90s`, `15m`, `2h`, `7d`).
    public static func parseTime(_ text: String, now: Date) -> Date? {
        if let date = ISO8601DateFormatter().date(from: text) { return date }
        let units: [Character: TimeInterval] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        guard let unit = text.last.flatMap({ units[$0] }), let amount = Double(text.dropLast()), amount >= 0 else {
            return nil
        }
        return now - amount * unit
    }
}
