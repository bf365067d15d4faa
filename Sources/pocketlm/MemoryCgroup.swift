import Foundation

/// A cgroup-v1 memory group with a hard limit, for running a benchmark configuration inside the memory its budget
/// promises (page cache counts against the limit, as on a phone): the process is moved in by the shell that execs
/// it, and the group's peak and hit count are read back after it ends.
final class MemoryCgroup {
    static let root = "/sys/fs/cgroup/memory"

    let path: String
    let limit: Int

    /// Why no memory group can be made here, or nil when one can be created and limited.
    static func unavailable() -> String? {
        guard FileManager.default.fileExists(atPath: "\(root)/cgroup.procs") else {
            return "no cgroup-v1 memory controller at \(root)"
        }
        do {
            let probe = try MemoryCgroup(limit: 64 << 20, name: "pocketlm-probe-\(getpid())")
            probe.remove()
            return nil
        } catch {
            return "\(error)"
        }
    }

    init(limit: Int, name: String = "pocketlm-bench-\(getpid())-\(UUID().uuidString.prefix(8))") throws {
        path = "\(Self.root)/\(name)"
        self.limit = limit
        guard mkdir(path, 0o755) == 0 else {
            throw CLIError(description: "cannot create the memory cgroup \(path): \(String(cString: strerror(errno)))")
        }
        guard (try? String(limit).write(toFile: "\(path)/memory.limit_in_bytes", atomically: false, encoding: .utf8)) != nil else {
            rmdir(path)
            throw CLIError(description: "cannot set memory.limit_in_bytes in \(path)")
        }
    }

    /// `/bin/sh` arguments that move the shell into the group and then exec `executable` with `arguments`.
    func wrap(_ executable: String, _ arguments: [String]) -> (executable: String, arguments: [String]) {
        ("/bin/sh", ["-c", "echo $$ > \(path)/cgroup.procs && exec \"$@\"", "sh", executable] + arguments)
    }

    /// The group's peak charge (memory.max_usage_in_bytes), bytes; -1 when unreadable.
    var peakBytes: Int { read("memory.max_usage_in_bytes") }
    /// Times the group hit its limit (the kernel had to reclaim or kill); -1 when unreadable.
    var failCount: Int { read("memory.failcnt") }

    /// Lifts the limit of the group at `path` (a child measuring something outside its budget after its run).
    static func lift(path: String) {
        _ = try? "-1".write(toFile: "\(path)/memory.limit_in_bytes", atomically: false, encoding: .utf8)
    }

    /// Reads a counter of the group at `path`.
    static func read(path: String, _ name: String) -> Int {
        Int(((try? String(contentsOfFile: "\(path)/\(name)", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    private func read(_ name: String) -> Int { Self.read(path: path, name) }

    /// Removes the (empty) group.
    func remove() { rmdir(path) }
}

/// Bytes this process has caused to be read from storage (/proc/self/io read_bytes: O_DIRECT reads and page-cache
/// misses, mapped-file faults included; page-cache hits are not storage reads); 0 where /proc has no io file.
func storageReadBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/io", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("read_bytes:") {
        return Int(line.split(separator: " ").last ?? "") ?? 0
    }
    return 0
}

/// Drops a file's pages from the page cache (clean pages only), so each configuration starts cold: otherwise pages
/// another process left cached, charged to its group, would serve a limited run for free.
func dropFromPageCache(_ path: String) {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return }
    _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
    close(fd)
}
