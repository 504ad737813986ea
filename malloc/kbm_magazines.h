/*
 * Magazines, the depot and the per-CPU caches of the global allocator
 * (Bonwick's magazines and depot, as in Solaris' kmem and umem), and the
 * core heap calls behind them. Part of kbuddy_malloc.c (included once, by
 * it).
 *
 * Invariants
 *   - A CPU's two magazines per class: `loaded` is any fill; `prev` is full
 *     or empty (or the shared empty sentinel). Per-CPU state is written
 *     only by the call that owns the cache: in per-CPU builds with
 *     cpu_id_unmasked set, the call that claimed it (below); otherwise its
 *     CPU with interrupts masked. The depot, the core heap and the
 *     magazines' lifetimes only under the lock.
 *   - The cached figures of the statistics are the magazines' counts:
 *     nothing else is counted on the fast paths. Other CPUs read the counts
 *     and the slots (relaxed atomics: plain loads and stores) only under
 *     the lock, which also keeps every magazine they can reach alive.
 */

/* A magazine: up to cap cached blocks of one class, each with where its
 * tag is (free found it; malloc then needs no region lookup). */
typedef struct mentry {
    void *p;
    tagref t;
} mentry;

typedef struct mag {
    struct mag *next; /* in a depot list */
    _Atomic uint32_t count;
    uint32_t cap;
    mentry e[];
} mag;

typedef struct cslot {
    mag *_Atomic loaded;
    mag *_Atomic prev;
} cslot;

/* One CPU's (thread's) cache. */
typedef struct kcache {
    cslot slot[NCLASSES];
    const mregion *hint; /* the region this CPU resolved last */
    struct kcache *next, **pprev; /* all caches, under the lock */
#if KBUDDY_MALLOC_TLS
    unsigned char ramp[NCLASSES]; /* log2 of the next fill from the core, up to 6 */
#else
    unsigned cpu; /* whose: its index in g_cpu_cache and g_cpu_home */
#endif
} kcache;

typedef struct depot {
    mag *full, *empty;
    uint32_t nfull, nempty;
} depot;

/* Under the lock. */
static depot g_depot[NCLASSES];
static size_t g_depot_blocks, g_depot_units;
static size_t g_internal_blocks, g_internal_bytes;
static size_t g_trades, g_fills, g_drains, g_large_calls;
static kcache *g_caches;
static const mregion *g_lock_hint = &g_no_region;

/* Never written: count == cap == 0 sends both fast paths to the slow one. */
static mag g_empty_mag = {NULL, 0, 0};

#if KBUDDY_MALLOC_TLS
static _Thread_local kcache *tls_cache TLS_MODEL;
static _Thread_local bool tls_exited TLS_MODEL;
#else
/* Per-CPU builds. g_cpu_home[i]: CPU i's cache once made (written under
 * the lock). g_cpu_cache[i]: the same while no call holds it. A call that
 * uses a cache claims it first, swapping NULL in (acquire: it sees all its
 * last holder wrote), and gives it back by storing it again (release).
 * With function-pointer hooks and cpu_id_unmasked set, the fast paths do
 * so instead of masking interrupts: an interrupt handler that allocates on
 * the same CPU, or a thread preempted between cpu_id and the claim and
 * moved to another CPU, finds NULL and works through the lock as a CPU
 * without a cache does, whichever CPU it runs on; the holder's work is
 * never interleaved with another's. Otherwise (no hooks: one CPU; or
 * interrupts masked around every call, cpu_id called masked, so that the
 * number it gives stays true to the end of the call) the fast paths read
 * the slot without claiming: only CPU i ever touches slot i, the cold
 * paths claim it only with interrupts masked and give it back before they
 * restore them, so a fast path never finds it claimed, and nothing else
 * runs on the cache meanwhile. The claims cost those cold paths an atomic
 * swap and spare them a second copy. */
static kcache *_Atomic g_cpu_cache[KBUDDY_MALLOC_MAX_CPUS];
static kcache *g_cpu_home[KBUDDY_MALLOC_MAX_CPUS];
#endif

