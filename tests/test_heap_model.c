/*
 * Randomized model-based test of the byte heap: fixed seeds, hundreds of
 * thousands of operations (alloc, free, free_sized, realloc, usable_size,
 * add_region, and injected bad calls), each checked against a shadow model
 * of every live allocation.
 *
 * The model knows each allocation's pointer, requested size, alignment,
 * usable size and fill pattern, and which allocation owns each minimum
 * block of the arena. After every step the statistics must equal what the
 * model adds up to; every new block must lie inside a region, on no other
 * live block, and be aligned; every allocation's pattern is checked before
 * it is freed or reallocated; success or failure of alloc is predicted from
 * largest_free. Every refused call must leave the statistics (and, on a
 * sample, the whole walk and the managed memory) unchanged. kbuddy_check
 * runs every CHECK_EVERY steps, when the walk is also compared with the
 * model block by block. At the end everything is freed and each region must
 * be back to exactly the free blocks it had when it was added.
 */
#include "kbuddy.h"
#include "kbtest.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define MODEL_SLOW 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MODEL_SLOW 1
#endif
#ifndef MODEL_SLOW
#define MODEL_SLOW 0
#endif

#define UNIT KBUDDY_MIN_BLOCK
#define ARENA_SIZE ((size_t)16 << 20)
#define SLOTS 8
#define SLOT_SIZE (ARENA_SIZE / SLOTS)
#define MAX_LIVE 8192
#define CHECK_EVERY 1000
#define FREED_RING 64

/* ------------------------------------------------------------------------ */
/* Random numbers                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void) {
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * UINT64_C(2685821657736338717);
}

/* Uniform in [lo, hi]. */
static size_t rnd_range(size_t lo, size_t hi) { return lo + (size_t)(rnd() % (hi - lo + 1)); }

/* Sizes from 0 to a few hundred KiB, most of them small. */
static size_t rnd_size(void) {
    unsigned r = (unsigned)(rnd() % 1000);
    if (r < 20)
        return 0;
    if (r < 600)
        return rnd_range(1, 256);
    if (r < 860)
        return rnd_range(257, 4096);
    if (r < 965)
        return rnd_range(4097, 32768);
    if (r < 995)
        return rnd_range(32769, 131072);
    return rnd_range(131073, 400000);
}

/* Every power of two from 1 to 256 KiB, most of them small. */
static size_t rnd_align(void) {
    unsigned r = (unsigned)(rnd() % 100);
    if (r < 65)
        return 1;
    if (r < 80)
        return (size_t)1 << rnd_range(0, 5);
    if (r < 96)
        return (size_t)1 << rnd_range(6, 12);
    return (size_t)1 << rnd_range(13, 18);
}

/* ------------------------------------------------------------------------ */
/* The model                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
    unsigned char *p;
    size_t size, align, usable;
    uint64_t seed;
} live_t;

typedef struct {
    uintptr_t start;
    size_t size, total;
    bool added;
    /* the free blocks it had when added */
    uintptr_t *fresh_start;
    size_t *fresh_size;
    size_t nfresh;
} region_t;

typedef struct {
    uintptr_t start;
    size_t size;
    bool used;
} wblock;

static unsigned char *arena;
static int32_t *owner;         /* per unit of the arena: live slot, or -1 */
static live_t live[MAX_LIVE];
static int32_t dense[MAX_LIVE]; /* the used slots, for random choice       */
static int32_t pos[MAX_LIVE];   /* slot -> index in dense, or -1           */
static int32_t free_slots[MAX_LIVE];
static size_t nlive, nfree_slots;
static region_t regions[SLOTS];
static size_t add_order[SLOTS]; /* slots in the order their regions are added */
static size_t nregions_added, bytes_added, total_expected;
static size_t sum_usable, sum_size;
static kbuddy_heap heap;
static uintptr_t freed_ring[FREED_RING];
static size_t freed_next;
static uint64_t next_seed;
static wblock *wbuf;
static size_t wcap, wn;
static unsigned long ops_done, refusals_checked;

static size_t unit_index(uintptr_t addr) { return (size_t)((addr - (uintptr_t)arena) / UNIT); }

static uint64_t pattern_word(uint64_t seed, size_t j) {
    uint64_t x = seed + j * UINT64_C(0x9E3779B97F4A7C15);
    x ^= x >> 29;
    return x * UINT64_C(0xBF58476D1CE4E5B9);
}

/* Words are used so that filling stays cheap under the sanitizers; the
 * blocks are UNIT-aligned and UNIT-sized, so whole words cover them. */
