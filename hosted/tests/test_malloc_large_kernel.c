/*
 * Large blocks in the kernel configuration (per-CPU caches, no errno, one
 * static region). Without map and unmap hooks every block comes from the
 * core heap, as it always did. With them (here a stand-in for a kernel's
 * page mapper: 2 MiB slots of a static pool, which are not zero, so
 * map_zeroed is false) blocks above a threshold chosen at run time get a
 * slot, calloc clears what it gets, and when the core heap is full the
 * registry cannot grow past its static entries: the request fails with
 * NULL instead of losing track of a mapping.
 */
#include "kbtest.h"
#include "kbuddy_malloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIB ((size_t)1 << 20)
#define REGION_BYTES (16 * MIB)
#define SLOT (2 * MIB)
#define SLOTS 24

static _Alignas(4096) unsigned char region[REGION_BYTES];
static _Alignas(4096) unsigned char pool[SLOTS][SLOT];
static unsigned char slot_used[SLOTS];
static size_t maps, unmaps, map_fails;
static void *rogue; /* the next map returns this, whatever it is */
static bool rogue_back; /* and may come back to unmap */

static void *pool_map(size_t size, size_t align, void *ctx) {
    (void)ctx;
    maps++;
    if (rogue) {
        void *r = rogue;
        rogue = NULL;
        return r;
    }
    for (int i = 0; i < SLOTS && size <= SLOT; i++)
        if (!slot_used[i] && (uintptr_t)pool[i] % align == 0) {
            slot_used[i] = 1;
            return pool[i];
        }
    map_fails++;
    return NULL;
}

static void pool_unmap(void *start, size_t size, void *ctx) {
    (void)ctx;
    unmaps++;
    size_t i = (size_t)((unsigned char *)start - &pool[0][0]) / SLOT;
    CHECK(i < SLOTS && (start == pool[i] || rogue_back) && slot_used[i] && size <= SLOT);
    slot_used[i] = 0;
    memset(start, 0xAA, SLOT); /* what the next user finds: not zero */
}

static kbuddy_malloc_stats stats(void) {
    kbuddy_malloc_stats st;
    kbuddy_malloc_get_stats(&st);
    return st;
}

static int in_region(const void *p) { return (uintptr_t)p - (uintptr_t)region < REGION_BYTES; }

/* The region once, then these hooks (no mapped block is live between
 * tests, so changing them is safe here). */
static void boot(bool with_map, size_t threshold) {
    static int done;
    if (!done) {
        done = 1;
        memset(pool, 0xAA, sizeof pool);
        CHECK_STATUS(kbuddy_malloc_add_region(region, REGION_BYTES), KBUDDY_OK);
    }
    kbuddy_malloc_hooks h;
    memset(&h, 0, sizeof h);
    if (with_map) {
        h.map = pool_map;
        h.unmap = pool_unmap;
        h.map_threshold = threshold;
    }
    kbuddy_malloc_set_hooks(&h);
}

#define CHECK_ADDS_UP()                                                                        \
    do {                                                                                       \
        kbuddy_malloc_stats s_ = stats();                                                      \
        CHECK_EQ(s_.heap.allocations + s_.mapped_blocks,                                       \
                 s_.live_blocks + s_.cached_blocks + s_.internal_blocks);                      \
        CHECK_EQ(s_.heap.allocated + s_.mapped_bytes,                                          \
                 s_.live_bytes + s_.cached_bytes + s_.internal_bytes);                         \
        CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);                                        \
    } while (0)

TEST(without_map_hooks_large_blocks_come_from_the_heap) {
    boot(false, 0);
    size_t m0 = maps;
    unsigned char *p = kbm_malloc(3 * MIB / 2);
    REQUIRE(p != NULL);
    CHECK(in_region(p));
    unsigned char *z = kbm_calloc(2, MIB);
    REQUIRE(z != NULL);
    CHECK(in_region(z));
    CHECK(z[0] == 0 && z[2 * MIB - 1] == 0);
    p = kbm_realloc(p, 3 * MIB);
    REQUIRE(p != NULL);
    CHECK(in_region(p));
    CHECK_EQ(stats().mapped_blocks, 0);
    CHECK_EQ(stats().mapped_bytes, 0);
    CHECK_ADDS_UP();
    kbm_free(p);
    kbm_free(z);
    /* map without unmap is not enough either */
    kbuddy_malloc_hooks h;
    memset(&h, 0, sizeof h);
    h.map = pool_map;
    kbuddy_malloc_set_hooks(&h);
    p = kbm_malloc(4 * MIB);
    CHECK(in_region(p));
    kbm_free(p);
    CHECK_EQ(maps, m0);
    CHECK_ADDS_UP();
}

