/*
 * White-box tests of kbuddy_check: each test damages one piece of the heap's
 * bookkeeping on purpose (a bitmap bit, a summary bit, a mask, a control
 * byte, a counter, the region list, a region header), checks that
 * kbuddy_check reports KBUDDY_ECORRUPT, restores every byte, and checks that
 * it reports KBUDDY_OK again.
 *
 * Some damage is made "consistent" (the summaries and masks above a bitmap
 * bit are updated as the engine would), so that the deeper invariants
 * (buddies merged, free blocks disjoint and outside allocations, every unit
 * accounted for) are what must catch it, not a summary mismatch.
 */
#include "kbuddy_internal.h"
#include "kbtest.h"

#include <stdlib.h>
#include <string.h>

#define UNIT KBUDDY_MIN_BLOCK
#define ARENA_LEN ((size_t)4 << 20)

/* ------------------------------------------------------------------------ */
/* Fixture: two regions, live allocations of several sizes (some with long
 * records), free blocks of many orders; a saved copy to restore from.       */
/* ------------------------------------------------------------------------ */

typedef struct {
    unsigned char *arena;
    unsigned char *saved;
    kbuddy_heap h, saved_h;
    struct kbuddy_region *r1, *r2; /* in address order */
    void *p[16];
    size_t size[16];
} fixture;

static bool fixture_setup(fixture *f) {
    memset(f, 0, sizeof *f);
    f->arena = aligned_alloc((size_t)1 << 21, ARENA_LEN);
    f->saved = malloc(ARENA_LEN);
    if (!f->arena || !f->saved)
        return false;
    memset(f->arena, 0, ARENA_LEN);
    kbuddy_init(&f->h);
    if (kbuddy_add_region(&f->h, f->arena + 2000000 + 5, 1500000) != KBUDDY_OK ||
        kbuddy_add_region(&f->h, f->arena + 3, 300000) != KBUDDY_OK)
        return false;
    static const size_t sizes[16] = {1,    0,    31,    32,    33,    100,    1000,   2047,
                                     2048, 4000, 10000, 65536, 70001, 200000, 100,    5};
    for (size_t i = 0; i < 16; i++) {
        f->size[i] = sizes[i];
        f->p[i] = kbuddy_alloc(&f->h, sizes[i], i % 3 ? 1 : 256);
        if (!f->p[i])
            return false;
    }
    /* Free a few to leave free blocks between allocations. */
    for (size_t i = 2; i < 16; i += 4) {
        if (kbuddy_free(&f->h, f->p[i]) != KBUDDY_OK)
            return false;
        f->p[i] = NULL;
    }
    f->r1 = f->h.regions;
    f->r2 = f->r1 ? f->r1->next : NULL;
    if (!f->r2 || kbuddy_check(&f->h) != KBUDDY_OK)
        return false;
    memcpy(f->saved, f->arena, ARENA_LEN);
    f->saved_h = f->h;
    return true;
}

static void fixture_restore(fixture *f) {
    memcpy(f->arena, f->saved, ARENA_LEN);
    f->h = f->saved_h;
}

static void fixture_free(fixture *f) {
    free(f->arena);
    free(f->saved);
}

