/// Placeholder until the module lands.
enum MigrationModule {}
