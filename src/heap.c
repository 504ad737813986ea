/*
 * The byte heap: regions of memory handed over at any time, each carrying
 * its own bookkeeping at its head and its own instance of the buddy engine
 * (buddy.c) over the minimum blocks ("units") that follow.
 *
 * Where things live
 *   region head:  struct kbuddy_region | order descriptors | free bitmaps |
 *                 one control byte per unit; then the units themselves.
 *   Nothing is ever written into free memory, and nothing about a live
 *   allocation is kept inside it: a pointer is resolved to its region
 *   (address range), then to its unit's control byte, and only a control
 *   byte marked as an allocation's first is believed. So interior, foreign
 *   and already-freed pointers are told apart and refused without harm.
 *
 * Allocation record (see kbuddy_internal.h): the control byte of the first
 * unit holds the number of unused bytes of the last unit; allocations of
 * more than one unit keep their unit count in the control bytes after it.
 * So the requested size is known exactly (statistics, sized-free checks)
 * without a header in front of the block.
 *
 * Cost per operation: finding the region is O(1) for the region used last
 * and O(R) otherwise; the engine's work is O(L). Memory: 1 byte + ~2.03
 * bits per unit (3.9% with 32-byte units), plus a few hundred bytes per
 * region.
 */
#include "kbuddy_internal.h"

#define UNIT_SHIFT KBUDDY_MIN_BLOCK_SHIFT
#define UNIT ((uintptr_t)KBUDDY_MIN_BLOCK)

/* Region sizes are capped so that bitmap offsets fit in 32 bits; the rest of
 * a larger region is counted as overhead. 2^36 units is 2 TiB; a 32-bit
 * address space holds fewer units than its own size in bytes. */
#if UINTPTR_MAX > 0xFFFFFFFFu
#define MAX_REGION_UNITS ((uintptr_t)1 << 36)
#else
#define MAX_REGION_UNITS ((uintptr_t)1 << (32 - UNIT_SHIFT))
#endif

typedef struct kbuddy_region region;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static uintptr_t align_up(uintptr_t x, uintptr_t a) { return (x + a - 1) & ~(a - 1); }

/* The address of unit u of region r, derived from the region's own pointer
 * (not from an integer), so that pointers keep their provenance. */
static void *unit_ptr(region *r, uintptr_t u) {
    return (unsigned char *)r + ((u << UNIT_SHIFT) - (uintptr_t)r);
}

static uint8_t *ctrl_of(const region *r, uintptr_t u) { return &r->ctrl[u - r->engine.lo]; }

static bool region_contains(const region *r, uintptr_t addr) {
    return addr - r->start < r->end - r->start;
}

/* The region holding addr, or NULL. Tries the region used last first. */
static region *region_of(const kbuddy_heap *h, uintptr_t addr) {
    region *r = h->hint;
    if (r && region_contains(r, addr))
        return r;
    for (r = h->regions; r && r->start <= addr; r = r->next)
        if (addr < r->end)
            return r;
    return NULL;
}

/* Units needed for `size` bytes (a size of 0 takes one unit). The caller
 * has checked that the rounding cannot overflow. */
static uintptr_t units_for(size_t size) {
    return size ? ((uintptr_t)size + UNIT - 1) >> UNIT_SHIFT : 1;
}

/* Alignment order, in units, of an allocation aligned to `align` bytes. */
static unsigned align_order(size_t align) {
    return align > UNIT ? kb_floor_log2(align) - UNIT_SHIFT : 0u;
}

/* Order of the block an allocation of n units with alignment order ka
 * needs. */
static unsigned order_for(uintptr_t n, unsigned ka) {
    unsigned k = kb_ceil_log2(n);
    return ka > k ? ka : k;
}

/* ------------------------------------------------------------------------ */
/* Allocation records in the control bytes                                   */
/* ------------------------------------------------------------------------ */

KB_INLINE void record_write(uint8_t *c, uintptr_t n, size_t size) {
    uint8_t slack = (uint8_t)((n << UNIT_SHIFT) - size);
    if (n == 1) {
        c[0] = (uint8_t)(KB_CTRL_START | slack);
        return;
    }
    c[0] = (uint8_t)(KB_CTRL_START | KB_CTRL_LONG | slack);
    size_t i = 1;
    uintptr_t v = n;
    for (; v > KB_CTRL_VALUE; v >>= 4)
        c[i++] = (uint8_t)(KB_CTRL_MORE | (v & KB_CTRL_VALUE));
    c[i] = (uint8_t)v;
    c[n - 1] |= KB_CTRL_END;
}

/* Decode a record; false if it is malformed (the count must fit before
 * `limit` units, a long record must describe at least two units and lie
 * within them, and the end mark must be where the count says). */
KB_INLINE bool record_read(const uint8_t *c, uintptr_t limit, uintptr_t *units, size_t *len) {
    uint8_t c0 = c[0];
    uintptr_t n = 1;
    size_t i = 1;
    if (c0 & KB_CTRL_LONG) {
        if (limit < 2)
            return false;
        uint8_t b = c[1];
        n = b & KB_CTRL_VALUE;
        i = 2;
        for (unsigned shift = 4; (b & (KB_CTRL_START | KB_CTRL_MORE)) == KB_CTRL_MORE; shift += 4) {
            if (i >= limit || shift >= 40)
                return false;
            b = c[i++];
            n |= (uintptr_t)(b & KB_CTRL_VALUE) << shift;
        }
        if ((b & KB_CTRL_START) || n < 2 || n > limit || i > n ||
            (c[n - 1] & (KB_CTRL_START | KB_CTRL_END)) != KB_CTRL_END)
            return false;
    }
    if ((c0 & KB_CTRL_SLACK) > UNIT || ((c0 & KB_CTRL_SLACK) == UNIT && n != 1))
        return false;
    *units = n;
    *len = i;
    return true;
}

static size_t record_size(const uint8_t *c, uintptr_t n) {
    return (size_t)((n << UNIT_SHIFT) - (c[0] & KB_CTRL_SLACK));
}

static void record_clear(uint8_t *c, uintptr_t n, size_t len) {
    c[n - 1] = 0;
    if (n >= 8 && len <= 8) {
        /* Every byte of [0, n) not in the record is already 0: clear the
         * first eight in one store. */
        __builtin_memset(c, 0, 8);
        return;
    }
    while (len--)
        c[len] = 0;
}

/* Short records (allocations of at most 8 units) as one 8-byte word: the
 * batch functions write and check a run of equal allocations with one load
 * or store per allocation instead of a loop over its bytes. Only where the
 * 8 bytes lie inside the region's control bytes; the bytes past the
 * allocation are written back as they were read (under the heap lock). */
#define SHORT_UNITS 8u

static uint64_t ctrl_load8(const uint8_t *c) {
    uint64_t w;
    __builtin_memcpy(&w, c, 8);
    return w;
}

static void ctrl_store8(uint8_t *c, uint64_t w) { __builtin_memcpy(c, &w, 8); }

/* The mask of the first n (1 .. 8) control bytes of a word, in memory
 * order. */
static uint64_t ctrl_mask(uintptr_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return n >= 8 ? ~(uint64_t)0 : ((uint64_t)1 << (8 * n)) - 1;
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return n >= 8 ? ~(uint64_t)0 : ~(~(uint64_t)0 >> (8 * n));
#else
    uint8_t m[8] = {0};
    for (uintptr_t i = 0; i < n; i++)
        m[i] = 0xff;
    return ctrl_load8(m);
#endif
}