/* A threshold set at run time; memory from map that is not zero is
 * cleared by calloc; free gives the slot back. */
TEST(map_hooks_with_a_threshold_and_memory_that_is_not_zero) {
    boot(true, 64 << 10);
    size_t m0 = maps, u0 = unmaps;
    void *small = kbm_malloc(64 << 10); /* at the threshold: the heap */
    CHECK(in_region(small));
    unsigned char *p = kbm_calloc(100, 1024);
    REQUIRE(p != NULL);
    CHECK(!in_region(p));
    CHECK_EQ(maps, m0 + 1);
    int zero = 1;
    for (size_t i = 0; i < 100 * 1024; i++)
        zero &= p[i] == 0;
    CHECK(zero);
    CHECK_EQ(kbm_malloc_usable_size(p), 100 * 1024); /* a multiple of 4096 */
    CHECK_EQ(stats().mapped_blocks, 1);
    CHECK_EQ(stats().mapped_bytes, 100 * 1024);
    CHECK_ADDS_UP();
    kbm_free_sized(p, 100 * 1024);
    CHECK_EQ(unmaps, u0 + 1);
    /* No remap hook: a block that grows moves, one that shrinks stays. */
    p = kbm_malloc(SLOT / 2);
    REQUIRE(p != NULL);
    p[5] = 5;
    unsigned char *q = kbm_realloc(p, SLOT / 4);
    CHECK(q == p);
    q = kbm_realloc(p, SLOT);
    REQUIRE(q != NULL);
    CHECK(q != p && q[5] == 5);
    CHECK_EQ(unmaps, u0 + 2);
    CHECK_ADDS_UP();
    kbm_free(q);
    kbm_free(small);
    CHECK_EQ(stats().mapped_blocks, 0);
    CHECK_ADDS_UP();
}

/* realloc(p, 0) of a mapped block is its free, the threshold rule too
 * (glibc's realloc(p, 0) calls free): the next block of its size comes
 * from the heap. (Runs before the_default_threshold_is_raised_by_frees,
 * with a smaller size: the raise stays.) */
TEST(realloc_to_zero_raises_the_default_threshold_as_free_does) {
    boot(true, 0);
    size_t n = KBUDDY_MALLOC_MAP_THRESHOLD + (KBUDDY_MALLOC_MAP_THRESHOLD >> 2);
    void *p = kbm_malloc(n);
    CHECK(p && !in_region(p));
    CHECK(kbm_realloc(p, 0) == NULL);
    CHECK_EQ(stats().mapped_blocks, 0);
    p = kbm_malloc(n);
    CHECK(p && in_region(p));
    kbm_free(p);
    CHECK_ADDS_UP();
}

/* The default threshold (map_threshold 0) moves as glibc's does: the
 * free of a mapped block raises it to the block's size, so that the next
 * block of that size comes from the heap; larger ones are still mapped.
 * (Runs last of those that set the default: the raise stays.) */
TEST(the_default_threshold_is_raised_by_frees) {
    boot(true, 0);
    size_t m0 = maps;
    size_t n = KBUDDY_MALLOC_MAP_THRESHOLD + (KBUDDY_MALLOC_MAP_THRESHOLD >> 1);
    void *p = kbm_malloc(n);
    CHECK(p && !in_region(p));
    kbm_free(p);
    p = kbm_malloc(n);
    CHECK(p && in_region(p));
    void *q = kbm_malloc(n + 4096 + 1);
    CHECK(q && !in_region(q));
    CHECK_EQ(maps, m0 + 2);
    kbm_free(p);
    kbm_free(q);
    CHECK_ADDS_UP();
}

