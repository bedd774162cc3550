import Catalog
import Foundation
import Providers

/// Publishes the local cloud's live inventory in the catalog: one offering per instance size (with
/// its price), the images, and the free capacity, generated from the provider driver into the
/// named graph `inventoryGraph` and replaced as a whole on each refresh, so a peer never sees half
/// of an old inventory and half of a new one.
public enum BrokerInventory {
    public static let inventoryGraph = IRI("urn:intercloud:graph:inventory")

    /// The triples for one inventory snapshot. Offerings are placed in the broker's first region
    /// (drivers do not report regions yet); sizes without a price are published without one.
    public static func triples(
        sizes: [InstanceSize], images: [Image], capacity: Capacity?, cloud: IRI, regions: [String], observedAt: Date
    ) -> [Triple] {
        let separator = cloud.value.hasSuffix("/") || cloud.value.hasSuffix("#") ? "" : "/"
        let base = cloud.value + separator
        let region = IRI(base + "region/" + (regions.first ?? "default"))
        var triples: [Triple] = []
        for size in sizes {
            let offering = IRI(base + "offering/" + size.id)
            if let price = size.pricePerHour {
                triples += CatalogDescription.instanceOffering(
                    offering, cloud: cloud, region: region, name: size.name, vcpu: size.vCPU, memoryMiB: size.memoryMiB,
                    diskGiB: size.diskGiB, pricePerHour: price.amount, currency: price.currency)
            } else {
                triples += CatalogDescription.instanceOffering(
                    offering, cloud: cloud, region: region, name: size.name, vcpu: size.vCPU, memoryMiB: size.memoryMiB,
                    diskGiB: size.diskGiB, pricePerHour: 0, currency: "").filter {
                        $0.predicate != IntercloudOntology.iri("pricePerHour") && $0.predicate != IntercloudOntology.iri("currency")
                    }
            }
        }
        for image in images {
            triples += CatalogDescription.image(IRI(base + "image/" + image.id), name: image.name, format: image.format?.rawValue ?? "unknown")
        }
        if let capacity {
            let freeInstances = capacity.maxInstances.map { max(0, $0 - capacity.usedInstances) } ?? -1
            let freeVCPU = capacity.maxVCPU.map { max(0, $0 - capacity.usedVCPU) } ?? -1
            let freeMemory = capacity.maxMemoryMiB.map { max(0, $0 - capacity.usedMemoryMiB) } ?? -1
            // -1: the driver reports no limit.
            triples += CatalogDescription.capacity(
                IRI(base + "capacity/" + (regions.first ?? "default")), region: region, freeInstances: freeInstances,
                vcpu: freeVCPU, memoryMiB: freeMemory, observedAt: observedAt)
        }
        return triples
    }

    /// Reads the driver's inventory and replaces the inventory graph of `store`.
    public static func refresh(from driver: any CloudDriver, into store: TripleStore, cloud: IRI, regions: [String], now: Date) async throws -> Int {
        let sizes = try await driver.listSizes()
        let images = try await driver.listImages()
        let capacity = try? await driver.capacity()
        let triples = Self.triples(sizes: sizes, images: images, capacity: capacity, cloud: cloud, regions: regions, observedAt: now)
        store.replaceGraph(inventoryGraph, with: triples)
        return triples.count
    }
}
