/*
 * The global allocator: one kbuddy heap for the whole system, the malloc
 * family on it, and per-CPU magazine caches in front of it. The design is
 * told in include/kbuddy_malloc.h. Freestanding C11: the core heap,
 * <stdatomic.h>, memcpy and memset, nothing else.
 *
 * One translation unit in parts, so that the fast paths inline across
 * them (included in this order, each needing the ones before):
 *   kbm_classes.h    size classes, their natural alignment, magazine sizes
 *   kbm_tags.h       regions' tag tables: the state byte of every block
 *   kbm_magazines.h  magazines, the depot, per-CPU caches, the core calls
 *                    behind them
 *   kbm_slab.h       slabs: objects of the sub-unit classes (Linux build)
 *   kbm_regions.h    regions and growth, the out-of-memory handler, hooks
 *   kbm_large.h      large blocks in mappings of their own (map hooks)
 *   kbm_fork.h       the fork handlers: the child's copy made whole again
 *   this file        the malloc family: allocation, free (every bad free
 *                    refused), large blocks, realloc, statistics, check
 *
 * Invariants
 *   - Every block is a core allocation of the global heap, but for large
 *     blocks in mappings of their own, which only the registry of
 *     kbm_large.h knows (they lie outside every region), and for the
 *     objects of slab classes (kbm_slab.h), carved from slabs that are core
 *     allocations. A small block of class c is exactly class_bytes(c),
 *     aligned to class_align(c), so the core heap's usable size is the
 *     class size.
 *   - tag(u) != 0 iff unit u starts a block the layer handed out, or lies
 *     in a slab (whose units' tags are its objects' states): LIVE|c
 *     (the program holds it; c = class, or TAG_LARGE), or CACHED|c (it sits
 *     in a magazine, per-CPU or in the depot). The layer's own structures
 *     (magazines, caches) carry no tag, so free refuses them. A block goes
 *     back to the core only after its tag is cleared.
 *   - Only free changes LIVE to anything else, and it does so with a
 *     compare-and-swap, so a pointer is freed at most once however many
 *     CPUs race to free it. CACHED becomes LIVE only at the hands of the CPU
 *     whose magazine holds the block (of the call that claimed its cache).
 *   - The only tag changes made without the lock are a cached CPU's LIVE ->
 *     CACHED (free) and CACHED -> LIVE (malloc): the child of a fork can
 *     undo them half done (kbm_fork.h). Every other change (a large block
 *     claimed, a block freed by a CPU without a cache) is made under the
 *     lock, which the fork handlers hold.
 */
#include "kbuddy_malloc.h"

#include <stdatomic.h>

#if defined(KBUDDY_MALLOC_ERRNO) && KBUDDY_MALLOC_ERRNO
#include <errno.h>
#define SET_ERRNO(e) (errno = (e))
#define KBM_ENOMEM ENOMEM
#define KBM_EINVAL EINVAL
#else
#define SET_ERRNO(e) ((void)0)
#define KBM_ENOMEM 12 /* the POSIX values, for posix_memalign's result */
#define KBM_EINVAL 22
#endif

#ifndef KBUDDY_MALLOC_TLS
#define KBUDDY_MALLOC_TLS 0
#endif

/* KBUDDY_MALLOC_BYTE_TAGS (internal; tests set it to 0 to cover the
 * packed tags on x86): one atomic byte per tag, default where native. */
#if defined(KBUDDY_MALLOC_BYTE_TAGS)
#define BYTE_TAGS KBUDDY_MALLOC_BYTE_TAGS
#elif ATOMIC_CHAR_LOCK_FREE == 2 && (defined(__x86_64__) || defined(__i386__) || defined(__aarch64__))
#define BYTE_TAGS 1
#else
#define BYTE_TAGS 0
#endif

/* Freestanding: declared here rather than taken from <string.h>. */
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memset(void *dst, int c, size_t n);

#if defined(__GNUC__) || defined(__clang__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline))
#define ALWAYS_INLINE inline __attribute__((always_inline))
#define TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#define NOINLINE
#define ALWAYS_INLINE inline
#define TLS_MODEL
#endif

#define UNIT_SHIFT KBUDDY_MIN_BLOCK_SHIFT
#define UNIT ((size_t)KBUDDY_MIN_BLOCK)

/* The layer's own structures (per-CPU caches, magazines) are written by one
 * CPU each; they start and end on cache-line boundaries, so that no two
 * CPUs' structures share a line. */
#ifndef KBUDDY_MALLOC_CACHE_LINE
#define KBUDDY_MALLOC_CACHE_LINE 64
#endif
#define LINE ((size_t)KBUDDY_MALLOC_CACHE_LINE)

/* ------------------------------------------------------------------------ */
/* State and small helpers                                                  */
/* ------------------------------------------------------------------------ */

static kbuddy_heap g_heap = KBUDDY_HEAP_INIT;
static kbuddy_malloc_hooks g_hooks;
static kbuddy_spinlock g_spin = KBUDDY_SPINLOCK_INIT;
static kbuddy_lock g_lock = {kbuddy_spinlock_acquire, kbuddy_spinlock_release, &g_spin};
static _Atomic size_t g_bad_frees;
static bool g_hooked; /* cpu_id, irq_save or irq_restore installed */

static bool is_pow2(size_t x) { return x && !(x & (x - 1)); }

static void lock(void) { g_lock.acquire(g_lock.ctx); }
static void unlock(void) { g_lock.release(g_lock.ctx); }

/* STATIC_HOOKS: the kernel's compile-time hooks (kbuddy_malloc.h), inlined
 * into every path; the fast paths then always take them. */
#if defined(KBUDDY_MALLOC_CPU_ID) && !KBUDDY_MALLOC_TLS
#define STATIC_HOOKS 1
#ifndef KBUDDY_MALLOC_IRQ_SAVE
#define KBUDDY_MALLOC_IRQ_SAVE() 0ul
#endif
#ifndef KBUDDY_MALLOC_IRQ_RESTORE
#define KBUDDY_MALLOC_IRQ_RESTORE(s) ((void)(s))
#endif
#else
#define STATIC_HOOKS 0
#endif

/* RUNTIME_HOOKS: the cpu_id and interrupt hooks are function pointers,
 * perhaps installed: the fast paths exist in two copies. The hooked one
 * masks interrupts around itself, as every call does, unless the kernel
 * set cpu_id_unmasked: it then claims the CPU's cache instead
 * (kbm_magazines.h), so that it makes one indirect call, to cpu_id, and
 * masks interrupts only on its way to the lock. */
