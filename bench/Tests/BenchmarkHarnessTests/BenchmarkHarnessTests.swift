import BenchmarkHarness
import Foundation
import Testing

/// The harness's arithmetic and output on fixed durations: nothing here is timed, so the results
/// do not depend on the machine.
@Suite struct BenchmarkHarnessTests {
    /// 1 ms … 10 ms, given out of order.
    let tenMilliseconds = Samples([7, 3, 10, 1, 5, 9, 2, 8, 4, 6].map { Duration.milliseconds($0) })

    @Test func percentilesAreMeasuredValuesAtCountTimesPercent() {
        #expect(tenMilliseconds.median == .milliseconds(6))  // index 10 × 50 / 100 = 5: the upper middle
        #expect(tenMilliseconds.p50 == tenMilliseconds.median)
        #expect(tenMilliseconds.p90 == .milliseconds(10))
        #expect(tenMilliseconds.p99 == .milliseconds(10))  // clamped to the last value
        #expect(tenMilliseconds.percentile(0) == .milliseconds(1))
        #expect(Samples([]).median == .zero)
        #expect(Samples([.seconds(3)]).p99 == .seconds(3))
    }

    @Test func samplesKeepTheOrderTheyWereTakenIn() {
        #expect(tenMilliseconds.values.first == .milliseconds(7))
        #expect(tenMilliseconds.sorted.first == .milliseconds(1))
        #expect(Samples([.microseconds(1500), .microseconds(250)]).line("seq_us", unit: .microseconds, decimals: 1) == "seq_us 1500.0 250.0")
    }

    @Test func ratiosAreMediansOverTheBaselineMedian() {
        let baseline = Samples([.milliseconds(2), .milliseconds(2), .milliseconds(100)])
        #expect(tenMilliseconds.ratio(to: baseline) == 3)
        #expect(Duration.milliseconds(5).ratio(to: .zero) == 0)
        #expect(median([3, 1, 2, 100]) == 3)
    }

    @Test func unitsConvertWithoutLosingSubMicrosecondParts() {
        #expect(Duration.nanoseconds(1500).microseconds == 1.5)
        #expect(Duration.milliseconds(1234).seconds == 1.234)
        #expect(Duration.seconds(2).milliseconds == 2000)
    }

    @Test func percentileTableHasARowPerFigureAndDashesForIncomparableOnes() {
        let table = Table.percentiles(
            [Figure("baseline", tenMilliseconds), Figure("handshake", Samples([.milliseconds(30)]), comparable: false)],
            columns: ["operation", "p50 ms", "p90 ms", "× baseline"], percentiles: [50, 90], unit: .milliseconds, decimals: 3,
            baseline: tenMilliseconds)
        #expect(table.markdown() == """
            | operation | p50 ms | p90 ms | × baseline |
            |---|---:|---:|---:|
            | baseline | 6.000 | 10.000 | 1.00 |
            | handshake | 30.000 | 30.000 | – |
            """)
    }

    @Test func reportPrintsMarkdownBlocksAndTheSameTablesAsJSON() throws {
        var report = Report(benchmark: "example")
        report.text("Two brokers, 10 iterations.")
        report.table(Table(columns: ["check", "µs", "goal"], rows: [["policy", .number(1.25, decimals: 1), .none]]), alignments: ["---", "---:", "---"])
        #expect(report.markdown == """
            Two brokers, 10 iterations.

            | check | µs | goal |
            |---|---:|---|
            | policy | 1.2 | – |

            """)
        let json = try #require(JSONSerialization.jsonObject(with: Data(report.rendered(as: .json).utf8)) as? [String: Any])
        #expect(json["benchmark"] as? String == "example")
        #expect(json["text"] as? [String] == ["Two brokers, 10 iterations."])
        let table = try #require((json["tables"] as? [[String: Any]])?.first)
        #expect(table["columns"] as? [String] == ["check", "µs", "goal"])
        let row = try #require((table["rows"] as? [[Any]])?.first)
        #expect(row[0] as? String == "policy")
        #expect(row[1] as? Double == 1.25)  // the number itself, not its rounded text
        #expect(row[2] is NSNull)
    }
}
