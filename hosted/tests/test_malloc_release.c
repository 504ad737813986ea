/*
 * The global allocator giving memory back (issue 11), in its kernel
 * configuration with test hooks: grow hands out chunks of a pool, release
 * and ungrow record what they are given and check it on the spot.
 *
 *   release  every range is whole pages (PAGE), and is either free memory
 *            of the core heap (no block of a walk intersects it) or pages
 *            of a tag table holding only zeros; the hook then scribbles
 *            over free memory (its contents are no longer needed) and
 *            zeroes tag pages (they must read as zero afterwards);
 *   ungrow   every range is a whole chunk grow handed out (the layer could
 *            not use it) or its tail from a page boundary to its end, and
 *            no block of the core heap lies in it any more.
 * After each step the statistics must add up and kbuddy_malloc_check must
 * pass. The tests share one process (hooks are installed once) and run in
 * file order; each starts from a trimmed heap.
 */
#define _GNU_SOURCE
#include "kbtest.h"
#include "kbuddy_malloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE ((size_t)8192) /* not the system's: the layer must use the hook's */
#define POOL_BYTES ((size_t)512 << 20)
#define MAX_CHUNKS 256

/* ------------------------------------------------------------------------ */
/* Test hooks                                                                */
/* ------------------------------------------------------------------------ */

typedef struct {
    unsigned char *start;
    size_t size, returned; /* returned: bytes of its tail ungrown */
} chunk;

static unsigned char *pool;
static size_t pool_used;
static chunk chunks[MAX_CHUNKS];
static size_t nchunks;
static size_t grow_bytes = (size_t)4 << 20; /* the next chunk's size, at least */
static size_t grow_exact;                   /* != 0: hand out exactly this much */

static size_t release_calls, release_bytes, release_bad;
static size_t ungrow_calls, ungrow_bytes, ungrow_whole, ungrow_bad;
static _Atomic size_t bad_frees;
static _Atomic int last_bad;

static pthread_mutex_t lk = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local unsigned my_cpu; /* threads stand in for CPUs */
static unsigned cpu_id(void) { return my_cpu; }
static void lk_acquire(void *ctx) { pthread_mutex_lock(ctx); }
static void lk_release(void *ctx) { pthread_mutex_unlock(ctx); }

static bool grow(size_t min, void **start, size_t *size, void *ctx) {
    (void)ctx;
    size_t want = grow_exact ? grow_exact : (min > grow_bytes ? min : grow_bytes);
    want = ROUND_UP(want, PAGE);
    if (nchunks == MAX_CHUNKS || want > POOL_BYTES - pool_used)
        return false;
    *start = pool + pool_used;
    *size = grow_exact ? grow_exact : want;
    chunks[nchunks++] = (chunk){pool + pool_used, *size, 0};
    pool_used += want;
    return true;
}

/* Does a block of the core heap intersect [s, e)? (The hooks run under the
 * layer's lock, which is the only lock of the core heap: walking it from
 * there is what a debugger would do.) */
typedef struct {
    uintptr_t s, e;
    bool hit;
} probe;
static void probe_block(void *ctx, void *start, size_t size, bool used) {
    probe *p = ctx;
    uintptr_t a = (uintptr_t)start;
    if (used && a < p->e && p->s < a + size)
        p->hit = true;
}
static bool any_used_block_in(uintptr_t s, uintptr_t e) {
    probe p = {s, e, false};
    kbuddy_walk(kbuddy_global_heap(), probe_block, &p);
    return p.hit;
}
static void any_block_fn(void *ctx, void *start, size_t size, bool used) {
    (void)used;
    probe_block(ctx, start, size, true);
}
static bool any_block_in(uintptr_t s, uintptr_t e) {
    probe p = {s, e, false};
    kbuddy_walk(kbuddy_global_heap(), any_block_fn, &p);
    return p.hit;
}

static bool all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static void release(void *start, size_t size, void *ctx) {
    (void)ctx;
    uintptr_t s = (uintptr_t)start;
    release_calls++;
    release_bytes += size;
    if (s % PAGE || size % PAGE || !size || s < (uintptr_t)pool || s + size > (uintptr_t)pool + pool_used) {
        release_bad++;
        return;
    }
    if (any_block_in(s, s + size)) { /* inside a region's blocks: all free */
        if (any_used_block_in(s, s + size))
            release_bad++;
        else
            memset(start, 0xDB, size); /* the contents are gone */
    } else if (!all_zero(start, size)) { /* bookkeeping: tag pages only */
        release_bad++;
    }
}