static void pattern_fill(unsigned char *p, size_t from, size_t to, uint64_t seed) {
    uint64_t *w = (uint64_t *)(void *)p;
    for (size_t j = from / 8; j < to / 8; j++)
        w[j] = pattern_word(seed, j);
}

static bool pattern_holds(const unsigned char *p, size_t n, uint64_t seed) {
    const uint64_t *w = (const uint64_t *)(const void *)p;
    for (size_t j = 0; j < n / 8; j++)
        if (w[j] != pattern_word(seed, j))
            return false;
    return true;
}

/* Launder pointers: the compiler believes an allocation is exactly the size
 * requested (alloc_size), while the API promises usable_size bytes. */
static unsigned char *launder(void *p) {
    unsigned char *volatile v = p;
    return v;
}

static const region_t *region_holding(uintptr_t a) {
    for (size_t i = 0; i < SLOTS; i++)
        if (regions[i].added && a >= regions[i].start && a < regions[i].start + regions[i].size)
            return &regions[i];
    return NULL;
}

static size_t round_units(size_t size) { return size ? (size + UNIT - 1) / UNIT * UNIT : UNIT; }

/* The buddy block an allocation needs: its size rounded up to a power of
 * two of units, or its alignment if larger. */
static size_t block_needed(size_t size, size_t align) {
    size_t b = UNIT;
    if (size > SIZE_MAX / 2)
        return SIZE_MAX;
    while (b < size)
        b *= 2;
    return align > b ? align : b;
}

static bool fail_once(const char *what) {
    KBTEST_FAIL("op %lu: %s", ops_done, what);
    return false;
}

/* Claim [p, p + usable) for slot s in the unit map; it must be free, inside
 * a region, and past nothing else. */
static bool claim_units(int32_t s, uintptr_t p, size_t usable, int32_t allow_owner) {
    const region_t *r = region_holding(p);
    if (!r || p + usable > r->start + r->size)
        return fail_once("block outside every region");
    if (p % UNIT)
        return fail_once("block not aligned to the minimum block");
    size_t u0 = unit_index(p), n = usable / UNIT;
    for (size_t u = u0; u < u0 + n; u++)
        if (owner[u] != -1 && owner[u] != allow_owner)
            return fail_once("block overlaps a live allocation");
    for (size_t u = u0; u < u0 + n; u++)
        owner[u] = s;
    return true;
}

static void release_units(uintptr_t p, size_t usable) {
    size_t u0 = unit_index(p), n = usable / UNIT;
    for (size_t u = u0; u < u0 + n; u++)
        owner[u] = -1;
}

static int32_t slot_new(void) {
    int32_t s = free_slots[--nfree_slots];
    pos[s] = (int32_t)nlive;
    dense[nlive++] = s;
    return s;
}

static void slot_drop(int32_t s) {
    int32_t i = pos[s], last = dense[--nlive];
    dense[i] = last;
    pos[last] = i;
    pos[s] = -1;
    free_slots[nfree_slots++] = s;
}

static bool stats_equal(const kbuddy_stats *a, const kbuddy_stats *b) {
    return a->total == b->total && a->allocated == b->allocated && a->user == b->user &&
           a->overhead == b->overhead && a->largest_free == b->largest_free &&
           a->allocations == b->allocations && a->regions == b->regions;
}

/* The statistics must be what the model adds up to. */
static bool stats_match(kbuddy_stats *out) {
    kbuddy_stats st;
    kbuddy_get_stats(&heap, &st);
    if (out)
        *out = st;
    if (st.total != total_expected || st.overhead != bytes_added - total_expected ||
        st.allocated != sum_usable || st.user != sum_size || st.allocations != nlive ||
        st.regions != nregions_added) {
        KBTEST_FAIL("op %lu: stats total %zu/%zu overhead %zu/%zu allocated %zu/%zu user %zu/%zu "
                    "allocations %zu/%zu regions %zu/%zu",
                    ops_done, st.total, total_expected, st.overhead, bytes_added - total_expected,
                    st.allocated, sum_usable, st.user, sum_size, st.allocations, nlive, st.regions,
                    nregions_added);
        return false;
    }
    if (st.largest_free > st.total - st.allocated)
        return fail_once("largest_free exceeds free bytes");
    return true;
}

static void walk_collect(void *ctx, void *start, size_t size, bool used) {
    (void)ctx;
    if (wn == wcap) {
        wcap = wcap ? wcap * 2 : 4096;
        wbuf = realloc(wbuf, wcap * sizeof *wbuf);
    }
    wbuf[wn++] = (wblock){(uintptr_t)start, size, used};
}

static void walk_now(void) {
    wn = 0;
    kbuddy_walk(&heap, walk_collect, NULL);
}

