import Foundation

/// Metering: what a consumer used at a provider under an agreement, both sides' signed view of it,
/// what it costs, and whether the provider kept its service level.
///
/// The flow, one agreement and one period at a time:
///
/// 1. **Observe.** The provider's broker samples its cloud (`UsageObservation`: the peer's instances
///    and their states, the agreement's cumulative transfer counter, bytes stored). The consumer's
///    broker samples what it can see of the same resources.
/// 2. **Integrate.** `UsageMeter` turns a time-ordered series of observations into a `UsageRecord`
///    for a period [from, until): instance-seconds and instance counts per instance type,
///    vCPU-seconds, bytes transferred, byte-seconds stored. Quantities are kept in exact integer
///    base units (seconds, bytes); hours and GB are derived `Decimal`s, so nothing is rounded before
///    the bill.
/// 3. **Sign.** The provider signs `UsageRecord.canonicalBytes()` (a fixed text encoding, like
///    `Agreement.canonicalBytes()`, first line `format=urn:intercloud:usage:0`) and sends those bytes;
///    the consumer parses them back with `UsageRecord(canonicalBytes:)`, which accepts only the
///    canonical encoding, so what is parsed is exactly what was signed.
/// 4. **Reconcile.** The consumer compares the provider's record with its own record for the same
///    period (`Reconciliation`, with relative and absolute tolerances) and either countersigns or
///    disputes, naming each dimension that differs with both values.
/// 5. **Record.** Both sides keep the exchange in their `UsageLedger` (SQLite, durable before the
///    call returns): the canonical bytes, their SHA-256, the provider's signature, the consumer's
///    countersignature or dispute reasons. `UsageLedger.proof(of:)` hands a third party everything
///    needed to check the record offline.
/// 6. **Bill.** `Bill` prices one peer's records against the agreement's `RateCard` (each line
///    rounded half-up to the currency's minor unit, total = sum of rounded lines) and
///    `BillRenderer` prints it as an aligned table, JSON or CSV.
/// 7. **Service level.** `SLAMonitor` turns availability samples into measured availability,
///    downtime intervals and the longest outage, and compares them and migration downtimes with the
///    agreement's `ServiceLevel`, yielding `SLABreach`es the ledger stores.
///
/// Everything but `UsageLedger` is a pure value type: time is always passed in.
///
/// ```swift
/// // Provider, at the end of a period:
/// var meter = UsageMeter(agreementID: agreement.id, period: period)
/// try meter.observe(observations)                       // include the last one before `period.from`
/// let record = try meter.record(provider: me, consumer: peer, sequence: try ledger.nextSequence(
///     agreementID: agreement.id, provider: me), createdAt: now)
/// try ledger.propose(record, providerSignature: sign(record.canonicalBytes()), role: .provider, at: now)
///
/// // Consumer, on receiving the bytes and signature (after checking the signature):
/// let theirs = try UsageRecord(canonicalBytes: bytes)
/// try ledger.propose(theirs, providerSignature: signature, role: .consumer, at: now)
/// switch Reconciliation(tolerance: .standard).reconcile(provider: theirs, own: ownRecord) {
/// case .countersign: try ledger.countersign(theirs.key, consumerSignature: sign(bytes), at: now)
/// case .dispute(let reasons): try ledger.dispute(theirs.key, reasons: reasons, at: now)
/// }
///
/// // Either side, a bill for a month:
/// let records = try ledger.billableRecords(peer: peer, role: .consumer, period: month)
/// let bill = try Bill(provider: peer, consumer: me, period: month, rates: agreement.terms.rates, records: records)
/// print(BillRenderer.table(bill))
/// ```
public enum Metering {
    /// Bytes in one GB, for transfer and storage. Decimal GB (10^9 bytes), as the `RateCard` prices
    /// "GB" and as transfer is usually quoted; a provider pricing GiB says so in its rate card text.
    public static let bytesPerGB: Decimal = 1_000_000_000

    /// Hours in the billing month used for storage: GB-month = GB-hours / 730. 730 = 8760 hours in
    /// a 365-day year / 12, the convention of the large cloud providers' price lists, so a month's
    /// price does not depend on whether the month has 28 or 31 days.
    public static let hoursPerBillingMonth: Decimal = 730

    /// Upper bound on a usage record's canonical encoding accepted from a peer.
    public static let maximumRecordBytes = 64 * 1024

    /// Upper bound on the number of instance types in one usage record.
    public static let maximumInstanceTypes = 256

    /// Upper bound on the length of identifiers (agreement id, JIDs, instance types), in UTF-8 bytes.
    public static let maximumIdentifierBytes = 1024
}
