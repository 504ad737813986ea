/*
 * The global allocator: one kbuddy heap for the whole system, the malloc
 * family on it, and per-CPU magazine caches in front of it (Bonwick's
 * magazines and depot, as in Solaris' kmem and umem). The design is told in
 * include/kbuddy_malloc.h; this file owns all of it. Freestanding C11: the
 * core heap, <stdatomic.h>, memcpy and memset, nothing else.
 *
 * Invariants
 *   - Every block is a core allocation of the global heap. A small block of
 *     class c is exactly class_units(c) minimum blocks, so the core heap's
 *     usable size is the class size.
 *   - tag(u) != 0 iff unit u starts a block the layer handed out: LIVE|c
 *     (the program holds it; c = class, or TAG_LARGE), or CACHED|c (it sits
 *     in a magazine, per-CPU or in the depot). The layer's own structures
 *     (magazines, caches) carry no tag, so free refuses them. A block goes
 *     back to the core only after its tag is cleared.
 *   - Only free changes LIVE to anything else, and it does so with a
 *     compare-and-swap, so a pointer is freed at most once however many
 *     CPUs race to free it. CACHED becomes LIVE only at the hands of the CPU
 *     whose magazine holds the block.
 *   - A CPU's two magazines per class: `loaded` is any fill; `prev` is full
 *     or empty (or the shared empty sentinel). Per-CPU state is touched only
 *     by its CPU with interrupts masked; the depot, the core heap, the
 *     region table's writers and the counters without an owner only under
 *     the lock.
 *   - Tags are bytes. Where byte atomics are native (x86, aarch64:
 *     BYTE_TAGS) each is its own atomic byte, so that malloc makes its block
 *     LIVE with a plain store, not a locked read-modify-write: the tag line
 *     was often last written by another CPU (the one that freed the
 *     block), and a locked instruction would wait for it. Elsewhere they
 *     are packed four to a 32-bit atomic word: sub-word atomics need
 *     libatomic on some targets (riscv64 with gcc 12).
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
#define TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#define NOINLINE
#define TLS_MODEL
#endif

#define UNIT_SHIFT KBUDDY_MIN_BLOCK_SHIFT
#define UNIT ((size_t)KBUDDY_MIN_BLOCK)

/* Size classes: 16 classes of 1..16 units, then four per doubling up to
 * 2^MAXU_LOG2 units. */
#define MAXU_LOG2 (KBUDDY_MALLOC_CACHE_SHIFT - KBUDDY_MIN_BLOCK_SHIFT)
#if MAXU_LOG2 < 4 || MAXU_LOG2 > 15
#error "KBUDDY_MALLOC_CACHE_SHIFT must be 4..15 more than KBUDDY_MIN_BLOCK_SHIFT"
#endif
#define NCLASSES (16u + 4u * (MAXU_LOG2 - 4u))
#define CACHE_MAX KBUDDY_MALLOC_CACHE_MAX
#define MAG_MIN 8u
#define MAG_MAX 64u

/* The layer's own structures (per-CPU caches, magazines) are written by one
 * CPU each; they start and end on cache-line boundaries, so that no two
 * CPUs' structures share a line. */
#ifndef KBUDDY_MALLOC_CACHE_LINE
#define KBUDDY_MALLOC_CACHE_LINE 64
#endif
#define LINE ((size_t)KBUDDY_MALLOC_CACHE_LINE)

/* Tags. */
#define TAG_LIVE 0x80u
#define TAG_CACHED 0x40u
#define TAG_CLASS 0x3fu
#define TAG_LARGE 0x3fu /* class field of a block that bypasses the caches */
#define TAG_FLIP (TAG_LIVE | TAG_CACHED)

/* ------------------------------------------------------------------------ */
/* Types and state                                                          */
/* ------------------------------------------------------------------------ */

/* A region handed to the layer: its tag table covers the units of
 * [start, end), tag of unit u in byte (u - base) of the table. Entries are
 * written once, before g_nregions is raised past them (release), and never
 * change: lookups need no lock. */
#if BYTE_TAGS
typedef _Atomic unsigned char tagcell;
typedef struct tagref {
    tagcell *p;
} tagref;
#else
typedef _Atomic uint32_t tagcell;
typedef struct tagref {
    tagcell *word;
    unsigned shift;
} tagref;
#endif

typedef struct mregion {
    uintptr_t start, end, base;
    tagcell *tags;
} mregion;

/* A magazine: up to cap pointers to cached blocks of one class. */
typedef struct mag {
    struct mag *next; /* in a depot list */
    uint32_t count, cap;
    void *blk[];
} mag;

typedef struct cslot {
    mag *loaded, *prev;
} cslot;

/* One CPU's (thread's) cache. blocks/units count what its magazines hold;
 * only the owner writes them (relaxed), so that statistics can read them. */
typedef struct kcache {
    cslot slot[NCLASSES];
    const mregion *hint; /* the region this CPU resolved last */
    _Atomic size_t blocks, units;
    struct kcache *next, **pprev; /* all caches, under the lock */
} kcache;

typedef struct depot {
    mag *full, *empty;
    uint32_t nfull, nempty;
} depot;

static kbuddy_heap g_heap = KBUDDY_HEAP_INIT;
static kbuddy_malloc_hooks g_hooks;
static kbuddy_spinlock g_spin = KBUDDY_SPINLOCK_INIT;
static kbuddy_lock g_lock = {kbuddy_spinlock_acquire, kbuddy_spinlock_release, &g_spin};

