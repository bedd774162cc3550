import Foundation
import Testing
import TOMLParsing
@testable import Policy

/// The repository's `policies/` directory, found from this file so tests run from any directory.
let policiesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("policies")

/// Parses `text` expecting failure and returns the diagnostics.
func diagnostics(_ text: String) -> [PolicyDiagnostic] {
    do {
        _ = try PolicyLoader.parse(text, file: "test.toml")
        Issue.record("expected errors")
        return []
    } catch {
        return error.diagnostics
    }
}

let validPeer = """
    version = 1

    [[peer]]
    name = "p"
    match = "*@cloud2.example"
    entitlements = ["query"]

    """

@Suite struct PolicyLoaderTests {
    @Test func exampleFilesLoad() throws {
        let set = try PolicyLoader.load(paths: [
            policiesDirectory.appendingPathComponent("example-cloud1.toml").path,
            policiesDirectory.appendingPathComponent("example-cloud2.toml").path,
        ])
        #expect(set.peers.count == 3)
        let cloud2 = try #require(set.peers.first { $0.name == "cloud2-2026" })
        #expect(cloud2.quota.transferGB == Decimal(string: "500.5"))
        #expect(cloud2.rates?.instanceHour["m1.small"] == Decimal(string: "0.023"))
        #expect(cloud2.entitlements == [.query, .federate, .migrateIn])
        #expect(cloud2.placement.jurisdictions == ["EU"])
        #expect(cloud2.validity.from == Date(timeIntervalSince1970: 1_767_225_600))
        let cloud1 = try #require(set.peers.first { $0.name == "cloud1" })
        #expect(cloud1.rates?.instanceHour["standard-4"] == Decimal(string: "0.10"))
        #expect(cloud1.validity.until == nil)
    }

    @Test func syntaxErrorHasLineAndColumn() {
        let d = diagnostics("version = 1\n\n[[peer]\nname = \"x\"\n")
        #expect(d.count == 1)
        #expect(d.first?.line == 3)
        #expect(d.first?.column != nil)
        #expect(d.first?.description.hasPrefix("test.toml:3:") == true)
    }

    /// Found by scripts/fuzz.sh: toml++ aborted the process (an assertion in parse_key) on a control
    /// character in a table header. Control characters are refused before the parser sees them.
    @Test func controlCharactersAreRefusedNotFatal() {
        let d = diagnostics("version = 1\n[\u{04}\u{00}\u{00}]\nname = \"x\"\n")
        #expect(d.count == 1)
        #expect(d.first?.line == 2 && d.first?.column == 2, "\(d)")
        #expect(d.first?.message.contains("U+0004") == true, "\(d)")
        #expect(diagnostics("version = 1 # a comment with a bell \u{07}\n").first?.message.contains("U+0007") == true)
        // A non-ASCII bare key in a table header aborted toml++ too; quoted, or in strings and
        // comments, non-ASCII text is fine.
        let bare = diagnostics("version = 1\n[é]\nname = \"x\"\n")
        #expect(bare.first?.line == 2 && bare.first?.message.contains("non-ASCII") == true, "\(bare)")
        let strings = "version = 1 # café\n[[peer]]\nname = \"café \\\" é\"\nmatch = ['*@é.example']\nnote = \"\"\"é\n\"\"\"\nmore = '''é''' # é\n"
        for header in ["[@]", "[[@]]", "[ @]", "[.a]", "[=]"] {
            #expect(diagnostics("version = 1\n\(header)\n").first?.message.contains("table header") == true, "\(header)")
        }
        // toml++ asserted in parse_time on this date: the grammar check refuses it first.
        #expect(diagnostics("version = 1\nvalid_until = 2027-01-01T\"*\"00:00Z\n").first?.line == 2)
        // Valid TOML of every kind still passes the grammar check.
        let kinds = """
            version = 1
            a = 0x1F_ff
            b = -1_000.5e+3
            c = inf
            d = 1979-05-27 07:32:00-08:00
            e = 07:32:00.999
            f = { g = [1, [2, 3], { h = 'x' }], "i j" = true }
            k.l."m" = \"""two
            lines\"""
            n = [
              1, # one
              2,
            ]
            [[o.p]]
            """
        #expect(TOMLTextCheck.passes(kinds), "\(diagnostics(kinds))")
        // Arrays that open lines are values, not headers.
        #expect(diagnostics("version = 1\nx = [\n[{a = 1}],\n]\n").allSatisfy { !$0.message.contains("table header") })
        #expect(diagnostics(strings).allSatisfy { !$0.message.contains("non-ASCII") && !$0.message.contains("control") }, "\(diagnostics(strings))")
    }

