/*
 * Regions and their tag tables: the state byte the global allocator keeps
 * for the first minimum block of every block it hands out. Part of
 * kbuddy_malloc.c (included once, by it).
 *
 * A region handed to the layer has its tag table at its head, one byte per
 * unit of the whole range: the tag of unit u is byte (u - base). The region
 * table's entries are written once, under the lock, before g_nregions is
 * raised past them (release), and never change but for `gone`: lookups need
 * no lock. A grown region given back (kbm_release.h) keeps its entry, marked
 * gone, and its tag table stays mapped (released, all zero): a CPU whose
 * hint still names the entry, or a racing bad free, may read a tag of it,
 * finds 0, and looks again, skipping gone entries. So entries are never
 * reused, and a later region may lie where a gone one's blocks were.
 *
 * Tags: LIVE|c (the program holds a block of class c, or TAG_LARGE),
 * CACHED|c (it sits in a magazine), 0 (no block the layer handed out
 * starts here). The tag bytes of the second and third units of a small
 * block of 3 units or more are otherwise unused: they keep the size
 * requested, modulo 4096 (6 bits in each), so that a sized free is checked
 * exactly but for one case: sizes kept modulo 4096 cannot tell 0 from
 * 4096, so a block asked for with 0 bytes (of any class, e.g.
 * aligned_alloc(128, 0)) also takes a sized free of 4096, as the public
 * header says (and blocks of classes above 4096 bytes, when the cache
 * limit is raised, take sizes 4096 apart). Their top two bits
 * stay 0, so that they never look like a tag: a free of an interior
 * pointer finds "no block starts here". Blocks of 1 and 2 units (32 and 64
 * bytes) keep no size: a sized free of one accepts any size up to the
 * class size. The size is written by malloc (and realloc) and cleared when
 * the block goes back to the core heap.
 *
 * Slabs (kbm_slab.h): every unit of a slab of slab class c is tagged LIVE|c
 * or CACHED|c, never 0, and the tag of its i-th unit is the state of its
 * i-th object (LIVE: the program holds it; CACHED: in a magazine or free
 * in the slab), not of whatever lies at that unit: a slab class in a tag
 * says "this unit lies in a slab", and the object's own state is found by
 * address arithmetic. Slab classes keep no size.
 */

#define TAG_LIVE 0x80u
#define TAG_CACHED 0x40u
#define TAG_CLASS 0x3fu
#define TAG_LARGE 0x3fu /* class field of a block that bypasses the caches */
#define TAG_FLIP (TAG_LIVE | TAG_CACHED)
_Static_assert(NCLASSES < TAG_LARGE, "classes must fit the tag's class field");

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
    uintptr_t start, size, base; /* [start, start + size); base: unit of tags[0] */
    tagcell *tags;
    unsigned char *core;         /* the core heap's region: after the tag table */
    bool grown;                  /* from the grow hook: may be given back        */
    _Atomic bool gone;           /* given back (ungrow): matches no address      */
} mregion;

static mregion g_regions[KBUDDY_MALLOC_MAX_REGIONS];
static _Atomic size_t g_nregions;
static const mregion g_no_region; /* matches no address: the initial hint */

static inline bool region_gone(const mregion *r) {
    return atomic_load_explicit(&r->gone, memory_order_relaxed);
}

/* Does [s, s + n) meet a region of the heap? A region given back (ungrow)
 * does not count: its blocks went with it, and the system may map its
 * addresses again. */
static bool meets_region(uintptr_t s, size_t n) {
    size_t nr = atomic_load_explicit(&g_nregions, memory_order_acquire);
    for (size_t i = 0; i < nr; i++)
        if (s < g_regions[i].start + g_regions[i].size && g_regions[i].start < s + n &&
            !region_gone(&g_regions[i]))
            return true;
    return false;
}

/* The region holding address a, trying *hint first (and updating it). */
static NOINLINE const mregion *region_find(const mregion **hint, uintptr_t a) {
    size_t n = atomic_load_explicit(&g_nregions, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        const mregion *r = &g_regions[i];
        if (a - r->start < r->size && !region_gone(r)) {
            *hint = r;
            return r;
        }
    }
    return NULL;
}

/* region_of: for hints that cannot name a gone entry (the lock's, which
 * is reset when a region goes, or a hint local to one call under the
 * lock). region_of_any: for a CPU's own hint, read without the lock. */
static inline const mregion *region_of(const mregion **hint, uintptr_t a) {
    const mregion *r = *hint;
    if (LIKELY(a - r->start < r->size))
        return r;
    return region_find(hint, a);
}

