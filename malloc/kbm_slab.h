/*
 * Slabs: the objects of the sub-unit size classes (48, 80, ..., 496 bytes:
 * the odd multiples of 16, kbm_classes.h) carved from core blocks. Part of
 * kbuddy_malloc.c (included once, by it, after kbm_magazines.h); compiled
 * only with KBUDDY_MALLOC_SLABS (the Linux build), else the stubs at the
 * end.
 *
 * Why: a block class is a whole number of 32-byte units, so a request of
 * 100 bytes took 128 (glibc: 112), plus the per-unit bookkeeping of the
 * core and the tags. A slab of class c is one core block of 4, 8 or 16 KiB
 * (SLAB_SHIFT_OF: the smallest that wastes at most 1/32 of itself),
 * naturally aligned, so that an object's slab is its address masked. It
 * holds a header of SLAB_HDR bytes and then n objects back to back.
 *
 * Bookkeeping per object: its state, kept in the tag table (kbm_tags.h: the
 * tag of a slab's i-th unit is the state of its i-th object, n being below
 * the slab's units since objects are larger than a unit), and a bit of the
 * header's free map. A slab's units are all tagged with its class, so the
 * tag of a pointer's unit says "in a slab of class c".
 *
 * States: LIVE|c, the program holds the object; CACHED|c, it does not: the
 * object is in a magazine (free bit clear) or free in the slab (bit set).
 * So free is the compare-and-swap of LIVE to CACHED that blocks take, on
 * the object's state instead of a block's tag, and every bad free is
 * refused as for blocks, with nothing changed: foreign (no region),
 * interior (the unit is a slab's but the address is no object's start: in
 * the header, inside or between objects, past the last one), double
 * (CACHED: in a magazine, per-CPU or in the depot, or back in the slab),
 * racing (one compare-and-swap wins). The free path reads only the tag
 * table and the constant geometry, never the slab, so a slab given back to
 * the core meanwhile (its tags cleared first) is refused as any freed
 * block is. A sized free accepts exactly the sizes of the object's class,
 * (class bytes - 16, class bytes]; an aligned one also needs the pointer
 * aligned as stated.
 *
 * Under the lock only: the header (free map, counts, the class's list),
 * taking objects into magazines (bits cleared: the state stays CACHED) and
 * putting them back (bits set). Filling and draining magazines write no
 * tags; only a new slab's and a returned slab's units are tagged and
 * cleared. Per class, slabs with some objects free are on a doubly linked
 * partial list, full ones on none, and at most one empty slab is kept (the
 * spare); other empty slabs go back to the core at once. depot_drain
 * (trim, flush, out of memory) gives the spares back too.
 *
 * Statistics: a slab is one core allocation. The objects out of their slabs
 * (held by the program or in magazines) are counted (g_slab_out and their
 * bytes); the rest of a slab (its free objects, header and tail) counts as
 * the layer's own (internal_bytes, a slab as one internal block), so that
 * live = allocated - cached - internal still holds.
 */

#if SLABS

#define SLAB_HDR 48u
#define SLAB_OBJ(s) (48u + 32u * (s))
#define SLAB_NOBJ(S, o) (((S)-SLAB_HDR) / (o))
#define SLAB_WASTE(S, o) ((S)-SLAB_HDR - SLAB_NOBJ(S, o) * (o))
#define SLAB_SHIFT_OF(o) (SLAB_WASTE(4096u, o) <= 128u ? 12u : SLAB_WASTE(8192u, o) <= 256u ? 13u : 14u)

/* The constant geometry of a slab class: object size; ceil(2^32 / size),
 * so that an offset's index is a multiply and a shift (exact for every
 * multiple of the size below 2^32 / size, far beyond a slab; an offset
 * that is no multiple fails the test index * size == offset whatever the
 * index); objects per slab; log2 of the slab's bytes. */
typedef struct slabgeo {
    uint32_t size, recip, span; /* span: n * size, the objects' bytes */
    uint16_t n, shift;
} slabgeo;

