import Foundation
import Glibc

/// A fixed-capacity buffer for one chunk, with room in front for the chunk frame header so the
/// sender writes header and data in one call. The data starts on a page boundary (the header sits
/// just before it), as direct IO needs. Memory per connection is the pool size times the chunk
/// size (plus a page), whatever the file size.
struct ChunkBuffer: @unchecked Sendable {
    // @unchecked: the memory is owned by exactly one thread at a time; ownership moves through a
    // `BlockingQueue` (whose lock orders the accesses) and back to the `ChunkBufferPool`.
    let storage: UnsafeMutableRawBufferPointer
    var index: UInt64 = 0
    var length: Int = 0
    var digest: [UInt8] = []

    /// Bytes before the data: one page, the frame header at its end.
    static let headerRoom = 4096
    static let alignment = 4096
    private static let headerStart = headerRoom - ChunkFrameHeader.length

    var header: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: storage[Self.headerStart..<Self.headerRoom])
    }
    var data: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: storage[Self.headerRoom..<Self.headerRoom + length])
    }
    /// Header and data together, as they go on the wire.
    var frame: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[Self.headerStart..<Self.headerRoom + length]) }
}

/// A fixed set of chunk buffers, allocated once. `take` blocks while all are in use, which is
/// what bounds memory and applies back-pressure to the stage that produces chunks.
final class ChunkBufferPool: @unchecked Sendable {
    // @unchecked: all mutable state is guarded by `condition`.
    private let condition = NSCondition()
    private var free: [ChunkBuffer] = []
    private let region: UnsafeMutableRawBufferPointer
    let count: Int
    let chunkCapacity: Int
    static let hugePage = 2 << 20

    init(count: Int, chunkCapacity: Int) {
        self.count = count
        self.chunkCapacity = chunkCapacity
        // One region for all buffers, on a huge-page boundary and advised as such: every chunk
        // is hashed, encrypted or decrypted, and (receiver) pinned for direct IO whole, and 2 MiB
        // pages mean far fewer TLB misses and pages to pin. Advice only; 4 KiB pages work the same.
        let alignment = ChunkBuffer.alignment
        let stride = ChunkBuffer.headerRoom + (chunkCapacity + alignment - 1) / alignment * alignment
        let size = (count * stride + Self.hugePage - 1) / Self.hugePage * Self.hugePage
        region = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: Self.hugePage)
        _ = madvise(region.baseAddress, size, MADV_HUGEPAGE)
        for index in 0..<count {
            free.append(ChunkBuffer(storage: UnsafeMutableRawBufferPointer(rebasing: region[index * stride..<(index + 1) * stride])))
        }
    }

    deinit { region.deallocate() }


    /// A free buffer, or nil once `closed` is set (the connection is going down).
    func take(unless closed: @autoclosure () -> Bool = false) -> ChunkBuffer? {
        condition.lock()
        defer { condition.unlock() }
        while free.isEmpty {
            if closed() { return nil }
            _ = condition.wait(until: Date() + 0.1)  // re-checks `closed` at least every 100 ms
        }
        return free.removeLast()
    }

    func giveBack(_ buffer: ChunkBuffer) {
        condition.lock()
        free.append(ChunkBuffer(storage: buffer.storage))
        condition.signal()
        condition.unlock()
    }
}

/// A bounded FIFO between threads. `close()` wakes everyone: pushes are dropped, pops drain what
/// is left then return nil.
final class BlockingQueue<Element: Sendable>: @unchecked Sendable {
    // @unchecked: all mutable state is guarded by `condition`.
    private let condition = NSCondition()
    private var items: [Element] = []
    private var head = 0
    private var closed = false
    private let capacity: Int

    init(capacity: Int) { self.capacity = max(1, capacity) }

    /// Returns false if the queue is closed (the element was not queued).
    @discardableResult
    func push(_ element: Element) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while items.count - head >= capacity, !closed { condition.wait() }
        guard !closed else { return false }
        items.append(element)
        condition.broadcast()
        return true
    }

    /// Waits for an element; nil when closed and empty.
    func pop() -> Element? {
        condition.lock()
        defer { condition.unlock() }
        while items.count == head, !closed { condition.wait() }
        return takeLocked()
    }

    /// Waits up to `timeout` for an element; nil on timeout or when closed and empty.
    func pop(timeout: TimeInterval) -> Element? {
        let deadline = Date() + timeout
        condition.lock()
        defer { condition.unlock() }
        while items.count == head, !closed {
            if !condition.wait(until: deadline) { break }
        }
        return takeLocked()
    }

    /// An element if one is there now.
    func tryPop() -> Element? {
        condition.lock()
        defer { condition.unlock() }
        return takeLocked()
    }

    private func takeLocked() -> Element? {
        guard head < items.count else { return nil }
        let element = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        }
        condition.broadcast()
        return element
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}

/// Runs `body` on a dedicated thread (not Swift's cooperative pool: the transfer blocks in
/// socket and file calls) and returns its result asynchronously.
func runOnDedicatedThread<T: Sendable>(
    name: String, _ body: @escaping @Sendable () throws(TransferError) -> T
) async throws(TransferError) -> T {
    let result: Result<T, TransferError> = await withCheckedContinuation { continuation in
        let thread = Thread {
            do throws(TransferError) {
                continuation.resume(returning: .success(try body()))
            } catch {
                continuation.resume(returning: .failure(error))
            }
        }
        thread.name = name
        thread.start()
    }
    return try result.get()
}

/// Starts a thread for a pipeline stage.
func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = name
    thread.start()
}