static inline const mregion *region_of_any(const mregion **hint, uintptr_t a) {
    const mregion *r = *hint;
    if (LIKELY(a - r->start < r->size) && LIKELY(!region_gone(r)))
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

static inline bool tagref_same(tagref x, tagref y) { return x.p == y.p; }

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
/* The k-th byte after a block's tag (k = 1, 2): the kept size, only ever
 * written by the CPU that holds the block. */
static inline unsigned spare_get(tagref t, unsigned k) {
    return atomic_load_explicit(t.p + k, memory_order_relaxed);
}
static inline void spare_set(tagref t, unsigned k, unsigned v) {
    atomic_store_explicit(t.p + k, (unsigned char)v, memory_order_relaxed);
}
#else
static inline tagref tag_of(const mregion *r, uintptr_t a) {
    uintptr_t i = (a >> UNIT_SHIFT) - r->base;
    return (tagref){&r->tags[i >> 2], (unsigned)(i & 3u) * 8u};
}

static inline bool tagref_same(tagref x, tagref y) { return x.word == y.word && x.shift == y.shift; }

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

/* The k-th byte after a block's tag (k = 1, 2), perhaps in the next word:
 * words shared with other blocks' tags change only atomically. */
static inline tagref spare_ref(tagref t, unsigned k) {
    unsigned bit = t.shift + 8u * k;
    return (tagref){t.word + (bit >> 5), bit & 31u};
}
static inline unsigned spare_get(tagref t, unsigned k) { return tag_get(spare_ref(t, k)); }
static inline void spare_set(tagref t, unsigned k, unsigned v) {
    tagref s = spare_ref(t, k);
    uint32_t w = atomic_load_explicit(s.word, memory_order_relaxed), n;
    do
        n = (w & ~((uint32_t)0xffu << s.shift)) | (uint32_t)(v & 0xffu) << s.shift;
    while (!atomic_compare_exchange_weak_explicit(s.word, &w, n, memory_order_relaxed, memory_order_relaxed));
}
#endif

/* A small block's requested size, modulo 4096 (see above): class c, its
 * tag t. */
#define SIZE_MIN_CLASS 2u /* the first class of 3 units */
#define SIZE_MASK 0xfffu
#if SLABS
static inline bool keeps_size(unsigned c) { return c - SIZE_MIN_CLASS < NBLOCK - SIZE_MIN_CLASS; }
#else
static inline bool keeps_size(unsigned c) { return c >= SIZE_MIN_CLASS; }
#endif
/* Spare byte k (1: bits 0-5, 2: bits 6-11) of a kept size. */
static inline unsigned size_byte(size_t size, unsigned k) {
    return (unsigned)(size >> (6u * (k - 1u))) & 0x3fu;
}
static inline void size_set(tagref t, unsigned c, size_t size) {
    if (keeps_size(c)) {
        spare_set(t, 1, size_byte(size, 1));
        spare_set(t, 2, size_byte(size, 2));
    }
}
static inline size_t size_get(tagref t, unsigned c) {
    return keeps_size(c) ? spare_get(t, 1) | (size_t)spare_get(t, 2) << 6 : 0;
}
/* Cleared before the block goes back to the core. */
static inline void size_clear(tagref t, unsigned c) { size_set(t, c, 0); }

/* KBM_TEST_POINT(name): nothing, but in a white-box test that compiles the
 * layer into itself (hosted/tests/test_malloc_size_change.c), which stops
 * there to look at what another CPU, or the child of a fork, would see. */
#ifndef KBM_TEST_POINT
#define KBM_TEST_POINT(name) ((void)0)
#endif

/* A new size for a small block the program holds (realloc in place; class
 * c). Its two bytes are two stores, and whoever looks between them sees
 * one new and the other old: kbuddy_malloc_check on another CPU, or the
 * child of a fork that caught this CPU there (kbm_fork.h: the block stays
 * LIVE in the child as found, and the child's check reads it). Low byte
 * first, 90 -> 63 in a 96-byte block read 127, beyond the class, and the
 * check said the heap was corrupt (the fork test, with realloc slowed
 * between the stores: 13 corrupt children in under 30 runs). So the byte
 * whose change lowers the value goes first: high first when it falls,
 * else low first. The value between is then below the larger of the old
 * and the new size, so within the class; the fence keeps the stores in
 * that order (on x86 it only stops the compiler, and only realloc in
 * place pays). */
static inline void size_change(tagref t, unsigned c, size_t size) {
    if (!keeps_size(c))
        return;
    unsigned first = size_byte(size, 2) < spare_get(t, 2) ? 2u : 1u, second = 3u - first;
    spare_set(t, first, size_byte(size, first));
    KBM_TEST_POINT(size_change);
    atomic_thread_fence(memory_order_release);
    spare_set(t, second, size_byte(size, second));
}