#define SLAB_N_OF(s) SLAB_NOBJ(1u << SLAB_SHIFT_OF(SLAB_OBJ(s)), SLAB_OBJ(s))
#define SLAB_GEO(s)                                                                                \
    {SLAB_OBJ(s), (uint32_t)((((uint64_t)1 << 32) + SLAB_OBJ(s) - 1u) / SLAB_OBJ(s)),              \
     SLAB_N_OF(s) * SLAB_OBJ(s), (uint16_t)SLAB_N_OF(s), (uint16_t)SLAB_SHIFT_OF(SLAB_OBJ(s))}
_Static_assert(NSLAB == 15u, "the table below has 15 classes");
static const slabgeo k_slab[NSLAB] = {SLAB_GEO(0u),  SLAB_GEO(1u),  SLAB_GEO(2u),  SLAB_GEO(3u),
                                      SLAB_GEO(4u),  SLAB_GEO(5u),  SLAB_GEO(6u),  SLAB_GEO(7u),
                                      SLAB_GEO(8u),  SLAB_GEO(9u),  SLAB_GEO(10u), SLAB_GEO(11u),
                                      SLAB_GEO(12u), SLAB_GEO(13u), SLAB_GEO(14u)};
_Static_assert(SLAB_NOBJ(4096u, 48u) <= 128u, "the free map has 128 bits");
_Static_assert(SLAB_OBJ(NSLAB - 1u) == 496u, "slab classes end below 512 bytes");

enum { SLAB_FULL, SLAB_PARTIAL, SLAB_SPARE };

typedef struct slab {
    struct slab *next, *prev; /* the class's partial list */
    uint64_t free[2];         /* bit i: object i is free in the slab */
    uint16_t nfree;           /* bits set */
    uint8_t cls;              /* its class */
    uint8_t where;            /* SLAB_FULL, SLAB_PARTIAL or SLAB_SPARE */
} slab;
_Static_assert(sizeof(slab) <= SLAB_HDR && SLAB_HDR % 16u == 0, "objects stay 16-byte aligned");

typedef struct slabclass {
    slab *partial, *spare;
} slabclass;

/* Under the lock. */
static slabclass g_slabc[NSLAB];

static inline const slabgeo *slab_geo(unsigned c) { return &k_slab[c - NBLOCK]; }
static inline size_t slab_bytes(const slabgeo *g) { return (size_t)1 << g->shift; }

/* Whether a unit's tag says the unit lies in a slab (of class tag &
 * TAG_CLASS): a slab class with a state bit. Kept-size bytes have no state
 * bit, block tags a block class. */
static inline bool is_slab_tag(unsigned tag) {
    return (tag & TAG_FLIP) && is_slab_class(tag & TAG_CLASS);
}

/* Address a lies in a slab of class c (its unit's tag says so): whether a
 * is an object's start, and then where the object's state is (*t). Reads
 * nothing but the constant geometry. O(1). */
static ALWAYS_INLINE bool slab_object(const mregion *r, uintptr_t a, unsigned c, tagref *t) {
    const slabgeo *g = slab_geo(c);
    uintptr_t base = a & ~(uintptr_t)(slab_bytes(g) - 1);
    uintptr_t off = a - base - SLAB_HDR; /* huge inside the header */
    if (off >= g->span)
        return false;
    uintptr_t i = (uintptr_t)(((uint64_t)off * g->recip) >> 32);
    if (i * g->size != off)
        return false;
    *t = tag_of(r, base + (i << UNIT_SHIFT));
    return true;
}

/* The slab holding p (an object or the slab itself), derived from p. */
static inline slab *slab_at(void *p, const slabgeo *g) {
    return (slab *)(void *)((unsigned char *)p - ((uintptr_t)p & (slab_bytes(g) - 1)));
}

static inline unsigned slab_index(const slab *s, const void *p, const slabgeo *g) {
    uint64_t off = (uintptr_t)p - (uintptr_t)s - SLAB_HDR;
    return (unsigned)((off * g->recip) >> 32);
}

static inline void *slab_obj(slab *s, unsigned i, const slabgeo *g) {
    return (unsigned char *)s + SLAB_HDR + (size_t)i * g->size;
}

static inline bool slab_bit(const slab *s, unsigned i) {
    return i < 128u && ((s->free[i >> 6] >> (i & 63u)) & 1u);
}

