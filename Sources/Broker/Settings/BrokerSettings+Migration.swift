import Foundation
import Migration

extension BrokerSettings {
    /// `[migration]`: the image transfer channel, timeouts and live migration. The defaults are
    /// `MigrationService.Settings`', whose graceful shutdown is the Migration module's
    /// (`MigrationConfiguration.defaultGracefulShutdownTimeout`).
    enum Migration {
        static let defaults = MigrationService.Settings(workDirectory: "")

        /// A libvirt URI a peer's hypervisor may be sent to, checked as a peer's offer is.
        static let liveURIRule = SettingRule<String>(text: "a libvirt migration URI (qemu+tls://host/system)") { uri in
            do throws(MigrationMessageError) { try MigrationMessage.checkLiveURI(uri) } catch {
                return "must be a libvirt migration URI: \(error.message)"
            }
            return nil
        }

        static let transferHost = Setting<String>(
            "migration", "transfer_host", default: defaults.transferHost, rule: .nonEmpty, "Address the TLS transfer server listens on.")
        static let advertisedHost = Setting<String>(
            "migration", "advertised_host", note: "transfer_host", "Address offered to peers when it differs (NAT, a public name).")
        static let transferPort = Setting<Int>(
            "migration", "transfer_port", default: Int(defaults.transferPort), rule: .within(0...65535),
            "TCP port of the transfer server; 0: ephemeral, offered per migration.")
        static let workDir = Setting<String>(
            "migration", "work_dir", note: "<broker.database>.migrations", "Folder for exported, converted and received disks.")
        static let bootTimeoutSeconds = Setting<Double>(
            "migration", "boot_timeout_seconds", default: defaults.bootTimeout.settingSeconds, rule: .atLeast(1),
            "How long a migrated instance may take to be running at the destination.")
        static let gracefulShutdownSeconds = Setting<Double>(
            "migration", "graceful_shutdown_seconds", default: defaults.gracefulShutdownSeconds, rule: .atLeast(0),
            "Graceful shutdown time at the source before a hard power-off.")
        static let requestTimeoutSeconds = Setting<Double>(
            "migration", "request_timeout_seconds", default: defaults.requestTimeout.settingSeconds, rule: .atLeast(1),
            "The source's wait for the destination's answer to one message (covers import, create and start).")
        static let peerCheckSeconds = Setting<Double>(
            "migration", "peer_check_seconds", default: defaults.peerCheckInterval, rule: .atLeast(1),
            "A destination waiting on its source asks where it stands after this long, and as often after.")
        static let liveURI = Setting<String>(
            "migration", "live_uri", note: "the provider's uri", rule: liveURIRule,
            "This cloud's hypervisor as a peer's must reach it for live migration.")
        static let transferWaitSeconds = Setting<Double>(
            "migration", "transfer_wait_seconds", default: defaults.transferWait, rule: .atLeast(1),
            "An announced image transfer that gets no connection for this long fails, and its reservation is released.")
        static let maxConcurrentPerAgreement = Setting<Int>(
            "migration", "max_concurrent_per_agreement", default: defaults.maxConcurrentPerAgreement, rule: .atLeast(1),
            "Migrations into this cloud under one agreement at once (beyond: too-many-migrations).")

        static let section = SettingsSection("migration", "Optional.", [
            transferHost.erased, advertisedHost.erased, transferPort.erased, workDir.erased, bootTimeoutSeconds.erased,
            gracefulShutdownSeconds.erased, requestTimeoutSeconds.erased, peerCheckSeconds.erased, transferWaitSeconds.erased,
            liveURI.erased, maxConcurrentPerAgreement.erased,
        ])

        // `[migration.live_peers]`: one entry per peer, `"broker@cloud2.example" = { uris = [...] }`.
        static let livePeersEntry = "migration.live_peers.<bare JID>"
        static let uris = Setting<[String]>(
            livePeersEntry, "uris", required: true,
            rule: SettingRule(text: "a non-empty list of libvirt migration URIs") { uris in
                guard !uris.isEmpty else { return "must be a non-empty list of libvirt migration URIs" }
                for uri in uris {
                    if let problem = liveURIRule.check(uri) { return "\(problem) (\(uri.tomlText))" }
                }
                return nil
            },
            "URIs accepted as offered, or any URI with one's scheme and host and no query parameters.")
        static let allowPlaintext = Setting<Bool>(
            livePeersEntry, "allow_plaintext", default: false, "Accept a migration stream without TLS (anything but qemu+tls).")

        static let livePeersSection = SettingsSection(
            "migration.live_peers", keyedBy: "bare JID",
            "Optional; where this cloud's hypervisor may send a running guest, per peer. No entry, no live migration to that peer.", [
                uris.erased, allowPlaintext.erased,
            ])
    }
}
