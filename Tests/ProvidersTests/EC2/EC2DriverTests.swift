import Foundation
import Testing
@testable import Providers

/// EC2 against a real moto server with signature checking on (see `MotoServer`).
@Suite("EC2 driver on moto")
struct EC2DriverTests {
    func awsCLI(_ session: MotoServer.Session, _ arguments: [String]) throws -> [String: Any] {
        let aws = try #require(which("aws"), "awscli is not installed (pip install awscli)")
        var environment = ProcessInfo.processInfo.environment
        environment["AWS_ACCESS_KEY_ID"] = session.credentials.accessKeyID
        environment["AWS_SECRET_ACCESS_KEY"] = session.credentials.secretAccessKey
        environment["AWS_DEFAULT_REGION"] = "us-east-1"
        environment["AWS_PAGER"] = ""
        let output = try runCommand(
            aws, ["--endpoint-url", session.endpoint.absoluteString, "--output", "json"] + arguments, environment: environment)
        return try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
    }

    @Test("what the driver did is visible to awscli against the same moto")
    func awscliCrossCheck() async throws {
        try await MotoServer.shared.withExclusiveAccess { session in
            let fixture = try await EC2Fixture.make(session)
            let driver = fixture.driver
            let created = try await driver.create(
                CreateInstanceRequest(name: "cross-check", sizeID: "t2.micro", imageID: fixture.imageID), progress: nil)
            _ = try await driver.shutdown(created.id)
            let described = try awsCLI(session, ["ec2", "describe-instances", "--instance-ids", created.id])
            let reservations = try #require(described["Reservations"] as? [[String: Any]])
            let instance = try #require((reservations.first?["Instances"] as? [[String: Any]])?.first)
            #expect(instance["InstanceType"] as? String == "t2.micro")
            #expect(instance["ImageId"] as? String == fixture.imageID)
            #expect((instance["State"] as? [String: Any])?["Name"] as? String == "stopped")
            let tags = instance["Tags"] as? [[String: String]] ?? []
            #expect(tags.contains { $0["Key"] == "Name" && $0["Value"] == "cross-check" })
            // And the other way: what awscli created, the driver sees.
            let run = try awsCLI(session, ["ec2", "run-instances", "--image-id", fixture.imageID, "--instance-type", "t2.small", "--count", "1"])
            let otherID = try #require((run["Instances"] as? [[String: Any]])?.first?["InstanceId"] as? String)
            let other = try await driver.describe(instance: otherID)
            #expect(other.sizeID == "t2.small" && other.state == .running)
        }
    }

    @Test("a wrong secret is refused by moto's signature check with a clear authentication error")
    func wrongCredentials() async throws {
        try await MotoServer.shared.withExclusiveAccess { session in
            var configuration = EC2Fixture.configuration(session)
            configuration.credentials.secretAccessKey = "not-the-secret"
            let error = await #expect(throws: ProviderError.self) { _ = try await EC2Driver(configuration: configuration).listInstances() }
            #expect(error?.code == .authentication)
            #expect(error?.driver == "ec2" && error?.verb == .listInstances)
            configuration.credentials.accessKeyID = "AKIAUNKNOWN0000000000"
            let unknown = await #expect(throws: ProviderError.self) { _ = try await EC2Driver(configuration: configuration).listInstances() }
            #expect(unknown?.code == .authentication)
            // The right credentials work on the same server.
            _ = try await EC2Driver(configuration: EC2Fixture.configuration(session)).listInstances()
        }
    }

    @Test("backend down is an unavailable error, not a hang")
    func backendDown() async throws {
        let port = try freePort()
        let driver = EC2Driver(configuration: .init(
            endpoint: URL(string: "http://127.0.0.1:\(port)")!, region: "us-east-1",
            credentials: .init(accessKeyID: "a", secretAccessKey: "b"), retry: RetryPolicy(maxAttempts: 1)))
        let error = await #expect(throws: ProviderError.self) { _ = try await driver.listInstances() }
        #expect(error?.code == .unavailable)
        #expect(error?.description.contains("127.0.0.1:\(port)") == true)
    }

