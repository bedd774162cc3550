/// Random identifiers for the records brokers and operators name each other's things by
/// (negotiations, agreements, migrations, services, requests, instances), from the system's
/// cryptographic generator: a peer must not be able to guess the next one.
public enum RandomIdentifier {
    /// `bytes` random bytes as lowercase hex (twice as many characters).
    public static func hex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(bytes * 2)
        for _ in 0..<bytes {
            let byte = UInt8.random(in: 0...255, using: &generator)
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
