import Foundation

/// Prints a `Bill` for people (an aligned table like a provider's cost estimate) and for programs
/// (JSON with amounts as strings, CSV per RFC 4180).
///
/// Amounts are printed with exactly the currency's minor-unit digits; quantities with at most
/// `quantityDigits` places (rounded half-up, for reading only: amounts are computed from exact base
/// units, which JSON also carries as `base_quantity`); rates exactly as in the rate card.
public enum BillRenderer {
    /// Places shown for quantities (hours, GB, GB-month).
    public static let quantityDigits: Int16 = 4

    /// An aligned text table with the bill's parties, period, currency, records and total.
    public static func table(_ bill: Bill) -> String {
        let digits = Bill.minorUnitDigits(currency: bill.currency)
        var out = ""
        let header: [(String, String)] = [
            ("Provider", bill.provider),
            ("Consumer", bill.consumer),
            ("Period", "\(iso(bill.period.from)) to \(iso(bill.period.until))"),
            ("Currency", bill.currency),
        ]
        for (label, value) in header {
            out += label.padding(toLength: 10, withPad: " ", startingAt: 0) + value + "\n"
        }
        if bill.records.isEmpty {
            out += "Records   none\n"
        } else {
            for (index, record) in bill.records.enumerated() {
                out += (index == 0 ? "Records   " : String(repeating: " ", count: 10))
                    + "\(record.key.agreementID) #\(record.key.sequence)  \(iso(record.period.from)) to \(iso(record.period.until))\n"
            }
        }
        out += "\n"

        var rows: [[String]] = [["Item", "Instances", "Quantity", "Unit", "Rate", "Amount"]]
        for line in bill.lines {
            rows.append([
                line.item,
                line.instances.map { String($0) } ?? "",
                fixed(line.quantity, digits: quantityDigits),
                line.unit,
                "\(CanonicalText.decimal(line.rate))/\(line.unit)",
                fixed(line.amount, digits: digits),
            ])
        }
        let rightAligned: Set<Int> = [1, 2, 4, 5]
        let totalText = fixed(bill.total, digits: digits)
        var widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        widths[5] = max(widths[5], totalText.count)
        func render(_ cells: [String]) -> String {
            let padded = cells.enumerated().map { column, cell in
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return rightAligned.contains(column) ? pad + cell : cell + pad
            }
            var line = padded.joined(separator: "  ")
            while line.hasSuffix(" ") { line.removeLast() }
            return line + "\n"
        }
        for row in rows { out += render(row) }
        let width = widths.reduce(0, +) + 2 * (widths.count - 1)
        out += String(repeating: "-", count: width) + "\n"
        let label = "Total (\(bill.currency))"
        out += label + String(repeating: " ", count: max(1, width - label.count - totalText.count)) + totalText + "\n"
        return out
    }

    /// Pretty-printed JSON with sorted keys; every amount, rate and quantity is a string so no
    /// reader turns it into a binary float.
    public static func json(_ bill: Bill) -> String {
        let digits = Bill.minorUnitDigits(currency: bill.currency)
        let document = JSONBill(
            provider: bill.provider, consumer: bill.consumer,
            period: JSONPeriod(from: iso(bill.period.from), until: iso(bill.period.until)),
            currency: bill.currency,
            records: bill.records.map { record in
                JSONRecord(
                    agreement: record.key.agreementID, sequence: record.key.sequence, provider: record.key.provider,
                    from: iso(record.period.from), until: iso(record.period.until))
            },
            lines: bill.lines.map { line in
                JSONLine(
                    kind: line.kind.rawValue, item: line.item, instance_type: line.instanceType, instances: line.instances,
                    quantity: CanonicalText.decimal(Bill.round(line.quantity, digits: quantityDigits)), unit: line.unit,
                    base_quantity: CanonicalText.decimal(line.baseQuantity), base_unit: line.baseUnit,
                    rate: CanonicalText.decimal(line.rate), amount: fixed(line.amount, digits: digits))
            },
            total: fixed(bill.total, digits: digits))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Encoding strings, integers and arrays of them cannot fail.
        let data = (try? encoder.encode(document)) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// RFC 4180 CSV (CRLF line ends, fields with a comma, quote, CR or LF quoted, quotes doubled): a
    /// header, one row per line with the bill's context repeated so each row stands alone, and a
    /// final `Total` row.
    public static func csv(_ bill: Bill) -> String {
        let digits = Bill.minorUnitDigits(currency: bill.currency)
        let context = [bill.provider, bill.consumer, iso(bill.period.from), iso(bill.period.until), bill.currency]
        var rows: [[String]] = [[
            "provider", "consumer", "period_from", "period_until", "currency",
            "item", "instance_type", "instances", "quantity", "unit", "rate", "amount",
        ]]
        for line in bill.lines {
            rows.append(context + [
                line.item, line.instanceType ?? "", line.instances.map { String($0) } ?? "",
                CanonicalText.decimal(Bill.round(line.quantity, digits: quantityDigits)), line.unit,
                CanonicalText.decimal(line.rate), fixed(line.amount, digits: digits),
            ])
        }
        rows.append(context + ["Total", "", "", "", "", "", fixed(bill.total, digits: digits)])
        return rows.map { $0.map(csvField).joined(separator: ",") + "\r\n" }.joined()
    }

    static func csvField(_ field: String) -> String {
        guard field.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\r" || $0 == "\n" }) else { return field }
        return "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// `value` rounded half-up to `digits` places and printed with exactly that many.
    static func fixed(_ value: Decimal, digits: Int16) -> String {
        let text = CanonicalText.decimal(Bill.round(value, digits: digits))
        guard digits > 0 else { return text }
        var parts = text.split(separator: ".", maxSplits: 1).map(String.init)
        if parts.count == 1 { parts.append("") }
        return parts[0] + "." + parts[1].padding(toLength: Int(digits), withPad: "0", startingAt: 0)
    }

    static func iso(_ date: Date) -> String { date.formatted(.iso8601) }

    private struct JSONBill: Encodable {
        var provider: String
        var consumer: String
        var period: JSONPeriod
        var currency: String
        var records: [JSONRecord]
        var lines: [JSONLine]
        var total: String
    }

    private struct JSONPeriod: Encodable {
        var from: String
        var until: String
    }

    private struct JSONRecord: Encodable {
        var agreement: String
        var sequence: Int64
        var provider: String
        var from: String
        var until: String
    }

    // Property names are the JSON keys (snake case, as in the rest of the protocol's JSON).
    private struct JSONLine: Encodable {
        var kind: String
        var item: String
        var instance_type: String?
        var instances: Int64?
        var quantity: String
        var unit: String
        var base_quantity: String
        var base_unit: String
        var rate: String
        var amount: String
    }
}