#define RUNTIME_HOOKS (!KBUDDY_MALLOC_TLS && !STATIC_HOOKS)
#if RUNTIME_HOOKS
static unsigned cpu_zero(void) { return 0; }
/* g_hooks.cpu_id, or CPU 0: the fast paths call it without a test. */
static unsigned (*g_cpu_id)(void) = cpu_zero;
/* The hooked fast paths (the masking copies, or with cpu_id_unmasked set
 * the claiming ones), chosen when the hooks are set (hooked_paths_choose):
 * a call that comes in tests g_hooked and jumps through one of these, one
 * indirect jump where a second test and a direct jump were. */
typedef struct hooked_paths {
    void *(*alloc)(size_t size);
    void *(*alloc_aligned)(size_t size, size_t align);
    void (*free_plain)(void *ptr);
    void (*free_sized)(void *ptr, size_t size);
    void (*free_aligned)(void *ptr, size_t align, size_t size);
} hooked_paths;
static hooked_paths g_paths;
static void hooked_paths_choose(bool unmasked);
#endif

#if KBUDDY_MALLOC_TLS
static inline unsigned long irq_off(void) { return 0; }
static inline void irq_on(unsigned long state) { (void)state; }
#elif STATIC_HOOKS
static inline unsigned long irq_off(void) { return KBUDDY_MALLOC_IRQ_SAVE(); }
static inline void irq_on(unsigned long state) { KBUDDY_MALLOC_IRQ_RESTORE(state); }
#else
static unsigned long irq_save_none(void) { return 0; }
static void irq_restore_none(unsigned long state) { (void)state; }
/* g_hooks.irq_save and irq_restore, or ones that do nothing: called
 * without a test (the masking fast paths then make the call where they
 * made a load, a test and a branch). */
static unsigned long (*g_irq_save)(void) = irq_save_none;
static void (*g_irq_restore)(unsigned long state) = irq_restore_none;
static inline unsigned long irq_off(void) { return g_irq_save(); }
static inline void irq_on(unsigned long state) { g_irq_restore(state); }
#endif

static void report(void *ptr, kbuddy_status st, const char *func) {
    atomic_fetch_add_explicit(&g_bad_frees, 1, memory_order_relaxed);
    if (g_hooks.bad_free)
        g_hooks.bad_free(ptr, st, func);
}

#include "kbm_classes.h"
#include "kbm_tags.h"
/* Giving memory back (kbm_release.h), polled where memory returns to
 * the core heap in bulk. */
static inline void release_poll_locked(void);

/* Slabs (kbm_slab.h), behind the magazines' calls into the core heap, and
 * their counters (under the lock; 0 without slabs). */
struct mentry;
static inline uint32_t slab_take(unsigned c, struct mentry *out, uint32_t want);
static inline void slab_give(void *p, unsigned c);
static inline bool slab_trim_locked(void);
static size_t g_slabs, g_slab_bytes, g_slab_out, g_slab_out_bytes;

#include "kbm_magazines.h"
#include "kbm_slab.h"
#include "kbm_regions.h"
#include "kbm_large.h"
#include "kbm_release.h"
#include "kbm_fork.h"

/* ------------------------------------------------------------------------ */
/* Allocation                                                               */
/* ------------------------------------------------------------------------ */

/* The fast paths below are written so that, with no hooks installed, they
 * call nothing but in tail position: no registers to save, no frame. Each
 * is compiled twice (`hooked` a constant): kernels that install cpu_id or
 * the interrupt hooks take the second copy, which masks interrupts around
 * itself and calls cpu_id masked; with cpu_id_unmasked set, a third
 * (`claim`), which calls cpu_id and claims the cache, masking interrupts
 * only in its cold cases. With compile-time hooks the one copy masks. Every cold case is a NOINLINE
 * function that finishes the call itself (including the claim, irq_on and
 * errno), so that the fast path can jump to it. */

/* The unhooked copies' entry: nothing, or with compile-time hooks
 * interrupts masked and then the CPU's number (cpu_id is called masked);
 * the interrupt state to restore. The hooked copies do the same through
 * the function pointers. */
static ALWAYS_INLINE unsigned long plain_enter(unsigned *cpu) {
#if STATIC_HOOKS
    unsigned long irq = irq_off();
    *cpu = this_cpu();
    return irq;
#else
    *cpu = 0;
    return 0;
#endif
}

/* Make a block of class c LIVE for a request of size bytes: its size,
 * then its tag (release: the size is visible to whoever frees it). */
static inline void make_live(tagref t, unsigned c, size_t size) {
    size_set(t, c, size);
    tag_live(t, c);
}

/* Everything alloc_small's fast path leaves: no cache yet (or none to be
 * had), an empty magazine. Out of memory even after the depot went back
 * to the core: blocks of other classes in this CPU's cache may be what the
 * heap lacks, so they go back too and the refill is tried once more.
 * Interrupts masked (state irq to restore); cc the fast path's cache or
 * NULL; `held`: the fast path claimed cc, and it is given back here (with
 * one that this call claims itself). */
static NOINLINE void *alloc_small_slow(kcache *cc, unsigned c, size_t size, unsigned long irq,
                                       bool held) {
    mentry e;
    kcache *give = held ? cc : NULL;
    if (!cc)
        cc = give = my_cache();
    if (cc) {
        mag *m = slot_loaded(&cc->slot[c]);
        uint32_t n = mag_n(m);
        if (n) {
            e = m->e[n - 1];
            mag_set_n(m, n - 1);
        } else if ((e = cache_refill(cc, c)).p == NULL) {
            lock();
            bool any = cache_flush_locked(cc);
            unlock();
            if (any)
                e = cache_refill(cc, c);
        }
        if (e.p)
            make_live(e.t, c, size);
    } else { /* a CPU without a cache: straight from the core heap */
        lock();
        e.p = core_take(c, TAG_CACHED, &e.t);
        g_large_calls++;
        if (e.p)
            make_live(e.t, c, size);
        unlock();
    }
    cache_unclaim(give);
    irq_on(irq);
    if (!e.p)
        SET_ERRNO(KBM_ENOMEM);
    return e.p;
}

#if RUNTIME_HOOKS
/* The hooked fast paths' ways out: interrupts are masked here, not in the
 * fast path, which then calls nothing but cpu_id. */
static NOINLINE void *alloc_small_slow_masking(kcache *cc, unsigned c, size_t size) {
    return alloc_small_slow(cc, c, size, irq_off(), true);
}
#endif

