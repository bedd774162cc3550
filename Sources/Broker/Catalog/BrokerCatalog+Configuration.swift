import CatalogQueries
import XMPP

extension BrokerCatalog {
    /// The catalog `[catalog]` and `[broker]` of a configuration describe.
    public convenience init(configuration: BrokerConfiguration) throws {
        let settings = configuration.catalog
        try self.init(
            files: settings.files, timeout: settings.timeout, maxResults: settings.maxResults, cloudIRI: settings.cloudIRI,
            cloud: configuration.broker.cloud, xmppAddress: configuration.xmpp.jid.bare.description, regions: configuration.broker.regions)
    }
}
