/*
 * The global allocator under threads (hosted build: one cache per thread).
 * Must be clean under ThreadSanitizer: every figure checked here is read
 * after the threads are joined.
 */
#define _GNU_SOURCE /* pthread barriers */
#include "kbm_setup.h"

#include <stdint.h>
#include <stdlib.h>

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* A block's contents name its owner and size, so that a block handed out
 * twice, or written through a stale pointer, is noticed. */
static void stamp(unsigned char *p, size_t n, uint64_t tag) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(tag >> (8 * (i % 8)));
}

static int stamped(const unsigned char *p, size_t n, uint64_t tag) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(tag >> (8 * (i % 8))))
            return 0;
    return 1;
}

/* --- W3 on every thread, each on its own blocks --------------------------- */

enum { SLOTS = 2000, OPS = 200000 };

typedef struct {
    unsigned id;
    size_t errors;
} w3_arg;

static void *w3_thread(void *varg) {
    w3_arg *a = varg;
    static _Thread_local unsigned char *slot[SLOTS];
    static _Thread_local size_t len[SLOTS];
    uint64_t seed = 42 + a->id;
    for (unsigned op = 0; op < OPS; op++) {
        unsigned i = (unsigned)(xorshift(&seed) % SLOTS);
        if (slot[i]) {
            a->errors += !stamped(slot[i], len[i], (uint64_t)(uintptr_t)slot[i] ^ a->id);
            if (op % 3)
                kbm_free(slot[i]);
            else
                kbm_free_sized(slot[i], len[i]);
            slot[i] = NULL;
        } else {
            size_t n = 1 + xorshift(&seed) % (op % 16 ? 4096 : 40000);
            unsigned char *p = op % 5 ? kbm_malloc(n) : kbm_calloc(1, n);
            if (!p) {
                a->errors++;
                continue;
            }
            if (op % 5 == 0)
                for (size_t j = 0; j < n; j++)
                    a->errors += p[j] != 0;
            stamp(p, n, (uint64_t)(uintptr_t)p ^ a->id);
            slot[i] = p;
            len[i] = n;
        }
    }
    for (unsigned i = 0; i < SLOTS; i++)
        if (slot[i]) {
            a->errors += !stamped(slot[i], len[i], (uint64_t)(uintptr_t)slot[i] ^ a->id);
            kbm_free(slot[i]);
            slot[i] = NULL;
        }
    return NULL;
}

/* The depot's blocks, over all classes, stay within
 * max(KBUDDY_MALLOC_DEPOT_MIN_BYTES, heap allocated / KBUDDY_MALLOC_DEPOT_SHARE)
 * (kbm_magazines.h). Two classes of about 4 KiB, 300 blocks each, all freed:
 * by the per-class count alone the depot would keep 8 magazines of 16 blocks
 * of each (magazines of 8 blocks while the heap is this small: 480 KiB);
 * the bound is the allocated bytes at their peak (the most any free saw)
 * over 8, about 290 KiB. The depot still takes some.
 * First in the file: the later tests leave blocks live that would raise the
 * bound. */
TEST(depot_holds_at_most_its_byte_bound) {
    kbm_setup();
    kbuddy_malloc_flush_caches(); /* the depot empty: it counts only these */
    enum { N = 300 };
    static void *p[2][N];
    static const size_t size[2] = {3840, 4096};
    for (unsigned i = 0; i < N; i++)
        for (unsigned k = 0; k < 2; k++)
            REQUIRE((p[k][i] = kbm_malloc(size[k])) != NULL);
    kbuddy_malloc_stats peak = kbm_stats();
    for (unsigned k = 0; k < 2; k++)
        for (unsigned i = 0; i < N; i++)
            kbm_free(p[k][i]);
    kbuddy_malloc_stats after = kbm_stats();
    size_t bound = peak.heap.allocated / KBUDDY_MALLOC_DEPOT_SHARE;
    if (bound < KBUDDY_MALLOC_DEPOT_MIN_BYTES)
        bound = KBUDDY_MALLOC_DEPOT_MIN_BYTES;
    CHECK(after.depot_blocks > 0);
    CHECK(after.depot_blocks * size[0] <= bound); /* every block is 3840 bytes or more */
    CHECK(bound < (size_t)2 * 8 * 8 * size[0]); /* the count bound alone would pass it */
    CHECK_STATS_ADD_UP();
}

/* A thread allocates 64 blocks of 4 KiB and frees them; what its cache then
 * holds (two magazines at most) is what it reports. */
static void *free_64_pages(void *arg) {
    void *p[64];
    for (unsigned i = 0; i < 64; i++)
        p[i] = kbm_malloc(4096);
    for (unsigned i = 0; i < 64; i++)
        kbm_free(p[i]);
    kbuddy_malloc_stats st = kbm_stats();
    *(size_t *)arg = st.cached_blocks - st.depot_blocks;
    return NULL;
}

