// intercloud-fuzz: libFuzzer entry point for every decoder of input from peers, strangers and
// operators' files. Built only by scripts/fuzz.sh (INTERCLOUD_FUZZ=1 adds this target to the
// package, compiled with -sanitize=fuzzer,address); INTERCLOUD_FUZZ_TARGET names the decoder.
// A decoder may refuse its input (that is the point); it must never crash, hang or trap.
import CLibFuzzer
import Discovery
import Foundation
@testable import Broker
@testable import Federation
@testable import Metering
@testable import Migration
@testable import Policy
@testable import Providers
@testable import Transfer
@testable import Trust
import Negotiation
import XMPP
import XMLModel

/// The decoders, by the name scripts/fuzz.sh passes in INTERCLOUD_FUZZ_TARGET.
enum FuzzTarget: String, CaseIterable {
    case envelope, handshake, announce, negotiation, usage, migration, federation, transfer, policy, template, imageHeader = "image-header"
    case xml

    func run(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        switch self {
        case .envelope:
            _ = try? SignedEnvelope.decode(xml: text)
        case .handshake:
            _ = try? TrustWire.decode(xml: text)
        case .announce:
            // The announcement inside a presence, as any stranger may send it.
            guard let payload = try? XMLElement.parse(text, maxBytes: 64 * 1024) else { return }
            let presence = XMLElement("presence", attributes: [("from", "x@y.test/r")], children: [.element(payload)])
            _ = Announcement.find(in: Stanza(presence))
        case .negotiation:
            _ = try? NegotiationWire.decode(bytes)
        case .usage:
            if let parsed = try? MeteringWire.parseUsage(bytes) { _ = try? UsageRecord(canonicalBytes: parsed.record) }
            _ = try? UsageRecord(canonicalBytes: bytes)
        case .migration:
            if let message = try? MigrationWire.decode(bytes) { try? message.validate() }
        case .federation:
            _ = try? FederationWire.decode(bytes)
        case .transfer:
            // The first byte picks the frame type, the rest is its payload.
            guard let first = bytes.first, let type = FrameType(rawValue: first % 6 + 1) else { return }
            _ = try? ControlFrame.decode(type: type, payload: bytes.dropFirst())
        case .policy:
            _ = try? PolicyLoader.parse(text, file: "fuzz.toml")
        case .template:
            _ = try? TemplateLoader.parse(text, file: "fuzz.toml")
        case .xml:
            // The one XML parser in both shapes. The shapes differ only in what they keep of the
            // text (and the payload's lower depth bound): a payload it accepts, the document
            // shape accepts too.
            let document = try? XMLElement.parseDocument(bytes)
            if (try? XMLElement.parse(text)) != nil, String(validating: bytes, as: UTF8.self) != nil {
                precondition(document != nil, "accepted as a payload, refused as a document: \(text.debugDescription)")
            }
        case .imageHeader:
            // As the file's first and last bytes, for every declared format.
            for format in ImageFormat.allCases {
                _ = try? DiskImageHeader.check(
                    format: format, head: Array(bytes.prefix(DiskImageHeader.headBytes)),
                    tail: Array(bytes.suffix(DiskImageHeader.tailBytes)), fileBytes: Int64(bytes.count))
            }
        }
    }
}

nonisolated(unsafe) let selectedTarget: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["INTERCLOUD_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(Data(
            "INTERCLOUD_FUZZ_TARGET must be one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
        exit(2)
    }
    return target
}()

/// One input, as libFuzzer hands it over.
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    selectedTarget.run(bytes)
    return 0
}

/// The executable's entry point (SwiftPM links `main` to `<module>_main`): libFuzzer's driver,
/// with its usual command line (corpus directories, -runs=N, -max_total_time=S, ...).
@_cdecl("intercloud_fuzz_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    _ = selectedTarget
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments) { data, size in fuzzOneInput(data, size) }
}