/* A block of class c for a request of size bytes: pop the CPU's loaded
 * magazine (the block and where its tag is), make the block LIVE. With
 * compile-time hooks, interrupts are masked around it. The claiming
 * copy (`claim`, function-pointer hooks with cpu_id_unmasked) claims the
 * cache in slot cpu instead (the caller called cpu_id, and claim_slot),
 * and masks interrupts only on the way to the slow path, which takes the
 * lock. */
static ALWAYS_INLINE void *alloc_small_impl(unsigned c, size_t size, bool hooked, bool claim,
                                            unsigned cpu, unsigned long irq) {
    kcache *cc = claim ? cache_claim_fast(cpu) : cache_fast(hooked, cpu);
    if (LIKELY(cc != NULL)) {
        mag *m = slot_loaded(&cc->slot[c]);
        uint32_t n = mag_n(m);
        if (LIKELY(n != 0)) {
            mentry e = m->e[n - 1];
            mag_set_n(m, n - 1);
            make_live(e.t, c, size);
            if (claim)
                cache_unclaim_at(cpu, cc);
            else if (hooked)
                irq_on(irq);
            return e.p;
        }
    }
#if RUNTIME_HOOKS
    if (claim)
        return alloc_small_slow_masking(cc, c, size);
#endif
    return alloc_small_slow(cc, c, size, irq, false);
}

#if RUNTIME_HOOKS
/* The claiming copies call cpu_id first, while only the arguments are live,
 * and work out the class after it, so that fewer registers are saved
 * around the call. gcc sinks the class past the call by itself; an empty
 * asm that pinned the arguments in registers there (HIDE, before) cost
 * register copies (W3 72.7 -> 72.2, W4 86.2 -> 84.6 without it). */
static NOINLINE void *alloc_small_claiming(size_t size) {
    unsigned cpu = claim_slot(g_cpu_id());
    return alloc_small_impl(class_of_size(size), size, true, true, cpu, 0);
}
static NOINLINE void *alloc_aligned_claiming(size_t size, size_t align) {
    unsigned cpu = claim_slot(g_cpu_id());
    return alloc_small_impl(class_of_aligned(size, align), size, true, true, cpu, 0);
}
/* The hooked copies proper mask interrupts around themselves (main's
 * contract): irq_save, then cpu_id, with only the arguments live, the class
 * after them (HIDE cost a register copy here too: W4 94.3 -> 93.1). Which
 * copy runs is chosen where the call comes in (g_paths): a test in a
 * shared function would save the masking copy's registers for both. */
static NOINLINE void *alloc_small_hooked(size_t size) {
    unsigned long irq = irq_off();
    unsigned cpu = g_cpu_id();
    return alloc_small_impl(class_of_size(size), size, true, false, cpu, irq);
}
static NOINLINE void *alloc_aligned_hooked(size_t size, size_t align) {
    unsigned long irq = irq_off();
    unsigned cpu = g_cpu_id();
    return alloc_small_impl(class_of_aligned(size, align), size, true, false, cpu, irq);
}
#define HOOKED() UNLIKELY(g_hooked)
#endif

static ALWAYS_INLINE void *alloc_small(size_t size) {
#if RUNTIME_HOOKS
    if (HOOKED())
        return g_paths.alloc(size);
#endif
    unsigned cpu;
    unsigned long irq = plain_enter(&cpu);
    return alloc_small_impl(class_of_size(size), size, STATIC_HOOKS, false, cpu, irq);
}

static ALWAYS_INLINE void *alloc_small_aligned(size_t size, size_t align) {
#if RUNTIME_HOOKS
    if (HOOKED())
        return g_paths.alloc_aligned(size, align);
#endif
    unsigned cpu;
    unsigned long irq = plain_enter(&cpu);
    return alloc_small_impl(class_of_aligned(size, align), size, STATIC_HOOKS, false, cpu, irq);
}

/* Above the cache limit (or aligned beyond it): the core heap, under the
 * lock, tagged LIVE|LARGE. When the heap is out of memory even after the
 * depot went back, this CPU's cache goes back too and the call is tried
 * once more. Sets errno when it fails. */
static void *alloc_core_large(size_t size, size_t align) {
    unsigned long irq = irq_off();
    kcache *cc = cache_claim();
    lock();
    g_large_calls++;
    void *p = kbuddy_alloc(&g_heap, size, align);
    if (!p && cc && cache_flush_locked(cc))
        p = kbuddy_alloc(&g_heap, size, align);
    if (p) {
        const mregion *r = region_of(&g_lock_hint, (uintptr_t)p);
        if (LIKELY(r != NULL))
            tag_set(tag_of(r, (uintptr_t)p), TAG_LIVE | TAG_LARGE);
        else {
            (void)kbuddy_free(&g_heap, p);
            p = NULL;
        }
    }
    unlock();
    cache_unclaim(cc);
    irq_on(irq);
    if (!p)
        SET_ERRNO(KBM_ENOMEM);
    return p;
}

/* Above the cache limit: a mapping of its own above the map threshold
 * (kbm_large.h), else (or when none can be had) the core heap. */
static NOINLINE void *alloc_large(size_t size, size_t align) {
    if (map_wanted(size)) {
        void *p = alloc_mapped(size, align);
        if (p)
            return p;
    }
    return alloc_core_large(size, align);
}

/* size bytes aligned to align (a power of two): through the caches for
 * every size and alignment up to the cache limit (the class of the size
 * rounded up to the alignment is a multiple of it, and its blocks are
 * aligned to it). Sets errno when it fails. */
static ALWAYS_INLINE void *alloc_any(size_t size, size_t align) {
    if (LIKELY(size <= CACHE_MAX && align <= CACHE_MAX))
        return alloc_small_aligned(size, align);
    return alloc_large(size, align < UNIT ? UNIT : align);
}

void *kbm_malloc(size_t size) {
    if (LIKELY(size <= CACHE_MAX))
        return alloc_small(size);
    return alloc_large(size, UNIT);
}

void *kbm_calloc(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) {
        SET_ERRNO(KBM_ENOMEM);
        return NULL;
    }
    size_t bytes = n * size;
    void *p;
    if (bytes > CACHE_MAX && map_wanted(bytes)) {
        /* A fresh mapping that reads as zero is not cleared (nor touched). */
        p = alloc_mapped_zeroed(bytes);
        if (p)
            return p;
        p = alloc_core_large(bytes, UNIT);
    } else {
        p = kbm_malloc(bytes);
    }
    if (p)
        memset(p, 0, bytes);
    return p;
}

