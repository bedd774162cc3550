import Testing
@testable import Migration

/// Where our hypervisor may be sent is the operator's list, per peer, never the peer's word.
@Suite("Live migration targets per peer")
struct LivePeerPolicyTests {
    let policy = LivePeerPolicy(peers: [
        "broker@cloud2.example": .init(uris: ["qemu+tls://hv1.cloud2.example/system"]),
        "broker@lab.example": .init(uris: ["qemu+unix:///session?socket=/run/lab/libvirt-sock"], allowsPlaintext: true),
    ])

    func refusal(_ uri: String, _ peer: String) -> String? {
        do {
            _ = try policy.check(uri: uri, peer: peer)
            return nil
        } catch { return error.description }
    }

    @Test func listedURIsAndTheirHostsAreAccepted() throws {
        let exact = try policy.check(uri: "qemu+tls://hv1.cloud2.example/system", peer: "broker@cloud2.example")
        #expect(exact.tls)
        // Same scheme and host, another path, no parameters.
        #expect(try policy.check(uri: "qemu+tls://HV1.cloud2.example/session", peer: "broker@cloud2.example").tls)
        // A listed URI with parameters is accepted exactly as the operator wrote it.
        #expect(try !policy.check(uri: "qemu+unix:///session?socket=/run/lab/libvirt-sock", peer: "broker@lab.example").tls)
    }

    @Test func everythingElseIsRefusedWithTheSettingThatWouldAllowIt() {
        // No entry for the peer at all.
        #expect(refusal("qemu+tls://hv1.cloud2.example/system", "broker@cloud3.example")?.contains("[migration.live_peers]") == true)
        // Another host, this machine, parameters that redirect libvirt, another scheme.
        #expect(refusal("qemu+tls://hv2.cloud2.example/system", "broker@cloud2.example")?.contains("not among") == true)
        #expect(refusal("qemu:///system", "broker@cloud2.example") != nil)
        #expect(refusal("qemu+tls://hv1.cloud2.example/system?no_verify=1", "broker@cloud2.example") != nil)
        #expect(refusal("qemu+tls://hv1.cloud2.example/system?socket=/tmp/x", "broker@cloud2.example") != nil)
        #expect(refusal("qemu+unix:///session?socket=/run/other-sock", "broker@lab.example") != nil)
        // Plaintext to a listed host without allow_plaintext.
        let plaintext = LivePeerPolicy(peers: ["broker@cloud2.example": .init(uris: ["qemu+tcp://hv1.cloud2.example/system"])])
        #expect(throws: MigrationMessageError.self) { try plaintext.check(uri: "qemu+tcp://hv1.cloud2.example/system", peer: "broker@cloud2.example") }
        // Not a libvirt QEMU URI at all.
        #expect(refusal("http://hv1.cloud2.example/", "broker@cloud2.example") != nil)
    }
}
