import Foundation

/// The HTTP status curl gets for `url` with `headers` (`Name: value`), or -1 when it got none:
/// HTTP checks go through a real client, not through the code under test.
public func curlStatus(_ url: String, headers: [String] = []) throws -> Int {
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("curl-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: out) }
    let flags = headers.map { "-H \(shellQuoted($0))" }.joined(separator: " ")
    try runShell("curl -s -o /dev/null -w '%{http_code}' \(flags) \(shellQuoted(url)) > \(shellQuoted(out.path))")
    return Int(try String(contentsOf: out, encoding: .utf8)) ?? -1
}

/// Whether a server answers `url` with a 2xx, for waiting until a test service is up. Through curl:
/// `Data(contentsOf:)` reads http URLs only in a process that links FoundationNetworking, and
/// neither the broker nor the tests do.
public func answersOK(_ url: String) -> Bool {
    (try? curlStatus(url)).map { (200..<300).contains($0) } ?? false
}
