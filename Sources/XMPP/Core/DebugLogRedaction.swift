/// What the stanza debug log (`INTERCLOUD_STROPHE_DEBUG=1`) may print of one libstrophe message.
///
/// libstrophe's debug log dumps every byte it sends and receives, SASL included: with PLAIN the
/// `<auth>` payload is the password in base64, and SCRAM's messages let an offline dictionary
/// attack run against the password. Any message that carries SASL (its namespace, or one of its
/// elements) is replaced by a line that says only that it was redacted and how long it was.
public enum DebugLogRedaction {
    static let saslMarkers = [
        "urn:ietf:params:xml:ns:xmpp-sasl", "<auth", "<response", "<challenge", "<success", "<abort",
        "sasl", "SASL", "password", "PLAIN",
    ]

    public static func redact(_ message: String) -> String {
        guard saslMarkers.contains(where: { message.contains($0) }) else { return message }
        return "[SASL or credential data redacted, \(message.utf8.count) bytes]"
    }
}
