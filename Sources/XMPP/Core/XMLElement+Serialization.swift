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
            output += XMLEscaping.escapeAttribute(namespace)
            output += "'"
        }
        for attribute in attributes where attribute.name != "xmlns" {
            output += " "
            output += attribute.name
            output += "='"
            output += XMLEscaping.escapeAttribute(attribute.value)
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
            case .text(let text): output += XMLEscaping.escapeText(text)
            }
        }
        output += "</"
        output += name
        output += ">"
    }
}

public enum XMLEscaping {
    public static func escapeText(_ text: String) -> String {
        guard text.contains(where: { $0 == "&" || $0 == "<" || $0 == ">" }) else { return text }
        var result = ""
        result.reserveCapacity(text.utf8.count + 16)
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            default: result.append(character)
            }
        }
        return result
    }

    public static func escapeAttribute(_ text: String) -> String {
        guard text.contains(where: { "&<>'\"".contains($0) }) else { return text }
        var result = ""
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "'": result += "&apos;"
            case "\"": result += "&quot;"
            default: result.append(character)
            }
        }
        return result
    }
}
