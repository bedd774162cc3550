import Foundation
import GRDB

/// A `Date` as a statement argument, stored exactly as GRDB stores a `Date` ("yyyy-MM-dd
/// HH:mm:ss.SSS", UTC, to the nearest millisecond), so it compares with the dates already in the
/// database, but formatted here instead of by GRDB's `DateFormatter`.
///
/// Why: the first `DateFormatter` of a process initializes ICU (Foundation's locale and calendar
/// data), which leaves about 4 MiB of ICU code and data resident for the life of the process. A
/// broker binds a date every second (expired peering requests) even when it does nothing else,
/// so an idle broker paid those 4 MiB for one query. What runs while a broker is idle binds its
/// dates through this type; elsewhere binding a `Date` directly is fine.
public struct StoredDate: DatabaseValueConvertible, Sendable, Equatable {
    public var date: Date

    public init(_ date: Date) { self.date = date }

    public var databaseValue: DatabaseValue { Self.text(date).databaseValue }

    /// Read back as GRDB reads a `Date`.
    public static func fromDatabaseValue(_ dbValue: DatabaseValue) -> StoredDate? {
        Date.fromDatabaseValue(dbValue).map(StoredDate.init)
    }

    /// `date` as GRDB writes it: UTC, to the nearest millisecond as Foundation's formatter
    /// rounds it (half up, after the same floating-point product: checked on 200 000 dates).
    public static func text(_ date: Date) -> String {
        // Before the Gregorian calendar's adoption ICU counts Julian dates; no broker writes those,
        // but GRDB's text stays the reference for every date.
        guard date.timeIntervalSince1970 >= gregorianAdoption else { return String.fromDatabaseValue(date.databaseValue) ?? "" }
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000 + 0.5).rounded(.down))
        let (days, millisecondOfDay) = floorDivision(milliseconds, 86_400_000)
        let (year, month, day) = civil(fromDays: days)
        let seconds = millisecondOfDay / 1000
        var text = ""
        text.reserveCapacity(23)
        append(year, digits: 4, to: &text); text += "-"
        append(month, digits: 2, to: &text); text += "-"
        append(day, digits: 2, to: &text); text += " "
        append(seconds / 3600, digits: 2, to: &text); text += ":"
        append(seconds / 60 % 60, digits: 2, to: &text); text += ":"
        append(seconds % 60, digits: 2, to: &text); text += "."
        append(millisecondOfDay % 1000, digits: 3, to: &text)
        return text
    }

    /// 1582-10-15T00:00:00Z.
    private static let gregorianAdoption: TimeInterval = -12_219_292_800

    private static func floorDivision(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
        let remainder = value % divisor
        return remainder < 0 ? (value / divisor - 1, remainder + divisor) : (value / divisor, remainder)
    }

    /// Proleptic Gregorian year, month, day of `days` since 1970-01-01 (H. Hinnant's algorithm).
    private static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func append(_ value: Int64, digits: Int, to text: inout String) {
        let decimal = String(value)
        if decimal.count < digits { text += String(repeating: "0", count: digits - decimal.count) }
        text += decimal
    }
}