/* Records as one word. On little-endian targets byte i of the control
 * bytes is byte i of a word loaded from them, so the record of a small
 * allocation (under 256 units: one or two count bytes) is recognised with
 * one load and a compare where its 8 bytes lie inside the region's control
 * bytes (kbuddy_free_sized, kbuddy_free), and, from 8 units up, written
 * with one store (kbuddy_alloc). Builds for size (KBUDDY_SMALL, the
 * default at -Os) leave those paths out: they cost code and change nothing
 * but speed. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && !KBUDDY_SMALL
#define WORD_RECORDS 1
#else
#define WORD_RECORDS 0
#endif
#define WORD_RECORD_UNITS 256u

#if WORD_RECORDS
/* The first bytes of the record of n units (1 <= n < WORD_RECORD_UNITS)
 * without its slack or end mark: record_word's word looked up instead of
 * built (1 KiB). record_head[0] stands for no record: it is what the
 * unsized free looks up for the count 0 it decodes from a record of 256
 * units or more, and equals the first two bytes of such a record; what
 * keeps that from matching is short_end[0] (release_record). Measured for
 * issue 13 (callgrind, 200k ops, dense, W3 / W4 sized frees): 464.1 /
 * 416.9 building it, 461.7 / 414.4 looked up (the allocation's one-store
 * write and both frees). */
#define HEAD_COUNT(n) ((n) < 16 ? (n) : (KB_CTRL_MORE | ((n) & KB_CTRL_VALUE)) | ((n) >> 4) << 8)
#define HEAD(n) ((n) == 1 ? KB_CTRL_START : KB_CTRL_START | KB_CTRL_LONG | HEAD_COUNT(n) << 8)
#define HEAD4(n) HEAD(n), HEAD((n) + 1), HEAD((n) + 2), HEAD((n) + 3)
#define HEAD16(n) HEAD4(n), HEAD4((n) + 4), HEAD4((n) + 8), HEAD4((n) + 12)
#define HEAD64(n) HEAD16(n), HEAD16((n) + 16), HEAD16((n) + 32), HEAD16((n) + 48)
static const uint32_t record_head[WORD_RECORD_UNITS] = {
    HEAD64(0u), HEAD64(64u), HEAD64(128u), HEAD64(192u)};
/* For records of n <= 8 units: the mask of their n bytes in a word
 * (ctrl_mask) and their end mark in it (none for one unit), looked up
 * instead of shifted into place: the shifts by n tie up a register (the
 * count's) in the frees, whose fast paths then keep two registers fewer
 * across the path (dense W3 / W4 sized 455.9 / 408.6 -> 453.8 / 406.5).
 * One table of {word, mask} pairs instead: 453.8 / 406.5 against 452.8 /
 * 405.6 for these two (gcc kept a third register). */
#define SHORT_END(n) ((uint64_t)KB_CTRL_END << (8 * ((n) - 1)))
static const uint64_t short_mask[SHORT_UNITS + 1] = {
    0xffff, /* count 0: the start byte and the count byte, see short_end */
    0xff, 0xffff, 0xffffff, 0xffffffff, 0xffffffffff, 0xffffffffffff, 0xffffffffffffff,
    0xffffffffffffffff};
static const uint64_t short_end[SHORT_UNITS + 1] = {
    KB_CTRL_VALUE << 8, /* count 0: value bits all ones where the word's are 0 */
    0, SHORT_END(2), SHORT_END(3), SHORT_END(4), SHORT_END(5), SHORT_END(6), SHORT_END(7),
    SHORT_END(8)};
#undef SHORT_END
#undef HEAD64
#undef HEAD16
#undef HEAD4
#undef HEAD
#undef HEAD_COUNT

/* The first bytes of the record record_write writes for `size` bytes in n
 * units (1 <= n < WORD_RECORD_UNITS, n == units_for(size)), with the end
 * mark when it falls among them (n <= 8); every byte past the record is
 * 0, as the other units of an allocation are. Its one caller,
 * records_write, stores it for 8 to 255 units (the frees compare with
 * record_head and the short tables instead). */
KB_INLINE uint64_t record_word(uintptr_t n, size_t size) {
    uint64_t w = record_head[n] | (uint64_t)((n << UNIT_SHIFT) - size);
    if (n - 2 < SHORT_UNITS - 1) /* 2 .. 8 units: the end mark is in the word */
        w |= (uint64_t)KB_CTRL_END << (8 * (n - 1));
    return w;
}
#endif

/* A live allocation found from a user pointer. */
typedef struct {
    region *r;
    uintptr_t u;      /* first unit                        */
    uintptr_t n;      /* units                             */
    size_t size;      /* bytes requested                   */
    size_t len;       /* bytes of its record               */
} live_block;

/* Resolve ptr to the live allocation it starts, or say why it does not. */
KB_INLINE kbuddy_status find_live(const kbuddy_heap *h, const void *ptr, live_block *out) {
    uintptr_t addr = (uintptr_t)ptr;
    region *r = region_of(h, addr);
    if (!r)
        return KBUDDY_EFOREIGN;
    uintptr_t u = addr >> UNIT_SHIFT;
    if ((addr & (UNIT - 1)) || u < r->engine.lo || u >= r->engine.hi)
        return KBUDDY_EBADPTR;
    const uint8_t *c = ctrl_of(r, u);
    if (!(*c & KB_CTRL_START)) {
        unsigned k;
        uintptr_t b;
        return kb_engine_find_free(&r->engine, u, &k, &b) ? KBUDDY_EDOUBLEFREE
                                                           : KBUDDY_EBADPTR;
    }
    if (!record_read(c, r->engine.hi - u, &out->n, &out->len))
        return KBUDDY_ECORRUPT;
    out->r = r;
    out->u = u;
    out->size = record_size(c, out->n);
    return KBUDDY_OK;
}

/* ------------------------------------------------------------------------ */
/* Regions                                                                   */
/* ------------------------------------------------------------------------ */

void kbuddy_init(kbuddy_heap *heap) {
    if (heap)
        kb_zero(heap, sizeof *heap);
}

/* Bytes of bookkeeping that follow the region header for n units: order
 * descriptors, bitmap words, a guard byte, n control bytes, a guard byte. */
static uintptr_t meta_bytes(uintptr_t n) {
    return kb_orders_for(n) * sizeof(kb_order) + kb_engine_words_bound(n) * sizeof(kb_word) + n +
           KB_CTRL_GUARDS;
}

/* First unit after the bookkeeping (starting at address meta) of n units. */
static uintptr_t units_start(uintptr_t meta, uintptr_t n) {
    return align_up(meta + meta_bytes(n), UNIT) >> UNIT_SHIFT;
}

/* zeroed: the range reads as zero, so its bookkeeping (control bytes and
 * bitmaps, 1/32 of it and more) is not cleared: pages the heap never uses
 * stay untouched. */
