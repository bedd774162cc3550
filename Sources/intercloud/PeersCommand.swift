import ArgumentParser
import Broker
import Discovery
import Foundation
import Storage
import XMPP

struct PeersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peers",
        abstract: "Show the peer brokers this broker has found, or approve or reject a peering request.",
        discussion: """
            Reads the peer registry of the broker configured in --config (works while the
            broker runs). ONLINE is the broker's current view; LAST SEEN is when presence
            last arrived. SUBSCRIPTION shows direct-peering state: pending-approval means
            the peer asked and waits for `intercloud peers approve JID` (or `reject`), at
            most [discovery] approval_wait_hours (168) before it is declined.

            TRUST comes from the trust store and the audit log:
              trusted         a mutual certificate handshake succeeded and the
                              peer still announces the pinned key; its signed
                              requests are accepted
              untrusted       no handshake yet (or the peer runs without
                              [trust], or it announces a new key not yet
                              verified)
              refused:REASON  the latest handshake was refused (unknownCA,
                              expired, revoked, xmppAddrMismatch, peerRefused,
                              timeout, ...), or the operator revoked the pin
                              (pinRevoked) or distrusts the peer (distrusted)
            Details: `intercloud audit --config FILE --peer JID` and
            `intercloud trust show JID --config FILE`.
            """,
        subcommands: [ListPeers.self, ApprovePeer.self, RejectPeer.self],
        defaultSubcommand: ListPeers.self)

    struct ListPeers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List known peers (the default).")

        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).")
        var config: String

        @Option(help: "Output format: table or json.")
        var output: OutputFormat = .table

        @Flag(help: "Only peers that are online now.")
        var online = false

        func run() async throws {
            let configuration = try loadConfiguration(config)
            guard FileManager.default.fileExists(atPath: configuration.databasePath) else {
                throw ValidationError("no registry at \(configuration.databasePath): has this broker run yet?")
            }
            let database = try IntercloudDatabase.open(path: configuration.databasePath, schema: BrokerNode.schema)
            let registry = PeerRegistry(database: database)
            var peers = try registry.all()
            if online { peers = peers.filter(\.online) }
            let trust = try peers.map { try registry.trustStatus(of: $0).description }
            switch output {
            case .json:
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                encoder.dateEncodingStrategy = .iso8601
                let rows = zip(peers, trust).map(PeerJSON.init)
                print(String(decoding: try encoder.encode(rows), as: UTF8.self))
            case .table:
                let formatter = ISO8601DateFormatter()
                printTable(
                    headers: ["PEER", "CLOUD", "REGIONS", "ONLINE", "VIA", "SUBSCRIPTION", "TRUST", "FEATURES", "LAST SEEN"],
                    rows: zip(peers, trust).map { peer, trust in
                        [peer.jid, peer.cloud ?? "-", peer.regionList.joined(separator: ","), peer.online ? "yes" : "no",
                         peer.via ?? "-", peer.subscription, trust, String(peer.featureList.count),
                         formatter.string(from: peer.lastSeen)]
                    })
                if peers.isEmpty { print("(no peers yet)") }
            }
        }
    }

    struct ApprovePeer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "approve",
            abstract: "Approve a direct-peering request; the running broker applies it within a second.")

        @Argument(help: "The peer broker's JID, e.g. broker@cloud3.example.")
        var jid: String

        @Option(name: .shortAndLong, help: "Broker configuration file (TOML).")
        var config: String

        func run() async throws {
            let configuration = try loadConfiguration(config)
            let peer: JID
            do { peer = try JID(jid) } catch { throw ValidationError("\(jid): \(error)") }
            let database = try IntercloudDatabase.open(path: configuration.databasePath, schema: BrokerNode.schema)
            try PeerRegistry(database: database).approve(peer, now: Date())
            print("approved \(peer.bare); the broker will accept its peering request")
        }
    }
}

struct RejectPeer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reject",
        abstract: "Decline a direct-peering request; the running broker answers it within a second.",
        discussion: """
            The broker answers the peer `unsubscribed`, drops the request from the waiting list
            (at most 64 wait at once) and records the decision in the audit log. A request nobody
            decides on is declined the same way after [discovery] approval_wait_hours (168).
            The peer may ask again later; `intercloud peers approve` accepts it then.
            """)

    @Argument(help: "The requesting broker's JID, e.g. broker@cloud3.example.")
    var jid: String

    @Option(name: .shortAndLong, help: "Broker configuration file (TOML).")
    var config: String

    func run() async throws {
        let configuration = try loadConfiguration(config)
        let peer: JID
        do { peer = try JID(jid) } catch { throw ValidationError("\(jid): \(error)") }
        let database = try IntercloudDatabase.open(path: configuration.databasePath, schema: BrokerNode.schema)
        try PeerRegistry(database: database).reject(peer, now: Date())
        print("rejected \(peer.bare); the broker will decline its peering request")
    }
}

/// The JSON shape of `intercloud peers --output json` (stable for scripts).
struct PeerJSON: Encodable {
    var jid: String
    var cloud: String?
    var regions: [String]
    var load: Double?
    var fingerprint: String?
    var features: [String]
    var via: String?
    var subscription: String
    /// trusted, untrusted or refused:REASON (see `intercloud peers --help`).
    var trust: String
    var online: Bool
    var firstSeen: Date
    var lastSeen: Date

    init(_ record: PeerRecord, trust: String) {
        self.trust = trust
        jid = record.jid
        cloud = record.cloud
        regions = record.regionList
        load = record.load
        fingerprint = record.fingerprint
        features = record.featureList
        via = record.via
        subscription = record.subscription
        online = record.online
        firstSeen = record.firstSeen
        lastSeen = record.lastSeen
    }
}
