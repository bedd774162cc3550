import Foundation
import Testing
@testable import Providers

/// A Keystone that issues tokens with a one-service catalog, and a compute service that answers from a
/// script: retries, token renewal and error mapping without a cloud. Everything else about the driver
/// is tested against a real OpenStack (`OpenStackDriverTests`, the conformance suite).
final class ScriptedOpenStack: HTTPTransport, @unchecked Sendable {
    // `@unchecked`: every var is only touched while holding `lock`.
    private let lock = NSLock()
    private var responses: [(Int, String, [String: String])]
    private var issued = 0
    private(set) var serviceRequests: [HTTPRequest] = []
    private(set) var tokenRequests = 0

    init(_ responses: [(Int, String, [String: String])]) { self.responses = responses }

    static let authURL = URL(string: "http://127.0.0.1:1/identity/v3")!
    static let compute = "http://127.0.0.1:2/compute/v2.1"

    func send(_ request: HTTPRequest) async throws -> (Data, HTTPResponse) {
        let url = request.url
        if url.path.hasSuffix("/auth/tokens") {
            let token: String = lock.withLock {
                issued += 1
                tokenRequests += 1
                return "token-\(issued)"
            }
            let body = """
                {"token": {"expires_at": "2999-01-01T00:00:00.000000Z", "project": {"id": "p1"},
                 "catalog": [{"type": "compute", "name": "nova", "endpoints": [
                   {"interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "\(Self.compute)"},
                   {"interface": "internal", "region_id": "RegionOne", "region": "RegionOne", "url": "http://10.0.0.1:8774/v2.1"}]}]}}
                """
            return (Data(body.utf8), HTTPResponse(statusCode: 201, headerFields: ["X-Subject-Token": token]))
        }
        let (status, body, headers) = lock.withLock {
            serviceRequests.append(request)
            return responses.count > 1 ? responses.removeFirst() : responses[0]
        }
        return (Data(body.utf8), HTTPResponse(statusCode: status, headerFields: headers))
    }

    static func driver(_ transport: ScriptedOpenStack, attempts: Int = 4) -> OpenStackDriver {
        OpenStackDriver(
            configuration: .init(
                authURL: authURL, credentials: .applicationCredential(id: "a", secret: "s"),
                retry: RetryPolicy(maxAttempts: attempts, baseDelay: .milliseconds(5), maxDelay: .milliseconds(50))),
            transport: transport)
    }
}

@Suite("OpenStack retries, token renewal and error mapping")
struct OpenStackMappingTests {
    static let server = """
        {"server": {"id": "s1", "name": "web", "status": "ACTIVE", "OS-EXT-STS:task_state": null,
         "flavor": {"original_name": "ic.tiny"}, "image": {"id": "i1"}, "addresses": {}}}
        """