    @Test("DescribeInstances follows NextToken across pages and applies filters")
    func paginationAndFilters() async throws {
        try await MotoServer.shared.withExclusiveAccess { session in
            let fixture = try await EC2Fixture.make(session)
            let driver = try #require(fixture.driver as? EC2Driver)
            var ids: [String] = []
            for index in 0..<12 {
                ids.append(try await driver.create(
                    CreateInstanceRequest(name: "page-\(index)", sizeID: index < 4 ? "t2.small" : "t2.micro", imageID: fixture.imageID),
                    progress: nil).id)
            }
            // Page size 5: three pages.
            let all = try await driver.listInstances()
            #expect(Set(all.map(\.id)) == Set(ids))
            let small = try await driver.describeInstances(filters: ["instance-type": ["t2.small"]])
            #expect(small.count == 4)
            _ = try await driver.shutdown(ids[0])
            let stopped = try await driver.describeInstances(filters: ["instance-state-name": ["stopped"]])
            #expect(stopped.map(\.id) == [ids[0]])
            let named = try await driver.describeInstances(filters: ["tag:Name": ["page-7"]])
            #expect(named.map(\.id) == [ids[7]])
        }
    }

    @Test("key pairs and security groups")
    func keyPairsAndGroups() async throws {
        try await MotoServer.shared.withExclusiveAccess { session in
            let driver = EC2Driver(configuration: EC2Fixture.configuration(session))
            let key = try await driver.createKeyPair(name: "deploy")
            #expect(key.material?.contains("PRIVATE KEY") == true)
            #expect(try await driver.listKeyPairs().contains { $0.name == "deploy" })
            let duplicate = await #expect(throws: ProviderError.self) { _ = try await driver.createKeyPair(name: "deploy") }
            #expect(duplicate?.backendCode == "InvalidKeyPair.Duplicate")
            try await driver.deleteKeyPair(name: "deploy")
            #expect(try await !driver.listKeyPairs().contains { $0.name == "deploy" })

            let group = try await driver.createSecurityGroup(name: "web", description: "web servers")
            try await driver.authorizeIngress(groupID: group, protocol: "tcp", fromPort: 443, toPort: 443, cidr: "0.0.0.0/0")
            let listed = try #require(try await driver.listSecurityGroups().first { $0.id == group })
            #expect(listed.ingress == ["tcp:443-443:0.0.0.0/0"])
            let image = try await driver.registerImage(name: "sg-ami", options: [:])
            let instance = try await driver.create(
                CreateInstanceRequest(name: "with-group", sizeID: "t2.micro", imageID: image.id,
                                      extra: ["securityGroupId": group, "keyName": "none-yet"]),
                progress: nil)
            #expect(instance.extra["securityGroups"]?.contains(group) == true)
            try await driver.terminate(instance: instance.id)
        }
    }

    @Test("S3 multipart upload stores the exact bytes; ImportImage is reported unsupported and the upload removed")
    func multipartAndImport() async throws {
        try await MotoServer.shared.withExclusiveAccess { session in
            var configuration = EC2Fixture.configuration(session)
            configuration.imageImportExport = true
            let driver = EC2Driver(configuration: configuration)
            let directory = try TemporaryDirectory.make("s3")
            defer { try? FileManager.default.removeItem(at: directory) }
            let file = directory.appendingPathComponent("disk.raw")
            // 11 MiB + 3 bytes: two full 5 MiB parts and a short last part.
            let bytes = Data((0..<(11 << 20) + 3).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) })
            try bytes.write(to: file)
            let counter = Counter()
            _ = try await driver.uploadToS3(file: file, bucket: "staging", key: "disk.raw") { _ in counter.increment() }
            #expect(counter.value == 3)
            #expect(try await driver.downloadS3Object(bucket: "staging", key: "disk.raw") == bytes)
            #expect(try await driver.listS3MultipartUploads(bucket: "staging").isEmpty)