void *kbm_aligned_alloc(size_t align, size_t size) {
    if (UNLIKELY(!is_pow2(align))) {
        SET_ERRNO(KBM_EINVAL);
        return NULL;
    }
    return alloc_any(size, align);
}

void *kbm_memalign(size_t align, size_t size) {
    if (!is_pow2(align)) {
        if (align > SIZE_MAX / 2 + 1) {
            SET_ERRNO(KBM_EINVAL);
            return NULL;
        }
        size_t a = 1;
        while (a < align)
            a <<= 1;
        align = a;
    }
    return alloc_any(size, align);
}

int kbm_posix_memalign(void **out, size_t align, size_t size) {
    if (!out || !is_pow2(align) || align % sizeof(void *))
        return KBM_EINVAL;
#if defined(KBUDDY_MALLOC_ERRNO) && KBUDDY_MALLOC_ERRNO
    int saved = errno; /* POSIX: errno is not this function's business */
#endif
    void *p = alloc_any(size, align);
#if defined(KBUDDY_MALLOC_ERRNO) && KBUDDY_MALLOC_ERRNO
    errno = saved;
#endif
    if (!p)
        return KBM_ENOMEM;
    *out = p;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Free                                                                     */
/* ------------------------------------------------------------------------ */

/* Why ptr (inside a region, aligned) is not a live block whose tag is
 * `tag`: a cached tag is a double free; otherwise the core heap knows (a
 * sized free with an impossible size changes nothing and tells whether
 * ptr is live in the core, in free memory, or inside something). */
static kbuddy_status why_not_live(void *ptr, unsigned tag) {
    if (tag & TAG_CACHED)
        return KBUDDY_EDOUBLEFREE;
    lock();
    kbuddy_status st = kbuddy_free_sized(&g_heap, ptr, SIZE_MAX, 1);
    unlock();
    switch (st) {
    case KBUDDY_EDOUBLEFREE:
    case KBUDDY_ECORRUPT:
        return st;
    case KBUDDY_OK: /* impossible: no request has that size */
        return KBUDDY_ECORRUPT;
    default: /* live but not ours (the layer's own), inside one, or in the
                region's bookkeeping */
        return KBUDDY_EBADPTR;
    }
}

/* The alignment of every pointer free may accept: slab objects are 16-byte
 * aligned, blocks unit-aligned. */
#define FREE_ALIGN (SLABS ? (size_t)16 : UNIT)

/* Look ptr up: its region, its tag. KBUDDY_OK, or why it is not even a
 * candidate. */
static kbuddy_status locate(const mregion **hint, const void *ptr, tagref *t) {
    uintptr_t a = (uintptr_t)ptr;
    const mregion *r = region_of_any(hint, a);
    if (UNLIKELY(!r))
        return KBUDDY_EFOREIGN;
    if (UNLIKELY(a & (FREE_ALIGN - 1)))
        return KBUDDY_EBADPTR;
    *t = tag_of(r, a);
#if SLABS
    unsigned tag = tag_get(*t);
    if (is_slab_tag(tag)) /* in a slab: *t becomes the object's state (kbm_slab.h) */
        return slab_object(r, a, tag & TAG_CLASS, t) ? KBUDDY_OK : KBUDDY_EBADPTR;
    if (UNLIKELY(a & (UNIT - 1)))
        return KBUDDY_EBADPTR;
#endif
    return KBUDDY_OK;
}

/* Take a large block out of the program's hands (LIVE|LARGE -> 0), with
 * the lock held, so that fork never copies one half freed (kbm_fork.h).
 * When it is not live the lock is released and the reason returned. */
static kbuddy_status claim_large_locked(void *ptr, tagref t) {
    unsigned tag = TAG_LIVE | TAG_LARGE;
    if (tag_cas(t, &tag, 0))
        return KBUDDY_OK;
    unlock();
    /* changed before we got the lock: a racing free */
    return (tag & TAG_LIVE) ? KBUDDY_EBADPTR : why_not_live(ptr, tag);
}

/* A large block goes back to the core heap under the lock. */
static kbuddy_status release_large(void *ptr, tagref t, bool sized, size_t size, size_t align) {
    lock();
    kbuddy_status st = claim_large_locked(ptr, t);
    if (st != KBUDDY_OK)
        return st;
    g_large_calls++;
    /* its size, for the large-block trim (kbm_release.h) only */
    size_t bytes = KBUDDY_MALLOC_TRIM_SLACK != SIZE_MAX ? kbuddy_usable_size(&g_heap, ptr) : 0;
    st = sized ? kbuddy_free_sized(&g_heap, ptr, size, align) : kbuddy_free(&g_heap, ptr);
    if (st != KBUDDY_OK) /* refused: the block stays the program's */
        tag_set(t, TAG_LIVE | TAG_LARGE);
    else
        release_large_poll_locked(bytes);
    unlock();
    return st;
}

/* What free states besides the pointer: nothing, the size, or the size
 * and the alignment; FREE_REALLOC is FREE_PLAIN on behalf of realloc. */
enum { FREE_PLAIN, FREE_SIZED, FREE_ALIGNED, FREE_REALLOC };
#define FREE_HELD 8 /* free_slow's mode: the caller claimed the cache it passes */
static const char *const k_free_name[] = {"free", "free_sized", "free_aligned_sized", "realloc"};

/* The largest size a block of class c can have been requested with, as
 * far as a check of the kept size (mod 4096) needs it: with classes of at
 * most 4096 bytes, a size of at most 4096 whose low 12 bits are the kept
 * ones is the one requested (or 0 for 4096, or 4096 for 0), so the
 * class's own size need not be looked up. */
#if KBUDDY_MALLOC_CACHE_SHIFT <= 12
#define SIZE_LIMIT(c) ((size_t)SIZE_MASK + 1)
#else
#define SIZE_LIMIT(c) class_bytes(c)
#endif

/* Was the small block of class c at address a (tag t) allocated with this
 * size (and can it have been with this alignment)? Exactly the size
 * requested (or set by realloc), as kept beside the tag; blocks that keep
 * none accept any size up to their class's. */
static ALWAYS_INLINE bool size_fits(int mode, unsigned c, tagref t, uintptr_t a, size_t size,
                                    size_t align) {
    if (mode == FREE_PLAIN)
        return true;
    if (is_slab_class(c)) { /* a slab object: any size of its class */
        if (size > CACHE_MAX || class_of_size(size) != c)
            return false;
    } else if (!keeps_size(c)) {
        if (size > ((size_t)c + 1) << UNIT_SHIFT) /* classes 0 and 1: 1 and 2 units */
            return false;
    } else if ((size & SIZE_MASK) != size_get(t, c) || size > SIZE_LIMIT(c)) {
        return false;
    }
    return mode == FREE_SIZED || (is_pow2(align) && !(a & (align - 1)));
}

/* Everything free's fast path leaves: a CPU without a cache (yet), a
 * pointer outside the hinted region or not a live small block (large
 * blocks, bad frees), a wrong size, a lost race, a full magazine. Finishes
 * the call: gives the cache back, restores interrupts and reports a
 * refusal. Interrupts masked; cc as for alloc_small_slow, held if mode
 * has FREE_HELD. */
static NOINLINE void free_slow(kcache *cc, void *ptr, int mode, size_t size, size_t align,
                               unsigned long irq) {
    kcache *give = mode & FREE_HELD ? cc : NULL;
    mode &= ~FREE_HELD;
    uintptr_t a = (uintptr_t)ptr;
    const mregion *local = &g_no_region;
    tagref t;
    unsigned tag, c = 0;
    const char *func = k_free_name[mode];
    size_t unmap_bytes = 0;
    if (mode == FREE_REALLOC)
        mode = FREE_PLAIN;
    kbuddy_status st = locate(cc ? &cc->hint : &local, ptr, &t);
    if (st == KBUDDY_EFOREIGN && mapped_any()) { /* a large block's own mapping? */
        st = mapped_take(ptr, mode != FREE_PLAIN, size, align, &unmap_bytes);
        goto out;
    }
    if (!cc) /* not before: a thread that frees only mappings needs no cache */
        cc = give = my_cache();
    if (st != KBUDDY_OK)
        goto out;
    for (tag = tag_get(t);;) {
        if (!(tag & TAG_LIVE)) {
            st = why_not_live(ptr, tag);
            goto out;
        }
        c = tag & TAG_CLASS;
        if (c == TAG_LARGE) {
            st = release_large(ptr, t, mode != FREE_PLAIN, size, align);
            goto out;
        }
        if (c >= NCLASSES || (tag & TAG_CACHED)) { /* no such tag is ever written */
            st = KBUDDY_ECORRUPT;
            goto out;
        }
        if (!size_fits(mode, c, t, a, size, align)) {
            st = KBUDDY_ESIZE;
            goto out;
        }
        if (!cc) /* no magazine to hide it in: the tag changes under the lock (kbm_fork.h) */
            lock();
        if (tag_cas(t, &tag, tag ^ TAG_FLIP))
            break;
        if (!cc)
            unlock();
    }
    if (cc) {
        mag *m = slot_loaded(&cc->slot[c]);
        uint32_t n = mag_n(m);
        if (n < m->cap) {
            m->e[n] = (mentry){ptr, t};
            mag_set_n(m, n + 1);
        } else {
            cache_overflow(cc, c, (mentry){ptr, t});
        }
    } else {
        core_give(ptr, t, c);
        g_large_calls++;
        unlock();
    }
out:
    cache_unclaim(give);
    irq_on(irq);
    mapped_unmap(ptr, unmap_bytes);
    if (st != KBUDDY_OK)
        report(ptr, st, func);
}

/* The loaded magazine is full: cache_overflow, then finish the call. */
static NOINLINE void free_overflow(kcache *cc, unsigned c, void *ptr, tagref t, unsigned long irq) {
    cache_overflow(cc, c, (mentry){ptr, t});
    irq_on(irq);
}

#if RUNTIME_HOOKS
/* The hooked fast path's ways out (as alloc_small_slow_masking). */
static NOINLINE void free_slow_masking(kcache *cc, void *ptr, int mode, size_t size, size_t align) {
    free_slow(cc, ptr, mode | FREE_HELD, size, align, irq_off());
}
static NOINLINE void free_overflow_masking(kcache *cc, unsigned c, void *ptr, tagref t) {
    unsigned long irq = irq_off();
    cache_overflow(cc, c, (mentry){ptr, t});
    cache_unclaim(cc);
    irq_on(irq);
}
#endif

/* Free ptr (not NULL). The fast path: the CPU's region hint holds it, its
 * tag says a live small block, the stated size is its own, and one
 * compare-and-swap makes it CACHED (of two racing frees exactly one wins);
 * then it goes into the CPU's loaded magazine. Interrupts and claims as
 * in alloc_small_impl. */
static ALWAYS_INLINE void free_impl(void *ptr, int mode, size_t size, size_t align, bool hooked,
                                    bool claim, unsigned cpu, unsigned long irq) {
    uintptr_t a = (uintptr_t)ptr;
    kcache *cc = claim ? cache_claim_fast(cpu) : cache_fast(hooked, cpu);
    if (LIKELY(cc != NULL)) {
        const mregion *r = cc->hint;
        if (LIKELY(a - r->start < r->size) && LIKELY(!(a & (FREE_ALIGN - 1)))) {
            tagref t = tag_of(r, a);
            unsigned tag = tag_get(t), c = tag - TAG_LIVE;
            if (SLABS && (c >= NBLOCK || (a & (UNIT - 1)))) {
                /* in a slab: the object's own state, and its class */
                c = NCLASSES;
                if (is_slab_tag(tag) && slab_object(r, a, tag & TAG_CLASS, &t)) {
                    tag = tag_get(t);
                    c = tag - TAG_LIVE;
                }
            }
            if (LIKELY(c < NCLASSES) && LIKELY(size_fits(mode, c, t, a, size, align)) &&
                LIKELY(tag_cas(t, &tag, tag ^ TAG_FLIP))) {
                mag *m = slot_loaded(&cc->slot[c]);
                uint32_t n = mag_n(m);
                if (LIKELY(n < m->cap)) {
                    m->e[n] = (mentry){ptr, t};
                    mag_set_n(m, n + 1);
                    if (claim)
                        cache_unclaim_at(cpu, cc);
                    else if (hooked)
                        irq_on(irq);
                    return;
                }
#if RUNTIME_HOOKS
                if (claim) {
                    free_overflow_masking(cc, c, ptr, t);
                    return;
                }
#endif
                free_overflow(cc, c, ptr, t, irq);
                return;
            }
        }
    }
#if RUNTIME_HOOKS
    if (claim) {
        free_slow_masking(cc, ptr, mode, size, align);
        return;
    }
#endif
    free_slow(cc, ptr, mode, size, align, irq);
}

#if RUNTIME_HOOKS
static NOINLINE void free_plain_claiming(void *ptr) {
    unsigned cpu = claim_slot(g_cpu_id());
    free_impl(ptr, FREE_PLAIN, 0, 1, true, true, cpu, 0);
}
static NOINLINE void free_sized_claiming(void *ptr, size_t size) {
    unsigned cpu = claim_slot(g_cpu_id());
    free_impl(ptr, FREE_SIZED, size, 1, true, true, cpu, 0);
}
static NOINLINE void free_aligned_claiming(void *ptr, size_t align, size_t size) {
    unsigned cpu = claim_slot(g_cpu_id());
    free_impl(ptr, FREE_ALIGNED, size, align, true, true, cpu, 0);
}
static NOINLINE void free_plain_hooked(void *ptr) {
    unsigned long irq = irq_off();
    free_impl(ptr, FREE_PLAIN, 0, 1, true, false, g_cpu_id(), irq);
}
static NOINLINE void free_sized_hooked(void *ptr, size_t size) {
    unsigned long irq = irq_off();
    free_impl(ptr, FREE_SIZED, size, 1, true, false, g_cpu_id(), irq);
}
static NOINLINE void free_aligned_hooked(void *ptr, size_t align, size_t size) {
    unsigned long irq = irq_off();
    free_impl(ptr, FREE_ALIGNED, size, align, true, false, g_cpu_id(), irq);
}

static void hooked_paths_choose(bool unmasked) {
    static const hooked_paths masking = {alloc_small_hooked, alloc_aligned_hooked,
                                         free_plain_hooked, free_sized_hooked,
                                         free_aligned_hooked};
    static const hooked_paths claiming = {alloc_small_claiming, alloc_aligned_claiming,
                                          free_plain_claiming, free_sized_claiming,
                                          free_aligned_claiming};
    g_paths = unmasked ? claiming : masking;
}
#endif

void kbm_free(void *ptr) {
    if (UNLIKELY(!ptr))
        return;
#if RUNTIME_HOOKS
    if (HOOKED()) {
        g_paths.free_plain(ptr);
        return;
    }
#endif
    unsigned cpu;
    unsigned long irq = plain_enter(&cpu);
    free_impl(ptr, FREE_PLAIN, 0, 1, STATIC_HOOKS, false, cpu, irq);
}

void kbm_free_sized(void *ptr, size_t size) {
    if (UNLIKELY(!ptr))
        return;
#if RUNTIME_HOOKS
    if (HOOKED()) {
        g_paths.free_sized(ptr, size);
        return;
    }
#endif
    unsigned cpu;
    unsigned long irq = plain_enter(&cpu);
    free_impl(ptr, FREE_SIZED, size, 1, STATIC_HOOKS, false, cpu, irq);
}

void kbm_free_aligned_sized(void *ptr, size_t align, size_t size) {
    if (UNLIKELY(!ptr))
        return;
#if RUNTIME_HOOKS
    if (HOOKED()) {
        g_paths.free_aligned(ptr, align, size);
        return;
    }
#endif
    unsigned cpu;
    unsigned long irq = plain_enter(&cpu);
    free_impl(ptr, FREE_ALIGNED, size, align, STATIC_HOOKS, false, cpu, irq);
}

/* The free inside realloc: as kbm_free, reported as "realloc". */
static void free_for_realloc(void *ptr) {
    unsigned long irq = irq_off();
    free_slow(cache_claim(), ptr, FREE_REALLOC | FREE_HELD, 0, 1, irq);
}

/* ------------------------------------------------------------------------ */
/* realloc, usable size                                                     */
/* ------------------------------------------------------------------------ */

/* The tag of ptr if it is a live block (and in *t where it is), else 0
 * with *why set. */
static unsigned live_tag(void *ptr, tagref *t, kbuddy_status *why) {
    unsigned long irq = irq_off();
    kcache *cc = cache_claim();
    const mregion *local = &g_no_region;
    unsigned tag = 0;
    *why = locate(cc ? &cc->hint : &local, ptr, t);
    if (*why == KBUDDY_OK) {
        tag = tag_get(*t);
        if (!(tag & TAG_LIVE)) {
            *why = why_not_live(ptr, tag);
            tag = 0;
        }
    }
    cache_unclaim(cc);
    irq_on(irq);
    return tag;
}

/* A large block: resized in place under the lock when the core heap can;
 * otherwise moved with the lock released, so that other CPUs never wait
 * for a copy (the block stays the program's throughout: only a racing
 * free, a program bug, could interfere, and it would be reported). */
static void *realloc_large(void *ptr, size_t size) {
    unsigned long irq = irq_off();
    const mregion *local = &g_no_region;
    tagref t;
    kbuddy_status st = locate(&local, ptr, &t);
    size_t old = 0;
    bool in_place = false;
    if (st == KBUDDY_OK) {
        lock();
        st = claim_large_locked(ptr, t);
    }
    if (st == KBUDDY_OK) {
        g_large_calls++;
        in_place = kbuddy_resize_in_place(&g_heap, ptr, size, UNIT) == KBUDDY_OK;
        if (!in_place) /* refused, so unchanged: how much to copy */
            old = kbuddy_usable_size(&g_heap, ptr);
        tag_set(t, TAG_LIVE | TAG_LARGE);
        unlock();
    }
    irq_on(irq);
    if (st != KBUDDY_OK) {
        report(ptr, st, "realloc");
        SET_ERRNO(KBM_EINVAL);
        return NULL;
    }
    if (in_place)
        return ptr;
    void *q = kbm_malloc(size); /* sets errno when it fails */
    if (!q)
        return NULL;
    memcpy(q, ptr, size < old ? size : old);
    free_for_realloc(ptr);
    return q;
}

void *kbm_realloc(void *ptr, size_t size) {
    if (!ptr)
        return kbm_malloc(size);
    kbuddy_status why;
    tagref t;
    unsigned tag = live_tag(ptr, &t, &why);
    if (!tag && why == KBUDDY_EFOREIGN && mapped_any())
        return realloc_mapped(ptr, size);
    if (!tag) {
        report(ptr, why, "realloc");
        SET_ERRNO(KBM_EINVAL);
        return NULL;
    }
    if (size == 0) { /* glibc: free, and return NULL */
        free_for_realloc(ptr);
        return NULL;
    }
    unsigned c = tag & TAG_CLASS;
    if (c == TAG_LARGE)
        return realloc_large(ptr, size);
    size_t have = class_bytes(c);
    /* In place: a slab object only for a size of its class (what a sized
     * free of it accepts), a block for more than half of it as well. */
    if (size <= have && ((size > have / 2 && !is_slab_class(c)) || class_of_size(size) == c)) {
        size_change(t, c, size); /* the program holds it: ours to write */
        return ptr;
    }
    void *q = kbm_malloc(size);
    if (!q)
        return NULL;
    memcpy(q, ptr, size < have ? size : have);
    free_for_realloc(ptr);
    return q;
}

void *kbm_reallocarray(void *ptr, size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) {
        SET_ERRNO(KBM_ENOMEM);
        return NULL;
    }
    return kbm_realloc(ptr, n * size);
}

