// The two-thread pass of the streaming benchmarks (bench_head.c, bench_avx2_decode.c): the caller runs half 0 and a
// spinning worker half 1 of a pass; a pass's time is the slower half's wall time, or 0 when either thread lost its
// core during it (thread CPU time < 97% of its wall time), so a shared machine gives fewer passes, not wrong ones.
#ifndef POCKETLM_BENCH_TWO_THREADS_H
#define POCKETLM_BENCH_TWO_THREADS_H
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

static double bench_wall(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static double bench_cpu(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

typedef void (*bench_half_fn)(int thread);
static bench_half_fn bench_half;
static atomic_int bench_go, bench_done;
static double bench_thread_wall[2], bench_thread_cpu[2];
static pthread_t bench_thread;

static void bench_run_half(int t) {
    double w0 = bench_wall(), c0 = bench_cpu();
    bench_half(t);
    bench_thread_wall[t] = bench_wall() - w0;
    bench_thread_cpu[t] = bench_cpu() - c0;
}
static void *bench_worker(void *arg) {
    (void)arg;
    for (int seen = 0;;) {
        while (atomic_load(&bench_go) == seen) __builtin_ia32_pause();
        if ((seen = atomic_load(&bench_go)) < 0) return NULL;
        bench_run_half(1);
        atomic_fetch_add(&bench_done, 1);
    }
}
static void bench_start(void) { pthread_create(&bench_thread, NULL, bench_worker, NULL); }
static void bench_stop(void) { atomic_store(&bench_go, -1); pthread_join(bench_thread, NULL); }
// One pass on both threads; its wall time, or 0 when either thread was preempted.
static double bench_pass(bench_half_fn f) {
    bench_half = f;
    atomic_store(&bench_done, 0);
    atomic_fetch_add(&bench_go, 1);
    bench_run_half(0);
    while (atomic_load(&bench_done) == 0) __builtin_ia32_pause();
    for (int t = 0; t < 2; t++) if (bench_thread_cpu[t] < 0.97 * bench_thread_wall[t]) return 0;
    return bench_thread_wall[0] > bench_thread_wall[1] ? bench_thread_wall[0] : bench_thread_wall[1];
}
static int bench_by_value(const void *a, const void *b) {
    double x = *(const double *)a, z = *(const double *)b;
    return x < z ? -1 : x > z;
}
#endif
