/*
 * Bad input to the global allocator: double frees (of blocks sitting in a
 * cache, in the depot, back in the heap; small and large), foreign and
 * interior pointers, wrong sizes, bad alignments, overflowing sizes. Each
 * gets the standard error (NULL with ENOMEM/EINVAL) or one report through
 * the bad_free hook, changes nothing, and leaves the heap consistent: no
 * block is ever handed out twice.
 */
#include "kbm_setup.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* n blocks of `size` are all distinct and writable without clobbering
 * each other. */
static int distinct_blocks(size_t n, size_t size) {
    unsigned char **p = calloc(n, sizeof *p); /* glibc's: not under test */
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        p[i] = kbm_malloc(size);
        if (!p[i])
            return 0;
        memset(p[i], (int)(i & 0xff), size);
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < size; j++)
            ok &= p[i][j] == (unsigned char)(i & 0xff);
        kbm_free(p[i]);
    }
    free(p);
    return ok;
}

TEST(double_free_of_a_cached_block_is_caught) {
    kbm_setup();
    size_t live0 = kbm_stats().live_blocks, bad0 = kbm_stats().bad_frees;
    void *p = kbm_malloc(64);
    REQUIRE(p != NULL);
    kbm_free(p); /* now in this thread's magazine */
    kbm_free(p);
    CHECK_REPORTED(p, KBUDDY_EDOUBLEFREE, "free");
    CHECK_EQ(kbm_stats().bad_frees, bad0 + 1);
    CHECK_EQ(kbm_stats().live_blocks, live0);
    /* The block comes back once, not twice. */
    void *a = kbm_malloc(64), *b = kbm_malloc(64);
    CHECK(a != b);
    kbm_free(a);
    kbm_free(b);
    CHECK(distinct_blocks(500, 64));
    CHECK_STATS_ADD_UP();
}

/* Aligned requests are cached blocks too: a second free of one waiting in
 * a magazine, an interior pointer (whose tag byte holds part of the
 * block's size), a wrong size or an alignment the block does not have are
 * each refused and change nothing. */
TEST(bad_frees_of_aligned_cached_blocks_are_caught) {
    kbm_setup();
    size_t live0 = kbm_stats().live_blocks;
    for (size_t a = 128; a <= 4096; a <<= 1) {
        unsigned char *p = kbm_aligned_alloc(a, a / 2 + 3);
        REQUIRE(p != NULL);
        CHECK_EQ((uintptr_t)p % a, 0);
        kbm_free_aligned_sized(p + KBUDDY_MIN_BLOCK, a, a / 2 + 3);
        CHECK_REPORTED(p + KBUDDY_MIN_BLOCK, KBUDDY_EBADPTR, "free_aligned_sized");
        kbm_free_aligned_sized(p, a, a / 2 + 4);
        CHECK_REPORTED(p, KBUDDY_ESIZE, "free_aligned_sized");
        /* the largest alignment the address does not have */
        size_t bad = (uintptr_t)p & (~(uintptr_t)p + 1u);
        kbm_free_aligned_sized(p, bad << 1, a / 2 + 3);
        CHECK_REPORTED(p, KBUDDY_ESIZE, "free_aligned_sized");
        CHECK_EQ(kbm_stats().live_blocks, live0 + 1);
        kbm_free_aligned_sized(p, a, a / 2 + 3); /* into this thread's magazine */
        CHECK_EQ(atomic_load(&kbm_bad_count), 0);
        kbm_free_aligned_sized(p, a, a / 2 + 3);
        CHECK_REPORTED(p, KBUDDY_EDOUBLEFREE, "free_aligned_sized");
        kbm_free(p);
        CHECK_REPORTED(p, KBUDDY_EDOUBLEFREE, "free");
        CHECK_EQ(kbm_stats().live_blocks, live0);
    }
    CHECK_STATS_ADD_UP();
}

