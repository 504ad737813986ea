/*
 * White-box: realloc in place rewrites the size a block keeps (two tag
 * bytes, kbm_tags.h) with no lock held, so another CPU's
 * kbuddy_malloc_check, or the child of a fork that caught the CPU there
 * (the block stays LIVE in the child: kbm_fork.h), sees one byte new and
 * the other old. The layer is compiled into this file (kernel
 * configuration; once more with tags packed four to a word) with a test
 * point between the two stores, where the check runs: for every pair of
 * sizes that a block of several classes takes in place, the check finds
 * nothing wrong there, and the sizes kept before and after are exact; and
 * a thread parked there while another forks leaves a child whose check
 * passes. (Written low byte first, 90 -> 63 in a 96-byte block showed 127,
 * and a fork child of the threaded fork test reported the heap corrupt.)
 */
#define _GNU_SOURCE /* pthread barriers */
static void test_point_size_change(void);
#define KBM_TEST_POINT(name) test_point_##name()
#include "../../malloc/kbuddy_malloc.c"

#include "kbtest.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static _Alignas(4096) unsigned char region[256 << 10];
static size_t g_points, g_bad;
static const char *g_why;
static bool g_park; /* the next stop parks the thread (the fork test) */
static pthread_barrier_t g_parked, g_resume;

static void test_point_size_change(void) {
    if (g_park) {
        g_park = false;
        pthread_barrier_wait(&g_parked);
        pthread_barrier_wait(&g_resume);
        return;
    }
    g_points++;
    if (kbuddy_malloc_check() != KBUDDY_OK) {
        g_bad++;
        g_why = kbuddy_malloc_check_why(NULL);
    }
}

static void setup(void) {
    static int done;
    if (!done) {
        done = 1;
        CHECK_STATUS(kbuddy_malloc_add_region(region, sizeof region), KBUDDY_OK);
    }
}

/* The size block p (class c) keeps, read as the sized free does. */
static size_t kept(void *p) {
    const mregion *hint = &g_no_region;
    tagref t;
    if (locate(&hint, p, &t) != KBUDDY_OK)
        return SIZE_MAX;
    return size_get(t, tag_get(t) & TAG_CLASS);
}

/* The i-th of n sizes spread over [lo, hi], both ends among them. */
static size_t nth_size(size_t lo, size_t hi, size_t i, size_t n) {
    return n > 1 ? lo + (hi - lo) * i / (n - 1) : lo;
}

/* Pairs of sizes (from, to): a block of `bytes` asked for with `from`
 * (sizes of its class), taken in place to `to` (more than half of it, at
 * most all; 4096 keeps 0): every pair of up to 32 sizes spread over each
 * range. */
static void all_pairs(size_t bytes) {
    unsigned c = class_of_size(bytes);
    size_t from_lo = bytes;
    while (from_lo > 1 && class_of_size(from_lo - 1) == c)
        from_lo--;
    size_t to_lo = bytes / 2 + 1;
    size_t nf = bytes - from_lo + 1 < 32 ? bytes - from_lo + 1 : 32;
    size_t nt = bytes - to_lo + 1 < 32 ? bytes - to_lo + 1 : 32;
    for (size_t i = 0; i < nf; i++) {
        for (size_t j = 0; j < nt; j++) {
            size_t from = nth_size(from_lo, bytes, i, nf), to = nth_size(to_lo, bytes, j, nt);
            unsigned char *p = kbm_malloc(from);
            REQUIRE(p != NULL);
            CHECK_EQ(kept(p), from & SIZE_MASK);
            g_points = g_bad = 0;
            REQUIRE(kbm_realloc(p, to) == p);
            CHECK_EQ(kept(p), to & SIZE_MASK);
            CHECK_EQ(g_points, 1);
            if (g_bad) {
                KBTEST_FAIL("%zu-byte block, realloc %zu -> %zu: corrupt between the stores (%s)",
                            bytes, from, to, g_why ? g_why : "?");
                g_bad = 0;
            }
            kbm_free_sized(p, to);
        }
    }
}

TEST(realloc_in_place_is_whole_between_the_size_stores) {
    setup();
    /* 3 units (the first class that keeps a size), 5, 12, 40, 128 (4096) */
    static const size_t bytes[] = {3 * UNIT, 5 * UNIT, 12 * UNIT, 40 * UNIT, 4096};
    for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++) {
        CHECK(bytes[i] <= CACHE_MAX && class_bytes(class_of_size(bytes[i])) == bytes[i] &&
              keeps_size(class_of_size(bytes[i])));
        all_pairs(bytes[i]);
    }
    kbuddy_malloc_flush_caches();
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
}

static unsigned char *g_block;

static void *realloc_90_to_63(void *arg) {
    (void)arg;
    return kbm_realloc(g_block, 63);
}

/* As in the threaded fork test: another thread is in realloc in place,
 * between the two stores, when this one forks; the child, which has the
 * block LIVE as found, checks the heap and says whether it is whole. */
TEST(a_fork_between_the_size_stores_leaves_a_whole_child) {
    setup();
    g_block = kbm_malloc(90); /* 96 bytes: 90 -> 63 read 127 when written low byte first */
    REQUIRE(g_block != NULL);
    REQUIRE(pthread_barrier_init(&g_parked, NULL, 2) == 0);
    REQUIRE(pthread_barrier_init(&g_resume, NULL, 2) == 0);
    g_park = true;
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, realloc_90_to_63, NULL) == 0);
    pthread_barrier_wait(&g_parked);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        size_t k = kept(g_block);
        _exit(kbuddy_malloc_check() == KBUDDY_OK && k <= 96 ? 0 : 1);
    }
    int st = -1;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    pthread_barrier_wait(&g_resume);
    void *res = NULL;
    CHECK(pthread_join(t, &res) == 0 && res == g_block);
    CHECK_EQ(kept(g_block), 63);
    kbm_free_sized(g_block, 63);
    pthread_barrier_destroy(&g_parked);
    pthread_barrier_destroy(&g_resume);
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
}

KBTEST_MAIN()