/* The damage done since the last restore must be detected; then undo it. */
#define EXPECT_DETECTED(f)                                               \
    do {                                                                 \
        CHECK_STATUS(kbuddy_check(&(f)->h), KBUDDY_ECORRUPT);            \
        fixture_restore(f);                                              \
        CHECK_STATUS(kbuddy_check(&(f)->h), KBUDDY_OK);                  \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Bitmap access                                                              */
/* ------------------------------------------------------------------------ */

/* Word and bit of depth d of order k for index i (at that depth). */
static kb_word *tree_word(kb_engine *e, unsigned k, uint32_t d, uintptr_t i) {
    return &e->words[e->order[k].off[d] + (i >> KB_WORD_SHIFT)];
}
static kb_word tree_bit(uintptr_t i) { return (kb_word)1 << (i & (KB_WORD_BITS - 1)); }

static bool leaf_is_set(kb_engine *e, unsigned k, uintptr_t b) {
    uintptr_t i = b - e->order[k].first;
    return (*tree_word(e, k, 0, i) & tree_bit(i)) != 0;
}

/* Set or clear the free bit of block b of order k the way the engine does:
 * summaries, the engine's mask and the heap's mask and counts follow. */
static void block_set(kb_engine *e, unsigned k, uintptr_t b, bool free_) {
    if (e->ctrl) { /* the free-block marks on its first and last unit */
        uintptr_t first = (b << k) - e->lo, last = first + ((uintptr_t)1 << k) - 1;
        e->ctrl[first] = e->ctrl[last] = free_ ? kb_free_mark(k) : 0;
    }
    uintptr_t i = b - e->order[k].first;
    for (uint32_t d = 0; d < e->order[k].depth; d++) {
        kb_word *w = tree_word(e, k, d, i);
        kb_word old = *w;
        *w = free_ ? old | tree_bit(i) : old & ~tree_bit(i);
        if ((old != 0) == (*w != 0))
            return;
        i >>= KB_WORD_SHIFT;
    }
    kb_word bit = (kb_word)1 << k;
    if (free_) {
        e->nonempty |= bit;
        if (e->owner_count[k]++ == 0)
            *e->owner_mask |= bit;
    } else {
        e->nonempty &= ~bit;
        if (--e->owner_count[k] == 0)
            *e->owner_mask &= ~bit;
    }
}

/* The first free block of region r of order at least `min_order` (as the
 * walk reports it): its order and block number. */
typedef struct {
    uintptr_t lo, hi;
    unsigned min_order;
    bool found;
    uintptr_t start;
    size_t size;
} find_free_ctx;

static void find_free_visit(void *ctx, void *start, size_t size, bool used) {
    find_free_ctx *c = ctx;
    uintptr_t s = (uintptr_t)start;
    if (c->found || used || s < c->lo || s >= c->hi || size < (UNIT << c->min_order))
        return;
    c->found = true;
    c->start = s;
    c->size = size;
}

static bool free_block_of(fixture *f, struct kbuddy_region *r, unsigned min_order, unsigned *k,
                          uintptr_t *b) {
    find_free_ctx c = {r->start, r->end, min_order, false, 0, 0};
    kbuddy_walk(&f->h, find_free_visit, &c);
    if (!c.found)
        return false;
    *k = kb_floor_log2(c.size / UNIT);
    *b = (c.start / UNIT) >> *k;
    return true;
}

/* The region holding p, and p's control byte. */
static struct kbuddy_region *region_of_ptr(fixture *f, const void *p) {
    for (struct kbuddy_region *r = f->h.regions; r; r = r->next)
        if ((uintptr_t)p >= r->start && (uintptr_t)p < r->end)
            return r;
    return NULL;
}

static uint8_t *ctrl_of_ptr(fixture *f, const void *p) {
    struct kbuddy_region *r = region_of_ptr(f, p);
    return r ? &r->ctrl[(uintptr_t)p / UNIT - r->engine.lo] : NULL;
}

/* ------------------------------------------------------------------------ */
/* Free bitmaps                                                               */
/* ------------------------------------------------------------------------ */

TEST(clearing_the_leaf_bit_of_a_free_block_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    struct kbuddy_region *regions[2] = {f.r1, f.r2};
    for (size_t ri = 0; ri < 2; ri++) {
        for (unsigned min = 0; min < 12; min += 3) {
            unsigned k;
            uintptr_t b;
            if (!free_block_of(&f, regions[ri], min, &k, &b))
                continue;
            kb_engine *e = &regions[ri]->engine;
            REQUIRE(leaf_is_set(e, k, b));
            uintptr_t i = b - e->order[k].first;
            *tree_word(e, k, 0, i) &= ~tree_bit(i); /* raw: summaries left alone */
            EXPECT_DETECTED(&f);
            block_set(e, k, b, false); /* consistent: the block just vanishes */
            EXPECT_DETECTED(&f);
        }
    }
    fixture_free(&f);
}

TEST(setting_a_leaf_bit_inside_an_allocation_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    for (size_t j = 0; j < 16; j++) {
        if (!f.p[j])
            continue;
        struct kbuddy_region *r = region_of_ptr(&f, f.p[j]);
        REQUIRE(r);
        kb_engine *e = &r->engine;
        uintptr_t u = (uintptr_t)f.p[j] / UNIT;
        uintptr_t n = kbuddy_usable_size(&f.h, f.p[j]) / UNIT;
        /* Its first unit, its last unit, as order-0 blocks. */
        uintptr_t units[2] = {u, u + n - 1};
        for (size_t t = 0; t < 2; t++) {
            uintptr_t i = units[t] - e->order[0].first;
            *tree_word(e, 0, 0, i) |= tree_bit(i);
            EXPECT_DETECTED(&f);
            block_set(e, 0, units[t], true);
            EXPECT_DETECTED(&f);
        }
    }
    fixture_free(&f);
}

/* Blocks of order k the engine's range meets: the bits of its leaf. */
static uintptr_t order_blocks(const kb_engine *e, unsigned k) {
    return ((e->hi - 1) >> k) - (e->lo >> k) + 1;
}

TEST(setting_a_leaf_bit_past_the_end_of_a_bitmap_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    struct kbuddy_region *regions[2] = {f.r1, f.r2};
    size_t tried = 0;
    for (size_t ri = 0; ri < 2; ri++) {
        kb_engine *e = &regions[ri]->engine;
        for (unsigned k = 0; k < e->orders; k++) {
            uintptr_t nbits = order_blocks(e, k);
            if (nbits % KB_WORD_BITS == 0)
                continue;
            *tree_word(e, k, 0, nbits) |= tree_bit(nbits); /* first bit past the end */
            EXPECT_DETECTED(&f);
            tried++;
        }
    }
    CHECK(tried > 4);
    fixture_free(&f);
}

TEST(flipping_a_summary_bit_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    struct kbuddy_region *regions[2] = {f.r1, f.r2};
    size_t tried = 0;
    for (size_t ri = 0; ri < 2; ri++) {
        kb_engine *e = &regions[ri]->engine;
        for (unsigned k = 0; k < e->orders; k++) {
            const kb_order *o = &e->order[k];
            uintptr_t n = (order_blocks(e, k) + KB_WORD_BITS - 1) / KB_WORD_BITS; /* bits at depth 1 */
            for (uint32_t d = 1; d < o->depth; d++) {
                /* Every bit of the summary, flipped in turn, up to a few. */
                for (uintptr_t i = 0; i < n && i < 70; i += 7) {
                    *tree_word(e, k, d, i) ^= tree_bit(i);
                    EXPECT_DETECTED(&f);
                    tried++;
                }
                n = (n + KB_WORD_BITS - 1) / KB_WORD_BITS;
            }
        }
    }
    CHECK(tried > 20);
    fixture_free(&f);
}

TEST(flipping_a_bit_of_a_nonempty_mask_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    struct kbuddy_region *regions[2] = {f.r1, f.r2};
    for (size_t ri = 0; ri < 2; ri++) {
        kb_engine *e = &regions[ri]->engine;
        for (unsigned k = 0; k < 64; k++) {
            e->nonempty ^= (uint64_t)1 << k;
            EXPECT_DETECTED(&f);
        }
    }
    fixture_free(&f);
}

TEST(flipping_a_bit_of_the_heap_order_mask_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    for (unsigned k = 0; k < 64; k++) {
        f.h.orders_free ^= (uint64_t)1 << k;
        EXPECT_DETECTED(&f);
    }
    fixture_free(&f);
}

TEST(wrong_owner_count_of_an_order_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    for (unsigned k = 0; k < KBUDDY_MAX_ORDERS; k++) {
        f.h.regions_with_order[k]++;
        EXPECT_DETECTED(&f);
        if (f.h.regions_with_order[k]) {
            f.h.regions_with_order[k]--;
            EXPECT_DETECTED(&f);
        }
    }
    fixture_free(&f);
}

TEST(unmerged_free_buddies_are_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    struct kbuddy_region *regions[2] = {f.r1, f.r2};
    size_t tried = 0;
    for (size_t ri = 0; ri < 2; ri++) {
        for (unsigned min = 1; min < 12; min += 2) {
            unsigned k;
            uintptr_t b;
            if (!free_block_of(&f, regions[ri], min, &k, &b) || k == 0)
                continue;
            kb_engine *e = &regions[ri]->engine;
            /* Split it into its two halves, both left free. */
            block_set(e, k, b, false);
            block_set(e, k - 1, 2 * b, true);
            block_set(e, k - 1, 2 * b + 1, true);
            EXPECT_DETECTED(&f);
            tried++;
        }
    }
    CHECK(tried > 2);
    fixture_free(&f);
}

TEST(free_block_inside_a_free_block_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    struct kbuddy_region *regions[2] = {f.r1, f.r2};
    size_t tried = 0;
    for (size_t ri = 0; ri < 2; ri++) {
        for (unsigned min = 1; min < 12; min += 2) {
            unsigned k;
            uintptr_t b;
            if (!free_block_of(&f, regions[ri], min, &k, &b) || k == 0)
                continue;
            kb_engine *e = &regions[ri]->engine;
            block_set(e, k - 1, 2 * b + 1, true); /* its upper half, free twice */
            EXPECT_DETECTED(&f);
            block_set(e, 0, b << k, true); /* its first unit */
            EXPECT_DETECTED(&f);
            tried++;
        }
    }
    CHECK(tried > 2);
    fixture_free(&f);
}

TEST(free_block_straddling_an_allocation_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    size_t tried = 0;
    for (size_t j = 0; j < 16; j++) {
        if (!f.p[j])
            continue;
        struct kbuddy_region *r = region_of_ptr(&f, f.p[j]);
        kb_engine *e = &r->engine;
        uintptr_t u = (uintptr_t)f.p[j] / UNIT;
        /* The order-k block holding the allocation's first unit, for each
         * k for which that block is within the region. */
        for (unsigned k = 1; k < e->orders; k++) {
            uintptr_t b = u >> k;
            if ((b << k) < e->lo || ((b + 1) << k) > e->hi)
                break;
            block_set(e, k, b, true);
            EXPECT_DETECTED(&f);
            tried++;
        }
    }
    CHECK(tried > 10);
    fixture_free(&f);
}

/* ------------------------------------------------------------------------ */
/* Control bytes                                                              */
/* ------------------------------------------------------------------------ */

TEST(clearing_an_allocation_start_byte_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    for (size_t j = 0; j < 16; j++) {
        if (!f.p[j])
            continue;
        uint8_t *c = ctrl_of_ptr(&f, f.p[j]);
        REQUIRE(c && (*c & KB_CTRL_START));
        *c = 0;
        EXPECT_DETECTED(&f);
        *c &= (uint8_t)~KB_CTRL_START;
        EXPECT_DETECTED(&f);
    }
    fixture_free(&f);
}

TEST(changing_the_slack_of_a_record_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    for (size_t j = 0; j < 16; j++) {
        if (!f.p[j])
            continue;
        uint8_t *c = ctrl_of_ptr(&f, f.p[j]);
        uint8_t slack = *c & KB_CTRL_SLACK;
        uint8_t other = (uint8_t)(slack == 0 ? 1 : slack - 1);
        *c = (uint8_t)((*c & ~KB_CTRL_SLACK) | other);
        EXPECT_DETECTED(&f);
        /* A slack beyond a minimum block is malformed. */
        *c = (uint8_t)((*c & ~KB_CTRL_SLACK) | (UNIT + 1));
        EXPECT_DETECTED(&f);
    }
    fixture_free(&f);
}

TEST(changing_the_unit_count_of_a_long_record_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    size_t tried = 0;
    for (size_t j = 0; j < 16; j++) {
        if (!f.p[j])
            continue;
        uint8_t *c = ctrl_of_ptr(&f, f.p[j]);
        if (!(*c & KB_CTRL_LONG))
            continue;
        /* The low six bits of the count, one more and one less. */
        c[1] = (uint8_t)((c[1] & ~KB_CTRL_VALUE) | ((c[1] + 1) & KB_CTRL_VALUE));
        EXPECT_DETECTED(&f);
        c[1] = (uint8_t)((c[1] & ~KB_CTRL_VALUE) | ((c[1] - 1) & KB_CTRL_VALUE));
        EXPECT_DETECTED(&f);
        /* A long record saying one unit (or none) is malformed. */
        c[1] = 1;
        EXPECT_DETECTED(&f);
        c[1] = 0;
        EXPECT_DETECTED(&f);
        /* A count that never ends. */
        size_t n = kbuddy_usable_size(&f.h, f.p[j]) / UNIT;
        for (size_t i = 1; i < n && i < 16; i++)
            c[i] |= KB_CTRL_MORE;
        EXPECT_DETECTED(&f);
        tried++;
    }
    CHECK(tried >= 6);
    fixture_free(&f);
}

TEST(stray_control_byte_in_free_memory_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    struct kbuddy_region *regions[2] = {f.r1, f.r2};
    for (size_t ri = 0; ri < 2; ri++) {
        for (unsigned min = 0; min < 10; min += 3) {
            unsigned k;
            uintptr_t b;
            if (!free_block_of(&f, regions[ri], min, &k, &b))
                continue;
            struct kbuddy_region *r = regions[ri];
            uintptr_t u = b << k, last = u + ((uintptr_t)1 << k) - 1;
            static const uint8_t junk[] = {0x01, 0x3f, 0x40, KB_CTRL_START, KB_CTRL_START | 1};
            for (size_t t = 0; t < sizeof junk; t++) {
                r->ctrl[u - r->engine.lo] = junk[t];
                EXPECT_DETECTED(&f);
                r->ctrl[last - r->engine.lo] = junk[t];
                EXPECT_DETECTED(&f);
            }
        }
    }
    fixture_free(&f);
}

TEST(stray_control_byte_inside_an_allocation_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    size_t tried = 0;
    for (size_t j = 0; j < 16; j++) {
        if (!f.p[j])
            continue;
        uint8_t *c = ctrl_of_ptr(&f, f.p[j]);
        size_t n = kbuddy_usable_size(&f.h, f.p[j]) / UNIT;
        if (n < 8)
            continue;
        /* Past the record: the last unit's byte. */
        c[n - 1] = 0x01;
        EXPECT_DETECTED(&f);
        c[n - 1] = KB_CTRL_START | 5; /* a nested "allocation" */
        EXPECT_DETECTED(&f);
        c[n - 1] |= 0x01; /* the end mark with junk beside it */
        EXPECT_DETECTED(&f);
        c[n - 1] = 0; /* no end mark */
        EXPECT_DETECTED(&f);
        tried++;
    }
    CHECK(tried >= 4);
    fixture_free(&f);
}

/* ------------------------------------------------------------------------ */
/* Counters, region list, region headers                                      */
/* ------------------------------------------------------------------------ */

TEST(wrong_statistics_counters_are_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    size_t *counters[] = {&f.h.total,       &f.h.allocated,   &f.h.user,
                          &f.h.overhead,    &f.h.allocations, &f.h.region_count};
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
        /* f.h is restored by value, so the pointers stay valid. */
        (*counters[i])++;
        EXPECT_DETECTED(&f);
        (*counters[i])--;
        EXPECT_DETECTED(&f);
        *counters[i] += UNIT;
        EXPECT_DETECTED(&f);
    }
    fixture_free(&f);
}

