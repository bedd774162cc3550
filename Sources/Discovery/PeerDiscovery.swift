import XMPP

/// Finding peers: exchange rooms, direct (roster) peering and operator approval, as a value-type
/// state machine. Inputs are presence stanzas and session events; outputs are actions the broker
/// node performs (send presence, write the registry). No IO, no clock.
public struct PeerDiscovery: Sendable {
    public struct Settings: Sendable {
        public var ownJID: JID
        public var rooms: Set<JID>
        public var directPeers: Set<JID>
        public var approvalPatterns: [String]
        /// Peers whose subscription was approved before this run (the registry's `approved` rows).
        public var approvedPeers: Set<JID>
        /// Peering requests already waiting for the operator (the registry's `pending-approval` rows).
        public var pendingApprovals: Set<JID>
        /// At most this many peering requests wait for the operator at once; more are refused.
        public var maxPendingApprovals: Int
        /// Bound on the caps cache and on the set of caps already asked about (input-keyed).
        public var maxCapsEntries: Int

        public init(
            ownJID: JID, rooms: [JID], directPeers: [JID], approvalPatterns: [String], approvedPeers: [JID] = [],
            pendingApprovals: [JID] = [], maxPendingApprovals: Int = 64, maxCapsEntries: Int = 512
        ) {
            self.ownJID = ownJID
            self.rooms = Set(rooms.map(\.bare))
            self.directPeers = Set(directPeers.map(\.bare))
            self.approvalPatterns = approvalPatterns
            self.approvedPeers = Set(approvedPeers.map(\.bare))
            self.pendingApprovals = Set(pendingApprovals.map(\.bare))
            self.maxPendingApprovals = maxPendingApprovals
            self.maxCapsEntries = maxCapsEntries
        }
    }

    /// What a presence told us about a peer.
    public struct Observation: Sendable, Equatable {
        public var jid: JID
        public var fullJID: JID
        public var announcement: Announcement
        public var via: String
        public var capsVer: String?
    }

    public enum Event: Sendable {
        case sessionStarted
        case sessionLost
        case presence(Stanza)
        case operatorApproved(JID)
        /// The operator declined the peering request (`intercloud peers reject`).
        case operatorRejected(JID)
        /// These requests waited longer than `[discovery] approval_wait_hours`.
        case pendingApprovalsExpired([JID])
        case featuresDiscovered(capsVer: String?, peer: JID, features: [String])
    }

    public enum Action: Sendable, Equatable {
        case announce
        case joinRoom(JID)
        case subscribe(JID)
        case approveSubscription(JID)
        case peerSeen(Observation)
        case peerOffline(JID)
        case allPeersOffline
        case recordPendingApproval(JID)
        /// Decline a peering request that waited for the operator: answer `unsubscribed` and drop
        /// its registry row (`reason` for the log and audit).
        case declineSubscription(JID, reason: String)
        case queryFeatures(JID)
        case storeFeatures(JID, [String])
        /// We created an exchange room: unlock it and make real JIDs visible.
        case configureRoom(JID)
        /// The room refused our join (typically still locked by the broker that is creating it):
        /// join again after a pause.
        case rejoinRoom(JID, after: Duration, attempt: Int)
        /// A presence that changed nothing. `stranger`: it came from a JID that is neither a
        /// configured or approved peer nor an occupant of a configured exchange room.
        case refused(from: String, reason: String, stranger: Bool = false)
    }

    public let settings: Settings
    /// For each online peer, the places its presence came from ("room:JID", or "direct/RESOURCE":
    /// each resource of the peer's account counts on its own, so another session of that account
    /// going away, an operator's CLI for instance, does not take the broker offline).
    private var sources: [JID: Set<String>] = [:]
    private var featuresByCaps: [String: [String]] = [:]
    private var capsQueried: Set<String> = []
    private var joinAttempts: [JID: Int] = [:]
    /// Peers whose direct presence we take: configured, approved by the operator or by a rule.
    private var acceptedDirect: Set<JID>
    private var pendingApprovals: Set<JID>
    public static let maxJoinAttempts = 20

    public init(settings: Settings) {
        self.settings = settings
        acceptedDirect = settings.directPeers.union(settings.approvedPeers)
        pendingApprovals = settings.pendingApprovals.subtracting(acceptedDirect)
    }

    /// Entries in the input-keyed caps caches (bounded by `Settings.maxCapsEntries` each).
    public var cachedCapsEntries: Int { featuresByCaps.count + capsQueried.count }

    /// Whether direct presence from `jid` is taken (for tests and the node's status answers).
    public func acceptsDirectPresence(from jid: JID) -> Bool { acceptedDirect.contains(jid.bare) }

    public func onlinePeers() -> [JID] { sources.keys.sorted() }

