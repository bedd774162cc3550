import ArgumentParser
import Broker
import Foundation
import XMPP

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "The configuration file's keys, and a check of a file.",
        subcommands: [Reference.self, Check.self])

    struct Reference: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print every configuration key with its type, default and accepted values.",
            discussion: """
                Generated from the declarations the broker parses its file with; README's
                "Configuration reference" is the markdown output. `--output toml` prints every key
                commented out at its default, a starting point for a new file.
                """)

        @Option(help: "markdown, toml or json.")
        var output: BrokerSettings.ReferenceFormat = .markdown

        func run() throws {
            print(BrokerSettings.reference(output), terminator: "")
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read a configuration file as `intercloud serve` would, without starting anything.",
            discussion: """
                Unknown sections or keys, values of the wrong type or out of range, and missing
                required keys are reported with the file, line and key.
                """)

        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).")
        var config: String

        func run() throws {
            let configuration = try loadConfiguration(config)
            print("\(config): valid (cloud \(configuration.broker.cloud), \(configuration.xmpp.jid))")
        }
    }
}

extension BrokerSettings.ReferenceFormat: ExpressibleByArgument {}