TEST(unknown_placement_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    static const unsigned bad[] = {2, 3, 0x80, ~0u};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f.h.placement = bad[i];
        EXPECT_DETECTED(&f);
    }
    fixture_free(&f);
}

TEST(region_list_out_of_order_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    /* Swap the two regions. */
    f.h.regions = f.r2;
    f.r2->next = f.r1;
    f.r1->next = NULL;
    EXPECT_DETECTED(&f);
    fixture_free(&f);
}

TEST(region_missing_from_the_list_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    f.r1->next = NULL; /* drop the second */
    EXPECT_DETECTED(&f);
    f.h.regions = f.r2; /* drop the first */
    EXPECT_DETECTED(&f);
    fixture_free(&f);
}

/* The zero bytes on either side of a region's control bytes stand for "no
 * free block here" at the region's edges, where the engine reads without a
 * bound test: any other value is damage, free marks above all. */
TEST(damaged_guard_byte_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    static const uint8_t junk[] = {1, KB_CTRL_FREE, KB_CTRL_FREE + 3, KB_CTRL_END, KB_CTRL_START, 0xff};
    struct kbuddy_region *regions[2] = {f.r1, f.r2};
    for (size_t ri = 0; ri < 2; ri++) {
        struct kbuddy_region *r = regions[ri];
        uint8_t *guards[2] = {r->ctrl - 1, r->ctrl + (r->engine.hi - r->engine.lo)};
        for (size_t g = 0; g < 2; g++) {
            CHECK_EQ(*guards[g], 0);
            for (size_t t = 0; t < sizeof junk; t++) {
                *guards[g] = junk[t];
                EXPECT_DETECTED(&f);
            }
        }
    }
    fixture_free(&f);
}

