/*
 * The cache of freed mappings (KBUDDY_MALLOC_MAP_CACHE, kbm_large.h), in
 * the hosted configuration with its default map threshold: a freed large
 * block's mapping is kept, pages and all, within the cache's bound, and
 * the next large request reuses it (the smallest that holds it, else one
 * grown); calloc clears a reused one; a free of a kept mapping is refused;
 * kbuddy_malloc_trim unmaps them. Proved by pointers, contents, mincore
 * and the statistics.
 */
#define _GNU_SOURCE
#include "kbm_setup.h"

#include <stdint.h>
#include <sys/mman.h>

#define MIB ((size_t)1 << 20)

static size_t pages(size_t n) { return (n + 4095) / 4096 * 4096; }

/* Are all pages of [p, p + n) resident? */
static int all_resident(void *p, size_t n) {
    static unsigned char v[(64 * MIB) / 4096];
    size_t np = (n + 4095) / 4096;
    if (np > sizeof v || mincore(p, n, v) != 0)
        return 0;
    for (size_t i = 0; i < np; i++)
        if (!(v[i] & 1))
            return 0;
    return 1;
}

static void empty_cache(void) { (void)kbuddy_malloc_trim(SIZE_MAX); }

TEST(a_freed_mapping_is_kept_and_reused_with_its_pages) {
    kbm_setup();
    empty_cache();
    CHECK_EQ(kbm_stats().map_cached_bytes, 0);
    size_t n = 6 * MIB + 100;
    unsigned char *p = kbm_malloc(n);
    REQUIRE(p != NULL);
    CHECK(kbuddy_usable_size(kbuddy_global_heap(), p) == 0); /* a mapping, not the heap */
    memset(p, 0x5a, n);
    kbuddy_malloc_stats s1 = kbm_stats();
    kbm_free(p);
    kbuddy_malloc_stats s2 = kbm_stats();
    CHECK_EQ(s2.map_cached_bytes, pages(n)); /* kept */
    CHECK_EQ(s2.mapped_bytes, s1.mapped_bytes - pages(n)); /* not live */
    CHECK_EQ(s2.live_bytes, s1.live_bytes - pages(n));
    CHECK(all_resident(p, n));
    /* a smaller request takes it as it is: same place, pages still there */
    unsigned char *q = kbm_malloc(4 * MIB);
    CHECK(q == p);
    CHECK_EQ(kbm_stats().map_cached_bytes, 0);
    CHECK_EQ(kbm_malloc_usable_size(q), pages(n));
    CHECK(all_resident(q, 4 * MIB));
    CHECK(q[0] == 0x5a && q[4 * MIB - 1] == 0x5a); /* malloc: not cleared */
    /* a larger one grows it (remap): the old contents come along */
    kbm_free(q);
    unsigned char *r = kbm_malloc(10 * MIB);
    REQUIRE(r != NULL);
    CHECK_EQ(kbm_stats().map_cached_bytes, 0);
    CHECK(r[0] == 0x5a && r[n - 1] == 0x5a);
    CHECK_EQ(kbm_malloc_usable_size(r), 10 * MIB);
    kbm_free(r);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
    empty_cache();
}

TEST(calloc_clears_a_reused_mapping) {
    kbm_setup();
    empty_cache();
    size_t n = 3 * MIB;
    unsigned char *p = kbm_malloc(n);
    REQUIRE(p != NULL);
    memset(p, 0xff, n);
    kbm_free(p);
    CHECK_EQ(kbm_stats().map_cached_bytes, n);
    unsigned char *q = kbm_calloc(1, n);
    CHECK(q == p);
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++)
        nonzero += q[i] != 0;
    CHECK_EQ(nonzero, 0);
    kbm_free(q);
    empty_cache();
}

TEST(a_free_of_a_kept_mapping_is_refused) {
    kbm_setup();
    empty_cache();
    void *p = kbm_malloc(2 * MIB);
    REQUIRE(p != NULL);
    kbm_free(p);
    size_t cached = kbm_stats().map_cached_bytes;
    CHECK_EQ(cached, 2 * MIB);
    kbm_free(p); /* a double free */
    CHECK_EQ(atomic_load(&kbm_bad_count), 1);
    CHECK_EQ(atomic_load(&kbm_bad_status), KBUDDY_EDOUBLEFREE);
    CHECK_EQ(kbm_stats().map_cached_bytes, cached); /* nothing changed */
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
    empty_cache();
}

