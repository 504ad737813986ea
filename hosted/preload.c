/*
 * libkbuddy-malloc.so: the global allocator under the standard names, for
 * LD_PRELOAD into ordinary Linux programs (or for linking).
 *
 * Initialisation is lazy: the first call of any function sets the hosted
 * hooks up (kbuddy_hosted_init). Calls made while that runs, on the thread
 * running it (pthread functions may allocate), are served from a static
 * bootstrap arena: a bump allocator that never reuses memory. Its pointers
 * are accepted everywhere afterwards: free ignores them, realloc moves them
 * to the heap, malloc_usable_size knows their size. Other threads arriving
 * during initialisation wait for it.
 *
 * KBUDDY_MALLOC_STATS=1 prints one line of statistics to stderr at exit
 * (=/path: appends it to that file), which also shows that the library was
 * in use.
 */
#define _GNU_SOURCE
#include "kbuddy_hosted.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define EXPORT __attribute__((visibility("default")))

/* The standard names this file defines that some libc headers lack. */
void *reallocarray(void *ptr, size_t n, size_t size);
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t align, size_t size);
void *memalign(size_t align, size_t size);
void *valloc(size_t size);
void *pvalloc(size_t size);
size_t malloc_usable_size(void *ptr);
int malloc_trim(size_t pad);
void *kbuddy_preload_bootstrap_alloc(size_t size);

/* ------------------------------------------------------------------------ */
/* Bootstrap arena                                                           */
/* ------------------------------------------------------------------------ */

#define BOOT_BYTES ((size_t)256 * 1024)
#define BOOT_ALIGN ((size_t)32)

static _Alignas(4096) unsigned char g_boot[BOOT_BYTES];
static _Atomic size_t g_boot_used, g_boot_allocs;

static bool is_boot(const void *p) { return (uintptr_t)p - (uintptr_t)g_boot < BOOT_BYTES; }

static size_t boot_size(const void *p) {
    size_t n;
    memcpy(&n, (const unsigned char *)p - sizeof n, sizeof n);
    return n;
}

/* size bytes aligned to align, preceded by their size. Zeroed: the arena
 * is static and never reused. */