TEST(damaged_region_header_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    struct kbuddy_region *regions[2] = {f.r1, f.r2};
    for (size_t ri = 0; ri < 2; ri++) {
        struct kbuddy_region *r = regions[ri];
        r->start += 1;
        EXPECT_DETECTED(&f);
        r->start -= 1;
        EXPECT_DETECTED(&f);
        r->end += 1;
        EXPECT_DETECTED(&f);
        r->end -= UNIT * 64;
        EXPECT_DETECTED(&f);
        r->engine.lo += 1;
        EXPECT_DETECTED(&f);
        r->engine.hi -= 1;
        EXPECT_DETECTED(&f);
        r->engine.hi += 1;
        EXPECT_DETECTED(&f);
        r->engine.orders -= 1;
        EXPECT_DETECTED(&f);
        r->engine.orders += 1;
        EXPECT_DETECTED(&f);
        r->engine.orders = 200;
        EXPECT_DETECTED(&f);
        r->ctrl += 1;
        EXPECT_DETECTED(&f);
        r->ctrl -= 1;
        EXPECT_DETECTED(&f);
        /* both copies moved to where ctrl + (hi - lo) wraps past the first
         * unit's address: refused before the guards are read through it */
        r->ctrl = r->engine.ctrl = (uint8_t *)(UINTPTR_MAX - (r->engine.hi - r->engine.lo) / 2);
        EXPECT_DETECTED(&f);
        r->engine.words += 1;
        EXPECT_DETECTED(&f);
    }
    fixture_free(&f);
}