/* The cache holds at most max(KBUDDY_MALLOC_MAP_THRESHOLD_MAX, live mapped
 * bytes / 4) and KBUDDY_MALLOC_MAP_CACHE mappings; the rest is unmapped. */
TEST(the_cache_keeps_within_its_bound_and_trim_empties_it) {
    kbm_setup();
    empty_cache();
    enum { N = 12 };
    void *p[N];
    for (int i = 0; i < N; i++)
        REQUIRE((p[i] = kbm_malloc(8 * MIB)) != NULL);
    for (int i = 0; i < N; i++)
        kbm_free(p[i]);
    kbuddy_malloc_stats s = kbm_stats();
    CHECK(s.map_cached_bytes > 0);
    CHECK(s.map_cached_bytes <= KBUDDY_MALLOC_MAP_THRESHOLD_MAX);
    CHECK(s.map_cached_bytes <= (size_t)KBUDDY_MALLOC_MAP_CACHE * 8 * MIB);
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK); /* it checks the kept ones */
    /* trim unmaps them (with no lock held) and counts them in its result. */
    CHECK(kbuddy_malloc_trim(SIZE_MAX) >= s.map_cached_bytes);
    CHECK_EQ(kbm_stats().map_cached_bytes, 0);
    CHECK_STATS_ADD_UP();
}

/* A block that reused a larger kept mapping keeps it through reallocs
 * that stay within it and not below its request's pages (same size,
 * growing into the slack); one below them shrinks it. */
TEST(realloc_within_a_reused_mapping_keeps_it) {
    kbm_setup();
    empty_cache();
    size_t n = 6 * MIB;
    unsigned char *p = kbm_malloc(n);
    REQUIRE(p != NULL);
    memset(p, 0x33, n);
    kbm_free(p);
    unsigned char *q = kbm_malloc(4 * MIB); /* the kept 6 MiB, as it is */
    REQUIRE(q == p);
    CHECK_EQ(kbm_malloc_usable_size(q), n);
    size_t mapped = kbm_stats().mapped_bytes;
    CHECK(kbm_realloc(q, 4 * MIB) == q); /* same size: nothing cut */
    CHECK_EQ(kbm_malloc_usable_size(q), n);
    CHECK(kbm_realloc(q, 5 * MIB + 7) == q); /* grows into the slack */
    CHECK_EQ(kbm_malloc_usable_size(q), n);
    CHECK_EQ(kbm_stats().mapped_bytes, mapped);
    CHECK(all_resident(q, n));
    CHECK(kbm_realloc(q, 2 * MIB) == q); /* below 5 MiB + 7's pages: cut */
    CHECK_EQ(kbm_malloc_usable_size(q), 2 * MIB);
    CHECK_EQ(kbm_stats().mapped_bytes, mapped - (n - 2 * MIB));
    CHECK(q[0] == 0x33 && q[2 * MIB - 1] == 0x33);
    kbm_free(q);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
    empty_cache();
}

/* realloc's frees keep the mapping as free does: realloc(p, 0), and a
 * block that moves to the core heap. */
TEST(realloc_that_frees_a_mapping_keeps_it) {
    kbm_setup();
    empty_cache();
    void *p = kbm_malloc(3 * MIB);
    REQUIRE(p != NULL);
    CHECK(kbm_realloc(p, 0) == NULL);
    CHECK_EQ(kbm_stats().map_cached_bytes, 3 * MIB);
    void *q = kbm_malloc(3 * MIB); /* the same one again */
    CHECK(q == p);
    CHECK_EQ(kbm_stats().map_cached_bytes, 0);
    memset(q, 0x44, 100);
    unsigned char *r = kbm_realloc(q, 100); /* to the core heap */
    REQUIRE(r != NULL);
    CHECK(kbm_malloc_usable_size(r) >= 100 && kbm_malloc_usable_size(r) < 4096);
    CHECK(r[0] == 0x44 && r[99] == 0x44);
    CHECK_EQ(kbm_stats().map_cached_bytes, 3 * MIB);
    kbm_free(r);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
    empty_cache();
}

/* Blocks above KBUDDY_MALLOC_MAP_THRESHOLD_MAX are never kept. */
TEST(a_mapping_above_the_threshold_max_goes_back) {
    kbm_setup();
    empty_cache();
    void *p = kbm_malloc(KBUDDY_MALLOC_MAP_THRESHOLD_MAX + 4096);
    REQUIRE(p != NULL);
    kbm_free(p);
    CHECK_EQ(kbm_stats().map_cached_bytes, 0);
}

KBTEST_MAIN()