    @Test func unknownFieldIsReportedAtItsLine() {
        let d = diagnostics(validPeer + "[peer.quota]\nvcpus = 4\n")
        #expect(d.map(\.field) == ["peer[0].quota.vcpus"])
        #expect(d.first?.line == 8)
        #expect(d.first?.message.hasPrefix("unknown field") == true)
    }

    @Test func callsArePricedPerThousand() throws {
        let set = try PolicyLoader.parse(validPeer + "[peer.rates]\ncurrency = \"EUR\"\nper_1000_calls = \"0.35\"\n", file: "test.toml")
        #expect(set.peers.first?.rates?.perThousandCalls == Decimal(string: "0.35"))
        let d = diagnostics(validPeer + "[peer.rates]\ncurrency = \"EUR\"\nper_1000_calls = \"-1\"\n")
        #expect(d.map(\.field) == ["peer[0].rates.per_1000_calls"])
    }

    @Test func priceCeilingsLeaveOutWhatIsNotLimited() throws {
        let set = try PolicyLoader.parse(
            validPeer + "[peer.max_rates]\ncurrency = \"EUR\"\nper_gb_transferred = \"0.03\"\n[peer.max_rates.instance_hour]\n\"m1.small\" = \"0.03\"\n",
            file: "test.toml")
        let ceiling = try #require(set.peers.first?.maxRates)
        #expect(ceiling.currency == "EUR" && ceiling.instanceHour == ["m1.small": Decimal(string: "0.03")!])
        #expect(ceiling.perGBTransferred == Decimal(string: "0.03") && ceiling.perGBMonthStored == nil && ceiling.perThousandCalls == nil)
        #expect(diagnostics(validPeer + "[peer.max_rates]\ncurrency = \"EUR\"\nper_gb = 1\n").map(\.field) == ["peer[0].max_rates.per_gb"])
    }

    @Test func wrongType() {
        let d = diagnostics(validPeer + "[peer.quota]\ninstances = \"ten\"\n")
        #expect(d.map(\.field) == ["peer[0].quota.instances"])
        #expect(d.first?.line == 8)
        #expect(d.first?.message == "expected an integer, found string")
    }

    @Test func negativeQuota() {
        let d = diagnostics(validPeer + "[peer.quota]\nvcpu = 4\nmemory_gib = \"-1.5\"\n")
        #expect(d.map(\.field) == ["peer[0].quota.memory_gib"])
        #expect(d.first?.line == 9)
        #expect(d.first?.description == "test.toml:9: peer[0].quota.memory_gib: must not be negative (found -1.5)")
    }

    @Test func floatAmountIsRefused() {
        let d = diagnostics(validPeer + "[peer.rates]\ncurrency = \"EUR\"\nper_gb_transferred = 0.1\n")
        #expect(d.map(\.field) == ["peer[0].rates.per_gb_transferred"])
        #expect(d.first?.line == 9)
    }

    @Test func badCurrency() {
        let d = diagnostics(validPeer + "[peer.rates]\ncurrency = \"EURO\"\n")
        #expect(d.map(\.field) == ["peer[0].rates.currency"])
        #expect(d.first?.line == 8)
    }