    @Test("Nova's addresses become one list: floating before fixed, IPv4 before IPv6, networks by name")
    func addresses() throws {
        let body = """
            {"server": {"id": "s1", "name": "web", "status": "ACTIVE", "addresses": {
              "zeta": [{"addr": "10.9.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"}],
              "alpha": [{"addr": "fd00::5", "version": 6, "OS-EXT-IPS:type": "fixed"},
                        {"addr": "10.1.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"},
                        {"addr": "203.0.113.7", "version": 4, "OS-EXT-IPS:type": "floating"}],
              "empty": []}}}
            """
        struct Body: Decodable { var server: OpenStackDriver.Server }
        let server = try JSONDecoder().decode(Body.self, from: Data(body.utf8)).server
        let instance = OpenStackDriver.instance(server)
        #expect(instance.addresses == ["203.0.113.7", "10.1.0.5", "10.9.0.5", "fd00::5"])
        #expect(instance.extra["networks"] == "alpha,zeta")
        // Entries without the extension's fields (an older Nova) keep Nova's order.
        let plain = try JSONDecoder().decode(Body.self, from: Data(#"{"server": {"id": "s2", "addresses": {"n": [{"addr": "10.0.0.2"}, {"addr": "10.0.0.1"}]}}}"#.utf8)).server
        #expect(OpenStackDriver.instance(plain).addresses == ["10.0.0.2", "10.0.0.1"])
        let none = try JSONDecoder().decode(Body.self, from: Data(Self.server.utf8)).server
        #expect(OpenStackDriver.instance(none).addresses.isEmpty && OpenStackDriver.instance(none).extra["networks"] == nil)
    }

    @Test("a 409 while a task runs on the server is retried; one about its settled state is not")
    func conflicts() async throws {
        let busy = ScriptedOpenStack([
            (409, #"{"conflictingRequest": {"code": 409, "message": "Cannot 'os-stop' instance s1 while it is in task_state powering-on"}}"#, [:]),
            (202, "", [:]),
            (200, Self.server, [:]),
        ])
        _ = try await ScriptedOpenStack.driver(busy).shutdown("s1")
        #expect(busy.serviceRequests.count == 3)

        let settled = ScriptedOpenStack([
            (409, #"{"conflictingRequest": {"code": 409, "message": "Cannot 'pause' instance s1 while it is in vm_state paused"}}"#, [:]),
        ])
        let error = await #expect(throws: ProviderError.self) { _ = try await ScriptedOpenStack.driver(settled).suspend("s1") }
        #expect(error?.code == .invalidState)
        #expect(error?.backendCode == "conflictingRequest")
        #expect(error?.message.contains("vm_state paused") == true)
        #expect(settled.serviceRequests.count == 1)
    }

    @Test("429 and 503 are retried, honouring Retry-After, and give up with the count")
    func throttling() async throws {
        let recovering = ScriptedOpenStack([
            (429, #"{"overLimit": {"code": 429, "message": "rate limited"}}"#, ["Retry-After": "0"]),
            (503, "<html><body><h1>503 Service Unavailable</h1></body></html>", [:]),
            (200, Self.server, [:]),
        ])
        #expect(try await ScriptedOpenStack.driver(recovering).describe(instance: "s1").name == "web")
        #expect(recovering.serviceRequests.count == 3)

        let stuck = ScriptedOpenStack([(503, "<html><body><h1>503 Service Unavailable</h1>The server is busy.</body></html>", [:])])
        let error = await #expect(throws: ProviderError.self) { _ = try await ScriptedOpenStack.driver(stuck, attempts: 3).describe(instance: "s1") }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("503 Service Unavailable The server is busy.") == true)
        #expect(error?.message.contains("3 attempts") == true)
        #expect(stuck.serviceRequests.count == 3)
    }

    @Test("a token a service refuses is renewed once; a second refusal is an authentication error")
    func tokenRenewal() async throws {
        let once = ScriptedOpenStack([
            (401, #"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#, [:]),
            (200, Self.server, [:]),
        ])
        _ = try await ScriptedOpenStack.driver(once).describe(instance: "s1")
        #expect(once.tokenRequests == 2)
        #expect(once.serviceRequests.map { $0.value(forHTTPHeaderField: "X-Auth-Token") } == ["token-1", "token-2"])
        #expect(once.serviceRequests.allSatisfy { $0.value(forHTTPHeaderField: "OpenStack-API-Version") == "compute 2.60" })
        // The public endpoint of the catalog, not the internal one.
        #expect(once.serviceRequests.allSatisfy { $0.url.absoluteString.hasPrefix(ScriptedOpenStack.compute + "/servers/s1") })

        let always = ScriptedOpenStack([(401, #"{"error": {"code": 401, "title": "Unauthorized", "message": "nope"}}"#, [:])])
        let error = await #expect(throws: ProviderError.self) { _ = try await ScriptedOpenStack.driver(always).describe(instance: "s1") }
        #expect(error?.code == .authentication)
        #expect(always.tokenRequests == 2)
    }

    @Test("service error bodies map to codes and keep the service's words", arguments: [
        (404, #"{"itemNotFound": {"code": 404, "message": "Instance s1 could not be found."}}"#, ProviderError.Code.notFound, "itemNotFound", "could not be found"),
        (403, #"{"forbidden": {"code": 403, "message": "Quota exceeded for cores: Requested 4, but already used 20 of 20 cores"}}"#, .capacityExceeded, "forbidden", "Quota exceeded"),
        (403, #"{"forbidden": {"code": 403, "message": "Policy doesn't allow os_compute_api:servers:create to be performed."}}"#, .forbidden, "forbidden", "Policy"),
        (400, #"{"badRequest": {"code": 400, "message": "Image no-such-image could not be found."}}"#, .invalidInput, "badRequest", "Image no-such-image"),
        (404, #"{"NeutronError": {"type": "NetworkNotFound", "message": "Network n could not be found.", "detail": ""}}"#, .notFound, "NetworkNotFound", "Network n"),
        (404, "<html><head><title>404 Not Found</title></head><body><h1>404 Not Found</h1>No image found with ID x</body></html>", .notFound, "HTTP404", "No image found with ID x"),
        (500, #"{"computeFault": {"code": 500, "message": "Unexpected API Error."}}"#, .backend, "computeFault", "Unexpected API Error"),
    ])
    func errorBodies(_ status: Int, _ body: String, _ code: ProviderError.Code, _ backendCode: String, _ words: String) {
        let error = OpenStackHTTP.mapError(status: status, data: Data(body.utf8), driver: "openstack", verb: .create, action: "POST /servers")
        #expect(error.code == code)
        #expect(error.backendCode == backendCode)
        #expect(error.message.contains(words), "\(error.message)")
        #expect(error.description.hasPrefix("openstack: create failed"))
    }

    @Test("Nova status and task state map to one state; the raw state keeps both")
    func states() throws {
        #expect(OpenStackDriver.state(status: "ACTIVE", taskState: nil) == .running)
        #expect(OpenStackDriver.state(status: "ACTIVE", taskState: "powering-off") == .stopping)
        #expect(OpenStackDriver.state(status: "ACTIVE", taskState: "image_snapshot") == .running)
        #expect(OpenStackDriver.state(status: "SHUTOFF", taskState: "powering-on") == .pending)
        #expect(OpenStackDriver.state(status: "SHUTOFF", taskState: nil) == .stopped)
        #expect(OpenStackDriver.state(status: "PAUSED", taskState: nil) == .paused)
        #expect(OpenStackDriver.state(status: "SUSPENDED", taskState: nil) == .saved)
        #expect(OpenStackDriver.state(status: "BUILD", taskState: "spawning") == .pending)
        #expect(OpenStackDriver.state(status: "ACTIVE", taskState: "deleting") == .terminating)
        #expect(OpenStackDriver.state(status: "ERROR", taskState: nil) == .error)
        #expect(OpenStackDriver.state(status: "HARD_REBOOT", taskState: "rebooting_hard") == .rebooting)
        let json = #"{"id": "s", "name": "n", "status": "ERROR", "OS-EXT-STS:task_state": null, "image": "", "fault": {"code": 500, "message": "No valid host was found."}}"#
        let server = try JSONDecoder().decode(OpenStackDriver.Server.self, from: Data(json.utf8))
        let instance = OpenStackDriver.instance(server)
        #expect(instance.imageID == nil)  // booted from a volume: `"image": ""`
        #expect(instance.extra["fault"] == "No valid host was found.")
        #expect(instance.rawState == "ERROR")
    }

    @Test("a next-page link to another host is refused: the token would go with it")
    func foreignNextLink() async throws {
        let transport = ScriptedOpenStack([
            (200, #"{"servers": [], "servers_links": []}"#, [:]),
        ])
        let page = #"{"servers": [{"id": "s1", "name": "a", "status": "ACTIVE"}], "servers_links": [{"rel": "next", "href": "http://198.51.100.7/v2.1/servers/detail?marker=s1"}]}"#
        let hostile = ScriptedOpenStack([(200, page, [:])])
        let error = await #expect(throws: ProviderError.self) { _ = try await ScriptedOpenStack.driver(hostile).listInstances() }
        #expect(error?.message.contains("outside its endpoint") == true)
        #expect(hostile.serviceRequests.count == 1)
        #expect(try await ScriptedOpenStack.driver(transport).listInstances().isEmpty)
    }

    @Test("ids that are not plain ids never reach a URL path")
    func pathIds() async throws {
        let transport = ScriptedOpenStack([(200, Self.server, [:])])
        for id in ["../flavors", "s1/action", "", "s1?x=1"] {
            let error = await #expect(throws: ProviderError.self) { _ = try await ScriptedOpenStack.driver(transport).describe(instance: id) }
            #expect(error?.code == .notFound)
        }
        #expect(transport.serviceRequests.isEmpty)
    }

    @Test("credentials come from OS_* variables; secrets never from options")
    func credentials() {
        #expect(OpenStackDriver.Credentials.from(environment: [
            "OS_APPLICATION_CREDENTIAL_ID": "id", "OS_APPLICATION_CREDENTIAL_SECRET": "s", "OS_USERNAME": "u", "OS_PASSWORD": "p",
        ]) == .applicationCredential(id: "id", secret: "s"))
        #expect(OpenStackDriver.Credentials.from(
            environment: ["OS_PASSWORD": "p", "OS_PROJECT_NAME": "env-project"], overrides: ["user": "alice", "project": "web"])
            == .password(user: "alice", userDomain: "Default", password: "p", project: "web", projectDomain: "Default"))
        #expect(OpenStackDriver.Credentials.from(environment: ["OS_USERNAME": "u", "OS_PROJECT_NAME": "p"], overrides: ["password": "x"]) == nil)
    }
}
