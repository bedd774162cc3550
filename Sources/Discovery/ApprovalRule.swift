import XMPP

/// Operator approval rules for direct peering requests.
public enum ApprovalRule {
    /// `*` matches any JID, `*@domain` any account of that domain, otherwise the bare JID exactly.
    public static func matches(_ jid: JID, patterns: [String]) -> Bool {
        let bare = jid.bare.description
        return patterns.contains { pattern in
            let pattern = pattern.lowercased()
            if pattern == "*" { return true }
            if pattern.hasPrefix("*@") { return jid.domainpart == String(pattern.dropFirst(2)) }
            return pattern == bare
        }
    }
}
