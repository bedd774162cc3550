import Foundation

/// An EC2-compatible cloud through the EC2 Query API (version 2016-11-15), signed with our SigV4.
///
/// EC2 has no suspend/resume, save/restore or hard "destroy" distinct from a forced stop; those verbs
/// are mapped where EC2 has an equivalent (`destroy` = `StopInstances Force=true`) and declared
/// unsupported otherwise. Terminated instances stay visible as `.terminated` for a while, as on AWS.
public struct EC2Driver: CloudDriver {
    public struct Configuration: Sendable {
        public var endpoint: URL
        /// S3 endpoint for image upload; defaults to `endpoint` (moto serves both on one port).
        public var s3Endpoint: URL?
        public var region: String
        public var credentials: SigV4Signer.Credentials
        public var retry: RetryPolicy
        /// DescribeInstances/DescribeImages page size (5...1000); small values exercise pagination.
        public var pageSize: Int
        /// Owners whose images `listImages` shows (`self`, `amazon`, account ids).
        public var imageOwners: [String]
        /// Whether the endpoint implements ImportImage (AWS does, moto does not).
        public var imageImportExport: Bool
        /// Bucket used for image uploads (ImportImage reads from S3).
        public var imageBucket: String
        /// Multipart part size; S3 requires at least 5 MiB for all but the last part.
        public var partSize: Int
        /// Instance types offered by `listSizes` (DescribeInstanceTypes filtered to these), with prices.
        public var sizes: [InstanceSize]

        public init(
            endpoint: URL, s3Endpoint: URL? = nil, region: String, credentials: SigV4Signer.Credentials,
            retry: RetryPolicy = RetryPolicy(), pageSize: Int = 100, imageOwners: [String] = ["self"],
            imageImportExport: Bool = true, imageBucket: String = "intercloud-images", partSize: Int = 8 << 20,
            sizes: [InstanceSize] = EC2Driver.defaultSizes
        ) {
            self.endpoint = endpoint
            self.s3Endpoint = s3Endpoint
            self.region = region
            self.credentials = credentials
            self.retry = retry
            self.pageSize = pageSize
            self.imageOwners = imageOwners
            self.imageImportExport = imageImportExport
            self.imageBucket = imageBucket
            self.partSize = partSize
            self.sizes = sizes
        }
    }

    /// Common general-purpose types with us-east-1 on-demand Linux prices. EC2's API does not return
    /// prices (that is the separate Pricing API), so they are configuration, not discovered.
    public static let defaultSizes: [InstanceSize] = [
        InstanceSize(id: "t2.nano", vCPU: 1, memoryMiB: 512, diskGiB: 8, pricePerHour: Price(Decimal(string: "0.0058")!)),
        InstanceSize(id: "t2.micro", vCPU: 1, memoryMiB: 1024, diskGiB: 8, pricePerHour: Price(Decimal(string: "0.0116")!)),
        InstanceSize(id: "t2.small", vCPU: 1, memoryMiB: 2048, diskGiB: 8, pricePerHour: Price(Decimal(string: "0.023")!)),
        InstanceSize(id: "t3.medium", vCPU: 2, memoryMiB: 4096, diskGiB: 8, pricePerHour: Price(Decimal(string: "0.0416")!)),
        InstanceSize(id: "m5.large", vCPU: 2, memoryMiB: 8192, diskGiB: 8, pricePerHour: Price(Decimal(string: "0.096")!)),
        InstanceSize(id: "c5.xlarge", vCPU: 4, memoryMiB: 8192, diskGiB: 8, pricePerHour: Price(Decimal(string: "0.17")!)),
    ]

    static let apiVersion = "2016-11-15"
    public let driverName = "ec2"
    public let configuration: Configuration
    public let capabilities: DriverCapabilities
    let ec2: AWSClient
    let s3: AWSClient
    let iam: AWSClient

    /// ImportImage is an AWS service some EC2-compatible endpoints lack: the operator says whether
    /// this one has it.
    public static let importExportCondition = CapabilityCondition(option: "import-export", value: "true")

