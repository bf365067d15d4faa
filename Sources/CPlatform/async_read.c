#define _GNU_SOURCE
#include "cplatform.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/uio.h>
#ifdef __linux__
#include <linux/aio_abi.h>
#include <sys/syscall.h>
#endif

// Linux native AIO on an O_DIRECT descriptor: one io_submit queues every read of a step and the storage serves
// them together, with no reader thread to wake per read (on a 2-core machine those wake-ups and the threads'
// time slices compete with the compute threads for the cores). One vectored request (IOCB_CMD_PREADV) per
// contiguous file range.

struct pl_async_reads {
#ifdef __linux__
    aio_context_t context;
    struct iocb *iocbs;
    struct iocb **pointers;
    struct io_event *events;
    int64_t *results;
#endif
    int depth;
    // The last submit: its requests (valid until wait), how many were queued and how many were read at once.
    int fd, count, queued;
    const int64_t *offsets, *lengths;
    const struct iovec *iov;
    const int32_t *first_segment, *segments;
};

pl_async_reads *pl_async_reads_create(int depth) {
#ifdef __linux__
    if (depth < 1) { errno = EINVAL; return NULL; }
    pl_async_reads *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->depth = depth;
    a->iocbs = calloc((size_t)depth, sizeof *a->iocbs);
    a->pointers = calloc((size_t)depth, sizeof *a->pointers);
    a->events = calloc((size_t)depth, sizeof *a->events);
    a->results = calloc((size_t)depth, sizeof *a->results);
    errno = 0;
    if (!a->iocbs || !a->pointers || !a->events || !a->results || syscall(SYS_io_setup, depth, &a->context) != 0) {
        int e = errno ? errno : ENOMEM;
        free(a->iocbs); free(a->pointers); free(a->events); free(a->results); free(a);
        errno = e;
        return NULL;
    }
    return a;
#else
    (void)depth;
    errno = ENOSYS;
    return NULL;
#endif
}

void pl_async_reads_destroy(pl_async_reads *a) {
    if (!a) return;
#ifdef __linux__
    if (a->queued > 0) {
        int64_t ignored[3];
        pl_async_reads_wait(a, ignored);
    }
    syscall(SYS_io_destroy, a->context);
    free(a->iocbs); free(a->pointers); free(a->events); free(a->results);
#endif
    free(a);
}

// Reads what is left of request i after `done` bytes, synchronously (a short asynchronous read, or one the kernel
// would not queue). Returns the bytes read in all, or -errno.
static int64_t finish_read(pl_async_reads *a, int i, int64_t done) {
    const struct iovec *v = a->iov + a->first_segment[i];
    int n = a->segments[i];
    struct iovec local[512];
    if (n > 512) return -EINVAL;
    while (done < a->lengths[i]) {
        // The rest of the vector after `done` bytes.
        int64_t skip = done;
        int s = 0;
        while (s < n && skip >= (int64_t)v[s].iov_len) { skip -= (int64_t)v[s].iov_len; s++; }
        int m = 0;
        for (; s < n; s++, m++) {
            local[m].iov_base = (char *)v[s].iov_base + skip;
            local[m].iov_len = v[s].iov_len - (size_t)skip;
            skip = 0;
        }
        ssize_t r = preadv(a->fd, local, m, (off_t)(a->offsets[i] + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) break;
        done += r;
    }
    return done;
}

int pl_async_reads_submit(pl_async_reads *a, int fd, int count, const int64_t *offsets, const int64_t *lengths,
                          const struct iovec *iov, const int32_t *first_segment, const int32_t *segments) {
    if (count < 0 || count > a->depth || a->queued > 0) return -EINVAL;
    a->fd = fd; a->count = count; a->queued = 0;
    a->offsets = offsets; a->lengths = lengths; a->iov = iov; a->first_segment = first_segment; a->segments = segments;
#ifdef __linux__
    for (int i = 0; i < count; i++) {
        struct iocb *cb = &a->iocbs[i];
        memset(cb, 0, sizeof *cb);
        cb->aio_data = (uint64_t)i;
        cb->aio_lio_opcode = IOCB_CMD_PREADV;
        cb->aio_fildes = (uint32_t)fd;
        cb->aio_buf = (uint64_t)(uintptr_t)(iov + first_segment[i]);
        cb->aio_nbytes = (uint64_t)segments[i];
        cb->aio_offset = offsets[i];
        a->pointers[i] = cb;
        a->results[i] = 0;
    }
    while (a->queued < count) {
        long n = syscall(SYS_io_submit, a->context, (long)(count - a->queued), a->pointers + a->queued);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;   // refused (EAGAIN: queue full, or the kernel's AIO limit): the rest is read below
        a->queued += (int)n;
    }
    for (int i = a->queued; i < count; i++) a->results[i] = finish_read(a, i, 0);
    return 0;
#else
    return -ENOSYS;
#endif
}

int pl_async_reads_wait(pl_async_reads *a, int64_t failure[3]) {
#ifdef __linux__
    int got = 0;
    while (got < a->queued) {
        long n = syscall(SYS_io_getevents, a->context, (long)(a->queued - got), (long)(a->queued - got), a->events, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        for (long e = 0; e < n; e++) a->results[a->events[e].data] = a->events[e].res;
        got += (int)n;
    }
    a->queued = 0;
    int status = 0;
    for (int i = 0; i < a->count; i++) {
        int64_t r = a->results[i];
        if (r >= 0 && r < a->lengths[i]) r = finish_read(a, i, r);
        if (status == 0 && (r < 0 || r < a->lengths[i])) {
            failure[0] = a->offsets[i];
            failure[1] = a->lengths[i];
            failure[2] = r < 0 ? 0 : r;
            status = r < 0 ? (int)r : -ENODATA;
        }
    }
    a->count = 0;
    return status;
#else
    (void)a; (void)failure;
    return -ENOSYS;
#endif
}
