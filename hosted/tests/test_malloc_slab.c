/*
 * Slab objects of the global allocator (KBUDDY_MALLOC_SLABS, the hosted
 * build): the sub-unit classes' objects are dense, every bad free of one is
 * refused with nothing changed, sized frees take exactly their class's
 * sizes, the statistics and the check stay exact (and the check notices a
 * damaged slab header), a fork child gets back the objects of threads it
 * did not copy, and trim gives empty slabs back.
 */
#define _GNU_SOURCE /* pthread barriers */
#include "kbm_setup.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#if !KBUDDY_MALLOC_SLABS
#error "this test needs the hosted build's KBUDDY_MALLOC_SLABS=1"
#endif

/* The geometry kbm_slab.h documents for class 112: 4 KiB slabs, a 48-byte
 * header, 36 objects; the header's free map at bytes 16..31. */
#define OBJ 112u
#define SLAB 4096u
#define HDR 48u
#define NOBJ ((SLAB - HDR) / OBJ)

/* The figures a refused call must leave as they were. */
typedef struct figures {
    size_t live_blocks, live_bytes, cached_blocks, cached_bytes, internal_blocks, internal_bytes,
        slabs, slab_objects, allocated;
} figures;

static figures figures_now(void) {
    kbuddy_malloc_stats s = kbm_stats();
    return (figures){s.live_blocks,     s.live_bytes, s.cached_blocks,
                     s.cached_bytes,    s.internal_blocks, s.internal_bytes,
                     s.slabs,           s.slab_objects, s.heap.allocated};
}

static bool figures_same(figures a, figures b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Every refusal: reported once with this status, nothing changed. */
#define CHECK_REFUSED(call, ptr, status, func)                                                     \
    do {                                                                                           \
        figures f0_ = figures_now();                                                               \
        call;                                                                                      \
        CHECK_REPORTED(ptr, status, func);                                                         \
        CHECK(figures_same(f0_, figures_now()));                                                   \
        CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);                                            \
    } while (0)

