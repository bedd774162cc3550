import Foundation
import Testing
@testable import Providers

@Suite("Core types and file copy")
struct CoreTests {
    @Test("streaming copy hashes exactly like sha256sum and leaves no temporary file on failure")
    func fileCopy() throws {
        let directory = try TemporaryDirectory.make("filecopy")
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("a.bin")
        try Data((0..<(9 << 20) + 17).map { UInt8(truncatingIfNeeded: $0 &* 13) }).write(to: source)
        let result = try FileCopy.copy(from: source, to: directory.appendingPathComponent("b.bin"))
        let expected = try runCommand("/usr/bin/sha256sum", [source.path]).prefix(64)
        #expect(result.sha256 == String(expected))
        #expect(result.bytes == (9 << 20) + 17)
        #expect(throws: FileCopyError.self) {
            _ = try FileCopy.copy(from: source, to: directory.appendingPathComponent("c.bin"), failAfter: 4 << 20)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() == ["a.bin", "b.bin"])
        #expect(throws: FileCopyError.self) {
            _ = try FileCopy.copy(from: directory.appendingPathComponent("missing"), to: directory.appendingPathComponent("d.bin"))
        }
    }

    @Test("format names, prices and capacity arithmetic")
    func values() {
        #expect(ImageFormat(name: "VHD") == .vpc)
        #expect(ImageFormat(name: "img") == .raw)
        #expect(ImageFormat(name: "iso") == nil)
        #expect(Price(string: "0.0116")?.amount == Decimal(string: "0.0116"))
        let capacity = Capacity(maxInstances: 2, usedInstances: 1, maxVCPU: 4, usedVCPU: 3)
        #expect(capacity.admits(InstanceSize(id: "a", vCPU: 1, memoryMiB: 1, diskGiB: 1)))
        #expect(!capacity.admits(InstanceSize(id: "b", vCPU: 2, memoryMiB: 1, diskGiB: 1)))
        #expect(!InstanceState.stopping.isSettled && InstanceState.saved.isSettled)
    }

    @Test("error descriptions name driver, verb, code and backend code")
    func errors() {
        let error = ProviderError(
            driver: "ec2", verb: .start, code: .notFound, backendCode: "InvalidInstanceID.NotFound", message: "gone")
        #expect(error.description == "ec2: start failed (not-found, InvalidInstanceID.NotFound): gone")
        #expect(ProviderError.unsupported(driver: "ec2", verb: .suspend).description == "ec2: suspend failed (unsupported): the ec2 driver cannot suspend")
        #expect(ProviderError.wrap(CancellationError(), driver: "x", verb: .exportImage).code == .cancelled)
    }

    @Test("instance JSON keeps normalized and raw state side by side")
    func json() throws {
        let instance = Instance(id: "i-1", name: "n", state: .stopping, rawState: "shutting-down")
        let text = String(decoding: try JSONEncoder().encode(instance), as: UTF8.self)
        #expect(text.contains("\"state\":\"stopping\"") && text.contains("\"rawState\":\"shutting-down\""))
    }
}
