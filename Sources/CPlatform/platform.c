#define _GNU_SOURCE
#include "cplatform.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int pl_open_direct(const char *path) {
#ifdef O_DIRECT
    int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
#else
    int fd = open(path, O_RDONLY | O_CLOEXEC);
#endif
    return fd >= 0 ? fd : -errno;
}

int pl_drop_cached(int fd, int64_t offset, int64_t length) {
#ifdef POSIX_FADV_DONTNEED
    return posix_fadvise(fd, (off_t)offset, (off_t)length, POSIX_FADV_DONTNEED);
#else
    (void)fd; (void)offset; (void)length;
    return 0;
#endif
}

int64_t pl_pread_full(int fd, void *buffer, int64_t length, int64_t offset) {
    int64_t done = 0;
    while (done < length) {
        ssize_t n = pread(fd, (char *)buffer + done, (size_t)(length - done), (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (n == 0) break;
        done += n;
    }
    return done;
}

int64_t pl_current_rss(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    long pages = 0, resident = 0;
    int ok = fscanf(f, "%ld %ld", &pages, &resident);
    fclose(f);
    if (ok != 2) return 0;
    return (int64_t)resident * sysconf(_SC_PAGESIZE);
}

int64_t pl_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    long kb = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    }
    fclose(f);
    return (int64_t)kb * 1024;
}