/* Index of the lowest set bit of x != 0, without a libgcc call. */
static inline unsigned low_bit(uint64_t x) {
#if defined(__x86_64__) || defined(__aarch64__) || defined(__riscv_zbb)
    return (unsigned)__builtin_ctzll(x);
#else
    static const unsigned char k_debruijn[64] = {
        0,  1,  2,  53, 3,  7,  54, 27, 4,  38, 41, 8,  34, 55, 48, 28, 62, 5,  39, 46, 44, 42,
        22, 9,  24, 35, 59, 56, 49, 18, 29, 11, 63, 52, 6,  26, 37, 40, 33, 47, 61, 45, 43, 21,
        23, 58, 17, 10, 51, 25, 36, 32, 60, 20, 57, 16, 50, 31, 19, 15, 30, 14, 13, 12};
    return k_debruijn[((x & (~x + 1u)) * 0x022fdd63cc95386dull) >> 58];
#endif
}

static void slab_link(slabclass *sc, slab *s) {
    s->prev = NULL;
    s->next = sc->partial;
    if (s->next)
        s->next->prev = s;
    sc->partial = s;
    s->where = SLAB_PARTIAL;
}

static void slab_unlink(slabclass *sc, slab *s) {
    if (s->prev)
        s->prev->next = s->next;
    else
        sc->partial = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    s->where = SLAB_FULL;
}

/* A new slab of class c from the core, every object free, every unit
 * tagged CACHED|c; NULL when the core has no room. O(slab units). */
static slab *slab_new(unsigned c) {
    const slabgeo *g = slab_geo(c);
    size_t bytes = slab_bytes(g);
    void *p = kbuddy_alloc(&g_heap, bytes, bytes);
    if (!p)
        return NULL;
    const mregion *r = region_of(&g_lock_hint, (uintptr_t)p);
    if (UNLIKELY(!r)) { /* a region added behind the layer's back */
        (void)kbuddy_free(&g_heap, p);
        return NULL;
    }
    slab *s = p;
    memset(s, 0, sizeof *s);
    s->cls = (uint8_t)c;
    s->nfree = g->n;
    for (unsigned i = 0; i < g->n; i++)
        s->free[i >> 6] |= (uint64_t)1 << (i & 63u);
    for (size_t off = 0; off < bytes; off += UNIT)
        tag_set(tag_of(r, (uintptr_t)p + off), TAG_CACHED | c);
    g_slabs++;
    g_slab_bytes += bytes;
    return s;
}

/* An empty slab goes back to the core, its tags cleared first. */
static void slab_release(slab *s, const slabgeo *g) {
    size_t bytes = slab_bytes(g);
    uintptr_t a = (uintptr_t)s;
    const mregion *r = region_of(&g_lock_hint, a);
    if (r)
        for (size_t off = 0; off < bytes; off += UNIT)
            tag_clear(tag_of(r, a + off));
    (void)kbuddy_free(&g_heap, s);
    g_slabs--;
    g_slab_bytes -= bytes;
}

/* Up to `want` objects of slab class c into out[] (CACHED, as they are in
 * their slabs), taken lowest addresses first (from the class's partial
 * slabs, then its spare, then new slabs) and stored highest first, for
 * the magazine to hand out in ascending order (core_take_run). Returns
 * how many: fewer only when the core heap has no room for a slab. Under
 * the lock; O(want + slab units per new slab). */
static inline uint32_t slab_take(unsigned c, struct mentry *out, uint32_t want) {
    const slabgeo *g = slab_geo(c);
    slabclass *sc = &g_slabc[c - NBLOCK];
    uint32_t got = 0;
    while (got < want) {
        slab *s = sc->partial;
        if (!s) {
            if ((s = sc->spare) != NULL)
                sc->spare = NULL;
            else if ((s = slab_new(c)) == NULL)
                break;
            slab_link(sc, s);
        }
        const mregion *r = region_of(&g_lock_hint, (uintptr_t)s);
        for (unsigned w = 0; w < 2u && got < want; w++) {
            while (s->free[w] && got < want) {
                unsigned i = w * 64u + low_bit(s->free[w]);
                s->free[w] &= s->free[w] - 1u;
                out[want - 1 - got].p = slab_obj(s, i, g);
                out[want - 1 - got].t = tag_of(r, (uintptr_t)s + ((uintptr_t)i << UNIT_SHIFT));
                got++;
                s->nfree--;
            }
        }
        if (!s->nfree)
            slab_unlink(sc, s);
    }
    if (got < want) /* short: to the front (forwards: the gap is below) */
        for (uint32_t i = 0; i < got; i++)
            out[i] = out[want - got + i];
    g_slab_out += got;
    g_slab_out_bytes += (size_t)got * g->size;
    return got;
}

