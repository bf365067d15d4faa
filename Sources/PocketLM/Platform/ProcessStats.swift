#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

import CPlatform

/// Facts about this process that benchmarks report.
public enum ProcessStats {
    /// Resident set size now, in bytes (0 where /proc is missing).
    public static func currentResidentBytes() -> Int { Int(pl_current_rss()) }

    /// Peak resident set size in bytes: VmHWM on Linux, else getrusage's ru_maxrss (bytes on Darwin).
    public static func peakResidentBytes() -> Int {
        // VmHWM where /proc has it: ru_maxrss survives execve on Linux, so a process started from a big parent
        // (a test runner) would report the parent's peak.
        let hwm = Int(pl_peak_rss())
        if hwm > 0 { return hwm }
        var usage = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        #else
        getrusage(RUSAGE_SELF, &usage)
        #endif
        #if os(Linux)
        return Int(usage.ru_maxrss) * 1024
        #else
        return Int(usage.ru_maxrss)
        #endif
    }
}
