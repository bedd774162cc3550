import Foundation
import Providers

/// Publishes server templates in the catalog as Turtle, in the terms of `ontology/intercloud.ttl`,
/// so peers find services with SPARQL:
///
/// ```sparql
/// PREFIX ic: <https://intercloud.example.org/ontology#>
/// SELECT ?offering ?name ?port WHERE {
///   ?offering a ic:Offering ; ic:name ?name ; ic:service ?s .
///   ?s ic:protocol "http" ; ic:port ?port .
/// }
/// ```
///
/// Each template `T` of cloud `C` becomes `<C/template/T>` a `ic:Offering` operated by `C`, with
/// `ic:service <C/template/T/service>` (an `ic:Service` with `ic:protocol`, `ic:port`, and
/// `ic:interfaceDescription` when the template names a URL), `ic:image <C/image/ID>` (the IRI the
/// broker's inventory gives the same image), `ic:instanceType <C/instance-type/SIZE>` (an
/// `ic:InstanceType` named after the size), the size's figures repeated on the offering when
/// `sizes` knows them (as the inventory's size offerings do), and one `ic:parameter` node per
/// parameter so a peer can tell what `select` needs.
public enum TemplateCatalog {
    public static let namespace = "https://intercloud.example.org/ontology#"

    /// Turtle for `templates`. `sizes` and `images` (from the local driver) add the size's vCPU,
    /// memory, disk and price, and resolve image names to the ids the inventory publishes.
    public static func turtle(
        templates: [ServerTemplate], cloudIRI: String, sizes: [InstanceSize] = [], images: [Image] = []
    ) -> String {
        let base = cloudIRI.hasSuffix("/") || cloudIRI.hasSuffix("#") ? cloudIRI : cloudIRI + "/"
        var out = """
            @prefix ic: <\(namespace)> .
            @prefix dcterms: <http://purl.org/dc/terms/> .
            @prefix xsd: <http://www.w3.org/2001/XMLSchema#> .

            """
        for template in templates.sorted(by: { $0.name < $1.name }) {
            let offering = iri(base + "template/" + template.name)
            let service = iri(base + "template/" + template.name + "/service")
            let imageID = images.first(where: { $0.id == template.image })?.id
                ?? images.first(where: { $0.name == template.image })?.id ?? template.image
            let image = iri(base + "image/" + pathSegment(imageID))
            let instanceType = iri(base + "instance-type/" + pathSegment(template.size))
            var lines = [
                "\(offering) a ic:Offering",
                "ic:name \(literal(template.name))",
                "dcterms:description \(literal(template.description))",
                "ic:operatedBy \(iri(cloudIRI))",
                "ic:service \(service)",
                "ic:image \(image)",
                "ic:instanceType \(instanceType)",
            ]
            if let size = sizes.first(where: { $0.id == template.size }) {
                lines.append("ic:vcpu \(size.vCPU)")
                lines.append("ic:memoryMiB \(size.memoryMiB)")
                lines.append("ic:diskGiB \(size.diskGiB)")
                if let price = size.pricePerHour {
                    lines.append("ic:pricePerHour \(literal("\(price.amount)"))^^xsd:decimal")
                    lines.append("ic:currency \(literal(price.currency))")
                }
            }
            for parameter in template.parameters {
                var node = [
                    "ic:name \(literal(parameter.name))",
                    "dcterms:description \(literal(parameter.description))",
                    "ic:required \(parameter.required)",
                ]
                if let value = parameter.defaultValue { node.append("ic:defaultValue \(literal(value))") }
                if let pattern = parameter.pattern { node.append("ic:pattern \(literal(pattern))") }
                for value in parameter.allowedValues ?? [] { node.append("ic:allowedValue \(literal(value))") }
                lines.append("ic:parameter [ \(node.joined(separator: " ; ")) ]")
            }
            out += lines.joined(separator: " ;\n    ") + " .\n"

            let interface = template.interface
            var serviceLines = [
                "\(service) a ic:Service",
                "ic:name \(literal(template.name))",
                "ic:protocol \(literal(interface.protocolName))",
                "ic:port \(interface.port)",
            ]
            if let path = interface.path { serviceLines.append("ic:path \(literal(path))") }
            if let description = interface.description {
                if let url = URL(string: description), let scheme = url.scheme, ["http", "https"].contains(scheme),
                   url.host != nil, isIRISafe(description) {
                    serviceLines.append("ic:interfaceDescription \(iri(description))")
                } else {
                    serviceLines.append("dcterms:description \(literal(description))")
                }
            }
            out += serviceLines.joined(separator: " ;\n    ") + " .\n"
            out += "\(instanceType) a ic:InstanceType ; ic:name \(literal(template.size)) .\n\n"
        }
        return out
    }

    /// A Turtle string literal with every character that needs it escaped (ECHAR and UCHAR).
    static func literal(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += String(format: "\\u%04X", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// An IRI reference; callers pass only text that `isIRISafe` accepts or that was escaped.
    static func iri(_ text: String) -> String { "<\(text)>" }

    /// Characters Turtle forbids in IRIREF: controls, space, `<>"{}|^`\`.
    static func isIRISafe(_ text: String) -> Bool {
        !text.unicodeScalars.contains { $0.value <= 0x20 || "<>\"{}|^`\\".unicodeScalars.contains($0) }
    }

    /// Percent-encodes one path segment (an image name may hold anything).
    static func pathSegment(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? "unnamed"
    }
}
