import Federation
import Foundation

extension BrokerSettings {
    /// `[federation]`: server templates offered to peers. The defaults are `FederationService.Settings`'.
    enum Federation {
        static let defaults = FederationService.Settings()

        static let templates = Setting<[String]>(
            "federation", "templates", default: [], "Template files or folders (see templates/README.md).")
        static let credentialTTLSeconds = Setting<Double>(
            "federation", "credential_ttl_seconds", default: defaults.credentialTTL, rule: .atLeast(60),
            "How long issued service credentials hold before they must be renewed.")
        static let bootTimeoutSeconds = Setting<Double>(
            "federation", "boot_timeout_seconds", default: defaults.bootTimeout, rule: .atLeast(1),
            "How long a service's instance may take to run before the selection fails.")
        static let teardownRetrySeconds = Setting<Double>(
            "federation", "teardown_retry_seconds", default: defaults.teardownRetryInterval, rule: .atLeast(1),
            "Wait between retries of a failed teardown.")
        static let callGate = Setting<String>(
            "federation", "call_gate", note: "none (no call gate)",
            rule: SettingRule(text: "host:port with an IP address, e.g. \"127.0.0.1:8181\"") { gate in
                address(gate) == nil ? "must be host:port with an IP address (IPv4 or IPv6), e.g. \"127.0.0.1:8181\"" : nil
            },
            "Where services' fronts check each call's credentials (`GET /v1/calls/check`).")

        /// `host:port` with an IP literal (brackets around IPv6 allowed), or nil.
        static func address(_ gate: String) -> FederationService.Settings.CallGateAddress? {
            guard let colon = gate.lastIndex(of: ":"), let port = UInt16(gate[gate.index(after: colon)...]) else { return nil }
            let host = gate[..<colon].trimmingCharacters(in: .init(charactersIn: "[]"))
            guard !host.isEmpty, host.allSatisfy({ $0.isHexDigit || $0 == "." || $0 == ":" }) else { return nil }
            return .init(host: host, port: port)
        }

        static let section = SettingsSection("federation", "Optional; without templates the broker offers no services.", [
            templates.erased, credentialTTLSeconds.erased, bootTimeoutSeconds.erased, teardownRetrySeconds.erased, callGate.erased,
        ])
    }
}
