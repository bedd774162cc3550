// One side of a transfer benchmark run, as its own process so each side's peak memory can be
// read separately:
//
//   transfer-bench serve --chain C --key K --port-file F --destination D --id ID --token T \
//       --size N --sha256 H --peer FP [--sync] [--buffered]
//   transfer-bench send --chain C --key K --port P --file F --id ID --token T --peer FP \
//       [--chunk-size BYTES] [--buffers N] [--buffered]
//
// --buffered turns off direct IO (writes on the receiver, reads on the sender): both go through
// the page cache, as before direct IO was the default.
//
// Each prints one line: `seconds=… bytes=… vmhwm_kib=…`.
import Foundation
import Transfer

func option(_ name: String, in arguments: [String]) -> String? {
    guard let index = arguments.firstIndex(of: "--\(name)"), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}

func required(_ name: String, in arguments: [String]) -> String {
    guard let value = option(name, in: arguments) else {
        FileHandle.standardError.write(Data("missing --\(name)\n".utf8))
        exit(2)
    }
    return value
}

/// Peak resident set size of this process (kB), from /proc.
func peakRSS() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
    }
    return -1
}

let arguments = Array(CommandLine.arguments.dropFirst())
guard let role = arguments.first else {
    FileHandle.standardError.write(Data("usage: transfer-bench serve|send ...\n".utf8))
    exit(2)
}
do {
    let identity = try TransferIdentity(
        certificateChainFile: URL(fileURLWithPath: required("chain", in: arguments)),
        privateKeyFile: URL(fileURLWithPath: required("key", in: arguments)))
    switch role {
    case "serve":
        let server = try TransferServer(
            host: "127.0.0.1", port: 0, identity: identity,
            options: .init(syncOnCompletion: arguments.contains("--sync"), directWrites: !arguments.contains("--buffered")))
        let id = required("id", in: arguments)
        try server.register(
            ExpectedTransfer(
                transferID: id, token: required("token", in: arguments),
                destination: URL(fileURLWithPath: required("destination", in: arguments)),
                fileSize: UInt64(required("size", in: arguments))!, sha256: required("sha256", in: arguments),
                peerFingerprint: required("peer", in: arguments)))
        try "\(server.port)\n".write(toFile: required("port-file", in: arguments), atomically: true, encoding: .utf8)
        let receipt = try await server.completion(of: id)
        print("seconds=\(receipt.duration) bytes=\(receipt.fileSize) vmhwm_kib=\(peakRSS())")
        server.shutdown()
    case "send":
        var options = TransferSender.Options()
        if let chunk = option("chunk-size", in: arguments).flatMap(Int.init) { options.chunkSize = chunk }
        if let buffers = option("buffers", in: arguments).flatMap(Int.init) { options.bufferCount = buffers }
        options.directReads = !arguments.contains("--buffered")
        let sender = TransferSender(identity: identity, options: options)
        let started = Date()
        let receipt = try await sender.send(
            file: URL(fileURLWithPath: required("file", in: arguments)), host: "127.0.0.1",
            port: UInt16(required("port", in: arguments))!, transferID: required("id", in: arguments),
            token: required("token", in: arguments), expectedPeerFingerprint: required("peer", in: arguments))
        let seconds = Date().timeIntervalSince(started)
        print("seconds=\(seconds) bytes=\(receipt.fileSize) vmhwm_kib=\(peakRSS()) sha256=\(receipt.sha256)")
    default:
        FileHandle.standardError.write(Data("unknown role \(role)\n".utf8))
        exit(2)
    }
} catch {
    FileHandle.standardError.write(Data("transfer-bench \(role): \(error)\n".utf8))
    exit(1)
}