            let error = await #expect(throws: ProviderError.self) {
                _ = try await driver.importImage(from: file, name: "imported", format: .raw, expectedSHA256: nil, progress: nil)
            }
            #expect(error?.code == .unsupported && error?.verb == .importImage)
            #expect(error?.message.contains("ImportImage") == true)
            #expect(try await driver.listS3Objects(bucket: configuration.imageBucket).isEmpty)

            let corrupt = await #expect(throws: ProviderError.self) {
                _ = try await driver.importImage(
                    from: file, name: "corrupt", format: .raw, expectedSHA256: String(repeating: "1", count: 64), progress: nil)
            }
            #expect(corrupt?.code == .checksumMismatch)
            let format = await #expect(throws: ProviderError.self) {
                _ = try await driver.importImage(from: file, name: "q", format: .qcow2, expectedSHA256: nil, progress: nil)
            }
            #expect(format?.code == .unsupportedFormat)
        }
    }

    @Test("snapshot (CreateImage) and deregister")
    func createImage() async throws {
        try await MotoServer.shared.withExclusiveAccess { session in
            let fixture = try await EC2Fixture.make(session)
            let driver = fixture.driver
            let instance = try await driver.create(
                CreateInstanceRequest(name: "golden", sizeID: "t2.micro", imageID: fixture.imageID), progress: nil)
            let image = try await driver.snapshot(instance: instance.id, name: "golden-v1", progress: nil)
            #expect(image.name == "golden-v1")
            #expect(try await driver.listImages().contains { $0.id == image.id })
            try await driver.deregisterImage(id: image.id)
            #expect(try await !driver.listImages().contains { $0.id == image.id })
        }
    }
}

/// A transport that answers from a script, to test retry and error mapping without a server.
final class ScriptedTransport: HTTPTransport, @unchecked Sendable {
    // `@unchecked`: `responses` and `requests` are only touched while holding `lock`.
    private let lock = NSLock()
    private var responses: [(Int, String)]
    private(set) var requests = 0

    init(_ responses: [(Int, String)]) { self.responses = responses }

    func send(_ request: HTTPRequest) async throws -> (Data, HTTPResponse) {
        let (status, body) = lock.withLock {
            requests += 1
            return responses.count > 1 ? responses.removeFirst() : responses[0]
        }
        #expect(request.value(forHTTPHeaderField: "Authorization")?.hasPrefix("AWS4-HMAC-SHA256 ") == true)
        return (Data(body.utf8), HTTPResponse(statusCode: status))
    }
}

@Suite("EC2 retries and error mapping")
struct EC2RetryTests {
    static let throttled = (503, "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>r</RequestID></Response>")
    static let empty = (200, "<DescribeInstancesResponse><reservationSet/></DescribeInstancesResponse>")

    func driver(_ transport: ScriptedTransport, attempts: Int = 4) -> EC2Driver {
        EC2Driver(
            configuration: .init(
                endpoint: URL(string: "http://127.0.0.1:1")!, region: "us-east-1",
                credentials: .init(accessKeyID: "a", secretAccessKey: "b"),
                retry: RetryPolicy(maxAttempts: attempts, baseDelay: .milliseconds(5))),
            transport: transport)
    }

    @Test("RequestLimitExceeded is retried with backoff until it succeeds")
    func retriedThenSucceeds() async throws {
        let transport = ScriptedTransport([Self.throttled, Self.throttled, Self.empty])
        #expect(try await driver(transport).listInstances().isEmpty)
        #expect(transport.requests == 3)
    }

    @Test("throttling that never stops ends in a throttled error after the attempts")
    func givesUp() async throws {
        let transport = ScriptedTransport([Self.throttled])
        let error = await #expect(throws: ProviderError.self) { _ = try await driver(transport, attempts: 3).listInstances() }
        #expect(error?.code == .throttled)
        #expect(error?.backendCode == "RequestLimitExceeded")
        #expect(error?.message.contains("3 attempts") == true)
        #expect(transport.requests == 3)
    }

    @Test("EC2 error codes map to normalized codes", arguments: [
        ("InvalidInstanceID.NotFound", ProviderError.Code.notFound), ("AuthFailure", .authentication),
        ("IncorrectInstanceState", .invalidState), ("InstanceLimitExceeded", .capacityExceeded),
        ("UnauthorizedOperation", .forbidden), ("InvalidParameterValue", .invalidInput), ("Weird", .backend),
    ])
    func mapping(_ code: String, _ expected: ProviderError.Code) async throws {
        let transport = ScriptedTransport([(400, "<Response><Errors><Error><Code>\(code)</Code><Message>m</Message></Error></Errors></Response>")])
        let error = await #expect(throws: ProviderError.self) { _ = try await driver(transport).listInstances() }
        #expect(error?.code == expected)
        #expect(error?.backendCode == code)
        #expect(transport.requests == 1)
    }
}
