import Crypto
import Foundation

/// SHA-256 fingerprints of usage records (the ledger's `sha256` column), from swift-crypto.
enum SHA256 {
    static func digest(_ message: [UInt8]) -> [UInt8] {
        Array(Crypto.SHA256.hash(data: message))
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }
}
