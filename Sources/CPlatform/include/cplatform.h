#ifndef POCKETLM_CPLATFORM_H
#define POCKETLM_CPLATFORM_H
// Small POSIX shims Swift cannot reach directly (O_DIRECT is a macro hidden behind _GNU_SOURCE).
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

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

/// Reads in flight on one descriptor without a thread per read (Linux native AIO; async_read.c). Opaque.
typedef struct pl_async_reads pl_async_reads;
/// A queue for up to `depth` reads at once, or NULL with errno set (ENOSYS off Linux, or AIO unavailable).
pl_async_reads *pl_async_reads_create(int depth);
void pl_async_reads_destroy(pl_async_reads *reads);
/// Queues `count` (<= depth) vectored reads of `fd`: read i fills `lengths[i]` bytes from `offsets[i]` into
/// iov[first_segment[i] ..< first_segment[i] + segments[i]]. What the kernel refuses to queue is read at once
/// (synchronously). The arrays must stay valid until `pl_async_reads_wait`. Returns 0 or -errno.
int pl_async_reads_submit(pl_async_reads *reads, int fd, int count, const int64_t *offsets, const int64_t *lengths,
                          const struct iovec *iov, const int32_t *first_segment, const int32_t *segments);
/// Blocks until the reads of the last submit are in, finishing short ones synchronously. Returns 0, -errno for a
/// failed read, or -ENODATA when the file ended before a read's length; `failure` then holds the first failed
/// read's offset, length and the bytes it got.
int pl_async_reads_wait(pl_async_reads *reads, int64_t failure[3]);

#endif