/* The hint is the region free and alloc look at first: one that is not in
 * the heap's list makes them resolve pointers through foreign bookkeeping. */
TEST(hint_to_a_region_outside_the_list_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    /* A well-formed region of another heap. */
    static unsigned char other_mem[16384] __attribute__((aligned(64)));
    kbuddy_heap other;
    kbuddy_init(&other);
    REQUIRE(kbuddy_add_region(&other, other_mem, sizeof other_mem) == KBUDDY_OK);
    f.h.hint = other.regions;
    EXPECT_DETECTED(&f);
    fixture_free(&f);
}

/* A region whose engine reports to another heap's masks and counts would
 * leave this heap's orders_free stale after every operation. */
TEST(region_reporting_to_another_heap_is_detected) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    static kbuddy_heap other;
    memcpy(&other, &f.h, sizeof other); /* the same masks and counts */
    f.r2->engine.owner_mask = &other.orders_free;
    f.r2->engine.owner_count = other.regions_with_order;
    EXPECT_DETECTED(&f);
    fixture_free(&f);
}

/* ------------------------------------------------------------------------ */
/* What the other functions do with a damaged record                          */
/* ------------------------------------------------------------------------ */

TEST(free_of_a_damaged_record_reports_corruption_and_changes_nothing) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    size_t tried = 0;
    for (size_t j = 0; j < 16; j++) {
        if (!f.p[j])
            continue;
        uint8_t *c = ctrl_of_ptr(&f, f.p[j]);
        if (!(*c & KB_CTRL_LONG))
            continue;
        c[1] = 1; /* a long record of one unit: malformed */
        kbuddy_heap h_before = f.h;
        unsigned char *mem_before = malloc(ARENA_LEN);
        REQUIRE(mem_before);
        memcpy(mem_before, f.arena, ARENA_LEN);
        CHECK_STATUS(kbuddy_free(&f.h, f.p[j]), KBUDDY_ECORRUPT);
        CHECK_STATUS(kbuddy_free_sized(&f.h, f.p[j], f.size[j], 1), KBUDDY_ECORRUPT);
        CHECK_EQ(kbuddy_usable_size(&f.h, f.p[j]), 0);
        CHECK(kbuddy_realloc(&f.h, f.p[j], 10, 1) == NULL);
        CHECK(memcmp(mem_before, f.arena, ARENA_LEN) == 0);
        CHECK(memcmp(&h_before, &f.h, sizeof f.h) == 0);
        free(mem_before);
        EXPECT_DETECTED(&f);
        tried++;
    }
    CHECK(tried >= 6);
    fixture_free(&f);
}