    @Test func badPriceInQuotedInstanceType() {
        let d = diagnostics(validPeer + "[peer.rates]\ncurrency = \"EUR\"\n[peer.rates.instance_hour]\n\"m1.small\" = \"cheap\"\n")
        #expect(d.map(\.field) == ["peer[0].rates.instance_hour.\"m1.small\""])
        #expect(d.first?.line == 10)
    }

    @Test func overlappingValidity() {
        let text = """
            version = 1

            [[peer]]
            name = "a"
            match = "*@cloud2.example"
            valid_from = 2026-01-01T00:00:00Z
            valid_until = 2026-07-01T00:00:00Z

            [[peer]]
            name = "b"
            match = ["x@y.example", "*@CLOUD2.example"]
            valid_from = 2026-06-01T00:00:00+02:00
            """
        let d = diagnostics(text)
        #expect(d.map(\.field) == ["peer[1].valid_from"])
        #expect(d.first?.line == 12)
        #expect(d.first?.message.contains("'a'") == true)
    }

    @Test func adjacentValidityDoesNotOverlap() throws {
        let text = """
            version = 1
            [[peer]]
            name = "a"
            match = "*"
            valid_until = 2026-07-01T00:00:00Z
            [[peer]]
            name = "b"
            match = "*"
            valid_from = 2026-07-01T00:00:00Z
            """
        #expect(try PolicyLoader.parse(text, file: "t").peers.count == 2)
    }

    @Test func validityEndBeforeStart() {
        let d = diagnostics(validPeer + "valid_from = 2026-02-01\nvalid_until = 2026-01-01\n")
        #expect(d.map(\.field) == ["peer[0].valid_until"])
        #expect(d.first?.line == 8)
    }

    @Test func localDateTimeIsRefused() {
        let d = diagnostics(validPeer + "valid_from = 2026-02-01T00:00:00\n")
        #expect(d.map(\.field) == ["peer[0].valid_from"])
    }

    @Test func missingFieldsAndBadValues() {
        let text = """
            [[peer]]
            match = ["not a jid"]
            entitlements = ["query", "teleport"]
            [peer.sla_offered]
            availability_percent = "100.1"
            """
        let d = diagnostics(text)
        #expect(Set(d.map(\.field)) == ["version", "peer[0].name", "peer[0].match", "peer[0].entitlements", "peer[0].sla_offered.availability_percent"])
        #expect(d.first { $0.field == "peer[0].entitlements" }?.line == 3)
        #expect(d.first { $0.field == "peer[0].sla_offered.availability_percent" }?.line == 5)
    }

    @Test func secondPeerErrorsPointAtSecondPeer() {
        let d = diagnostics(validPeer + "[[peer]]\nname = \"q\"\nmatch = \"*\"\n[peer.quota]\ninstances = -1\n")
        #expect(d.map(\.field) == ["peer[1].quota.instances"])
        #expect(d.first?.line == 11)
    }

    @Test func errorsAcrossFilesNameTheirFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("policy-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = dir.appendingPathComponent("a.toml"), b = dir.appendingPathComponent("b.toml")
        try validPeer.write(to: a, atomically: true, encoding: .utf8)
        try validPeer.write(to: b, atomically: true, encoding: .utf8)
        #expect(throws: PolicyLoadError.self) { try PolicyLoader.load(paths: [a.path, b.path]) }
        do {
            _ = try PolicyLoader.load(paths: [a.path, b.path])
        } catch {
            #expect(error.diagnostics.map(\.file) == [b.path])
            #expect(error.diagnostics.first?.line == 3)
        }
    }
}

/// Whether a document passes the checks made before toml++ parses it.
enum TOMLTextCheck {
    static func passes(_ text: String) -> Bool {
        do {
            try TOMLText.check(text)
            return true
        } catch { return false }
    }
}