    public mutating func handle(_ event: Event) -> [Action] {
        switch event {
        case .sessionStarted:
            sources.removeAll()
            capsQueried.removeAll()
            joinAttempts.removeAll()
            return [.allPeersOffline, .announce]
                + settings.rooms.sorted().map { .joinRoom($0) }
                + settings.directPeers.sorted().map { .subscribe($0) }
        case .sessionLost:
            sources.removeAll()
            return [.allPeersOffline]
        case .operatorApproved(let jid):
            acceptedDirect.insert(jid.bare)
            pendingApprovals.remove(jid.bare)
            return [.approveSubscription(jid.bare), .subscribe(jid.bare)]
        case .operatorRejected(let jid):
            // Also a request the operator rejects before it arrives: nothing waits, nothing to send,
            // but a stale row (from an earlier run) is dropped all the same.
            guard !acceptedDirect.contains(jid.bare) else { return [] }
            pendingApprovals.remove(jid.bare)
            return [.declineSubscription(jid.bare, reason: "rejected by the operator")]
        case .pendingApprovalsExpired(let jids):
            return jids.filter { pendingApprovals.remove($0.bare) != nil }
                .map { .declineSubscription($0.bare, reason: "no operator decision within the approval wait") }
        case .featuresDiscovered(let ver, let peer, let features):
            if let ver {
                if featuresByCaps.count >= settings.maxCapsEntries { featuresByCaps.removeAll() }
                featuresByCaps[ver] = features
            }
            return [.storeFeatures(peer.bare, features)]
        case .presence(let stanza):
            return presence(stanza)
        }
    }

    private mutating func presence(_ stanza: Stanza) -> [Action] {
        guard let fromString = stanza.fromString else { return [] }
        guard let from = try? JID(fromString) else {
            return [.refused(from: fromString, reason: "presence from an invalid JID", stranger: true)]
        }
        if settings.rooms.contains(from.bare) { return roomPresence(stanza, from: from) }
        if from.bare == settings.ownJID.bare { return [] }
        switch stanza.type {
        case "subscribe":
            if acceptedDirect.contains(from.bare) || ApprovalRule.matches(from, patterns: settings.approvalPatterns) {
                var actions: [Action] = [.approveSubscription(from.bare)]
                if !settings.directPeers.contains(from.bare) { actions.append(.subscribe(from.bare)) }
                acceptedDirect.insert(from.bare)
                return actions
            }
            if pendingApprovals.contains(from.bare) { return [] }  // asked again: already waiting
            guard pendingApprovals.count < settings.maxPendingApprovals else {
                return [.refused(
                    from: fromString, reason: "peering request refused: \(settings.maxPendingApprovals) requests already wait for the operator",
                    stranger: true)]
            }
            pendingApprovals.insert(from.bare)
            return [.recordPendingApproval(from.bare)]
        case "subscribed", "unsubscribe", "unsubscribed", "probe", "error":
            return []
        case nil, "unavailable":
            // A stranger's presence creates nothing: no row, no handshake, no disco query.
            guard acceptedDirect.contains(from.bare) else {
                return stanza.type == nil ? [.refused(from: fromString, reason: "presence from a stranger", stranger: true)] : []
            }
            return peerPresence(stanza, peer: from.bare, fullJID: from, source: "direct/\(from.resourcepart ?? "")", via: "direct")
        default:
            return [.refused(from: fromString, reason: "unknown presence type", stranger: !acceptedDirect.contains(from.bare))]
        }
    }

    private mutating func roomPresence(_ stanza: Stanza, from: JID) -> [Action] {
        if stanza.type == "error" {
            let room = from.bare
            let attempt = joinAttempts[room, default: 0] + 1
            joinAttempts[room] = attempt
            let reason = "room refused us: \(stanza.stanzaError?.description ?? "error")"
            guard attempt <= Self.maxJoinAttempts else { return [.refused(from: from.description, reason: reason + "; giving up")] }
            return [.refused(from: from.description, reason: reason + "; retrying"),
                    .rejoinRoom(room, after: .milliseconds(100 * min(attempt, 10)), attempt: attempt)]
        }
        guard let occupant = MultiUserChat.occupantPresence(stanza) else { return [] }
        if occupant.isSelf {
            joinAttempts[occupant.room] = nil
            return occupant.createdRoom ? [.configureRoom(occupant.room)] : []
        }
        guard let real = occupant.realJID else {
            // Semi-anonymous room: without the real JID there is nobody to peer with.
            return [.refused(from: from.description, reason: "occupant without real JID (room is anonymous)")]
        }
        if real.bare == settings.ownJID.bare { return [] }
        return peerPresence(stanza, peer: real.bare, fullJID: real, source: "room:\(occupant.room)", via: "room:\(occupant.room)")
    }

    private mutating func peerPresence(_ stanza: Stanza, peer: JID, fullJID: JID, source: String, via: String) -> [Action] {
        if stanza.type == "unavailable" {
            guard var peerSources = sources[peer] else { return [] }
            peerSources.remove(source)
            if peerSources.isEmpty {
                sources[peer] = nil
                return [.peerOffline(peer)]
            }
            sources[peer] = peerSources
            return []
        }
        guard let parsed = Announcement.find(in: stanza) else { return [] }  // not a broker
        switch parsed {
        case .failure(let error):
            return [.refused(from: fullJID.description, reason: error.description)]
        case .success(let announcement):
            sources[peer, default: []].insert(source)
            let caps = EntityCapabilities.parse(presence: stanza)
            var actions: [Action] = [.peerSeen(Observation(jid: peer, fullJID: fullJID, announcement: announcement, via: via, capsVer: caps?.ver))]
            if let ver = caps?.ver, let known = featuresByCaps[ver] {
                actions.append(.storeFeatures(peer, known))
            } else if !capsQueried.contains(caps?.ver ?? fullJID.description) {
                if capsQueried.count >= settings.maxCapsEntries { capsQueried.removeAll() }
                capsQueried.insert(caps?.ver ?? fullJID.description)
                actions.append(.queryFeatures(fullJID))
            }
            return actions
        }
    }
}
