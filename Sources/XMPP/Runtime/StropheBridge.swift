import CStrophe

#if canImport(Glibc)
import Glibc
import XMLModel
#endif

/// Conversions between libstrophe stanzas and `XMLElement` values.
///
/// The only place stanza trees cross the C boundary. Must run on the runtime's loop thread (it
/// allocates from the loop's libstrophe context).
enum StropheBridge {
    struct Oversized: Error { let limit: Int }

    /// Copies a libstrophe stanza into a value, refusing it once it exceeds `limit` bytes of names,
    /// attributes and text (a cheap upper bound on its serialized size).
    static func element(from stanza: OpaquePointer, limit: Int) throws(Oversized) -> XMLElement {
        var budget = limit
        return try element(from: stanza, budget: &budget, limit: limit)
    }

    private static func element(from stanza: OpaquePointer, budget: inout Int, limit: Int) throws(Oversized) -> XMLElement {
        let name = xmpp_stanza_get_name(stanza).map { String(cString: $0) } ?? ""
        let namespace = xmpp_stanza_get_ns(stanza).map { String(cString: $0) }
        budget -= name.utf8.count + 2
        var element = XMLElement(name, namespace: namespace)
        let count = Int(xmpp_stanza_get_attribute_count(stanza))
        if count > 0 {
            // Received for every stanza: the key/value pointers go to a stack buffer, the
            // namespace (already read above) is skipped before any String is made of it, and
            // the attribute array is sized once.
            element.attributes.reserveCapacity(count)
            withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: count * 2) { pointers in
                pointers.initialize(repeating: nil)
                let filled = Int(xmpp_stanza_get_attributes(stanza, pointers.baseAddress, Int32(count * 2)))
                var index = 0
                while index + 1 < filled {
                    if let key = pointers[index], let value = pointers[index + 1] {
                        let keyLength = strlen(key), valueLength = strlen(value)
                        budget -= keyLength + valueLength + 4
                        if keyLength != 5 || strcmp(key, "xmlns") != 0 {
                            element.attributes.append((name: String(cString: key), value: String(cString: value)))
                        }
                    }
                    index += 2
                }
            }
        }
        if budget < 0 { throw Oversized(limit: limit) }
        var child = xmpp_stanza_get_children(stanza)
        while let current = child {
            if xmpp_stanza_is_text(current) != 0 {
                let text = xmpp_stanza_get_text_ptr(current).map { String(cString: $0) } ?? ""
                budget -= text.utf8.count
                if budget < 0 { throw Oversized(limit: limit) }
                element.children.append(.text(text))
            } else {
                element.children.append(.element(try Self.element(from: current, budget: &budget, limit: limit)))
            }
            child = xmpp_stanza_get_next(current)
        }
        return element
    }

    /// Builds a libstrophe stanza tree. Sending no longer uses it (`ConnectionCore.send` writes our
    /// own serialization); the tests use it to check that serialization against libstrophe's.
    static func stanza(from element: XMLElement, context: OpaquePointer, parentNamespace: String?) -> OpaquePointer {
        let stanza = xmpp_stanza_new(context)!
        xmpp_stanza_set_name(stanza, element.name)
        if let namespace = element.namespace, namespace != parentNamespace {
            xmpp_stanza_set_ns(stanza, namespace)
        }
        for attribute in element.attributes where attribute.name != "xmlns" {
            xmpp_stanza_set_attribute(stanza, attribute.name, attribute.value)
        }
        for child in element.children {
            switch child {
            case .element(let childElement):
                let childStanza = Self.stanza(
                    from: childElement, context: context, parentNamespace: element.namespace ?? parentNamespace)
                xmpp_stanza_add_child_ex(stanza, childStanza, 0)
            case .text(let text):
                let textStanza = xmpp_stanza_new(context)!
                xmpp_stanza_set_text(textStanza, text)
                xmpp_stanza_add_child_ex(stanza, textStanza, 0)
            }
        }
        return stanza
    }
}

extension StropheBridge {
    /// libstrophe's own parse of XML text (the expat parser received stanzas go through),
    /// converted to a value; nil when it does not parse. Lets the tests check our serialization
    /// against the parser on the other end of a stream.
    static func parsed(_ text: String, context: OpaquePointer) -> XMLElement? {
        guard let stanza = xmpp_stanza_new_from_string(context, text) else { return nil }
        defer { xmpp_stanza_release(stanza) }
        return try? element(from: stanza, limit: .max)
    }

    /// libstrophe's own rendering (`xmpp_stanza_to_text`, what `xmpp_send` sends) of the tree
    /// `stanza(from:)` builds: the reference our serialization is tested against.
    static func libstropheText(of value: XMLElement, context: OpaquePointer) -> String? {
        let stanza = stanza(from: value, context: context, parentNamespace: nil)
        defer { xmpp_stanza_release(stanza) }
        var buffer: UnsafeMutablePointer<CChar>?
        var length = 0
        guard xmpp_stanza_to_text(stanza, &buffer, &length) == 0, let buffer else { return nil }
        defer { xmpp_free(context, buffer) }
        return String(cString: buffer)
    }
}
