import CPlatform
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads ranges of one file into memory from a pool of reader threads, with the page cache bypassed
/// (O_DIRECT; where the filesystem refuses it, each range is dropped from the page cache after it is read),
/// so every byte a benchmark counts really comes from storage.
///
/// A `ReadBatch` collects the ranges of one step (one layer's missing groups); `submit` hands them to the
/// readers, which run up to `threads` reads at once, and `wait` blocks until all are in, then reports the
/// first error. Destinations and offsets must be multiples of `FlashLayout.ioAlignment` for direct I/O.
public final class DirectReader: @unchecked Sendable {
    public let path: String
    /// Whether the page cache is bypassed by O_DIRECT (else by dropping pages after each read).
    public let direct: Bool
    public let threads: Int
    private let fd: Int32
    private let queueLock = NSCondition()
    private var queue: [(batch: ReadBatch, index: Int)] = []
    private var queueHead = 0
    private var stopping = false
    private var workers: [Thread] = []

    public init(path: String, threads: Int) throws(PagingError) {
        self.path = path
        self.threads = max(1, threads)
        (fd, direct) = try DirectReader.open(path)
        queue.reserveCapacity(4096)
        // Counted before they start, so `shutdown` waits for threads that have not run yet too.
        running = self.threads
        for i in 0..<self.threads {
            let t = Thread { [unowned self] in self.work() }
            t.name = "pocketlm-io-\(i)"
            t.stackSize = 256 * 1024
            workers.append(t)
            t.start()
        }
    }

    /// Stops the readers (after the reads already queued) and closes the file.
    public func shutdown() {
        queueLock.lock()
        stopping = true
        queueLock.broadcast()
        queueLock.unlock()
        while true {
            queueLock.lock()
            let busy = running
            queueLock.unlock()
            if busy == 0 { break }
            usleep(200)
        }
        close(fd)
    }

    private var running = 0
    /// Reads submitted and not yet finished, since when there have been any, and the time with any before that:
    /// how much of a run the storage had work from this reader (`busySeconds`).
    private var outstanding = 0
    private var busySince: UInt64 = 0
    private var busyNanos: UInt64 = 0

    /// Seconds since the reader started during which at least one read was queued or running (the span open now
    /// included). Against a run's duration: the share of it the storage was given work; bytes read over it: the
    /// rate reads ran at while there were any, which a storage probe's figure can be held against.
    public var busySeconds: Double {
        queueLock.lock()
        defer { queueLock.unlock() }
        let open = outstanding > 0 ? DispatchTime.now().uptimeNanoseconds - busySince : 0
        return Double(busyNanos + open) / 1e9
    }

    /// Queues every range of `batch`; returns at once.
    public func submit(_ batch: ReadBatch) {
        batch.lock.lock()
        batch.pending = batch.count
        batch.error = nil
        batch.lock.unlock()
        guard batch.count > 0 else { return }
        queueLock.lock()
        if outstanding == 0 { busySince = DispatchTime.now().uptimeNanoseconds }
        outstanding += batch.count
        if queueHead > 0, queueHead == queue.count {
            queue.removeAll(keepingCapacity: true)
            queueHead = 0
        }
        // One wake-up per read: a broadcast would wake every idle reader to fight over the lock.
        for i in 0..<batch.count {
            queue.append((batch, i))
            queueLock.signal()
        }
        queueLock.unlock()
    }

    /// Opens `path` for reading with the page cache bypassed: O_DIRECT, or a plain descriptor (`direct` false)
    /// where the filesystem refuses it, whose reads the caller then drops from the cache.
    static func open(_ path: String) throws(PagingError) -> (fd: Int32, direct: Bool) {
        var fd = pl_open_direct(path)
        var direct = true
        if fd == -EINVAL {
            fd = posixOpen(path)
            direct = false
            if fd < 0 { fd = -errno }
        }
        guard fd >= 0 else { throw .readFailed(path: path, offset: 0, message: String(cString: strerror(-fd))) }
        return (fd, direct)
    }

    private func work() {
        while true {
            queueLock.lock()
            while queueHead == queue.count && !stopping { queueLock.wait() }
            if queueHead == queue.count && stopping {
                running -= 1
                queueLock.unlock()
                return
            }
            let (batch, index) = queue[queueHead]
            queue[queueHead] = (ReadBatch.placeholder, 0)
            queueHead += 1
            queueLock.unlock()

            let r = batch.ranges[index]
            var failure: PagingError?
            do {
                try read(offset: r.offset, length: r.length, iov: batch.iov + r.firstSegment, segments: r.segments)
            } catch {
                failure = error
            }
            queueLock.lock()
            outstanding -= 1
            if outstanding == 0 { busyNanos += DispatchTime.now().uptimeNanoseconds - busySince }
            queueLock.unlock()
            batch.lock.lock()
            if let failure, batch.error == nil { batch.error = failure }
            batch.pending -= 1
            if batch.pending == 0 { batch.lock.broadcast() }
            batch.lock.unlock()
        }
    }

