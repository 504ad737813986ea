/*
 * fork from a multi-threaded process (hosted build: one cache per thread,
 * kbuddy_hosted_init's fork handlers). In every child the caches of the
 * threads fork did not copy are gone, kbuddy_malloc_check is OK, the
 * statistics add up, and the child allocates normally, in its main thread
 * and in a new one. Each child checks itself and exits with the number of
 * failed checks; the parent counts the children that failed.
 */
#define _GNU_SOURCE /* pthread barriers */
#include "kbm_setup.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif
/* Children per run: a sanitizer's fork copies its shadow memory's page
 * tables and takes 20 to 50 times longer. */
#define CHILDREN (UNDER_TSAN || UNDER_ASAN ? 40 : 300)

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Allocate blocks of every kind (small of many classes, aligned, large),
 * fill and verify them, free them: 0 if all went well. */
static int exercise(uint64_t seed) {
    enum { N = 600 };
    static unsigned char *blk[N];
    static size_t len[N];
    int bad = 0;
    for (size_t i = 0; i < N; i++) {
        len[i] = 1 + xorshift(&seed) % (i % 50 ? 4096 : 300000);
        blk[i] = i % 7 ? kbm_malloc(len[i]) : kbm_aligned_alloc(256, len[i]);
        if (!blk[i])
            return 1;
        memset(blk[i], (int)(i & 0xff), len[i]);
    }
    for (size_t i = 0; i < N; i++) {
        for (size_t j = 0; j < len[i]; j += 61)
            bad |= blk[i][j] != (unsigned char)(i & 0xff);
        bad |= blk[i][len[i] - 1] != (unsigned char)(i & 0xff);
        if (i % 3)
            kbm_free(blk[i]);
        else
            kbm_free_sized(blk[i], len[i]);
    }
    return bad;
}

static void *exercise_thread(void *arg) {
    return (void *)(uintptr_t)exercise((uint64_t)(uintptr_t)arg);
}

/* What a child checks right after fork: the copy is whole, and the caches
 * of the threads not copied are gone (the calling thread's, at most, is
 * left); then it allocates, in this thread and (but under TSan, which
 * forbids threads after a multi-threaded fork) in a new one, and gives
 * back its cache: nothing is cached anywhere. Returns failed checks. */
static int child_checks(uint64_t seed) {
    CHECK_STATS_ADD_UP();
    kbuddy_malloc_stats s = kbm_stats();
    CHECK(s.caches <= 1);
    CHECK_EQ(exercise(seed), 0);
    if (!UNDER_TSAN) {
        pthread_t t;
        void *res = (void *)1;
        CHECK(pthread_create(&t, NULL, exercise_thread, (void *)(uintptr_t)(seed + 1)) == 0 &&
              pthread_join(t, &res) == 0 && res == NULL);
    }
    CHECK_STATS_ADD_UP();
    kbuddy_malloc_flush_caches();
    s = kbm_stats();
    CHECK_EQ(s.cached_blocks, 0);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    return kbtest_failures;
}

/* Fork; the child runs child_checks and exits with its failures. Returns
 * the child's failures (or 100 for a child that died or hung). */
static int fork_and_check(uint64_t seed, kbuddy_malloc_stats *parent_at_fork) {
    kbuddy_malloc_stats before = kbm_stats();
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        int failures = kbtest_failures;
        if (parent_at_fork) { /* the parent's other threads are parked: exact */
            kbuddy_malloc_stats s = kbm_stats();
            CHECK_EQ(s.live_blocks, before.live_blocks);
            CHECK_EQ(s.live_bytes, before.live_bytes);
            CHECK(s.cached_blocks < before.cached_blocks);
        }
        int f = child_checks(seed) - failures;
        _exit(f > 99 ? 99 : f);
    }
    if (parent_at_fork)
        *parent_at_fork = before;
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return 100;
    return WEXITSTATUS(st);
}

/* --- threads parked, their caches full ------------------------------------ */

static pthread_barrier_t g_parked, g_release;

/* Fill this thread's cache (blocks of many classes freed after use, a few
 * kept live), then wait while the main thread forks. */
static void *parker(void *arg) {
    uint64_t seed = 7 + (uintptr_t)arg;
    void *keep[32], *p[200];
    for (int i = 0; i < 32; i++)
        keep[i] = kbm_malloc(1 + xorshift(&seed) % 4096);
    for (int i = 0; i < 200; i++)
        p[i] = kbm_malloc(1 + xorshift(&seed) % 4096);
    for (int i = 0; i < 200; i++)
        kbm_free(p[i]);
    pthread_barrier_wait(&g_parked);
    pthread_barrier_wait(&g_release);
    for (int i = 0; i < 32; i++)
        kbm_free(keep[i]);
    return NULL;
}

