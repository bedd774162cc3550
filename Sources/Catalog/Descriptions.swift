import Foundation

/// IRIs of the Intercloud ontology (`ontology/intercloud.ttl`).
public enum IntercloudOntology {
    public static let namespace = "https://intercloud.example.org/ontology#"
    public static func iri(_ local: String) -> Term { .iri(namespace + local) }

    public static let cloud = iri("Cloud"), region = iri("Region"), offering = iri("Offering")
    public static let instanceType = iri("InstanceType"), image = iri("Image"), service = iri("Service")
    public static let sla = iri("SLA"), capacity = iri("Capacity")
}

/// Builders for the triples a broker publishes about its cloud, so that code turning provider
/// inventory into catalog data does not spell IRIs by hand. Numbers use the XSD types the
/// ontology declares (integers for sizes, decimals for prices and availability).
public enum CatalogDescription {
    private static let type = Term.iri(Vocabulary.rdfType)
    private static func p(_ local: String) -> Term { IntercloudOntology.iri(local) }
    private static func decimal(_ value: Decimal) -> Term { .typed(Numeric.decimalLexical(value), Vocabulary.xsdDecimal) }

    public static func cloud(_ cloud: IRI, name: String, xmppAddress: String, regions: [IRI] = []) -> [Triple] {
        var triples = [
            Triple(.iri(cloud), type, IntercloudOntology.cloud),
            Triple(.iri(cloud), p("name"), .string(name)),
            Triple(.iri(cloud), p("xmppAddress"), .string(xmppAddress)),
        ]
        for region in regions { triples.append(Triple(.iri(cloud), p("hasRegion"), .iri(region))) }
        return triples
    }

    public static func region(_ region: IRI, name: String, country: String) -> [Triple] {
        [Triple(.iri(region), type, IntercloudOntology.region),
         Triple(.iri(region), p("name"), .string(name)),
         Triple(.iri(region), p("country"), .string(country))]
    }

    public static func sla(_ sla: IRI, availability: Decimal, supportLevel: String) -> [Triple] {
        [Triple(.iri(sla), type, IntercloudOntology.sla),
         Triple(.iri(sla), p("availability"), decimal(availability)),
         Triple(.iri(sla), p("supportLevel"), .string(supportLevel))]
    }

    /// An instance-type offering: the figures are repeated on the offering for simple queries.
    public static func instanceOffering(_ offering: IRI, cloud: IRI, region: IRI, name: String, vcpu: Int, memoryMiB: Int,
                                        diskGiB: Int, pricePerHour: Decimal, currency: String, sla: IRI? = nil) -> [Triple] {
        var triples = [
            Triple(.iri(offering), type, IntercloudOntology.offering),
            Triple(.iri(offering), p("name"), .string(name)),
            Triple(.iri(offering), p("operatedBy"), .iri(cloud)),
            Triple(.iri(offering), p("region"), .iri(region)),
            Triple(.iri(offering), p("vcpu"), .integer(vcpu)),
            Triple(.iri(offering), p("memoryMiB"), .integer(memoryMiB)),
            Triple(.iri(offering), p("diskGiB"), .integer(diskGiB)),
            Triple(.iri(offering), p("pricePerHour"), decimal(pricePerHour)),
            Triple(.iri(offering), p("currency"), .string(currency)),
        ]
        if let sla { triples.append(Triple(.iri(offering), p("sla"), .iri(sla))) }
        return triples
    }

    public static func image(_ image: IRI, name: String, format: String) -> [Triple] {
        [Triple(.iri(image), type, IntercloudOntology.image),
         Triple(.iri(image), p("name"), .string(name)),
         Triple(.iri(image), p("imageFormat"), .string(format))]
    }

    public static func service(_ service: IRI, name: String, endpoint: String, protocolName: String, interfaceDescription: IRI? = nil) -> [Triple] {
        var triples = [
            Triple(.iri(service), type, IntercloudOntology.service),
            Triple(.iri(service), p("name"), .string(name)),
            Triple(.iri(service), p("endpoint"), .typed(endpoint, Vocabulary.xsd + "anyURI")),
            Triple(.iri(service), p("protocol"), .string(protocolName)),
        ]
        if let interfaceDescription { triples.append(Triple(.iri(service), p("interfaceDescription"), .iri(interfaceDescription))) }
        return triples
    }

    /// Free capacity in a region at a point in time.
    public static func capacity(_ capacity: IRI, region: IRI, freeInstances: Int, vcpu: Int, memoryMiB: Int, observedAt: Date) -> [Triple] {
        let formatter = ISO8601DateFormatter()
        return [
            Triple(.iri(capacity), type, IntercloudOntology.capacity),
            Triple(.iri(region), p("capacity"), .iri(capacity)),
            Triple(.iri(capacity), p("freeInstances"), .integer(freeInstances)),
            Triple(.iri(capacity), p("vcpu"), .integer(vcpu)),
            Triple(.iri(capacity), p("memoryMiB"), .integer(memoryMiB)),
            Triple(.iri(capacity), p("observedAt"), .typed(formatter.string(from: observedAt), Vocabulary.xsdDateTime)),
        ]
    }
}