static mregion g_regions[KBUDDY_MALLOC_MAX_REGIONS];
static _Atomic size_t g_nregions;
static const mregion g_no_region; /* matches no address: the initial hint */

/* Under the lock. */
static depot g_depot[NCLASSES];
static size_t g_depot_blocks, g_depot_units;
static size_t g_internal_blocks, g_internal_bytes;
static size_t g_region_bytes, g_tag_bytes;
static size_t g_trades, g_fills, g_drains, g_large_calls;
static kcache *g_caches;
static const mregion *g_lock_hint = &g_no_region;

static _Atomic size_t g_bad_frees;

/* Never written: count == cap == 0 sends both fast paths to the slow one. */
static mag g_empty_mag = {NULL, 0, 0};

#if KBUDDY_MALLOC_TLS
static _Thread_local kcache *tls_cache TLS_MODEL;
static _Thread_local bool tls_exited TLS_MODEL;
#else
static kcache *g_cpu_cache[KBUDDY_MALLOC_MAX_CPUS]; /* slot i: only CPU i */
#endif

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static bool is_pow2(size_t x) { return x && !(x & (x - 1)); }

static void lock(void) { g_lock.acquire(g_lock.ctx); }
static void unlock(void) { g_lock.release(g_lock.ctx); }

#if KBUDDY_MALLOC_TLS
static unsigned long irq_off(void) { return 0; }
static void irq_on(unsigned long state) { (void)state; }
#else
static unsigned long irq_off(void) { return g_hooks.irq_save ? g_hooks.irq_save() : 0; }
static void irq_on(unsigned long state) {
    if (g_hooks.irq_restore)
        g_hooks.irq_restore(state);
}
#endif

/* floor(log2 m) for 16 <= m < 2^15, without a libgcc call on any target. */
static unsigned log2_small(size_t m) {
#if defined(__x86_64__) || defined(__aarch64__) || defined(__riscv_zbb)
    return 63u - (unsigned)__builtin_clzll((unsigned long long)m);
#else
    unsigned k = 4;
    while (m >> (k + 1))
        k++;
    return k;
#endif
}

/* The class of a request of n units, 1 <= n <= 2^MAXU_LOG2. */
static unsigned class_of_units(size_t n) {
    if (n <= 16)
        return (unsigned)n - 1u;
    size_t m = n - 1;
    unsigned k = log2_small(m);
    return 16u + (k - 4u) * 4u + (unsigned)(m >> (k - 2u)) - 4u;
}

static unsigned class_of_size(size_t size) {
    return class_of_units(size ? (size + UNIT - 1) >> UNIT_SHIFT : 1);
}

/* Units of class c: c + 1 below 16, then (5, 6, 7, 8) << 2, << 3, ... */
#define CJ(c) ((c) < 16u ? 0u : (c)-16u) /* 0 below 16: no arm shifts too far */
#define CU(c) ((c) < 16u ? (c) + 1u : (5u + CJ(c) % 4u) << (2u + CJ(c) / 4u))
#define CU4(c) CU(c), CU((c) + 1u), CU((c) + 2u), CU((c) + 3u)
static const uint32_t k_class_units[60] = { /* 60: the most classes there can be */
    CU4(0u),  CU4(4u),  CU4(8u),  CU4(12u), CU4(16u), CU4(20u), CU4(24u), CU4(28u),
    CU4(32u), CU4(36u), CU4(40u), CU4(44u), CU4(48u), CU4(52u), CU4(56u)};
#undef CU4
#undef CU
#undef CJ

static size_t class_units(unsigned c) { return k_class_units[c]; }

static size_t class_bytes(unsigned c) { return class_units(c) << UNIT_SHIFT; }

static uint32_t mag_cap(unsigned c) {
    size_t n = KBUDDY_MALLOC_MAG_BYTES / class_bytes(c);
    return n < MAG_MIN ? MAG_MIN : n > MAG_MAX ? MAG_MAX : (uint32_t)n;
}

/* The region holding address a, trying *hint first (and updating it). */
static NOINLINE const mregion *region_find(const mregion **hint, uintptr_t a) {
    size_t n = atomic_load_explicit(&g_nregions, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        const mregion *r = &g_regions[i];
        if (a - r->start < r->end - r->start) {
            *hint = r;
            return r;
        }
    }
    return NULL;
}

static inline const mregion *region_of(const mregion **hint, uintptr_t a) {
    const mregion *r = *hint;
    if (LIKELY(a - r->start < r->end - r->start))
        return r;
    return region_find(hint, a);
}

/* Tag access. tag_set: set a tag that is 0; tag_clear: make it 0;
 * tag_live: CACHED|c -> LIVE|c, by the CPU whose magazine held the block
 * (nobody else writes a CACHED tag, so no read-modify-write is needed
 * where tags are bytes); tag_cas: replace the tag if it is *expected, else
 * store what it is in *expected and return false (only when the tag itself
 * differs: changes to neighbouring tags are retried). */
#if BYTE_TAGS
static inline tagref tag_of(const mregion *r, uintptr_t a) {
    return (tagref){&r->tags[(a >> UNIT_SHIFT) - r->base]};
}

static inline unsigned tag_get(tagref t) { return atomic_load_explicit(t.p, memory_order_relaxed); }