/* A long record needs a second unit; on a region's last unit there is
 * none, and the record must not be read past the region. */
TEST(long_record_on_the_last_unit_of_a_region_is_detected) {
    static unsigned char mem[8192] __attribute__((aligned(64)));
    kbuddy_heap h;
    kbuddy_init(&h);
    REQUIRE(kbuddy_add_region(&h, mem, sizeof mem) == KBUDDY_OK);
    void *last = NULL;
    for (void *p; (p = kbuddy_alloc(&h, 1, 1)) != NULL;)
        if ((uintptr_t)p > (uintptr_t)last)
            last = p;
    REQUIRE(last);
    struct kbuddy_region *r = h.regions;
    REQUIRE((uintptr_t)last / UNIT == r->engine.hi - 1);
    uint8_t *c = &r->ctrl[(uintptr_t)last / UNIT - r->engine.lo];
    uint8_t saved = *c;
    *c |= KB_CTRL_LONG;
    CHECK_STATUS(kbuddy_check(&h), KBUDDY_ECORRUPT);
    CHECK_STATUS(kbuddy_free(&h, last), KBUDDY_ECORRUPT);
    CHECK_EQ(kbuddy_usable_size(&h, last), 0);
    *c = saved;
    CHECK_STATUS(kbuddy_check(&h), KBUDDY_OK);
    CHECK_STATUS(kbuddy_free(&h, last), KBUDDY_OK);
}

/* kbuddy_free_sized recognises the common records by comparing their bytes
 * with the ones kbuddy_alloc writes, not by decoding them, and kbuddy_free
 * by comparing them with the record of the count and size they seem to
 * hold. Whatever the damage to a record, its status and effect must be the
 * decoder's: an unsized free with no region used last (run on a copy)
 * decodes the record, the unsized free must match it, and the sized free must
 * then succeed exactly when that free did and released the size given
 * (ESIZE when it released another), fail with the same status otherwise,
 * and leave the same bytes and counters either way. Sizes of 1 to 300
 * units, allocations up to the region's last unit (under 8 control bytes
 * from its end), each byte of the record and the last unit flipped in
 * turn, sizes and alignments right and wrong. */
static unsigned char sized_mem[1 << 15] __attribute__((aligned(4096)));
static unsigned char sized_copy[sizeof sized_mem];

/* A lock that counts: every acquire must be released, none nested. */
typedef struct {
    int depth, violations;
    unsigned long acquires;
} counting_lock;

/* After a free in sized_mem's heap h: its region's bytes and h itself
 * are exactly want_mem and want_h (what the accepting free left, or what
 * was there before a refused one). */
static void check_heap_is(const kbuddy_heap *h, const kbuddy_heap *want_h,
                          const unsigned char *want_mem) {
    CHECK(memcmp(sized_mem, want_mem, sizeof sized_mem) == 0);
    CHECK(memcmp(h, want_h, sizeof *h) == 0);
}

static void counting_acquire(void *ctx) {
    counting_lock *c = ctx;
    c->violations += c->depth != 0;
    c->depth++;
    c->acquires++;
}

static void counting_release(void *ctx) {
    counting_lock *c = ctx;
    c->violations += c->depth != 1;
    c->depth--;
}

/* Both passes: a heap without a lock (the frees jump to their work) and
 * one with a lock (the frees take it around their own copy of it). */