static size_t cache_after_free_64_pages(void) {
    kbuddy_malloc_stats st = kbm_stats();
    size_t held;
    pthread_t t;
    if (pthread_create(&t, NULL, free_64_pages, &held) != 0)
        return SIZE_MAX; /* fails the checks */
    pthread_join(t, NULL);
    return held - (st.cached_blocks - st.depot_blocks); /* less the other caches' */
}

/* Magazines grow with the heap (KBUDDY_MALLOC_MAG_SHARE): while it is small
 * a 4 KiB magazine holds KBUDDY_MALLOC_MAG_MIN_BYTES of blocks but no fewer
 * than KBUDDY_MALLOC_MAG_MIN_BLOCKS (the hosted build: 2 KiB, 2 blocks), so
 * a thread's cache holds two such magazines at most; with 72 MiB allocated
 * (more than 1024 x 64 KiB) the hosted build's 64 KiB magazines, 16
 * blocks, and the small ones waiting in the depot are replaced. */
TEST(magazines_grow_with_the_heap) {
    kbm_setup();
    kbuddy_malloc_flush_caches();
    CHECK(kbm_stats().heap.allocated < ((size_t)8 << 20));
    size_t cap = KBUDDY_MALLOC_MAG_MIN_BYTES / 4096;
    if (cap < KBUDDY_MALLOC_MAG_MIN_BLOCKS)
        cap = KBUDDY_MALLOC_MAG_MIN_BLOCKS;
    size_t small = cache_after_free_64_pages();
    CHECK(small >= cap && small <= 2 * cap);
    enum { BIG = 1152 }; /* 72 MiB of 64 KiB blocks (from the core heap) */
    static void *big[BIG];
    for (unsigned i = 0; i < BIG; i++)
        REQUIRE((big[i] = kbm_malloc((size_t)64 << 10)) != NULL);
    size_t large = cache_after_free_64_pages();
    CHECK(large > 2 * cap && large <= 32);
    for (unsigned i = 0; i < BIG; i++)
        kbm_free(big[i]);
    CHECK_STATS_ADD_UP();
}

/* The hosted build's small magazines for the classes of a KiB and more
 * (KBUDDY_MALLOC_MAG_MIN_BLOCKS = 2): a thread that frees 64 blocks of
 * 4 KiB keeps 4 at most in its cache, not the 16 of 8-block magazines. */
TEST(a_small_heap_caches_few_large_class_blocks_per_thread) {
    kbm_setup();
    kbuddy_malloc_flush_caches();
    CHECK(kbm_stats().heap.allocated < ((size_t)8 << 20));
    CHECK_EQ(KBUDDY_MALLOC_MAG_MIN_BLOCKS, 2);
    size_t held = cache_after_free_64_pages();
    CHECK(held >= 2 && held <= 4);
    CHECK_STATS_ADD_UP();
}

TEST(threads_each_running_w3_keep_their_blocks_intact) {
    kbm_setup();
    enum { T = 4 };
    kbuddy_malloc_stats before = kbm_stats();
    pthread_t t[T];
    w3_arg a[T];
    for (unsigned i = 0; i < T; i++) {
        a[i] = (w3_arg){i, 0};
        REQUIRE(pthread_create(&t[i], NULL, w3_thread, &a[i]) == 0);
    }
    for (unsigned i = 0; i < T; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(a[i].errors, 0);
    }
    kbuddy_malloc_stats after = kbm_stats();
    CHECK_EQ(after.live_blocks, before.live_blocks);
    CHECK_EQ(after.caches, before.caches); /* each thread's cache went at its exit */
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

/* --- Producer-consumer: blocks freed by other threads ---------------------- */

enum { QCAP = 1024, PER_PRODUCER = 100000 };

typedef struct queue {
    pthread_mutex_t mu;
    pthread_cond_t nonempty, nonfull;
    unsigned char *item[QCAP];
    size_t len[QCAP];
    size_t head, count;
    unsigned producers_left;
} queue;

static queue q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
                  {0}, {0}, 0, 0, 0};

static void *producer(void *varg) {
    uint64_t seed = 7 + (uintptr_t)varg;
    for (unsigned i = 0; i < PER_PRODUCER; i++) {
        size_t n = 1 + xorshift(&seed) % (i % 64 ? 2048 : 20000);
        unsigned char *p = kbm_malloc(n);
        if (!p)
            abort();
        stamp(p, n, (uint64_t)(uintptr_t)p);
        pthread_mutex_lock(&q.mu);
        while (q.count == QCAP)
            pthread_cond_wait(&q.nonfull, &q.mu);
        size_t at = (q.head + q.count++) % QCAP;
        q.item[at] = p;
        q.len[at] = n;
        pthread_cond_signal(&q.nonempty);
        pthread_mutex_unlock(&q.mu);
    }
    pthread_mutex_lock(&q.mu);
    q.producers_left--;
    pthread_cond_broadcast(&q.nonempty);
    pthread_mutex_unlock(&q.mu);
    return NULL;
}