static void ungrow(void *start, size_t size, void *ctx) {
    (void)ctx;
    uintptr_t s = (uintptr_t)start, e = s + size;
    ungrow_calls++;
    ungrow_bytes += size;
    for (size_t i = 0; i < nchunks; i++) {
        chunk *c = &chunks[i];
        uintptr_t cs = (uintptr_t)c->start, ce = cs + c->size;
        if (s < cs || s >= ce)
            continue;
        bool whole = s == cs && size == c->size;
        if (c->returned || e != ce || (!whole && s % PAGE) || any_block_in(s, e))
            ungrow_bad++;
        ungrow_whole += whole;
        c->returned = size;
        return;
    }
    ungrow_bad++;
}

static void on_bad_free(void *ptr, kbuddy_status st, const char *func) {
    (void)ptr;
    (void)func;
    atomic_store(&last_bad, (int)st);
    atomic_fetch_add(&bad_frees, 1);
}

static kbuddy_malloc_hooks hooks;

static void boot(void) {
    static int done;
    if (done)
        return;
    done = 1;
    pool = mmap(NULL, POOL_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    REQUIRE(pool != MAP_FAILED);
    hooks.lock = (kbuddy_lock){lk_acquire, lk_release, &lk};
    hooks.cpu_id = cpu_id;
    hooks.grow = grow;
    hooks.grow_zeroed = true;
    hooks.bad_free = on_bad_free;
    hooks.release = release;
    hooks.release_page = PAGE;
    hooks.ungrow = ungrow;
    kbuddy_malloc_set_hooks(&hooks);
}

static kbuddy_malloc_stats stats(void) {
    kbuddy_malloc_stats st;
    kbuddy_malloc_get_stats(&st);
    return st;
}

/* The statistics add up, the check passes, the hooks saw nothing wrong. */
#define CHECK_CONSISTENT()                                                                 \
    do {                                                                                   \
        kbuddy_malloc_stats s_ = stats();                                                  \
        CHECK_EQ(s_.region_bytes, s_.heap.total + s_.heap.overhead + s_.tag_bytes);        \
        CHECK_EQ(s_.heap.allocations, s_.live_blocks + s_.cached_blocks + s_.internal_blocks); \
        CHECK_EQ(s_.regions, s_.heap.regions);                                             \
        CHECK_EQ(s_.released_bytes, release_bytes);                                        \
        CHECK_EQ(s_.regions_returned, ungrow_calls - ungrow_whole);                        \
        CHECK_EQ(release_bad, 0);                                                          \
        CHECK_EQ(ungrow_bad, 0);                                                           \
        CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);                                    \
    } while (0)

/* xorshift64 */
static uint64_t rng = 99;
static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i += 61)
        p[i] = (unsigned char)(seed + i);
}
static bool holds(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i += 61)
        if (p[i] != (unsigned char)(seed + i))
            return false;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

enum { NBLK = 3000 };
static unsigned char *blk[NBLK];
static size_t blen[NBLK];

/* Mixed blocks over several grown regions. */
static void fill_heap(size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rnd() % 100;
        blen[i] = r < 70 ? 1 + rnd() % 2000 : r < 95 ? 4096 + rnd() % 30000 : 100000 + rnd() % 400000;
        blk[i] = kbm_malloc(blen[i]);
        REQUIRE(blk[i] != NULL);
        fill(blk[i], blen[i], (unsigned)i);
    }
}

TEST(trim_gives_back_free_pages_and_wholly_free_grown_regions) {
    boot();
    fill_heap(NBLK);
    kbuddy_malloc_stats full = stats();
    CHECK(full.regions >= 4);
    CHECK_CONSISTENT();
    /* Free all but every 50th: no region is free, but most pages are. */
    for (size_t i = 0; i < NBLK; i++)
        if (i % 50) {
            kbm_free(blk[i]);
            blk[i] = NULL;
        }
    size_t calls = release_calls, ungrows = ungrow_calls, rb = release_bytes, ub = ungrow_bytes;
    size_t got = kbuddy_malloc_trim(0);
    CHECK(release_calls > calls);
    CHECK_EQ(got, (release_bytes - rb) + (ungrow_bytes - ub)); /* what the hooks were given */
    CHECK_CONSISTENT();
    for (size_t i = 0; i < NBLK; i += 50)
        CHECK(holds(blk[i], blen[i], (unsigned)i)); /* released pages were not theirs */
    /* Then the rest: every grown region but the one holding this CPU's
     * cache structure goes back, and the statistics say so. */
    for (size_t i = 0; i < NBLK; i += 50) {
        kbm_free(blk[i]);
        blk[i] = NULL;
    }
    kbuddy_malloc_stats before = stats();
    ungrows = ungrow_calls;
    rb = release_bytes;
    ub = ungrow_bytes;
    got = kbuddy_malloc_trim(0);
    kbuddy_malloc_stats after = stats();
    CHECK(ungrow_calls - ungrows >= before.regions - 1);
    CHECK(after.regions <= 1);
    CHECK_EQ(after.regions_returned, before.regions_returned + (ungrow_calls - ungrows));
    CHECK(after.region_bytes < before.region_bytes);
    CHECK_EQ(got, (release_bytes - rb) + (ungrow_bytes - ub));
    CHECK_EQ(after.live_blocks, 0);
    CHECK_CONSISTENT();
    /* The heap goes on: it grows again, and its blocks work. */
    fill_heap(200);
    for (size_t i = 0; i < 200; i++) {
        CHECK(holds(blk[i], blen[i], (unsigned)i));
        kbm_free(blk[i]);
    }
    CHECK_CONSISTENT();
    CHECK_EQ(atomic_load(&bad_frees), 0);
}