TEST(small_requests_take_sub_unit_classes_from_dense_slabs) {
    kbm_setup();
    kbuddy_malloc_flush_caches();
    figures f0 = figures_now();
    enum { N = 200 };
    static unsigned char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = kbm_malloc(100);
        REQUIRE(p[i] != NULL);
        CHECK_EQ((uintptr_t)p[i] % 16, 0);
        CHECK_EQ(kbm_malloc_usable_size(p[i]), OBJ);
        /* an object's start, OBJ apart from the slab's first */
        CHECK_EQ((((uintptr_t)p[i] & (SLAB - 1)) - HDR) % OBJ, 0);
        memset(p[i], i, OBJ);
    }
    figures f1 = figures_now();
    CHECK_EQ(f1.live_blocks, f0.live_blocks + N);
    CHECK_EQ(f1.live_bytes, f0.live_bytes + N * OBJ);
    CHECK(f1.slabs >= f0.slabs + (N + NOBJ - 1) / NOBJ);
    /* dense: NOBJ objects per 4 KiB slab (113.8 bytes each), for the N
     * live ones and the at most 64 of the magazine filled for them */
    CHECK(f1.slabs - f0.slabs <= (N + 64 + NOBJ - 1) / NOBJ);
    CHECK_EQ(f1.slab_objects - f0.slab_objects, N + (f1.cached_blocks - f0.cached_blocks));
    for (int i = 0; i < N; i++) {
        CHECK(p[i][0] == (unsigned char)i && p[i][OBJ - 1] == (unsigned char)i);
        kbm_free(p[i]);
    }
    CHECK_EQ(figures_now().live_bytes, f0.live_bytes);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(every_bad_free_of_a_slab_object_is_refused_and_changes_nothing) {
    kbm_setup();
    /* r, the next object of their slab in whichever order a magazine hands
     * them out, stays live, so that the slab stays one when the others go */
    unsigned char *p = kbm_malloc(100), *q = kbm_malloc(100), *r = kbm_malloc(100);
    REQUIRE(p && q && r);
    unsigned char *base = p - ((uintptr_t)p & (SLAB - 1));
    unsigned char *past = base + HDR + NOBJ * OBJ; /* after the last object */
    /* interior: inside the object, inside the header, the slab's start,
     * past the last object; not even 16-byte aligned */
    CHECK_REFUSED(kbm_free(p + 16), p + 16, KBUDDY_EBADPTR, "free");
    CHECK_REFUSED(kbm_free(p + 1), p + 1, KBUDDY_EBADPTR, "free");
    CHECK_REFUSED(kbm_free(base), base, KBUDDY_EBADPTR, "free");
    CHECK_REFUSED(kbm_free(base + 16), base + 16, KBUDDY_EBADPTR, "free");
    CHECK_REFUSED(kbm_free(past), past, KBUDDY_EBADPTR, "free");
    CHECK_EQ(kbm_malloc_usable_size(p + 16), 0);
    CHECK_EQ(kbm_malloc_usable_size(past), 0);
    /* wrong sizes: another class's, one byte too many */
    CHECK_REFUSED(kbm_free_sized(p, 96), p, KBUDDY_ESIZE, "free_sized");
    CHECK_REFUSED(kbm_free_sized(p, 113), p, KBUDDY_ESIZE, "free_sized");
    CHECK_REFUSED(kbm_free_sized(p, 0), p, KBUDDY_ESIZE, "free_sized");
    CHECK_REFUSED(kbm_free_aligned_sized(p, 3, 100), p, KBUDDY_ESIZE, "free_aligned_sized");
    if ((uintptr_t)p % 64)
        CHECK_REFUSED(kbm_free_aligned_sized(p, 64, 100), p, KBUDDY_ESIZE, "free_aligned_sized");
    /* 16 bytes into a block (whose unit tag is a live block's): not a slab
     * object's start either */
    unsigned char *b = kbm_malloc(128);
    REQUIRE(b != NULL);
    CHECK_REFUSED(kbm_free(b + 16), b + 16, KBUDDY_EBADPTR, "free");
    CHECK_REFUSED(kbm_free_sized(b + 16, 112), b + 16, KBUDDY_EBADPTR, "free_sized");
    CHECK_EQ(kbm_malloc_usable_size(b + 16), 0);
    kbm_free_sized(b, 128);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    /* realloc of an interior pointer */
    CHECK_REFUSED(CHECK(kbm_realloc(p + 16, 50) == NULL), p + 16, KBUDDY_EBADPTR, "realloc");
    /* double: while in this thread's magazine, then back in its slab */
    kbm_free_sized(p, 97);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_REFUSED(kbm_free(p), p, KBUDDY_EDOUBLEFREE, "free");
    CHECK_REFUSED(kbm_free_sized(p, 100), p, KBUDDY_EDOUBLEFREE, "free_sized");
    CHECK_REFUSED(CHECK(kbm_realloc(p, 10) == NULL), p, KBUDDY_EDOUBLEFREE, "realloc");
    CHECK_EQ(kbm_malloc_usable_size(p), 0);
    kbuddy_malloc_flush_caches();
    CHECK_REFUSED(kbm_free(p), p, KBUDDY_EDOUBLEFREE, "free");
    /* q is still live and freed with any size of its class */
    CHECK_EQ(kbm_malloc_usable_size(q), OBJ);
    kbm_free_aligned_sized(q, 16, 112);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    /* and an object no one ever held: free in its slab (q's, after q) */
    kbuddy_malloc_flush_caches();
    CHECK_REFUSED(kbm_free(q), q, KBUDDY_EDOUBLEFREE, "free");
    kbm_free(r);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(a_fill_is_handed_out_in_ascending_order) {
    /* A fill is stored highest address first and a magazine hands out its
     * top first, so successive requests get ascending addresses (as
     * memory carved from a heap's top is), which the program then walks
     * forwards. Objects next to each other in a slab: far more steps of
     * +OBJ than of -OBJ. */
    kbm_setup();
    enum { M = 400 };
    unsigned char *v[M];
    size_t up = 0, down = 0;
    for (int i = 0; i < M; i++) {
        v[i] = kbm_malloc(100);
        REQUIRE(v[i] != NULL);
        if (i && v[i] == v[i - 1] + OBJ)
            up++;
        if (i && v[i] + OBJ == v[i - 1])
            down++;
    }
    CHECK(up >= M / 2);
    CHECK(down <= M / 20);
    for (int i = 0; i < M; i++)
        kbm_free(v[i]);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(sized_frees_of_slab_objects_take_exactly_their_class) {
    kbm_setup();
    for (size_t n = 33; n <= 496; n++) {
        void *p = kbm_malloc(n);
        REQUIRE(p != NULL);
        size_t u = kbm_malloc_usable_size(p);
        size_t g = (n + 15) / 16; /* odd: a slab class; even: a block class */
        CHECK_EQ(u, g % 2 ? g * 16 : (n + 31) / 32 * 32);
        if (u % 32 == 16) { /* a slab class: (u - 16, u] */
            kbm_free_sized(p, u - 16);
            CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
            kbm_free_sized(p, u + 1);
            CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
            kbm_free_sized(p, u - 15 + n % 16);
        } else {
            kbm_free_sized(p, n);
        }
        CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    }
    CHECK_STATS_ADD_UP();
}

TEST(realloc_keeps_a_slab_object_only_within_its_class) {
    kbm_setup();
    unsigned char *p = kbm_malloc(100);
    REQUIRE(p != NULL);
    memset(p, 9, 100);
    CHECK(kbm_realloc(p, 112) == p);
    CHECK(kbm_realloc(p, 97) == p);
    unsigned char *q = kbm_realloc(p, 90); /* class 96, a block */
    REQUIRE(q != NULL);
    CHECK(q != p);
    CHECK_EQ(kbm_malloc_usable_size(q), 96);
    CHECK(q[0] == 9 && q[89] == 9);
    CHECK_EQ(kbm_malloc_usable_size(p), 0);
    p = kbm_realloc(q, 200); /* to the slab class 208 */
    REQUIRE(p != NULL);
    CHECK_EQ(kbm_malloc_usable_size(p), 208);
    CHECK(p[0] == 9 && p[89] == 9);
    kbm_free_sized(p, 200);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

/* --- racing double frees -------------------------------------------------- */

enum { RACE_N = 4000 };
static unsigned char *g_race[RACE_N];
static pthread_barrier_t g_race_start;

static void *race_free(void *arg) {
    (void)arg;
    pthread_barrier_wait(&g_race_start);
    for (int i = 0; i < RACE_N; i++)
        kbm_free(g_race[i]);
    return NULL;
}

TEST(racing_double_frees_of_slab_objects_are_caught_exactly_once) {
    kbm_setup();
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < RACE_N; i++) {
            g_race[i] = kbm_malloc(48 + (size_t)(i % 15) * 32);
            REQUIRE(g_race[i] != NULL);
        }
        figures f0 = figures_now();
        REQUIRE(pthread_barrier_init(&g_race_start, NULL, 2) == 0);
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            REQUIRE(pthread_create(&t[i], NULL, race_free, NULL) == 0);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&g_race_start);
        CHECK_EQ(atomic_load(&kbm_bad_count), RACE_N);
        atomic_store(&kbm_bad_count, 0);
        CHECK_EQ(figures_now().live_blocks, f0.live_blocks - RACE_N);
        CHECK_STATS_ADD_UP();
    }
}

