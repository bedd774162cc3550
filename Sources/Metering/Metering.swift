/// Placeholder until the module lands.
enum MeteringModule {}
