import Foundation
import Glibc
import Synchronization

private let streamSocketType = Int32(SOCK_STREAM.rawValue)

/// Plain TCP sockets: listen, accept, connect with a timeout. Everything else (TLS, framing)
/// sits on top.
enum Sockets {
    /// Binds and listens on `host:port` (port 0: the kernel picks one). Returns the socket and the
    /// bound port.
    static func listen(host: String, port: UInt16, backlog: Int32 = 64) throws(TransferError) -> (fd: Int32, port: UInt16) {
        var lastError = "no address for \(host)"
        for address in try resolve(host: host, port: port, passive: true) {
            let fd = socket(address.family, streamSocketType, 0)
            guard fd >= 0 else { lastError = "socket: \(errnoText())"; continue }
            var yes: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
            let bound = address.bytes.withUnsafeBytes {
                bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            guard bound == 0, Glibc.listen(fd, backlog) == 0 else {
                lastError = "bind/listen \(host):\(port): \(errnoText())"
                close(fd)
                continue
            }
            setCloseOnExec(fd)
            return (fd, localPort(fd))
        }
        throw .connectionFailed(lastError)
    }

    /// Connects to `host:port`, giving up after `timeout`. The returned socket is non-blocking.
    static func connect(host: String, port: UInt16, timeout: TimeInterval) throws(TransferError) -> Int32 {
        var lastError = "no address for \(host)"
        for address in try resolve(host: host, port: port, passive: false) {
            let fd = socket(address.family, streamSocketType, 0)
            guard fd >= 0 else { lastError = "socket: \(errnoText())"; continue }
            setCloseOnExec(fd)
            setNonBlocking(fd)
            let started = address.bytes.withUnsafeBytes {
                Glibc.connect(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            if started == 0 || errno == EINPROGRESS {
                var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let ready = poll(&descriptor, 1, milliseconds(timeout))
                var socketError: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &socketError, &length)
                if ready == 1, socketError == 0 {
                    setNoDelay(fd)
                    return fd
                }
                lastError =
                    ready == 0
                    ? "connecting to \(host):\(port) timed out" : "connect \(host):\(port): \(String(cString: strerror(socketError)))"
            } else {
                lastError = "connect \(host):\(port): \(errnoText())"
            }
            close(fd)
        }
        throw .connectionFailed(lastError)
    }

    struct Address {
        var family: Int32
        var bytes: [UInt8]
    }

    static func resolve(host: String, port: UInt16, passive: Bool) throws(TransferError) -> [Address] {
        var hints = addrinfo()
        hints.ai_socktype = streamSocketType
        hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)
        var list: UnsafeMutablePointer<addrinfo>? = nil
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0 else {
            throw .connectionFailed("cannot resolve \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }
        var addresses: [Address] = []
        var cursor = list
        while let entry = cursor {
            if let address = entry.pointee.ai_addr {
                let bytes = Array(UnsafeRawBufferPointer(start: address, count: Int(entry.pointee.ai_addrlen)))
                addresses.append(Address(family: entry.pointee.ai_family, bytes: bytes))
            }
            cursor = entry.pointee.ai_next
        }
        return addresses
    }

    static func localPort(_ fd: Int32) -> UInt16 {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return withUnsafeBytes(of: storage) { raw in
            // sin_port and sin6_port sit at the same offset (2), in network order.
            UInt16(raw[2]) << 8 | UInt16(raw[3])
        }
    }

    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    static func setCloseOnExec(_ fd: Int32) {
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    static func setNoDelay(_ fd: Int32) {
        var yes: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &yes, socklen_t(MemoryLayout<Int32>.size))
    }

    static func milliseconds(_ interval: TimeInterval) -> Int32 {
        Int32(clamping: Int64((max(0, interval) * 1000).rounded(.up)))
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }

    /// The numeric host of a peer address ("127.0.0.1", "::1"); "?" when it has none.
    static func addressText(_ storage: sockaddr_storage) -> String {
        var storage = storage
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        let length = socklen_t(storage.ss_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        let status = withUnsafePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST)
            }
        }
        return status == 0 ? String(cString: host) : "?"
    }

    /// Whom a connection is counted against for the per-source cap: an IPv4 address (also when
    /// mapped into IPv6), or an IPv6 address's /64 (one host usually holds a whole /64, so per
    /// address it could open connections without end).
    static func sourceKey(_ storage: sockaddr_storage) -> String {
        guard storage.ss_family == sa_family_t(AF_INET6) else { return addressText(storage) }
        var storage = storage
        let bytes: [UInt8] = withUnsafePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { address in
                withUnsafeBytes(of: address.pointee.sin6_addr) { Array($0) }
            }
        }
        return sourceKey(ipv6: bytes) ?? addressText(storage)
    }

    /// The /64 of an IPv6 address as text ("2001:db8:0:1::/64"), or the IPv4 address an
    /// IPv4-mapped one carries; nil unless `bytes` are 16.
    static func sourceKey(ipv6 bytes: [UInt8]) -> String? {
        guard bytes.count == 16 else { return nil }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
            return bytes[12...].map(String.init).joined(separator: ".")
        }
        let groups = stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
        return groups.joined(separator: ":") + "::/64"
    }
}

/// The socket of a connection in progress, so another thread (task cancellation, server
/// shutdown) can break it off: `shutdown` wakes whatever the owning thread is blocked in, and the
/// owner closes the descriptor when it sees the error, so the number is never reused under it.
final class ConnectionInterrupter: Sendable {
    private struct State {
        var fd: Int32 = -1
        var interrupted = false
    }
    private let state = Mutex(State())

    var isInterrupted: Bool { state.withLock { $0.interrupted } }

    /// Registers the socket the owner is now using; returns false if already interrupted.
    func attach(_ fd: Int32) -> Bool {
        state.withLock {
            $0.fd = fd
            if $0.interrupted { shutdown(fd, Int32(SHUT_RDWR)) }
            return !$0.interrupted
        }
    }

    func detach() { state.withLock { $0.fd = -1 } }

    func interrupt() {
        state.withLock {
            $0.interrupted = true
            if $0.fd >= 0 { shutdown($0.fd, Int32(SHUT_RDWR)) }
        }
    }
}