/* A map hook that breaks its contract: memory already a live mapping's,
 * or inside the heap's region, is neither used nor given back; misaligned
 * memory is given back. Each time the heap serves the request instead. */
TEST(memory_a_broken_map_hook_returns_is_refused) {
    boot(true, 64 << 10);
    unsigned char *p = kbm_malloc(SLOT);
    REQUIRE(p && !in_region(p));
    memset(p, 7, SLOT);
    size_t u0 = unmaps;
    rogue = p + SLOT / 2; /* inside a live mapping */
    void *a = kbm_malloc(SLOT / 4);
    CHECK(a && in_region(a));
    rogue = region + REGION_BYTES / 2; /* inside the region */
    void *b = kbm_malloc(SLOT / 4);
    CHECK(b && in_region(b));
    CHECK_EQ(unmaps, u0);
    size_t i = 0;
    while (slot_used[i])
        i++;
    REQUIRE(i < SLOTS);
    slot_used[i] = 1;
    rogue = pool[i] + 512; /* misaligned: given back */
    rogue_back = true;
    void *c = kbm_malloc(SLOT / 4);
    rogue_back = false;
    CHECK(c && in_region(c));
    CHECK_EQ(unmaps, u0 + 1);
    CHECK(!slot_used[i]);
    CHECK(p[0] == 7 && p[SLOT - 1] == 7 && p[SLOT / 2] == 7);
    CHECK_EQ(stats().mapped_blocks, 1);
    CHECK_ADDS_UP();
    kbm_free(a);
    kbm_free(b);
    kbm_free(c);
    kbm_free(p);
    CHECK_EQ(stats().mapped_blocks, 0);
    CHECK_ADDS_UP();
}

/* When no slot is left, the heap serves the request. */
TEST(no_mapping_left_falls_back_to_the_heap) {
    boot(true, 64 << 10);
    static void *p[SLOTS];
    for (int i = 0; i < SLOTS; i++) {
        p[i] = kbm_malloc(SLOT);
        REQUIRE(p[i] != NULL && !in_region(p[i]));
    }
    size_t f0 = map_fails;
    void *h = kbm_malloc(SLOT);
    CHECK(h != NULL && in_region(h));
    CHECK_EQ(map_fails, f0 + 1);
    kbm_free(h);
    for (int i = 0; i < SLOTS; i++)
        kbm_free(p[i]);
    CHECK_EQ(stats().mapped_blocks, 0);
    CHECK_ADDS_UP();
}

/* The heap full: the registry cannot grow past its static entries, so
 * the next request gets no mapping (the hook is not even asked) and, the
 * heap being full, fails; freeing restores everything. */
TEST(a_full_heap_limits_the_registry_without_losing_a_mapping) {
    boot(true, 64 << 10);
    enum { MAXB = REGION_BYTES / 8192 };
    static void *b[MAXB];
    size_t nb = 0;
    while (nb < MAXB && (b[nb] = kbm_malloc(8192)) != NULL)
        nb++;
    REQUIRE(nb > 100 && nb < MAXB);
    void *chain = NULL; /* then the last crumbs, chained through their first word */
    for (void **c; (c = kbm_malloc(32)) != NULL; chain = c)
        *c = chain;
    static void *p[SLOTS];
    size_t np = 0, m0 = maps;
    while (np < SLOTS && (p[np] = kbm_malloc(SLOT)) != NULL)
        np++;
    CHECK(np >= 8 && np < SLOTS); /* the registry's static entries */
    CHECK_EQ(maps, m0 + np);      /* the failing one never reached the hook */
    CHECK_EQ(stats().mapped_blocks, np);
    CHECK_ADDS_UP();
    for (size_t i = 0; i < np; i++)
        kbm_free(p[i]);
    for (size_t i = 0; i < nb; i++)
        kbm_free(b[i]);
    while (chain) {
        void *next = *(void **)chain;
        kbm_free(chain);
        chain = next;
    }
    CHECK_EQ(stats().mapped_blocks, 0);
    CHECK_EQ(stats().live_blocks, 0);
    CHECK_ADDS_UP();
}

KBTEST_MAIN()
