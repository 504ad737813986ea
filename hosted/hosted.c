/*
 * The Linux environment of the global allocator (see kbuddy_hosted.h):
 * lock, growth by mmap, large blocks in mmaps of their own, bad-free
 * reports, thread exit, fork handlers.
 */
#define _GNU_SOURCE
#include "kbuddy_hosted.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)
#define MAP_ROUND (2 * MIB)

static _Atomic unsigned g_lockword;
static size_t g_mapped;             /* under the allocator's lock (grow runs under it) */
static size_t g_chunk_min = 64 * MIB;
static bool g_abort_on_bad_free;
static pthread_key_t g_key;
static bool g_key_ok;

/* ------------------------------------------------------------------------ */
/* The lock                                                                  */
/* ------------------------------------------------------------------------ */

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void lock_acquire(void *ctx) {
    _Atomic unsigned *w = ctx;
    for (unsigned spins = 0;; spins++) {
        if (!atomic_load_explicit(w, memory_order_relaxed) &&
            !atomic_exchange_explicit(w, 1u, memory_order_acquire))
            return;
        if (spins < 100)
            cpu_relax();
        else
            sched_yield();
    }
}

static void lock_release(void *ctx) {
    atomic_store_explicit((_Atomic unsigned *)ctx, 0u, memory_order_release);
}

/* ------------------------------------------------------------------------ */
/* Growth                                                                    */
/* ------------------------------------------------------------------------ */

/* The page size and the physical memory, without sysconf: its switch
 * reads a jump table in libc's read-only data, and the first touch of a
 * file page maps the 64 KiB around it (the kernel's fault-around), so the
 * two calls at start-up cost a tiny program about 100 KiB of resident libc
 * pages that glibc's own malloc never touches (measured with
 * /proc/self/smaps of a program that mallocs once: libc's Rss 0.9-1.0 MiB
 * without a sysconf call, 1.0-1.1 MiB with one). */
static size_t page_bytes(void) { return (size_t)getpagesize(); }
static long phys_pages(void) { return get_phys_pages(); }

static bool round_up(size_t *n, size_t to) {
    if (*n > SIZE_MAX - (to - 1))
        return false;
    *n = (*n + to - 1) & ~(to - 1);
    return true;
}

