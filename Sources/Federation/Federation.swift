/// Placeholder until the module lands.
enum FederationModule {}
