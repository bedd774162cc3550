import Foundation
import Metering
import Testing

/// `urn:intercloud:metering:0` byte for byte (docs/protocol/metering.md): the payloads, and the
/// canonical text of a usage record with and without calls. If one of these tests fails, the wire
/// (or the signed text) changed.
@Suite struct MeteringWireGoldenTests {
    static let record = UsageRecord(
        agreementID: "agr-1", provider: "broker@cloud2.example", consumer: "broker@cloud1.example",
        period: MeteringPeriod(from: Date(timeIntervalSince1970: 1_780_315_200), until: Date(timeIntervalSince1970: 1_780_318_800)),
        sequence: 7,
        usage: MeasuredUsage(
            instanceTypes: [
                InstanceTypeUsage(instanceType: "m1.small", instances: 1, runningSeconds: 3600),
                InstanceTypeUsage(instanceType: "a=b", instances: 2, runningSeconds: 10),
            ],
            vcpuSeconds: 7200, bytesTransferred: 1_073_741_824, byteSecondsStored: Decimal(string: "77309411328000")!),
        createdAt: Date(timeIntervalSince1970: 1_780_318_860.9))

    static let text = """
        format=urn:intercloud:usage:0
        agreement=agr-1
        sequence=7
        provider=broker@cloud2.example
        consumer=broker@cloud1.example
        created=1780318860
        period.from=1780315200
        period.until=1780318800
        vcpu_seconds=7200
        bytes_transferred=1073741824
        byte_seconds_stored=77309411328000
        instance_type.a\\=b.instances=2
        instance_type.a\\=b.seconds=10
        instance_type.m1.small.instances=1
        instance_type.m1.small.seconds=3600

        """

    @Test func canonicalTextWithoutAndWithCalls() throws {
        #expect(String(decoding: Self.record.canonicalBytes(), as: UTF8.self) == Self.text)
        #expect(try UsageRecord(canonicalBytes: Array(Self.text.utf8)) == Self.record)
        var withCalls = Self.record
        withCalls.usage.calls = 42
        let callsText = Self.text.replacingOccurrences(of: "byte_seconds_stored=77309411328000\n", with: "byte_seconds_stored=77309411328000\ncalls=42\n")
        #expect(String(decoding: withCalls.canonicalBytes(), as: UTF8.self) == callsText)
        #expect(try UsageRecord(canonicalBytes: Array(callsText.utf8)) == withCalls)
        // calls=0 written out is not canonical: it is left out.
        let zeroCalls = Self.text.replacingOccurrences(of: "byte_seconds_stored=77309411328000\n", with: "byte_seconds_stored=77309411328000\ncalls=0\n")
        #expect(throws: UsageRecordError.self) { try UsageRecord(canonicalBytes: Array(zeroCalls.utf8)) }
    }

    @Test func payloadsHaveTheirNames() throws {
        let usage = MeteringWire.usage(record: [1, 2, 3], signature: [4, 5])
        #expect(String(decoding: usage, as: UTF8.self) == "<usage xmlns='urn:intercloud:metering:0' record='AQID' signature='BAU='/>")
        let parsed = try MeteringWire.parseUsage(usage)
        #expect(parsed.record == [1, 2, 3] && parsed.signature == [4, 5])
        let countersigned = MeteringWire.countersigned(signature: [6])
        #expect(String(decoding: countersigned, as: UTF8.self) == "<countersigned xmlns='urn:intercloud:metering:0' signature='Bg=='/>")
        guard case .countersigned([6]) = try MeteringWire.parseAnswer(countersigned) else { Issue.record("not a countersignature"); return }
        let disputed = MeteringWire.disputed(reasons: ["calls: a < b", "x"])
        #expect(String(decoding: disputed, as: UTF8.self)
            == "<disputed xmlns='urn:intercloud:metering:0'><reason>calls: a &lt; b</reason><reason>x</reason></disputed>")
        guard case .disputed(let reasons) = try MeteringWire.parseAnswer(disputed) else { Issue.record("not a dispute"); return }
        #expect(reasons == ["calls: a < b", "x"])
    }
}