static void *consumer(void *varg) {
    size_t *errors = varg;
    for (;;) {
        pthread_mutex_lock(&q.mu);
        while (q.count == 0 && q.producers_left)
            pthread_cond_wait(&q.nonempty, &q.mu);
        if (q.count == 0) {
            pthread_mutex_unlock(&q.mu);
            return NULL;
        }
        unsigned char *p = q.item[q.head];
        size_t n = q.len[q.head];
        q.head = (q.head + 1) % QCAP;
        q.count--;
        pthread_cond_signal(&q.nonfull);
        pthread_mutex_unlock(&q.mu);
        *errors += !stamped(p, n, (uint64_t)(uintptr_t)p);
        kbm_free(p);
    }
}

TEST(blocks_freed_by_other_threads_are_recycled_correctly) {
    kbm_setup();
    enum { P = 2, C = 2 };
    kbuddy_malloc_stats before = kbm_stats();
    q.producers_left = P;
    pthread_t tp[P], tc[C];
    size_t errors[C] = {0};
    for (uintptr_t i = 0; i < C; i++)
        REQUIRE(pthread_create(&tc[i], NULL, consumer, &errors[i]) == 0);
    for (uintptr_t i = 0; i < P; i++)
        REQUIRE(pthread_create(&tp[i], NULL, producer, (void *)i) == 0);
    for (unsigned i = 0; i < P; i++)
        pthread_join(tp[i], NULL);
    for (unsigned i = 0; i < C; i++) {
        pthread_join(tc[i], NULL);
        CHECK_EQ(errors[i], 0);
    }
    kbuddy_malloc_stats after = kbm_stats();
    CHECK_EQ(after.live_blocks, before.live_blocks);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

/* --- Racing double frees ---------------------------------------------------- */

enum { ROUNDS = 3000 };

typedef struct race {
    pthread_barrier_t start, done;
    void *_Atomic ptr;
} race;

static void *racer(void *varg) {
    race *r = varg;
    for (unsigned i = 0; i < ROUNDS; i++) {
        pthread_barrier_wait(&r->start);
        kbm_free(atomic_load(&r->ptr));
        pthread_barrier_wait(&r->done);
    }
    return NULL;
}

TEST(racing_double_frees_are_caught_exactly_once) {
    kbm_setup();
    enum { T = 3 };
    race r;
    pthread_barrier_init(&r.start, NULL, T + 1);
    pthread_barrier_init(&r.done, NULL, T + 1);
    pthread_t t[T];
    for (unsigned i = 0; i < T; i++)
        REQUIRE(pthread_create(&t[i], NULL, racer, &r) == 0);
    size_t reports = 0;
    for (unsigned i = 0; i < ROUNDS; i++) {
        void *p = kbm_malloc(i % 4 ? 48 + i % 2000 : 9000 + i);
        if (!p)
            abort();
        atomic_store(&r.ptr, p);
        atomic_store(&kbm_bad_count, 0);
        pthread_barrier_wait(&r.start);
        pthread_barrier_wait(&r.done);
        /* T threads freed p: one succeeded, T - 1 were refused. */
        reports += atomic_load(&kbm_bad_count) != T - 1;
    }
    for (unsigned i = 0; i < T; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&r.start);
    pthread_barrier_destroy(&r.done);
    CHECK_EQ(reports, 0);
    atomic_store(&kbm_bad_count, 0);
    /* Nothing was freed twice: a round of allocations gets distinct blocks. */
    enum { N = 2000 };
    static unsigned char *p[N];
    size_t bad = 0;
    for (unsigned i = 0; i < N; i++) {
        p[i] = kbm_malloc(48 + i % 2000);
        stamp(p[i], 48 + i % 2000, i);
    }
    for (unsigned i = 0; i < N; i++) {
        bad += !stamped(p[i], 48 + i % 2000, i);
        kbm_free(p[i]);
    }
    CHECK_EQ(bad, 0);
    CHECK_STATS_ADD_UP();
}

/* --- Thread churn ------------------------------------------------------------ */

static void *short_lived(void *varg) {
    (void)varg;
    void *p[100];
    for (unsigned i = 0; i < 100; i++)
        p[i] = kbm_malloc(16 + i * 40);
    for (unsigned i = 0; i < 100; i += 2)
        kbm_free(p[i]);
    return p[1]; /* the odd ones outlive the thread */
}

TEST(exiting_threads_give_their_caches_back) {
    kbm_setup();
    kbuddy_malloc_stats before = kbm_stats();
    for (unsigned round = 0; round < 50; round++) {
        pthread_t t[4];
        for (unsigned i = 0; i < 4; i++)
            REQUIRE(pthread_create(&t[i], NULL, short_lived, NULL) == 0);
        for (unsigned i = 0; i < 4; i++) {
            void *kept;
            pthread_join(t[i], &kept);
            CHECK_EQ(kbm_malloc_usable_size(kept), 64); /* 56 bytes, class 64 */
        }
    }
    kbuddy_malloc_stats after = kbm_stats();
    CHECK_EQ(after.caches, before.caches);
    CHECK_EQ(after.live_blocks, before.live_blocks + 50 * 4 * 50);
    CHECK(after.cached_blocks <= before.cached_blocks + 64 * 64); /* the depot's bound */
    CHECK_STATS_ADD_UP();
}

KBTEST_MAIN()