TEST(sized_free_agrees_with_the_record_decoder_on_damaged_records) {
    static const size_t units[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 100, 255, 256, 300};
    static const uint8_t flips[] = {0x01, 0x08, 0x0f, 0x10, 0x20, 0x40, 0x80};
    size_t compared = 0, accepted = 0, unsized_accepted = 0;
    counting_lock cl = {0, 0, 0};
    for (size_t si = 0; si < 2 * (sizeof units / sizeof units[0]); si++) {
        bool locked = si >= sizeof units / sizeof units[0];
        size_t ui = si % (sizeof units / sizeof units[0]);
        size_t size = units[ui] * UNIT - (ui % 3) * 5 - (units[ui] == 1 ? 1 : 0);
        kbuddy_heap h;
        kbuddy_init(&h);
        if (locked) {
            kbuddy_lock lk = {counting_acquire, counting_release, &cl};
            kbuddy_set_lock(&h, &lk);
        }
        memset(sized_mem, 0, sizeof sized_mem);
        REQUIRE(kbuddy_add_region(&h, sized_mem, sizeof sized_mem) == KBUDDY_OK);
        /* a free makes the region the one used last (the heap's hint) */
        CHECK_STATUS(kbuddy_free(&h, kbuddy_alloc(&h, 1, 1)), KBUDDY_OK);
        REQUIRE(h.hint == h.regions);
        void *ptrs[1024];
        size_t count = 0;
        while (count < 1024 && (ptrs[count] = kbuddy_alloc(&h, size, 1)) != NULL)
            count++;
        REQUIRE(count > 0);
        struct kbuddy_region *r = h.regions;
        for (size_t j = 0; j < count; j++) {
            size_t n = (size + UNIT - 1) / UNIT;
            uint8_t *c = &r->ctrl[(uintptr_t)ptrs[j] / UNIT - r->engine.lo];
            size_t pos[] = {0, 1, 2, 3, 7, 8, n - 1};
            const size_t npos = sizeof pos / sizeof pos[0], nflips = sizeof flips / sizeof flips[0];
            for (size_t pi = 0; pi < npos; pi++) {
                size_t at = pos[pi];
                /* flip fi of byte `at`; fi == nflips: the record intact (once) */
                for (size_t fi = 0; fi <= nflips; fi++) {
                    if (fi == nflips ? pi != 0 : at >= n)
                        continue;
                    uint8_t old = c[at];
                    if (fi < nflips)
                        c[at] ^= flips[fi];
                    kbuddy_heap h0 = h;
                    memcpy(sized_copy, sized_mem, sizeof sized_mem);
                    /* The reference: the decoder itself, reached by a
                     * free with no region used last (no fast path). */
                    h.hint = NULL;
                    kbuddy_status su = kbuddy_free(&h, ptrs[j]);
                    size_t released = h0.user - h.user;
                    static unsigned char after_unsized[sizeof sized_mem];
                    memcpy(after_unsized, sized_mem, sizeof sized_mem);
                    kbuddy_heap h1 = h;
                    /* The unsized free with the region used last (its
                     * fast path when the record is a short one): the
                     * decoder's status, bytes and counters. */
                    h = h0;
                    memcpy(sized_mem, sized_copy, sizeof sized_mem);
                    CHECK_STATUS(kbuddy_free(&h, ptrs[j]), su);
                    if (su == KBUDDY_OK) {
                        check_heap_is(&h, &h1, after_unsized);
                        unsized_accepted++;
                    } else {
                        check_heap_is(&h, &h0, sized_copy);
                    }
                    /* 0 and 3 UNIT: not powers of two, the second with
                     * a bit at UNIT and above, which the fast path's
                     * one test of alignment and unit must still see */
                    static const size_t aligns[] = {1, 3, 2 * UNIT, 0, 3 * UNIT};
                    for (size_t ai = 0; ai < sizeof aligns / sizeof aligns[0]; ai++) {
                        for (int d = -1; d <= 1; d++) {
                            size_t ask = size + (size_t)d;
                            h = h0;
                            memcpy(sized_mem, sized_copy, sizeof sized_mem);
                            size_t al = aligns[ai];
                            bool aligned = al != 0 && (al & (al - 1)) == 0 &&
                                           (uintptr_t)ptrs[j] % al == 0;
                            kbuddy_status want = su != KBUDDY_OK ? su
                                                 : released == ask && aligned ? KBUDDY_OK
                                                                              : KBUDDY_ESIZE;
                            CHECK_STATUS(kbuddy_free_sized(&h, ptrs[j], ask, aligns[ai]), want);
                            if (want == KBUDDY_OK) {
                                check_heap_is(&h, &h1, after_unsized);
                                accepted++;
                            } else {
                                check_heap_is(&h, &h0, sized_copy);
                            }
                            compared++;
                        }
                    }
                    h = h0;
                    memcpy(sized_mem, sized_copy, sizeof sized_mem);
                    c[at] = old;
                }
            }
        }
        CHECK_STATUS(kbuddy_check(&h), KBUDDY_OK);
        for (size_t j = 0; j < count; j++)
            CHECK_STATUS(kbuddy_free_sized(&h, ptrs[j], size, 1), KBUDDY_OK);
        CHECK_STATUS(kbuddy_check(&h), KBUDDY_OK);
    }
    CHECK(compared > 20000);
    CHECK(accepted > 200);
    CHECK(unsized_accepted > 200);
    CHECK(cl.acquires > 10000);
    CHECK_EQ(cl.depth, 0);
    CHECK_EQ(cl.violations, 0);
}

