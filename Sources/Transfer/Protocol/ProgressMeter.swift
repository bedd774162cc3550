import Foundation

/// Turns "bytes done at time t" samples into a `TransferProgress` with a recent rate and an ETA.
/// The rate is measured over a sliding window so a stall or a resume shows up within seconds
/// instead of being averaged away over the whole transfer.
struct ProgressMeter: Sendable {
    let totalBytes: UInt64
    let window: TimeInterval
    private var samples: [(time: Date, bytes: UInt64)] = []

    init(totalBytes: UInt64, window: TimeInterval = 3) {
        self.totalBytes = totalBytes
        self.window = window
    }

    mutating func record(bytesDone: UInt64, now: Date) -> TransferProgress {
        samples.append((now, bytesDone))
        // Keep one sample older than the window so the rate always spans at least the window.
        while samples.count > 2, now.timeIntervalSince(samples[1].time) >= window { samples.removeFirst() }
        var rate = 0.0
        if let first = samples.first, samples.count >= 2 {
            let elapsed = now.timeIntervalSince(first.time)
            if elapsed > 0, bytesDone >= first.bytes { rate = Double(bytesDone - first.bytes) / elapsed }
        }
        let remaining = totalBytes > bytesDone ? totalBytes - bytesDone : 0
        let eta: TimeInterval? = remaining == 0 ? 0 : (rate > 0 ? Double(remaining) / rate : nil)
        return TransferProgress(bytesDone: bytesDone, totalBytes: totalBytes, bytesPerSecond: rate, eta: eta)
    }
}