/* The walk against the model: used blocks are exactly the live
 * allocations, free blocks are free in the model, blocks tile each region's
 * usable area, and the largest free block is largest_free. */
static bool walk_matches(void) {
    walk_now();
    kbuddy_stats st;
    kbuddy_get_stats(&heap, &st);
    size_t used = 0, largest = 0, per_region[SLOTS] = {0};
    for (size_t i = 0; i < wn; i++) {
        const wblock *b = &wbuf[i];
        const region_t *r = region_holding(b->start);
        if (!r || b->start + b->size > r->start + r->size)
            return fail_once("walk: block outside every region");
        if (i > 0 && b->start < wbuf[i - 1].start + wbuf[i - 1].size)
            return fail_once("walk: blocks out of order or overlapping");
        if (i > 0 && region_holding(wbuf[i - 1].start) == r &&
            b->start != wbuf[i - 1].start + wbuf[i - 1].size)
            return fail_once("walk: gap between blocks of a region");
        per_region[r - regions] += b->size;
        size_t u0 = unit_index(b->start);
        if (b->used) {
            int32_t s = owner[u0];
            if (s < 0 || (uintptr_t)live[s].p != b->start || live[s].usable != b->size)
                return fail_once("walk: used block is not a live allocation");
            used++;
        } else {
            if (b->size & (b->size - 1) || b->start % b->size)
                return fail_once("walk: free block is not a buddy block");
            for (size_t u = u0; u < u0 + b->size / UNIT; u++)
                if (owner[u] != -1)
                    return fail_once("walk: free block holds a live allocation");
            if (b->size > largest)
                largest = b->size;
        }
    }
    if (used != nlive)
        return fail_once("walk: not every live allocation reported");
    for (size_t i = 0; i < SLOTS; i++)
        if (regions[i].added && per_region[i] != regions[i].total)
            return fail_once("walk: blocks do not tile a region");
    if (largest != st.largest_free)
        return fail_once("walk: largest free block is not largest_free");
    return true;
}

/* ------------------------------------------------------------------------ */
/* Operations                                                                */
/* ------------------------------------------------------------------------ */

static void add_next_region(void) {
    for (size_t k = 0; k < SLOTS; k++) {
        region_t *r = &regions[add_order[k]];
        if (r->added || !r->size)
            continue;
        kbuddy_stats before;
        kbuddy_get_stats(&heap, &before);
        kbuddy_status st = kbuddy_add_region(&heap, (void *)r->start, r->size);
        CHECK_STATUS(st, KBUDDY_OK);
        if (st != KBUDDY_OK) {
            r->size = 0; /* never try again */
            return;
        }
        kbuddy_stats after;
        kbuddy_get_stats(&heap, &after);
        r->added = true;
        r->total = after.total - before.total;
        nregions_added++;
        bytes_added += r->size;
        total_expected += r->total;
        /* Remember its fresh free blocks. */
        walk_now();
        r->nfresh = 0;
        r->fresh_start = malloc(wn * sizeof *r->fresh_start);
        r->fresh_size = malloc(wn * sizeof *r->fresh_size);
        for (size_t j = 0; j < wn; j++) {
            if (wbuf[j].start >= r->start && wbuf[j].start < r->start + r->size) {
                CHECK(!wbuf[j].used);
                r->fresh_start[r->nfresh] = wbuf[j].start;
                r->fresh_size[r->nfresh++] = wbuf[j].size;
            }
        }
        CHECK(r->nfresh > 0);
        return;
    }
}

static void do_alloc(void) {
    if (nlive >= MAX_LIVE)
        return;
    size_t size = rnd_size(), align = rnd_align();
    kbuddy_stats before;
    kbuddy_get_stats(&heap, &before);
    unsigned char *p = kbuddy_alloc(&heap, size, align);
    size_t need = block_needed(size, align);
    if (!p) {
        /* Fails exactly when no free block is large enough (align 1..UNIT:
         * exactly when size > largest_free). */
        if (need <= before.largest_free)
            KBTEST_FAIL("op %lu: alloc(%zu, %zu) failed with largest_free %zu", ops_done, size,
                        align, before.largest_free);
        kbuddy_stats after;
        kbuddy_get_stats(&heap, &after);
        if (!stats_equal(&before, &after))
            fail_once("failed alloc changed the statistics");
        return;
    }
    if (size > before.largest_free)
        KBTEST_FAIL("op %lu: alloc(%zu, %zu) succeeded beyond largest_free %zu", ops_done, size,
                    align, before.largest_free);
    if ((uintptr_t)p % (align > UNIT ? align : UNIT))
        fail_once("alloc result misaligned");
    int32_t s = slot_new();
    live[s] = (live_t){p, size, align, round_units(size), next_seed++};
    if (!claim_units(s, (uintptr_t)p, live[s].usable, -1)) {
        slot_drop(s);
        return;
    }
    if (kbuddy_usable_size(&heap, p) != live[s].usable)
        fail_once("usable_size differs from the rounded size");
    pattern_fill(launder(p), 0, live[s].usable, live[s].seed);
    sum_usable += live[s].usable;
    sum_size += size;
}