TEST(double_free_of_a_block_in_the_depot_is_caught) {
    kbm_setup();
    enum { N = 1000 }; /* enough to push full magazines into the depot */
    static void *p[N];
    for (unsigned i = 0; i < N; i++)
        REQUIRE((p[i] = kbm_malloc(96)) != NULL);
    for (unsigned i = 0; i < N; i++)
        kbm_free(p[i]);
    CHECK(kbm_stats().depot_blocks > 0);
    for (unsigned i = 0; i < N; i++) {
        kbm_free(p[i]);
        CHECK_REPORTED(p[i], KBUDDY_EDOUBLEFREE, "free");
    }
    CHECK(distinct_blocks(N, 96));
    CHECK_STATS_ADD_UP();
}

TEST(double_free_after_the_block_went_back_to_the_heap_is_caught) {
    kbm_setup();
    void *p = kbm_malloc(64);
    REQUIRE(p != NULL);
    kbm_free(p);
    kbuddy_malloc_flush_caches(); /* the block is free memory of the core heap now */
    kbm_free(p);
    CHECK_REPORTED(p, KBUDDY_EDOUBLEFREE, "free");
    CHECK_STATS_ADD_UP();
}

TEST(double_free_of_a_large_block_is_caught) {
    kbm_setup();
    void *p = kbm_malloc(100000);
    REQUIRE(p != NULL);
    kbm_free(p);
    kbm_free(p);
    CHECK_REPORTED(p, KBUDDY_EDOUBLEFREE, "free");
    void *q = kbm_aligned_alloc(4096, 100);
    REQUIRE(q != NULL);
    kbm_free(q);
    kbm_free_sized(q, 100);
    CHECK_REPORTED(q, KBUDDY_EDOUBLEFREE, "free_sized");
    CHECK(distinct_blocks(50, 100000));
    CHECK_STATS_ADD_UP();
}

TEST(foreign_pointers_are_refused) {
    kbm_setup();
    int on_stack;
    kbm_free(&on_stack);
    CHECK_REPORTED(&on_stack, KBUDDY_EFOREIGN, "free");
    void *theirs = malloc(64); /* glibc's heap */
    kbm_free(theirs);
    CHECK_REPORTED(theirs, KBUDDY_EFOREIGN, "free");
    free(theirs);
    static char global[64];
    errno = 0;
    CHECK(kbm_realloc(global, 10) == NULL);
    CHECK_EQ(errno, EINVAL);
    CHECK_REPORTED(global, KBUDDY_EFOREIGN, "realloc");
    kbm_free_sized((void *)(uintptr_t)64, 8);
    CHECK_REPORTED((void *)(uintptr_t)64, KBUDDY_EFOREIGN, "free_sized");
    CHECK_EQ(kbm_malloc_usable_size(&on_stack), 0);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0); /* usable_size reports nothing */
    CHECK_STATS_ADD_UP();
}