/* --- the check ------------------------------------------------------------ */

TEST(check_detects_a_damaged_slab_header) {
    kbm_setup();
    unsigned char *p = kbm_malloc(100);
    REQUIRE(p != NULL);
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
    unsigned char *hdr = p - ((uintptr_t)p & (SLAB - 1)); /* the layer's, damaged on purpose */
    /* the free map: one bit flipped (an object both free and out) */
    unsigned bit = (unsigned)((((uintptr_t)p & (SLAB - 1)) - HDR) / OBJ);
    hdr[16 + bit / 8] ^= (unsigned char)(1u << (bit % 8));
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_ECORRUPT);
    hdr[16 + bit / 8] ^= (unsigned char)(1u << (bit % 8));
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
    /* the class byte */
    hdr[34] ^= 1;
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_ECORRUPT);
    hdr[34] ^= 1;
    /* the count of free objects */
    hdr[32] ^= 2;
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_ECORRUPT);
    hdr[32] ^= 2;
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
    kbm_free(p);
    CHECK_STATS_ADD_UP();
}

/* --- fork ----------------------------------------------------------------- */

static pthread_barrier_t g_parked, g_release;

/* Fill this thread's magazines with slab objects (all classes), keep a
 * few live, wait while the main thread forks. */
static void *parker(void *arg) {
    (void)arg;
    void *keep[15], *p[600];
    for (int i = 0; i < 15; i++)
        keep[i] = kbm_malloc(40 + (size_t)i * 32);
    for (int i = 0; i < 600; i++)
        p[i] = kbm_malloc(40 + (size_t)(i % 15) * 32);
    for (int i = 0; i < 600; i++)
        kbm_free(p[i]);
    pthread_barrier_wait(&g_parked);
    pthread_barrier_wait(&g_release);
    for (int i = 0; i < 15; i++)
        kbm_free(keep[i]);
    return NULL;
}