/* A record near a region's end that claims more units than are left is
 * damage, even when the byte where its last unit's mark would be (past
 * the control bytes) happens to read as that mark: the sized free must
 * not take the record's word for it. */
TEST(sized_free_of_a_record_running_past_the_region_end_is_refused) {
    static unsigned char mem[1 << 14] __attribute__((aligned(4096)));
    kbuddy_heap h;
    kbuddy_init(&h);
    REQUIRE(kbuddy_add_region(&h, mem, sizeof mem) == KBUDDY_OK);
    void *near_end = NULL, *first = NULL;
    struct kbuddy_region *r = h.regions;
    for (void *p; (p = kbuddy_alloc(&h, UNIT, 1)) != NULL;) {
        if (r->engine.hi - (uintptr_t)p / UNIT == 10)
            near_end = p;
        if (!first)
            first = p;
    }
    REQUIRE(near_end && first != near_end);
    CHECK_STATUS(kbuddy_free(&h, first), KBUDDY_OK);
    uintptr_t x = (uintptr_t)near_end / UNIT - r->engine.lo, span = r->engine.hi - r->engine.lo;
    uint8_t *c = &r->ctrl[x];
    /* a forged record of 11 units (one more than are left), its end mark
     * where the 11th control byte would be: the first byte after them */
    uint8_t saved[8], saved_end = r->ctrl[span];
    memcpy(saved, c, 8);
    memset(c, 0, 8); /* the next units' records go: they are inside it */
    c[0] = KB_CTRL_START | KB_CTRL_LONG;
    c[1] = 11;
    r->ctrl[span] = KB_CTRL_END;
    REQUIRE(&c[10] == &r->ctrl[span]);
    REQUIRE(h.hint == r); /* set by the free: the fast path's case */
    kbuddy_heap before = h;
    CHECK_STATUS(kbuddy_free_sized(&h, near_end, 11 * UNIT, 1), KBUDDY_ECORRUPT);
    CHECK_STATUS(kbuddy_free(&h, near_end), KBUDDY_ECORRUPT);
    CHECK(memcmp(&before, &h, sizeof h) == 0);
    CHECK_EQ(c[0], KB_CTRL_START | KB_CTRL_LONG);
    memcpy(c, saved, 8);
    r->ctrl[span] = saved_end;
    CHECK_STATUS(kbuddy_free_sized(&h, near_end, UNIT, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_check(&h), KBUDDY_OK);
}

/* Not damage, but the engine's entry with the fixture's bytes to compare
 * against: kb_engine_release of an empty range [u, u) frees nothing, at an
 * odd and an even unit inside an allocation and at a region's ends (the
 * release loop returns at once instead of taking u's parity for an edge). */
TEST(engine_release_of_an_empty_range_changes_nothing) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    struct kbuddy_region *r = region_of_ptr(&f, f.p[7]); /* 2047 bytes */
    REQUIRE(r != NULL);
    uintptr_t u = (uintptr_t)f.p[7] / UNIT;
    const uintptr_t at[4] = {u + 1, u + 2, r->engine.lo, r->engine.hi};
    for (size_t i = 0; i < 4; i++) {
        kb_engine_release(&r->engine, at[i], at[i]);
        CHECK(memcmp(f.arena, f.saved, ARENA_LEN) == 0);
        CHECK(memcmp(&f.h, &f.saved_h, sizeof f.h) == 0);
    }
    CHECK_STATUS(kbuddy_check(&f.h), KBUDDY_OK);
    fixture_free(&f);
}

TEST(every_allocation_of_the_fixture_survives_the_restores) {
    fixture f;
    REQUIRE(fixture_setup(&f));
    /* Damage and restore many times, then use the heap normally. */
    for (int i = 0; i < 10; i++) {
        f.h.allocated++;
        EXPECT_DETECTED(&f);
    }
    for (size_t j = 0; j < 16; j++)
        if (f.p[j])
            CHECK_STATUS(kbuddy_free_sized(&f.h, f.p[j], f.size[j], j % 3 ? 1 : 256), KBUDDY_OK);
    kbuddy_stats st;
    kbuddy_get_stats(&f.h, &st);
    CHECK_EQ(st.allocated, 0);
    CHECK_EQ(st.allocations, 0);
    CHECK_STATUS(kbuddy_check(&f.h), KBUDDY_OK);
    fixture_free(&f);
}

KBTEST_MAIN()