size_t kbm_malloc_usable_size(const void *ptr) {
    if (!ptr)
        return 0;
    unsigned long irq = irq_off();
    kcache *cc = cache_claim();
    const mregion *local = &g_no_region;
    tagref t;
    size_t n = 0;
    kbuddy_status st = locate(cc ? &cc->hint : &local, ptr, &t);
    if (st == KBUDDY_EFOREIGN && mapped_any()) {
        n = mapped_usable(ptr);
    } else if (st == KBUDDY_OK) {
        unsigned tag = tag_get(t);
        if ((tag & TAG_LIVE) && (tag & TAG_CLASS) != TAG_LARGE) {
            n = class_bytes(tag & TAG_CLASS);
        } else if (tag & TAG_LIVE) {
            lock();
            n = kbuddy_usable_size(&g_heap, ptr);
            unlock();
        }
    }
    cache_unclaim(cc);
    irq_on(irq);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Caches, statistics, checks                                               */
/* ------------------------------------------------------------------------ */

void kbuddy_malloc_flush_caches(void) {
    unsigned long irq = irq_off();
    kcache *cc = cache_claim();
    lock();
    caches_flush_locked(cc);
    unlock();
    cache_unclaim(cc);
    irq_on(irq);
}

void kbuddy_malloc_thread_exit(void) {
#if KBUDDY_MALLOC_TLS
    kcache *cc = tls_cache;
    tls_cache = NULL;
    tls_exited = true;
    if (!cc)
        return;
    lock();
    (void)cache_flush_locked(cc);
    *cc->pprev = cc->next;
    if (cc->next)
        cc->next->pprev = cc->pprev;
    internal_free(cc, sizeof *cc);
    release_poll_locked();
    unlock();
#else
    unsigned long irq = irq_off();
    kcache *cc = cache_claim();
    if (cc) {
        lock();
        (void)cache_flush_locked(cc);
        unlock();
    }
    cache_unclaim(cc);
    irq_on(irq);
#endif
}

/* Add what a cache's magazines hold (read as its CPU last wrote them). */
static void cache_count(kcache *cc, size_t *blocks, size_t *units) {
    for (unsigned c = 0; c < NCLASSES; c++) {
        size_t n = (size_t)mag_n(slot_loaded(&cc->slot[c])) + mag_n(slot_prev(&cc->slot[c]));
        *blocks += n;
        *units += n * class_units(c);
    }
}

void kbuddy_malloc_get_stats(kbuddy_malloc_stats *out) {
    if (!out)
        return;
    unsigned long irq = irq_off();
    lock();
    kbuddy_get_stats(&g_heap, &out->heap);
    size_t blocks = g_depot_blocks, units = g_depot_units, caches = 0;
    for (kcache *cc = g_caches; cc; cc = cc->next) {
        cache_count(cc, &blocks, &units);
        caches++;
    }
    out->cached_blocks = blocks;
    out->cached_bytes = units << ACCT_SHIFT;
    out->depot_blocks = g_depot_blocks;
    /* A slab is one core allocation; what of it the program and the caches
     * do not hold is the layer's own (kbm_slab.h). */
    out->internal_blocks = g_internal_blocks + g_slabs;
    out->internal_bytes = g_internal_bytes + g_slab_bytes - g_slab_out_bytes;
    out->live_blocks =
        out->heap.allocations - blocks - out->internal_blocks + g_slab_out + g_nmaps;
    out->live_bytes =
        out->heap.allocated - out->cached_bytes - out->internal_bytes + g_mapped_bytes;
    out->mapped_blocks = g_nmaps;
    out->mapped_bytes = g_mapped_bytes;
    out->map_cached_bytes = g_map_cached_bytes;
    out->caches = caches;
    out->regions = atomic_load_explicit(&g_nregions, memory_order_relaxed) - g_regions_returned;
    out->released_bytes = g_released_bytes;
    out->regions_returned = g_regions_returned;
    out->region_bytes = g_region_bytes;
    out->tag_bytes = g_tag_bytes;
    out->depot_trades = g_trades;
    out->core_fills = g_fills;
    out->core_drains = g_drains;
    out->large_calls = g_large_calls;
    out->slabs = g_slabs;
    out->slab_bytes = g_slab_bytes;
    out->slab_objects = g_slab_out;
    unlock();
    irq_on(irq);
    out->bad_frees = atomic_load_explicit(&g_bad_frees, memory_order_relaxed);
}

typedef struct checker {
    const mregion *hint;
    size_t cached, cached_units, untagged, untagged_bytes;
    bool bad;
    slabtally slab;
    const char *why; /* the first thing found wrong, and where */
    const void *at;
} checker;

/* What the last check found wrong first (kbuddy_malloc_check_why), under
 * the lock. */
static const char *g_check_why;
static const void *g_check_at;

/* The check found `bad` (about `at`, or NULL): remember the first. */
static void check_note(checker *k, bool bad, const char *why, const void *at) {
    if (!bad)
        return;
    if (!k->bad) {
        k->why = why;
        k->at = at;
    }
    k->bad = true;
}

/* Every block of the core heap: tags only on block starts, and each
 * consistent with the block's size. */
static void check_block(void *vctx, void *start, size_t size, bool used) {
    checker *k = vctx;
    uintptr_t a = (uintptr_t)start;
    const mregion *r = region_of(&k->hint, a);
    if (!r) {
        check_note(k, true, "core block outside every region", start);
        return;
    }
    tagref t = tag_of(r, a);
    unsigned tag = used ? tag_get(t) : 0, c = tag & TAG_CLASS;
    if (is_slab_tag(tag)) {
        bool was = k->slab.bad;
        slab_check_block(&k->slab, r, start, size, c);
        check_note(k, k->slab.bad && !was, "slab: geometry, header or its objects' states", start);
        return;
    }
    bool live = tag & TAG_LIVE, cached = tag & TAG_CACHED;
    bool small = tag && c < NCLASSES;
    /* No tag but on a block's first unit; no kept size but on the second
     * and third units of small blocks that keep one, never with a tag's
     * bits. */
    size_t spare = small && keeps_size(c) ? 2 : 0;
    for (size_t off = used ? UNIT : 0; off < size; off += UNIT) {
        unsigned b = tag_get(tag_of(r, a + off));
        check_note(k, off > UNIT * spare ? b != 0 : (b & TAG_FLIP) != 0,
                   used ? "tag byte inside a used block" : "tag byte inside a free block",
                   (unsigned char *)start + off);
    }
    if (!used)
        return;
    if (!tag) { /* the layer's own */
        k->untagged++;
        k->untagged_bytes += size;
        return;
    }
    /* Exactly one state; a class that exists, of this block's size and
     * naturally aligned, with a kept size no larger than the class size;
     * large blocks are never cached. */
    bool shape_ok = small && size == class_bytes(c) && !(a & (class_align(c) - 1));
    bool small_ok = shape_ok && size_get(t, c) <= class_bytes(c);
    check_note(k, live == cached, "block's tag neither or both LIVE and CACHED", start);
    check_note(k, !(small_ok || (c == TAG_LARGE && live)),
               shape_ok ? "kept size beyond the class" : "block's size or alignment not its class's",
               start);
    if (cached && small_ok) {
        k->cached++;
        k->cached_units += class_units(c);
    }
}

/* Each block of a magazine of class c is tagged cached in that class, and
 * the magazine knows where its tag is. */
static bool mag_ok(mag *m, unsigned c, const mregion **hint) {
    uint32_t n = mag_n(m);
    if (n > m->cap || (m->cap && (m->cap > mag_cap(c) || m->cap < mag_cap_min(c))))
        return false;
    for (uint32_t i = 0; i < n; i++) {
        const mregion *r = region_of(hint, (uintptr_t)m->e[i].p);
        if (!r ||
            !(is_slab_class(c) ? slab_entry_ok(r, m->e[i].p, m->e[i].t, c)
                               : tagref_same(m->e[i].t, tag_of(r, (uintptr_t)m->e[i].p))) ||
            tag_get(m->e[i].t) != (TAG_CACHED | c))
            return false;
    }
    return true;
}

kbuddy_status kbuddy_malloc_check(void) {
    unsigned long irq = irq_off();
    lock();
    kbuddy_status st = kbuddy_check(&g_heap);
    checker k = {&g_no_region, 0, 0, 0, 0, false, {0}, NULL, NULL};
    if (st == KBUDDY_OK)
        kbuddy_walk(&g_heap, check_block, &k);
    size_t blocks = 0, units = 0;
    for (unsigned c = 0; c < NCLASSES; c++) {
        uint32_t nfull = 0, nempty = 0;
        for (mag *m = g_depot[c].full; m; m = m->next, nfull++) {
            check_note(&k, !mag_ok(m, c, &k.hint) || mag_n(m) != m->cap,
                       "depot: a full magazine's count or blocks", m);
            blocks += mag_n(m);
            units += mag_n(m) * class_units(c);
        }
        for (mag *m = g_depot[c].empty; m; m = m->next, nempty++)
            check_note(&k, mag_n(m) != 0 || !mag_ok(m, c, &k.hint), "depot: an empty magazine", m);
        check_note(&k, nfull != g_depot[c].nfull || nempty != g_depot[c].nempty,
                   "depot: magazines counted per class", NULL);
    }
    check_note(&k, blocks != g_depot_blocks || units != g_depot_units,
               "depot: blocks counted", NULL);
    for (kcache *cc = g_caches; cc; cc = cc->next) {
        for (unsigned c = 0; c < NCLASSES; c++) {
            mag *l = slot_loaded(&cc->slot[c]), *p = slot_prev(&cc->slot[c]);
            check_note(&k, !mag_ok(l, c, &k.hint), "cache: the loaded magazine's count or blocks", l);
            check_note(&k, !mag_ok(p, c, &k.hint), "cache: the previous magazine's count or blocks", p);
            /* prev is full or empty; no magazine is in two places */
            check_note(&k, (mag_n(p) != 0 && mag_n(p) != p->cap) || (l == p && l->cap),
                       "cache: previous magazine neither full nor empty, or loaded twice", cc);
        }
        cache_count(cc, &blocks, &units);
    }
    check_note(&k, k.cached + k.slab.cached != blocks || k.cached_units + k.slab.cached_units != units,
               "cached blocks in the tags and in the magazines differ", NULL);
    check_note(&k, k.untagged != g_internal_blocks || k.untagged_bytes != g_internal_bytes,
               "the layer's own blocks and their count differ", NULL);
    check_note(&k, !maps_ok_locked(), "large mappings' registry", NULL);
    check_note(&k, !map_cache_ok_locked(), "kept mappings", NULL);
    check_note(&k, !slab_totals_ok(&k.slab, &k.hint), "slabs: lists or counters", NULL);
    g_check_why = st != KBUDDY_OK ? "core heap (kbuddy_check)" : k.bad ? k.why : NULL;
    g_check_at = st == KBUDDY_OK && k.bad ? k.at : NULL;
    if (st == KBUDDY_OK && k.bad)
        st = KBUDDY_ECORRUPT;
    unlock();
    irq_on(irq);
    return st;
}

const char *kbuddy_malloc_check_why(const void **where) {
    unsigned long irq = irq_off();
    lock();
    const char *why = g_check_why;
    if (where)
        *where = g_check_at;
    unlock();
    irq_on(irq);
    return why;
}

/* ------------------------------------------------------------------------ */
/* The standard names                                                       */
/* ------------------------------------------------------------------------ */

#if defined(KBUDDY_MALLOC_STD_NAMES) && KBUDDY_MALLOC_STD_NAMES
void *malloc(size_t size) { return kbm_malloc(size); }
void free(void *ptr) { kbm_free(ptr); }
void *calloc(size_t n, size_t size) { return kbm_calloc(n, size); }
void *realloc(void *ptr, size_t size) { return kbm_realloc(ptr, size); }
void *reallocarray(void *ptr, size_t n, size_t size) { return kbm_reallocarray(ptr, n, size); }
void *aligned_alloc(size_t align, size_t size) { return kbm_aligned_alloc(align, size); }
int posix_memalign(void **out, size_t align, size_t size) {
    return kbm_posix_memalign(out, align, size);
}
void *memalign(size_t align, size_t size) { return kbm_memalign(align, size); }
size_t malloc_usable_size(void *ptr) { return kbm_malloc_usable_size(ptr); }
void free_sized(void *ptr, size_t size) { kbm_free_sized(ptr, size); }
void free_aligned_sized(void *ptr, size_t align, size_t size) {
    kbm_free_aligned_sized(ptr, align, size);
}
#endif