/* Put an object of slab class c that is out of its slab (CACHED, in no
 * magazine any more) back into it. A slab that becomes empty is the
 * class's spare, or goes back to the core when there is one. Under the
 * lock; O(1), O(slab units) when a slab goes back. */
static inline void slab_give(void *p, unsigned c) {
    const slabgeo *g = slab_geo(c);
    slabclass *sc = &g_slabc[c - NBLOCK];
    slab *s = slab_at(p, g);
    unsigned i = slab_index(s, p, g);
    s->free[i >> 6] |= (uint64_t)1 << (i & 63u);
    g_slab_out--;
    g_slab_out_bytes -= g->size;
    if (s->nfree++ == 0)
        slab_link(sc, s);
    if (s->nfree == g->n) {
        slab_unlink(sc, s);
        if (!sc->spare) {
            sc->spare = s;
            s->where = SLAB_SPARE;
        } else {
            slab_release(s, g);
        }
    }
}

/* Give the spare slabs back to the core. True if there was any. Under the
 * lock. O(classes + slab units). */
static inline bool slab_trim_locked(void) {
    bool any = false;
    for (unsigned k = 0; k < NSLAB; k++) {
        if (g_slabc[k].spare) {
            slab_release(g_slabc[k].spare, &k_slab[k]);
            g_slabc[k].spare = NULL;
            any = true;
        }
    }
    return any;
}

/* The fork child's sweep (kbm_fork.h) found, at address a, a slab unit of
 * class c whose tag is CACHED and unmarked: unless the unit is past the
 * slab's objects or its object is free in the slab, that object was in a
 * magazine of a thread fork did not copy (or between a dead thread's
 * magazine and its state), and goes back into its slab. Returns 1 if it
 * did. */
static size_t slab_fork_sweep(const mregion *r, uintptr_t a, unsigned c) {
    const slabgeo *g = slab_geo(c);
    uintptr_t base = a & ~(uintptr_t)(slab_bytes(g) - 1);
    unsigned i = (unsigned)((a - base) >> UNIT_SHIFT);
    /* The slab's pointer, derived from the region's (as kbm_regions.h's are). */
    slab *s = (slab *)(void *)((unsigned char *)r->tags + (base - (uintptr_t)r->tags));
    if (i >= g->n || slab_bit(s, i))
        return 0;
    slab_give(slab_obj(s, i, g), c);
    return 1;
}

/* What kbuddy_malloc_check's walk finds in slabs. */
typedef struct slabtally {
    size_t slabs, bytes, out, out_bytes, partial, spares, cached, cached_units;
    bool bad;
} slabtally;

/* A used core block [a, a + size) whose first unit is tagged as a slab's of
 * class c: geometry, header and every unit's tag against each other. The
 * objects in magazines (neither free in the slab nor live) are counted
 * in k->cached. O(slab units). */
static void slab_check_block(slabtally *k, const mregion *r, void *start, size_t size, unsigned c) {
    const slabgeo *g = slab_geo(c);
    size_t bytes = slab_bytes(g);
    uintptr_t a = (uintptr_t)start;
    if (size != bytes || (a & (bytes - 1))) {
        k->bad = true;
        return;
    }
    const slab *s = start;
    unsigned nfree = 0, cached = 0;
    for (unsigned i = 0; i < (unsigned)(bytes >> UNIT_SHIFT); i++) {
        unsigned tag = tag_get(tag_of(r, a + ((uintptr_t)i << UNIT_SHIFT)));
        bool bit = slab_bit(s, i);
        if (i >= g->n)
            k->bad |= bit || tag != (TAG_CACHED | c);
        else if (tag == (TAG_LIVE | c))
            k->bad |= bit;
        else if (tag == (TAG_CACHED | c) && bit)
            nfree++;
        else if (tag == (TAG_CACHED | c))
            cached++;
        else
            k->bad = true;
    }
    k->bad |= s->cls != c || s->nfree != nfree;
    switch (s->where) {
    case SLAB_FULL:
        k->bad |= nfree != 0;
        break;
    case SLAB_PARTIAL:
        k->bad |= nfree == 0 || nfree == g->n;
        k->partial++;
        break;
    case SLAB_SPARE:
        k->bad |= nfree != g->n || g_slabc[c - NBLOCK].spare != s;
        k->spares++;
        break;
    default:
        k->bad = true;
    }
    k->slabs++;
    k->bytes += bytes;
    k->out += g->n - nfree;
    k->out_bytes += (size_t)(g->n - nfree) * g->size;
    k->cached += cached;
    k->cached_units += cached * class_units(c);
}

