extension XMLElement {
    /// Serializes the element as XML text. A namespace is written as `xmlns` only where it differs
    /// from the parent's, as on the wire.
    public func serialized(parentNamespace: String? = nil) -> String {
        var output = ""
        write(to: &output, parentNamespace: parentNamespace)
        return output
    }

    /// The serialized size in bytes.
    public var serializedByteCount: Int { serialized().utf8.count }

    /// A cheap lower bound of the serialized size (names, attributes and text, before escaping),
    /// for enforcing payload limits on every inbound request without serializing it.
    public var approximateByteCount: Int {
        var count = name.utf8.count * 2 + 5 + (namespace?.utf8.count ?? 0)
        for attribute in attributes { count += attribute.name.utf8.count + attribute.value.utf8.count + 4 }
        for child in children {
            switch child {
            case .element(let element): count += element.approximateByteCount
            case .text(let text): count += text.utf8.count
            }
        }
        return count
    }

    private func write(to output: inout String, parentNamespace: String?) {
        output += "<"
        output += name
        if let namespace, namespace != parentNamespace {
            output += " xmlns='"
            output += XMLEscaping.escape(namespace)
            output += "'"
        }
        for attribute in attributes where attribute.name != "xmlns" {
            output += " "
            output += attribute.name
            output += "='"
            output += XMLEscaping.escape(attribute.value)
            output += "'"
        }
        if children.isEmpty {
            output += "/>"
            return
        }
        output += ">"
        for child in children {
            switch child {
            case .element(let element): element.write(to: &output, parentNamespace: namespace ?? parentNamespace)
            case .text(let text): output += XMLEscaping.escape(text)
            }
        }
        output += "</"
        output += name
        output += ">"
    }
}

/// Both serializers escape the same five characters in text as in attribute values: one rule
/// for every element, whether it goes into a stanza or into signed payload bytes (whose
/// documented examples escape quotes in text too).
public enum XMLEscaping {
    // By Unicode scalar, not by Character: "&" followed by a combining mark is one Character,
    // equal to neither "&" nor anything else here, and would be written unescaped.
    public static func escape(_ text: String) -> String {
        guard text.utf8.contains(where: { [UInt8(ascii: "&"), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "'"), UInt8(ascii: "\"")].contains($0) })
        else { return text }
        var result = ""
        result.reserveCapacity(text.utf8.count + 16)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "'": result += "&apos;"
            case "\"": result += "&quot;"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }
}

extension XMLElement {
    /// Appends the element as UTF-8 XML to `buffer`, for the wire: the same text as
    /// `serialized(parentNamespace:)` except that escaping works on bytes rather than characters
    /// (so a markup character followed by a combining mark is still escaped).
    ///
    /// Why a second serializer: this one runs for every stanza the broker sends. Building a
    /// libstrophe tree (one allocation per name, attribute and text, attributes in a hash table)
    /// and having libstrophe render it cost more than the request's own work; appending bytes to
    /// one reused buffer costs no allocation per node.
    public func appendWireBytes(to buffer: inout [UInt8], parentNamespace: String?) {
        buffer.append(UInt8(ascii: "<"))
        XMLEscaping.appendVerbatim(name, to: &buffer)
        if let namespace, namespace != parentNamespace {
            let declaration: StaticString = " xmlns='"
            buffer.append(contentsOf: UnsafeBufferPointer(start: declaration.utf8Start, count: declaration.utf8CodeUnitCount))
            XMLEscaping.appendEscaped(namespace, to: &buffer)
            buffer.append(UInt8(ascii: "'"))
        }
        for attribute in attributes where attribute.name != "xmlns" {
            buffer.append(UInt8(ascii: " "))
            XMLEscaping.appendVerbatim(attribute.name, to: &buffer)
            buffer.append(UInt8(ascii: "="))
            buffer.append(UInt8(ascii: "'"))
            XMLEscaping.appendEscaped(attribute.value, to: &buffer)
            buffer.append(UInt8(ascii: "'"))
        }
        if children.isEmpty {
            buffer.append(UInt8(ascii: "/"))
            buffer.append(UInt8(ascii: ">"))
            return
        }
        buffer.append(UInt8(ascii: ">"))
        for child in children {
            switch child {
            case .element(let element): element.appendWireBytes(to: &buffer, parentNamespace: namespace ?? parentNamespace)
            case .text(let text): XMLEscaping.appendEscaped(text, to: &buffer)
            }
        }
        buffer.append(UInt8(ascii: "<"))
        buffer.append(UInt8(ascii: "/"))
        XMLEscaping.appendVerbatim(name, to: &buffer)
        buffer.append(UInt8(ascii: ">"))
    }
}

extension XMLEscaping {
    /// Appends `text` as UTF-8, escaping `&`, `<`, `>`, `'` and `"` as `escape` does. Every one of these
    /// is ASCII, and a UTF-8 multi-byte sequence never contains an ASCII byte, so a byte scan finds
    /// exactly them. Runs of plain bytes are copied in one piece.
    /// Appends a name as UTF-8 in one copy (appending a `String.UTF8View` goes byte by byte).
    static func appendVerbatim(_ text: String, to buffer: inout [UInt8]) {
        var text = text
        text.withUTF8 { buffer.append(contentsOf: $0) }
    }

    static func appendEscaped(_ text: String, to buffer: inout [UInt8]) {
        var text = text
        text.withUTF8 { bytes in
            var start = 0
            for index in bytes.indices {
                let replacement: StaticString
                switch bytes[index] {
                case UInt8(ascii: "&"): replacement = "&amp;"
                case UInt8(ascii: "<"): replacement = "&lt;"
                case UInt8(ascii: ">"): replacement = "&gt;"
                case UInt8(ascii: "'"): replacement = "&apos;"
                case UInt8(ascii: "\""): replacement = "&quot;"
                default: continue
                }
                if start < index { buffer.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index])) }
                buffer.append(contentsOf: UnsafeBufferPointer(start: replacement.utf8Start, count: replacement.utf8CodeUnitCount))
                start = index + 1
            }
            if start < bytes.count { buffer.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start...])) }
        }
    }
}