TEST(interior_and_misaligned_pointers_are_refused) {
    kbm_setup();
    unsigned char *p = kbm_malloc(256);
    unsigned char *big = kbm_malloc(50000);
    REQUIRE(p && big);
    kbm_free(p + 32);
    CHECK_REPORTED(p + 32, KBUDDY_EBADPTR, "free");
    kbm_free(p + 1);
    CHECK_REPORTED(p + 1, KBUDDY_EBADPTR, "free");
    kbm_free(p + 8);
    CHECK_REPORTED(p + 8, KBUDDY_EBADPTR, "free");
    kbm_free(big + 4096);
    CHECK_REPORTED(big + 4096, KBUDDY_EBADPTR, "free");
    CHECK(kbm_realloc(big + 64, 10) == NULL);
    CHECK_REPORTED(big + 64, KBUDDY_EBADPTR, "realloc");
    CHECK_EQ(kbm_malloc_usable_size(p + 32), 0);
    CHECK_EQ(kbm_malloc_usable_size(p + 1), 0);
    /* Nothing changed: both are still live and whole. */
    CHECK_EQ(kbm_malloc_usable_size(p), 256);
    CHECK_EQ(kbm_malloc_usable_size(big), 50016);
    kbm_free(p);
    kbm_free(big);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

typedef struct collect {
    void **out;
    size_t n, cap;
} collect;

static void collect_used(void *ctx, void *start, size_t size, bool used) {
    collect *c = ctx;
    (void)size;
    if (used && c->n < c->cap)
        c->out[c->n++] = start;
}

TEST(the_allocators_own_structures_and_cached_blocks_cannot_be_freed) {
    kbm_setup();
    void *keep = kbm_malloc(64); /* this thread has a cache, with blocks in it */
    REQUIRE(keep != NULL);
    static void *blocks[1 << 16];
    collect col = {blocks, 0, 1 << 16};
    kbuddy_walk(kbuddy_global_heap(), collect_used, &col);
    size_t internal = 0, cached = 0;
    for (size_t i = 0; i < col.n; i++) {
        if (kbm_malloc_usable_size(blocks[i]))
            continue; /* the program's */
        kbm_free(blocks[i]);
        kbuddy_status st = (kbuddy_status)atomic_load(&kbm_bad_status);
        CHECK_EQ(atomic_load(&kbm_bad_count), 1);
        CHECK(st == KBUDDY_EBADPTR || st == KBUDDY_EDOUBLEFREE);
        internal += st == KBUDDY_EBADPTR;
        cached += st == KBUDDY_EDOUBLEFREE;
        atomic_store(&kbm_bad_count, 0);
    }
    kbuddy_malloc_stats st = kbm_stats();
    CHECK_EQ(internal, st.internal_blocks);
    CHECK_EQ(cached, st.cached_blocks);
    kbm_free(keep);
    CHECK_STATS_ADD_UP();
}

TEST(wrong_sizes_are_refused_and_change_nothing) {
    kbm_setup();
    void *p = kbm_malloc(64);
    REQUIRE(p != NULL);
    kbm_free_sized(p, 65);
    CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
    kbm_free_sized(p, 5000);
    CHECK_REPORTED(p, KBUDDY_ESIZE, "free_sized");
    CHECK_EQ(kbm_malloc_usable_size(p), 64);
    kbm_free_sized(p, 64);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);

    void *big = kbm_malloc(10000);
    REQUIRE(big != NULL);
    kbm_free_sized(big, 10001);
    CHECK_REPORTED(big, KBUDDY_ESIZE, "free_sized");
    kbm_free_sized(big, 9999);
    CHECK_REPORTED(big, KBUDDY_ESIZE, "free_sized");
    CHECK_EQ(kbm_malloc_usable_size(big), 10016);
    kbm_free_sized(big, 10000);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);

    void *a = kbm_aligned_alloc(256, 1000);
    REQUIRE(a != NULL);
    kbm_free_aligned_sized(a, 3, 1000);
    CHECK_REPORTED(a, KBUDDY_ESIZE, "free_aligned_sized");
    kbm_free_aligned_sized(a, 256, 1001);
    CHECK_REPORTED(a, KBUDDY_ESIZE, "free_aligned_sized");
    kbm_free_aligned_sized(a, 256, 1000);
    void *s = kbm_malloc(100);
    REQUIRE(s != NULL);
    kbm_free_aligned_sized(s, 0, 100);
    CHECK_REPORTED(s, KBUDDY_ESIZE, "free_aligned_sized");
    kbm_free_aligned_sized((unsigned char *)s, 64, 100);
    CHECK_EQ(atomic_load(&kbm_bad_count), (uintptr_t)s % 64 ? 1u : 0u);
    if ((uintptr_t)s % 64) {
        atomic_store(&kbm_bad_count, 0);
        kbm_free_aligned_sized(s, 16, 100); /* slab objects: 16-byte aligned */
    }
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(bad_alignments_are_einval) {
    kbm_setup();
    static const size_t bad[] = {0, 3, 6, 12, 24, 100, SIZE_MAX, SIZE_MAX / 2};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        CHECK(kbm_aligned_alloc(opaque(bad[i]), 32) == NULL);
        CHECK_EQ(errno, EINVAL);
        void *out = (void *)0x99;
        errno = 0;
        CHECK_EQ(kbm_posix_memalign(&out, bad[i], 32), EINVAL);
        CHECK(out == (void *)0x99);
        CHECK_EQ(errno, 0);
    }
    void *out = NULL;
    CHECK_EQ(kbm_posix_memalign(&out, 4, 32), EINVAL); /* not a multiple of sizeof(void *) */
    CHECK_EQ(kbm_posix_memalign(NULL, 64, 32), EINVAL);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(overflowing_sizes_are_enomem) {
    kbm_setup();
    size_t live0 = kbm_stats().live_blocks;
    struct {
        const char *what;
        void *result;
    } r[12];
    size_t n = 0;
    errno = 0;
#define TRY(expr)                                   \
    do {                                            \
        errno = 0;                                  \
        r[n].what = #expr;                          \
        r[n].result = (expr);                       \
        if (r[n].result || errno != ENOMEM)         \
            KBTEST_FAIL("%s: %p errno %d", #expr, r[n].result, errno); \
        n++;                                        \
    } while (0)
    TRY(kbm_malloc(opaque(SIZE_MAX)));
    TRY(kbm_malloc(opaque(SIZE_MAX - 16)));
    TRY(kbm_malloc(opaque(SIZE_MAX / 2 + 1)));
    TRY(kbm_calloc(opaque(SIZE_MAX), 2));
    TRY(kbm_calloc(2, opaque(SIZE_MAX / 2 + 1)));
    TRY(kbm_calloc((size_t)1 << 32, (size_t)1 << 32));
    TRY(kbm_aligned_alloc(64, opaque(SIZE_MAX - 63)));
    TRY(kbm_memalign(4096, opaque(SIZE_MAX)));
    void *p = kbm_malloc(100);
    REQUIRE(p != NULL);
    memset(p, 7, 100);
    TRY(kbm_realloc(p, opaque(SIZE_MAX)));
    TRY(kbm_reallocarray(p, SIZE_MAX, 2));
    TRY(kbm_reallocarray(p, (size_t)1 << 33, (size_t)1 << 33));
#undef TRY
    CHECK_EQ(kbm_malloc_usable_size(p), KBUDDY_MALLOC_SLABS ? 112 : 128);
    CHECK_EQ(((unsigned char *)p)[99], 7);
    kbm_free(p);
    CHECK_EQ(kbm_stats().live_blocks, live0);
    CHECK_EQ(atomic_load(&kbm_bad_count), 0);
    CHECK_STATS_ADD_UP();
}

TEST(realloc_of_freed_blocks_is_refused) {
    kbm_setup();
    void *p = kbm_malloc(300);
    REQUIRE(p != NULL);
    kbm_free(p);
    errno = 0;
    CHECK(kbm_realloc(p, 600) == NULL);
    CHECK_EQ(errno, EINVAL);
    CHECK_REPORTED(p, KBUDDY_EDOUBLEFREE, "realloc");
    CHECK(kbm_realloc(p, 0) == NULL);
    CHECK_REPORTED(p, KBUDDY_EDOUBLEFREE, "realloc");
    void *big = kbm_malloc(80000);
    REQUIRE(big != NULL);
    kbm_free(big);
    CHECK(kbm_realloc(big, 90000) == NULL);
    CHECK_REPORTED(big, KBUDDY_EDOUBLEFREE, "realloc");
    CHECK(distinct_blocks(100, 300));
    CHECK_STATS_ADD_UP();
}

KBTEST_MAIN()
