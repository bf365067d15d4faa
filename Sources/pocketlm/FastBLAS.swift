import PocketLM
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The command's part of `BLASEnvironment`: OpenBLAS reads OPENBLAS_CORETYPE only when it is loaded, so the command
/// sets it and re-executes itself (an app embedding the library sets it in its own launch environment instead).
enum FastBLAS {
    /// Re-executes the current program with OPENBLAS_CORETYPE set when it is unset and this CPU benefits.
    /// Returns only when no re-execution was needed (or it failed, in which case the slow kernels still work).
    static func reexecIfNeeded() {
        guard getenv(BLASEnvironment.variable) == nil, let core = BLASEnvironment.recommendedCoreType() else { return }
        setenv(BLASEnvironment.variable, core, 1)
        #if os(Linux)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        #endif
        // execv returned: carry on with whatever kernels OpenBLAS chose.
    }
}