static void forget(int32_t s) {
    release_units((uintptr_t)live[s].p, live[s].usable);
    sum_usable -= live[s].usable;
    sum_size -= live[s].size;
    freed_ring[freed_next++ % FREED_RING] = (uintptr_t)live[s].p;
    slot_drop(s);
}

static void do_free(void) {
    if (!nlive)
        return;
    int32_t s = dense[rnd() % nlive];
    live_t *l = &live[s];
    if (!pattern_holds(l->p, l->usable, l->seed))
        fail_once("allocation contents changed before free");
    kbuddy_status st;
    switch (rnd() % 3) {
    case 0:
        st = kbuddy_free(&heap, l->p);
        break;
    case 1:
        st = kbuddy_free_sized(&heap, l->p, l->size, l->align);
        break;
    default: { /* any power of two the block is aligned to is true */
        size_t a = 1;
        while (((uintptr_t)l->p & (a * 2 - 1)) == 0 && a < ((size_t)1 << 20) && rnd() % 2)
            a *= 2;
        st = kbuddy_free_sized(&heap, l->p, l->size, a);
        break;
    }
    }
    CHECK_STATUS(st, KBUDDY_OK);
    if (st == KBUDDY_OK)
        forget(s);
}

static void do_realloc(void) {
    if (!nlive)
        return;
    int32_t s = dense[rnd() % nlive];
    live_t *l = &live[s];
    if (!pattern_holds(l->p, l->usable, l->seed))
        fail_once("allocation contents changed before realloc");
    size_t nsize;
    switch (rnd() % 4) {
    case 0:
        nsize = l->size / 2;
        break;
    case 1:
        nsize = l->size + rnd_range(0, 64);
        break;
    case 2:
        nsize = l->size * 2 + 1;
        break;
    default:
        nsize = rnd_size();
        break;
    }
    if (nsize > 400000)
        nsize = 400000;
    kbuddy_stats before;
    kbuddy_get_stats(&heap, &before);
    unsigned char *q = kbuddy_realloc(&heap, l->p, nsize, l->align);
    size_t nusable = round_units(nsize);
    if (!q) {
        if (nusable <= l->usable)
            fail_once("realloc to a size that fits failed");
        if (block_needed(nsize, l->align) <= before.largest_free)
            fail_once("realloc failed though a move would have fitted");
        kbuddy_stats after;
        kbuddy_get_stats(&heap, &after);
        if (!stats_equal(&before, &after))
            fail_once("failed realloc changed the statistics");
        if (!pattern_holds(l->p, l->usable, l->seed))
            fail_once("failed realloc changed the contents");
        return;
    }
    if (nusable <= l->usable && q != l->p)
        fail_once("realloc to a size that fits moved the block");
    if ((uintptr_t)q % (l->align > UNIT ? l->align : UNIT))
        fail_once("realloc result misaligned");
    size_t keep = l->size < nsize ? l->size : nsize;
    keep = keep / 8 * 8;
    if (!pattern_holds(q, keep, l->seed))
        fail_once("realloc lost the contents");
    /* Re-own the units: release the old, claim the new. */
    uintptr_t oldp = (uintptr_t)l->p;
    size_t oldu = l->usable;
    release_units(oldp, oldu);
    sum_usable -= oldu;
    sum_size -= l->size;
    if (q != l->p)
        freed_ring[freed_next++ % FREED_RING] = oldp;
    l->p = q;
    l->size = nsize;
    l->usable = nusable;
    l->seed = next_seed++;
    if (!claim_units(s, (uintptr_t)q, nusable, -1)) {
        slot_drop(s);
        return;
    }
    sum_usable += nusable;
    sum_size += nsize;
    pattern_fill(launder(q), 0, nusable, l->seed);
    if (kbuddy_usable_size(&heap, q) != nusable)
        fail_once("usable_size after realloc");
}

/* A bad call must return `want` and change nothing: the statistics always,
 * and on a sample the walk and every byte of the arena. */
typedef struct {
    kbuddy_stats st;
    bool deep;
    unsigned char *mem;
    size_t nwalk;
    wblock *walk;
} before_t;

static unsigned char *arena_copy;

