import Foundation

/// A program a test runs, found or reported with the package that provides it. `scripts/setup.sh`
/// installs every one of them; a test that cannot find one fails with this message instead of
/// skipping, so a machine set up by hand cannot hide a missing install step.
public struct MissingProgram: Error, CustomStringConvertible {
    public var name: String
    public var package: String
    public var description: String {
        "\(name) is not installed: it comes with \(package), which scripts/setup.sh installs (run it, or install \(package))"
    }
}

public enum RequiredProgram {
    /// The absolute path of `name`: itself when it is a path, else found on PATH and in the places
    /// pip puts programs (`/usr/local/bin`, `~/.local/bin`, pyenv's shims), which the PATH a test
    /// runner passes on may lack. Throws `MissingProgram` naming `package` when it is nowhere.
    public static func path(_ name: String, package: String) throws -> String {
        if name.hasPrefix("/") {
            guard FileManager.default.isExecutableFile(atPath: name) else { throw MissingProgram(name: name, package: package) }
            return name
        }
        let environment = ProcessInfo.processInfo.environment
        let home = environment["HOME"] ?? "/root"
        let directories = (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
            + ["/usr/local/bin", "\(home)/.local/bin", "\(home)/.pyenv/shims"]
        for directory in directories where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        throw MissingProgram(name: name, package: package)
    }
}
