/*
 * The hosted (Linux) environment of the global allocator: the hooks that
 * kbuddy_malloc needs from an operating system, for the LD_PRELOAD library
 * (preload.c) and for in-process tests. Not installed; not for kernels.
 *
 *   lock                  a test-and-test-and-set lock that yields the CPU
 *                         (sched_yield) after a short spin, so that threads
 *                         outnumbering CPUs do not spin out a time slice
 *                         behind a preempted holder;
 *   grow                  mmap (MAP_NORESERVE) of max(64 MiB, half of what
 *                         is mapped already, what the request needs),
 *                         rounded up to D + D/8 bytes (D a power of two;
 *                         untouched pages cost nothing) placed so that its
 *                         last D bytes are aligned to D: one block of the
 *                         core heap, wherever mmap puts it; halved down to
 *                         what the request needs, unaligned, when the
 *                         system refuses; never more than 4x physical
 *                         memory;
 *   map, unmap, remap     large blocks (above KBUDDY_MALLOC_MAP_THRESHOLD,
 *                         1 MiB, raised by frees up to 32 MiB as glibc's
 *                         is) in an mmap each (aligned by trimming a
 *                         larger one), munmap at free, mremap for realloc;
 *                         map_zeroed: calloc clears none of them;
 *   release               madvise(MADV_DONTNEED): free pages go back, the
 *                         mapping stays;
 *   ungrow                munmap of a grown range (or its tail) that is
 *                         free or could not be used;
 *   bad_free              one line on stderr (write(2), no stdio), then keep
 *                         running, or abort() if KBUDDY_MALLOC_ABORT=1;
 *   thread_cache_created  sets a pthread key whose destructor runs
 *                         kbuddy_malloc_thread_exit when the thread ends.
 * kbuddy_hosted_init also registers the layer's fork handlers
 * (kbuddy_malloc_fork_prepare, _parent, _child) with pthread_atfork: the
 * lock is held across fork, and the child's copy of the heap is made whole
 * again (the caches of the threads fork did not copy go back).
 *
 * Environment: KBUDDY_MALLOC_CHUNK_KB (the minimum mapping, default 65536),
 * KBUDDY_MALLOC_ABORT (1: abort on a bad free).
 */
#ifndef KBUDDY_HOSTED_H
#define KBUDDY_HOSTED_H

#include "kbuddy_malloc.h"

/* Fill *h with the hosted hooks (callers may change some before init). */
void kbuddy_hosted_hooks(kbuddy_malloc_hooks *h);

/* Install *h (kbuddy_malloc_set_hooks), create the thread-exit key and
 * register the fork handlers. Once per process, before other threads use
 * the allocator. May allocate (pthread functions), which must then be
 * served somehow: the preload library serves it from its bootstrap arena. */
void kbuddy_hosted_init(const kbuddy_malloc_hooks *h);

/* Bytes mapped by grow and not yet given back by ungrow. */
size_t kbuddy_hosted_mapped(void);

/* Write without stdio or allocation, to stderr (or the file descriptor
 * given to kbuddy_hosted_set_output): a string, an unsigned number in
 * decimal, a pointer in hex. */
void kbuddy_hosted_set_output(int fd);
void kbuddy_hosted_puts(const char *s);
void kbuddy_hosted_putu(size_t v);
void kbuddy_hosted_putp(const void *p);

#endif /* KBUDDY_HOSTED_H */
