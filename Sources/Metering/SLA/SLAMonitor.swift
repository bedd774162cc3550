import Foundation
import Policy

/// Whether the provider's service for an agreement was up at one instant (a probe's answer).
public struct AvailabilitySample: Codable, Sendable, Hashable {
    public var time: Date
    public var isUp: Bool

    public init(time: Date, isUp: Bool) {
        self.time = time
        self.isUp = isUp
    }
}

/// A half-open interval [from, until) of downtime, in whole seconds.
public struct DowntimeInterval: Codable, Sendable, Hashable {
    public var from: Date
    public var until: Date

    public init(from: Date, until: Date) {
        self.from = from
        self.until = until
    }

    public var seconds: Int64 { CanonicalText.wholeSeconds(until) - CanonicalText.wholeSeconds(from) }
}

/// A migration's service interruption, as the migration orchestrator measured it.
public struct MigrationDowntime: Codable, Sendable, Hashable {
    public var migrationID: String
    public var from: Date
    public var until: Date

    public init(migrationID: String, from: Date, until: Date) {
        self.migrationID = migrationID
        self.from = from
        self.until = until
    }

    public var seconds: Int64 { CanonicalText.wholeSeconds(until) - CanonicalText.wholeSeconds(from) }
}

/// Availability of one agreement over one period.
public struct AvailabilityMeasurement: Sendable, Hashable {
    public var period: MeteringPeriod
    /// Seconds of the period covered by samples (see `SLAMonitor` for the rule).
    public var observedSeconds: Int64
    public var upSeconds: Int64
    /// Maximal runs of "down", clamped to the period, in time order.
    public var downtime: [DowntimeInterval]

    public var downSeconds: Int64 { observedSeconds - upSeconds }
    public var unobservedSeconds: Int64 { period.seconds - observedSeconds }

    /// The longest downtime interval (the earliest of equals), or `nil` with no downtime.
    public var longestOutage: DowntimeInterval? {
        downtime.reduce(nil) { longest, interval in
            guard let longest else { return interval }
            return interval.seconds > longest.seconds ? interval : longest
        }
    }

    /// up / observed × 100, exact up to `Decimal` precision; `nil` when nothing was observed.
    public var availabilityPercent: Decimal? {
        observedSeconds > 0 ? Decimal(upSeconds) * 100 / Decimal(observedSeconds) : nil
    }
}

/// A service level the provider did not meet.
public struct SLABreach: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable, Hashable {
        /// Measured availability below the agreed percentage over a period.
        case availability
        /// One migration's downtime longer than the agreed maximum.
        case migrationDowntime = "migration-downtime"
    }

    public var agreementID: String
    public var kind: Kind
    /// Human-readable, with the measured and the agreed value.
    public var detail: String
    /// The measured period (availability) or the downtime itself (migration).
    public var from: Date
    public var until: Date

    public init(agreementID: String, kind: Kind, detail: String, from: Date, until: Date) {
        self.agreementID = agreementID
        self.kind = kind
        self.detail = detail
        self.from = from
        self.until = until
    }
}

/// Measures availability from samples and checks it, and migration downtimes, against a
/// `ServiceLevel`. A pure value: feed it samples, ask it about a period.
///
/// Rule, as for usage: times are whole seconds; a sample's state holds from its time until the next
/// sample of the same agreement, the last until the end of the asked period, and with
/// `stalenessLimit` at most that long. Time before the first sample, or beyond the staleness limit,
/// is unobserved: it counts neither as up nor as down, so a gap in probing neither hides an outage
/// as uptime nor invents one. Availability is up / observed.
public struct SLAMonitor: Sendable {
    public let stalenessLimit: TimeInterval?
    /// Per agreement, in time order (equal times keep their arrival order; the later one wins).
    public private(set) var samples: [String: [AvailabilitySample]] = [:]
    public private(set) var migrationDowntimes: [String: [MigrationDowntime]] = [:]

    public init(stalenessLimit: TimeInterval? = nil) {
        self.stalenessLimit = stalenessLimit.map { $0.isNaN ? 0 : min(max($0, 0), 1e12) }
    }

