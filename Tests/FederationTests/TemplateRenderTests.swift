import Foundation
import Testing

@testable import Federation

@Suite("Template parameters")
struct TemplateRenderTests {
    let template = ServerTemplate(
        name: "t", description: "d", image: "seed-linux", size: "sim.small",
        parameters: [
            TemplateParameter(name: "site", description: "s", defaultValue: "home", pattern: "[a-z]{1,12}"),
            TemplateParameter(name: "db", description: "d", required: true, pattern: "[a-z][a-z0-9_]*"),
            TemplateParameter(name: "mode", description: "m", defaultValue: "fast", allowedValues: ["fast", "safe"]),
            TemplateParameter(name: "url", description: "u", pattern: ".*"),
        ],
        bootScript: "run --site={{site}} --db={{ db }} --mode={{mode}} --url={{url}}\n",
        interface: ServiceInterface(protocolName: "http", port: 80))

    func problems(_ values: [String: String]) -> [String] {
        do {
            _ = try template.render(parameters: values)
            return []
        } catch {
            return error.problems
        }
    }

    @Test("validated values and defaults are substituted; an optional parameter without value becomes empty")
    func substitution() throws {
        let rendered = try template.render(parameters: ["db": "orders", "mode": "safe"])
        #expect(rendered.userData == "run --site=home --db=orders --mode=safe --url=\n")
        #expect(rendered.parameters == ["site": "home", "db": "orders", "mode": "safe"])
        let withURL = try template.render(parameters: ["db": "x", "url": "https://example.org/a,b@c:8080"])
        #expect(withURL.userData == "run --site=home --db=x --mode=fast --url=https://example.org/a,b@c:8080\n")
    }

    @Test("missing required, unknown names, pattern and allowed-value mismatches are all reported")
    func refusals() {
        let found = problems(["site": "UPPER", "mode": "slow", "extra": "1"])
        #expect(found.count == 4)
        #expect(found.contains { $0.hasPrefix("unknown parameter 'extra'") })
        #expect(found.contains("parameter 'db' is required"))
        #expect(found.contains { $0.contains("'UPPER' does not match [a-z]{1,12}") })
        #expect(found.contains { $0.contains("'slow' is not one of fast, safe") })
    }

    @Test("the pattern is anchored at both ends")
    func anchored() {
        #expect(problems(["db": "orders_2", "site": "abc1"]).count == 1)  // trailing digit outside [a-z]
        #expect(problems(["db": "1orders"]).count == 1)  // leading digit
        #expect(problems(["db": "orders", "site": "abcdefghijklm"]).count == 1)  // 13 > 12
    }

    @Test(
        "shell injection attempts are refused even where the pattern accepts anything",
        arguments: [
            "x; rm -rf /", "$(id)", "`id`", "a|b", "a&&b", "a>b", "line\nbreak", "with space", "'quoted'", "\"quoted\"",
            "--option", "a*", "${HOME}", "{{site}}", "tab\there", "ünïcode", "",
        ])
    func injection(value: String) {
        let found = problems(["db": "ok", "url": value])
        #expect(found.count == 1)
        #expect(found.first?.hasPrefix("parameter 'url': value must be") == true)
    }

    @Test("overlong values and too many parameters are refused")
    func bounds() {
        #expect(problems(["db": "ok", "url": String(repeating: "a", count: 257)]).count == 1)
        #expect(problems(["db": "ok", "url": String(repeating: "a", count: 256)]).isEmpty)
        var many: [String: String] = [:]
        for i in 0..<33 { many["p\(i)"] = "v" }
        #expect(problems(many) == ["more than 32 parameters"])
    }

    @Test("placeholders are found in order, with spaces trimmed")
    func placeholders() {
        #expect(ServerTemplate.placeholders(in: "a {{x}} b {{ y }} {{z") == ["x", "y"])
    }
}