TEST(fork_child_gives_back_the_caches_of_threads_not_copied) {
    kbm_setup();
    enum { T = 3 };
    pthread_t t[T];
    REQUIRE(pthread_barrier_init(&g_parked, NULL, T + 1) == 0);
    REQUIRE(pthread_barrier_init(&g_release, NULL, T + 1) == 0);
    for (uintptr_t i = 0; i < T; i++)
        REQUIRE(pthread_create(&t[i], NULL, parker, (void *)i) == 0);
    pthread_barrier_wait(&g_parked);
    CHECK(kbm_stats().caches >= T);
    kbuddy_malloc_stats at_fork;
    CHECK_EQ(fork_and_check(1, &at_fork), 0);
    CHECK(at_fork.cached_blocks > 0);
    pthread_barrier_wait(&g_release);
    for (int i = 0; i < T; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&g_parked);
    pthread_barrier_destroy(&g_release);
    CHECK_STATS_ADD_UP();
}

/* --- forks while threads allocate ----------------------------------------- */

static _Atomic int g_stop;

/* Churners that have started: the tests fork only once every churner is
 * running its loop. A thread's start is not fork-safe under ASan: its
 * runtime allocates and frees in the thread's set-up (pthread_getattr_np),
 * and a fork then leaves ASan's allocator lock held in the child, whose
 * own new thread hangs there (seen under load: about one child in 20
 * runs, killed by the alarm). The churners' loops call only kbm. */
static _Atomic int g_started;

static void wait_started(int n) {
    while (atomic_load(&g_started) < n)
        usleep(100);
}

/* Malloc, free, realloc of small and large blocks, freed by the thread that
 * allocated them; `cacheless` threads first give their cache up
 * (kbuddy_malloc_thread_exit), so that they work through the lock, as a
 * thread does in its exit destructors. */
static void *churner(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    bool cacheless = id == 0;
    if (cacheless)
        kbuddy_malloc_thread_exit();
    atomic_fetch_add(&g_started, 1);
    uint64_t seed = 99 + id;
    unsigned char *slot[128] = {0};
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        uint64_t x = xorshift(&seed);
        size_t i = x % 128, n = 1 + (x >> 8) % 3000;
        if ((x >> 40) % 32 == 0)
            n += (size_t)64 << 10; /* now and then a large one */
        if (slot[i] && (x >> 50) % 4 == 0) {
            unsigned char *q = kbm_realloc(slot[i], n);
            if (q)
                slot[i] = q;
        } else {
            kbm_free(slot[i]);
            slot[i] = kbm_malloc(n);
        }
        if (slot[i])
            slot[i][0] = (unsigned char)i;
    }
    for (size_t i = 0; i < 128; i++)
        kbm_free(slot[i]);
    return NULL;
}

TEST(forks_while_threads_allocate_leave_whole_children) {
    kbm_setup();
    enum { T = 3 };
    pthread_t t[T];
    atomic_store(&g_stop, 0);
    atomic_store(&g_started, 0);
    for (uintptr_t i = 0; i < T; i++)
        REQUIRE(pthread_create(&t[i], NULL, churner, (void *)i) == 0);
    wait_started(T);
    int bad = 0;
    for (int c = 0; c < CHILDREN; c++) {
        usleep(500); /* let the threads get going between forks */
        bad += fork_and_check((uint64_t)c + 11, NULL) != 0;
    }
    atomic_store(&g_stop, 1);
    for (int i = 0; i < T; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(bad, 0);
    CHECK_STATS_ADD_UP();
}

/* The only other thread has given its cache up (as in its exit
 * destructors): no other cache exists, so the child skips its sweep; this
 * thread's frees must then never be caught half done (their tag changes
 * under the lock). */
TEST(forks_while_a_cacheless_thread_frees_leave_whole_children) {
    kbm_setup();
    enum { FORKS = CHILDREN / 2 };
    kbm_free(kbm_malloc(64)); /* this thread has a cache; churner 0 has none */
    atomic_store(&g_stop, 0);
    atomic_store(&g_started, 0);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, churner, (void *)(uintptr_t)0) == 0);
    wait_started(1);
    int bad = 0;
    for (int c = 0; c < FORKS; c++) {
        usleep(500);
        CHECK(kbm_stats().caches == 1);
        bad += fork_and_check((uint64_t)c + 5, NULL) != 0;
    }
    atomic_store(&g_stop, 1);
    pthread_join(t, NULL);
    CHECK_EQ(bad, 0);
    CHECK_STATS_ADD_UP();
}

KBTEST_MAIN()
