// Which ISA tier the kernels run: detected once from the CPU (cpuid on x86, hwcaps or sysctl on ARM), lowered for
// the whole process by pl_isa_select (POCKETLM_ISA, through the library) or for one thread by pl_isa_force_thread
// (tests comparing a tier with the portable reference). A tier the CPU lacks is refused, never run.
#include "ckernels.h"
#include <string.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

static unsigned g_features;       // PL_FEATURE_* bits, valid once g_detected
static int g_best = -1;           // best tier of this CPU, -1 until detected
static int g_tier = -1;           // the process's tier (pl_isa_select), -1 until detected
static _Thread_local int t_force = -1;   // per thread, so a test forcing a tier cannot affect other threads

#if defined(__APPLE__)
static int sysctl_flag(const char *name) {
    int v = 0;
    size_t len = sizeof v;
    return sysctlbyname(name, &v, &len, NULL, 0) == 0 && v != 0;
}
#endif

static void detect(void) {
    unsigned f = 0;
    int best = PL_ISA_PORTABLE;
#if defined(__x86_64__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    if (avx512 && __builtin_cpu_supports("avx512vnni")) f |= PL_FEATURE_AVX512_VNNI;
    if (avx2 && __builtin_cpu_supports("avxvnni")) f |= PL_FEATURE_AVX_VNNI;
    if (avx512 && __builtin_cpu_supports("avx512bf16")) f |= PL_FEATURE_AVX512_BF16;
    best = avx512 ? PL_ISA_AVX512 : avx2 ? PL_ISA_AVX2 : PL_ISA_PORTABLE;
#elif defined(__aarch64__)
    best = PL_ISA_NEON;   // Advanced SIMD is mandatory on AArch64
#if defined(__linux__)
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    if (hw & (1UL << 20)) f |= PL_FEATURE_DOTPROD;   // HWCAP_ASIMDDP
    if (hw2 & (1UL << 13)) f |= PL_FEATURE_I8MM;     // HWCAP2_I8MM
#elif defined(__APPLE__)
    if (sysctl_flag("hw.optional.arm.FEAT_DotProd")) f |= PL_FEATURE_DOTPROD;
    if (sysctl_flag("hw.optional.arm.FEAT_I8MM")) f |= PL_FEATURE_I8MM;
#endif
#endif
    g_features = f;
    __atomic_store_n(&g_best, best, __ATOMIC_RELEASE);
    int expected = -1;
    __atomic_compare_exchange_n(&g_tier, &expected, best, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static inline void ensure_detected(void) {
    if (__builtin_expect(__atomic_load_n(&g_best, __ATOMIC_ACQUIRE) < 0, 0)) detect();
}

int pl_isa_best(void) { ensure_detected(); return g_best; }

unsigned pl_isa_features(void) { ensure_detected(); return g_features; }

int pl_isa_supported(int tier) {
    int best = pl_isa_best();
    switch (tier) {
    case PL_ISA_PORTABLE: return 1;
    case PL_ISA_AVX2: return best == PL_ISA_AVX2 || best == PL_ISA_AVX512;
    case PL_ISA_AVX512: return best == PL_ISA_AVX512;
    case PL_ISA_NEON: return best == PL_ISA_NEON;
    default: return 0;
    }
}

int pl_isa_select(int tier) {
    if (!pl_isa_supported(tier)) return -1;
    __atomic_store_n(&g_tier, tier, __ATOMIC_RELEASE);
    return 0;
}

int pl_isa_process(void) {
    ensure_detected();
    return __atomic_load_n(&g_tier, __ATOMIC_ACQUIRE);
}

int pl_isa(void) { return t_force >= 0 ? t_force : pl_isa_process(); }

int pl_isa_force_thread(int tier) {
    if (tier < 0) { t_force = -1; return 0; }
    if (!pl_isa_supported(tier)) return -1;
    t_force = tier;
    return 0;
}

const char *pl_isa_name(int tier) {
    switch (tier) {
    case PL_ISA_PORTABLE: return "portable";
    case PL_ISA_AVX2: return "avx2";
    case PL_ISA_AVX512: return "avx512";
    case PL_ISA_NEON: return "neon";
    default: return "unknown";
    }
}

int pl_isa_from_name(const char *name) {
    static const char *const names[] = {"portable", "avx2", "avx512", "neon"};
    for (int t = 0; t < 4; t++)
        if (strcmp(name, names[t]) == 0) return t;
    return -1;
}

// Kept for the tests and callers written before the tiers: the portable tier on this thread (or back to the
// process's), and whether this thread runs the AVX-512 tier.
void pl_force_portable(int on) { pl_isa_force_thread(on ? PL_ISA_PORTABLE : -1); }
int pl_has_avx512(void) { return pl_isa() == PL_ISA_AVX512; }
