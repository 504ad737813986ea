/*
 * The malloc family of the global allocator, in-process (hosted build:
 * per-thread caches, errno, growth by mmap): the standard semantics of each
 * function, size classes, statistics, caches and regions.
 */
#define _GNU_SOURCE /* mincore */
#include "kbm_setup.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define UNIT KBUDDY_MIN_BLOCK

static size_t round_unit(size_t n) { return n ? (n + UNIT - 1) / UNIT * UNIT : UNIT; }

/* Every pointer malloc returns is aligned to this (slab objects to 16). */
#define MALIGN (KBUDDY_MALLOC_SLABS ? (size_t)16 : UNIT)
static bool is_slab_size(size_t u) { return KBUDDY_MALLOC_SLABS && u % 32 == 16 && u < 512; }

/* The class sizes the header promises: 32-byte steps to 512, then
 * KBUDDY_MALLOC_CLASS_STEPS per doubling, up to KBUDDY_MALLOC_CACHE_MAX. */
#define STEPS ((size_t)KBUDDY_MALLOC_CLASS_STEPS)
static size_t expected_usable(size_t n) {
#if KBUDDY_MALLOC_SLABS
    /* and the odd multiples of 16 from 48 to 496: slab classes */
    size_t g = (n + 15) / 16;
    if (g % 2 && g >= 3 && g <= 31)
        return g * 16;
#endif
    if (n > KBUDDY_MALLOC_CACHE_MAX)
        return round_unit(n);
    if (n <= 16 * UNIT)
        return round_unit(n);
    size_t step = 16 * UNIT / STEPS;
    while (n > 2 * (step * STEPS))
        step *= 2;
    return (n + step - 1) / step * step;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i * 7);
}

static int same(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 7))
            return 0;
    return 1;
}

TEST(every_request_gets_its_class_or_rounded_size) {
    kbm_setup();
    for (size_t n = 0; n <= 3 * KBUDDY_MALLOC_CACHE_MAX; n += n < 9000 ? 1 : 97) {
        unsigned char *p = kbm_malloc(n);
        REQUIRE(p != NULL);
        size_t u = kbm_malloc_usable_size(p);
        if (u != expected_usable(n)) {
            KBTEST_FAIL("usable(%zu) = %zu, want %zu", n, u, expected_usable(n));
            kbm_free(p);
            return;
        }
        CHECK_EQ((uintptr_t)p % MALIGN, 0);
        memset(p, 0x5a, u);
        kbm_free(p);
    }
    CHECK_EQ(expected_usable(513), STEPS == 8 ? 576 : 640);
    CHECK_EQ(expected_usable(1025), STEPS == 8 ? 1152 : 1280);
    CHECK_EQ(expected_usable(4096), 4096);
    CHECK_EQ(expected_usable(4097), 4128);
    CHECK_STATS_ADD_UP();
}

TEST(malloc_gives_disjoint_aligned_blocks) {
    kbm_setup();
    enum { N = 3000 };
    static unsigned char *p[N];
    static size_t n[N];
    size_t live0 = kbm_stats().live_blocks;
    for (unsigned i = 0; i < N; i++) {
        n[i] = (i * 2654435761u) % 9000;
        p[i] = kbm_malloc(n[i]);
        REQUIRE(p[i] != NULL);
        CHECK_EQ((uintptr_t)p[i] % MALIGN, 0);
        fill(p[i], n[i], i);
    }
    CHECK_EQ(kbm_stats().live_blocks, live0 + N);
    for (unsigned i = 0; i < N; i++) {
        CHECK(same(p[i], n[i], i));
        kbm_free(p[i]);
    }
    CHECK_EQ(kbm_stats().live_blocks, live0);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(malloc_zero_gives_unique_blocks) {
    kbm_setup();
    void *a = kbm_malloc(0), *b = kbm_malloc(0);
    REQUIRE(a && b);
    CHECK(a != b);
    CHECK_EQ(kbm_malloc_usable_size(a), UNIT);
    kbm_free(a);
    kbm_free(b);
}

TEST(calloc_zero_fills_recycled_blocks) {
    kbm_setup();
    for (size_t n = 1; n < 20000; n = n * 3 + 1) {
        unsigned char *d = kbm_malloc(n);
        REQUIRE(d != NULL);
        memset(d, 0xaa, n);
        kbm_free(d);
        unsigned char *p = kbm_calloc(n, 1);
        REQUIRE(p != NULL);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++)
            bad += p[i] != 0;
        CHECK_EQ(bad, 0);
        kbm_free(p);
    }
    int *v = kbm_calloc(1000, sizeof *v);
    REQUIRE(v != NULL);
    CHECK(v[0] == 0 && v[999] == 0);
    kbm_free(v);
    void *z = kbm_calloc(0, 5);
    CHECK(z != NULL);
    kbm_free(z);
}