TEST(pointers_into_a_region_given_back_are_refused_as_foreign) {
    boot();
    (void)kbuddy_malloc_trim(0);
    size_t chunk0 = nchunks;
    grow_bytes = (size_t)8 << 20;
    /* Larger than anything left free: a new region. */
    unsigned char *p = kbm_malloc((size_t)3 << 20);
    REQUIRE(p != NULL);
    REQUIRE(nchunks > chunk0);
    kbm_free(p);
    size_t ungrows = ungrow_calls;
    (void)kbuddy_malloc_trim(0);
    REQUIRE(ungrow_calls > ungrows);
    kbuddy_malloc_stats before = stats();
    size_t bad = atomic_load(&bad_frees);
    kbm_free(p); /* a double free, into memory that is no longer the heap's */
    kbm_free(p + 4096);
    CHECK_EQ(atomic_load(&bad_frees), bad + 2);
    CHECK_EQ(atomic_load(&last_bad), KBUDDY_EFOREIGN);
    CHECK_EQ(kbm_malloc_usable_size(p), 0);
    kbuddy_malloc_stats after = stats();
    CHECK_EQ(after.heap.allocated, before.heap.allocated);
    CHECK_EQ(after.regions, before.regions);
    CHECK_CONSISTENT();
    grow_bytes = (size_t)4 << 20;
}

TEST(trim_keeps_regions_while_keep_asks_for_that_much_free_memory) {
    boot();
    (void)kbuddy_malloc_trim(0);
    unsigned char *p = kbm_malloc((size_t)3 << 20);
    REQUIRE(p != NULL);
    kbm_free(p);
    size_t ungrows = ungrow_calls;
    kbuddy_malloc_stats st = stats();
    (void)kbuddy_malloc_trim(st.heap.total); /* more than could remain */
    CHECK_EQ(ungrow_calls, ungrows);
    CHECK_EQ(stats().regions, st.regions);
    CHECK_CONSISTENT();
    (void)kbuddy_malloc_trim(0);
    CHECK(ungrow_calls > ungrows);
    CHECK_CONSISTENT();
}

TEST(memory_freed_in_bulk_is_released_without_a_trim) {
    boot();
    (void)kbuddy_malloc_trim(0);
    grow_bytes = (size_t)128 << 20;
    enum { N = 96 };
    static unsigned char *big[N];
    for (size_t i = 0; i < N; i++) {
        big[i] = kbm_malloc((size_t)1 << 20);
        REQUIRE(big[i] != NULL);
        fill(big[i], (size_t)1 << 20, (unsigned)i);
    }
    size_t calls = release_calls, ungrows = ungrow_calls;
    for (size_t i = 0; i < N; i++)
        kbm_free(big[i]);
    CHECK(release_calls > calls);
    CHECK_EQ(ungrow_calls, ungrows); /* the region is kept: a step's worth stays */
    CHECK_CONSISTENT();
    grow_bytes = (size_t)4 << 20;
    (void)kbuddy_malloc_trim(0);
    CHECK_CONSISTENT();
}

TEST(without_the_hooks_nothing_is_given_back) {
    boot();
    (void)kbuddy_malloc_trim(0);
    kbuddy_malloc_hooks bare = hooks;
    bare.release = NULL;
    bare.ungrow = NULL;
    kbuddy_malloc_set_hooks(&bare);
    unsigned char *p = kbm_malloc((size_t)3 << 20);
    REQUIRE(p != NULL);
    kbm_free(p);
    size_t calls = release_calls, ungrows = ungrow_calls;
    kbuddy_malloc_stats before = stats();
    CHECK_EQ(kbuddy_malloc_trim(0), 0);
    CHECK_EQ(release_calls, calls);
    CHECK_EQ(ungrow_calls, ungrows);
    CHECK_EQ(stats().regions, before.regions);
    CHECK_EQ(stats().released_bytes, before.released_bytes);
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
    kbuddy_malloc_set_hooks(&hooks);
    CHECK(kbuddy_malloc_trim(0) > 0);
    CHECK_CONSISTENT();
}