    /// One vectored read of a contiguous file range into several buffers; short reads are resumed, and a read
    /// that ends early (the file is shorter than its header says) is an error, never silent zeros.
    private func read(offset: Int, length: Int, iov: UnsafeMutablePointer<iovec>, segments: Int) throws(PagingError) {
        var done = 0
        var seg = 0, inSeg = 0
        while done < length {
            let n: Int
            if seg == 0 && inSeg == 0 {
                n = preadv(fd, iov, Int32(segments), off_t(offset))
            } else {
                // Resuming after a short read: the rest of the vector, the first segment partly filled.
                var local: [iovec] = []
                for s in seg..<segments {
                    let skip = s == seg ? inSeg : 0
                    local.append(iovec(iov_base: iov[s].iov_base! + skip, iov_len: iov[s].iov_len - skip))
                }
                n = local.withUnsafeBufferPointer { preadv(fd, $0.baseAddress, Int32($0.count), off_t(offset + done)) }
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw .readFailed(path: path, offset: offset + done, message: String(cString: strerror(errno)))
            }
            if n == 0 { throw .shortRead(path: path, offset: offset, expected: length, got: done) }
            done += n
            var left = n
            while left > 0 {
                let room = iov[seg].iov_len - inSeg
                if left >= room { left -= room; seg += 1; inSeg = 0 } else { inSeg += left; left = 0 }
            }
        }
        if !direct { _ = pl_drop_cached(fd, Int64(offset), Int64(length)) }
    }
}

/// The reads of one step: contiguous file ranges, each scattered into one or more aligned buffers.
/// Preallocated and reused token after token, so planning reads allocates nothing.
public final class ReadBatch: @unchecked Sendable {
    struct Range { var offset: Int; var length: Int; var firstSegment: Int; var segments: Int }
    static let placeholder = ReadBatch(maxSegments: 0)

    let lock = NSCondition()
    var pending = 0
    var error: PagingError?
    var ranges: [Range] = []
    let iov: UnsafeMutablePointer<iovec>
    let maxSegments: Int
    private(set) var segmentCount = 0
    public private(set) var bytes = 0

    public init(maxSegments: Int) {
        self.maxSegments = maxSegments
        iov = .allocate(capacity: max(1, maxSegments))
        ranges.reserveCapacity(max(1, maxSegments))
    }

    deinit { iov.deallocate() }

    public var count: Int { ranges.count }

    public func reset() {
        ranges.removeAll(keepingCapacity: true)
        segmentCount = 0
        bytes = 0
    }

    /// Adds `length` bytes at `offset` going to `dest`; joins the previous range when the file bytes follow on
    /// and the range stays within `maxRead`.
    public func add(offset: Int, length: Int, into dest: UnsafeMutableRawPointer, maxRead: Int) {
        precondition(segmentCount < maxSegments, "ReadBatch overflow")
        iov[segmentCount] = iovec(iov_base: dest, iov_len: length)
        if var last = ranges.last, last.offset + last.length == offset, last.length + length <= maxRead, last.segments < 512 {
            last.length += length
            last.segments += 1
            ranges[ranges.count - 1] = last
        } else {
            ranges.append(Range(offset: offset, length: length, firstSegment: segmentCount, segments: 1))
        }
        segmentCount += 1
        bytes += length
    }

    /// Blocks until every range is read; throws the first read error.
    public func wait() throws(PagingError) {
        lock.lock()
        while pending > 0 { lock.wait() }
        let e = error
        lock.unlock()
        if let e { throw e }
    }
}

extension DirectReader {
    /// The storage reference: one reader, 1 MiB direct reads straight through the first `bytes` of the file.
    public static func sequentialThroughput(path: String, bytes: Int) throws(PagingError) -> (bytesPerSecond: Double, direct: Bool) {
        let chunk = 1 << 20
        let (fd, direct) = try DirectReader.open(path)
        defer { close(fd) }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: FlashLayout.ioAlignment)
        defer { buffer.deallocate() }
        let total = bytes / chunk * chunk
        if !direct { _ = pl_drop_cached(fd, 0, Int64(total)) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        var offset = 0
        while offset < total {
            let n = pl_pread_full(fd, buffer, Int64(chunk), Int64(offset))
            guard n == Int64(chunk) else {
                if n < 0 { throw .readFailed(path: path, offset: offset, message: String(cString: strerror(Int32(-n)))) }
                throw .shortRead(path: path, offset: offset, expected: chunk, got: Int(n))
            }
            offset += chunk
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        if !direct { _ = pl_drop_cached(fd, 0, Int64(total)) }
        return (Double(total) / max(seconds, 1e-9), direct)
    }
}

/// `open(2)` read-only, reachable from inside a type that has its own `open`.
private func posixOpen(_ path: String) -> Int32 { open(path, O_RDONLY) }