static void before_take(before_t *b) {
    kbuddy_get_stats(&heap, &b->st);
    b->deep = (refusals_checked++ % 397) == 0;
    if (b->deep) {
        memcpy(arena_copy, arena, ARENA_SIZE);
        walk_now();
        b->nwalk = wn;
        b->walk = malloc(wn * sizeof *b->walk);
        memcpy(b->walk, wbuf, wn * sizeof *b->walk);
    }
}

static void after_compare(before_t *b, const char *what) {
    kbuddy_stats st;
    kbuddy_get_stats(&heap, &st);
    if (!stats_equal(&st, &b->st))
        KBTEST_FAIL("op %lu: %s changed the statistics", ops_done, what);
    if (b->deep) {
        if (memcmp(arena_copy, arena, ARENA_SIZE) != 0)
            KBTEST_FAIL("op %lu: %s changed managed memory", ops_done, what);
        walk_now();
        bool same = wn == b->nwalk;
        for (size_t i = 0; same && i < wn; i++) /* field by field: wblock has padding */
            same = wbuf[i].start == b->walk[i].start && wbuf[i].size == b->walk[i].size &&
                   wbuf[i].used == b->walk[i].used;
        if (!same)
            KBTEST_FAIL("op %lu: %s changed the walk", ops_done, what);
        CHECK_STATUS(kbuddy_check(&heap), KBUDDY_OK);
        free(b->walk);
    }
}

