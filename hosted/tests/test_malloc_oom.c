/*
 * The global allocator running out of memory in its kernel configuration
 * (one small region, no grow hook): blocks waiting in the depot and in the
 * calling CPU's own cache go back to the core heap before a request is
 * refused, so memory the program freed is never lost to the caches.
 */
#include "kbtest.h"
#include "kbuddy_malloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define REGION_BYTES ((size_t)256 << 10)

static unsigned char *region;

static kbuddy_malloc_stats stats(void) {
    kbuddy_malloc_stats st;
    kbuddy_malloc_get_stats(&st);
    return st;
}

static void boot(void) {
    static int done;
    if (done)
        return;
    done = 1;
    /* Aligned to its size, so that its upper half is one free block
     * wherever the test runs. */
    region = aligned_alloc(REGION_BYTES, REGION_BYTES);
    REQUIRE(region != NULL);
    CHECK_STATUS(kbuddy_malloc_add_region(region, REGION_BYTES), KBUDDY_OK);
    kbm_free(kbm_malloc(1)); /* this CPU's cache exists from now on */
    kbuddy_malloc_flush_caches();
}

/* A large request that fits only once the cached blocks are back: the
 * heap filled with 64-byte blocks, all freed, so that the depot and this
 * CPU's magazines hold blocks from all over it. */
TEST(large_request_gets_the_memory_the_caches_held) {
    boot();
    size_t largest = stats().heap.largest_free;
    REQUIRE(largest >= 64 << 10);
    static void *p[REGION_BYTES / 64];
    size_t n = 0;
    while ((p[n] = kbm_malloc(64)) != NULL)
        n++;
    REQUIRE(n > 1000);
    for (size_t i = 0; i < n; i++)
        kbm_free(p[i]);
    kbuddy_malloc_stats st = stats();
    CHECK(st.cached_blocks > st.depot_blocks); /* some in this CPU's magazines */
    CHECK(st.depot_blocks > 0);
    CHECK(st.heap.largest_free < largest);
    void *big = kbm_malloc(largest);
    REQUIRE(big != NULL);
    memset(big, 1, largest);
    st = stats();
    CHECK_EQ(st.cached_blocks, 0);
    CHECK_EQ(st.live_blocks, 1);
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
    kbm_free(big);
    CHECK_EQ(stats().bad_frees, 0);
}

/* Small blocks of one class fill the heap although every byte of it had
 * gone to another class's cached blocks. */
TEST(small_requests_get_the_memory_other_classes_held) {
    boot();
    size_t largest = stats().heap.largest_free;
    enum { N = 400 };
    static void *p[N];
    size_t n = 0;
    while (n < N && (p[n] = kbm_malloc(1000)) != NULL)
        n++;
    REQUIRE(n > 100 && n < N); /* the heap ran out */
    for (size_t i = 0; i < n; i++)
        kbm_free(p[i]);
    CHECK(stats().cached_blocks >= 32); /* at least a magazine of them */
    static void *q[REGION_BYTES / 32];
    size_t m = 0;
    while ((q[m] = kbm_malloc(32)) != NULL)
        m++;
    /* 1000-byte blocks used 1024 of every 1024 + 32 bytes of tags and more
     * of bookkeeping: at least as many bytes of 32-byte blocks fit. */
    CHECK(m * 32 >= n * 1024);
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
    for (size_t i = 0; i < m; i++)
        kbm_free(q[i]);
    kbuddy_malloc_flush_caches();
    CHECK_EQ(stats().heap.largest_free, largest);
    CHECK_EQ(stats().bad_frees, 0);
}

KBTEST_MAIN()