static inline uint32_t mag_n(mag *m) { return atomic_load_explicit(&m->count, memory_order_relaxed); }
static inline void mag_set_n(mag *m, uint32_t n) {
    atomic_store_explicit(&m->count, n, memory_order_relaxed);
}
static inline mag *slot_loaded(cslot *s) { return atomic_load_explicit(&s->loaded, memory_order_relaxed); }
static inline mag *slot_prev(cslot *s) { return atomic_load_explicit(&s->prev, memory_order_relaxed); }
static inline void slot_set(cslot *s, mag *loaded, mag *prev) {
    atomic_store_explicit(&s->loaded, loaded, memory_order_relaxed);
    atomic_store_explicit(&s->prev, prev, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* The core heap, under the lock                                             */
/* ------------------------------------------------------------------------ */

/* The layer's own structures: core allocations without a tag, in whole
 * cache lines, so that no two CPUs' structures share a line. */
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

static size_t mag_size(uint32_t cap) { return sizeof(mag) + cap * sizeof(mentry); }

/* Tag a block just taken from the core with `tag` and say where the tag
 * is, or give the block back and say false. */
static bool core_tag(void *p, unsigned tag, tagref *t) {
    const mregion *r = region_of(&g_lock_hint, (uintptr_t)p);
    if (UNLIKELY(!r)) { /* a region added behind the layer's back */
        (void)kbuddy_free(&g_heap, p);
        return false;
    }
    *t = tag_of(r, (uintptr_t)p);
    tag_set(*t, tag);
    return true;
}

/* A block of class c from the core, naturally aligned, tagged `tag | c`
 * (its tag in *t). */
static void *core_take(unsigned c, unsigned tag, tagref *t) {
    if (is_slab_class(c)) { /* from a slab, CACHED like every object there */
        mentry e;
        if (!slab_take(c, &e, 1))
            return NULL;
        *t = e.t;
        return e.p;
    }
    void *p = kbuddy_alloc(&g_heap, class_bytes(c), class_align(c));
    return p && core_tag(p, tag | c, t) ? p : NULL;
}

/* Up to `want` blocks of class c into out[], tagged `tag`, from runs of
 * the core heap (kbuddy_alloc_many_aligned) of at most
 * KBUDDY_MALLOC_RUN_BYTES (kbuddy_malloc.h): one engine operation per run
 * instead of one per block, and blocks (so their tags) that lie together,
 * so that two CPUs seldom write tags in the same cache line. Returns how
 * many. */
static uint32_t core_take_run(unsigned c, unsigned tag, mentry *out, uint32_t want) {
    if (is_slab_class(c))
        return slab_take(c, out, want);
    void *got_p[MAG_MAX];
    size_t got;
    if (KBUDDY_MALLOC_RUN_BYTES == SIZE_MAX) { /* one run */
        got = kbuddy_alloc_many_aligned(&g_heap, class_bytes(c), class_align(c),
                                        want < MAG_MAX ? want : MAG_MAX, got_p);
    } else if (KBUDDY_MALLOC_RUN_BYTES / class_bytes(c) <= 1) {
        /* Runs of one block (the Linux build: every block): each where a
         * single kbuddy_alloc would put it, from one core call
         * (kbuddy_alloc_each) instead of one each. */
        got = kbuddy_alloc_each(&g_heap, class_bytes(c), class_align(c),
                                want < MAG_MAX ? want : MAG_MAX, got_p);
    } else {
        size_t bytes = class_bytes(c), per = 1; /* blocks per run */
        if (KBUDDY_MALLOC_RUN_BYTES > bytes)
            per = KBUDDY_MALLOC_RUN_BYTES / bytes;
        if (want > MAG_MAX)
            want = MAG_MAX;
        for (got = 0; got < want;) {
            size_t ask = want - got < per ? want - got : per;
            size_t n = kbuddy_alloc_many_aligned(&g_heap, bytes, class_align(c), ask, &got_p[got]);
            got += n;
            if (n < ask) /* out of memory */
                break;
        }
    }
    /* Highest address first: the magazine hands out its top entry first,
     * so the program gets the blocks in ascending order, as it gets memory
     * carved from a heap's top, and walks its objects forwards (python,
     * 9 interleaved rounds: user time 0.97x that of descending order). */
    uint32_t kept = 0;
    for (size_t i = got; i-- > 0;)
        if (core_tag(got_p[i], tag | c, &out[kept].t))
            out[kept++].p = got_p[i];
    return kept;
}

/* Clear a block's tag (and kept size; class c). */
static void untag(tagref t, unsigned c) {
    size_clear(t, c);
    tag_clear(t);
}

/* Untag a block of class c and give it back to the core. */
static void core_give(void *p, tagref t, unsigned c) {
    if (is_slab_class(c)) { /* back into its slab: its state stays CACHED */
        slab_give(p, c);
        return;
    }
    untag(t, c);
    (void)kbuddy_free(&g_heap, p);
}

/* Untag a magazine's blocks (class c) and give them back to the core in
 * one batch (blocks that lie side by side go back as one run). */
static void mag_release_blocks(mag *m, unsigned c) {
    void *p[MAG_MAX];
    uint32_t n = mag_n(m);
    if (is_slab_class(c)) { /* objects back into their slabs */
        for (uint32_t i = 0; i < n; i++)
            slab_give(m->e[i].p, c);
        g_drains += n;
        mag_set_n(m, 0);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        untag(m->e[i].t, c);
        p[i] = m->e[i].p;
    }
    for (size_t i = 0; i < n;) {
        i += kbuddy_free_many(&g_heap, &p[i], n - i);
        if (i < n) /* refused: only if the core's records were damaged */
            i++;
    }
    g_drains += n;
    mag_set_n(m, 0);
}

/* ------------------------------------------------------------------------ */
/* The depot, under the lock                                                 */
/* ------------------------------------------------------------------------ */

/* The capacity of a new magazine of class c: KBUDDY_MALLOC_MAG_BYTES of
 * blocks once the core heap's allocated bytes reach
 * KBUDDY_MALLOC_MAG_SHARE times that, in a smaller heap that share of its
 * allocated bytes, but at least KBUDDY_MALLOC_MAG_MIN_BYTES (and always
 * 8 to 64 blocks, so the classes of 128 bytes and less are never smaller).
 * A CPU holds two magazines of every class it uses, the depot more: with
 * magazines of a fixed size a program of a few MiB kept as much again in
 * its caches (suite glibc-thread, 4 threads: 1.4 MiB cached beside 0.7 MiB
 * live), and blocks spread over many magazines spread the heap (suite
 * xmalloc-test: 3.0x glibc's peak RSS with 64 KiB magazines, 2.2x with
 * 32 KiB, 1.3-1.6x with this policy). Heaps of SHARE x MAG_BYTES and more
 * (64 MiB in the hosted build) get the full size, as before. O(1). */
static uint32_t mag_cap_now(unsigned c) {
    if (KBUDDY_MALLOC_MAG_MIN_BYTES >= KBUDDY_MALLOC_MAG_BYTES) /* fixed: not even its cost */
        return mag_cap(c);
    kbuddy_stats st;
    kbuddy_get_stats(&g_heap, &st);
    uint32_t cap = mag_cap_for(c, st.allocated / KBUDDY_MALLOC_MAG_SHARE);
    return cap < mag_cap_min(c) ? mag_cap_min(c) : cap > mag_cap(c) ? mag_cap(c) : cap;
}

/* An empty magazine for class c: from the depot, else a new one. One from
 * the depot made when the heap was smaller is replaced by a larger one. */
static mag *mag_get_empty(unsigned c) {
    depot *d = &g_depot[c];
    mag *m = d->empty;
    if (m) {
        d->empty = m->next;
        d->nempty--;
        if (KBUDDY_MALLOC_MAG_MIN_BYTES >= KBUDDY_MALLOC_MAG_BYTES /* fixed sizes */ ||
            m->cap >= mag_cap_now(c))
            return m;
    }
    uint32_t cap = mag_cap_now(c);
    mag *fresh = internal_alloc(mag_size(cap));
    if (!fresh)
        return m; /* the smaller one will do, if there is one */
    if (m)
        internal_free(m, mag_size(m->cap));
    fresh->next = NULL;
    atomic_init(&fresh->count, 0);
    fresh->cap = cap;
    return fresh;
}

/* Whether the depot may take n more blocks of class c: its blocks, over
 * all classes, stay within KBUDDY_MALLOC_DEPOT_MIN_BYTES or a
 * KBUDDY_MALLOC_DEPOT_SHARE-th of the core heap's allocated bytes
 * (everything the program and the caches hold), whichever is more. The
 * count bound per class alone let the depot hold 8 magazines of every
 * class at once (7.7 MiB in the hosted build) when blocks are freed by
 * other threads than allocate them, more than the program itself held
 * (suite xmalloc-test: 9.4 MiB cached beside 0.1 MiB live); tied to the
 * heap's size it still carries blocks between CPUs at every rate that
 * matters, and a small program's depot stays small. O(1). */
static bool depot_has_room(unsigned c, uint32_t n) {
    if (KBUDDY_MALLOC_DEPOT_MIN_BYTES == SIZE_MAX) /* no bound: not even its cost */
        return true;
    size_t after = (g_depot_units + n * class_units(c)) << ACCT_SHIFT;
    if (after <= KBUDDY_MALLOC_DEPOT_MIN_BYTES)
        return true;
    kbuddy_stats st;
    kbuddy_get_stats(&g_heap, &st);
    return after <= st.allocated / KBUDDY_MALLOC_DEPOT_SHARE;
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
            g_depot_blocks -= mag_n(m);
            g_depot_units -= mag_n(m) * class_units(c);
            mag_release_blocks(m, c);
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
    return slab_trim_locked() || any; /* and the spare slabs */
}

/* ------------------------------------------------------------------------ */
/* Per-CPU caches                                                            */
/* ------------------------------------------------------------------------ */

/* Give a cache's blocks and magazines back to the core. True if there was
 * anything. */
static bool cache_flush_locked(kcache *cc) {
    bool any = false;
    for (unsigned c = 0; c < NCLASSES; c++) {
        cslot *s = &cc->slot[c];
        mag *ms[2] = {slot_loaded(s), slot_prev(s)};
        slot_set(s, &g_empty_mag, &g_empty_mag);
        for (int i = 0; i < 2; i++) {
            if (!ms[i]->cap)
                continue;
            mag_release_blocks(ms[i], c);
            internal_free(ms[i], mag_size(ms[i]->cap));
            any = true;
        }
    }
    return any;
}

static kcache *cache_new_locked(void) {
    kcache *cc = internal_alloc(sizeof *cc);
    if (!cc)
        return NULL;
    for (unsigned c = 0; c < NCLASSES; c++) {
        atomic_init(&cc->slot[c].loaded, &g_empty_mag);
        atomic_init(&cc->slot[c].prev, &g_empty_mag);
    }
    cc->hint = &g_no_region;
#if KBUDDY_MALLOC_TLS
    memset(cc->ramp, 0, sizeof cc->ramp);
#else
    cc->cpu = 0;
#endif
    cc->next = g_caches;
    cc->pprev = &g_caches;
    if (g_caches)
        g_caches->pprev = &cc->next;
    g_caches = cc;
    return cc;
}

/* Finding the calling CPU's cache. cache_fast: the cache if it exists,
 * NULL otherwise (the slow paths then call my_cache), unclaimed (where
 * nothing else can run on it); `hooked` says whether the cpu_id hook may
 * be installed (the fast paths in kbuddy_malloc.c are compiled once with
 * and once without hooks), and then cpu is the number it gave, called
 * with interrupts masked. cache_claim_fast: CPU cpu's cache if it exists
 * and is free, claimed; the claiming copy's (cpu_id_unmasked; cpu through
 * claim_slot). my_cache: the cache, claimed,
 * created if need be; NULL for a CPU numbered beyond the table, when no
 * memory for a cache can be found, or when another call holds it (an
 * interrupted one, or one of a thread that moved): the caller then works
 * through the lock.
 * cache_claim: the cache if it exists and is free, claimed.
 * cache_unclaim: give back a cache that my_cache, cache_claim or cache_fast
 * returned (NULL: nothing). All O(1); TLS builds need no claims (a thread's
 * cache is its own). */
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

static inline kcache *cache_fast(bool hooked, unsigned cpu) {
    (void)hooked, (void)cpu;
    return tls_cache;
}

static inline unsigned claim_slot(unsigned cpu) { return cpu; }

static inline kcache *cache_claim_fast(unsigned slot) {
    (void)slot;
    return tls_cache;
}

static inline kcache *my_cache(void) {
    kcache *cc = tls_cache;
    return LIKELY(cc != NULL) ? cc : cache_create();
}

static inline kcache *cache_claim(void) { return tls_cache; }
static inline void cache_unclaim(kcache *cc) { (void)cc; }
static inline void cache_unclaim_at(unsigned cpu, kcache *cc) { (void)cpu, (void)cc; }
#else
/* The CPU's cache, made now and claimed; NULL if it exists already (held
 * by another call: the caller goes without) or cannot be made. */
static NOINLINE kcache *cache_create(unsigned cpu) {
    if (cpu >= KBUDDY_MALLOC_MAX_CPUS)
        return NULL;
    lock();
    kcache *cc = g_cpu_home[cpu] ? NULL : cache_new_locked();
    if (cc) {
        cc->cpu = cpu;
        g_cpu_home[cpu] = cc;
    }
    unlock();
    return cc;
}

#if STATIC_HOOKS
static inline unsigned this_cpu(void) { return KBUDDY_MALLOC_CPU_ID(); }
#else
static inline unsigned this_cpu(void) { return g_cpu_id(); }
#endif

static inline kcache *cache_claim_at(unsigned cpu) {
    return atomic_exchange_explicit(&g_cpu_cache[cpu], NULL, memory_order_acquire);
}

static inline void cache_unclaim_at(unsigned cpu, kcache *cc) {
    atomic_store_explicit(&g_cpu_cache[cpu], cc, memory_order_release);
}

static inline void cache_unclaim(kcache *cc) {
    if (cc)
        cache_unclaim_at(cc->cpu, cc);
}

/* A plain read of the slot: nothing else writes it meanwhile (the cold
 * paths that claim it run on this CPU with interrupts masked, or on the
 * only CPU; not with cpu_id_unmasked, whose fast paths claim), and gcc moved an atomic load's result through a second
 * register (+0.5 instructions per operation with compile-time hooks). */
static inline kcache *cache_fast(bool hooked, unsigned cpu) {
    if (!hooked) /* no cpu_id hook: one CPU */
        return *(kcache *const *)&g_cpu_cache[0];
    return LIKELY(cpu < KBUDDY_MALLOC_MAX_CPUS) ? *(kcache *const *)&g_cpu_cache[cpu] : NULL;
}

/* The slot of g_cpu_cache whose cache a claiming fast path (function-pointer
 * hooks, cpu_id_unmasked) claims for CPU cpu: its own, and for a CPU
 * numbered beyond the table (when the table's size is a power of two) the
 * slot of its number modulo that size, one `and` instead of a compare, a
 * branch and a zero extension. Borrowing another CPU's cache is safe where
 * every use of a cache claims it first: the claim, not the CPU number,
 * keeps two calls off one cache (that CPU's own calls, finding it held,
 * work through the lock meanwhile); the slow paths, which may create a
 * cache, still go by the true number (my_cache). With a table of any other
 * size, KBUDDY_MALLOC_MAX_CPUS itself: a slot that does not exist. */
#define CPU_MASKABLE ((KBUDDY_MALLOC_MAX_CPUS & (KBUDDY_MALLOC_MAX_CPUS - 1)) == 0)
static inline unsigned claim_slot(unsigned cpu) {
    if (CPU_MASKABLE)
        return cpu & (KBUDDY_MALLOC_MAX_CPUS - 1);
    return cpu < KBUDDY_MALLOC_MAX_CPUS ? cpu : KBUDDY_MALLOC_MAX_CPUS;
}

/* slot: claim_slot's; the fast path gives the cache back to the same slot
 * (cache_unclaim_at). */
static inline kcache *cache_claim_fast(unsigned slot) {
    if (CPU_MASKABLE)
        return cache_claim_at(slot);
    return LIKELY(slot < KBUDDY_MALLOC_MAX_CPUS) ? cache_claim_at(slot) : NULL;
}

static inline kcache *cache_claim(void) {
    unsigned cpu = this_cpu();
    return cpu < KBUDDY_MALLOC_MAX_CPUS ? cache_claim_at(cpu) : NULL;
}

static inline kcache *my_cache(void) {
    unsigned cpu = this_cpu();
    kcache *cc = LIKELY(cpu < KBUDDY_MALLOC_MAX_CPUS) ? cache_claim_at(cpu) : NULL;
    return LIKELY(cc != NULL) ? cc : cache_create(cpu);
}
#endif

/* Everything cached back to the core heap that the caller can reach: the
 * calling CPU's (thread's) cache cc, if it has one, and the depot; other
 * CPUs' caches are theirs. The lock held. */
static void caches_flush_locked(kcache *cc) {
    if (cc)
        (void)cache_flush_locked(cc);
    (void)depot_drain();
}

/* How many blocks of class c a fill from the core takes into a magazine
 * with `room` free slots. TLS builds: 1, 2, 4, ... for a cache's first
 * fills of each class, then all the room there is. A short-lived thread
 * (one of thousands) that allocates a few blocks of a class and keeps one
 * then takes that one from the lowest free address, next to the ones kept
 * by the threads before it, instead of from a fresh run of a magazine's
 * worth that its one block would hold on to, and keep resident, after the
 * thread has ended. A long-lived one reaches whole fills after six.
 * Per-CPU builds: CPUs do not come and go, every fill is whole. */
static inline uint32_t fill_count(kcache *cc, unsigned c, uint32_t room) {
#if KBUDDY_MALLOC_TLS
    unsigned r = cc->ramp[c];
    if (r >= 6)
        return room;
    cc->ramp[c] = (unsigned char)(r + 1);
    return room < (1u << r) ? room : 1u << r;
#else
    (void)cc;
    (void)c;
    return room;
#endif
}

/* The loaded magazine of class c is empty: swap in the previous one if it
 * is full, else trade the empty one for a full one from the depot, else
 * fill it from the core heap, all under one lock acquisition. Returns a
 * block still tagged as cached, or p == NULL when out of memory. */
static NOINLINE mentry cache_refill(kcache *cc, unsigned c) {
    cslot *s = &cc->slot[c];
    mag *m = slot_prev(s), *loaded = slot_loaded(s);
    uint32_t n = mag_n(m);
    if (n) {
        slot_set(s, m, loaded);
        mag_set_n(m, n - 1);
        return m->e[n - 1];
    }
    mentry e = {NULL, {0}};
    lock();
    depot *d = &g_depot[c];
    if ((m = d->full) != NULL) {
        d->full = m->next;
        d->nfull--;
        g_depot_blocks -= mag_n(m);
        g_depot_units -= mag_n(m) * class_units(c);
        g_trades++;
        if (slot_prev(s)->cap)
            mag_retire_empty(slot_prev(s), c);
        slot_set(s, m, loaded);
    } else {
        m = loaded;
        if (!m->cap) {
            mag *prev = slot_prev(s);
            if (prev->cap) { /* an empty real magazine in prev: use it */
                m = prev;
                slot_set(s, m, loaded);
            } else if ((m = mag_get_empty(c)) != NULL) {
                slot_set(s, m, prev);
            }
        }
        if (m) {
            n = mag_n(m);
            uint32_t want = fill_count(cc, c, m->cap - n);
            uint32_t got = core_take_run(c, TAG_CACHED, &m->e[n], want);
            while (got < want && (e.p = core_take(c, TAG_CACHED, &e.t)) != NULL)
                m->e[n + got++] = e;
            mag_set_n(m, n + got);
            g_fills += got;
            e.p = NULL;
        } else if ((e.p = core_take(c, TAG_CACHED, &e.t)) != NULL) {
            g_fills++; /* no magazine to be had: just this block, LIVE at once */
            unlock();
            return e;
        }
    }
    unlock();
    if (!m || !(n = mag_n(m)))
        return e;
    mag_set_n(m, n - 1);
    return m->e[n - 1];
}

/* The loaded magazine of class c is full: swap in the previous one if it
 * is empty, else move the previous (full) one to the depot, or back to the
 * core heap when the depot holds enough, and load an empty one. p (tagged
 * cached) goes into it, or straight back to the core when no magazine can
 * be had. */
static NOINLINE void cache_overflow(kcache *cc, unsigned c, mentry e) {
    cslot *s = &cc->slot[c];
    mag *m = slot_prev(s), *loaded = slot_loaded(s);
    if (m->cap && !mag_n(m)) {
        slot_set(s, m, loaded);
        m->e[0] = e;
        mag_set_n(m, 1);
        return;
    }
    mag *fresh = NULL;
    lock();
    if (m->cap) {
        depot *d = &g_depot[c];
        if (d->nfull < KBUDDY_MALLOC_DEPOT_MAGS && depot_has_room(c, mag_n(m))) {
            m->next = d->full;
            d->full = m;
            d->nfull++;
            g_depot_blocks += mag_n(m);
            g_depot_units += mag_n(m) * class_units(c);
            g_trades++;
        } else {
            mag_release_blocks(m, c);
            release_poll_locked();
            fresh = m;
        }
        slot_set(s, loaded, &g_empty_mag);
    }
    if (!fresh)
        fresh = mag_get_empty(c);
    if (!fresh) {
        core_give(e.p, e.t, c);
        unlock();
        return;
    }
    fresh->e[0] = e;
    mag_set_n(fresh, 1);
    slot_set(s, fresh, loaded);
    unlock();
}