static kbuddy_status add_region(kbuddy_heap *h, void *start, size_t size, bool zeroed) {
    uintptr_t s = (uintptr_t)start;
    if (!h || !start || size == 0 || size > UINTPTR_MAX - s)
        return KBUDDY_EINVAL;
    uintptr_t e = s + size;

    /* Lay out: header, order descriptors, words, guard, ctrl bytes, guard,
     * units. The bookkeeping grows with the unit count, so find the
     * largest count whose bookkeeping still fits in front of its units (a
     * binary search: fitting is monotone in the count). Larger regions
     * never serve less. */
    uintptr_t hdr = align_up(s, sizeof(kb_word));
    uintptr_t meta = hdr + sizeof(region);
    uintptr_t n = 0; /* units the region can serve; 0: too small to be of use */
    if (meta < e && meta >= s) {
        uintptr_t end_unit = e >> UNIT_SHIFT;
        uintptr_t fit = 0, over = end_unit - (meta >> UNIT_SHIFT) + 1;
        if (over > MAX_REGION_UNITS + 1)
            over = MAX_REGION_UNITS + 1;
        while (over - fit > 1) { /* invariant: fit fits (0 trivially), over does not */
            uintptr_t mid = fit + (over - fit) / 2;
            if (units_start(meta, mid) + mid <= end_unit)
                fit = mid;
            else
                over = mid;
        }
        n = fit;
    }

    kb_lock(&h->lock);
    /* Regions are sorted and disjoint, so sorted by end too: skip those that
     * end at or before s; the next one overlaps iff it starts before e.
     * An overlap is reported whatever the size: it is the caller's mistake
     * about which memory is whose, and saying ENOMEM would hide it. */
    region **link = &h->regions;
    while (*link && (*link)->end <= s)
        link = &(*link)->next;
    if (*link && (*link)->start < e) {
        kb_unlock(&h->lock);
        return KBUDDY_EOVERLAP;
    }
    if (n == 0) {
        kb_unlock(&h->lock);
        return KBUDDY_ENOMEM;
    }
    uintptr_t lo = units_start(meta, n);

    unsigned char *base = start;
    region *r = (region *)(void *)(base + (hdr - s));
    kb_order *order = (kb_order *)(void *)(base + (meta - s));
    kb_word *words = (kb_word *)(void *)((unsigned char *)order + kb_orders_for(n) * sizeof(kb_order));
    r->start = s;
    r->end = e;
    r->ctrl = (uint8_t *)(words + kb_engine_words_bound(n)) + 1;
    if (zeroed) {
        (void)kb_engine_layout(&r->engine, lo, lo + n, order, words);
    } else {
        kb_zero(r->ctrl - 1, n + KB_CTRL_GUARDS);
        kb_engine_init(&r->engine, lo, lo + n, order, words);
    }
    r->engine.ctrl = r->ctrl;
    r->engine.owner_mask = &h->orders_free;
    r->engine.owner_count = h->regions_with_order;
    kb_engine_release(&r->engine, lo, lo + n);

    r->next = *link;
    *link = r;
    h->region_count++;
    h->total += (size_t)(n << UNIT_SHIFT);
    h->overhead += size - (size_t)(n << UNIT_SHIFT);
    kb_unlock(&h->lock);
    return KBUDDY_OK;
}

kbuddy_status kbuddy_add_region(kbuddy_heap *h, void *start, size_t size) {
    return add_region(h, start, size, false);
}

kbuddy_status kbuddy_add_region_zeroed(kbuddy_heap *h, void *start, size_t size) {
    return add_region(h, start, size, true);
}

/* Is every unit of r free? The free blocks that tile it are found one
 * after the other from its first unit: at most two per order when it is
 * (so O(L^2)), and the first unit that is not free stops the walk. */
static bool region_is_free(const region *r) {
    const kb_engine *e = &r->engine;
    unsigned k;
    uintptr_t b;
    for (uintptr_t u = e->lo; u < e->hi; u = (b + 1) << k)
        if (!kb_engine_find_free(e, u, &k, &b))
            return false;
    return true;
}

kbuddy_status kbuddy_remove_region(kbuddy_heap *h, void *start) {
    if (!h || !start)
        return KBUDDY_EINVAL;
    uintptr_t s = (uintptr_t)start;
    kb_lock(&h->lock);
    region **link = &h->regions;
    while (*link && (*link)->start < s)
        link = &(*link)->next;
    region *r = *link;
    kbuddy_status st = KBUDDY_OK;
    if (!r || r->start != s)
        st = KBUDDY_EFOREIGN;
    else if (!region_is_free(r))
        st = KBUDDY_EBUSY;
    if (st != KBUDDY_OK) {
        kb_unlock(&h->lock);
        return st;
    }
    kb_engine_detach(&r->engine); /* its free orders leave the heap's summary */
    *link = r->next;
    if (h->hint == r)
        h->hint = NULL;
    size_t units = (size_t)((r->engine.hi - r->engine.lo) << UNIT_SHIFT);
    h->region_count--;
    h->total -= units;
    h->overhead -= (size_t)(r->end - r->start) - units;
    kb_unlock(&h->lock);
    return KBUDDY_OK;
}

/* ------------------------------------------------------------------------ */
/* Allocation and free                                                       */
/* ------------------------------------------------------------------------ */

/* The records of `count` allocations of n units (size bytes each) side by
 * side from control byte c on, whose bytes are all 0. */
KB_INLINE void records_write(uint8_t *c, uintptr_t n, size_t size, size_t count) {
#if WORD_RECORDS
    /* 8 to 255 units: the record's bytes and the zeros after it as one
     * word (all inside the allocation), then the end mark. */
    if (n - 8 < WORD_RECORD_UNITS - 8) {
        ctrl_store8(c, record_word(n, size));
        c[n - 1] = KB_CTRL_END;
    } else
#endif
        record_write(c, n, size);
    size_t i = 1;
    if (count > 1 && n <= SHORT_UNITS && n * count >= 8) {
        /* The run's control bytes are all 0 (the engine cleared its free
         * marks): the first record and the zeros after it are every
         * record's 8 bytes, stored in address order as long as they end
         * inside the run; the last few records are written byte by byte. */
        uint64_t w = ctrl_load8(c);
        for (; (i * n) + 8 <= n * count; i++)
            ctrl_store8(c + i * n, w);
    }
    for (; i < count; i++)
        record_write(c + i * n, n, size);
}

/* Take `count` allocations of n units (size bytes each), side by side, from
 * one run of count * n units, whose block order is k. NULL when no region
 * has a free block of order k.
 * Tried for issue 13 and not kept (callgrind, dense W3, instructions per
 * call of alloc_unlocked, 66.2 as it is): a single allocation's path of
 * its own, the record's word built before the engine's call so that only
 * it and n live across it, k as one floor_log2 of 2 (n - 1) + 1 and
 * align >> UNIT_SHIFT: 66.3 (gcc still saves five registers; with the
 * counters updated in this function's order it pairs two of them into
 * vector code, W3 / W4 455.9 / 408.3 against 453.8 / 406.5); u copied to
 * a local after the call: no change. */
KB_INLINE void *alloc_run_locked(kbuddy_heap *h, size_t size, uintptr_t n, size_t count,
                                 unsigned k, unsigned ka) {
    if (k >= KBUDDY_MAX_ORDERS || !(h->orders_free >> k))
        return NULL;
    /* Lowest address first: the first region with a large enough block
     * (with one region, the heap's mask is that region's: not tested
     * again, but in builds for size). */
    region *r = h->regions;
    if (KBUDDY_SMALL || r->next)
        while (!(r->engine.nonempty >> k))
            r = r->next;
    uintptr_t u;
    /* The take cannot fail now: the statistics first, so that fewer values
     * live across the call. */
    h->allocated += (size_t)((n * count) << UNIT_SHIFT);
    h->user += size * count;
    h->allocations += count;
    /* Fast placement: aligned to the whole block, which searches no run
     * and starts at the block (see kb_engine_take). */
    (void)kb_engine_take_heap(&r->engine, n * count, k, h->placement == KBUDDY_PLACE_FAST ? k : ka,
                              &u);
    records_write(ctrl_of(r, u), n, size, count);
    return unit_ptr(r, u);
}

KB_INLINE void *alloc_locked(kbuddy_heap *h, size_t size, uintptr_t n, unsigned k, unsigned ka) {
    return alloc_run_locked(h, size, n, 1, k, ka);
}