/* A CPU keeps allocating and freeing, another frees bad pointers into
 * regions that come and go, while a third trims: nothing is lost, nothing
 * refused but the bad frees, and blocks keep their contents. */
static _Atomic int stop;
static void *churner(void *arg) {
    my_cpu = (unsigned)(uintptr_t)arg;
    uint64_t x = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15u + 1;
    unsigned char *slot[64] = {0};
    size_t len[64] = {0};
    bool ok = true;
    while (!atomic_load(&stop)) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t i = x % 64;
        if (slot[i]) {
            ok &= holds(slot[i], len[i], (unsigned)i);
            kbm_free(slot[i]);
        }
        len[i] = (x >> 8) % 3 ? 1 + (x >> 16) % 3000 : ((size_t)1 << 20) + (x >> 16) % 100000;
        slot[i] = kbm_malloc(len[i]);
        if (slot[i])
            fill(slot[i], len[i], (unsigned)i);
    }
    for (size_t i = 0; i < 64; i++)
        if (slot[i]) {
            ok &= holds(slot[i], len[i], (unsigned)i);
            kbm_free(slot[i]);
        }
    kbuddy_malloc_thread_exit();
    return ok ? NULL : (void *)1;
}

static void *trimmer(void *arg) {
    my_cpu = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < 200 && !atomic_load(&stop); i++)
        (void)kbuddy_malloc_trim(i % 2 ? 0 : (size_t)1 << 20);
    kbuddy_malloc_thread_exit();
    return NULL;
}

TEST(trim_races_with_allocation_and_bad_frees_harmlessly) {
    boot();
    (void)kbuddy_malloc_trim(0);
    unsigned char *gone = kbm_malloc((size_t)3 << 20);
    REQUIRE(gone != NULL);
    kbm_free(gone);
    size_t ungrows = ungrow_calls;
    (void)kbuddy_malloc_trim(0); /* its region goes: the pool never hands it out again */
    REQUIRE(ungrow_calls > ungrows);
    size_t bad = atomic_load(&bad_frees);
    pthread_t c[2], t;
    for (uintptr_t i = 0; i < 2; i++)
        REQUIRE(pthread_create(&c[i], NULL, churner, (void *)(i + 1)) == 0);
    REQUIRE(pthread_create(&t, NULL, trimmer, (void *)3) == 0);
    size_t refused = 0;
    for (int i = 0; i < 2000; i++) {
        kbm_free(gone + 4096 * (size_t)(i % 64)); /* refused, wherever it lies now */
        refused++;
    }
    void *res;
    REQUIRE(pthread_join(t, &res) == 0);
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) {
        REQUIRE(pthread_join(c[i], &res) == 0);
        CHECK(res == NULL);
    }
    CHECK_EQ(atomic_load(&bad_frees), bad + refused);
    (void)kbuddy_malloc_trim(0);
    CHECK_EQ(stats().live_blocks, 0);
    CHECK_CONSISTENT();
}

TEST(grown_memory_the_layer_cannot_use_goes_back_whole) {
    boot();
    (void)kbuddy_malloc_trim(0);
    /* Too small to hold the tag table and a block. */
    grow_exact = 256;
    size_t whole = ungrow_whole, n0 = nchunks;
    kbuddy_malloc_stats before = stats();
    CHECK(kbm_malloc((size_t)64 << 20) == NULL);
    CHECK(nchunks > n0);
    CHECK_EQ(ungrow_whole - whole, nchunks - n0); /* every one of them */
    CHECK_EQ(stats().region_bytes, before.region_bytes);
    grow_exact = 0;
    CHECK_CONSISTENT();
    /* The region table full (KBUDDY_MALLOC_MAX_REGIONS, slots of regions
     * given back included): what grow hands over then goes back too. */
    grow_bytes = (size_t)128 << 10;
    whole = ungrow_whole;
    static void *held[KBUDDY_MALLOC_MAX_REGIONS * 8];
    size_t n = 0;
    while (n < KBUDDY_MALLOC_MAX_REGIONS * 8 && (held[n] = kbm_malloc(40000)) != NULL)
        n++;
    CHECK(n < KBUDDY_MALLOC_MAX_REGIONS * 8); /* it ran out */
    CHECK_EQ(stats().regions + stats().regions_returned, KBUDDY_MALLOC_MAX_REGIONS);
    CHECK_EQ(chunks[nchunks - 1].returned, chunks[nchunks - 1].size);
    CHECK(ungrow_whole > whole);
    for (size_t i = 0; i < n; i++)
        kbm_free(held[i]);
    grow_bytes = (size_t)4 << 20;
    (void)kbuddy_malloc_trim(0);
    CHECK_CONSISTENT();
}

KBTEST_MAIN()
