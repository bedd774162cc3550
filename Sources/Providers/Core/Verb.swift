/// The verbs of the hybrid-cloud lifecycle (OpenNebula's per-verb drivers, Libcloud's `NodeDriver`).
///
/// Capabilities, errors and progress events all name a verb, so a caller always knows which step failed.
public enum Verb: String, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    case listSizes = "list-sizes"
    case listInstances = "list-instances"
    case describe
    case create
    case start
    /// Graceful stop (ACPI power button, EC2 StopInstances).
    case shutdown
    /// Hard stop: pull the plug (libvirt destroy, OpenNebula cancel). The instance still exists.
    case destroy
    case reboot
    /// Pause in memory.
    case suspend
    case resume
    /// Write memory state to disk and stop (libvirt managed save, hibernate).
    case save
    case restore
    /// Capture the instance's disk as a new image.
    case snapshot
    /// Delete the instance and its disks for good.
    case terminate
    case listImages = "list-images"
    case registerImage = "register-image"
    case deregisterImage = "deregister-image"
    case exportImage = "export-image"
    case importImage = "import-image"
    case capacity
    /// Connecting/authenticating to the backend.
    case connect

    public var description: String { rawValue }
}
