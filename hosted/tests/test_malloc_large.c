/*
 * Large blocks in mappings of their own (kbm_large.h), in the hosted
 * configuration: the hosted hooks, but with map, unmap and remap replaced
 * by test hooks that count their calls, check their arguments and fail on
 * demand. Each behaviour is proved by what the hooks saw (a mapping per
 * block, given back exactly once), by the statistics and by
 * kbuddy_malloc_check; every bad free of a mapped block is refused with
 * nothing changed (no unmap, contents intact), also when racing.
 */
#define _GNU_SOURCE
#include "kbm_setup.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)
#define THRESHOLD KBUDDY_MALLOC_MAP_THRESHOLD

/* ------------------------------------------------------------------------ */
/* Test hooks                                                                */
/* ------------------------------------------------------------------------ */

static _Atomic size_t maps, unmaps, remaps, mapped_now;
static _Atomic int fail_map, fail_remap; /* calls to fail from now on */
static _Atomic int free_in_remap;        /* free the block being remapped */
static size_t last_size, last_align, last_unmap_size;
static void *last_map, *last_unmap;
static int hook_ctx;

static void *test_map(size_t size, size_t align, void *ctx) {
    CHECK(ctx == &hook_ctx);
    CHECK(size % 4096 == 0 && align >= 4096 && (align & (align - 1)) == 0);
    atomic_fetch_add(&maps, 1);
    last_size = size;
    last_align = align;
    if (atomic_load(&fail_map) > 0) {
        atomic_fetch_sub(&fail_map, 1);
        return NULL;
    }
    size_t over = size + align;
    unsigned char *p = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    size_t head = (size_t)(-(uintptr_t)p & (align - 1));
    if (head)
        munmap(p, head);
    munmap(p + head + size, over - head - size);
    atomic_fetch_add(&mapped_now, size);
    return last_map = p + head;
}

/* The starts of the last mappings given back: a fresh mmap may land on
 * one, which the layer then takes for a double free (kbm_large.h). */
static void *recent_unmaps[16];
static unsigned recent_next;

static bool recently_unmapped(const void *p) {
    for (unsigned i = 0; i < 16; i++)
        if (recent_unmaps[i] == p)
            return true;
    return false;
}

static void test_unmap(void *start, size_t size, void *ctx) {
    CHECK(ctx == &hook_ctx);
    recent_unmaps[recent_next++ % 16] = start;
    atomic_fetch_add(&unmaps, 1);
    atomic_fetch_sub(&mapped_now, size);
    last_unmap = start;
    last_unmap_size = size;
    CHECK_EQ(munmap(start, size), 0);
}