#define BAD_CALL(expr, want)                                       \
    do {                                                           \
        before_t bc_;                                              \
        before_take(&bc_);                                         \
        kbuddy_status bc_s_ = (expr);                              \
        if (bc_s_ != (want))                                       \
            KBTEST_FAIL("op %lu: %s returned %s, wanted %s", ops_done, #expr, \
                        kbuddy_strerror(bc_s_), kbuddy_strerror(want)); \
        after_compare(&bc_, #expr);                                \
    } while (0)

#define BAD_REALLOC(expr)                                          \
    do {                                                           \
        before_t bc_;                                              \
        before_take(&bc_);                                         \
        void *bc_p_ = (expr);                                      \
        if (bc_p_ != NULL)                                         \
            KBTEST_FAIL("op %lu: %s did not fail", ops_done, #expr); \
        after_compare(&bc_, #expr);                                \
    } while (0)

static size_t opaque(size_t x) {
    volatile size_t v = x;
    return v;
}

static void do_bad_call(void) {
    static int on_data;
    switch (rnd() % 9) {
    case 0: { /* foreign: outside every region */
        uintptr_t a;
        int tries = 0;
        do {
            a = (uintptr_t)arena + (uintptr_t)rnd_range(0, ARENA_SIZE - 1);
        } while (region_holding(a) && ++tries < 100);
        if (region_holding(a))
            a = (uintptr_t)&on_data;
        BAD_CALL(kbuddy_free(&heap, (void *)a), KBUDDY_EFOREIGN);
        BAD_CALL(kbuddy_free_sized(&heap, (void *)a, 8, 8), KBUDDY_EFOREIGN);
        break;
    }
    case 1: { /* interior, unit-aligned */
        if (!nlive)
            break;
        int32_t s = dense[rnd() % nlive];
        if (live[s].usable <= UNIT)
            break;
        size_t off = UNIT * rnd_range(1, live[s].usable / UNIT - 1);
        BAD_CALL(kbuddy_free(&heap, live[s].p + off), KBUDDY_EBADPTR);
        if (kbuddy_usable_size(&heap, live[s].p + off) != 0)
            fail_once("usable_size of an interior pointer");
        BAD_REALLOC(kbuddy_realloc(&heap, live[s].p + off, 10, 1));
        if (!pattern_holds(live[s].p, live[s].usable, live[s].seed))
            fail_once("interior free changed the allocation");
        break;
    }
    case 2: { /* misaligned */
        if (!nlive)
            break;
        int32_t s = dense[rnd() % nlive];
        size_t off = rnd_range(1, UNIT - 1);
        BAD_CALL(kbuddy_free(&heap, live[s].p + off), KBUDDY_EBADPTR);
        BAD_CALL(kbuddy_free_sized(&heap, live[s].p + off, live[s].size, 1), KBUDDY_EBADPTR);
        break;
    }
    case 3:
    case 4: { /* double free of a recently freed pointer */
        if (!freed_next)
            break;
        size_t n = freed_next < FREED_RING ? freed_next : FREED_RING;
        uintptr_t a = freed_ring[rnd() % n];
        int32_t o = owner[unit_index(a)];
        if (o == -1) {
            BAD_CALL(kbuddy_free(&heap, (void *)a), KBUDDY_EDOUBLEFREE);
            BAD_CALL(kbuddy_free_sized(&heap, (void *)a, 1, 1), KBUDDY_EDOUBLEFREE);
            BAD_REALLOC(kbuddy_realloc(&heap, (void *)a, 100, 1));
            if (kbuddy_usable_size(&heap, (void *)a) != 0)
                fail_once("usable_size of a freed pointer");
        } else if ((uintptr_t)live[o].p != a) {
            BAD_CALL(kbuddy_free(&heap, (void *)a), KBUDDY_EBADPTR); /* reused, interior */
        }
        break;
    }
    case 5: { /* wrong size */
        if (!nlive)
            break;
        int32_t s = dense[rnd() % nlive];
        size_t wrong = live[s].size + rnd_range(1, 100);
        if (rnd() % 2 && live[s].size > 0)
            wrong = live[s].size - rnd_range(1, live[s].size);
        BAD_CALL(kbuddy_free_sized(&heap, live[s].p, wrong, 1), KBUDDY_ESIZE);
        break;
    }
    case 6: { /* wrong alignment: not a power of two, or more than the block has */
        if (!nlive)
            break;
        int32_t s = dense[rnd() % nlive];
        uintptr_t p = (uintptr_t)live[s].p;
        size_t more = (size_t)(p & (~p + 1)) << rnd_range(1, 3);
        size_t bad = rnd() % 2 ? more : (rnd_range(1, 1000) * 2 + 1) * (size_t)1 << rnd_range(0, 6);
        if (bad == 1)
            bad = 0;
        BAD_CALL(kbuddy_free_sized(&heap, live[s].p, live[s].size, bad), KBUDDY_ESIZE);
        break;
    }
    case 7: { /* bookkeeping of a region */
        size_t i = rnd() % SLOTS;
        if (!regions[i].added)
            break;
        uintptr_t a = regions[i].start + rnd_range(0, 64);
        BAD_CALL(kbuddy_free(&heap, (void *)a), KBUDDY_EBADPTR);
        break;
    }
    default: { /* invalid realloc arguments, overlapping and tiny regions */
        if (nlive) {
            int32_t s = dense[rnd() % nlive];
            BAD_REALLOC(kbuddy_realloc(&heap, live[s].p, 10, opaque((size_t)3 << rnd_range(0, 8))));
            BAD_REALLOC(kbuddy_realloc(&heap, live[s].p, opaque(SIZE_MAX - rnd_range(0, 30)), 1));
        }
        size_t i = rnd() % SLOTS;
        if (regions[i].added) {
            uintptr_t a = regions[i].start + rnd_range(0, regions[i].size - 1);
            BAD_CALL(kbuddy_add_region(&heap, (void *)(a - 2000), 4000), KBUDDY_EOVERLAP);
        }
        break;
    }
    }
}

static void do_usable_size(void) {
    if (!nlive)
        return;
    int32_t s = dense[rnd() % nlive];
    if (kbuddy_usable_size(&heap, live[s].p) != live[s].usable)
        fail_once("usable_size of a live allocation");
}

/* alloc(largest_free) succeeds and one byte more fails. */
static void do_largest_probe(void) {
    kbuddy_stats st;
    kbuddy_get_stats(&heap, &st);
    if (st.largest_free) {
        void *p = kbuddy_alloc(&heap, st.largest_free, 1);
        if (!p)
            fail_once("alloc(largest_free, 1) failed");
        else
            CHECK_STATUS(kbuddy_free(&heap, p), KBUDDY_OK);
    }
    void *q = kbuddy_alloc(&heap, opaque(st.largest_free + 1), 1);
    if (q) {
        fail_once("alloc(largest_free + 1, 1) succeeded");
        (void)kbuddy_free(&heap, q);
    }
    kbuddy_stats after;
    kbuddy_get_stats(&heap, &after);
    if (!stats_equal(&st, &after))
        fail_once("largest_free probe left the heap changed");
}

/* ------------------------------------------------------------------------ */
/* One run                                                                   */
/* ------------------------------------------------------------------------ */

static void plan_regions(void) {
    size_t perm[SLOTS];
    for (size_t i = 0; i < SLOTS; i++)
        perm[i] = i;
    for (size_t i = SLOTS - 1; i > 0; i--) {
        size_t j = (size_t)(rnd() % (i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (size_t i = 0; i < SLOTS; i++) {
        add_order[i] = perm[i];
        region_t *r = &regions[perm[i]];
        memset(r, 0, sizeof *r);
        size_t off = rnd_range(0, 4095);
        size_t size;
        switch (rnd() % 5) {
        case 0:
            size = rnd_range(600, 5000); /* tiny */
            break;
        case 1:
            size = rnd_range(20000, 300000);
            break;
        default:
            size = rnd_range(SLOT_SIZE / 2, SLOT_SIZE - 8192);
            break;
        }
        r->start = (uintptr_t)arena + perm[i] * SLOT_SIZE + off;
        r->size = size;
    }
}

/* The placement each run starts with, and how often (in operations; 0:
 * never) it switches to the other one: both placements keep every contract
 * the model checks, and blocks placed under one are freed under the other. */
static kbuddy_placement model_placement = KBUDDY_PLACE_DENSE;
static unsigned long switch_every;
static kbuddy_placement current_placement;

static void model_reset(uint64_t seed) {
    rng_state = seed * UINT64_C(0x9E3779B97F4A7C15) + 1;
    memset(arena, 0xA5, ARENA_SIZE);
    for (size_t u = 0; u < ARENA_SIZE / UNIT; u++)
        owner[u] = -1;
    nlive = 0;
    nfree_slots = 0;
    for (int32_t s = MAX_LIVE - 1; s >= 0; s--) {
        free_slots[nfree_slots++] = s;
        pos[s] = -1;
    }
    for (size_t i = 0; i < SLOTS; i++) {
        free(regions[i].fresh_start);
        free(regions[i].fresh_size);
        regions[i].fresh_start = NULL;
        regions[i].fresh_size = NULL;
    }
    nregions_added = bytes_added = total_expected = sum_usable = sum_size = 0;
    freed_next = 0;
    next_seed = seed << 32;
    kbuddy_init(&heap);
    CHECK_STATUS(kbuddy_set_placement(&heap, model_placement), KBUDDY_OK);
    current_placement = model_placement;
    plan_regions();
}

static void run(uint64_t seed, unsigned long nops) {
    model_reset(seed);
    add_next_region();
    add_next_region();
    unsigned long add_every = nops / (SLOTS - 1);
    for (ops_done = 0; ops_done < nops; ops_done++) {
        int before_failures = kbtest_failures;
        if (ops_done % add_every == add_every / 2)
            add_next_region();
        if (switch_every && ops_done % switch_every == switch_every - 1) {
            current_placement = current_placement == KBUDDY_PLACE_FAST ? KBUDDY_PLACE_DENSE
                                                                       : KBUDDY_PLACE_FAST;
            CHECK_STATUS(kbuddy_set_placement(&heap, current_placement), KBUDDY_OK);
        }
        unsigned r = (unsigned)(rnd() % 100);
        kbuddy_stats st;
        kbuddy_get_stats(&heap, &st);
        /* Keep the heap busy but not full: free more when it fills. */
        bool full = st.total && st.allocated * 10 > st.total * 7;
        if (r < (full ? 25u : 45u))
            do_alloc();
        else if (r < 75)
            do_free();
        else if (r < 88)
            do_realloc();
        else if (r < 94)
            do_bad_call();
        else if (r < 98)
            do_usable_size();
        else
            do_largest_probe();
        stats_match(NULL);
        if (ops_done % CHECK_EVERY == 0) {
            CHECK_STATUS(kbuddy_check(&heap), KBUDDY_OK);
            walk_matches();
        }
        if (kbtest_failures > before_failures + 20 || kbtest_failures > 50) {
            fprintf(stderr, "  seed %llu: too many failures, stopping at op %lu\n",
                    (unsigned long long)seed, ops_done);
            return;
        }
    }
    CHECK_STATUS(kbuddy_check(&heap), KBUDDY_OK);
    walk_matches();
    /* Free everything, checking each allocation's contents. */
    while (nlive) {
        int32_t s = dense[nlive - 1];
        if (!pattern_holds(live[s].p, live[s].usable, live[s].seed))
            fail_once("contents changed (final free)");
        CHECK_STATUS(kbuddy_free_sized(&heap, live[s].p, live[s].size, live[s].align), KBUDDY_OK);
        forget(s);
    }
    stats_match(NULL);
    CHECK_STATUS(kbuddy_check(&heap), KBUDDY_OK);
    /* Each region is back to the free blocks it had when added. */
    walk_now();
    for (size_t i = 0; i < SLOTS; i++) {
        const region_t *r = &regions[i];
        if (!r->added)
            continue;
        size_t k = 0;
        bool same = true;
        for (size_t j = 0; j < wn; j++) {
            if (wbuf[j].start < r->start || wbuf[j].start >= r->start + r->size)
                continue;
            if (k >= r->nfresh || wbuf[j].used || wbuf[j].start != r->fresh_start[k] ||
                wbuf[j].size != r->fresh_size[k])
                same = false;
            k++;
        }
        if (!same || k != r->nfresh)
            KBTEST_FAIL("seed %llu: region %zu did not merge back to its fresh state",
                        (unsigned long long)seed, i);
    }
    /* Nothing outside the regions was ever written. */
    for (size_t i = 0; i < SLOTS; i++) {
        uintptr_t lo = (uintptr_t)arena + i * SLOT_SIZE, hi = lo + SLOT_SIZE;
        const region_t *r = &regions[i];
        uintptr_t rs = r->added ? r->start : hi, re = r->added ? r->start + r->size : hi;
        for (uintptr_t a = lo; a < rs; a++)
            if (*(unsigned char *)a != 0xA5) {
                KBTEST_FAIL("seed %llu: byte before region %zu written", (unsigned long long)seed, i);
                break;
            }
        for (uintptr_t a = re; a < hi; a++)
            if (*(unsigned char *)a != 0xA5) {
                KBTEST_FAIL("seed %llu: byte after region %zu written", (unsigned long long)seed, i);
                break;
            }
    }
}

static bool model_setup(void) {
    if (!arena) {
        arena = aligned_alloc((size_t)1 << 21, ARENA_SIZE);
        arena_copy = malloc(ARENA_SIZE);
        owner = malloc(ARENA_SIZE / UNIT * sizeof *owner);
    }
    return arena && arena_copy && owner;
}

#if MODEL_SLOW
#define OPS_PER_SEED 100000ul
#else
#define OPS_PER_SEED 250000ul
#endif

TEST(model_random_operations_seed_1) {
    REQUIRE(model_setup());
    run(1, OPS_PER_SEED);
}

TEST(model_random_operations_seed_2) {
    REQUIRE(model_setup());
    run(2, OPS_PER_SEED);
}

TEST(model_random_operations_seed_3) {
    REQUIRE(model_setup());
    run(3, OPS_PER_SEED);
}

TEST(model_random_operations_seed_0x5eed) {
    REQUIRE(model_setup());
    run(0x5eed, OPS_PER_SEED);
}

/* Fast placement (kbuddy_set_placement) under the same model. */
TEST(model_random_operations_fast_placement_seed_1) {
    REQUIRE(model_setup());
    model_placement = KBUDDY_PLACE_FAST;
    run(1, OPS_PER_SEED);
    model_placement = KBUDDY_PLACE_DENSE;
}

TEST(model_random_operations_fast_placement_seed_0xfa57) {
    REQUIRE(model_setup());
    model_placement = KBUDDY_PLACE_FAST;
    run(0xfa57, OPS_PER_SEED);
    model_placement = KBUDDY_PLACE_DENSE;
}

/* Placement switched back and forth during the run: blocks placed densely
 * are freed, resized and merged while the heap places fast, and back. */
TEST(model_random_operations_switching_placement) {
    REQUIRE(model_setup());
    switch_every = 997;
    run(5, OPS_PER_SEED);
    switch_every = 0;
}

/* The same with the heap's lock installed (a plain counting lock): results
 * must not change, and every call must leave the lock released. */
static unsigned long lock_depth, lock_acquires, lock_bad;
static void lk_acquire(void *ctx) {
    (void)ctx;
    if (lock_depth++)
        lock_bad++;
    lock_acquires++;
}
static void lk_release(void *ctx) {
    (void)ctx;
    if (lock_depth-- != 1)
        lock_bad++;
}

TEST(model_random_operations_with_a_lock_installed) {
    REQUIRE(model_setup());
    model_reset(77);
    kbuddy_lock lk = {lk_acquire, lk_release, NULL};
    kbuddy_set_lock(&heap, &lk);
    lock_depth = lock_acquires = lock_bad = 0;
    add_next_region();
    add_next_region();
    for (ops_done = 0; ops_done < OPS_PER_SEED / 4; ops_done++) {
        unsigned r = (unsigned)(rnd() % 100);
        if (r < 45)
            do_alloc();
        else if (r < 75)
            do_free();
        else if (r < 90)
            do_realloc();
        else
            do_bad_call();
        stats_match(NULL);
        if (lock_depth != 0)
            fail_once("lock left held");
    }
    CHECK_STATUS(kbuddy_check(&heap), KBUDDY_OK);
    CHECK(walk_matches());
    CHECK_EQ(lock_bad, 0);
    CHECK(lock_acquires > OPS_PER_SEED / 4);
    while (nlive) {
        int32_t s = dense[nlive - 1];
        CHECK_STATUS(kbuddy_free(&heap, live[s].p), KBUDDY_OK);
        forget(s);
    }
    stats_match(NULL);
}

KBTEST_MAIN()