TEST(calloc_overflow_is_enomem) {
    kbm_setup();
    errno = 0;
    CHECK(kbm_calloc(SIZE_MAX / 2 + 1, 2) == NULL);
    CHECK_EQ(errno, ENOMEM);
    errno = 0;
    CHECK(kbm_calloc((size_t)1 << 33, (size_t)1 << 33) == NULL);
    CHECK_EQ(errno, ENOMEM);
}

TEST(realloc_follows_glibc) {
    kbm_setup();
    size_t live0 = kbm_stats().live_blocks;
    unsigned char *p = kbm_realloc(NULL, 100); /* NULL: malloc */
    REQUIRE(p != NULL);
    fill(p, 100, 1);
#if KBUDDY_MALLOC_SLABS
    CHECK(kbm_realloc(p, 110) == p); /* same class (112, a slab's) */
    CHECK(kbm_realloc(p, 97) == p);
    p = kbm_realloc(p, 65); /* a slab object stays only in its class */
    REQUIRE(p != NULL);
    CHECK_EQ(kbm_malloc_usable_size(p), 80);
    CHECK(kbm_realloc(p, 65) == p);
#else
    CHECK(kbm_realloc(p, 110) == p); /* same class (128) */
    CHECK(kbm_realloc(p, 65) == p);  /* more than half of it */
#endif
    unsigned char *q = kbm_realloc(p, 20); /* much smaller: moves */
    REQUIRE(q != NULL);
    CHECK(q != p);
    CHECK(same(q, 20, 1));
    CHECK_EQ(kbm_malloc_usable_size(q), 32);
    CHECK_EQ(kbm_malloc_usable_size(p), 0); /* freed */
    p = kbm_realloc(q, 3000); /* small to larger class */
    REQUIRE(p != NULL);
    CHECK(same(p, 20, 1));
    fill(p, 3000, 2);
    q = kbm_realloc(p, 100000); /* small to large */
    REQUIRE(q != NULL);
    CHECK(same(q, 3000, 2));
    fill(q, 100000, 3);
    p = kbm_realloc(q, 50000); /* large shrinks in place */
    CHECK(p == q);
    CHECK(same(p, 50000, 3));
    CHECK_EQ(kbm_malloc_usable_size(p), 50016);
    q = kbm_realloc(p, 3000000); /* large grows */
    REQUIRE(q != NULL);
    CHECK(same(q, 50000, 3));
    errno = 1234;
    CHECK(kbm_realloc(q, 0) == NULL); /* frees, like glibc */
    CHECK_EQ(errno, 1234);
    CHECK_EQ(kbm_stats().live_blocks, live0);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(realloc_failure_keeps_the_block) {
    kbm_setup();
    unsigned char *p = kbm_malloc(200);
    REQUIRE(p != NULL);
    fill(p, 200, 9);
    errno = 0;
    CHECK(kbm_realloc(p, opaque(SIZE_MAX - 8)) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK(same(p, 200, 9));
    unsigned char *big = kbm_malloc(70000);
    REQUIRE(big != NULL);
    errno = 0;
    CHECK(kbm_realloc(big, opaque(SIZE_MAX / 2)) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK_EQ(kbm_malloc_usable_size(big), 70016);
    errno = 0;
    CHECK(kbm_reallocarray(p, SIZE_MAX / 4, 8) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK(same(p, 200, 9));
    unsigned char *q = kbm_reallocarray(p, 50, 8);
    REQUIRE(q != NULL);
    CHECK(same(q, 200, 9));
    kbm_free(q);
    kbm_free(big);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(aligned_alloc_aligns_and_rejects_bad_alignments) {
    kbm_setup();
    for (size_t a = 1; a <= ((size_t)1 << 20); a <<= 1) {
        void *p = kbm_aligned_alloc(a, 100);
        REQUIRE(p != NULL);
        CHECK_EQ((uintptr_t)p % a, 0);
        CHECK(kbm_malloc_usable_size(p) >= 100);
        memset(p, 1, 100);
        kbm_free_aligned_sized(p, a, 100);
    }
    static const size_t bad[] = {0, 3, 24, 48, 1000, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        CHECK(kbm_aligned_alloc(opaque(bad[i]), 64) == NULL);
        CHECK_EQ(errno, EINVAL);
    }
    errno = 0; /* too large an alignment for any region: out of memory */
    CHECK(kbm_aligned_alloc(opaque((size_t)1 << 62), 1) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(posix_memalign_returns_errors_and_keeps_errno) {
    kbm_setup();
    void *p = (void *)0x1234;
    errno = 77;
    CHECK_EQ(kbm_posix_memalign(&p, 3, 10), EINVAL);
    CHECK_EQ(kbm_posix_memalign(&p, sizeof(void *) / 2, 10), EINVAL);
    CHECK_EQ(kbm_posix_memalign(&p, 0, 10), EINVAL);
    CHECK_EQ(kbm_posix_memalign(&p, 64, SIZE_MAX - 100), ENOMEM);
    CHECK(p == (void *)0x1234);
    CHECK_EQ(errno, 77);
    CHECK_EQ(kbm_posix_memalign(&p, 4096, 10), 0);
    CHECK_EQ((uintptr_t)p % 4096, 0);
    kbm_free(p);
    CHECK_EQ(kbm_posix_memalign(&p, sizeof(void *), 0), 0);
    kbm_free(p);
}

TEST(memalign_rounds_alignment_up) {
    kbm_setup();
    void *p = kbm_memalign(48, 10);
    REQUIRE(p != NULL);
    CHECK_EQ((uintptr_t)p % 64, 0);
    kbm_free(p);
    p = kbm_memalign(0, 10);
    REQUIRE(p != NULL);
    kbm_free(p);
    errno = 0;
    CHECK(kbm_memalign(SIZE_MAX / 2 + 2, 10) == NULL);
    CHECK_EQ(errno, EINVAL);
}

TEST(malloc_of_impossible_sizes_is_enomem) {
    kbm_setup();
    static const size_t sizes[] = {SIZE_MAX, SIZE_MAX - 31, SIZE_MAX / 2, (size_t)1 << 60};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        errno = 0;
        CHECK(kbm_malloc(opaque(sizes[i])) == NULL);
        CHECK_EQ(errno, ENOMEM);
    }
    errno = 0;
    CHECK(kbm_aligned_alloc(64, opaque(SIZE_MAX)) == NULL);
    CHECK_EQ(errno, ENOMEM);
    errno = 0; /* success leaves errno alone */
    void *p = kbm_malloc(10);
    CHECK_EQ(errno, 0);
    kbm_free(p);
    CHECK_STATS_ADD_UP();
}

TEST(free_sized_accepts_every_valid_size) {
    kbm_setup();
    for (size_t n = 1; n < 10000; n = n * 2 + 3) {
        void *p = kbm_malloc(n);
        REQUIRE(p != NULL);
        kbm_free_sized(p, n);
    }
    void *p = kbm_malloc(KBUDDY_MALLOC_SLABS ? 128 : 100); /* a block (not a slab's object) */
    void *q = kbm_realloc(p, 70); /* kept in place: 70 is still its size */
    CHECK(q == p);
    kbm_free_sized(q, 70);
    p = kbm_calloc(100, 100);
    kbm_free_sized(p, 10000);
    kbm_free_sized(NULL, 5);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(large_requests_get_a_mapping_of_their_own) {
    kbm_setup();
    kbuddy_malloc_stats before = kbm_stats();
    size_t n = (size_t)200 << 20; /* beyond the 64 MiB default mapping */
    unsigned char *p = kbm_malloc(n);
    REQUIRE(p != NULL);
    p[0] = 1;
    p[n - 1] = 2;
    kbuddy_malloc_stats after = kbm_stats();
    CHECK_EQ(after.regions, before.regions);
    CHECK_EQ(after.mapped_blocks, before.mapped_blocks + 1);
    CHECK_EQ(after.mapped_bytes, before.mapped_bytes + n);
    CHECK_EQ(after.live_bytes, before.live_bytes + n);
    CHECK_STATS_ADD_UP();
    kbm_free(p);
    CHECK_EQ(kbm_stats().mapped_blocks, before.mapped_blocks);
    CHECK_STATS_ADD_UP();
}

/* The hosted map hooks: mmap trimmed to a big alignment, mremap for
 * realloc (contents kept), munmap at free. Sizes above 32 MiB, which the
 * default threshold never reaches. */
TEST(hosted_mappings_are_aligned_and_remapped) {
    kbm_setup();
    kbuddy_malloc_stats s0 = kbm_stats();
    size_t n = (size_t)40 << 20, align = (size_t)16 << 20;
    unsigned char *p = kbm_aligned_alloc(align, n);
    REQUIRE(p != NULL);
    CHECK_EQ((uintptr_t)p % align, 0);
    CHECK_EQ(kbm_stats().mapped_blocks, s0.mapped_blocks + 1);
    for (size_t i = 0; i < n; i += 4096)
        p[i] = (unsigned char)(i >> 12);
    unsigned char *q = kbm_realloc(p, 3 * n);
    REQUIRE(q != NULL);
    CHECK_EQ(kbm_malloc_usable_size(q), 3 * n);
    int same = 1;
    for (size_t i = 0; i < n; i += 4096)
        same &= q[i] == (unsigned char)(i >> 12);
    CHECK(same);
    q[3 * n - 1] = 1;
    q = kbm_realloc(q, n + 1); /* shrunk in place */
    REQUIRE(q != NULL);
    CHECK_EQ(kbm_malloc_usable_size(q), n + 4096);
    CHECK(q[n - 4096] == (unsigned char)((n - 4096) >> 12));
    CHECK_STATS_ADD_UP();
    kbm_free_sized(q, n + 1);
    CHECK_EQ(kbm_stats().mapped_blocks, s0.mapped_blocks);
    CHECK_EQ(kbm_stats().mapped_bytes, s0.mapped_bytes);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

/* Blocks below the map threshold that add up to more than a region: the
 * grow hook maps more regions. */
TEST(many_blocks_grow_the_heap) {
    kbm_setup();
    kbuddy_malloc_stats before = kbm_stats();
    enum { N = 200 };
    static unsigned char *p[N];
    size_t n = (size_t)1 << 20; /* 200 MiB in all, each at the threshold */
    for (int i = 0; i < N; i++) {
        p[i] = kbm_malloc(n);
        REQUIRE(p[i] != NULL);
        p[i][n - 1] = 2;
    }
    kbuddy_malloc_stats after = kbm_stats();
    CHECK(after.regions > before.regions);
    CHECK_EQ(after.mapped_blocks, before.mapped_blocks);
    CHECK(after.live_bytes >= before.live_bytes + N * n);
    for (int i = 0; i < N; i++)
        kbm_free(p[i]);
    CHECK_STATS_ADD_UP();
}

TEST(caches_are_bounded_and_flush_returns_them) {
    kbm_setup();
    enum { N = 20000 };
    static void *p[N];
    for (unsigned i = 0; i < N; i++)
        REQUIRE((p[i] = kbm_malloc(64)) != NULL);
    kbuddy_malloc_stats full = kbm_stats();
    for (unsigned i = 0; i < N; i++)
        kbm_free(p[i]);
    kbuddy_malloc_stats st = kbm_stats();
    /* At most two magazines here and the depot's bound of them, 64 blocks each. */
    CHECK(st.cached_blocks <= full.cached_blocks + (2 + KBUDDY_MALLOC_DEPOT_MAGS) * 64);
    CHECK(st.heap.allocated + N * 64 / 2 < full.heap.allocated);
    CHECK_STATS_ADD_UP();
    kbuddy_malloc_flush_caches();
    st = kbm_stats();
    CHECK_EQ(st.cached_blocks, 0); /* this thread's cache and the depot: all of them here */
    CHECK_EQ(st.depot_blocks, 0);
    CHECK_STATS_ADD_UP();
    /* The cache refills after a flush. */
    void *q = kbm_malloc(64);
    CHECK(q != NULL);
    CHECK(kbm_stats().cached_blocks > 0);
    kbm_free(q);
}

/* The hosted grow hook: a region's last D bytes (D the largest power of
 * two in it) are aligned to D, so that the core heap holds a free block of
 * D there, wherever mmap put the mapping; and it is at least what was asked
 * (among others what the layer asks for a block of 32 MiB: two of them
 * and an eighth, and a page). */
TEST(grown_regions_end_in_one_block_aligned_to_its_size) {
    kbm_setup();
    kbuddy_malloc_hooks h;
    kbuddy_hosted_hooks(&h);
    const size_t mins[] = {4096, (size_t)1 << 20, (size_t)64 << 20, ((size_t)72 << 20) + 4096};
    for (size_t i = 0; i < sizeof mins / sizeof mins[0]; i++) {
        void *start = NULL;
        size_t size = 0, mapped = kbuddy_hosted_mapped();
        REQUIRE(h.grow(mins[i], &start, &size, h.grow_ctx));
        CHECK(size >= mins[i]);
        size_t d = 1;
        while (d <= size / 2)
            d <<= 1;
        CHECK_EQ(size, d + d / 8);
        CHECK_EQ(((uintptr_t)start + size - d) % d, 0);
        CHECK_EQ(kbuddy_hosted_mapped(), mapped + size);
        h.ungrow(start, size, h.grow_ctx);
        CHECK_EQ(kbuddy_hosted_mapped(), mapped);
    }
}

/* KBUDDY_MALLOC_RUN_BYTES (4096 in the hosted build): a magazine of 4 KiB
 * blocks is filled one block per core operation, each the lowest free
 * block that fits, so free 4 KiB holes between live blocks are used
 * before fresh memory; a fill in one run needs a free block of the whole
 * magazine's size, which the holes are not. Run in a thread of its own
 * (a fresh cache), its first fills (the thread ramp: 1, 2, 4 blocks) taken
 * before the holes are made. */
enum { HOLES = 64 };
static void fill_from_holes_body(void) {
    static unsigned char *b[2 * HOLES], *hole[HOLES];
    for (size_t i = 0; i < 2 * HOLES; i++)
        REQUIRE((b[i] = kbm_malloc(4096)) != NULL);
    for (size_t i = 0; i < HOLES; i++) {
        hole[i] = b[2 * i];
        kbm_free(hole[i]);
    }
    (void)kbuddy_malloc_trim(SIZE_MAX); /* this cache (the holes) and the depot to the core */
    size_t in_holes = 0;
    unsigned char *c[HOLES];
    for (size_t i = 0; i < HOLES; i++) {
        REQUIRE((c[i] = kbm_malloc(4096)) != NULL);
        for (size_t j = 0; j < HOLES; j++)
            in_holes += c[i] == hole[j];
    }
    CHECK(in_holes >= HOLES / 2);
    for (size_t i = 0; i < HOLES; i++) {
        kbm_free(c[i]);
        kbm_free(b[2 * i + 1]);
    }
    CHECK_STATS_ADD_UP();
}

static void *fill_from_holes(void *arg) {
    (void)arg;
    fill_from_holes_body();
    return NULL;
}

TEST(magazine_fills_take_free_holes_before_fresh_memory) {
    kbm_setup();
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, fill_from_holes, NULL) == 0);
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
}

#if KBUDDY_MALLOC_TRIM_SLACK != SIZE_MAX
/* Resident bytes of the whole pages of [p, p + n) (mincore). */
static size_t resident_bytes(const unsigned char *p, size_t n) {
    static unsigned char vec[(size_t)1 << 16];
    size_t page = 4096, bytes = 0, head = (size_t)(-(uintptr_t)p & (page - 1));
    if (n <= head)
        return 0;
    p += head;
    n = (n - head) & ~(page - 1);
    for (size_t off = 0; off < n; off += sizeof vec * page) {
        size_t len = n - off < sizeof vec * page ? n - off : sizeof vec * page;
        if (mincore((void *)(p + off), len, vec) != 0)
            return SIZE_MAX;
        for (size_t i = 0; i < (len + page - 1) / page; i++)
            bytes += (vec[i] & 1) * page;
    }
    return bytes;
}

/* KBUDDY_MALLOC_TRIM_SLACK (64 MiB in the malloc_api_trim build): freed large
 * blocks of the core heap keep their pages only up to the slack,
 * max(64 MiB, allocated bytes), of free memory; the rest is released as
 * they are freed. 160 blocks of 1 MiB (the map threshold: from the core),
 * every page written, then all freed: at most the slack of them stays
 * resident, where without the trim all 160 MiB did. */
TEST(freed_large_blocks_keep_their_pages_only_up_to_the_slack) {
    kbm_setup();
    enum { N = 160 };
    static unsigned char *p[N];
    size_t n = (size_t)1 << 20, mapped = kbm_stats().mapped_blocks;
    for (int i = 0; i < N; i++) {
        REQUIRE((p[i] = kbm_malloc(n)) != NULL);
        memset(p[i], 0x5a, n);
    }
    CHECK_EQ(kbm_stats().mapped_blocks, mapped); /* all from the core */
    size_t before = kbm_stats().released_bytes;
    for (int i = 0; i < N; i++)
        kbm_free(p[i]);
    kbuddy_malloc_stats st = kbm_stats();
    size_t slack = st.heap.allocated > ((size_t)64 << 20) ? st.heap.allocated : (size_t)64 << 20;
    size_t res = 0; /* the blocks' pages, still mapped (regions are not unmapped) */
    for (int i = 0; i < N; i++) {
        size_t r = resident_bytes(p[i], n);
        REQUIRE(r != SIZE_MAX);
        res += r;
    }
    CHECK(res <= slack + ((size_t)8 << 20));
    CHECK(st.released_bytes >= before + (size_t)(N * n - slack - ((size_t)8 << 20)));
    CHECK_STATS_ADD_UP();
}

#endif

TEST(add_region_is_the_transfer_and_checks_its_input) {
    kbm_setup();
    static _Alignas(64) unsigned char area[1 << 20];
    kbuddy_malloc_stats before = kbm_stats();
    CHECK_STATUS(kbuddy_malloc_add_region(NULL, 4096), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_malloc_add_region(area, 0), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_malloc_add_region((void *)(UINTPTR_MAX - 100), 4096), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_malloc_add_region(area, 40), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_malloc_add_region(area + 3, sizeof area - 3), KBUDDY_OK);
    CHECK_STATUS(kbuddy_malloc_add_region(area + 4096, 8192), KBUDDY_EOVERLAP);
    CHECK_STATUS(kbuddy_malloc_add_region(area + 2, 8), KBUDDY_EOVERLAP);
    CHECK_STATUS(kbuddy_malloc_add_region(area, 3), KBUDDY_ENOMEM); /* just before it: too small */
    kbuddy_malloc_stats after = kbm_stats();
    CHECK_EQ(after.regions, before.regions + 1);
    CHECK_EQ(after.region_bytes, before.region_bytes + sizeof area - 3);
    CHECK(after.heap.total > before.heap.total + sizeof area * 9 / 10);
    /* Blocks from it work like any other: fill the heap's lowest parts. */
    enum { N = 2000 };
    static unsigned char *p[N];
    size_t inside = 0;
    for (unsigned i = 0; i < N; i++) {
        p[i] = kbm_malloc(400);
        REQUIRE(p[i] != NULL);
        inside += p[i] >= area && p[i] < area + sizeof area;
    }
    CHECK(inside > 0 || (uintptr_t)area > (uintptr_t)p[0]);
    for (unsigned i = 0; i < N; i++)
        kbm_free(p[i]);
    CHECK_STATS_ADD_UP();
}

TEST(global_heap_is_the_core_heap) {
    kbm_setup();
    void *p = kbm_malloc(5000);
    REQUIRE(p != NULL);
    kbuddy_stats core;
    kbuddy_get_stats(kbuddy_global_heap(), &core);
    CHECK_EQ(core.allocations, kbm_stats().heap.allocations);
    CHECK_EQ(kbuddy_usable_size(kbuddy_global_heap(), p), 5024);
    CHECK_STATUS(kbuddy_check(kbuddy_global_heap()), KBUDDY_OK);
    kbm_free(p);
}

/* ------------------------------------------------------------------------ */
/* Aligned requests through the caches                                        */
/* ------------------------------------------------------------------------ */

/* Every request up to the cache limit with any alignment up to it is a
 * size class block from the caches: no call reaches the core heap
 * directly (large_calls), every block is aligned, usable for at least
 * its size, distinct from the others, and counted exactly. */
TEST(aligned_requests_up_to_the_cache_limit_come_from_the_caches) {
    kbm_setup();
    enum { N = 64 };
    static unsigned char *p[N];
    for (size_t a = 1; a <= KBUDDY_MALLOC_CACHE_MAX; a <<= 1) {
        for (size_t size = 0; size <= KBUDDY_MALLOC_CACHE_MAX; size += size < 64 ? 1 : 61) {
            size_t calls = kbm_stats().large_calls;
            for (unsigned i = 0; i < N; i++) {
                p[i] = kbm_aligned_alloc(a, size);
                REQUIRE(p[i] != NULL);
                CHECK_EQ((uintptr_t)p[i] % a, 0);
                CHECK_EQ((uintptr_t)p[i] % MALIGN, 0);
                size_t u = kbm_malloc_usable_size(p[i]);
                CHECK(u >= size && u <= KBUDDY_MALLOC_CACHE_MAX);
                CHECK_EQ(u % (a < MALIGN ? MALIGN : a), 0);
                memset(p[i], (int)i, u);
            }
            for (unsigned i = 0; i < N; i++) {
                size_t u = kbm_malloc_usable_size(p[i]);
                CHECK(p[i][0] == (unsigned char)i && p[i][u - 1] == (unsigned char)i);
            }
            CHECK_EQ(kbm_stats().large_calls, calls);
            for (unsigned i = 0; i < N; i++)
                kbm_free_aligned_sized(p[i], a, size);
            CHECK_EQ(kbm_stats().large_calls, calls);
        }
    }
    /* posix_memalign and memalign take the same way. */
    size_t calls = kbm_stats().large_calls;
    void *q = NULL;
    CHECK_EQ(kbm_posix_memalign(&q, 4096, 4096), 0);
    CHECK_EQ((uintptr_t)q % 4096, 0);
    void *r = kbm_memalign(3000, 100);
    CHECK_EQ((uintptr_t)r % 4096, 0);
    CHECK_EQ(kbm_stats().large_calls, calls);
    kbm_free(q);
    kbm_free(r);
    /* Beyond the limit, in size or alignment: the core heap. */
    q = kbm_aligned_alloc(2 * KBUDDY_MALLOC_CACHE_MAX, 10);
    REQUIRE(q != NULL);
    CHECK_EQ((uintptr_t)q % (2 * KBUDDY_MALLOC_CACHE_MAX), 0);
    CHECK_EQ(kbm_stats().large_calls, calls + 1);
    kbm_free(q);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

/* The size classes' blocks are naturally aligned: a block of a class is
 * aligned to the largest power of two dividing the class size. */
TEST(size_class_blocks_are_naturally_aligned) {
    kbm_setup();
    for (size_t n = 1; n <= KBUDDY_MALLOC_CACHE_MAX; n++) {
        unsigned char *p = kbm_malloc(n);
        REQUIRE(p != NULL);
        size_t u = kbm_malloc_usable_size(p);
        CHECK_EQ((uintptr_t)p % (u & (~u + 1)), 0);
        kbm_free_sized(p, n);
    }
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

/* A sized free states the size requested: for blocks above 64 bytes
 * exactly that size (kept beside the block's tag), also after realloc
 * kept the block in place; 32- and 64-byte blocks take any size up to
 * theirs. */
TEST(sized_free_takes_exactly_the_size_requested) {
    kbm_setup();
    for (size_t n = 1; n <= KBUDDY_MALLOC_CACHE_MAX; n += n < 200 ? 1 : 37) {
        void *p = kbm_malloc(n);
        REQUIRE(p != NULL);
        size_t u = kbm_malloc_usable_size(p);
        if (is_slab_size(u)) { /* a slab object: exactly the sizes of its class */
            kbm_free_sized(p, u + 1);
            CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
            kbm_free_sized(p, u - 16);
            CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
            kbm_free_aligned_sized(p, 16, u + 1);
            CHECK_REPORTED(p, KBUDDY_ESIZE, "free_aligned_sized");
            if ((uintptr_t)p % 32) {
                kbm_free_aligned_sized(p, 32, n);
                CHECK_REPORTED(p, KBUDDY_ESIZE, "free_aligned_sized");
            }
            CHECK_EQ(kbm_malloc_usable_size(p), u);
            kbm_free_sized(p, n % 2 ? u - 15 : u); /* any size of the class */
            CHECK_EQ(atomic_load(&kbm_bad_count), 0);
            continue;
        }
        if (u > 2 * UNIT) {
            kbm_free_sized(p, n + 1);
            CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
            kbm_free_sized(p, n - 1);
            CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
        } else {
            kbm_free_sized(p, u + 1);
            CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
        }
        kbm_free_aligned_sized(p, UNIT, (u > 2 * UNIT ? n : u) + 1);
        CHECK_REPORTED(p, KBUDDY_ESIZE, "free_aligned_sized");
        CHECK_EQ(kbm_malloc_usable_size(p), u);
        kbm_free_sized(p, u > 2 * UNIT ? n : u);
        CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    }
    unsigned char *p = kbm_malloc(1000);
    REQUIRE(p != NULL);
    CHECK(kbm_realloc(p, 900) == p);
    CHECK(kbm_realloc(p, 1020) == p);
    kbm_free_sized(p, 900);
    CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
    kbm_free_sized(p, 1020);
    p = kbm_aligned_alloc(512, 0);
    REQUIRE(p != NULL);
    kbm_free_aligned_sized(p, 512, 1);
    CHECK_REPORTED(p, KBUDDY_ESIZE, "free_aligned_sized");
    kbm_free_aligned_sized(p, 512, 0);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

KBTEST_MAIN()