size_t kbuddy_alloc_many_aligned(kbuddy_heap *h, size_t size, size_t align, size_t count,
                                 void **out) {
    if (!h || !out || count == 0 || !kb_is_pow2(align) || size > SIZE_MAX - (UNIT - 1))
        return 0;
    uintptr_t n = units_for(size);
    unsigned ka = align_order(align);
    size_t got = 0;
    kb_lock(&h->lock);
    /* One run keeps every block aligned only when the blocks are whole
     * multiples of the alignment. */
    if (count > 1 && !(n & (((uintptr_t)1 << ka) - 1)) && n <= (MAX_REGION_UNITS >> 1) / count) {
        unsigned char *run = alloc_run_locked(h, size, n, count, order_for(n * count, ka), ka);
        for (; run && got < count; got++)
            out[got] = run + ((got * n) << UNIT_SHIFT);
    }
    for (unsigned k = order_for(n, ka); got < count; got++) /* no run: one by one */
        if ((out[got] = alloc_locked(h, size, n, k, ka)) == NULL)
            break;
    kb_unlock(&h->lock);
    return got;
}

size_t kbuddy_alloc_each(kbuddy_heap *h, size_t size, size_t align, size_t count, void **out) {
    if (!h || !out || count == 0 || !kb_is_pow2(align) || size > SIZE_MAX - (UNIT - 1))
        return 0;
    uintptr_t n = units_for(size);
    unsigned ka = align_order(align);
    unsigned k = order_for(n, ka);
    size_t got = 0;
    kb_lock(&h->lock);
#if KBUDDY_SMALL
    /* Builds for size: one allocation at a time, as kbuddy_alloc makes
     * them (no kb_engine_take_each). */
    for (; got < count; got++)
        if ((out[got] = alloc_locked(h, size, n, k, ka)) == NULL)
            break;
#else
    if (h->placement == KBUDDY_PLACE_FAST)
        ka = k; /* as alloc_run_locked asks the engine */
    while (got < count && k < KBUDDY_MAX_ORDERS && (h->orders_free >> k)) {
        /* Each round is what the next kbuddy_alloc would do first: the
         * lowest region with a large enough block, then the engine's
         * choice in it, for as many of the takes as follow from it. */
        region *r = h->regions;
        while (!(r->engine.nonempty >> k))
            r = r->next;
        uintptr_t u;
        size_t m = kb_engine_take_each(&r->engine, n, k, ka, count - got, &u);
        uintptr_t stride = (uintptr_t)1 << k;
        if (m > 1 && n == stride) { /* side by side: the records as a run */
            records_write(ctrl_of(r, u), n, size, m);
        } else {
            for (size_t i = 0; i < m; i++)
                record_write(ctrl_of(r, u + i * stride), n, size);
        }
        for (size_t i = 0; i < m; i++)
            out[got + i] = unit_ptr(r, u + i * stride);
        got += m;
    }
    h->allocated += (size_t)((n * got) << UNIT_SHIFT);
    h->user += size * got;
    h->allocations += got;
#endif
    kb_unlock(&h->lock);
    return got;
}

/* The unaligned batch is the aligned one at alignment 1 (ka = 0: a run is
 * always tried first, then one by one). */
size_t kbuddy_alloc_many(kbuddy_heap *h, size_t size, size_t count, void **out) {
    return kbuddy_alloc_many_aligned(h, size, 1, count, out);
}

/* An allocation of `size` bytes at `align` (both checked), with the lock
 * held or none: NULL when no region has a free block of the order it
 * needs. */
KB_INLINE void *alloc_in(kbuddy_heap *h, size_t size, size_t align) {
    uintptr_t n = units_for(size);
    unsigned ka = align_order(align);
    return alloc_locked(h, size, n, order_for(n, ka), ka);
}

/* kbuddy_alloc with the heap's lock: the attempt under it and, while it
 * fails, the out-of-memory handler, read under the lock and called
 * outside it; each time it returns true the allocation is tried again.
 * Out of line where alloc_unlocked calls it too; builds for size have only
 * kbuddy_alloc's call, inlined. */