static inline void tag_set(tagref t, unsigned tag) {
    atomic_store_explicit(t.p, (unsigned char)tag, memory_order_release);
}
static inline void tag_clear(tagref t) { atomic_store_explicit(t.p, 0, memory_order_release); }
static inline void tag_live(tagref t, unsigned c) {
    atomic_store_explicit(t.p, (unsigned char)(TAG_LIVE | c), memory_order_release);
}
static inline bool tag_cas(tagref t, unsigned *expected, unsigned desired) {
    unsigned char e = (unsigned char)*expected;
    if (atomic_compare_exchange_strong_explicit(t.p, &e, (unsigned char)desired, memory_order_acq_rel,
                                                memory_order_relaxed))
        return true;
    *expected = e;
    return false;
}
#else
static inline tagref tag_of(const mregion *r, uintptr_t a) {
    uintptr_t i = (a >> UNIT_SHIFT) - r->base;
    return (tagref){&r->tags[i >> 2], (unsigned)(i & 3u) * 8u};
}

static inline unsigned tag_get(tagref t) {
    return (atomic_load_explicit(t.word, memory_order_relaxed) >> t.shift) & 0xffu;
}

static inline void tag_set(tagref t, unsigned tag) {
    atomic_fetch_or_explicit(t.word, (uint32_t)tag << t.shift, memory_order_release);
}
static inline void tag_clear(tagref t) {
    atomic_fetch_and_explicit(t.word, ~((uint32_t)0xffu << t.shift), memory_order_release);
}
static inline void tag_live(tagref t, unsigned c) {
    (void)c;
    atomic_fetch_xor_explicit(t.word, (uint32_t)TAG_FLIP << t.shift, memory_order_acq_rel);
}
static inline bool tag_cas(tagref t, unsigned *expected, unsigned desired) {
    uint32_t w = atomic_load_explicit(t.word, memory_order_relaxed);
    for (;;) {
        unsigned tag = (w >> t.shift) & 0xffu;
        if (tag != *expected) {
            *expected = tag;
            return false;
        }
        uint32_t n = (w & ~((uint32_t)0xffu << t.shift)) | (uint32_t)desired << t.shift;
        if (atomic_compare_exchange_weak_explicit(t.word, &w, n, memory_order_acq_rel, memory_order_relaxed))
            return true;
    }
}
#endif

/* Only the owning CPU writes its counters. */
static inline void held_add(kcache *cc, size_t blocks, size_t units) {
    atomic_store_explicit(&cc->blocks, atomic_load_explicit(&cc->blocks, memory_order_relaxed) + blocks,
                          memory_order_relaxed);
    atomic_store_explicit(&cc->units, atomic_load_explicit(&cc->units, memory_order_relaxed) + units,
                          memory_order_relaxed);
}
static inline void held_sub(kcache *cc, size_t blocks, size_t units) {
    atomic_store_explicit(&cc->blocks, atomic_load_explicit(&cc->blocks, memory_order_relaxed) - blocks,
                          memory_order_relaxed);
    atomic_store_explicit(&cc->units, atomic_load_explicit(&cc->units, memory_order_relaxed) - units,
                          memory_order_relaxed);
}

static void report(void *ptr, kbuddy_status st, const char *func) {
    atomic_fetch_add_explicit(&g_bad_frees, 1, memory_order_relaxed);
    if (g_hooks.bad_free)
        g_hooks.bad_free(ptr, st, func);
}

/* ------------------------------------------------------------------------ */
/* The core heap, under the lock                                             */
/* ------------------------------------------------------------------------ */

/* The layer's own structures: core allocations without a tag, in whole
 * cache lines. */
static size_t internal_size(size_t bytes) { return (bytes + LINE - 1) & ~(LINE - 1); }

static void *internal_alloc(size_t bytes) {
    void *p = kbuddy_alloc(&g_heap, internal_size(bytes), LINE);
    if (p) {
        g_internal_blocks++;
        g_internal_bytes += internal_size(bytes);
    }
    return p;
}

static void internal_free(void *p, size_t bytes) {
    g_internal_blocks--;
    g_internal_bytes -= internal_size(bytes);
    (void)kbuddy_free(&g_heap, p);
}

static size_t mag_size(uint32_t cap) { return sizeof(mag) + cap * sizeof(void *); }

/* A block of class c from the core, tagged `tag | c`. */
/* Tag a block just taken from the core with `tag`, or give it back and
 * say false. */
static bool core_tag(void *p, unsigned tag) {
    const mregion *r = region_of(&g_lock_hint, (uintptr_t)p);
    if (UNLIKELY(!r)) { /* a region added behind the layer's back */
        (void)kbuddy_free(&g_heap, p);
        return false;
    }
    tag_set(tag_of(r, (uintptr_t)p), tag);
    return true;
}

static void *core_take(unsigned c, unsigned tag) {
    void *p = kbuddy_alloc(&g_heap, class_bytes(c), UNIT);
    return p && core_tag(p, tag | c) ? p : NULL;
}

/* Up to `want` blocks of class c into out[], tagged `tag`, from one run of
 * the core heap (kbuddy_alloc_many): one engine operation instead of one
 * per block, and blocks (so their tags) that lie together, so that two
 * CPUs seldom write tags in the same cache line. Returns how many. */
static uint32_t core_take_run(unsigned c, unsigned tag, void **out, uint32_t want) {
    size_t got = kbuddy_alloc_many(&g_heap, class_bytes(c), want, out);
    uint32_t kept = 0;
    for (size_t i = 0; i < got; i++)
        if (core_tag(out[i], tag | c))
            out[kept++] = out[i];
    return kept;
}

