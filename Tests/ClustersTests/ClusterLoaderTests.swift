import Clusters
import Federation
import Foundation
import Testing
import TOMLParsing

@Suite("Cluster files")
struct ClusterLoaderTests {
    let templates = try! TemplateLoader.load(directory: repositoryRoot.appendingPathComponent("templates").path)

    @Test("the shipped example: members, parameters, counts, and the launch order db before web")
    func shippedExample() throws {
        let definition = try ClusterLoader.load(path: repositoryRoot.appendingPathComponent("clusters/shop.toml").path, templates: templates)
        #expect(definition.name == "shop")
        #expect(definition.members.map(\.name) == ["db", "web"])
        #expect(definition.members[1].count == 2)
        #expect(definition.members[1].after == ["db"])
        #expect(definition.members[1].bootTimeout == 120)
        #expect(definition.members[0].parameters == ["database": "shop"])
        #expect(definition.launchOrder.map(\.name) == ["db", "web"])
    }

    @Test("launch order follows `after`, not file order; members without constraints keep file order")
    func launchOrder() throws {
        let definition = try ClusterLoader.parse(
            """
            version = 1
            name = "c"
            [[member]]
            name = "web"
            template = "web-server"
            after = ["db", "cache"]
            [[member]]
            name = "cache"
            template = "web-server"
            after = ["db"]
            [[member]]
            name = "db"
            template = "postgres-db"
            parameters = { database = "x" }
            [[member]]
            name = "side"
            template = "web-server"
            """, file: "c.toml", templates: templates)
        #expect(definition.launchOrder.map(\.name) == ["db", "cache", "web", "side"])
    }

    @Test(
        "errors name file:line: field",
        arguments: [
            ("version = 1\nname = \"c\"\n[[member]]\nname = \"web\"\ntemplate = \"nope\"\n", "c.toml:5: member[0].template: no template named 'nope'"),
            ("version = 1\nname = \"c\"\n[[member]]\nname = \"web\"\ntemplate = \"web-server\"\nafter = [\"db\"]\n", "c.toml:6: member[0].after: names no member 'db'"),
            ("version = 1\nname = \"c\"\n[[member]]\nname = \"web\"\ntemplate = \"web-server\"\ncount = 0\n", "c.toml:6: member[0].count: must be in 1...20"),
            ("version = 1\nname = \"c\"\n[[member]]\nname = \"web\"\ntemplate = \"web-server\"\nparameters = { site_name = \"a b\" }\n",
             "c.toml:6: member[0].parameters: template web-server: parameter 'site_name'"),
            ("version = 1\nname = \"c\"\n[[member]]\nname = \"a\"\ntemplate = \"web-server\"\nafter = [\"b\"]\n[[member]]\nname = \"b\"\ntemplate = \"web-server\"\nafter = [\"a\"]\n",
             "member[0].after: ordering cycle through 'a'"),
            ("version = 1\nname = \"c\"\n[[member]]\nname = \"web\"\ntemplate = \"web-server\"\npeer = \"not a jid\"\n", "c.toml:6: member[0].peer: 'not a jid' is not a bare broker JID"),
            ("version = 1\nname = \"c d\"\n[[member]]\nname = \"web\"\ntemplate = \"web-server\"\n", "c.toml:2: name: 'c d' must be"),
            ("version = 1\nname = \"c\"\n[[member]]\nname = \"web\"\ntemplate = \"web-server\"\ncolour = \"red\"\n", "c.toml:6: member[0].colour: unknown field"),
            ("version = 1\nname = \"c\"\n", "c.toml:1: member: missing"),
            ("version = 1\nname = \"c\"\n[[member]]\nname = \"web\"\ntemplate = \"web-server\"\n[[member]]\nname = \"web\"\ntemplate = \"web-server\"\n",
             "c.toml:7: member[1].name: member 'web' is declared twice"),
        ])
    func errors(text: String, expected: String) throws {
        #expect {
            try ClusterLoader.parse(text, file: "c.toml", templates: templates)
        } throws: { error in
            guard let error = error as? TOMLLoadError else { return false }
            let text = error.description
            if !text.contains(expected) { Issue.record("got: \(text)") }
            return text.contains(expected)
        }
    }

    @Test("a peer member's template is the peer's: not checked against ours")
    func peerTemplateNotChecked() throws {
        let definition = try ClusterLoader.parse(
            "version = 1\nname = \"c\"\n[[member]]\nname = \"cache\"\ntemplate = \"redis-cache\"\npeer = \"broker@cloud2.test\"\nagreement = \"agr-9\"\n",
            file: "c.toml", templates: templates)
        #expect(definition.members[0].peer == "broker@cloud2.test")
        #expect(definition.members[0].agreement == "agr-9")
    }
}