#if KBUDDY_SMALL
static void *alloc_wait(kbuddy_heap *h, size_t size, size_t align) {
#else
static KB_NOINLINE void *alloc_wait(kbuddy_heap *h, size_t size, size_t align) {
#endif
    for (;;) {
        kb_lock(&h->lock);
        void *p = alloc_in(h, size, align);
        if (KB_LIKELY(p != NULL)) {
            kb_unlock(&h->lock);
            return p;
        }
        kbuddy_oom_fn oom = h->oom;
        void *ctx = h->oom_ctx;
        kb_unlock(&h->lock);
        if (!oom || !oom(h, size, align, ctx))
            return NULL;
    }
}

#if !KBUDDY_SMALL
/* kbuddy_alloc on a heap without a lock (the global allocator's, which
 * serialises its calls itself): the attempt, and only when it fails the
 * handler's loop (alloc_wait, whose lock calls do nothing then). A
 * function of its own, which kbuddy_alloc jumps to, so that only what the
 * record needs is kept across the engine's call. */
static KB_NOINLINE void *alloc_unlocked(kbuddy_heap *h, size_t size, size_t align) {
    void *p = alloc_in(h, size, align);
    return KB_LIKELY(p != NULL) ? p : alloc_wait(h, size, align);
}
#endif

void *kbuddy_alloc(kbuddy_heap *h, size_t size, size_t align) {
    if (!h || !kb_is_pow2(align) || size > SIZE_MAX - (UNIT - 1))
        return NULL;
#if !KBUDDY_SMALL
    if (!h->lock.acquire)
        return alloc_unlocked(h, size, align);
#endif
    return alloc_wait(h, size, align);
}

/* An allocation of `size` bytes in units [u, u + n) of r, its record
 * already cleared, leaves the statistics (first: fewer values live across
 * the engine call) and goes back to the engine. */
KB_INLINE void release_units(kbuddy_heap *h, region *r, uintptr_t u, uintptr_t n, size_t size) {
    h->allocated -= (size_t)(n << UNIT_SHIFT);
    h->user -= size;
    h->allocations--;
    kb_engine_release_heap(&r->engine, u, u + n);
}

KB_INLINE void release_live(kbuddy_heap *h, const live_block *b) {
    h->hint = b->r;
    record_clear(ctrl_of(b->r, b->u), b->n, b->len);
    release_units(h, b->r, b->u, b->n, b->size);
}

/* Does the record at c repeat the template t (the len bytes of a record
 * of n units, then its last unit's byte, `last`)? Then it decodes to the
 * same record: record_read looks at nothing else. */
static bool record_repeats(const uint8_t *c, const uint8_t *t, size_t len, uintptr_t n, uint8_t last) {
    for (size_t i = 0; i < len; i++)
        if (c[i] != t[i])
            return false;
    return n - 1 < len || c[n - 1] == last;
}

/* How many of ptrs[0..count) continue a run, allocations of n (<= 8)
 * units each starting where the last ended (upward) or ending where the
 * last started (downward), the first at control byte x of ctrl, each with
 * a record equal to the template word under tmask; their records are
 * cleared. Stops at a pointer that is not the next, a record that differs,
 * or an x past xlast (the start of the last 8 control bytes; below 0 wraps
 * past it). */
static size_t clear_repeats(void *const *ptrs, size_t count, uint8_t *ctrl, uintptr_t x,
                            uintptr_t xlast, uintptr_t n, bool down, uint64_t tword,
                            uint64_t tmask) {
    uintptr_t a = (uintptr_t)ptrs[0], step = n << UNIT_SHIFT;
    if (down) {
        step = 0 - step;
        n = 0 - n;
    }
    size_t i = 0;
    for (; i < count && (uintptr_t)ptrs[i] == a && x <= xlast; i++, a += step, x += n) {
        uint64_t w = ctrl_load8(ctrl + x);
        if ((w & tmask) != tword)
            break;
        ctrl_store8(ctrl + x, w & ~tmask);
    }
    return i;
}

size_t kbuddy_free_many(kbuddy_heap *h, void *const *ptrs, size_t count) {
    if (!h || !ptrs)
        return 0;
    size_t done = 0;
    region *run = NULL; /* allocations already unrecorded, not yet released */
    uintptr_t lo = 0, hi = 0;
    /* The record of the last block decoded: a block right next to the run
     * whose record repeats it byte for byte is the same kind of allocation
     * (a magazine's blocks are), and need not be decoded again. */
    uint8_t tmpl[16], last = 0;
    live_block t = {0};
    size_t bytes = 0, user = 0, blocks = 0; /* statistics, applied at the end */
    /* A short template (t.n <= 8 units, its 8 control bytes inside the
     * region's) instead: the record's bytes as a word under its mask.
     * `reps` blocks matched the template (the first being the template's
     * own) and are not yet in the statistics. */
    uint64_t tword = 0, tmask = 0;
    bool tshort = false;
    size_t reps = 0;
    kb_lock(&h->lock);
    for (; done < count; done++) {
        live_block b;
        uintptr_t addr = (uintptr_t)ptrs[done], u = addr >> UNIT_SHIFT;
        if (!addr)
            continue;
        if (t.n && (u == hi || u + t.n == lo)) { /* next to the run (t.n: there is one) */
            if (tshort && addr == u << UNIT_SHIFT) {
                /* A loop of its own, so that the few values it needs
                 * stay in registers. */
                bool down = u != hi;
                size_t m = clear_repeats(ptrs + done, count - done, run->ctrl, u - run->engine.lo,
                                         run->engine.hi - 8 - run->engine.lo, t.n, down, tword,
                                         tmask);
                if (m) {
                    reps += m;
                    if (down)
                        lo -= t.n * m;
                    else
                        hi += t.n * m;
                    done += m - 1;
                    continue;
                }
            } else if (!tshort && t.len && !(addr & (UNIT - 1)) && u >= run->engine.lo &&
                       u + t.n <= run->engine.hi) {
                uint8_t *c = ctrl_of(run, u);
                if (record_repeats(c, tmpl, t.len, t.n, last)) {
                    record_clear(c, t.n, t.len);
                    reps++;
                    if (u == hi)
                        hi += t.n;
                    else
                        lo = u;
                    continue;
                }
            }
        }
        if (!KBUDDY_SMALL && tshort && addr == u << UNIT_SHIFT &&
            u - run->engine.lo <= run->engine.hi - 8 - run->engine.lo) {
            /* Elsewhere in the template's region (a magazine's blocks
             * are scattered there once the program has freed them in
             * its own order): a record that repeats the template is the
             * same kind of allocation, as next to the run, and needs no
             * decoding either; the pending run goes back and this block
             * starts the next. (u is a whole unit of the region, the 8
             * bytes inside its control bytes; u below lo wraps high.) */
            uint8_t *c = run->ctrl + (u - run->engine.lo);
            uint64_t w = ctrl_load8(c);
            if ((w & tmask) == tword) {
                ctrl_store8(c, w & ~tmask);
                reps++;
                kb_engine_release(&run->engine, lo, hi);
                lo = u;
                hi = u + t.n;
                continue;
            }
        }
        /* A pointer into the pending run (freed twice in this batch) has no
         * record left and is not free yet: EBADPTR, and the batch stops. */
        if (find_live(h, ptrs[done], &b) != KBUDDY_OK)
            break;
        uint8_t *c = ctrl_of(b.r, b.u);
        if (reps) { /* the previous template's blocks */
            bytes += (size_t)((t.n * reps) << UNIT_SHIFT);
            user += t.size * reps;
            blocks += reps;
        }
        reps = 1; /* this block: the first of its template's */
        t = b;
        t.len = 0; /* no byte template unless the record fits */
        tshort = b.n <= SHORT_UNITS && b.u + 8 <= b.r->engine.hi;
        if (tshort) { /* the word template; one store clears the record */
            uint64_t w = ctrl_load8(c);
            tmask = ctrl_mask(b.n);
            tword = w & tmask;
            ctrl_store8(c, w & ~tmask);
        } else {
            if (b.len <= sizeof tmpl) {
                for (size_t i = 0; i < b.len; i++)
                    tmpl[i] = c[i];
                last = c[b.n - 1];
                t.len = b.len;
            }
            record_clear(c, b.n, b.len);
        }
        if (run == b.r && b.u == hi) {
            hi += b.n;
        } else if (run == b.r && b.u + b.n == lo) {
            lo = b.u;
        } else {
            if (run)
                kb_engine_release(&run->engine, lo, hi);
            run = b.r;
            lo = b.u;
            hi = b.u + b.n;
        }
    }
    if (run) {
        kb_engine_release(&run->engine, lo, hi);
        h->hint = run;
    }
    bytes += (size_t)((t.n * reps) << UNIT_SHIFT);
    user += t.size * reps;
    blocks += reps;
    h->allocated -= bytes;
    h->user -= user;
    h->allocations -= blocks;
    kb_unlock(&h->lock);
    return done;
}

/* The work of a free under the lock: resolve ptr, check it (and the
 * size and alignment given, when sized), release it. Out of line: one copy
 * for kbuddy_free and the sized free's uncommon cases. */
static KB_NOINLINE kbuddy_status free_checked(kbuddy_heap *h, void *ptr, bool sized, size_t size,
                                              size_t align) {
    /* initialised: gcc -Os cannot see that find_live fills b when it
     * returns KBUDDY_OK */
    live_block b = {NULL, 0, 0, 0, 0};
    kbuddy_status st = find_live(h, ptr, &b);
    if (st == KBUDDY_OK && sized &&
        (size != b.size || !kb_is_pow2(align) || ((uintptr_t)ptr & (align - 1))))
        st = KBUDDY_ESIZE;
    if (st == KBUDDY_OK)
        release_live(h, &b);
    return st;
}

#if WORD_RECORDS
/* The unit at addr in the region used last (*r), when the region has one
 * there: its index among the region's control bytes (*x). Inside the
 * region's units means inside the region, so its address range need not
 * be tested too. addr is a whole unit (the caller has tested it). The
 * callers find how many control bytes are left from there (room, at least
 * 1) where they test it: for the 8 their word reads, or for a long
 * record's own units.
 * Measured (callgrind dense, sized free): testing room >= 8 here for
 * every record, W3 453.8, W4 406.5; n <= room instead for long records,
 * 452.8, 405.6 (unsized 455.5 -> 455.9, 408.2 -> 408.6: code layout);
 * the span instead of room, tested as x + n > span: 456.7, 409.4; room
 * found here rather than where it is tested: 451.8, 404.5 against 451.3,
 * 404.0 (unsized 455.9, 408.6 against 455.4, 408.2). */
KB_INLINE bool hint_unit(const kbuddy_heap *h, uintptr_t addr, region **r, uintptr_t *x) {
    region *hr = h->hint;
    if (!hr)
        return false;
    *r = hr;
    *x = (addr >> UNIT_SHIFT) - hr->engine.lo; /* wraps when below lo */
    return *x < hr->engine.hi - hr->engine.lo;
}

/* The frees' common case, after the pointer's unit u was found in the
 * region used last at control byte c, with `room` of the region's control
 * bytes from c on (at least the 8 the word w was read from; a long record,
 * n > SHORT_UNITS, needs n of them, tested here): are the control bytes at
 * c exactly the record record_write writes for `size` bytes in n units (1
 * <= n < WORD_RECORD_UNITS, n == units_for(size))? One load and a compare
 * (n <= 8: the record and its end mark are all in the word), or that and
 * the end mark's byte. record_read would accept such bytes alike and decode them to
 * n units and `size` bytes: it looks at nothing else; so free_checked would
 * accept them alike and release alike, leaving the same bytes. Then the
 * record goes: the statistics first, the record cleared between the
 * counters (byte stores, which may alias them, keep gcc -O3 from pairing
 * the two subtractions into vector code that costs twice the scalar), and
 * last the engine's release, whose status (KBUDDY_OK) is returned: a jump,
 * for the frees without a lock. Otherwise free_checked decides, told
 * whether the free was sized (then `size` is its size; an unsized free
 * passes the constant 0, so that the decoded size is not kept for that
 * path: W3 / W4 unsized 455.1 / 409.1 handing it over, 452.2 / 406.2 so)
 * and alignment 1: the callers have tested the alignment as free_checked
 * would. */
KB_INLINE kbuddy_status release_record(kbuddy_heap *h, uint8_t *c, uint64_t w, uintptr_t room,
                                       uintptr_t u, uintptr_t n, size_t size, void *ptr,
                                       bool sized) {
    uint64_t want = record_head[n] | (uint64_t)((n << UNIT_SHIFT) - size);
    if (KB_LIKELY(n > SHORT_UNITS)) {
        if (w != want || n > room || c[n - 1] != KB_CTRL_END)
            return free_checked(h, ptr, sized, sized ? size : 0, 1);
        h->allocated -= (size_t)(n << UNIT_SHIFT);
        ctrl_store8(c, 0);
        c[n - 1] = 0;
    } else {
        /* Compared as a difference, and the word read again to clear it
         * (the counter's store may alias it), so that it need not be kept:
         * one register fewer saved on every path (dense W3 / W4 sized
         * 452.8 / 405.5 -> 451.8 / 404.5). A count of 0 (what the
         * unsized free reads from a record of 256 units) compares the
         * count byte's value bits with all ones: no match. */
        uint64_t mask = short_mask[n];
        if ((w ^ (want | short_end[n])) & mask)
            return free_checked(h, ptr, sized, sized ? size : 0, 1);
        h->allocated -= (size_t)(n << UNIT_SHIFT);
        ctrl_store8(c, ctrl_load8(c) & ~mask);
    }
    h->user -= size;
    h->allocations--;
    return kb_engine_release_heap(&h->hint->engine, u, u + n);
}

/* kbuddy_free_sized's work: the common case (ptr in the region used last,
 * a small size, and the control bytes at ptr exactly the record
 * kbuddy_alloc wrote for that size: release_record), and anything else
 * (another region, a larger or zero size, a record that differs, too near
 * the region's end, a bad alignment) free_checked's to decide. */
KB_INLINE kbuddy_status free_sized_work(kbuddy_heap *h, void *ptr, size_t size, size_t align) {
    uintptr_t addr = (uintptr_t)ptr, x = 0, m = align - 1;
    region *r = NULL;
    /* align a power of two that addr is a multiple of, and addr a whole
     * unit, as one test: a bit of align below its highest (not a power of
     * two) or of addr below align or UNIT fails it; so does align 0 (m all
     * ones), as addr is not 0. */
    if (size - 1 >= (WORD_RECORD_UNITS - 1) * UNIT || ((addr | (align & m)) & (m | (UNIT - 1))) ||
        !hint_unit(h, addr, &r, &x))
        return free_checked(h, ptr, true, size, align);
    /* From here free_checked is told alignment 1: it tests the alignment
     * only as this function did, and 1 passes alike (one value fewer kept
     * in a register). A long record's own units are room enough for the
     * word (n <= room: tested here, so release_record's test of it folds
     * away on this path). */
    uintptr_t n = (size + UNIT - 1) >> UNIT_SHIFT; /* size is not 0 */
    uintptr_t room = r->engine.hi - (addr >> UNIT_SHIFT);
    if (n > SHORT_UNITS ? n > room : room < 8)
        return free_checked(h, ptr, true, size, 1);
    uint8_t *c = r->ctrl + x;
    return release_record(h, c, ctrl_load8(c), room, addr >> UNIT_SHIFT, n, size, ptr, true);
}

/* kbuddy_free's work, the same for a record read instead of expected: its
 * unit count as a record of under 256 units would hold it (one or two
 * count bytes), its size from the slack, then accepted only if the bytes
 * are exactly the record of that count and size (release_record), which
 * record_read decodes alike. A malformed or larger record, or one the word
 * cannot check, is free_checked's to decide. */
KB_INLINE kbuddy_status free_unsized_work(kbuddy_heap *h, void *ptr) {
    uintptr_t addr = (uintptr_t)ptr, x = 0;
    region *r = NULL;
    if ((addr & (UNIT - 1)) || !hint_unit(h, addr, &r, &x))
        return free_checked(h, ptr, false, 0, 1);
    uintptr_t room = r->engine.hi - (addr >> UNIT_SHIFT);
    if (room < 8)
        return free_checked(h, ptr, false, 0, 1);
    uint8_t *c = r->ctrl + x;
    uint64_t w = ctrl_load8(c);
    uintptr_t n = 1, slack = (uintptr_t)(w & KB_CTRL_SLACK);
    /* Only the slack is tested here: release_record accepts nothing but
     * the exact record of n units, whose first byte has KB_CTRL_START,
     * and KB_CTRL_LONG exactly when n >= 2 (a count of 1 read from a long
     * record never matches: record_head[1] has no KB_CTRL_LONG; nor does a
     * count of 0: short_end[0] asks the count byte's value bits to be all
     * ones where the word has them 0). Callgrind dense, unsized
     * frees: W3 455.5, W4 408.2; with n < 2 and the start bit tested here
     * as well 458.4, 410.8. */
    if (w & KB_CTRL_LONG) {
        n = (uintptr_t)(w >> 8) & KB_CTRL_VALUE;
        if (w & ((uint64_t)KB_CTRL_MORE << 8))
            n |= ((uintptr_t)(w >> 16) & KB_CTRL_VALUE) << 4;
        if (slack >= UNIT)
            return free_checked(h, ptr, false, 0, 1);
    } else if (slack > UNIT) {
        return free_checked(h, ptr, false, 0, 1);
    }
    /* (The second count byte's branch marked likely: W3 unsized 455.5
     * instead of 455.9, left out: that is W3's sizes, not the heap's.) */
    return release_record(h, c, w, room, addr >> UNIT_SHIFT, n,
                          (size_t)((n << UNIT_SHIFT) - slack), ptr, false);
}

#endif

#if !WORD_RECORDS
static kbuddy_status free_common(kbuddy_heap *h, void *ptr, bool sized, size_t size,
                                 size_t align) {
    if (!h)
        return KBUDDY_EINVAL;
    if (!ptr)
        return KBUDDY_OK;
    kb_lock(&h->lock);
    kbuddy_status st = free_checked(h, ptr, sized, size, align);
    kb_unlock(&h->lock);
    return st;
}
#endif

#if WORD_RECORDS
/* The frees under the heap's own lock, each with its own copy of the fast
 * case: out of line, so that kbuddy_free and kbuddy_free_sized, which
 * jump to them, keep no registers for the lock's calls when there is no
 * lock. */
static KB_NOINLINE kbuddy_status free_sized_locked(kbuddy_heap *h, void *ptr, size_t size,
                                                   size_t align) {
    kb_lock(&h->lock);
    kbuddy_status st = free_sized_work(h, ptr, size, align);
    kb_unlock(&h->lock);
    return st;
}

static KB_NOINLINE kbuddy_status free_locked(kbuddy_heap *h, void *ptr) {
    kb_lock(&h->lock);
    kbuddy_status st = free_unsized_work(h, ptr);
    kb_unlock(&h->lock);
    return st;
}
#endif

/* Without a lock, straight to the work (a jump); with one, around it. */
kbuddy_status kbuddy_free(kbuddy_heap *h, void *ptr) {
#if WORD_RECORDS
    if (KB_UNLIKELY(!ptr))
        return h ? KBUDDY_OK : KBUDDY_EINVAL;
    if (KB_UNLIKELY(!h))
        return KBUDDY_EINVAL;
    if (h->lock.acquire)
        return free_locked(h, ptr);
    /* No lock (the global allocator's heap, which serialises its calls
     * itself): the work right here, and as nothing is live after the
     * engine's release, no registers kept for the lock's calls. */
    return free_unsized_work(h, ptr);
#else
    return free_common(h, ptr, false, 0, 1);
#endif
}

kbuddy_status kbuddy_free_sized(kbuddy_heap *h, void *ptr, size_t size, size_t align) {
#if WORD_RECORDS
    if (KB_UNLIKELY(!ptr))
        return h ? KBUDDY_OK : KBUDDY_EINVAL;
    if (KB_UNLIKELY(!h))
        return KBUDDY_EINVAL;
    if (h->lock.acquire)
        return free_sized_locked(h, ptr, size, align);
    return free_sized_work(h, ptr, size, align);
#else
    return free_common(h, ptr, true, size, align);
#endif
}

/* Resize b in place to `size` bytes (n units) if possible. */
static bool resize_in_place(kbuddy_heap *h, live_block *b, size_t size, uintptr_t n) {
    kb_engine *e = &b->r->engine;
    if (n > b->n && !kb_engine_claim(e, b->u + b->n, b->u + n))
        return false;
    uint8_t *c = ctrl_of(b->r, b->u);
    record_clear(c, b->n, b->len);
    record_write(c, n, size);
    if (n < b->n)
        kb_engine_release(e, b->u + n, b->u + b->n);
    h->allocated = h->allocated - (size_t)(b->n << UNIT_SHIFT) + (size_t)(n << UNIT_SHIFT);
    h->user = h->user - b->size + size;
    h->hint = b->r;
    return true;
}

/* kbuddy_resize_in_place, also telling the usable size the block had (0
 * when ptr is not a live allocation), so that a moving realloc knows how
 * much to copy without a second lookup. */
static kbuddy_status resize_common(kbuddy_heap *h, void *ptr, size_t size, size_t align,
                                   size_t *old) {
    *old = 0;
    if (!h || !ptr || !kb_is_pow2(align))
        return KBUDDY_EINVAL;
    live_block b;
    kb_lock(&h->lock);
    kbuddy_status st = find_live(h, ptr, &b);
    if (st == KBUDDY_OK) {
        *old = (size_t)(b.n << UNIT_SHIFT);
        if (size > SIZE_MAX - (UNIT - 1) || ((uintptr_t)ptr & (align - 1)) ||
            !resize_in_place(h, &b, size, units_for(size)))
            st = KBUDDY_ENOMEM;
    }
    kb_unlock(&h->lock);
    return st;
}

kbuddy_status kbuddy_resize_in_place(kbuddy_heap *h, void *ptr, size_t size, size_t align) {
    size_t old;
    return resize_common(h, ptr, size, align, &old);
}

void *kbuddy_realloc(kbuddy_heap *h, void *ptr, size_t size, size_t align) {
    if (!ptr)
        return kbuddy_alloc(h, size, align);
    size_t old;
    kbuddy_status st = resize_common(h, ptr, size, align, &old);
    if (st == KBUDDY_OK)
        return ptr;
    if (st != KBUDDY_ENOMEM || size > SIZE_MAX - (UNIT - 1)) /* not live, or a bad size */
        return NULL;
    /* Move: the lock is not held while copying. */
    void *q = kbuddy_alloc(h, size, align);
    if (!q)
        return NULL;
    size_t keep = old < size ? old : size;
    unsigned char *dst = q;
    const unsigned char *src = ptr;
    for (size_t i = 0; i < keep; i++) /* no libc: see kb_zero */
        dst[i] = src[i];
    (void)kbuddy_free(h, ptr);
    return q;
}

size_t kbuddy_usable_size(const kbuddy_heap *h, const void *ptr) {
    if (!h || !ptr)
        return 0;
    live_block b;
    size_t usable = 0; /* read b only where find_live filled it: gcc -O1 warns otherwise */
    kb_lock(&h->lock);
    if (find_live(h, ptr, &b) == KBUDDY_OK)
        usable = (size_t)(b.n << UNIT_SHIFT);
    kb_unlock(&h->lock);
    return usable;
}

/* ------------------------------------------------------------------------ */
/* Statistics, walk, check, hooks                                            */
/* ------------------------------------------------------------------------ */

void kbuddy_get_stats(const kbuddy_heap *h, kbuddy_stats *out) {
    if (!out)
        return;
    if (!h) {
        kb_zero(out, sizeof *out);
        return;
    }
    kb_lock(&h->lock);
    out->total = h->total;
    out->allocated = h->allocated;
    out->user = h->user;
    out->overhead = h->overhead;
    out->largest_free = h->orders_free ? (size_t)UNIT << kb_floor_log2(h->orders_free) : 0;
    out->allocations = h->allocations;
    out->regions = h->region_count;
    kb_unlock(&h->lock);
}

/* Visit the blocks of one region in address order. Returns false when a unit
 * is neither the start of an allocation nor of a free block. */
typedef struct {
    kbuddy_walk_fn fn;
    void *ctx;
    size_t used_units, free_units, free_blocks, allocations, user;
    bool strict; /* also verify records and control bytes (kbuddy_check) */
} walker;

static bool walk_region(region *r, walker *w) {
    const kb_engine *e = &r->engine;
    for (uintptr_t u = e->lo; u < e->hi;) {
        const uint8_t *c = ctrl_of(r, u);
        unsigned k;
        if (*c & KB_CTRL_START) {
            uintptr_t n;
            size_t len;
            if (!record_read(c, e->hi - u, &n, &len))
                return false;
            if (w->strict) {
                for (uintptr_t i = len; i + 1 < n; i++)
                    if (c[i])
                        return false;
                if (n - 1 >= len && n > 1 && c[n - 1] != KB_CTRL_END)
                    return false;
            }
            if (w->fn)
                w->fn(w->ctx, unit_ptr(r, u), (size_t)(n << UNIT_SHIFT), true);
            w->used_units += n;
            w->allocations++;
            w->user += record_size(c, n);
            u += n;
        } else if (kb_engine_free_block_at(e, u, &k)) {
            uintptr_t size = (uintptr_t)1 << k;
            if (w->strict) {
                if (c[0] != kb_free_mark(k) || c[size - 1] != kb_free_mark(k))
                    return false;
                for (uintptr_t i = 1; i + 1 < size; i++)
                    if (c[i])
                        return false;
            }
            if (w->fn)
                w->fn(w->ctx, unit_ptr(r, u), (size_t)(size << UNIT_SHIFT), false);
            w->free_units += size;
            w->free_blocks++;
            u += size;
        } else {
            return false;
        }
    }
    return true;
}

void kbuddy_walk(const kbuddy_heap *h, kbuddy_walk_fn fn, void *ctx) {
    if (!h || !fn)
        return;
    walker w = {fn, ctx, 0, 0, 0, 0, 0, false};
    kb_lock(&h->lock);
    for (region *r = h->regions; r; r = r->next)
        (void)walk_region(r, &w);
    kb_unlock(&h->lock);
}

typedef struct {
    region *r;
    kbuddy_span_fn fn;
    void *ctx;
} trimmer;

static void trim_run(void *ctx, uintptr_t a, uintptr_t b) {
    const trimmer *t = ctx;
    t->fn(t->ctx, unit_ptr(t->r, a), (size_t)((b - a) << UNIT_SHIFT));
}

size_t kbuddy_heap_trim(const kbuddy_heap *h, size_t page, kbuddy_span_fn fn, void *ctx) {
    if (!h || !fn || !kb_is_pow2(page))
        return 0;
    /* Whole aligned pages of free memory are exactly the free blocks of the
     * page's order and above (kb_engine_free_runs), since blocks are aligned
     * to their size in absolute addresses. */
    unsigned k = page <= UNIT ? 0u : kb_floor_log2(page) - UNIT_SHIFT;
    size_t units = 0;
    kb_lock(&h->lock);
    for (region *r = h->regions; r; r = r->next) {
        if (k >= r->engine.orders)
            continue;
        trimmer t = {r, fn, ctx};
        units += kb_engine_free_runs(&r->engine, k, trim_run, &t);
    }
    kb_unlock(&h->lock);
    return units << UNIT_SHIFT;
}

/* Is the page at p (page bytes, a multiple of 8) all zero? Read a word at
 * a time (as bytes: the page holds bytes and bitmap words alike). */
static bool page_is_zero(const unsigned char *p, size_t page) {
    for (size_t i = 0; i < page; i += 8)
        if (ctrl_load8(p + i))
            return false;
    return true;
}

size_t kbuddy_heap_trim_bookkeeping(const kbuddy_heap *h, size_t page, kbuddy_span_fn fn, void *ctx) {
    if (!h || !fn || !kb_is_pow2(page) || page < sizeof(uint64_t))
        return 0;
    size_t bytes = 0;
    kb_lock(&h->lock);
    for (region *r = h->regions; r; r = r->next) {
        /* From the first page after the region's header to the last page
         * before its first unit: order descriptors, bitmaps, control
         * bytes, all written only by this heap under its lock. */
        unsigned char *base = (unsigned char *)r;
        uintptr_t a = align_up((uintptr_t)(r + 1), page), b = (r->engine.lo << UNIT_SHIFT) & ~(uintptr_t)(page - 1);
        uintptr_t run = 0;
        for (uintptr_t p = a; p < b; p += page) {
            bool zero = page_is_zero(base + (p - (uintptr_t)r), page);
            if (zero && !run)
                run = p;
            if (!zero || p + page == b) {
                uintptr_t end = zero ? p + page : p;
                if (run && end > run) {
                    fn(ctx, base + (run - (uintptr_t)r), (size_t)(end - run));
                    bytes += (size_t)(end - run);
                }
                run = 0;
            }
        }
    }
    kb_unlock(&h->lock);
    return bytes;
}

static bool region_is_sane(const kbuddy_heap *h, const region *r, const region *prev) {
    const kb_engine *e = &r->engine;
    uintptr_t self = (uintptr_t)r;
    return r->start < r->end && self >= r->start && self < r->end &&
           (!prev || prev->end <= r->start) && e->lo < e->hi &&
           (e->lo << UNIT_SHIFT) > self && (e->hi << UNIT_SHIFT) <= r->end &&
           /* the control bytes and their guard bytes (kb_engine_check reads
            * them) lie between the header and the first unit */
           (uintptr_t)r->ctrl > (uintptr_t)(r + 1) && (uintptr_t)r->ctrl < (e->lo << UNIT_SHIFT) &&
           e->hi - e->lo < (e->lo << UNIT_SHIFT) - (uintptr_t)r->ctrl && /* no wrap */
           e->orders == kb_orders_for(e->hi - e->lo) && e->ctrl == r->ctrl && !e->used &&
           e->owner_mask == &h->orders_free && e->owner_count == h->regions_with_order;
}

static kbuddy_status check_locked(const kbuddy_heap *h) {
    walker w = {NULL, NULL, 0, 0, 0, 0, 0, true};
    size_t regions = 0, total = 0, bytes = 0;
    size_t with_order[KBUDDY_MAX_ORDERS] = {0};
    uint64_t mask = 0;
    const region *prev = NULL;
    bool hint_found = h->hint == NULL;
    for (region *r = h->regions; r; prev = r, r = r->next) {
        hint_found |= r == h->hint;
        const kb_engine *e = &r->engine;
        if (!region_is_sane(h, r, prev))
            return KBUDDY_ECORRUPT;
        size_t free_blocks;
        uintptr_t free_units;
        if (!kb_engine_check(e, &free_blocks, &free_units))
            return KBUDDY_ECORRUPT;
        size_t used_before = w.used_units, free_before = w.free_units,
               blocks_before = w.free_blocks;
        if (!walk_region(r, &w))
            return KBUDDY_ECORRUPT;
        /* Every free bit was reached by the walk, so none hides inside an
         * allocation, and used + free units cover the region exactly. */
        if (w.free_blocks - blocks_before != free_blocks ||
            w.free_units - free_before != free_units ||
            (w.used_units - used_before) + (w.free_units - free_before) != e->hi - e->lo)
            return KBUDDY_ECORRUPT;
        for (unsigned k = 0; k < e->orders; k++)
            if ((e->nonempty >> k) & 1u)
                with_order[k]++;
        mask |= e->nonempty;
        regions++;
        total += (size_t)((e->hi - e->lo) << UNIT_SHIFT);
        bytes += (size_t)(r->end - r->start);
    }
    for (unsigned k = 0; k < KBUDDY_MAX_ORDERS; k++)
        if (with_order[k] != h->regions_with_order[k])
            return KBUDDY_ECORRUPT;
    if (mask != h->orders_free || regions != h->region_count || total != h->total ||
        total + h->overhead != bytes || (size_t)(w.used_units << UNIT_SHIFT) != h->allocated ||
        w.user != h->user || w.allocations != h->allocations || !hint_found ||
        h->placement > KBUDDY_PLACE_FAST)
        return KBUDDY_ECORRUPT;
    return KBUDDY_OK;
}

kbuddy_status kbuddy_check(const kbuddy_heap *h) {
    if (!h)
        return KBUDDY_EINVAL;
    kb_lock(&h->lock);
    kbuddy_status st = check_locked(h);
    kb_unlock(&h->lock);
    return st;
}

void kbuddy_set_oom_handler(kbuddy_heap *h, kbuddy_oom_fn fn, void *ctx) {
    if (!h)
        return;
    kb_lock(&h->lock);
    h->oom = fn;
    h->oom_ctx = ctx;
    kb_unlock(&h->lock);
}

kbuddy_status kbuddy_set_placement(kbuddy_heap *h, kbuddy_placement placement) {
    if (!h || (placement != KBUDDY_PLACE_DENSE && placement != KBUDDY_PLACE_FAST))
        return KBUDDY_EINVAL;
    kb_lock(&h->lock);
    h->placement = (unsigned int)placement;
    kb_unlock(&h->lock);
    return KBUDDY_OK;
}

void kbuddy_set_lock(kbuddy_heap *h, const kbuddy_lock *lock) {
    if (!h)
        return;
    if (lock && lock->acquire && lock->release)
        h->lock = *lock;
    else
        kb_zero(&h->lock, sizeof h->lock);
}

void kbuddy_rebind(kbuddy_heap *h) {
    if (!h)
        return;
    kb_lock(&h->lock);
    for (region *r = h->regions; r; r = r->next) {
        r->engine.owner_mask = &h->orders_free;
        r->engine.owner_count = h->regions_with_order;
    }
    kb_unlock(&h->lock);
}
