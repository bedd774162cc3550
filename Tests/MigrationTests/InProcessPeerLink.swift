import Foundation
import Migration

/// Brokers reachable in this process, by bare JID: the stand-in for the XMPP network.
actor InProcessNetwork {
    private var runners: [String: MigrationRunner] = [:]
    /// Every message delivered, in order: lets a test see what was sent, not only its effects.
    private(set) var delivered: [MigrationMessage.Body] = []

    func connect(_ name: String, _ runner: MigrationRunner) { runners[name] = runner }
    func disconnect(_ name: String) { runners[name] = nil }
    func runner(_ name: String) -> MigrationRunner? { runners[name] }
    func noteDelivered(_ message: MigrationMessage) { delivered.append(message.body) }
    /// How many `status` questions were delivered.
    var statusQuestions: Int { delivered.filter { $0 == .status }.count }
}

/// A `MigrationPeerLink` between runners of one process. Messages cross it as encoded bytes and are
/// decoded with the same bounded decoder a real link uses, in both directions.
struct InProcessPeerLink: MigrationPeerLink {
    struct Unreachable: Error, CustomStringConvertible {
        var peer: String
        var description: String { "\(peer) is unreachable" }
    }

    /// The bare JID of the broker this link sends from.
    let local: String
    let network: InProcessNetwork

    func send(_ message: MigrationMessage, to peer: String) async throws -> MigrationMessage {
        guard let runner = await network.runner(peer) else { throw Unreachable(peer: peer) }
        let request = try MigrationMessage.decode(try message.encoded())
        await network.noteDelivered(request)
        let answer = try await runner.handle(request, from: local)
        return try MigrationMessage.decode(try answer.encoded())
    }
}