static void *test_remap(void *start, size_t old_size, size_t new_size, void *ctx) {
    CHECK(ctx == &hook_ctx);
    atomic_fetch_add(&remaps, 1);
    if (atomic_exchange(&free_in_remap, 0)) /* as another CPU would, racing */
        kbm_free(start);
    if (atomic_load(&fail_remap) > 0) {
        atomic_fetch_sub(&fail_remap, 1);
        return NULL;
    }
    void *p = mremap(start, old_size, new_size, MREMAP_MAYMOVE);
    if (p == MAP_FAILED)
        return NULL;
    atomic_fetch_add(&mapped_now, new_size);
    atomic_fetch_sub(&mapped_now, old_size);
    return p;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void init_once(void) {
    kbuddy_malloc_hooks h;
    kbuddy_hosted_hooks(&h);
    h.bad_free = kbm_record_bad_free;
    h.map = test_map;
    h.unmap = test_unmap;
    h.remap = test_remap;
    h.map_ctx = &hook_ctx;
    h.map_threshold = THRESHOLD; /* fixed: the default one moves */
    kbuddy_hosted_init(&h);
}

static void setup(void) {
    pthread_once(&once, init_once);
    atomic_store(&kbm_bad_count, 0);
    atomic_store(&fail_map, 0);
    atomic_store(&fail_remap, 0);
}

static size_t pages(size_t n) { return (n + 4095) / 4096 * 4096; }

/* Is any page of [p, p + n) resident? */
static int any_resident(void *p, size_t n) {
    size_t np = (n + 4095) / 4096;
    unsigned char *v = calloc(np, 1); /* glibc's */
    int any = mincore(p, n, v) != 0;
    for (size_t i = 0; i < np && !any; i++)
        any = v[i] & 1;
    free(v);
    return any;
}

/* Is p inside one of the heap's regions (i.e. not a mapping of its own)? */
static int in_heap(const void *p) {
    return kbuddy_usable_size(kbuddy_global_heap(), p) != 0;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

TEST(a_block_above_the_threshold_is_a_mapping_given_back_at_free) {
    setup();
    kbuddy_malloc_stats s0 = kbm_stats();
    size_t m0 = maps, u0 = unmaps, n = 3 * MIB + 100;
    unsigned char *p = kbm_malloc(n);
    REQUIRE(p != NULL);
    CHECK_EQ(maps, m0 + 1);
    CHECK(p == last_map);
    CHECK_EQ(last_size, pages(n));
    CHECK_EQ(last_align, 4096);
    CHECK(!in_heap(p));
    CHECK_EQ(kbm_malloc_usable_size(p), pages(n));
    memset(p, 0x5a, n);
    kbuddy_malloc_stats s1 = kbm_stats();
    CHECK_EQ(s1.mapped_blocks, s0.mapped_blocks + 1);
    CHECK_EQ(s1.mapped_bytes, s0.mapped_bytes + pages(n));
    CHECK_EQ(s1.live_blocks, s0.live_blocks + 1);
    CHECK_EQ(s1.live_bytes, s0.live_bytes + pages(n));
    CHECK_EQ(s1.heap.allocations, s0.heap.allocations); /* nothing from the heap */
    CHECK_STATS_ADD_UP();
    kbm_free(p);
    CHECK_EQ(unmaps, u0 + 1);
    CHECK(last_unmap == p);
    CHECK_EQ(last_unmap_size, pages(n));
    CHECK_EQ(kbm_stats().mapped_blocks, s0.mapped_blocks);
    CHECK_EQ(kbm_stats().live_bytes, s0.live_bytes);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(the_threshold_is_exclusive_and_below_it_blocks_come_from_the_heap) {
    setup();
    size_t m0 = maps;
    void *a = kbm_malloc(THRESHOLD), *b = kbm_malloc(THRESHOLD + 1);
    REQUIRE(a && b);
    CHECK_EQ(maps, m0 + 1);
    CHECK(in_heap(a));
    CHECK(!in_heap(b));
    CHECK_EQ(last_size, THRESHOLD + 4096);
    kbm_free(a);
    kbm_free(b);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

/* The map hook fails: the heap serves the request, and errno is kept. */
TEST(a_failed_mapping_falls_back_to_the_heap) {
    setup();
    kbuddy_malloc_stats s0 = kbm_stats();
    atomic_store(&fail_map, 1);
    errno = 1234;
    size_t u0 = unmaps;
    unsigned char *p = kbm_malloc(2 * MIB);
    REQUIRE(p != NULL);
    CHECK_EQ(errno, 1234);
    CHECK(in_heap(p));
    CHECK_EQ(kbm_stats().mapped_blocks, s0.mapped_blocks);
    memset(p, 1, 2 * MIB);
    kbm_free(p);
    CHECK_EQ(unmaps, u0);
    /* calloc too, and the heap's block is cleared. */
    atomic_store(&fail_map, 1);
    p = kbm_malloc(2 * MIB);
    memset(p, 0xee, 2 * MIB);
    kbm_free(p);
    atomic_store(&fail_map, 1);
    p = kbm_calloc(2, MIB);
    REQUIRE(p != NULL);
    CHECK(in_heap(p));
    int zero = 1;
    for (size_t i = 0; i < 2 * MIB; i++)
        zero &= p[i] == 0;
    CHECK(zero);
    kbm_free(p);
    CHECK_STATS_ADD_UP();
}

/* calloc of a fresh mapping (map_zeroed) writes nothing: no page of it is
 * resident afterwards, and it reads as zero. */
TEST(calloc_of_a_fresh_mapping_touches_nothing) {
    setup();
    size_t n = 64 * MIB;
    size_t m0 = maps;
    unsigned char *p = kbm_calloc(n / 4096, 4096);
    REQUIRE(p != NULL);
    CHECK_EQ(maps, m0 + 1);
    CHECK(!any_resident(p, n));
    CHECK(p[0] == 0 && p[n / 2] == 0 && p[n - 1] == 0);
    kbm_free(p);
    errno = 0;
    CHECK(kbm_calloc(SIZE_MAX / 2, 3) == NULL); /* overflow: no hook called */
    CHECK_EQ(errno, ENOMEM);
    CHECK_EQ(maps, m0 + 1);
    CHECK_STATS_ADD_UP();
}

/* Sizes no mapping can have (rounding to pages overflows) fail cleanly. */
TEST(impossible_sizes_fail_with_enomem) {
    setup();
    size_t m0 = maps;
    errno = 0;
    CHECK(kbm_malloc(opaque(SIZE_MAX - 100)) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK_EQ(maps, m0);
    errno = 0;
    void *p = kbm_malloc(4 * MIB);
    REQUIRE(p != NULL);
    CHECK(kbm_realloc(p, opaque(SIZE_MAX - 100)) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK_EQ(kbm_malloc_usable_size(p), 4 * MIB); /* untouched */
    kbm_free(p);
    CHECK_STATS_ADD_UP();
}

TEST(big_alignments_are_asked_of_the_map_hook) {
    setup();
    void *p = kbm_aligned_alloc(4 * MIB, 3 * MIB);
    REQUIRE(p != NULL);
    CHECK_EQ(last_align, 4 * MIB);
    CHECK_EQ((uintptr_t)p % (4 * MIB), 0);
    void *q = NULL;
    CHECK_EQ(kbm_posix_memalign(&q, 2 * MIB, 5 * MIB), 0);
    REQUIRE(q != NULL);
    CHECK_EQ((uintptr_t)q % (2 * MIB), 0);
    void *r = kbm_memalign(3 * MIB, 2 * MIB); /* rounded up to 4 MiB */
    REQUIRE(r != NULL);
    CHECK_EQ((uintptr_t)r % (4 * MIB), 0);
    CHECK_STATS_ADD_UP();
    kbm_free_aligned_sized(p, 4 * MIB, 3 * MIB);
    kbm_free_aligned_sized(q, 2 * MIB, 5 * MIB);
    kbm_free_sized(r, 2 * MIB);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

/* Interior, misaligned, double, foreign, wrong size or alignment: each
 * refused, reported once with its reason, no unmap, the block intact. */
TEST(bad_frees_of_mapped_blocks_are_refused) {
    setup();
    size_t n = 8 * MIB;
    unsigned char *p = kbm_malloc(n);
    REQUIRE(p != NULL);
    for (size_t i = 0; i < n; i += 4096)
        p[i] = (unsigned char)(i >> 12);
    size_t u0 = unmaps;
    kbuddy_malloc_stats s0 = kbm_stats();
    kbm_free(p + 4096);
    CHECK_REPORTED(p + 4096, KBUDDY_EBADPTR, "free");
    kbm_free(p + 16);
    CHECK_REPORTED(p + 16, KBUDDY_EBADPTR, "free");
    kbm_free(p + n - 32);
    CHECK_REPORTED(p + n - 32, KBUDDY_EBADPTR, "free");
    kbm_free_sized(p, n + 1);
    CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
    kbm_free_sized(p, pages(n) - 1);
    CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
    kbm_free_aligned_sized(p, 64 * MIB, n); /* an alignment it does not have */
    if ((uintptr_t)p % (64 * MIB)) {
        CHECK_REPORTED(p, KBUDDY_ESIZE, "free_aligned_sized");
    } else {
        p = kbm_malloc(n); /* it did have it after all: start again */
        REQUIRE(p != NULL);
        s0 = kbm_stats();
        u0 = unmaps;
        for (size_t i = 0; i < n; i += 4096)
            p[i] = (unsigned char)(i >> 12);
    }
    kbm_free_aligned_sized(p, 3, n); /* not a power of two */
    CHECK_REPORTED(p, KBUDDY_ESIZE, "free_aligned_sized");
    CHECK(kbm_realloc(p + 8192, 100) == NULL);
    CHECK_REPORTED(p + 8192, KBUDDY_EBADPTR, "realloc");
    CHECK_EQ(kbm_malloc_usable_size(p + 4096), 0);
    /* A mapping the allocator never made, nor one that starts where one
     * of its mappings did lately. The kernel hands freed addresses out
     * again, so each such mapping is kept mapped until one is found: at
     * most 16 (the addresses remembered), where a single retry failed 2
     * of 4 loaded runs of the suite (its second mapping was recent too). */
    void *f, *recent[16];
    size_t nrecent = 0;
    for (;;) {
        f = mmap(NULL, 4 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(f != MAP_FAILED);
        if (!recently_unmapped(f))
            break;
        REQUIRE(nrecent < 16);
        recent[nrecent++] = f;
    }
    while (nrecent)
        munmap(recent[--nrecent], 4 * MIB);
    kbm_free(f);
    CHECK_REPORTED(f, KBUDDY_EFOREIGN, "free");
    CHECK_EQ(kbm_malloc_usable_size(f), 0);
    munmap(f, 4 * MIB);
    CHECK_EQ(unmaps, u0);
    kbuddy_malloc_stats s1 = kbm_stats();
    CHECK_EQ(s1.mapped_blocks, s0.mapped_blocks);
    CHECK_EQ(s1.mapped_bytes, s0.mapped_bytes);
    CHECK_EQ(s1.bad_frees, s0.bad_frees + 9);
    int intact = 1;
    for (size_t i = 0; i < n; i += 4096)
        intact &= p[i] == (unsigned char)(i >> 12);
    CHECK(intact);
    CHECK_STATS_ADD_UP();
    kbm_free_sized(p, n); /* the right size */
    CHECK_EQ(unmaps, u0 + 1);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    kbm_free(p);
    CHECK_REPORTED(p, KBUDDY_EDOUBLEFREE, "free");
    CHECK_EQ(unmaps, u0 + 1);
    CHECK_STATS_ADD_UP();
}

/* Many threads free the same mapped block at once: exactly one free
 * unmaps it, every other is reported as a double free. */
enum { RACERS = 4, ROUNDS = 200 };
static void *_Atomic race_ptr;
static pthread_barrier_t race_go, race_done;

static void *racer(void *arg) {
    (void)arg;
    for (int r = 0; r < ROUNDS; r++) {
        pthread_barrier_wait(&race_go);
        kbm_free(atomic_load(&race_ptr));
        pthread_barrier_wait(&race_done);
    }
    return NULL;
}

TEST(racing_frees_of_a_mapped_block_unmap_it_once) {
    setup();
    pthread_t t[RACERS];
    pthread_barrier_init(&race_go, NULL, RACERS + 1);
    pthread_barrier_init(&race_done, NULL, RACERS + 1);
    for (int i = 0; i < RACERS; i++)
        REQUIRE(pthread_create(&t[i], NULL, racer, NULL) == 0);
    size_t u0 = unmaps, bad0 = kbm_stats().bad_frees;
    for (int r = 0; r < ROUNDS; r++) {
        atomic_store(&race_ptr, kbm_malloc(2 * MIB));
        pthread_barrier_wait(&race_go);
        pthread_barrier_wait(&race_done);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&race_go);
    pthread_barrier_destroy(&race_done);
    CHECK_EQ(unmaps, u0 + ROUNDS);
    CHECK_EQ(kbm_stats().bad_frees, bad0 + ROUNDS * (RACERS - 1));
    CHECK_EQ(atomic_load(&kbm_bad_status), KBUDDY_EDOUBLEFREE);
    atomic_store(&kbm_bad_count, 0);
    CHECK_STATS_ADD_UP();
}

/* realloc: in the same pages nothing is called; across pages the remap
 * hook resizes; when it fails a growing block moves (map, copy, unmap) and
 * a shrinking one stays; at or below the threshold the block moves to the
 * heap; size 0 frees. The contents survive each step. */
TEST(realloc_of_a_mapped_block) {
    setup();
    size_t n = 2 * MIB + 10;
    unsigned char *p = kbm_malloc(n);
    REQUIRE(p != NULL);
    for (size_t i = 0; i < n; i += 512)
        p[i] = (unsigned char)(i / 512);
    size_t m0 = maps, r0 = remaps, u0 = unmaps;
    unsigned char *q = kbm_realloc(p, n + 100); /* same pages */
    CHECK(q == p);
    CHECK_EQ(maps + remaps + unmaps, m0 + r0 + u0);
    kbm_free_sized(q, n + 100); /* the size realloc set is the one kept */
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);

    p = kbm_malloc(n);
    REQUIRE(p != NULL);
    for (size_t i = 0; i < n; i += 512)
        p[i] = (unsigned char)(i / 512);
    r0 = remaps;
    size_t b0 = kbm_stats().mapped_bytes;
    q = kbm_realloc(p, 40 * MIB); /* the remap hook */
    REQUIRE(q != NULL);
    CHECK_EQ(remaps, r0 + 1);
    CHECK_EQ(kbm_malloc_usable_size(q), 40 * MIB);
    CHECK_EQ(kbm_stats().mapped_bytes, b0 - pages(n) + 40 * MIB);
    int same = 1;
    for (size_t i = 0; i < n; i += 512)
        same &= q[i] == (unsigned char)(i / 512);
    CHECK(same);
    CHECK_STATS_ADD_UP();

    atomic_store(&fail_remap, 1); /* grow, remap fails: moved */
    m0 = maps;
    u0 = unmaps;
    p = kbm_realloc(q, 50 * MIB);
    REQUIRE(p != NULL);
    CHECK_EQ(maps, m0 + 1);
    CHECK_EQ(unmaps, u0 + 1);
    CHECK(last_unmap == q);
    same = 1;
    for (size_t i = 0; i < n; i += 512)
        same &= p[i] == (unsigned char)(i / 512);
    CHECK(same);
    kbm_free(q); /* the old pointer: a double free, not a crash */
    CHECK_REPORTED(q, KBUDDY_EDOUBLEFREE, "free");

    atomic_store(&fail_remap, 1); /* shrink, remap fails: kept */
    q = kbm_realloc(p, 30 * MIB);
    CHECK(q == p);
    CHECK_EQ(kbm_malloc_usable_size(q), 50 * MIB);
    CHECK_STATS_ADD_UP();

    q = kbm_realloc(p, 20 * MIB); /* shrink through remap */
    REQUIRE(q != NULL);
    CHECK_EQ(kbm_malloc_usable_size(q), 20 * MIB);

    size_t before_blocks = kbm_stats().mapped_blocks;
    u0 = unmaps;
    p = kbm_realloc(q, 1000); /* to the heap */
    REQUIRE(p != NULL);
    CHECK(in_heap(p));
    CHECK_EQ(unmaps, u0 + 1);
    CHECK_EQ(kbm_stats().mapped_blocks, before_blocks - 1);
    same = 1;
    for (size_t i = 0; i < 1000; i += 512)
        same &= p[i] == (unsigned char)(i / 512);
    CHECK(same);
    q = kbm_realloc(p, 3 * MIB); /* and back to a mapping */
    REQUIRE(q != NULL);
    CHECK(!in_heap(q));
    CHECK(q[512] == 1);
    u0 = unmaps;
    CHECK(kbm_realloc(q, 0) == NULL); /* frees */
    CHECK_EQ(unmaps, u0 + 1);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

/* A free of a block while realloc resizes it (with the lock released) is
 * refused as a double free and unmaps nothing; realloc completes. */
TEST(a_free_racing_a_realloc_of_a_mapped_block_is_refused) {
    setup();
    unsigned char *p = kbm_malloc(2 * MIB);
    REQUIRE(p != NULL);
    p[100] = 7;
    size_t u0 = unmaps;
    atomic_store(&free_in_remap, 1);
    unsigned char *q = kbm_realloc(p, 9 * MIB);
    REQUIRE(q != NULL);
    CHECK_REPORTED(p, KBUDDY_EDOUBLEFREE, "free");
    CHECK_EQ(unmaps, u0);
    CHECK(q[100] == 7);
    CHECK_EQ(kbm_malloc_usable_size(q), 9 * MIB);
    CHECK_STATS_ADD_UP();
    kbm_free(q);
    CHECK_EQ(unmaps, u0 + 1);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

/* More live mappings than the registry's static entries: its array moves
 * into the heap (one internal block), and back out when they are freed. */
TEST(the_registry_grows_into_the_heap_and_back) {
    setup();
    enum { N = 70 };
    static void *p[N];
    kbuddy_malloc_stats s0 = kbm_stats();
    for (int i = 0; i < N; i++) {
        p[i] = kbm_malloc(THRESHOLD + 1 + (size_t)i * 4096);
        REQUIRE(p[i] != NULL);
    }
    kbuddy_malloc_stats s1 = kbm_stats();
    CHECK_EQ(s1.mapped_blocks, s0.mapped_blocks + N);
    CHECK_EQ(s1.internal_blocks, s0.internal_blocks + 1);
    CHECK_STATS_ADD_UP();
    for (int i = 0; i < N; i += 2) /* every other one, so entries move */
        kbm_free(p[i]);
    CHECK_STATS_ADD_UP();
    for (int i = 1; i < N; i += 2)
        CHECK_EQ(kbm_malloc_usable_size(p[i]), pages(THRESHOLD + 1 + (size_t)i * 4096));
    for (int i = 1; i < N; i += 2)
        kbm_free(p[i]);
    kbuddy_malloc_stats s2 = kbm_stats();
    CHECK_EQ(s2.mapped_blocks, s0.mapped_blocks);
    CHECK_EQ(s2.internal_blocks, s0.internal_blocks);
    CHECK_EQ(atomic_load(&mapped_now), s2.mapped_bytes);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

KBTEST_MAIN()