/* Untag a block and give it back to the core. */
static void core_give(void *p) {
    tag_clear(tag_of(region_of(&g_lock_hint, (uintptr_t)p), (uintptr_t)p));
    (void)kbuddy_free(&g_heap, p);
}

static void mag_release_blocks(mag *m) {
    for (uint32_t i = 0; i < m->count; i++)
        core_give(m->blk[i]);
    g_drains += m->count;
    m->count = 0;
}

/* An empty magazine for class c: from the depot, else a new one. */
static mag *mag_get_empty(unsigned c) {
    depot *d = &g_depot[c];
    mag *m = d->empty;
    if (m) {
        d->empty = m->next;
        d->nempty--;
        return m;
    }
    uint32_t cap = mag_cap(c);
    m = internal_alloc(mag_size(cap));
    if (m) {
        m->next = NULL;
        m->count = 0;
        m->cap = cap;
    }
    return m;
}

static void mag_retire_empty(mag *m, unsigned c) {
    depot *d = &g_depot[c];
    if (d->nempty < KBUDDY_MALLOC_DEPOT_MAGS) {
        m->next = d->empty;
        d->empty = m;
        d->nempty++;
    } else {
        internal_free(m, mag_size(m->cap));
    }
}

/* Give every block and magazine in the depot back to the core. True if
 * there was anything. */
static bool depot_drain(void) {
    bool any = false;
    for (unsigned c = 0; c < NCLASSES; c++) {
        depot *d = &g_depot[c];
        for (mag *m; (m = d->full) != NULL;) {
            d->full = m->next;
            g_depot_blocks -= m->count;
            g_depot_units -= m->count * class_units(c);
            mag_release_blocks(m);
            internal_free(m, mag_size(m->cap));
            any = true;
        }
        for (mag *m; (m = d->empty) != NULL;) {
            d->empty = m->next;
            internal_free(m, mag_size(m->cap));
            any = true;
        }
        d->nfull = d->nempty = 0;
    }
    return any;
}

