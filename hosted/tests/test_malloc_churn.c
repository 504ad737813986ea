/*
 * Short-lived threads in the hosted (TLS) build: each takes a few blocks
 * and keeps one when it ends. Their caches' first fills from the core heap
 * are small (kbm_magazines.h, fill_count), so the blocks kept by thousands
 * of threads lie together instead of one per magazine-sized run, which
 * would keep a page resident for each thread (issue 11, thread churn).
 */
#include "kbm_setup.h"

#include <stdint.h>

enum { THREADS = 256 };
static void *kept[THREADS];

static void *short_lived(void *arg) {
    size_t id = (size_t)(uintptr_t)arg;
    void *a = kbm_malloc(50), *b = kbm_malloc(60), *c = kbm_malloc(40);
    void *other = kbm_malloc(1000);
    if (!a || !b || !c || !other)
        return (void *)1;
    memset(a, (int)id, 50);
    kbm_free(b);
    kbm_free(c);
    kbm_free(other);
    kept[id] = a;
    return NULL;
}

TEST(blocks_kept_by_short_lived_threads_lie_together) {
    kbm_setup();
    for (size_t i = 0; i < THREADS; i++) {
        pthread_t t;
        void *res = (void *)1;
        REQUIRE(pthread_create(&t, NULL, short_lived, (void *)(uintptr_t)i) == 0);
        REQUIRE(pthread_join(t, &res) == 0);
        REQUIRE(res == NULL);
    }
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (size_t i = 0; i < THREADS; i++) {
        uintptr_t a = (uintptr_t)kept[i];
        lo = a < lo ? a : lo;
        hi = a > hi ? a : hi;
        unsigned char *p = kept[i];
        CHECK(p[0] == (unsigned char)i && p[49] == (unsigned char)i);
    }
    /* 64-byte blocks: together they fill 16 KiB; a run of a magazine's
     * worth (4 KiB) per thread would spread them over 1 MiB. */
    CHECK(hi - lo < (size_t)THREADS * 64 * 4);
    kbuddy_malloc_stats st = kbm_stats();
    CHECK_EQ(st.live_blocks, THREADS);
    for (size_t i = 0; i < THREADS; i++)
        kbm_free(kept[i]);
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
    CHECK_EQ(kbm_stats().bad_frees, 0);
}

KBTEST_MAIN()