/* Whether p may be read as the header of a slab of class c: in a region,
 * aligned, its unit tagged as a slab's of that class. */
static bool slab_ptr_ok(const slab *s, unsigned c, const mregion **hint) {
    uintptr_t a = (uintptr_t)s;
    const mregion *r = region_of(hint, a);
    if (!r || (a & (slab_bytes(slab_geo(c)) - 1)))
        return false;
    unsigned tag = tag_get(tag_of(r, a));
    return is_slab_tag(tag) && (tag & TAG_CLASS) == c;
}

/* After the walk: the lists and the counters against what it saw. */
static bool slab_totals_ok(const slabtally *k, const mregion **hint) {
    size_t partial = 0, spares = 0;
    for (unsigned j = 0; j < NSLAB; j++) {
        unsigned c = NBLOCK + j;
        const slab *prev = NULL;
        for (const slab *s = g_slabc[j].partial; s; prev = s, s = s->next) {
            if (partial++ > k->partial || !slab_ptr_ok(s, c, hint) || s->where != SLAB_PARTIAL ||
                s->prev != prev)
                return false;
        }
        if (g_slabc[j].spare) {
            if (!slab_ptr_ok(g_slabc[j].spare, c, hint) || g_slabc[j].spare->where != SLAB_SPARE)
                return false;
            spares++;
        }
    }
    return !k->bad && partial == k->partial && spares == k->spares && k->slabs == g_slabs &&
           k->bytes == g_slab_bytes && k->out == g_slab_out && k->out_bytes == g_slab_out_bytes;
}

/* A magazine entry of slab class c: the object's start, its state where
 * the entry says, and out of its slab. */
static bool slab_entry_ok(const mregion *r, void *p, tagref t, unsigned c) {
    uintptr_t a = (uintptr_t)p;
    unsigned tag = tag_get(tag_of(r, a));
    tagref ot;
    if (!is_slab_tag(tag) || (tag & TAG_CLASS) != c || !slab_object(r, a, c, &ot) ||
        !tagref_same(ot, t))
        return false;
    const slabgeo *g = slab_geo(c);
    slab *s = slab_at(p, g);
    return !slab_bit(s, slab_index(s, p, g));
}

#else /* no slabs: nothing is ever a slab's */

typedef struct slabtally {
    size_t cached, cached_units;
    bool bad;
} slabtally;

static inline bool is_slab_tag(unsigned tag) {
    (void)tag;
    return false;
}
static inline bool slab_object(const mregion *r, uintptr_t a, unsigned c, tagref *t) {
    (void)r, (void)a, (void)c, (void)t;
    return false;
}
static inline uint32_t slab_take(unsigned c, struct mentry *out, uint32_t want) {
    (void)c, (void)out, (void)want;
    return 0;
}
static inline void slab_give(void *p, unsigned c) { (void)p, (void)c; }
static inline bool slab_trim_locked(void) { return false; }
static inline size_t slab_fork_sweep(const mregion *r, uintptr_t a, unsigned c) {
    (void)r, (void)a, (void)c;
    return 0;
}
static inline void slab_check_block(slabtally *k, const mregion *r, void *start, size_t size,
                                    unsigned c) {
    (void)k, (void)r, (void)start, (void)size, (void)c;
}
static inline bool slab_totals_ok(const slabtally *k, const mregion **hint) {
    (void)hint;
    return !k->bad;
}
static inline bool slab_entry_ok(const mregion *r, void *p, tagref t, unsigned c) {
    (void)r, (void)p, (void)t, (void)c;
    return false;
}
#endif
