import Foundation
import Synchronization
import TestSupport
import Testing
@testable import XMPP
import XMLModel

/// XEP-0198 with stanzas sent as our own serialization (`xmpp_send_raw`): libstrophe must count
/// them and keep them for resending exactly as stanzas sent through `xmpp_send`, so that a
/// dropped connection resumes without losing a request or its answer.
@Suite(.timeLimit(.minutes(2))) struct StreamManagementIntegrationTests {
    let server: TestProsody

    init() throws { server = try TestProsody.shared() }

    func client(host: String) throws -> XMPPClient {
        let account = try server.freshAccount(prefix: "sm", host: host)
        return XMPPClient(configuration: .init(
            jid: try JID(account.jid + "/test"), password: account.password, host: "127.0.0.1", port: server.port,
            tls: .required(caFile: server.caFile), streamManagement: true))
    }

    @Test func requestsInFlightSurviveADroppedConnection() async throws {
        let a = try client(host: "cloud1.test")
        let b = try client(host: "cloud1.test")
        // b answers each request 300 ms late, from another task: a's connection is dropped while
        // the requests are in flight, and their answers reach a's hibernating session.
        b.setIQHandler(namespace: "urn:test:slow:0", .deferred { request, responder in
            Task {
                try? await Task.sleep(for: .milliseconds(300))
                responder.respond(XMLElement("done", namespace: "urn:test:slow:0", text: request.payload?.text ?? ""))
            }
        })
        let resumed = Mutex(0)
        a.observe { event in if case .sessionResumed = event { resumed.withLock { $0 += 1 } } }
        a.start()
        b.start()
        try await a.waitUntilOnline()
        try await b.waitUntilOnline()

        // Warm-up answered on the first connection (acknowledged stanzas must not be resent).
        for index in 0..<5 {
            let answer = try await a.iq(.get, to: b.jid, payload: XMLElement("q", namespace: "urn:test:slow:0", text: "w\(index)"))
            #expect(answer.payload?.text == "w\(index)")
        }
        let texts = (0..<10).map { "r\($0) <&>'\"" }
        try await withThrowingTaskGroup(of: (String, String?).self) { group in
            for text in texts {
                group.addTask {
                    let answer = try await a.iq(.get, to: b.jid, payload: XMLElement("q", namespace: "urn:test:slow:0", text: text))
                    return (text, answer.payload?.text)
                }
            }
            try await Task.sleep(for: .milliseconds(100))
            a.onLoop { _ = shutdown(a.core.descriptor, Int32(SHUT_RDWR)) }
            var answered = 0
            for try await (sent, received) in group {
                #expect(received == sent)
                answered += 1
            }
            #expect(answered == texts.count)
        }
        // The resumption is reported at the end of the loop iteration that read `<resumed/>`,
        // which may come after the answers queued behind it were delivered.
        let deadline = ContinuousClock.now + .seconds(5)
        while resumed.withLock({ $0 }) == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(resumed.withLock { $0 } == 1)
        await a.stop()
        await b.stop()
    }
}
