/*
 * Large blocks in mappings of their own. Part of kbuddy_malloc.c (included
 * once, by it, after kbm_regions.h).
 *
 * With the map and unmap hooks installed, a request above the map
 * threshold (kbuddy_malloc_hooks.map_threshold, 0: KBUDDY_MALLOC_MAP_THRESHOLD,
 * 1 MiB, raised by frees as glibc's is (below); requests within the cache
 * limit are cached whatever it says) gets
 * a mapping of its own, its size rounded up to MAP_PAGE, and the block is
 * the mapping's first byte. Nothing is written into it, neither a header
 * nor bookkeeping: an untouched block costs no memory, a calloc of fresh
 * memory (map_zeroed) writes nothing, and free gives the whole mapping
 * back at once. realloc resizes it with the remap hook (in place when the
 * system can); without one it keeps a shrinking block where it is and
 * moves a growing one. When no mapping can be had the request goes to the
 * core heap as it would without the hooks.
 *
 * The layer knows its mappings from a registry, never from their memory:
 * an array of {start, size, size requested} sorted by start, under the
 * lock. Its first MAP_STATIC entries are static (a kernel's few large
 * blocks need no heap memory to be tracked); beyond that it lives in the
 * core heap as one of the layer's own (untagged) allocations, doubled when
 * full and given back when the last mapping goes. Entries are reserved
 * before the map hook runs, so that a mapping once made is always
 * recorded. A pointer that is not in a region is looked up by binary
 * search, so a free of a pointer that is not a live mapping's start is
 * told apart and refused with nothing changed:
 *   inside a live mapping                           KBUDDY_EBADPTR
 *   the start of a mapping another CPU is resizing
 *   in realloc, or of one of the last MAP_RECENT
 *   mappings given back                             KBUDDY_EDOUBLEFREE
 *   anywhere else                                   KBUDDY_EFOREIGN
 * A free takes the entry out under the lock before the unmap hook runs,
 * so of two racing frees exactly one finds it.
 *
 * Cost: the hook's, plus O(log M) under the lock to find a mapping and
 * O(M) to add or remove one (a memmove of at most M entries of 32 bytes;
 * M = live mappings, each at least the threshold in size).
 */

#define MAP_PAGE ((size_t)4096) /* the hooks' unit (kbuddy_malloc_hooks) */
#define MAP_STATIC 16u
#define MAP_RECENT 8u

/* Freestanding: declared here rather than taken from <string.h>. */
void *memmove(void *dst, const void *src, size_t n);

typedef struct mapping {
    uintptr_t start; /* the block, and the mapping: [start, start + size)   */
    size_t size;     /* the mapping's bytes, a multiple of MAP_PAGE         */
    size_t req;      /* the size requested, or set by the last realloc      */
    bool busy;       /* being resized by realloc with the lock released     */
} mapping;

/* Under the lock, but g_maps_seen: set when the first mapping is made, so
 * that until then a pointer outside every region is foreign without a
 * look at the registry (and its lock). */
static mapping g_map_static[MAP_STATIC];
static mapping *g_maps = g_map_static;
static size_t g_nmaps, g_maps_cap = MAP_STATIC, g_maps_reserved, g_mapped_bytes;
static _Atomic bool g_maps_seen;
static uintptr_t g_recent[MAP_RECENT]; /* starts of mappings given back */
static unsigned g_recent_next;

/* Freed mappings kept for reuse (KBUDDY_MALLOC_MAP_CACHE entries, under
 * the lock): not in the registry (a free of one is refused as any free of
 * a mapping given back is), not counted as mapped; their bytes in
 * g_map_cached_bytes. */
#define MAP_CACHE_N (KBUDDY_MALLOC_MAP_CACHE > 0 ? KBUDDY_MALLOC_MAP_CACHE : 1)
typedef struct cached_map {
    uintptr_t start;
    size_t size;
} cached_map;
static cached_map g_map_cache[MAP_CACHE_N];
static size_t g_map_ncached, g_map_cached_bytes;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

