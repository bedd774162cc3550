/// Placeholder until the module lands.
enum TransferModule {}
