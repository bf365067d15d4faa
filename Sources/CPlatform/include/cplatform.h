#ifndef POCKETLM_CPLATFORM_H
#define POCKETLM_CPLATFORM_H
// Small POSIX shims Swift cannot reach directly (O_DIRECT is a macro hidden behind _GNU_SOURCE).
#include <stddef.h>
#include <stdint.h>

/// Opens `path` read-only with the page cache bypassed (O_DIRECT). Returns the descriptor, or -errno; when the
/// filesystem refuses direct I/O (EINVAL, e.g. tmpfs) it returns -EINVAL so the caller can fall back.
int pl_open_direct(const char *path);
/// posix_fadvise(POSIX_FADV_DONTNEED) over a range: drops those pages from the page cache. Returns 0 or errno.
int pl_drop_cached(int fd, int64_t offset, int64_t length);
/// Reads exactly `length` bytes at `offset` into `buffer` (retrying short reads and EINTR). Returns the bytes
/// read (less than `length` only at end of file), or -errno.
int64_t pl_pread_full(int fd, void *buffer, int64_t length, int64_t offset);
/// Current resident set size of this process in bytes (from /proc/self/statm), or 0 when unknown.
int64_t pl_current_rss(void);
/// Peak resident set size of this process image in bytes (VmHWM in /proc/self/status), or 0 when unknown.
/// Unlike getrusage's ru_maxrss, which Linux carries across execve (a child started from a large process
/// would report its parent's peak), VmHWM belongs to the address space and starts afresh at exec.
int64_t pl_peak_rss(void);

#endif