    /// Adds a sample; samples may arrive out of order.
    public mutating func record(_ sample: AvailabilitySample, agreementID: String) {
        var list = samples[agreementID, default: []]
        if let last = list.last, last.time > sample.time {
            // Insert after every sample at or before its time.
            var low = 0, high = list.count
            while low < high {
                let mid = (low + high) / 2
                if list[mid].time <= sample.time { low = mid + 1 } else { high = mid }
            }
            list.insert(sample, at: low)
        } else {
            list.append(sample)
        }
        samples[agreementID] = list
    }

    public mutating func record(_ downtime: MigrationDowntime, agreementID: String) {
        migrationDowntimes[agreementID, default: []].append(downtime)
    }

    /// Forgets samples before `date` except the last one, which still gives the state at `date`,
    /// and migration downtimes that ended before it.
    public mutating func discard(before date: Date) {
        for (agreementID, list) in samples {
            guard let firstKept = list.firstIndex(where: { $0.time >= date }) else {
                samples[agreementID] = list.last.map { [$0] } ?? []
                continue
            }
            samples[agreementID] = Array(list[max(0, firstKept - 1)...])
        }
        for (agreementID, list) in migrationDowntimes {
            migrationDowntimes[agreementID] = list.filter { $0.until >= date }
        }
    }

    public func measure(agreementID: String, period: MeteringPeriod) -> AvailabilityMeasurement {
        let list = samples[agreementID] ?? []
        let periodStart = CanonicalText.wholeSeconds(period.from), periodEnd = CanonicalText.wholeSeconds(period.until)
        var observed: Int64 = 0, up: Int64 = 0
        var downtime: [DowntimeInterval] = []
        var openDown: (from: Int64, until: Int64)?
        func closeDown() {
            if let run = openDown {
                downtime.append(DowntimeInterval(
                    from: Date(timeIntervalSince1970: TimeInterval(run.from)),
                    until: Date(timeIntervalSince1970: TimeInterval(run.until))))
                openDown = nil
            }
        }
        for (index, sample) in list.enumerated() {
            let start = CanonicalText.wholeSeconds(sample.time)
            var end = index + 1 < list.count ? CanonicalText.wholeSeconds(list[index + 1].time) : periodEnd
            if let stalenessLimit { end = min(end, start + Int64(stalenessLimit.rounded(.down))) }
            let from = max(start, periodStart), until = min(end, periodEnd)
            guard until > from else { continue }
            observed += until - from
            if sample.isUp {
                up += until - from
                closeDown()
            } else if let run = openDown, run.until == from {
                openDown = (run.from, until)
            } else {
                closeDown()
                openDown = (from, until)
            }
        }
        closeDown()
        return AvailabilityMeasurement(period: period, observedSeconds: observed, upSeconds: up, downtime: downtime)
    }

    /// Breaches of `serviceLevel` in `period`: availability below the agreed percentage (only when
    /// something was observed), and each migration downtime that starts in the period and lasts
    /// longer than the agreed maximum.
    public func breaches(agreementID: String, period: MeteringPeriod, serviceLevel: ServiceLevel) -> [SLABreach] {
        var breaches: [SLABreach] = []
        let measurement = measure(agreementID: agreementID, period: period)
        // Compared without dividing: up × 100 < required × observed.
        if measurement.observedSeconds > 0,
           Decimal(measurement.upSeconds) * 100 < serviceLevel.availabilityPercent * Decimal(measurement.observedSeconds),
           let percent = measurement.availabilityPercent {
            var detail = "availability \(CanonicalText.decimal(Bill.round(percent, digits: 4)))% below "
                + "\(CanonicalText.decimal(serviceLevel.availabilityPercent))%: down \(measurement.downSeconds) s "
                + "of \(measurement.observedSeconds) s observed"
            if let longest = measurement.longestOutage {
                detail += ", longest outage \(longest.seconds) s from \(longest.from.formatted(.iso8601))"
            }
            breaches.append(SLABreach(agreementID: agreementID, kind: .availability, detail: detail, from: period.from, until: period.until))
        }
        let downtimes = (migrationDowntimes[agreementID] ?? []).filter { period.contains($0.from) }.sorted { $0.from < $1.from }
        for downtime in downtimes where downtime.seconds > Int64(serviceLevel.maxMigrationDowntimeSeconds) {
            breaches.append(SLABreach(
                agreementID: agreementID, kind: .migrationDowntime,
                detail: "migration \(downtime.migrationID): downtime \(downtime.seconds) s above \(serviceLevel.maxMigrationDowntimeSeconds) s",
                from: downtime.from, until: downtime.until))
        }
        return breaches
    }
}