static void cache_flush_locked(kcache *cc) {
    for (unsigned c = 0; c < NCLASSES; c++) {
        mag **ms[2] = {&cc->slot[c].loaded, &cc->slot[c].prev};
        for (int i = 0; i < 2; i++) {
            mag *m = *ms[i];
            if (!m->cap)
                continue;
            held_sub(cc, m->count, m->count * class_units(c));
            mag_release_blocks(m);
            internal_free(m, mag_size(m->cap));
            *ms[i] = &g_empty_mag;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Regions                                                                   */
/* ------------------------------------------------------------------------ */

/* Layout: [start, t) alignment, [t, t + tag bytes) the tag table (one byte
 * per unit of the whole range, rounded up to words), the rest to the core. */
static kbuddy_status add_region_locked(void *start, size_t size, bool zeroed) {
    uintptr_t s = (uintptr_t)start;
    if (!start || !size || size > UINTPTR_MAX - s)
        return KBUDDY_EINVAL;
    uintptr_t e = s + size;
    size_t n = atomic_load_explicit(&g_nregions, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        if (s < g_regions[i].end && g_regions[i].start < e)
            return KBUDDY_EOVERLAP;
    if (n == KBUDDY_MALLOC_MAX_REGIONS)
        return KBUDDY_ENOMEM;
    uintptr_t t = (s + 3u) & ~(uintptr_t)3u;
    uintptr_t base = s >> UNIT_SHIFT;
    uintptr_t tag_bytes = ((((e - 1) >> UNIT_SHIFT) - base + 1) + 3u) & ~(uintptr_t)3u;
    if (t >= e || tag_bytes >= e - t)
        return KBUDDY_ENOMEM;
    uintptr_t core = t + tag_bytes;
    unsigned char *bytes = start; /* pointers are derived from start, not made from integers */
    kbuddy_status st = kbuddy_add_region(&g_heap, bytes + (core - s), (size_t)(e - core));
    if (st != KBUDDY_OK)
        return st;
    if (!zeroed)
        memset(bytes + (t - s), 0, (size_t)tag_bytes);
    g_regions[n] = (mregion){s, e, base, (tagcell *)(void *)(bytes + (t - s))};
    atomic_store_explicit(&g_nregions, n + 1, memory_order_release);
    g_region_bytes += size;
    g_tag_bytes += (size_t)(core - s);
    return KBUDDY_OK;
}

/* The core heap's out-of-memory handler. Every core call is made with the
 * lock held (the core heap itself has none), so this runs under it too:
 * first the depot goes back to the heap, then the grow hook is asked for a
 * region in which the request surely fits: two blocks of the order it
 * needs (an aligned block of order k lies in any 2^(k+1) units) plus the
 * bookkeeping. */
static bool on_oom(kbuddy_heap *h, size_t size, size_t align, void *ctx);

static void install_oom(void) { kbuddy_set_oom_handler(&g_heap, on_oom, NULL); }

static bool on_oom(kbuddy_heap *h, size_t size, size_t align, void *ctx) {
    (void)h;
    (void)ctx;
    if (depot_drain())
        return true;
    if (!g_hooks.grow)
        return false;
    size_t block = UNIT;
    while (block < size || block < align) {
        if (block > SIZE_MAX / 8)
            return false;
        block <<= 1;
    }
    size_t need = 2 * block + block / 4 + 4096;
    void *start;
    size_t got;
    if (!g_hooks.grow(need, &start, &got, g_hooks.grow_ctx))
        return false;
    return add_region_locked(start, got, g_hooks.grow_zeroed) == KBUDDY_OK;
}

kbuddy_status kbuddy_malloc_add_region(void *start, size_t size) {
    unsigned long irq = irq_off();
    lock();
    kbuddy_status st = add_region_locked(start, size, false);
    install_oom();
    unlock();
    irq_on(irq);
    return st;
}

const kbuddy_heap *kbuddy_global_heap(void) { return &g_heap; }

void kbuddy_malloc_set_hooks(const kbuddy_malloc_hooks *hooks) {
    if (hooks)
        g_hooks = *hooks;
    else
        memset(&g_hooks, 0, sizeof g_hooks);
    if (g_hooks.lock.acquire && g_hooks.lock.release)
        g_lock = g_hooks.lock;
    else
        g_lock = (kbuddy_lock){kbuddy_spinlock_acquire, kbuddy_spinlock_release, &g_spin};
    install_oom();
}

/* ------------------------------------------------------------------------ */
/* Per-CPU caches                                                            */
/* ------------------------------------------------------------------------ */

static kcache *cache_new_locked(void) {
    kcache *cc = internal_alloc(sizeof *cc);
    if (!cc)
        return NULL;
    for (unsigned c = 0; c < NCLASSES; c++)
        cc->slot[c].loaded = cc->slot[c].prev = &g_empty_mag;
    cc->hint = &g_no_region;
    atomic_init(&cc->blocks, 0);
    atomic_init(&cc->units, 0);
    cc->next = g_caches;
    cc->pprev = &g_caches;
    if (g_caches)
        g_caches->pprev = &cc->next;
    g_caches = cc;
    return cc;
}

#if KBUDDY_MALLOC_TLS
static NOINLINE kcache *cache_create(void) {
    if (tls_exited)
        return NULL;
    lock();
    kcache *cc = cache_new_locked();
    unlock();
    if (cc) {
        tls_cache = cc;
        if (g_hooks.thread_cache_created)
            g_hooks.thread_cache_created();
    }
    return cc;
}

static inline kcache *my_cache(void) {
    kcache *cc = tls_cache;
    return LIKELY(cc != NULL) ? cc : cache_create();
}

static inline kcache *cache_peek(void) { return tls_cache; }
#else
static NOINLINE kcache *cache_create(unsigned cpu) {
    lock();
    kcache *cc = cache_new_locked();
    unlock();
    g_cpu_cache[cpu] = cc;
    return cc;
}

static inline unsigned this_cpu(void) { return g_hooks.cpu_id ? g_hooks.cpu_id() : 0u; }

static inline kcache *my_cache(void) {
    unsigned cpu = this_cpu();
    if (UNLIKELY(cpu >= KBUDDY_MALLOC_MAX_CPUS))
        return NULL;
    kcache *cc = g_cpu_cache[cpu];
    return LIKELY(cc != NULL) ? cc : cache_create(cpu);
}

static inline kcache *cache_peek(void) {
    unsigned cpu = this_cpu();
    return cpu < KBUDDY_MALLOC_MAX_CPUS ? g_cpu_cache[cpu] : NULL;
}
#endif

/* The loaded magazine of class c is empty: swap in the previous one if it
 * is full, else trade the empty one for a full one from the depot, else
 * fill it from the core heap, all under one lock acquisition. Returns a
 * block still counted and tagged as cached, or NULL when out of memory. */
static NOINLINE void *cache_refill(kcache *cc, unsigned c) {
    cslot *s = &cc->slot[c];
    mag *m = s->prev;
    if (m->count) {
        s->prev = s->loaded;
        s->loaded = m;
        return m->blk[--m->count];
    }
    size_t cu = class_units(c);
    void *p = NULL;
    lock();
    depot *d = &g_depot[c];
    if ((m = d->full) != NULL) {
        d->full = m->next;
        d->nfull--;
        g_depot_blocks -= m->count;
        g_depot_units -= m->count * cu;
        g_trades++;
        held_add(cc, m->count, m->count * cu);
        if (s->prev->cap)
            mag_retire_empty(s->prev, c);
        s->prev = s->loaded;
        s->loaded = m;
    } else {
        m = s->loaded;
        if (!m->cap) {
            if (s->prev->cap) { /* an empty real magazine in prev: use it */
                m = s->prev;
                s->prev = s->loaded;
            } else {
                m = mag_get_empty(c);
            }
            if (m)
                s->loaded = m;
        }
        if (m) {
            uint32_t got = core_take_run(c, TAG_CACHED, &m->blk[m->count], m->cap - m->count);
            m->count += got;
            while (m->count < m->cap && (p = core_take(c, TAG_CACHED)) != NULL) {
                m->blk[m->count++] = p;
                got++;
            }
            held_add(cc, got, got * cu);
            g_fills += got;
        } else if ((p = core_take(c, TAG_CACHED)) != NULL) {
            held_add(cc, 1, cu); /* no magazine to be had: just this block */
            g_fills++;
            unlock();
            return p;
        }
    }
    unlock();
    return m && m->count ? m->blk[--m->count] : NULL;
}

/* The loaded magazine of class c is full: swap in the previous one if it
 * is empty, else move the previous (full) one to the depot, or back to the
 * core heap when the depot holds enough, and load an empty one. Returns
 * false if p went straight back to the core (no magazine to be had). */
static NOINLINE bool cache_overflow(kcache *cc, unsigned c, void *p) {
    cslot *s = &cc->slot[c];
    mag *m = s->prev;
    if (m->cap && !m->count) {
        s->prev = s->loaded;
        s->loaded = m;
        m->blk[m->count++] = p;
        return true;
    }
    size_t cu = class_units(c);
    mag *fresh = NULL;
    lock();
    if (m->cap) {
        depot *d = &g_depot[c];
        held_sub(cc, m->count, m->count * cu);
        if (d->nfull < KBUDDY_MALLOC_DEPOT_MAGS) {
            m->next = d->full;
            d->full = m;
            d->nfull++;
            g_depot_blocks += m->count;
            g_depot_units += m->count * cu;
            g_trades++;
        } else {
            mag_release_blocks(m);
            fresh = m;
        }
        s->prev = &g_empty_mag;
    }
    if (!fresh)
        fresh = mag_get_empty(c);
    if (!fresh) {
        core_give(p);
        unlock();
        return false;
    }
    s->prev = s->loaded;
    s->loaded = fresh;
    unlock();
    fresh->blk[fresh->count++] = p;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Allocation                                                               */
/* ------------------------------------------------------------------------ */

/* A small block for a CPU without a cache: straight from the core heap.
 * Out of line, like every cold path below, so that the fast paths save
 * few registers. */
static NOINLINE void *alloc_uncached(unsigned c) {
    lock();
    void *p = core_take(c, TAG_LIVE);
    g_large_calls++;
    unlock();
    return p;
}

static void *alloc_small(unsigned c) {
    unsigned long irq = irq_off();
    kcache *cc = my_cache();
    void *p;
    if (LIKELY(cc != NULL)) {
        mag *m = cc->slot[c].loaded;
        p = LIKELY(m->count) ? m->blk[--m->count] : cache_refill(cc, c);
        if (LIKELY(p != NULL)) {
            tag_live(tag_of(region_of(&cc->hint, (uintptr_t)p), (uintptr_t)p), c);
            held_sub(cc, 1, class_units(c));
        }
    } else {
        p = alloc_uncached(c);
    }
    irq_on(irq);
    return p;
}

static NOINLINE void *alloc_large(size_t size, size_t align) {
    unsigned long irq = irq_off();
    lock();
    g_large_calls++;
    void *p = kbuddy_alloc(&g_heap, size, align);
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
    irq_on(irq);
    return p;
}

/* size bytes aligned to align (a power of two): through the caches when
 * they can serve it. errno is the callers' business. */
static inline void *alloc_any(size_t size, size_t align) {
    if (LIKELY(size <= CACHE_MAX && align <= UNIT))
        return alloc_small(class_of_size(size));
    return alloc_large(size, align < UNIT ? UNIT : align);
}

void *kbm_malloc(size_t size) {
    void *p = alloc_any(size, UNIT);
    if (UNLIKELY(!p))
        SET_ERRNO(KBM_ENOMEM);
    return p;
}

void *kbm_calloc(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) {
        SET_ERRNO(KBM_ENOMEM);
        return NULL;
    }
    void *p = kbm_malloc(n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

static void *alloc_aligned(size_t align, size_t size) {
    void *p = alloc_any(size, align);
    if (!p)
        SET_ERRNO(KBM_ENOMEM);
    return p;
}

void *kbm_aligned_alloc(size_t align, size_t size) {
    if (!is_pow2(align)) {
        SET_ERRNO(KBM_EINVAL);
        return NULL;
    }
    return alloc_aligned(align, size);
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
    return alloc_aligned(align, size);
}

int kbm_posix_memalign(void **out, size_t align, size_t size) {
    if (!out || !is_pow2(align) || align % sizeof(void *))
        return KBM_EINVAL;
    void *p = alloc_any(size, align);
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

/* Look ptr up: its region, its tag. KBUDDY_OK, or why it is not even a
 * candidate. */
static kbuddy_status locate(const mregion **hint, const void *ptr, tagref *t) {
    uintptr_t a = (uintptr_t)ptr;
    const mregion *r = region_of(hint, a);
    if (UNLIKELY(!r))
        return KBUDDY_EFOREIGN;
    if (UNLIKELY(a & (UNIT - 1)))
        return KBUDDY_EBADPTR;
    *t = tag_of(r, a);
    return KBUDDY_OK;
}

/* Take a large block out of the program's hands (LIVE|LARGE -> 0). */
static kbuddy_status claim_large(void *ptr, tagref t) {
    unsigned tag = TAG_LIVE | TAG_LARGE;
    if (tag_cas(t, &tag, 0))
        return KBUDDY_OK;
    /* changed under us: a racing free */
    return (tag & TAG_LIVE) ? KBUDDY_EBADPTR : why_not_live(ptr, tag);
}

/* A large block goes back to the core heap under the lock. */
static NOINLINE kbuddy_status release_large(void *ptr, tagref t, bool sized, size_t size,
                                            size_t align) {
    kbuddy_status st = claim_large(ptr, t);
    if (st != KBUDDY_OK)
        return st;
    lock();
    g_large_calls++;
    st = sized ? kbuddy_free_sized(&g_heap, ptr, size, align) : kbuddy_free(&g_heap, ptr);
    if (st != KBUDDY_OK) /* refused: the block stays the program's */
        tag_set(t, TAG_LIVE | TAG_LARGE);
    unlock();
    return st;
}

/* A small block freed on a CPU without a cache. */
static NOINLINE void release_uncached(void *ptr) {
    lock();
    core_give(ptr);
    g_large_calls++;
    unlock();
}

/* Free ptr; with `sized`, first check that size (and align) can be its. */
static kbuddy_status release(void *ptr, bool sized, size_t size, size_t align) {
    uintptr_t a = (uintptr_t)ptr;
    unsigned long irq = irq_off();
    kcache *cc = my_cache();
    const mregion *local = &g_no_region;
    tagref t;
    kbuddy_status st = locate(cc ? &cc->hint : &local, ptr, &t);
    if (UNLIKELY(st != KBUDDY_OK))
        goto out;
    unsigned tag = tag_get(t), c;
    for (;;) {
        if (UNLIKELY(!(tag & TAG_LIVE))) {
            st = why_not_live(ptr, tag);
            goto out;
        }
        c = tag & TAG_CLASS;
        if (c == TAG_LARGE)
            break;
        if (UNLIKELY(sized && (size > class_bytes(c) || !is_pow2(align) || (a & (align - 1))))) {
            st = KBUDDY_ESIZE;
            goto out;
        }
        if (LIKELY(tag_cas(t, &tag, tag ^ TAG_FLIP)))
            break;
    }
    if (UNLIKELY(c == TAG_LARGE)) {
        st = release_large(ptr, t, sized, size, align);
    } else if (LIKELY(cc != NULL)) {
        mag *m = cc->slot[c].loaded;
        if (LIKELY(m->count < m->cap)) {
            m->blk[m->count++] = ptr;
            held_add(cc, 1, class_units(c));
        } else if (cache_overflow(cc, c, ptr)) {
            held_add(cc, 1, class_units(c));
        }
    } else {
        release_uncached(ptr);
    }
out:
    irq_on(irq);
    return st;
}

void kbm_free(void *ptr) {
    if (!ptr)
        return;
    kbuddy_status st = release(ptr, false, 0, 1);
    if (UNLIKELY(st != KBUDDY_OK))
        report(ptr, st, "free");
}

void kbm_free_sized(void *ptr, size_t size) {
    if (!ptr)
        return;
    kbuddy_status st = release(ptr, true, size, 1);
    if (st != KBUDDY_OK)
        report(ptr, st, "free_sized");
}

void kbm_free_aligned_sized(void *ptr, size_t align, size_t size) {
    if (!ptr)
        return;
    kbuddy_status st = release(ptr, true, size, align);
    if (st != KBUDDY_OK)
        report(ptr, st, "free_aligned_sized");
}

/* ------------------------------------------------------------------------ */
/* realloc, usable size                                                     */
/* ------------------------------------------------------------------------ */

/* The tag of ptr if it is a live block, else 0 with *why set. */
static unsigned live_tag(void *ptr, kbuddy_status *why) {
    unsigned long irq = irq_off();
    kcache *cc = cache_peek();
    const mregion *local = &g_no_region;
    tagref t;
    unsigned tag = 0;
    *why = locate(cc ? &cc->hint : &local, ptr, &t);
    if (*why == KBUDDY_OK) {
        tag = tag_get(t);
        if (!(tag & TAG_LIVE)) {
            *why = why_not_live(ptr, tag);
            tag = 0;
        }
    }
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
    if (st == KBUDDY_OK)
        st = claim_large(ptr, t);
    if (st == KBUDDY_OK) {
        lock();
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
    st = release(ptr, false, 0, 1);
    if (st != KBUDDY_OK)
        report(ptr, st, "realloc");
    return q;
}

void *kbm_realloc(void *ptr, size_t size) {
    if (!ptr)
        return kbm_malloc(size);
    kbuddy_status why;
    unsigned tag = live_tag(ptr, &why);
    if (!tag) {
        report(ptr, why, "realloc");
        SET_ERRNO(KBM_EINVAL);
        return NULL;
    }
    if (size == 0) { /* glibc: free, and return NULL */
        kbuddy_status st = release(ptr, false, 0, 1);
        if (st != KBUDDY_OK)
            report(ptr, st, "realloc");
        return NULL;
    }
    unsigned c = tag & TAG_CLASS;
    if (c == TAG_LARGE)
        return realloc_large(ptr, size);
    size_t have = class_bytes(c);
    if (size <= have && (size > have / 2 || class_of_size(size) == c))
        return ptr;
    void *q = kbm_malloc(size);
    if (!q)
        return NULL;
    memcpy(q, ptr, size < have ? size : have);
    kbuddy_status st = release(ptr, false, 0, 1);
    if (st != KBUDDY_OK)
        report(ptr, st, "realloc");
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
    kcache *cc = cache_peek();
    const mregion *local = &g_no_region;
    tagref t;
    size_t n = 0;
    if (locate(cc ? &cc->hint : &local, ptr, &t) == KBUDDY_OK) {
        unsigned tag = tag_get(t);
        if ((tag & TAG_LIVE) && (tag & TAG_CLASS) != TAG_LARGE) {
            n = class_bytes(tag & TAG_CLASS);
        } else if (tag & TAG_LIVE) {
            lock();
            n = kbuddy_usable_size(&g_heap, ptr);
            unlock();
        }
    }
    irq_on(irq);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Caches, statistics, checks                                               */
/* ------------------------------------------------------------------------ */

void kbuddy_malloc_flush_caches(void) {
    unsigned long irq = irq_off();
    kcache *cc = cache_peek();
    lock();
    if (cc)
        cache_flush_locked(cc);
    (void)depot_drain();
    unlock();
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
    cache_flush_locked(cc);
    *cc->pprev = cc->next;
    if (cc->next)
        cc->next->pprev = cc->pprev;
    internal_free(cc, sizeof *cc);
    unlock();
#else
    unsigned long irq = irq_off();
    kcache *cc = cache_peek();
    if (cc) {
        lock();
        cache_flush_locked(cc);
        unlock();
    }
    irq_on(irq);
#endif
}

void kbuddy_malloc_get_stats(kbuddy_malloc_stats *out) {
    if (!out)
        return;
    unsigned long irq = irq_off();
    lock();
    kbuddy_get_stats(&g_heap, &out->heap);
    size_t blocks = g_depot_blocks, units = g_depot_units, caches = 0;
    for (const kcache *cc = g_caches; cc; cc = cc->next) {
        blocks += atomic_load_explicit(&cc->blocks, memory_order_relaxed);
        units += atomic_load_explicit(&cc->units, memory_order_relaxed);
        caches++;
    }
    out->cached_blocks = blocks;
    out->cached_bytes = units << UNIT_SHIFT;
    out->depot_blocks = g_depot_blocks;
    out->internal_blocks = g_internal_blocks;
    out->internal_bytes = g_internal_bytes;
    out->live_blocks = out->heap.allocations - blocks - g_internal_blocks;
    out->live_bytes = out->heap.allocated - out->cached_bytes - g_internal_bytes;
    out->caches = caches;
    out->regions = atomic_load_explicit(&g_nregions, memory_order_relaxed);
    out->region_bytes = g_region_bytes;
    out->tag_bytes = g_tag_bytes;
    out->depot_trades = g_trades;
    out->core_fills = g_fills;
    out->core_drains = g_drains;
    out->large_calls = g_large_calls;
    unlock();
    irq_on(irq);
    out->bad_frees = atomic_load_explicit(&g_bad_frees, memory_order_relaxed);
}

typedef struct checker {
    const mregion *hint;
    size_t cached, cached_units, untagged, untagged_bytes;
    bool bad;
} checker;

/* Every block of the core heap: tags only on block starts, and each
 * consistent with the block's size. */
static void check_block(void *vctx, void *start, size_t size, bool used) {
    checker *k = vctx;
    uintptr_t a = (uintptr_t)start;
    const mregion *r = region_of(&k->hint, a);
    if (!r) {
        k->bad = true;
        return;
    }
    for (size_t off = used ? UNIT : 0; off < size; off += UNIT)
        if (tag_get(tag_of(r, a + off)))
            k->bad = true;
    if (!used)
        return;
    unsigned tag = tag_get(tag_of(r, a)), c = tag & TAG_CLASS;
    bool live = tag & TAG_LIVE, cached = tag & TAG_CACHED;
    if (!tag) { /* the layer's own */
        k->untagged++;
        k->untagged_bytes += size;
        return;
    }
    /* Exactly one state; a class that exists, of this block's size; large
     * blocks are never cached. */
    bool small_ok = c < NCLASSES && size == class_bytes(c);
    k->bad |= live == cached || !(small_ok || (c == TAG_LARGE && live));
    if (cached && small_ok) {
        k->cached++;
        k->cached_units += class_units(c);
    }
}

/* Each block of a magazine of class c is tagged cached in that class. */
static bool mag_ok(const mag *m, unsigned c, const mregion **hint) {
    if (m->count > m->cap || (m->cap && m->cap != mag_cap(c)))
        return false;
    for (uint32_t i = 0; i < m->count; i++) {
        const mregion *r = region_of(hint, (uintptr_t)m->blk[i]);
        if (!r || tag_get(tag_of(r, (uintptr_t)m->blk[i])) != (TAG_CACHED | c))
            return false;
    }
    return true;
}

kbuddy_status kbuddy_malloc_check(void) {
    unsigned long irq = irq_off();
    lock();
    kbuddy_status st = kbuddy_check(&g_heap);
    checker k = {&g_no_region, 0, 0, 0, 0, false};
    if (st == KBUDDY_OK)
        kbuddy_walk(&g_heap, check_block, &k);
    size_t blocks = 0, units = 0;
    for (unsigned c = 0; c < NCLASSES; c++) {
        uint32_t nfull = 0, nempty = 0;
        for (const mag *m = g_depot[c].full; m; m = m->next, nfull++) {
            k.bad |= !mag_ok(m, c, &k.hint) || m->count != m->cap;
            blocks += m->count;
            units += m->count * class_units(c);
        }
        for (const mag *m = g_depot[c].empty; m; m = m->next, nempty++)
            k.bad |= m->count != 0 || !mag_ok(m, c, &k.hint);
        k.bad |= nfull != g_depot[c].nfull || nempty != g_depot[c].nempty;
    }
    k.bad |= blocks != g_depot_blocks || units != g_depot_units;
    for (const kcache *cc = g_caches; cc; cc = cc->next) {
        size_t cb = 0, cu = 0;
        for (unsigned c = 0; c < NCLASSES; c++)
            for (int i = 0; i < 2; i++) {
                const mag *m = i ? cc->slot[c].prev : cc->slot[c].loaded;
                k.bad |= !mag_ok(m, c, &k.hint);
                cb += m->count;
                cu += m->count * class_units(c);
            }
        k.bad |= cb != atomic_load_explicit(&cc->blocks, memory_order_relaxed) ||
                 cu != atomic_load_explicit(&cc->units, memory_order_relaxed);
        blocks += cb;
        units += cu;
    }
    k.bad |= k.cached != blocks || k.cached_units != units || k.untagged != g_internal_blocks ||
             k.untagged_bytes != g_internal_bytes;
    if (st == KBUDDY_OK && k.bad)
        st = KBUDDY_ECORRUPT;
    unlock();
    irq_on(irq);
    return st;
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
