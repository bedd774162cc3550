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
            output += XMLEscaping.escape(namespace, inAttribute: true)
            output += "'"
        }
        for attribute in attributes where attribute.name != "xmlns" {
            output += " "
            output += attribute.name
            output += "='"
            output += XMLEscaping.escape(attribute.value, inAttribute: true)
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

/// Both serializers escape by one rule, whether an element goes into a stanza or into signed
/// payload bytes: the five markup characters in text and attribute values alike (documented
/// examples escape quotes in text too), and the characters a parser would not give back as they
/// are: CR anywhere (it reads as LF), tab and LF in an attribute value (they read as spaces).
public enum XMLEscaping {
    // By Unicode scalar, not by Character: "&" followed by a combining mark is one Character,
    // equal to neither "&" nor anything else here, and would be written unescaped.
    public static func escape(_ text: String, inAttribute: Bool = false) -> String {
        guard text.utf8.contains(where: { replacement(for: $0, inAttribute: inAttribute) != nil }) else { return text }
        var result = ""
        result.reserveCapacity(text.utf8.count + 16)
        for scalar in text.unicodeScalars {
            if scalar.isASCII, let replacement = replacement(for: UInt8(scalar.value), inAttribute: inAttribute) {
                result += replacement.description
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// What an ASCII byte is written as, if not as itself.
    @inline(__always)
    static func replacement(for byte: UInt8, inAttribute: Bool) -> StaticString? {
        switch byte {
        case UInt8(ascii: "&"): "&amp;"
        case UInt8(ascii: "<"): "&lt;"
        case UInt8(ascii: ">"): "&gt;"
        case UInt8(ascii: "'"): "&apos;"
        case UInt8(ascii: "\""): "&quot;"
        case 0x0D: "&#13;"
        case 0x09 where inAttribute: "&#9;"
        case 0x0A where inAttribute: "&#10;"
        default: nil
        }
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
            XMLEscaping.appendEscaped(namespace, to: &buffer, inAttribute: true)
            buffer.append(UInt8(ascii: "'"))
        }
        for attribute in attributes where attribute.name != "xmlns" {
            buffer.append(UInt8(ascii: " "))
            XMLEscaping.appendVerbatim(attribute.name, to: &buffer)
            buffer.append(UInt8(ascii: "="))
            buffer.append(UInt8(ascii: "'"))
            XMLEscaping.appendEscaped(attribute.value, to: &buffer, inAttribute: true)
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
    /// Appends a name as UTF-8 in one copy (appending a `String.UTF8View` goes byte by byte).
    static func appendVerbatim(_ text: String, to buffer: inout [UInt8]) {
        var text = text
        text.withUTF8 { buffer.append(contentsOf: $0) }
    }

    /// Appends `text` as UTF-8, escaped as `escape` does. Every character escaped is ASCII, and a
    /// UTF-8 multi-byte sequence never contains an ASCII byte, so a byte scan finds exactly them.
    /// Runs of plain bytes are copied in one piece.
    static func appendEscaped(_ text: String, to buffer: inout [UInt8], inAttribute: Bool = false) {
        var text = text
        text.withUTF8 { bytes in
            var start = 0
            for index in bytes.indices {
                guard let replacement = replacement(for: bytes[index], inAttribute: inAttribute) else { continue }
                if start < index { buffer.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index])) }
                buffer.append(contentsOf: UnsafeBufferPointer(start: replacement.utf8Start, count: replacement.utf8CodeUnitCount))
                start = index + 1
            }
            if start < bytes.count { buffer.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start...])) }
        }
    }
}