static void *boot_alloc(size_t size, size_t align) {
    if (align < BOOT_ALIGN)
        align = BOOT_ALIGN;
    uintptr_t base = (uintptr_t)g_boot;
    size_t used = atomic_load_explicit(&g_boot_used, memory_order_relaxed);
    for (;;) {
        if (align > BOOT_BYTES || size > BOOT_BYTES)
            break;
        uintptr_t p = (base + used + sizeof(size_t) + align - 1) & ~(uintptr_t)(align - 1);
        if (p - base > BOOT_BYTES - size)
            break;
        size_t off = (size_t)(p - base);
        if (atomic_compare_exchange_weak_explicit(&g_boot_used, &used, off + size,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            memcpy(g_boot + off - sizeof size, &size, sizeof size);
            atomic_fetch_add_explicit(&g_boot_allocs, 1, memory_order_relaxed);
            return g_boot + off;
        }
    }
    errno = ENOMEM;
    return NULL;
}

/* For tests: a bootstrap pointer, as calls during initialisation get. */
EXPORT void *kbuddy_preload_bootstrap_alloc(size_t size) { return boot_alloc(size, BOOT_ALIGN); }

/* ------------------------------------------------------------------------ */
/* Initialisation                                                            */
/* ------------------------------------------------------------------------ */

enum { UNINIT, INITIALISING, READY };
static _Atomic int g_state = UNINIT;
static _Thread_local bool tls_initialising __attribute__((tls_model("initial-exec")));

static __attribute__((noinline)) bool init_slow(void) {
    if (tls_initialising)
        return false; /* a call from inside initialisation: bootstrap */
    int expect = UNINIT;
    if (atomic_compare_exchange_strong(&g_state, &expect, INITIALISING)) {
        tls_initialising = true;
        int saved = errno;
        kbuddy_malloc_hooks h;
        kbuddy_hosted_hooks(&h);
        kbuddy_hosted_init(&h);
        errno = saved;
        tls_initialising = false;
        atomic_store_explicit(&g_state, READY, memory_order_release);
        return true;
    }
    while (atomic_load_explicit(&g_state, memory_order_acquire) != READY)
        sched_yield();
    return true;
}

/* True once the allocator can be used by this thread; false while this
 * thread is initialising it. */
static inline bool ready(void) {
    return LIKELY(atomic_load_explicit(&g_state, memory_order_acquire) == READY) || init_slow();
}

/* ------------------------------------------------------------------------ */
/* The standard names                                                        */
/* ------------------------------------------------------------------------ */

EXPORT void *malloc(size_t size) {
    if (UNLIKELY(!ready()))
        return boot_alloc(size, BOOT_ALIGN);
    return kbm_malloc(size);
}

EXPORT void free(void *ptr) {
    if (UNLIKELY(!ptr || is_boot(ptr)))
        return;
    if (LIKELY(ready()))
        kbm_free(ptr);
}

EXPORT void *calloc(size_t n, size_t size) {
    if (UNLIKELY(!ready())) {
        if (size && n > SIZE_MAX / size) {
            errno = ENOMEM;
            return NULL;
        }
        return boot_alloc(n * size, BOOT_ALIGN);
    }
    return kbm_calloc(n, size);
}

EXPORT void *realloc(void *ptr, size_t size) {
    if (UNLIKELY(is_boot(ptr))) {
        if (!size)
            return NULL; /* "freed" */
        void *q = malloc(size);
        if (q) {
            size_t old = boot_size(ptr);
            memcpy(q, ptr, old < size ? old : size);
        }
        return q;
    }
    if (UNLIKELY(!ready()))
        return ptr ? NULL : boot_alloc(size, BOOT_ALIGN);
    return kbm_realloc(ptr, size);
}

EXPORT void *reallocarray(void *ptr, size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(ptr, n * size);
}

EXPORT void *aligned_alloc(size_t align, size_t size) {
    if (UNLIKELY(!ready())) {
        if (!align || (align & (align - 1))) {
            errno = EINVAL;
            return NULL;
        }
        return boot_alloc(size, align);
    }
    return kbm_aligned_alloc(align, size);
}

EXPORT void *memalign(size_t align, size_t size) {
    if (UNLIKELY(!ready())) {
        size_t a = BOOT_ALIGN;
        while (a < align && a <= BOOT_BYTES)
            a <<= 1;
        return boot_alloc(size, a);
    }
    return kbm_memalign(align, size);
}

EXPORT int posix_memalign(void **out, size_t align, size_t size) {
    if (UNLIKELY(!ready())) {
        if (!align || (align & (align - 1)) || align % sizeof(void *))
            return EINVAL;
        int saved = errno;
        void *p = boot_alloc(size, align);
        errno = saved;
        if (!p)
            return ENOMEM;
        *out = p;
        return 0;
    }
    return kbm_posix_memalign(out, align, size);
}

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

EXPORT void *valloc(size_t size) { return memalign(page_size(), size); }

EXPORT void *pvalloc(size_t size) {
    size_t page = page_size();
    if (size > SIZE_MAX - (page - 1)) {
        errno = ENOMEM;
        return NULL;
    }
    size = size ? (size + page - 1) & ~(page - 1) : page;
    return memalign(page, size);
}

EXPORT size_t malloc_usable_size(void *ptr) {
    if (UNLIKELY(is_boot(ptr)))
        return boot_size(ptr);
    return ptr && ready() ? kbm_malloc_usable_size(ptr) : 0;
}

EXPORT void free_sized(void *ptr, size_t size) {
    if (UNLIKELY(!ptr || is_boot(ptr)))
        return;
    if (LIKELY(ready()))
        kbm_free_sized(ptr, size);
}

EXPORT void free_aligned_sized(void *ptr, size_t align, size_t size) {
    if (UNLIKELY(!ptr || is_boot(ptr)))
        return;
    if (LIKELY(ready()))
        kbm_free_aligned_sized(ptr, align, size);
}

/* glibc's: give free memory back to the system (kbuddy_malloc_trim: this
 * thread's cache and the depot, wholly free regions unmapped while `pad`
 * free bytes stay, free pages madvised away). Returns 1 if memory was
 * given back, else 0, as glibc does. */
EXPORT int malloc_trim(size_t pad) {
    return ready() && kbuddy_malloc_trim(pad) > 0;
}

/* ------------------------------------------------------------------------ */
/* glibc's introspection: mallinfo2, mallinfo, malloc_stats, malloc_info,    */
/* mallopt, answered with kbuddy's own figures                               */
/* ------------------------------------------------------------------------ */

/* Without these, programs that ask (python's tracemalloc tools, server
 * status pages) would get glibc's answers for an arena nobody uses: zero.
 * The mapping of kbuddy's statistics onto glibc's fields:
 *   arena     the bytes of every region (grown or added): "non-mmapped space"
 *   uordblks  live blocks' usable bytes in the regions plus the layer's own
 *             structures
 *   hblks, hblkhd   large blocks in mappings of their own: how many, bytes
 *   fordblks  arena - uordblks: free memory, cached blocks, bookkeeping
 *   fsmblks   bytes of free blocks held in the caches (glibc: fastbins)
 *   ordblks   1 while the heap has free memory (the count of free blocks
 *             would need a walk of the heap)
 *   smblks, usmblks, keepcost   0. */
static struct mallinfo2 info_now(void) {
    struct mallinfo2 mi;
    memset(&mi, 0, sizeof mi);
    if (!ready())
        return mi;
    kbuddy_malloc_stats st;
    kbuddy_malloc_get_stats(&st);
    mi.arena = st.region_bytes;
    mi.uordblks = st.live_bytes - st.mapped_bytes + st.internal_bytes;
    mi.hblks = st.mapped_blocks;
    mi.hblkhd = st.mapped_bytes;
    mi.fordblks = mi.arena > mi.uordblks ? mi.arena - mi.uordblks : 0;
    mi.fsmblks = st.cached_bytes;
    mi.ordblks = st.heap.total > st.heap.allocated ? 1 : 0;
    return mi;
}

EXPORT struct mallinfo2 mallinfo2(void) { return info_now(); }

/* The old interface: int fields, which wrap past 2 GiB (as glibc's do). */
EXPORT struct mallinfo mallinfo(void) {
    struct mallinfo2 m2 = info_now();
    struct mallinfo mi;
    memset(&mi, 0, sizeof mi);
    mi.arena = (int)m2.arena;
    mi.ordblks = (int)m2.ordblks;
    mi.hblks = (int)m2.hblks;
    mi.hblkhd = (int)m2.hblkhd;
    mi.fsmblks = (int)m2.fsmblks;
    mi.uordblks = (int)m2.uordblks;
    mi.fordblks = (int)m2.fordblks;
    return mi;
}

static void stats_line(const char *name, size_t v) {
    kbuddy_hosted_puts(name);
    kbuddy_hosted_putu(v);
    kbuddy_hosted_puts("\n");
}

/* glibc's layout, kbuddy's figures, to stderr with write(2): nothing here
 * allocates. */
EXPORT void malloc_stats(void) {
    struct mallinfo2 mi = info_now();
    kbuddy_hosted_set_output(2);
    kbuddy_hosted_puts("Arena 0 (kbuddy):\n");
    stats_line("system bytes     = ", mi.arena);
    stats_line("in use bytes     = ", mi.uordblks);
    kbuddy_hosted_puts("Total (incl. mmap):\n");
    stats_line("system bytes     = ", mi.arena + mi.hblkhd);
    stats_line("in use bytes     = ", mi.uordblks + mi.hblkhd);
    stats_line("max mmap regions = ", mi.hblks); /* now, not the most ever */
    stats_line("max mmap bytes   = ", mi.hblkhd);
}

/* glibc's XML shape (options must be 0, as glibc requires), kbuddy's
 * figures. Returns 0, or -1 with errno EINVAL. */
EXPORT int malloc_info(int options, FILE *fp) {
    if (options != 0 || !fp) {
        errno = EINVAL;
        return -1;
    }
    kbuddy_malloc_stats st;
    memset(&st, 0, sizeof st);
    if (ready())
        kbuddy_malloc_get_stats(&st);
    fprintf(fp, "<malloc version=\"kbuddy-%d.%d\">\n<heap nr=\"0\">\n", KBUDDY_VERSION_MAJOR,
            KBUDDY_VERSION_MINOR);
    fprintf(fp, "<total type=\"live\" count=\"%zu\" size=\"%zu\"/>\n", st.live_blocks,
            st.live_bytes);
    fprintf(fp, "<total type=\"cached\" count=\"%zu\" size=\"%zu\"/>\n", st.cached_blocks,
            st.cached_bytes);
    fprintf(fp, "<total type=\"internal\" count=\"%zu\" size=\"%zu\"/>\n", st.internal_blocks,
            st.internal_bytes);
    fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n</heap>\n", st.region_bytes);
    fprintf(fp, "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n", st.mapped_blocks,
            st.mapped_bytes);
    fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n</malloc>\n",
            st.region_bytes + st.mapped_bytes);
    return 0;
}