/* The default threshold moves as glibc's does: a free of a mapping of up
 * to KBUDDY_MALLOC_MAP_THRESHOLD_MAX bytes raises it to that size, so that
 * a program that keeps allocating and freeing blocks of a few MiB gets
 * them from the heap, which reuses their pages, instead of paying a
 * mapping and a page fault per page every time (suite malloc-large: 21 s
 * against glibc's 3 s). A threshold set in the hooks stays where it is. */
static _Atomic size_t g_map_raised;

static size_t map_threshold(void) {
    if (g_hooks.map_threshold)
        return g_hooks.map_threshold;
    size_t t = atomic_load_explicit(&g_map_raised, memory_order_relaxed);
    return t > KBUDDY_MALLOC_MAP_THRESHOLD ? t : KBUDDY_MALLOC_MAP_THRESHOLD;
}

static bool map_cache_on(void);

/* A mapping of `bytes` was freed (under the lock: one writer at a time). */
static void map_threshold_raise(size_t bytes) {
    if (KBUDDY_MALLOC_MAP_CACHE > 0 && map_cache_on()) /* the cache reuses the pages instead */
        return;
    if (!g_hooks.map_threshold && bytes <= KBUDDY_MALLOC_MAP_THRESHOLD_MAX &&
        bytes > atomic_load_explicit(&g_map_raised, memory_order_relaxed))
        atomic_store_explicit(&g_map_raised, bytes, memory_order_relaxed);
}

/* Does a request of size bytes get a mapping of its own? */
static bool map_wanted(size_t size) {
    return g_hooks.map && g_hooks.unmap && size > map_threshold();
}

/* Can a pointer outside every region be (or have been) a mapping? One
 * the program got from here is seen, whatever the CPU: the store was made
 * before the program could pass the pointer on. */
static inline bool mapped_any(void) { return atomic_load_explicit(&g_maps_seen, memory_order_relaxed); }

/* size rounded up to whole MAP_PAGEs in *out; false if that overflows. */
static bool map_round(size_t size, size_t *out) {
    if (size > SIZE_MAX - (MAP_PAGE - 1))
        return false;
    *out = (size + MAP_PAGE - 1) & ~(MAP_PAGE - 1);
    return true;
}