    /// No suspend/resume or save/restore (see the type's comment); no image export yet.
    public static let declaredCapabilities = CapabilityDeclaration(
        driver: "ec2",
        unconditional: DriverCapabilities(verbs: [
            .listSizes, .listInstances, .describe, .create, .start, .shutdown, .destroy, .reboot, .snapshot, .terminate,
            .listImages, .registerImage, .deregisterImage, .capacity, .connect,
        ]),
        conditional: [
            .init(importExportCondition, DriverCapabilities(verbs: [.importImage], importFormats: [.raw, .vmdk, .vpc, .vhdx])),
        ],
        notes: [
            "image export (ExportImage, then the S3 download) is not implemented, so an EC2 cloud is no cold migration source.",
        ])

    public init(configuration: Configuration, transport: any HTTPTransport = HTTPClientTransport()) {
        self.configuration = configuration
        self.capabilities = Self.declaredCapabilities.capabilities(
            enabling: configuration.imageImportExport ? [Self.importExportCondition] : [])
        func client(_ service: String, _ url: URL) -> AWSClient {
            AWSClient(
                driver: "ec2", endpoint: url,
                signer: SigV4Signer(credentials: configuration.credentials, region: configuration.region, service: service),
                transport: transport, retry: configuration.retry)
        }
        ec2 = client("ec2", configuration.endpoint)
        s3 = client("s3", configuration.s3Endpoint ?? configuration.endpoint)
        iam = client("iam", configuration.endpoint)
    }

    func call(_ action: String, _ parameters: [(String, String)] = [], verb: Verb) async throws -> XMLTree {
        try await ec2.query(action, version: Self.apiVersion, parameters: parameters, verb: verb)
    }

    // MARK: Sizes and capacity

    public func listSizes() async throws -> [InstanceSize] {
        // Ask the endpoint which of our types it offers, so a size we list can really be launched.
        var parameters: [(String, String)] = []
        for (index, size) in configuration.sizes.enumerated() { parameters.append(("InstanceType.\(index + 1)", size.id)) }
        let root = try await call("DescribeInstanceTypes", parameters, verb: .listSizes)
        var offered: [String: XMLTree] = [:]
        for item in root.items("instanceTypeSet") {
            if let type = item.string("instanceType") { offered[type] = item }
        }
        return configuration.sizes.compactMap { size in
            guard let info = offered[size.id] else { return nil }
            var size = size
            if let vcpu = info.string("vCpuInfo", "defaultVCpus").flatMap(Int.init) { size.vCPU = vcpu }
            if let memory = info.string("memoryInfo", "sizeInMiB").flatMap(Int.init) { size.memoryMiB = memory }
            return size
        }
    }

