import Foundation
import Testing
@testable import Metering

@Suite struct UsageRecordTests {
    static let twoTypes = record(types: [
        InstanceTypeUsage(instanceType: "m1.small", instances: 2, runningSeconds: 36_000),
        InstanceTypeUsage(instanceType: "m1.large", instances: 1, runningSeconds: 3_600),
    ])

    @Test func canonicalBytesAreExactAndStable() {
        let text = String(decoding: Self.twoTypes.canonicalBytes(), as: UTF8.self)
        #expect(text == """
            format=urn:intercloud:usage:0
            agreement=a1
            sequence=1
            provider=broker@cloud2.example
            consumer=broker@cloud1.example
            created=1780358460
            period.from=1780272000
            period.until=1780358400
            vcpu_seconds=36000
            bytes_transferred=12500000000
            byte_seconds_stored=360000000000000
            instance_type.m1.large.instances=1
            instance_type.m1.large.seconds=3600
            instance_type.m1.small.instances=2
            instance_type.m1.small.seconds=36000

            """)
    }

    @Test func callsAreEncodedOnlyWhenThereAreAnyAndParseBack() throws {
        let without = record()
        let with = record(calls: 42)
        let text = String(decoding: with.canonicalBytes(), as: UTF8.self)
        #expect(text.contains("byte_seconds_stored=360000000000000\ncalls=42\ninstance_type."))
        #expect(!String(decoding: without.canonicalBytes(), as: UTF8.self).contains("calls"))
        #expect(try UsageRecord(canonicalBytes: with.canonicalBytes()) == with)
        #expect(try UsageRecord(canonicalBytes: without.canonicalBytes()) == without)
        #expect(with.lines.contains(UsageLine(key: "calls", quantity: 42, unit: "calls")))
        // "calls=0" is not canonical: zero is written by leaving the line out.
        let zero = Array(String(decoding: without.canonicalBytes(), as: UTF8.self)
            .replacingOccurrences(of: "byte_seconds_stored=360000000000000\n", with: "byte_seconds_stored=360000000000000\ncalls=0\n").utf8)
        #expect(throws: UsageRecordError.self) { try UsageRecord(canonicalBytes: zero) }
        // Usage stored before calls existed still decodes.
        let old = #"{"instanceTypes":[],"vcpuSeconds":1,"bytesTransferred":2,"byteSecondsStored":3}"#
        #expect(try JSONDecoder().decode(MeasuredUsage.self, from: Data(old.utf8)).calls == 0)
    }

    @Test func equalRecordsEncodeTheSame() {
        // Input order of instance types, fractional seconds and Decimal representation do not matter.
        var reordered = record(types: [
            InstanceTypeUsage(instanceType: "m1.large", instances: 1, runningSeconds: 3_600),
            InstanceTypeUsage(instanceType: "m1.small", instances: 2, runningSeconds: 36_000),
        ], bytes: d("12500000000.000"))
        reordered.createdAt = t0 + 24 * hour + 60.75
        #expect(reordered.canonicalBytes() == Self.twoTypes.canonicalBytes())
        #expect(record(bytes: 1).canonicalBytes() != record(bytes: 2).canonicalBytes())
    }

    @Test func separatorsInKeysAndValuesAreEscapedAndParseBack() throws {
        let tricky = UsageRecord(
            agreementID: "a=1\\x=format=evil", provider: provider, consumer: consumer, period: period(0, hour), sequence: 7,
            usage: MeasuredUsage(instanceTypes: [InstanceTypeUsage(instanceType: "gpu=x.seconds", instances: 1, runningSeconds: 60)]),
            createdAt: t0 + hour)
        let text = String(decoding: tricky.canonicalBytes(), as: UTF8.self)
        #expect(text.contains("\nagreement=a\\=1\\\\x\\=format\\=evil\n"))
        #expect(text.contains("\ninstance_type.gpu\\=x.seconds.instances=1\ninstance_type.gpu\\=x.seconds.seconds=60\n"))
        #expect(text.split(separator: "\n").count == 13)
        #expect(try UsageRecord(canonicalBytes: tricky.canonicalBytes()) == tricky)
        // Newlines are escaped by the encoding, but identifiers may not contain control characters at all.
        #expect(CanonicalText.escape("a\nb=c\\") == "a\\nb\\=c\\\\")
        var withNewline = tricky
        withNewline.agreementID = "a1\nformat=evil"
        #expect(throws: UsageRecordError.invalid("agreement contains a control character")) { try withNewline.validate() }
    }

    @Test func roundTripsThroughCanonicalBytes() throws {
        #expect(try UsageRecord(canonicalBytes: Self.twoTypes.canonicalBytes()) == Self.twoTypes)
        let empty = record(types: [], vcpuSeconds: 0, bytes: 0, byteSeconds: 0)
        #expect(try UsageRecord(canonicalBytes: empty.canonicalBytes()) == empty)
    }

    @Test func refusesNonCanonicalEncodings() {
        let canonical = String(decoding: Self.twoTypes.canonicalBytes(), as: UTF8.self)
        func parse(_ text: String) throws(UsageRecordError) -> UsageRecord { try UsageRecord(canonicalBytes: Array(text.utf8)) }
        // Instance types out of order.
        let swapped = canonical.replacingOccurrences(
            of: "instance_type.m1.large.instances=1\ninstance_type.m1.large.seconds=3600\ninstance_type.m1.small.instances=2\ninstance_type.m1.small.seconds=36000\n",
            with: "instance_type.m1.small.instances=2\ninstance_type.m1.small.seconds=36000\ninstance_type.m1.large.instances=1\ninstance_type.m1.large.seconds=3600\n")
        #expect(swapped != canonical)
        #expect(throws: UsageRecordError.self) { try parse(swapped) }
        // A repeated instance type.
        #expect(throws: UsageRecordError.self) {
            try parse(canonical + "instance_type.m1.small.instances=2\ninstance_type.m1.small.seconds=36000\n")
        }
        // Leading zeros, signs, exponents, fractions.
        for bad in ["sequence=01", "sequence=+1", "sequence=-1", "sequence=1e0", "sequence=1.0", "sequence="] {
            #expect(throws: UsageRecordError.self) { try parse(canonical.replacingOccurrences(of: "sequence=1", with: bad)) }
        }
        // Field order, missing fields, unknown fields, format, CR line ends, missing final newline.
        #expect(throws: UsageRecordError.self) {
            try parse(canonical.replacingOccurrences(of: "provider=broker@cloud2.example\nconsumer=broker@cloud1.example",
                                                     with: "consumer=broker@cloud1.example\nprovider=broker@cloud2.example"))
        }
        #expect(throws: UsageRecordError.self) { try parse(canonical.replacingOccurrences(of: "vcpu_seconds=36000\n", with: "")) }
        #expect(throws: UsageRecordError.self) { try parse(canonical + "extra=1\n") }
        #expect(throws: UsageRecordError.unsupportedFormat("urn:intercloud:usage:1")) {
            try parse(canonical.replacingOccurrences(of: "usage:0", with: "usage:1"))
        }
        #expect(throws: UsageRecordError.self) { try parse(canonical.replacingOccurrences(of: "\n", with: "\r\n")) }
        #expect(throws: UsageRecordError.malformed("missing final newline")) { try parse(String(canonical.dropLast())) }
        #expect(throws: UsageRecordError.malformed("second unescaped '=' in a line")) {
            try parse(canonical.replacingOccurrences(of: "agreement=a1", with: "agreement=a=1"))
        }
        #expect(throws: UsageRecordError.malformed("not UTF-8")) { try UsageRecord(canonicalBytes: Array(canonical.utf8) + [0xFF, 0x0A]) }
    }

    @Test func refusesOversizedAndImpossibleRecords() {
        #expect(throws: UsageRecordError.self) {
            try UsageRecord(canonicalBytes: [UInt8](repeating: 0x61, count: Metering.maximumRecordBytes + 1))
        }
        // More running seconds than 2 instances can run in a day.
        let impossible = record(types: [InstanceTypeUsage(instanceType: "m1.small", instances: 2, runningSeconds: 2 * 86_400 + 1)])
        #expect(throws: UsageRecordError.self) { try impossible.validate() }
        #expect(throws: UsageRecordError.self) { try UsageRecord(canonicalBytes: impossible.canonicalBytes()) }
        let emptyPeriod = record(period: period(hour, hour))
        #expect(throws: UsageRecordError.invalid("period is empty: \(period(hour, hour))")) { try emptyPeriod.validate() }
        // A date beyond year 9999, in otherwise canonical text.
        let farFuture = String(decoding: record().canonicalBytes(), as: UTF8.self)
            .replacingOccurrences(of: "period.until=1780358400", with: "period.until=999999999999999")
        #expect(throws: UsageRecordError.invalid("period.until out of range")) { try UsageRecord(canonicalBytes: Array(farFuture.utf8)) }
        var emptyJID = record()
        emptyJID.consumer = ""
        #expect(throws: UsageRecordError.invalid("consumer is empty")) { try emptyJID.validate() }
    }

    @Test func linesFlattenEveryDimension() {
        #expect(Self.twoTypes.lines.map(\.key) == [
            "vcpu_seconds", "bytes_transferred", "byte_seconds_stored",
            "instance_type.m1.large.instances", "instance_type.m1.large.seconds",
            "instance_type.m1.small.instances", "instance_type.m1.small.seconds",
        ])
    }

    @Test func decimalsInPlainNotation() {
        #expect(CanonicalText.decimal(d("1e3")) == "1000")
        #expect(CanonicalText.decimal(d("0.000001")) == "0.000001")
        #expect(CanonicalText.decimal(d("-2.50")) == "-2.5")
        #expect(CanonicalText.decimal(d("100000000000000000000000000000000000000")) == "100000000000000000000000000000000000000")
        #expect(CanonicalText.decimal(0) == "0")
    }
}
