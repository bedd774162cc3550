import ArgumentParser
import Foundation
import Broker
import Storage
import Trust

/// `intercloud trust list|show|revoke|allow|distrust`: operator decisions on peer pins, written to
/// the broker database (safe while the broker runs: WAL, and the broker reads pins on every check).
/// Thin over `Trust.TrustOperator`.
struct TrustCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trust",
        abstract: "List and decide on pinned peers.",
        discussion: """
            A broker pins a peer (its leaf certificate's SHA-256 fingerprint) after a
            mutual trust handshake: both chains verified against the anchors in [trust]
            anchors, both sides proved possession of their keys. Decisions made here take
            effect at once in a running broker: it reads the pin on every signed request
            and before every handshake.

              intercloud trust list --config cloud1.toml
              intercloud trust revoke broker@cloud2.example --config cloud1.toml \\
                  --note "key leaked"
              intercloud trust allow broker@cloud2.example --config cloud1.toml

              revoke    the peer's signed requests are refused (not-authorized,
                        audited as pinRevoked), and so are its handshakes,
                        until allow
              distrust  the same for a JID, pinned or not
              allow     lifts either: a pinned key is trusted again, an
                        unpinned JID handshakes anew

            A pin whose chain stops validating (leaf expired, revoked by a CRL,
            anchor removed; checked at every anchor reload) becomes lapsed: the
            peer's requests are refused until a new handshake, and the new key is
            pinned only as [trust] key_change allows against the lapsed pin's
            anchor (`trust allow JID --new-key` accepts one from elsewhere).
            """,
        subcommands: [List.self, Show.self, Revoke.self, Allow.self, Distrust.self]
    )

    struct DatabaseOptions: ParsableArguments {
        @OptionGroup var location: BrokerDatabaseOptions

        func open() throws -> TrustOperator {
            let pool = try IntercloudDatabase.open(path: try location.path(), schema: [TrustSchema.self, AuditSchema.self])
            return TrustOperator(store: TrustStore(database: pool), audit: AuditLog(database: pool))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List pinned and refused peers.")
        @OptionGroup var options: DatabaseOptions
        @Option(help: "Only this state: trusted, revoked, distrusted, lapsed.") var state: String?

        func run() async throws {
            let filter = try state.map { value -> PinState in
                guard let state = PinState(rawValue: value) else { throw ValidationError("unknown state \(value)") }
                return state
            }
            print(TrustOperator.table(try options.open().list(state: filter)), terminator: "")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one peer's pin and its certificate.")
        @OptionGroup var options: DatabaseOptions
        @Argument(help: "Peer JID.") var jid: String

        func run() async throws {
            guard let pin = try options.open().show(jid) else { throw TrustCommandFailure("no pin for \(jid)") }
            print("jid:         \(pin.jid)\nstate:       \(pin.state.rawValue)\nnote:        \(pin.note)")
            if let leaf = try pin.leaf() { print(CertificateSummary(leaf).text) }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a peer's pin: its envelopes and handshakes are refused.")
        @OptionGroup var options: DatabaseOptions
        @Argument(help: "Peer JID.") var jid: String
        @Option(help: "Why (kept with the pin and in the audit log).") var note: String = ""

        func run() async throws {
            guard try options.open().revoke(jid, note: note, at: Date()) else { throw TrustCommandFailure("no pin for \(jid)") }
            print("revoked \(jid)")
        }
    }

    struct Allow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Lift a revoke or distrust, or (--new-key) accept a pinned peer's next key.",
            discussion: """
                A pinned peer that presents another key is re-pinned on its own only as [trust] key_change \
                allows ("same-anchor", the default: its new chain ends at the anchor its pinned one did; \
                "operator": never). Otherwise its handshakes are refused (keyChangeRefused, audited) and \
                the old pin stays; --new-key lets its next handshake re-pin it once, with any key that \
                verifies against the anchors.
                """)
        @OptionGroup var options: DatabaseOptions
        @Argument(help: "Peer JID.") var jid: String
        @Option(help: "Why.") var note: String = ""
        @Flag(help: "Accept the peer's next key (one re-pin) instead of lifting a revoke or distrust.") var newKey = false

        func run() async throws {
            if newKey {
                guard try options.open().acceptNewKey(jid, note: note, at: Date()) else {
                    throw TrustCommandFailure("\(jid) has no trusted pin: its next handshake pins whatever key verifies")
                }
                print("\(jid): its next handshake may re-pin it with a new key (once)")
                return
            }
            let pin = try options.open().allow(jid, note: note, at: Date())
            print(pin.map { "\($0.jid) trusted again (\($0.fingerprint ?? ""))" } ?? "\(jid) forgotten; its next handshake decides")
        }
    }

    struct Distrust: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Refuse a JID whether or not it is pinned.")
        @OptionGroup var options: DatabaseOptions
        @Argument(help: "Peer JID.") var jid: String
        @Option(help: "Why.") var note: String = ""

        func run() async throws {
            try options.open().distrust(jid, note: note, at: Date())
            print("distrusted \(jid)")
        }
    }
}

/// A failure reported without the usage text (the arguments were fine; the state was not).
struct TrustCommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Where a broker's database is: its configuration file (the usual way; `broker.database` in it)
/// or the database path itself.
struct BrokerDatabaseOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Broker configuration file (TOML); its broker.database is used.")
    var config: String?

    @Option(help: "Path of the broker database, instead of --config.")
    var database: String?

    func validate() throws {
        switch (config, database) {
        case (nil, nil): throw ValidationError("give --config FILE (the broker's configuration) or --database PATH")
        case (.some, .some): throw ValidationError("give either --config or --database, not both")
        default: break
        }
    }

    func path() throws -> String {
        if let database { return database }
        return try loadConfiguration(config ?? "").databasePath
    }
}
