/*
 * The lowest-word hint of the engine's orders (src/buddy.c, lowest_hint):
 * a leaf-word index at or below the word of the order's lowest free block,
 * lowered where a leaf word becomes non-zero and moved up by the lookups
 * that find its word empty. It changes no placement (an engine whose hints
 * are forced back to 0 before every take places alike), and
 * kb_engine_check refuses a hint above a free block. Builds for size
 * (KBUDDY_SMALL) keep no hint; the test checks only placement there.
 */
#define _DEFAULT_SOURCE /* mmap: MAP_ANONYMOUS, MAP_NORESERVE */
#include "kbtest.h"
#include "kbtest_engine.h"

#include <stdint.h>

#define UNITS ((uintptr_t)1 << 16) /* order 0: 1024 leaf words, 3 depths */
#define OPS 20000
#define SLOTS 128

/* Where the hint lives: a field orders of fewer than 7 depths leave unused. */
static uint32_t *hint_of(engine_map *b, unsigned k) {
    return &b->order[k].off[KB_TREE_MAX_DEPTH - 1];
}

static uint64_t rng = 0x2545f4914f6cdd1du;

static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

TEST(hints_change_no_placement) {
    engine_map a = {0}, z = {0}; /* z: every hint back to 0 before each take */
    REQUIRE(engine_open(&a, UNITS, true) && engine_open(&z, UNITS, true));
    uintptr_t start[SLOTS] = {0}, len[SLOTS] = {0};
    unsigned moved = 0; /* takes after which some hint of a was not 0 */
    for (unsigned op = 0; op < OPS; op++) {
        size_t i = (size_t)(rnd() % SLOTS);
        if (len[i]) {
            kb_engine_release(&a.e, start[i], start[i] + len[i]);
            kb_engine_release(&z.e, start[i], start[i] + len[i]);
            len[i] = 0;
            continue;
        }
        /* Sizes up to 2^8 units, aligned below their order, at it, or above. */
        uintptr_t n = 1 + rnd() % 256;
        unsigned k = kb_ceil_log2(n), ka = (unsigned)(rnd() % (k + 2));
        if (ka > k)
            k = ka;
        for (unsigned o = 0; o < z.e.orders; o++)
            *hint_of(&z, o) = 0;
        uintptr_t sa = 0, sz = 0;
        bool ta = kb_engine_take(&a.e, n, k, ka, &sa), tz = kb_engine_take(&z.e, n, k, ka, &sz);
        CHECK_EQ(ta, tz);
        if (!ta)
            continue;
        CHECK_EQ(sa, sz);
        start[i] = sa;
        len[i] = n;
        for (unsigned o = 0; o < a.e.orders; o++)
            if (*hint_of(&a, o)) {
                moved++;
                break;
            }
    }
    size_t blocks = 0;
    uintptr_t units = 0;
    CHECK(kb_engine_check(&a.e, &blocks, &units));
    CHECK(kb_engine_check(&z.e, &blocks, &units));
    if (!KBUDDY_SMALL)
        CHECK(moved > OPS / 10); /* the hints did move: the test saw them work */
    engine_close(&a);
    engine_close(&z);
}

TEST(hint_follows_the_lowest_block) {
    if (KBUDDY_SMALL)
        return;
    engine_map b = {0};
    REQUIRE(engine_open(&b, UNITS, false));
    /* Free order-0 blocks at units 1 (leaf word 0) and 321 (word 5), whose
     * buddies are in use, so they stay order 0. */
    kb_engine_release(&b.e, 1, 2);
    kb_engine_release(&b.e, 321, 322);
    CHECK_EQ(*hint_of(&b, 0), 0);
    uintptr_t s = 0;
    REQUIRE(kb_engine_take(&b.e, 1, 0, 0, &s));
    CHECK_EQ(s, 1);
    /* Word 0 is empty now; the next lookup misses and moves the hint. */
    REQUIRE(kb_engine_take(&b.e, 1, 0, 0, &s));
    CHECK_EQ(s, 321);
    kb_engine_release(&b.e, 321, 322);
    REQUIRE(kb_engine_take(&b.e, 1, 0, 0, &s)); /* a hit at word 5 */
    CHECK_EQ(s, 321);
    CHECK_EQ(*hint_of(&b, 0), 5);
    /* A block freed below the hint lowers it. */
    kb_engine_release(&b.e, 321, 322);
    kb_engine_release(&b.e, 65, 66); /* word 1 */
    CHECK_EQ(*hint_of(&b, 0), 1);
    size_t blocks = 0;
    uintptr_t units = 0;
    CHECK(kb_engine_check(&b.e, &blocks, &units));
    CHECK_EQ(blocks, 2);
    /* kb_engine_check refuses a hint above a free block's word, or past
     * the order's last word. */
    *hint_of(&b, 0) = 2;
    CHECK(!kb_engine_check(&b.e, &blocks, &units));
    *hint_of(&b, 0) = (uint32_t)(UNITS >> KB_WORD_SHIFT);
    CHECK(!kb_engine_check(&b.e, &blocks, &units));
    *hint_of(&b, 0) = 1;
    CHECK(kb_engine_check(&b.e, &blocks, &units));
    engine_close(&b);
}

/* An order of 7 depths (over 2^36 blocks) keeps no hint: its off[6] is its
 * root's offset. A frame engine of 2^37 units over address space reserved
 * and never touched but where the operations write (as in
 * test_heap_engine_large.c), 2^36 + 64 units (16 GiB of bitmap; 2^37
 * would pass kb_engine_words' limit of 2^32 words): its order 0 has 7
 * depths, and takes there descend from the root and leave the offset
 * alone. */
TEST(order_of_seven_depths_keeps_no_hint) {
    const uintptr_t units = ((uintptr_t)1 << 36) + 64, top = (uintptr_t)1 << 36;
    engine_map b = {0}; /* no control bytes: a frame engine */
    b.words_bytes = kb_engine_words(0, units) * sizeof(kb_word);
    REQUIRE(b.words_bytes != 0);
    if (!(b.words = engine_reserve(b.words_bytes)))
        return; /* no address space for it here */
    (void)kb_engine_layout(&b.e, 0, units, b.order, b.words); /* mmap gave zeros */
    CHECK_EQ(b.order[0].depth, KB_TREE_MAX_DEPTH);
    uint32_t root = b.order[0].off[KB_TREE_MAX_DEPTH - 1];
    kb_engine_release(&b.e, 0, units);
    uintptr_t s = 1;
    REQUIRE(kb_engine_take_frames(&b.e, 1, 0, 0, &s)); /* splits the 64 units at top */
    CHECK_EQ(s, top);
    REQUIRE(kb_engine_take_frames(&b.e, 1, 0, 0, &s)); /* order 0's lowest: top + 1 */
    CHECK_EQ(s, top + 1);
    kb_engine_release(&b.e, top + 1, top + 2);
    kb_engine_release(&b.e, top, top + 1);
    CHECK_EQ(b.order[0].off[KB_TREE_MAX_DEPTH - 1], root);
    /* All free again, merged: the 64 units at top are one block of order
     * 6 (kb_engine_check would read all 16 GiB of the bitmap). */
    CHECK_EQ(b.e.nonempty, ((uint64_t)1 << 36) | ((uint64_t)1 << 6));
    engine_close(&b);
}

KBTEST_MAIN()
