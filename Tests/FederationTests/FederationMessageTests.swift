import Foundation
import Testing

@testable import Federation

@Suite("Federation messages")
struct FederationMessageTests {
    let credentials = ServiceCredentials(username: "svc-a", token: String(repeating: "A", count: 43), expiresAt: Date(timeIntervalSince1970: 1_800_000_600))

    @Test("every kind round-trips through the encoded form")
    func roundTrip() throws {
        let endpoint = ServiceEndpoint(host: "198.51.100.7", port: 8080, protocolName: "http", path: "/")
        let bodies: [FederationMessage.Body] = [
            .select(ServiceSelection(templateName: "web-server", parameters: ["site_name": "shop"], agreementID: "agr-1")),
            .provisioned(ProvisionedService(endpoint: endpoint, interfaceDescription: "https://x.test/openapi.json", credentials: credentials)),
            .status, .state(ServiceStatus(phase: .active, endpoint: endpoint, credentialsExpireAt: credentials.expiresAt)),
            .renew, .renewed(credentials), .teardown, .done, .refused(reason: "no such template"),
        ]
        for body in bodies {
            let message = FederationMessage(serviceID: "svc-1", body: body)
            #expect(try FederationMessage.decode(message.encoded()) == message)
        }
        #expect(endpoint.url == "http://198.51.100.7:8080/")
        #expect(ServiceEndpoint(host: "2001:db8::1", port: 22, protocolName: "ssh").url == "ssh://[2001:db8::1]:22")
    }

    func refusal(_ data: Data) -> String? {
        do {
            _ = try FederationMessage.decode(data)
            return nil
        } catch {
            return error.message
        }
    }

    func refusal(_ message: FederationMessage) throws -> String? {
        refusal(try message.encoded())
    }

    @Test("oversized input is refused before parsing, garbage after")
    func sizeAndShape() {
        #expect(refusal(Data(repeating: 0x20, count: FederationMessage.maximumEncodedBytes + 1))?.contains("exceeds") == true)
        #expect(refusal(Data("{\"serviceID\":\"a\",\"body\":{\"launch\":{}}}".utf8))?.hasPrefix("not a federation message") == true)
    }

    @Test("hostile fields are refused with a reason")
    func bounds() throws {
        let select = { (id: String, template: String, parameters: [String: String]) in
            FederationMessage(serviceID: id, body: .select(ServiceSelection(templateName: template, parameters: parameters, agreementID: "agr")))
        }
        #expect(try refusal(select("../etc", "web", [:]))?.contains("service id") == true)
        #expect(try refusal(select(String(repeating: "a", count: 129), "web", [:]))?.contains("1...128") == true)
        #expect(try refusal(select("s", "web server", [:]))?.contains("template name") == true)
        #expect(try refusal(select("s", "web", ["bad name": "v"]))?.contains("parameter name") == true)
        #expect(try refusal(select("s", "web", ["p": String(repeating: "v", count: 257)]))?.contains("longer than 256") == true)
        var many: [String: String] = [:]
        for i in 0..<33 { many["p\(i)"] = "v" }
        #expect(try refusal(select("s", "web", many)) == "more than 32 parameters")

        let badHost = ProvisionedService(
            endpoint: ServiceEndpoint(host: "evil host/", port: 80, protocolName: "http"), interfaceDescription: nil, credentials: credentials)
        #expect(try refusal(FederationMessage(serviceID: "s", body: .provisioned(badHost)))?.contains("endpoint host") == true)
        let badPort = ProvisionedService(
            endpoint: ServiceEndpoint(host: "h", port: 0, protocolName: "http"), interfaceDescription: nil, credentials: credentials)
        #expect(try refusal(FederationMessage(serviceID: "s", body: .provisioned(badPort)))?.contains("port 0") == true)
        var shortToken = credentials
        shortToken.token = "abc"
        #expect(try refusal(FederationMessage(serviceID: "s", body: .renewed(shortToken)))?.contains("token") == true)
        #expect(try refusal(FederationMessage(serviceID: "s", body: .refused(reason: "a\u{7}b")))?.contains("control characters") == true)
    }
}