/* kbuddy has no tunables behind glibc's parameters (arenas, fastbins, mmap
 * and trim thresholds): every one is ignored, and 0 says so. */
EXPORT int mallopt(int param, int value) {
    (void)param;
    (void)value;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Statistics at exit                                                        */
/* ------------------------------------------------------------------------ */

/* KBUDDY_MALLOC_STATS=1 writes to stderr, =/path appends to that file
 * (some programs, coreutils among them, close stderr before they exit). */
__attribute__((destructor)) static void print_stats(void) {
    const char *s = getenv("KBUDDY_MALLOC_STATS");
    if (!s || !*s || *s == '0' || atomic_load(&g_state) != READY)
        return;
    int fd = 2;
    if (*s == '/' && (fd = open(s, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0)
        return;
    kbuddy_hosted_set_output(fd);
    kbuddy_malloc_stats st;
    kbuddy_malloc_get_stats(&st);
    kbuddy_hosted_puts("kbuddy-malloc: pid ");
    kbuddy_hosted_putu((size_t)getpid());
    kbuddy_hosted_puts(": live ");
    kbuddy_hosted_putu(st.live_blocks);
    kbuddy_hosted_puts(" blocks ");
    kbuddy_hosted_putu(st.live_bytes);
    kbuddy_hosted_puts(" B, cached ");
    kbuddy_hosted_putu(st.cached_blocks);
    kbuddy_hosted_puts(" blocks ");
    kbuddy_hosted_putu(st.cached_bytes);
    kbuddy_hosted_puts(" B, heap ");
    kbuddy_hosted_putu(st.heap.allocated);
    kbuddy_hosted_puts(" of ");
    kbuddy_hosted_putu(st.heap.total);
    kbuddy_hosted_puts(" B in ");
    kbuddy_hosted_putu(st.regions);
    kbuddy_hosted_puts(" regions, mapped ");
    kbuddy_hosted_putu(kbuddy_hosted_mapped());
    kbuddy_hosted_puts(" B, caches ");
    kbuddy_hosted_putu(st.caches);
    kbuddy_hosted_puts(", bootstrap ");
    kbuddy_hosted_putu(atomic_load(&g_boot_allocs));
    kbuddy_hosted_puts(", bad frees ");
    kbuddy_hosted_putu(st.bad_frees);
    kbuddy_hosted_puts("; trades ");
    kbuddy_hosted_putu(st.depot_trades);
    kbuddy_hosted_puts(", fills ");
    kbuddy_hosted_putu(st.core_fills);
    kbuddy_hosted_puts(", drains ");
    kbuddy_hosted_putu(st.core_drains);
    kbuddy_hosted_puts(", large ");
    kbuddy_hosted_putu(st.large_calls);
    kbuddy_hosted_puts("; released ");
    kbuddy_hosted_putu(st.released_bytes);
    kbuddy_hosted_puts(" B, regions returned ");
    kbuddy_hosted_putu(st.regions_returned);
    kbuddy_hosted_puts("\n");
    kbuddy_hosted_set_output(2);
    if (fd != 2)
        close(fd);
}