/* The index of the first mapping that starts above a (g_nmaps if none). */
static size_t maps_above(uintptr_t a) {
    size_t lo = 0, hi = g_nmaps;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g_maps[mid].start <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The mapping holding address a, or NULL. */
static mapping *maps_holding(uintptr_t a) {
    size_t i = maps_above(a);
    if (i == 0 || a - g_maps[i - 1].start >= g_maps[i - 1].size)
        return NULL;
    return &g_maps[i - 1];
}

/* Does [a, a + n) meet a mapping? (The one before it, or the next.) */
static bool maps_meet(uintptr_t a, size_t n) {
    size_t i = maps_above(a);
    return (i > 0 && a - g_maps[i - 1].start < g_maps[i - 1].size) ||
           (i < g_nmaps && g_maps[i].start - a < n);
}

/* The mapping that starts at a, or NULL. */
static mapping *maps_at(uintptr_t a) {
    mapping *m = maps_holding(a);
    return m && m->start == a ? m : NULL;
}

static void recent_add(uintptr_t a) {
    g_recent[g_recent_next] = a;
    g_recent_next = (g_recent_next + 1) % MAP_RECENT;
}

static void recent_forget(uintptr_t a) {
    for (unsigned i = 0; i < MAP_RECENT; i++)
        if (g_recent[i] == a)
            g_recent[i] = 0;
}

/* Why a, outside every region, is not a live mapping's start. */
static kbuddy_status maps_why_not(uintptr_t a) {
    mapping *m = maps_holding(a);
    if (m)
        return m->start == a ? KBUDDY_EDOUBLEFREE : KBUDDY_EBADPTR; /* busy, or inside */
    for (unsigned i = 0; i < MAP_RECENT; i++)
        if (a && g_recent[i] == a)
            return KBUDDY_EDOUBLEFREE;
    return KBUDDY_EFOREIGN;
}

/* ------------------------------------------------------------------------ */
/* The registry                                                             */
/* ------------------------------------------------------------------------ */

/* Make sure one more entry fits, for a mapping about to be made: the
 * array doubles (into the core heap) when reservations would overfill it.
 * False when the core heap has no room for a larger one. */
static bool maps_reserve_locked(void) {
    if (g_nmaps + g_maps_reserved == g_maps_cap) {
        size_t cap = 2 * g_maps_cap;
        mapping *n = internal_alloc(cap * sizeof *n);
        if (!n)
            return false;
        memcpy(n, g_maps, g_nmaps * sizeof *n);
        if (g_maps != g_map_static)
            internal_free(g_maps, g_maps_cap * sizeof *g_maps);
        g_maps = n;
        g_maps_cap = cap;
    }
    g_maps_reserved++;
    return true;
}

/* An empty registry goes back to its static array. */
static void maps_shrink_locked(void) {
    if (g_nmaps == 0 && g_maps_reserved == 0 && g_maps != g_map_static) {
        internal_free(g_maps, g_maps_cap * sizeof *g_maps);
        g_maps = g_map_static;
        g_maps_cap = MAP_STATIC;
    }
}

/* Record a mapping, in its place by address. Room was reserved (or an
 * entry was just removed). */
static void maps_insert_locked(uintptr_t start, size_t size, size_t req) {
    size_t i = maps_above(start);
    memmove(&g_maps[i + 1], &g_maps[i], (g_nmaps - i) * sizeof *g_maps);
    g_maps[i] = (mapping){start, size, req, false};
    g_nmaps++;
    g_mapped_bytes += size;
    atomic_store_explicit(&g_maps_seen, true, memory_order_relaxed);
    recent_forget(start);
}

/* Forget a mapping (about to be given back, or moved by remap). */
static void maps_remove_locked(mapping *m) {
    size_t i = (size_t)(m - g_maps);
    recent_add(m->start);
    g_mapped_bytes -= m->size;
    memmove(m, m + 1, (g_nmaps - i - 1) * sizeof *g_maps);
    g_nmaps--;
}

/* ------------------------------------------------------------------------ */
/* The cache of freed mappings                                              */
/* ------------------------------------------------------------------------ */

/* With KBUDDY_MALLOC_MAP_CACHE (kbuddy_malloc.h), a freed mapping of up to
 * KBUDDY_MALLOC_MAP_THRESHOLD_MAX bytes is kept, pages and all, while the
 * cache holds at most max(that, a quarter of the live mapped bytes), and
 * the next large request takes the smallest kept mapping that holds it,
 * as it is, or grows the largest kept one with the remap hook (the kernel
 * moves page tables, not bytes, and the pages stay). So a program that
 * keeps freeing and allocating blocks of a few MiB touches fresh pages
 * only where a block outgrows the one before it, and keeps resident about
 * what it holds; blocks from the core heap need a free buddy block of
 * their order, aligned, and land in fresh memory while freed ones keep
 * their pages (suite malloc-large: 1.68x glibc's peak RSS from the core
 * heap with the threshold raised, 0.99x from the cache, at 0.2x glibc's
 * time; mstress 1.25x -> 0.75x). What a block leaves unused of a larger
 * kept mapping came out of the cache, so it is bounded as the cache is.
 * Without the cache frees raise the threshold (map_threshold_raise). */

/* Is the cache in use? With KBUDDY_MALLOC_MAP_CACHE (tested by the
 * callers, at compile time), only with the default threshold (a threshold
 * set in the hooks stays where it is, and so does every mapping's fate)
 * and the remap hook. */
static bool map_cache_on(void) { return !g_hooks.map_threshold && g_hooks.remap; }

/* Keep a mapping taken out of the registry, if it fits the cache's bounds:
 * true if kept (the caller then unmaps nothing). Under the lock. */
static bool map_cache_put_locked(uintptr_t start, size_t size) {
    if (KBUDDY_MALLOC_MAP_CACHE <= 0 || !map_cache_on() || size > KBUDDY_MALLOC_MAP_THRESHOLD_MAX)
        return false;
    size_t bound = g_mapped_bytes / 4;
    if (bound < KBUDDY_MALLOC_MAP_THRESHOLD_MAX)
        bound = KBUDDY_MALLOC_MAP_THRESHOLD_MAX;
    if (g_map_ncached == MAP_CACHE_N || g_map_cached_bytes + size > bound)
        return false;
    g_map_cache[g_map_ncached++] = (cached_map){start, size};
    g_map_cached_bytes += size;
    return true;
}

/* A live mapping freed (by free or realloc): out of the registry, and
 * kept in the cache if it fits. Returns the bytes the caller unmaps once
 * it has let go of the lock (0: kept). Under the lock. */
static size_t maps_free_locked(mapping *m) {
    uintptr_t start = m->start;
    size_t n = m->size;
    maps_remove_locked(m);
    maps_shrink_locked();
    return map_cache_put_locked(start, n) ? 0 : n;
}

/* Take the kept mapping that best serves `bytes` (whole pages): the
 * smallest that holds them, else the largest. False if none. Under the
 * lock. */
static bool map_cache_take_locked(size_t bytes, cached_map *out) {
    size_t best = SIZE_MAX, big = SIZE_MAX;
    for (size_t i = 0; i < g_map_ncached; i++) {
        size_t n = g_map_cache[i].size;
        if (n >= bytes && (best == SIZE_MAX || n < g_map_cache[best].size))
            best = i;
        if (big == SIZE_MAX || n > g_map_cache[big].size)
            big = i;
    }
    size_t i = best != SIZE_MAX ? best : big;
    if (i == SIZE_MAX)
        return false;
    *out = g_map_cache[i];
    g_map_cache[i] = g_map_cache[--g_map_ncached];
    g_map_cached_bytes -= out->size;
    return true;
}

/* Take every kept mapping out of the cache into out[] (room for
 * MAP_CACHE_N), for the caller to unmap once it has let go of the lock
 * (kbuddy_malloc_trim). Returns how many. Under the lock. */
static size_t map_cache_take_all_locked(cached_map *out) {
    size_t n = g_map_ncached;
    for (size_t i = 0; i < n; i++)
        out[i] = g_map_cache[i];
    g_map_ncached = 0;
    g_map_cached_bytes = 0;
    return n;
}

/* Unmap every kept mapping now, from the core heap's out-of-memory handler
 * (their address space, for a region), which runs under the lock as grow
 * does: the one place where unmap runs with the lock held (documented at
 * the unmap hook). True if there was any. */
static bool map_cache_drain_locked(void) {
    bool any = g_map_ncached > 0;
    while (g_map_ncached) {
        cached_map m = g_map_cache[--g_map_ncached];
        g_map_cached_bytes -= m.size;
        g_hooks.unmap((void *)m.start, m.size, g_hooks.map_ctx);
    }
    return any;
}

/* The kept mappings are whole pages of at most
 * KBUDDY_MALLOC_MAP_THRESHOLD_MAX bytes each, meet no region, no live
 * mapping and no other kept one, and add up to g_map_cached_bytes. Under
 * the lock (kbuddy_malloc_check). O(kept^2 + kept log mappings). */
static bool map_cache_ok_locked(void) {
    size_t bytes = 0;
    bool bad = g_map_ncached > MAP_CACHE_N;
    for (size_t i = 0; i < g_map_ncached && !bad; i++) {
        cached_map m = g_map_cache[i];
        bad |= !m.size || ((m.start | m.size) & (MAP_PAGE - 1)) ||
               m.size > KBUDDY_MALLOC_MAP_THRESHOLD_MAX || m.start > UINTPTR_MAX - m.size ||
               meets_region(m.start, m.size) || maps_meet(m.start, m.size);
        for (size_t j = 0; j < i; j++)
            bad |= m.start < g_map_cache[j].start + g_map_cache[j].size &&
                   g_map_cache[j].start < m.start + m.size;
        bytes += m.size;
    }
    return !bad && bytes == g_map_cached_bytes;
}

/* A kept mapping made to hold `bytes` (no lock held): as it is when it
 * does (cutting it down would give back pages that the next larger block
 * touches again: suite malloc-large took 1.6-1.9x glibc's time when
 * mappings over 2x or 4x the request were cut, 0.2x without), else grown
 * by the remap hook; NULL (and unmapped) if that fails. Its size in
 * *size. */
static void *map_cache_fit(cached_map m, size_t bytes, size_t *size) {
    if (m.size >= bytes) {
        *size = m.size;
        return (void *)m.start;
    }
    void *q = g_hooks.remap((void *)m.start, m.size, bytes, g_hooks.map_ctx);
    if (!q) {
        g_hooks.unmap((void *)m.start, m.size, g_hooks.map_ctx);
        return NULL;
    }
    *size = bytes;
    return q;
}

/* ------------------------------------------------------------------------ */
/* Allocation and free                                                      */
/* ------------------------------------------------------------------------ */

/* A mapping of its own for size bytes aligned to align (a power of two),
 * or NULL when none can be had (the caller then asks the core heap; errno
 * is left alone). Runs the hook with no lock held, interrupts as the
 * caller has them (restored). */
static void *alloc_mapped_any(size_t size, size_t align, bool *fresh) {
    size_t bytes;
    if (!map_round(size, &bytes))
        return NULL;
    cached_map kept = {0, 0};
    unsigned long irq = irq_off();
    lock();
    bool room = maps_reserve_locked();
    bool reuse = room && align <= MAP_PAGE && map_cache_take_locked(bytes, &kept);
    unlock();
    irq_on(irq);
    if (!room)
        return NULL;
    void *p = NULL;
    *fresh = true;
    if (reuse && (p = map_cache_fit(kept, bytes, &bytes)) != NULL)
        *fresh = false;
    else
        p = g_hooks.map(bytes, align < MAP_PAGE ? MAP_PAGE : align, g_hooks.map_ctx);
    uintptr_t a = (uintptr_t)p;
    /* A hook that breaks its contract gets its memory refused: misaligned,
     * it goes back; overlapping a region or a live mapping, it is neither
     * used nor unmapped (which would take the other's memory with it). */
    bool aligned = p && !(a & (align - 1)) && !(a & (MAP_PAGE - 1)) && a <= UINTPTR_MAX - bytes;
    bool meets = false;
    irq = irq_off();
    lock();
    if (aligned)
        meets = meets_region(a, bytes) || maps_meet(a, bytes);
    g_maps_reserved--;
    if (aligned && !meets)
        maps_insert_locked(a, bytes, size);
    else
        maps_shrink_locked();
    unlock();
    irq_on(irq);
    if (aligned && !meets)
        return p;
    if (p && !aligned)
        g_hooks.unmap(p, bytes, g_hooks.map_ctx);
    return NULL;
}

static void *alloc_mapped(size_t size, size_t align) {
    bool fresh;
    return alloc_mapped_any(size, align, &fresh);
}

/* As alloc_mapped, and all zero: a fresh mapping from a hook whose memory
 * reads as zero is not touched, anything else is cleared (calloc). */
static void *alloc_mapped_zeroed(size_t size) {
    bool fresh;
    void *p = alloc_mapped_any(size, UNIT, &fresh);
    if (p && (!fresh || !g_hooks.map_zeroed))
        memset(p, 0, size);
    return p;
}

/* Free's side: take the mapping that starts at ptr (outside every region)
 * out of the registry, if it is one and the stated size (sized: exactly
 * the size requested) and alignment (a power of two ptr is aligned to)
 * fit; its bytes in *bytes, for mapped_unmap once interrupts are restored.
 * Else why not, with nothing changed. Interrupts masked, no lock held. */
static kbuddy_status mapped_take(void *ptr, bool sized, size_t size, size_t align, size_t *bytes) {
    uintptr_t a = (uintptr_t)ptr;
    kbuddy_status st = KBUDDY_OK;
    lock();
    mapping *m = maps_at(a);
    if (!m || m->busy)
        st = maps_why_not(a);
    else if (sized && (size != m->req || !is_pow2(align) || (a & (align - 1))))
        st = KBUDDY_ESIZE;
    else {
        map_threshold_raise(m->size);
        *bytes = maps_free_locked(m);
    }
    unlock();
    return st;
}

/* Give a mapping taken out of the registry back (no lock held,
 * interrupts restored); bytes 0: nothing to give (the mapping was kept in
 * the cache, or none was taken). */
static void mapped_unmap(void *ptr, size_t bytes) {
    if (bytes)
        g_hooks.unmap(ptr, bytes, g_hooks.map_ctx);
}

/* The usable bytes of the mapping that starts at ptr, else 0. Interrupts
 * masked, no lock held. */
static size_t mapped_usable(const void *ptr) {
    lock();
    const mapping *m = maps_at((uintptr_t)ptr);
    size_t n = m ? m->size : 0;
    unlock();
    return n;
}

/* ------------------------------------------------------------------------ */
/* realloc                                                                  */
/* ------------------------------------------------------------------------ */

#if defined(KBUDDY_MALLOC_ERRNO) && KBUDDY_MALLOC_ERRNO
#define ERRNO_KEEP(e) int e = errno
#define ERRNO_BACK(e) (errno = (e))
#else
#define ERRNO_KEEP(e) int e = 0
#define ERRNO_BACK(e) ((void)(e))
#endif

/* What realloc does with a mapping, decided under the lock. */
enum { RE_REFUSE, RE_KEEP, RE_FREE, RE_REMAP, RE_MOVE, RE_NOMEM };

/* The end of a resize that ran with the lock released (the entry busy, so
 * that no free or realloc on another CPU touches it meanwhile): the
 * mapping at a is now q, of `bytes` (q NULL: unchanged, no longer busy;
 * req: the size requested, when kept). */
static void maps_resized(uintptr_t a, void *q, size_t bytes, size_t req) {
    unsigned long irq = irq_off();
    lock();
    mapping *m = maps_at(a);
    if (q) {
        maps_remove_locked(m);
        maps_insert_locked((uintptr_t)q, bytes, req);
    } else {
        m->busy = false;
        m->req = req ? req : m->req;
    }
    unlock();
    irq_on(irq);
}

/* Does a resize to `bytes` (whole pages, fewer than m's) leave m as it
 * is? Yes while it does not go below the pages the block's last request
 * covered: the rest is a kept mapping's slack (map_cache_fit), bounded
 * as the cache is, and cutting it at every same-size or growing realloc
 * would give back pages only to touch fresh ones later. */
static bool keeps_slack(const mapping *m, size_t bytes) {
    size_t had;
    return map_round(m->req, &had) && bytes >= had;
}

/* realloc of ptr, outside every region: a live mapping's start (else
 * refused as kbm_realloc refuses: bad_free hook, NULL, EINVAL). size 0
 * frees it as free does (the threshold raised, the mapping kept); a size
 * at or below the threshold moves it to the core heap (kept where it is
 * if that fails); a size in the same pages only changes
 * the size kept, and so does one that fits the mapping without going
 * below the pages of the size requested before (keeps_slack); else the
 * remap hook resizes it, or, without one or when it fails, a growing
 * block moves to a new mapping and a shrinking one stays. */
static void *realloc_mapped(void *ptr, size_t size) {
    uintptr_t a = (uintptr_t)ptr;
    size_t old = 0, bytes = 0, unmap = 0; /* unmap: mapped_unmap's bytes */
    int what;
    kbuddy_status st = KBUDDY_OK;
    unsigned long irq = irq_off();
    lock();
    mapping *m = maps_at(a);
    if (m)
        old = m->size;
    if (!m || m->busy) {
        st = maps_why_not(a);
        what = RE_REFUSE;
    } else if (size == 0) { /* free's, threshold rule and all (glibc's too) */
        map_threshold_raise(m->size);
        unmap = maps_free_locked(m);
        what = RE_FREE;
    } else if (!map_wanted(size)) {
        what = RE_MOVE;
    } else if (!map_round(size, &bytes)) {
        what = RE_NOMEM;
    } else if (bytes == old || (bytes < old && (!g_hooks.remap || keeps_slack(m, bytes)))) {
        m->req = size;
        what = RE_KEEP;
    } else {
        what = g_hooks.remap ? RE_REMAP : RE_MOVE;
    }
    if (what == RE_REMAP || what == RE_MOVE)
        m->busy = true;
    unlock();
    irq_on(irq);
    switch (what) {
    case RE_REFUSE:
        report(ptr, st, "realloc");
        SET_ERRNO(KBM_EINVAL);
        return NULL;
    case RE_NOMEM:
        SET_ERRNO(KBM_ENOMEM);
        return NULL;
    case RE_KEEP:
        return ptr;
    case RE_FREE:
        mapped_unmap(ptr, unmap);
        return NULL;
    case RE_REMAP: {
        void *q = g_hooks.remap(ptr, old, bytes, g_hooks.map_ctx);
        if (q || bytes < old) { /* done, or a shrink that failed: kept */
            maps_resized(a, q, bytes, size);
            return q ? q : ptr;
        }
        break; /* growing: move it */
    }
    default:
        break;
    }
    /* cppcheck-suppress variableScope ; errno as it was before the call */
    ERRNO_KEEP(saved);
    void *q = kbm_malloc(size);
    if (!q) {
        bool keep = size <= old; /* a shrink keeps the block it has */
        maps_resized(a, NULL, 0, keep ? size : 0);
        if (!keep)
            return NULL; /* errno ENOMEM from kbm_malloc */
        ERRNO_BACK(saved);
        return ptr;
    }
    memcpy(q, ptr, size < old ? size : old);
    irq = irq_off();
    lock();
    unmap = maps_free_locked(maps_at(a));
    unlock();
    irq_on(irq);
    mapped_unmap(ptr, unmap);
    return q;
}

/* ------------------------------------------------------------------------ */
/* Statistics and check                                                     */
/* ------------------------------------------------------------------------ */

/* The registry is sorted, its mappings disjoint, whole pages, outside
 * every region, each with a size requested no larger than itself, and the
 * counters agree with it. Under the lock. */
static bool maps_ok_locked(void) {
    size_t bytes = 0;
    bool bad = g_nmaps + g_maps_reserved > g_maps_cap ||
               (g_maps == g_map_static) != (g_maps_cap == MAP_STATIC) ||
               (g_nmaps && !mapped_any());
    for (size_t i = 0; i < g_nmaps && !bad; i++) {
        const mapping *m = &g_maps[i];
        bad |= !m->size || ((m->start | m->size) & (MAP_PAGE - 1)) || m->req > m->size ||
               m->start > UINTPTR_MAX - m->size || meets_region(m->start, m->size);
        bad |= i > 0 && g_maps[i - 1].start + g_maps[i - 1].size > m->start;
        bytes += m->size;
    }
    return !bad && bytes == g_mapped_bytes;
}
