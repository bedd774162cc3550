/// A provider-independent instance state. The provider's own state string is always kept beside it in
/// `Instance.rawState`: Libcloud's libvirt driver folds paused, shutting-down and shut-off into one
/// state, and that loss is what we avoid by keeping distinct cases and the raw value.
public enum InstanceState: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// Being created or booting.
    case pending
    case running
    /// Rebooting; will be running again.
    case rebooting
    /// Shutting down gracefully; will be stopped.
    case stopping
    /// Powered off; can be started again.
    case stopped
    /// Paused in memory (libvirt paused, SimCloud suspended).
    case paused
    /// Memory saved to disk, not running (libvirt managed save); `restore`/`start` brings it back.
    case saved
    /// Being deleted.
    case terminating
    /// Gone for good (EC2 keeps terminated instances visible for a while).
    case terminated
    /// The guest crashed or the backend reports an error state.
    case error
    /// A state the driver could not map; see `rawState`.
    case unknown

    public var description: String { rawValue }

    /// States in which the instance is not moving on by itself.
    public var isSettled: Bool {
        switch self {
        case .pending, .rebooting, .stopping, .terminating: false
        default: true
        }
    }
}