static void *map(size_t n) {
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* A region of at least *n bytes whose last D bytes are one block of the
 * core heap: D a power of two, the mapping D + D / 8 bytes, placed so that
 * its last D bytes are aligned to D. The core heap's blocks are aligned to
 * their size in absolute addresses, so a region of 64 MiB at an address
 * mmap happened to choose holds one free 32 MiB block, or two, or (with its
 * bookkeeping at the head) none that is 64 MiB; whether a program's large
 * blocks fit then depended on where the region fell (suite malloc-large:
 * peak RSS 480-690 MiB from run to run). The first D / 8 bytes hold the
 * bookkeeping of the whole (about 7% of it: the layer's tags and the core's
 * control bytes and bitmaps), the rest of them free blocks below the big
 * one. The mapping is made larger by D and trimmed (untouched: the excess
 * costs address space for a moment, no memory); NULL when that is refused
 * (an address-space limit), and the caller maps plainly. */
static void *map_region(size_t *n) {
    size_t d = MAP_ROUND;
    while (d + d / 8 < *n) {
        if (d > SIZE_MAX / 4)
            return NULL;
        d <<= 1;
    }
    size_t size = d + d / 8;
    unsigned char *p = map(size + d);
    if (!p)
        return NULL;
    /* the first address in the mapping whose offset d / 8 on is aligned */
    size_t head = (size_t)(-((uintptr_t)p + d / 8) & (d - 1));
    if (head)
        munmap(p, head);
    munmap(p + head + size, d - head);
    *n = size;
    return p + head;
}

/* Geometric growth keeps the number of regions logarithmic in the heap's
 * size; if the generous mapping fails, the bare minimum is tried. The
 * mapping reserves no swap (MAP_NORESERVE): a region is about 2.25 times
 * the largest block it must hold (a buddy block needs an aligned place;
 * map_region's regions hold one of their size less an eighth), and only
 * what is touched costs memory. But the core heap clears 1/32 of
 * every region it is given (its control bytes), so a region above four
 * times physical memory is refused: a terabyte request fails with ENOMEM
 * instead of thrashing. errno is left as it was: a successful malloc must
 * not change it. */
static bool grow(size_t min, void **start, size_t *size, void *ctx) {
    (void)ctx;
    long pages = phys_pages(), page = (long)page_bytes();
    if (pages > 0 && page > 0 && min / (size_t)page / 4 > (size_t)pages)
        return false;
    int saved = errno;
    size_t want = g_chunk_min;
    if (want < g_mapped / 2)
        want = g_mapped / 2;
    if (want < min)
        want = min;
    void *p = NULL;
    if (round_up(&want, MAP_ROUND) && !(p = map_region(&want)))
        p = map(want);
    /* Refused (an address-space limit, say): halve down to the minimum, so
     * that the heap takes what is left of the limit in a few regions
     * rather than failing early or in many tiny ones. */
    if (!p && round_up(&min, (size_t)page)) {
        while (!p && want / 2 >= min && want / 2 >= MAP_ROUND)
            p = map(want /= 2);
        if (!p && min < want)
            p = map(want = min);
    }
    errno = saved;
    if (!p)
        return false;
    g_mapped += want;
    *start = p;
    *size = want;
    return true;
}

/* The pages of [start, start + size) are free: their memory goes back,
 * the mapping stays (it reads as zeros when touched again). */
static void release(void *start, size_t size, void *ctx) {
    (void)ctx;
    int saved = errno;
    (void)madvise(start, size, MADV_DONTNEED);
    errno = saved;
}

/* A grown range, or its tail, goes back for good. */
static void ungrow(void *start, size_t size, void *ctx) {
    (void)ctx;
    int saved = errno;
    if (munmap(start, size) == 0)
        g_mapped -= size;
    errno = saved;
}

size_t kbuddy_hosted_mapped(void) { return g_mapped; }

/* ------------------------------------------------------------------------ */
/* Large blocks: a mapping each                                              */
/* ------------------------------------------------------------------------ */

/* Unlike grow's regions these reserve swap as glibc's mmapped chunks do
 * (no MAP_NORESERVE): under the kernel's heuristic overcommit a request no
 * machine could hold fails here, with NULL, and not later with the OOM
 * killer. errno is kept: a successful malloc must not change it, and the
 * layer falls back to the heap when a mapping fails. */
static void *map_large(size_t size, size_t align, void *ctx) {
    (void)ctx;
    int saved = errno;
    size_t page = page_bytes(), extra = align > page ? align - page : 0;
    unsigned char *p = NULL;
    if (size <= SIZE_MAX - extra) {
        p = mmap(NULL, size + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            p = NULL;
    }
    if (p && extra) { /* aligned: cut the pages before and after */
        size_t head = (size_t)(-(uintptr_t)p & (align - 1));
        if (head)
            munmap(p, head);
        if (extra - head)
            munmap(p + head + size, extra - head);
        p += head;
    }
    errno = saved;
    return p;
}

static void unmap_large(void *start, size_t size, void *ctx) {
    (void)ctx;
    int saved = errno;
    munmap(start, size);
    errno = saved;
}

/* mremap: in place when the pages after are free (or when shrinking),
 * else moved by the kernel's page tables, without copying a byte. */
static void *remap_large(void *start, size_t old_size, size_t new_size, void *ctx) {
    (void)ctx;
    int saved = errno;
    void *p = mremap(start, old_size, new_size, MREMAP_MAYMOVE);
    errno = saved;
    return p == MAP_FAILED ? NULL : p;
}

/* ------------------------------------------------------------------------ */
/* Reports                                                                   */
/* ------------------------------------------------------------------------ */

static int g_out = 2;

void kbuddy_hosted_set_output(int fd) { g_out = fd; }

void kbuddy_hosted_puts(const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(g_out, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

void kbuddy_hosted_putu(size_t v) {
    char buf[24];
    char *p = buf + sizeof buf - 1;
    *p = '\0';
    do
        *--p = (char)('0' + v % 10);
    while (v /= 10);
    kbuddy_hosted_puts(p);
}

void kbuddy_hosted_putp(const void *ptr) {
    char buf[2 + 2 * sizeof(uintptr_t) + 1];
    uintptr_t v = (uintptr_t)ptr;
    char *p = buf + sizeof buf - 1;
    *p = '\0';
    do
        *--p = "0123456789abcdef"[v & 15u];
    while (v >>= 4);
    *--p = 'x';
    *--p = '0';
    kbuddy_hosted_puts(p);
}

static void report_bad_free(void *ptr, kbuddy_status st, const char *func) {
    int saved = errno;
    kbuddy_hosted_puts("kbuddy-malloc: ");
    kbuddy_hosted_puts(func);
    kbuddy_hosted_puts("(");
    kbuddy_hosted_putp(ptr);
    kbuddy_hosted_puts("): ");
    kbuddy_hosted_puts(kbuddy_strerror(st));
    kbuddy_hosted_puts(g_abort_on_bad_free ? "; aborting\n" : "; ignored\n");
    errno = saved;
    if (g_abort_on_bad_free)
        abort();
}

/* ------------------------------------------------------------------------ */
/* Threads and setup                                                         */
/* ------------------------------------------------------------------------ */

static void thread_ends(void *value) {
    (void)value;
    kbuddy_malloc_thread_exit();
}

static void thread_cache_created(void) {
    if (g_key_ok)
        (void)pthread_setspecific(g_key, (void *)1);
}

void kbuddy_hosted_hooks(kbuddy_malloc_hooks *h) {
    memset(h, 0, sizeof *h);
    h->lock = (kbuddy_lock){lock_acquire, lock_release, &g_lockword};
    h->grow = grow;
    h->grow_zeroed = true;
    h->map = map_large;
    h->unmap = unmap_large;
    h->remap = remap_large;
    h->map_zeroed = true;
    h->release = release;
    h->release_page = page_bytes();
    h->ungrow = ungrow;
    h->bad_free = report_bad_free;
    h->thread_cache_created = thread_cache_created;
}

static void read_env(void) {
    const char *s = getenv("KBUDDY_MALLOC_CHUNK_KB");
    if (s && *s) {
        size_t kb = 0;
        for (; *s >= '0' && *s <= '9' && kb < SIZE_MAX / 10240; s++)
            kb = kb * 10 + (size_t)(*s - '0');
        if (kb)
            g_chunk_min = kb * 1024;
    }
    s = getenv("KBUDDY_MALLOC_ABORT");
    g_abort_on_bad_free = s && *s == '1';
}

void kbuddy_hosted_init(const kbuddy_malloc_hooks *h) {
    kbuddy_malloc_hooks mine = *h;
    if (!mine.lock.acquire || !mine.lock.release) /* this lock yields; the default spins */
        mine.lock = (kbuddy_lock){lock_acquire, lock_release, &g_lockword};
    read_env();
    kbuddy_malloc_set_hooks(&mine);
    g_key_ok = pthread_key_create(&g_key, thread_ends) == 0;
    /* fork: the forking thread holds the lock across it, so that nothing
     * done under the lock is half done in the child (growth runs under it
     * too); in the child, kbuddy_malloc_fork_child frees the caches of the
     * threads that were not copied and takes back the blocks they were
     * moving, then releases the lock (malloc/kbm_fork.h). */
    (void)pthread_atfork(kbuddy_malloc_fork_prepare, kbuddy_malloc_fork_parent, kbuddy_malloc_fork_child);
}