TEST(fork_child_puts_the_objects_of_threads_not_copied_back_into_their_slabs) {
    kbm_setup();
    kbuddy_malloc_flush_caches();
    pthread_t t;
    REQUIRE(pthread_barrier_init(&g_parked, NULL, 2) == 0);
    REQUIRE(pthread_barrier_init(&g_release, NULL, 2) == 0);
    REQUIRE(pthread_create(&t, NULL, parker, NULL) == 0);
    pthread_barrier_wait(&g_parked);
    kbuddy_malloc_stats before = kbm_stats();
    CHECK(before.cached_blocks > before.depot_blocks); /* the parker's magazines hold some */
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        int f0 = kbtest_failures;
        kbuddy_malloc_stats s = kbm_stats();
        CHECK_EQ(s.live_blocks, before.live_blocks);
        CHECK_EQ(s.live_bytes, before.live_bytes);
        /* the parker's magazines went back (the depot's stayed) */
        CHECK(s.cached_blocks < before.cached_blocks);
        CHECK_EQ(before.slab_objects - s.slab_objects, before.cached_blocks - s.cached_blocks);
        CHECK_STATS_ADD_UP();
        void *x = kbm_malloc(100);
        CHECK(x != NULL);
        kbm_free(x);
        kbuddy_malloc_flush_caches();
        CHECK_EQ(kbm_stats().cached_blocks, 0);
        CHECK_STATS_ADD_UP();
        int f = kbtest_failures - f0;
        _exit(f > 99 ? 99 : f);
    }
    int st = 0;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    pthread_barrier_wait(&g_release);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&g_parked);
    pthread_barrier_destroy(&g_release);
    CHECK_STATS_ADD_UP();
}

/* --- trim ----------------------------------------------------------------- */

TEST(trim_gives_empty_slabs_back) {
    kbm_setup();
    kbuddy_malloc_flush_caches();
    figures f0 = figures_now();
    enum { N = 20000 };
    static void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = kbm_malloc(100);
        REQUIRE(p[i] != NULL);
    }
    figures f1 = figures_now();
    CHECK(f1.slabs >= f0.slabs + N / NOBJ);
    CHECK(f1.allocated >= f0.allocated + (size_t)N / NOBJ * SLAB);
    for (int i = 0; i < N; i++)
        kbm_free(p[i]);
    (void)kbuddy_malloc_trim(0);
    figures f2 = figures_now();
    CHECK(f2.slabs <= f0.slabs);
    CHECK(f2.allocated <= f0.allocated);
    CHECK_EQ(f2.live_bytes, f0.live_bytes);
    CHECK_STATS_ADD_UP();
}

KBTEST_MAIN()
