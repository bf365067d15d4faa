import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Makes OpenBLAS use fast kernels on CPUs its build does not recognise.
///
/// Debian's OpenBLAS 0.3.21 does not know recent Xeons and falls back to its Prescott kernels (~3× slower
/// sgemm). It reads OPENBLAS_CORETYPE once, when the library is loaded — before any of our code runs — so only the
/// program can choose, by setting the variable before it starts (the `pocketlm` command re-executes itself with it;
/// an app sets it in its launch environment). A value already in the environment is always respected.
public enum BLASEnvironment {
    public static let variable = "OPENBLAS_CORETYPE"

    /// The core type to ask for on this CPU when the environment names none: SkylakeX on AVX-512 CPUs, Haswell when
    /// POCKETLM_ISA asks for the AVX2 tier (so a forced tier runs BLAS on the same instructions).
    public static func recommendedCoreType() -> String? {
        let tier = (try? KernelISA.requested()).flatMap { $0 } ?? KernelISA.best
        switch tier {
        case .avx512 where pl_isa_supported(Int32(PL_ISA_AVX512)) != 0: return "SkylakeX"
        case .avx2 where pl_isa_supported(Int32(PL_ISA_AVX2)) != 0: return "Haswell"
        default: return nil
        }
    }
}
