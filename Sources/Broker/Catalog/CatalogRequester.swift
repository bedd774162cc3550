import Catalog
import CatalogQueries
import Discovery
import Foundation
import GRDB
import Logging
import Peering
import Storage
import Trust
import XMPP

/// What `intercloud catalog query` connects with: the broker's own account under another resource
/// (`<bare>/cli-<pid>`), its trust identity and its database (the same SQLite file; WAL lets the
/// running broker and this process share it).
///
/// Why this works with the running broker's peers: envelopes sign and verify *bare* JIDs
/// (`SignedEnvelope.signedBytes` uses `XmppAddr.bare` of the routed sender and recipient, and
/// `EnvelopeVerifier` looks the pin up by bare JID), and the leaf certifies the bare JID. So a
/// request from `broker@cloud1/cli-42` signed with cloud1's key verifies at a peer that pinned
/// `broker@cloud1`, and the peer's answer, sealed to that bare JID, verifies here. No IQ to the
/// running broker is needed, and the CLI works whether or not the broker is running (the registry
/// then shows who was last online).
///
/// The CLI client never sends presence: a session that was never available is invisible to peers.
/// It must also not end with `XMPPClient.stop()`, whose unavailable presence Prosody broadcasts to
/// the account's subscribed contacts, and `PeerDiscovery` on a directly peered broker would take it
/// for the broker going offline; the CLI process just exits (stream management off, so the server
/// drops the session at once). Tests, which use rooms only, call `close()`.
public final class CatalogRequester: Sendable {
    public let client: XMPPClient
    public let querier: CatalogQuerier
    let database: DatabasePool
    let trust: TrustService
    private let tasks = TaskBag()

    private init(client: XMPPClient, querier: CatalogQuerier, database: DatabasePool, trust: TrustService) {
        self.client = client
        self.querier = querier
        self.database = database
        self.trust = trust
    }

    public static func connect(
        configuration: BrokerConfiguration, resource: String = "cli-\(ProcessInfo.processInfo.processIdentifier)",
        logger: Logger = Logger(label: "intercloud.catalog"), connectTimeout: Duration = .seconds(10)
    ) async throws -> CatalogRequester {
        guard let settings = configuration.trust else {
            throw BrokerTrustSetupError("\(configuration.sourcePath) has no [trust] section: catalog queries to peers must be signed")
        }
        let identity: BrokerIdentity
        do { identity = try BrokerIdentity.load(keyPath: settings.keyPath, chainPath: settings.chainPath) } catch {
            throw BrokerTrustSetupError("cannot load trust.key \(settings.keyPath) / trust.chain \(settings.chainPath): \(error)")
        }
        let anchors: TrustAnchors
        do { anchors = try settings.loadAnchors() } catch {
            throw BrokerTrustSetupError("cannot load trust.anchors / trust.crls: \(error)")
        }
        let database = try IntercloudDatabase.open(path: configuration.databasePath, schema: BrokerNode.schema)
        var xmpp = configuration.xmpp
        xmpp.jid = try configuration.xmpp.jid.with(resource: resource)
        xmpp.streamManagement = false
        let client = XMPPClient(configuration: xmpp, logger: logger)
        let trust = TrustService(
            myJID: configuration.xmpp.jid.bare.description, identity: identity, anchors: anchors, database: database,
            ownsReplayRun: false, logger: logger)
        let audit = AuditLog(database: database)
        let registry = PeerRegistry(database: database)
        let requester = CatalogRequester(
            client: client,
            querier: CatalogQuerier(
                signed: SignedRequests(trust: trust, audit: audit, client: client, registry: registry, logger: logger, tasks: TaskBag()),
                peers: registry),
            database: database, trust: trust)
        client.start()
        do { try await client.waitUntilOnline(timeout: connectTimeout) } catch {
            await client.stop()
            throw error
        }
        return requester
    }

    /// Stops the client (sending unavailable presence: see the type's comment) and closes the database.
    public func close() async {
        await tasks.close()
        await client.stop()
        trust.close()
        try? database.close()
    }
}
