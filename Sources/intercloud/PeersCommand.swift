import ArgumentParser
import Broker
import Foundation
import Storage
import XMPP

struct PeersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peers",
        abstract: "Show the peer brokers this broker has found, or approve a peering request.",
        discussion: """
            Reads the peer registry of the broker configured in --config (works while the broker
            runs). ONLINE is the broker's current view; LAST SEEN is when presence last arrived.
            SUBSCRIPTION shows direct-peering state: pending-approval means the peer asked and
            waits for `intercloud peers approve JID`.
            """,
        subcommands: [ListPeers.self, ApprovePeer.self],
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
            var peers = try PeerRegistry(database: database).all()
            if online { peers = peers.filter(\.online) }
            switch output {
            case .json:
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                encoder.dateEncodingStrategy = .iso8601
                let rows = peers.map(PeerJSON.init)
                print(String(decoding: try encoder.encode(rows), as: UTF8.self))
            case .table:
                let formatter = ISO8601DateFormatter()
                printTable(
                    headers: ["PEER", "CLOUD", "REGIONS", "ONLINE", "VIA", "SUBSCRIPTION", "FEATURES", "LAST SEEN"],
                    rows: peers.map { peer in
                        [peer.jid, peer.cloud ?? "-", peer.regionList.joined(separator: ","), peer.online ? "yes" : "no",
                         peer.via ?? "-", peer.subscription, String(peer.featureList.count), formatter.string(from: peer.lastSeen)]
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
    var online: Bool
    var firstSeen: Date
    var lastSeen: Date

    init(_ record: PeerRecord) {
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
