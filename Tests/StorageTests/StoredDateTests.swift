import Foundation
import GRDB
import Storage
import Testing

@Suite struct StoredDateTests {
    /// The text must be GRDB's, character for character: stored dates are compared as text.
    @Test func writesDatesExactlyAsGRDBDoes() {
        var generator = SystemRandomNumberGenerator()
        var dates: [Date] = [
            Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: -0.0005), Date(timeIntervalSince1970: -1),
            Date(timeIntervalSince1970: 951_782_400.9999),  // 2000-02-29, rounds up to the next second
            Date(timeIntervalSince1970: 1_796_644_696.4258), Date(timeIntervalSince1970: 1_796_644_696.4252),
            Date(timeIntervalSince1970: -12_219_292_800), Date(timeIntervalSince1970: -12_219_292_800.001),  // Gregorian adoption
            Date(timeIntervalSince1970: -58_973_529_600),  // 0101-03-17, a Julian date
            Date(timeIntervalSince1970: 4_102_444_799.999),  // 2099-12-31 23:59:59.999
            Date(timeIntervalSince1970: -2_208_988_800),  // 1900-01-01
            Date(timeIntervalSince1970: 253_402_300_799.5),  // 9999-12-31
            Date(), Date.distantPast.addingTimeInterval(86_400 * 366 * 100),
        ]
        for _ in 0..<20_000 { dates.append(Date(timeIntervalSince1970: Double.random(in: -3e9...5e9, using: &generator))) }
        for date in dates {
            #expect(StoredDate(date).databaseValue == date.databaseValue, "\(date.timeIntervalSince1970)")
        }
    }

    @Test func readsBackWhatItWrote() {
        let date = Date(timeIntervalSince1970: 1_765_000_000.25)
        #expect(StoredDate.fromDatabaseValue(StoredDate(date).databaseValue) == StoredDate(date))
    }
}
