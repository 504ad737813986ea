/*
 * The heap engine's take and release for engines of 32 orders and more
 * (2^31 units and up, 16 GiB of heap at 8-byte units), whose free marks
 * saturate at order 31: kb_engine_take runs take_heap_large there (and
 * take_heap below 32 orders), two copies of the placement that must agree.
 * A heap that large cannot be a test's region, so the test drives the
 * engine itself over address space reserved and never touched but where
 * the operations write (mmap without reserve: the zero pages the
 * bookkeeping starts from), beside an engine of 21 orders given the same
 * operations near the start of both ranges, where the two hold the same
 * free blocks: every take must start at the same unit in both.
 */
#define _DEFAULT_SOURCE /* mmap: MAP_ANONYMOUS, MAP_NORESERVE */
#include "kbtest.h"
#include "kbtest_engine.h"

#include <stdint.h>

#define SMALL_UNITS ((uintptr_t)1 << 20)
#define OPS 20000
#define SLOTS 64

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

TEST(engine_of_32_orders_places_like_one_of_21) {
    if ((uint64_t)UINTPTR_MAX >> 40 == 0) /* 32-bit: no room for such an engine */
        return;
    const uintptr_t big_units = (uintptr_t)1 << 31; /* 32 orders: marks saturate at 31 */
    engine_map big = {0}, small = {0};
    REQUIRE(engine_open(&big, big_units, true) && engine_open(&small, SMALL_UNITS, true));
    REQUIRE(big.e.orders == 32 && small.e.orders == 21);
    uint64_t big_nonempty = big.e.nonempty;
    uintptr_t start[SLOTS] = {0}, len[SLOTS] = {0}; /* len 0: empty slot */
    size_t takes = 0, spans = 0;
    for (int op = 0; op < OPS && kbtest_failures == 0; op++) {
        size_t i = rnd() % SLOTS;
        if (len[i]) {
            kb_engine_release(&big.e, start[i], start[i] + len[i]);
            kb_engine_release(&small.e, start[i], start[i] + len[i]);
            len[i] = 0;
            continue;
        }
        /* Sizes up to 2^9 units, aligned below their order, at it, or above. */
        uintptr_t n = 1 + rnd() % 512;
        unsigned k = kb_ceil_log2(n), ka = (unsigned)(rnd() % (k + 2));
        if (ka > k)
            k = ka;
        uintptr_t sb = 0, ss = 0;
        REQUIRE(kb_engine_take(&big.e, n, k, ka, &sb));
        REQUIRE(kb_engine_take(&small.e, n, k, ka, &ss));
        CHECK_EQ(sb, ss);
        CHECK_EQ(sb & (((uintptr_t)1 << ka) - 1), 0);
        takes++;
        spans += (sb & (((uintptr_t)1 << k) - 1)) != 0; /* not at a block start: a run */
        start[i] = sb;
        len[i] = n;
    }
    CHECK(takes > OPS / 4);
    CHECK(spans > takes / 10); /* the run search placed some */
    size_t blocks = 0;
    uintptr_t units = 0;
    CHECK(kb_engine_check(&small.e, &blocks, &units));
    for (size_t i = 0; i < SLOTS; i++)
        if (len[i]) {
            kb_engine_release(&big.e, start[i], start[i] + len[i]);
            kb_engine_release(&small.e, start[i], start[i] + len[i]);
        }
    /* All given back: one free block each again. */
    CHECK(kb_engine_check(&small.e, &blocks, &units));
    CHECK_EQ(blocks, 1);
    CHECK_EQ(units, SMALL_UNITS);
    CHECK_EQ(big.e.nonempty, big_nonempty);
    uintptr_t s = 1;
    CHECK(kb_engine_take(&big.e, big_units, 31, 31, &s));
    CHECK_EQ(s, 0);
    CHECK_EQ(big.e.nonempty, 0);
    engine_close(&big);
    engine_close(&small);
}

KBTEST_MAIN()