    public func capacity() async throws -> Capacity {
        // EC2 quotas live in Service Quotas, not EC2; report usage only.
        let running = try await describeInstances(filters: ["instance-state-name": ["pending", "running", "stopping", "stopped"]], verb: .capacity)
        let sizes = Dictionary(configuration.sizes.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        return Capacity(
            usedInstances: running.count,
            usedVCPU: running.reduce(0) { $0 + (sizes[$1.sizeID ?? ""]?.vCPU ?? 0) },
            usedMemoryMiB: running.reduce(0) { $0 + (sizes[$1.sizeID ?? ""]?.memoryMiB ?? 0) })
    }

    // MARK: Instances

    public func listInstances() async throws -> [Instance] {
        try await describeInstances(filters: [:], verb: .listInstances)
    }

    /// DescribeInstances with filters (`instance-state-name`, `tag:Name`, ...), following `NextToken`.
    public func describeInstances(
        ids: [String] = [], filters: [String: [String]], verb: Verb = .listInstances
    ) async throws -> [Instance] {
        var instances: [Instance] = []
        var token: String?
        repeat {
            var parameters: [(String, String)] = []
            for (index, id) in ids.enumerated() { parameters.append(("InstanceId.\(index + 1)", id)) }
            for (index, name) in filters.keys.sorted().enumerated() {
                parameters.append(("Filter.\(index + 1).Name", name))
                for (valueIndex, value) in filters[name]!.enumerated() {
                    parameters.append(("Filter.\(index + 1).Value.\(valueIndex + 1)", value))
                }
            }
            if ids.isEmpty { parameters.append(("MaxResults", String(max(5, min(configuration.pageSize, 1000))))) }
            if let token { parameters.append(("NextToken", token)) }
            let root = try await call("DescribeInstances", parameters, verb: verb)
            for reservation in root.items("reservationSet") {
                instances += reservation.items("instancesSet").map(Self.instance)
            }
            token = root.string("nextToken")
        } while token != nil
        return instances
    }

    public func describe(instance id: String) async throws -> Instance {
        guard let instance = try await describeInstances(ids: [id], filters: [:], verb: .describe).first else {
            throw ProviderError.notFound(driver: driverName, verb: .describe, "instance \(id)")
        }
        return instance
    }

    public func create(_ request: CreateInstanceRequest, progress: ProgressHandler?) async throws -> Instance {
        var parameters: [(String, String)] = [
            ("ImageId", request.imageID), ("InstanceType", request.sizeID), ("MinCount", "1"), ("MaxCount", "1"),
            // Idempotency: a retried RunInstances with the same token cannot launch a second instance.
            ("ClientToken", request.extra["clientToken"] ?? UUID().uuidString.lowercased()),
            ("TagSpecification.1.ResourceType", "instance"),
            ("TagSpecification.1.Tag.1.Key", "Name"), ("TagSpecification.1.Tag.1.Value", request.name),
        ]
        if let key = request.extra["keyName"] { parameters.append(("KeyName", key)) }
        if let group = request.extra["securityGroupId"] { parameters.append(("SecurityGroupId.1", group)) }
        if let subnet = request.extra["subnetId"] { parameters.append(("SubnetId", subnet)) }
        if let userData = request.extra["userData"] {
            parameters.append(("UserData", Data(userData.utf8).base64EncodedString()))
        }
        progress?(ProgressEvent(driver: driverName, verb: .create, completed: 0, total: 2, message: "RunInstances"))
        let root = try await call("RunInstances", parameters, verb: .create)
        guard let item = root.items("instancesSet").first else {
            throw ProviderError(driver: driverName, verb: .create, code: .backend, message: "RunInstances returned no instance")
        }
        let instance = Self.instance(item)
        progress?(ProgressEvent(driver: driverName, verb: .create, completed: 2, total: 2, message: "launched \(instance.id)"))
        return instance
    }

    public func perform(_ verb: Verb, instance id: String) async throws -> Instance {
        let action: String
        var parameters = [("InstanceId.1", id)]
        switch verb {
        case .start: action = "StartInstances"
        case .shutdown: action = "StopInstances"
        case .destroy:
            action = "StopInstances"
            parameters.append(("Force", "true"))
        case .reboot: action = "RebootInstances"
        case .suspend, .resume, .save, .restore:
            throw unsupported(verb, "EC2 has no \(verb) verb (hibernation needs instance support; not offered)")
        default:
            throw ProviderError(driver: driverName, verb: verb, code: .invalidInput, message: "\(verb) is not an instance action")
        }
        // EC2 accepts Start/Stop on terminated instances with IncorrectInstanceState; check first so a
        // gone instance reports not-found for this verb.
        let current = try await describeOrNotFound(id, verb: verb)
        if current.state == .terminated || current.state == .terminating {
            throw ProviderError.invalidState(driver: driverName, verb: verb, "instance \(id) is \(current.rawState)")
        }
        _ = try await call(action, parameters, verb: verb)
        return try await describeOrNotFound(id, verb: verb)
    }

    public func terminate(instance id: String) async throws {
        _ = try await call("TerminateInstances", [("InstanceId.1", id)], verb: .terminate)
    }

    public func snapshot(instance id: String, name: String, progress: ProgressHandler?) async throws -> Image {
        progress?(ProgressEvent(driver: driverName, verb: .snapshot, completed: 0, total: 1, message: "CreateImage"))
        let root = try await call("CreateImage", [("InstanceId", id), ("Name", name)], verb: .snapshot)
        guard let imageID = root.string("imageId") else {
            throw ProviderError(driver: driverName, verb: .snapshot, code: .backend, message: "CreateImage returned no imageId")
        }
        progress?(ProgressEvent(driver: driverName, verb: .snapshot, completed: 1, total: 1, message: imageID))
        return try await describeImages(ids: [imageID], verb: .snapshot).first
            ?? Image(id: imageID, name: name, rawState: "pending")
    }

    private func describeOrNotFound(_ id: String, verb: Verb) async throws -> Instance {
        do {
            guard let instance = try await describeInstances(ids: [id], filters: [:], verb: verb).first else {
                throw ProviderError.notFound(driver: driverName, verb: verb, "instance \(id)")
            }
            return instance
        }
    }

    // MARK: Images

    public func listImages() async throws -> [Image] {
        try await describeImages(owners: configuration.imageOwners, verb: .listImages)
    }

    public func describeImages(ids: [String] = [], owners: [String] = [], verb: Verb = .listImages) async throws -> [Image] {
        var parameters: [(String, String)] = []
        for (index, id) in ids.enumerated() { parameters.append(("ImageId.\(index + 1)", id)) }
        for (index, owner) in owners.enumerated() { parameters.append(("Owner.\(index + 1)", owner)) }
        let root = try await call("DescribeImages", parameters, verb: verb)
        return root.items("imagesSet").map(Self.image)
    }

    /// RegisterImage. Options: `rootDeviceName`, `snapshotId` (EBS-backed), `imageLocation` (S3 manifest),
    /// `architecture`, `description`, `virtualizationType`.
    public func registerImage(name: String, options: [String: String]) async throws -> Image {
        var parameters: [(String, String)] = [("Name", name)]
        if let location = options["imageLocation"] { parameters.append(("ImageLocation", location)) }
        parameters.append(("Architecture", options["architecture"] ?? "x86_64"))
        parameters.append(("VirtualizationType", options["virtualizationType"] ?? "hvm"))
        if let description = options["description"] { parameters.append(("Description", description)) }
        let root = options["rootDeviceName"] ?? "/dev/xvda"
        parameters.append(("RootDeviceName", root))
        if let snapshot = options["snapshotId"] {
            parameters += [("BlockDeviceMapping.1.DeviceName", root), ("BlockDeviceMapping.1.Ebs.SnapshotId", snapshot)]
        }
        let response = try await call("RegisterImage", parameters, verb: .registerImage)
        guard let id = response.string("imageId") else {
            throw ProviderError(driver: driverName, verb: .registerImage, code: .backend, message: "RegisterImage returned no imageId")
        }
        return try await describeImages(ids: [id], verb: .registerImage).first ?? Image(id: id, name: name)
    }

    public func deregisterImage(id: String) async throws {
        _ = try await call("DeregisterImage", [("ImageId", id)], verb: .deregisterImage)
    }

    public func exportImage(
        id: String, to destination: URL, format: ImageFormat, progress: ProgressHandler?
    ) async throws -> ImageFile {
        // ExportImage writes into S3 asynchronously; polling DescribeExportImageTasks and streaming the
        // object down is not written yet, so the verb is not declared rather than half done.
        throw unsupported(.exportImage, "exporting EC2 images (ExportImage + S3 download) is not implemented yet")
    }

    /// Uploads the file to S3 (multipart) and asks EC2 to ImportImage it. If the endpoint lacks
    /// ImportImage, the uploaded object is deleted and `.unsupported` is thrown: nothing is left behind.
    public func importImage(
        from source: URL, name: String, format: ImageFormat, expectedSHA256: String?, admission: ImageAdmission,
        progress: ProgressHandler?
    ) async throws -> Image {
        guard configuration.imageImportExport else {
            throw unsupported(.importImage, "this EC2 endpoint does not implement ImportImage")
        }
        guard capabilities.importFormats.contains(format) else {
            throw ProviderError(
                driver: driverName, verb: .importImage, code: .unsupportedFormat,
                message: "EC2 ImportImage reads raw, vmdk, vhd or vhdx, not \(format)")
        }
        // The cloud converts the upload itself, but a file that names others or lies about its size is
        // refused here too: nothing is uploaded.
        do {
            _ = try await ImageInspection.inspect(source, format: format, admission: admission)
        } catch let refusal as ImageRefusal {
            throw ProviderError.refusedImage(driver: driverName, verb: .importImage, source, refusal)
        }
        if let expectedSHA256 {
            let digest = try FileCopy.digest(of: source)
            guard digest.sha256 == expectedSHA256.lowercased() else {
                throw ProviderError(
                    driver: driverName, verb: .importImage, code: .checksumMismatch,
                    message: "\(source.lastPathComponent) has SHA-256 \(digest.sha256), expected \(expectedSHA256); nothing was uploaded")
            }
        }
        let key = "imports/\(UUID().uuidString.lowercased())/\(source.lastPathComponent)"
        let storage = S3Storage(client: s3, driver: driverName)
        try await storage.ensureBucket(configuration.imageBucket, region: configuration.region, verb: .importImage)
        _ = try await storage.uploadMultipart(
            file: source, bucket: configuration.imageBucket, key: key, partSize: configuration.partSize,
            verb: .importImage, progress: progress)
        let task: String
        do {
            let formatName = format == .vpc ? "VHD" : format.rawValue.uppercased()
            let root = try await call(
                "ImportImage",
                [("Description", name), ("DiskContainer.1.Format", formatName),
                 ("DiskContainer.1.UserBucket.S3Bucket", configuration.imageBucket), ("DiskContainer.1.UserBucket.S3Key", key)],
                verb: .importImage)
            guard let id = root.string("importTaskId") else {
                throw ProviderError(driver: driverName, verb: .importImage, code: .backend, message: "ImportImage returned no importTaskId")
            }
            task = id
        } catch let error as ProviderError {
            try? await storage.deleteObject(bucket: configuration.imageBucket, key: key, verb: .importImage)
            if error.backendCode == "HTTP500" || error.code == .unsupported {
                throw unsupported(
                    .importImage, "the endpoint does not implement ImportImage (\(error.message)); the uploaded object was deleted")
            }
            throw error
        }
        // The import runs in EC2; poll its task, cancelling it if we are cancelled. The S3 object is
        // removed once EC2 has finished with it, whatever the outcome.
        defer { Task { [storage, bucket = configuration.imageBucket] in try? await storage.deleteObject(bucket: bucket, key: key, verb: .importImage) } }
        while true {
            do { try await Task.sleep(for: .seconds(10)) } catch {
                _ = try? await call("CancelImportTask", [("ImportTaskId", task)], verb: .importImage)
                throw ProviderError(driver: driverName, verb: .importImage, code: .cancelled, message: "import task \(task) cancelled")
            }
            let root = try await call("DescribeImportImageTasks", [("ImportTaskId.1", task)], verb: .importImage)
            guard let item = root.items("importImageTaskSet").first else {
                throw ProviderError.notFound(driver: driverName, verb: .importImage, "import task \(task)")
            }
            let status = item.string("status") ?? "unknown"
            if let percent = item.string("progress").flatMap(Int64.init) {
                progress?(ProgressEvent(driver: driverName, verb: .importImage, completed: percent, total: 100, message: "import task \(task) \(status)"))
            }
            switch status {
            case "completed":
                guard let imageID = item.string("imageId") else {
                    throw ProviderError(driver: driverName, verb: .importImage, code: .backend, message: "import task \(task) completed without an image")
                }
                return try await describeImages(ids: [imageID], verb: .importImage).first ?? Image(id: imageID, name: name)
            case "deleted", "deleting":
                throw ProviderError(
                    driver: driverName, verb: .importImage, code: .backend,
                    message: "import task \(task) failed: \(item.string("statusMessage") ?? status)")
            default: continue
            }
        }
    }

    // MARK: Key pairs and security groups (EC2-only, Libcloud's ex_ verbs)

    public struct KeyPair: Sendable, Hashable {
        public var name: String
        public var id: String?
        public var fingerprint: String
        /// Private key material; only present right after `createKeyPair`.
        public var material: String?
    }

    public func createKeyPair(name: String) async throws -> KeyPair {
        let root = try await call("CreateKeyPair", [("KeyName", name)], verb: .create)
        return KeyPair(
            name: root.string("keyName") ?? name, id: root.string("keyPairId"),
            fingerprint: root.string("keyFingerprint") ?? "", material: root.string("keyMaterial"))
    }

    public func importKeyPair(name: String, publicKey: String) async throws -> KeyPair {
        let root = try await call(
            "ImportKeyPair", [("KeyName", name), ("PublicKeyMaterial", Data(publicKey.utf8).base64EncodedString())],
            verb: .create)
        return KeyPair(name: root.string("keyName") ?? name, id: root.string("keyPairId"),
                       fingerprint: root.string("keyFingerprint") ?? "", material: nil)
    }

    public func listKeyPairs() async throws -> [KeyPair] {
        try await call("DescribeKeyPairs", verb: .describe).items("keySet").map {
            KeyPair(name: $0.string("keyName") ?? "", id: $0.string("keyPairId"),
                    fingerprint: $0.string("keyFingerprint") ?? "", material: nil)
        }
    }

    public func deleteKeyPair(name: String) async throws {
        _ = try await call("DeleteKeyPair", [("KeyName", name)], verb: .terminate)
    }

    public struct SecurityGroup: Sendable, Hashable {
        public var id: String
        public var name: String
        public var description: String
        /// Ingress rules as `protocol:from-to:cidr`.
        public var ingress: [String]
    }

    public func createSecurityGroup(name: String, description: String) async throws -> String {
        let root = try await call("CreateSecurityGroup", [("GroupName", name), ("GroupDescription", description)], verb: .create)
        guard let id = root.string("groupId") else {
            throw ProviderError(driver: driverName, verb: .create, code: .backend, message: "CreateSecurityGroup returned no groupId")
        }
        return id
    }

    public func authorizeIngress(groupID: String, protocol proto: String, fromPort: Int, toPort: Int, cidr: String) async throws {
        _ = try await call(
            "AuthorizeSecurityGroupIngress",
            [("GroupId", groupID), ("IpPermissions.1.IpProtocol", proto), ("IpPermissions.1.FromPort", String(fromPort)),
             ("IpPermissions.1.ToPort", String(toPort)), ("IpPermissions.1.IpRanges.1.CidrIp", cidr)],
            verb: .create)
    }

    public func listSecurityGroups() async throws -> [SecurityGroup] {
        try await call("DescribeSecurityGroups", verb: .describe).items("securityGroupInfo").map { item in
            let rules = item.items("ipPermissions").flatMap { permission in
                permission.items("ipRanges").map {
                    "\(permission.string("ipProtocol") ?? "?"):\(permission.string("fromPort") ?? "*")-\(permission.string("toPort") ?? "*"):\($0.string("cidrIp") ?? "?")"
                }
            }
            return SecurityGroup(
                id: item.string("groupId") ?? "", name: item.string("groupName") ?? "",
                description: item.string("groupDescription") ?? "", ingress: rules)
        }
    }

    public func deleteSecurityGroup(id: String) async throws {
        _ = try await call("DeleteSecurityGroup", [("GroupId", id)], verb: .terminate)
    }

    // MARK: Mapping

    /// EC2 instance-state names; `shutting-down` is its own state (`.terminating`), not folded into
    /// unknown or stopped as Libcloud does.
    static func state(forRaw raw: String) -> InstanceState {
        switch raw {
        case "pending": .pending
        case "running": .running
        case "stopping": .stopping
        case "stopped": .stopped
        case "shutting-down": .terminating
        case "terminated": .terminated
        default: .unknown
        }
    }

    static func instance(_ item: XMLTree) -> Instance {
        let raw = item.string("instanceState", "name") ?? "unknown"
        let name = item.items("tagSet").first { $0.string("key") == "Name" }?.string("value")
        var extra: [String: String] = [:]
        for (key, path) in [("availabilityZone", ["placement", "availabilityZone"]), ("keyName", ["keyName"]),
                            ("vpcId", ["vpcId"]), ("subnetId", ["subnetId"]), ("stateCode", ["instanceState", "code"]),
                            ("privateDnsName", ["privateDnsName"]), ("architecture", ["architecture"])] {
            var element: XMLTree? = item
            for part in path { element = element?.child(part) }
            if let text = element?.text.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty { extra[key] = text }
        }
        let groups = item.items("groupSet").compactMap { $0.string("groupId") }
        if !groups.isEmpty { extra["securityGroups"] = groups.joined(separator: ",") }
        let launch = item.string("launchTime").flatMap { ISO8601DateFormatter.fractional.date(from: $0) ?? ISO8601DateFormatter().date(from: $0) }
        return Instance(
            id: item.string("instanceId") ?? "", name: name ?? item.string("instanceId") ?? "",
            sizeID: item.string("instanceType"), imageID: item.string("imageId"), state: state(forRaw: raw), rawState: raw,
            addresses: [item.string("ipAddress"), item.string("privateIpAddress")].compactMap { $0 }, createdAt: launch,
            extra: extra)
    }

    static func image(_ item: XMLTree) -> Image {
        var extra: [String: String] = [:]
        for key in ["imageOwnerId", "architecture", "rootDeviceType", "virtualizationType", "description", "imageLocation"] {
            if let value = item.string(key) { extra[key] = value }
        }
        return Image(
            id: item.string("imageId") ?? "", name: item.string("name") ?? item.string("imageId") ?? "",
            rawState: item.string("imageState"), extra: extra)
    }
}

extension ISO8601DateFormatter {
    nonisolated(unsafe) static let fractional: ISO8601DateFormatter = {
        // Immutable after creation; ISO8601DateFormatter is thread-safe for formatting/parsing.
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()
}
