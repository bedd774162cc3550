import Foundation
import Glibc
import Testing

@testable import Transfer

/// Every wait of the receiving server has a deadline, and one remote address cannot take every slot.
@Suite struct DeadlineTests {
    /// The per-address cap counts an IPv6 source by its /64 (a host holds the whole prefix), and an
    /// IPv4-mapped address as the IPv4 address it carries.
    @Test func ipv6SourcesAreCountedByTheirSlash64() {
        func bytes(_ text: String) -> [UInt8] {
            var address = in6_addr()
            #expect(inet_pton(AF_INET6, text, &address) == 1)
            return withUnsafeBytes(of: address) { Array($0) }
        }
        #expect(Sockets.sourceKey(ipv6: bytes("2001:db8:0:1::5")) == "2001:db8:0:1::/64")
        #expect(Sockets.sourceKey(ipv6: bytes("2001:db8:0:1:ffff:1:2:3")) == Sockets.sourceKey(ipv6: bytes("2001:db8:0:1::9")))
        #expect(Sockets.sourceKey(ipv6: bytes("2001:db8:0:2::5")) != Sockets.sourceKey(ipv6: bytes("2001:db8:0:1::5")))
        #expect(Sockets.sourceKey(ipv6: bytes("::ffff:192.0.2.7")) == "192.0.2.7")
        #expect(Sockets.sourceKey(ipv6: [1, 2, 3]) == nil)
    }

    /// A client that opens TCP and trickles TLS bytes one at a time, each within the idle timeout:
    /// the absolute handshake deadline still ends it.
    @Test func slowTLSClientIsCutOffAtTheHandshakeDeadline() async throws {
        let pair = try Pair(serverOptions: TransferServer.Options(handshakeTimeout: 1.5, idleTimeout: 30, syncOnCompletion: false))
        defer { pair.cleanUp() }
        let started = ContinuousClock.now
        let closedAfter: Duration? = try await runOnDedicatedThread(name: "slow-client") { () throws(TransferError) -> Duration? in
            let fd = try Sockets.connect(host: "127.0.0.1", port: pair.server.port, timeout: 5)
            defer { close(fd) }
            // A ClientHello's first bytes, then one byte every 0.5 s (well inside any idle timeout).
            let prefix: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03]
            for index in 0..<40 {
                var byte = prefix[index % prefix.count]
                if Glibc.send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) <= 0 { return ContinuousClock.now - started }
                var probe: UInt8 = 0
                let received = recv(fd, &probe, 1, Int32(MSG_DONTWAIT))
                if received == 0 { return ContinuousClock.now - started }  // closed by the server
                usleep(500_000)
            }
            return nil
        }
        let elapsed = try #require(closedAfter, "the server kept a trickling TLS client for 20 s")
        #expect(elapsed < .seconds(5), "closed after \(elapsed)")
    }

    @Test func aTransferAnnouncedAndNeverConnectedEndsAtItsDeadline() async throws {
        let pair = try Pair(serverOptions: TransferServer.Options(waitTimeout: 1, syncOnCompletion: false))
        defer { pair.cleanUp() }
        let file = pair.directory.appendingPathComponent("image.raw")
        _ = try makeFile(at: file, size: 4096)
        let transfer = try pair.expect(file)
        let started = ContinuousClock.now
        let result = try #require(await outcome(of: transfer.transferID, on: pair.server, within: 10))
        guard case .failure(.timedOut) = result else {
            Issue.record("expected a timeout, got \(result)")
            return
        }
        #expect(ContinuousClock.now - started < .seconds(4))
        #expect(!FileManager.default.fileExists(atPath: transfer.destination.path))
        // Its token no longer works: a late sender is refused.
        await #expect(throws: TransferError.self) { _ = try await pair.send(file, transfer) }
    }

    @Test func oneAddressCannotTakeEveryConnectionSlot() async throws {
        let pair = try Pair(serverOptions: TransferServer.Options(
            handshakeTimeout: 10, maximumConnections: 16, maximumConnectionsPerAddress: 2, syncOnCompletion: false))
        defer { pair.cleanUp() }
        let closedEarly: Int = try await runOnDedicatedThread(name: "many-clients") { () throws(TransferError) -> Int in
            var descriptors: [Int32] = []
            defer { for fd in descriptors { close(fd) } }
            for _ in 0..<5 { descriptors.append(try Sockets.connect(host: "127.0.0.1", port: pair.server.port, timeout: 5)) }
            usleep(300_000)
            // Connections past the per-address limit are closed at once (read returns 0).
            return descriptors.filter { fd in
                var probe: UInt8 = 0
                return recv(fd, &probe, 1, Int32(MSG_DONTWAIT)) == 0
            }.count
        }
        #expect(closedEarly == 3)
    }
}
