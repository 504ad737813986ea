/*
 * Unit tests of the page-frame allocator (kbuddy_frames_*): one test per
 * behaviour and error status of the public API, plus the regressions of the
 * Rust crate this allocator replaces. Every test checks results exactly and
 * verifies the allocator after each step: kbuddy_frames_check passes, the
 * walk agrees with the statistics, and largest_free is exactly the largest
 * count alloc(count, 1) satisfies (probed by trying it and one more).
 */
#include "kbtest.h"
#include "kbuddy.h"
#include "kbuddy_internal.h"

#include <stdbool.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                  */
/* ------------------------------------------------------------------------ */

/* A frame allocator whose metadata lives in a malloc'd buffer of exactly
 * kbuddy_frames_meta_size(n) bytes. */
typedef struct {
    kbuddy_frames fa;
    unsigned char *meta;
} window;

static bool window_open(window *w, size_t base, size_t n) {
    size_t size = kbuddy_frames_meta_size(n);
    w->meta = malloc(size);
    if (!w->meta)
        return false;
    if (kbuddy_frames_init(&w->fa, base, n, w->meta, size) != KBUDDY_OK) {
        free(w->meta);
        return false;
    }
    return true;
}

static void window_close(window *w) {
    free(w->meta);
    w->meta = NULL;
}

/* One run reported by kbuddy_frames_walk. */
typedef struct {
    size_t first, count;
    bool used;
} run;

typedef struct {
    run *v;
    size_t n, cap;
    bool oom;
} run_list;

static void run_list_push(run_list *l, size_t first, size_t count, bool used) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        run *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = true;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (run){first, count, used};
}

static void collect_run(void *ctx, size_t first, size_t count, bool used) {
    run_list_push(ctx, first, count, used);
}

static run_list walk_runs(const kbuddy_frames *fa) {
    run_list l = {NULL, 0, 0, false};
    kbuddy_frames_walk(fa, collect_run, &l);
    return l;
}

static void run_list_free(run_list *l) {
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

/* Append the buddy system's decomposition of the free run [a, b) (whose
 * neighbours are not free): maximal naturally aligned blocks, left to right. */
static void push_free_blocks(run_list *l, size_t a, size_t b) {
    while (a < b) {
        size_t size = 1;
        while (a % (2 * size) == 0 && 2 * size <= b - a && 2 * size != 0)
            size *= 2;
        run_list_push(l, a, size, false);
        a += size;
    }
}

static bool runs_equal(const run_list *got, const run_list *want) {
    if (got->oom || want->oom || got->n != want->n) {
        fprintf(stderr, "  walk: %zu runs, wanted %zu\n", got->n, want->n);
        return false;
    }
    for (size_t i = 0; i < got->n; i++) {
        const run *g = &got->v[i], *w = &want->v[i];
        if (g->first != w->first || g->count != w->count || g->used != w->used) {
            fprintf(stderr, "  walk run %zu: [%zu +%zu %s], wanted [%zu +%zu %s]\n", i,
                    g->first, g->count, g->used ? "used" : "free", w->first, w->count,
                    w->used ? "used" : "free");
            return false;
        }
    }
    return true;
}

/* Does the walk of fa report exactly `want` (n runs)? */
static bool walk_is(const kbuddy_frames *fa, const run *want, size_t n) {
    run_list got = walk_runs(fa);
    run_list w = {(run *)(uintptr_t)want, n, n, false};
    bool ok = runs_equal(&got, &w);
    run_list_free(&got);
    return ok;
}

/* Everything observable: statistics and the walk. */
typedef struct {
    kbuddy_frame_stats stats;
    run_list runs;
} snapshot;

static snapshot take_snapshot(const kbuddy_frames *fa) {
    snapshot s;
    kbuddy_frames_get_stats(fa, &s.stats);
    s.runs = walk_runs(fa);
    return s;
}

static bool snapshot_equal(const snapshot *a, const snapshot *b) {
    if (a->stats.total != b->stats.total || a->stats.allocated != b->stats.allocated ||
        a->stats.largest_free != b->stats.largest_free) {
        fprintf(stderr, "  stats changed: total %zu->%zu allocated %zu->%zu largest %zu->%zu\n",
                a->stats.total, b->stats.total, a->stats.allocated, b->stats.allocated,
                a->stats.largest_free, b->stats.largest_free);
        return false;
    }
    return runs_equal(&b->runs, &a->runs);
}

/* Does fa still look exactly like snapshot s? Frees s. */
static bool unchanged_since(const kbuddy_frames *fa, snapshot *s) {
    snapshot now = take_snapshot(fa);
    bool ok = snapshot_equal(s, &now);
    run_list_free(&now.runs);
    run_list_free(&s->runs);
    return ok;
}

static bool is_pow2(size_t x) { return x && !(x & (x - 1)); }

/* The state is consistent: check passes; the walk is ordered, inside the
 * window, its free runs are naturally aligned power-of-two blocks with no
 * two free buddies, adjacent used runs are merged, and its sums equal the
 * statistics; largest_free is the largest free block, alloc(largest_free, 1)
 * succeeds (and freeing it restores the state) and alloc(largest_free + 1, 1)
 * fails with ENOMEM, changing nothing. */
static bool verify(kbuddy_frames *fa) {
    bool ok = true;
    kbuddy_status st = kbuddy_frames_check(fa);
    if (st != KBUDDY_OK) {
        fprintf(stderr, "  kbuddy_frames_check: %s\n", kbuddy_strerror(st));
        ok = false;
    }
    snapshot before = take_snapshot(fa);
    const kbuddy_frame_stats *s = &before.stats;
    const run_list *l = &before.runs;
    size_t used = 0, free_frames = 0, largest = 0;
    for (size_t i = 0; i < l->n && !l->oom; i++) {
        const run *r = &l->v[i];
        if (r->count == 0 || r->first < fa->engine.lo || r->first >= fa->engine.hi ||
            r->count > fa->engine.hi - r->first) {
            fprintf(stderr, "  walk run %zu [%zu +%zu] outside the window\n", i, r->first,
                    r->count);
            ok = false;
        }
        if (i > 0) {
            const run *p = &l->v[i - 1];
            if (p->first + p->count > r->first) {
                fprintf(stderr, "  walk runs %zu and %zu out of order or overlapping\n", i - 1,
                        i);
                ok = false;
            }
            if (p->used && r->used && p->first + p->count == r->first) {
                fprintf(stderr, "  walk: adjacent used runs %zu and %zu not merged\n", i - 1, i);
                ok = false;
            }
            /* Two free buddies side by side would have been merged. */
            if (!p->used && !r->used && p->count == r->count &&
                p->first + p->count == r->first && p->first % (2 * p->count) == 0 &&
                2 * p->count != 0) {
                fprintf(stderr, "  walk: free buddies at %zu and %zu not merged\n", p->first,
                        r->first);
                ok = false;
            }
        }
        if (r->used) {
            used += r->count;
        } else {
            if (!is_pow2(r->count) || r->first % r->count != 0) {
                fprintf(stderr, "  walk: free run [%zu +%zu] is not an aligned block\n",
                        r->first, r->count);
                ok = false;
            }
            free_frames += r->count;
            if (r->count > largest)
                largest = r->count;
        }
    }
    if (l->oom)
        ok = false;
    if (used != s->allocated || used + free_frames != s->total || largest != s->largest_free) {
        fprintf(stderr,
                "  stats total %zu allocated %zu largest %zu; walk used %zu free %zu largest "
                "%zu\n",
                s->total, s->allocated, s->largest_free, used, free_frames, largest);
        ok = false;
    }
    size_t first = 0;
    if (s->largest_free) {
        st = kbuddy_frames_alloc(fa, s->largest_free, 1, &first);
        if (st != KBUDDY_OK) {
            fprintf(stderr, "  alloc(largest_free = %zu) failed: %s\n", s->largest_free,
                    kbuddy_strerror(st));
            ok = false;
        } else if ((st = kbuddy_frames_free(fa, first, s->largest_free)) != KBUDDY_OK) {
            fprintf(stderr, "  free of the largest_free probe: %s\n", kbuddy_strerror(st));
            ok = false;
        }
    }
    if (s->largest_free < SIZE_MAX) {
        st = kbuddy_frames_alloc(fa, s->largest_free + 1, 1, &first);
        if (st != KBUDDY_ENOMEM) {
            fprintf(stderr, "  alloc(largest_free + 1 = %zu) returned %s, wanted ENOMEM\n",
                    s->largest_free + 1, kbuddy_strerror(st));
            ok = false;
        }
    }
    if (!unchanged_since(fa, &before)) {
        fprintf(stderr, "  the largest_free probes changed the state\n");
        ok = false;
    }
    return ok;
}

#define VERIFY(fa) CHECK(verify(fa))

/* A small deterministic generator for the tests that want variety. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
static size_t rng_below(size_t n) { return (size_t)(rng() % n); }

/* The status kbuddy_frames_free(fa, first, count) must return, from the
 * walk: foreign if a frame is outside the window or in no run (never added),
 * else a double free if one is in a free run, else OK. */
static kbuddy_status expected_free_status(const kbuddy_frames *fa, size_t first, size_t count) {
    if (count == 0)
        return KBUDDY_EINVAL;
    if (first < fa->engine.lo || first >= fa->engine.hi || count > fa->engine.hi - first)
        return KBUDDY_EFOREIGN;
    run_list l = walk_runs(fa);
    size_t covered = 0;
    bool any_free = false;
    for (size_t i = 0; i < l.n; i++) {
        size_t a = l.v[i].first, b = a + l.v[i].count;
        size_t lo = a > first ? a : first, hi = b < first + count ? b : first + count;
        if (lo < hi) {
            covered += hi - lo;
            any_free |= !l.v[i].used;
        }
    }
    run_list_free(&l);
    if (covered != count)
        return KBUDDY_EFOREIGN;
    return any_free ? KBUDDY_EDOUBLEFREE : KBUDDY_OK;
}

/* ------------------------------------------------------------------------ */
/* Metadata size and init                                                    */
/* ------------------------------------------------------------------------ */

TEST(meta_size_at_most_four_bits_per_frame) {
    /* Every size up to 400,000, powers of two (and their neighbours) up to
     * 2^36 and sizes between them: at most 4 bits per frame flat once the
     * window is 1024 frames or more (the size holds for every base, see
     * meta_size_covers_every_base_alignment), and at most 4 bits per frame
     * plus a fixed part below that. */
    for (size_t n = 1; n <= 400000; n++) {
        size_t m = kbuddy_frames_meta_size(n);
        if (m > (n + 1) / 2 + 64 || (n >= 1024 && m > n / 2)) {
            CHECK_EQ(m, n / 2);
            fprintf(stderr, "  %zu frames: %zu bytes\n", n, m);
            break;
        }
    }
    for (unsigned k = 1; k <= 36; k++) {
        for (int d = -1; d <= 1; d++) {
            size_t n = ((size_t)1 << k) + (size_t)(intmax_t)d;
            if (n > KBUDDY_FRAMES_MAX)
                continue;
            size_t m = kbuddy_frames_meta_size(n);
            CHECK(m <= (n + 1) / 2 + 64);
            if (n >= 1024)
                CHECK(m <= n / 2);
        }
    }
    for (size_t n = 400000; n <= KBUDDY_FRAMES_MAX; n += n / 7 + 12345)
        CHECK(kbuddy_frames_meta_size(n) <= n / 2);
    /* The large windows of the requirements: 2^26 frames in at most 32 MiB
     * (4 bits per frame), and in fact about 3.03 bits per frame. */
    size_t n26 = (size_t)1 << 26;
    CHECK(kbuddy_frames_meta_size(n26) <= n26 / 2);
    CHECK(kbuddy_frames_meta_size(n26) * 8 <= n26 * 31 / 10);
}

TEST(small_windows_have_a_small_fixed_part) {
    /* Boards with 256 KiB of RAM have 64 frames of 4 KiB: their bookkeeping
     * is the bits themselves plus a few dozen bytes (the alignment slack, a
     * table of 16-bit numbers, a summary word), not 48 bytes per order.
     * Main's layout took 423 bytes for 64 frames and 1039 for 1024. */
    CHECK(kbuddy_frames_meta_size(64) <= 88);
    CHECK(kbuddy_frames_meta_size(1) <= 40);
    CHECK(kbuddy_frames_meta_size(1024) <= 464);
    for (size_t n = 1; n < 1024; n++)
        CHECK(kbuddy_frames_meta_size(n) <= (n + 1) / 2 + 64);
    /* And the window works in exactly that much, at every base alignment. */
    for (size_t base = 0; base < 130; base++) {
        window w;
        REQUIRE(window_open(&w, base, 64));
        CHECK_STATUS(kbuddy_frames_add(&w.fa, base, 64), KBUDDY_OK);
        size_t f[64], got = 0;
        while (got < 64 && kbuddy_frames_alloc(&w.fa, 1, 1, &f[got]) == KBUDDY_OK)
            got++;
        CHECK_EQ(got, 64);
        VERIFY(&w.fa);
        for (size_t i = 0; i < got; i += 2)
            CHECK_STATUS(kbuddy_frames_free(&w.fa, f[i], 1), KBUDDY_OK);
        VERIFY(&w.fa);
        for (size_t i = 1; i < got; i += 2)
            CHECK_STATUS(kbuddy_frames_free(&w.fa, f[i], 1), KBUDDY_OK);
        VERIFY(&w.fa);
        kbuddy_frame_stats st;
        kbuddy_frames_get_stats(&w.fa, &st);
        CHECK_EQ(st.largest_free, base % 64 ? 32u : 64u);
        window_close(&w);
    }
}

TEST(meta_size_grows_with_the_window) {
    /* A buffer big enough for n frames is big enough for fewer. */
    size_t prev = 0;
    for (size_t n = 1; n <= 70000; n++) {
        size_t m = kbuddy_frames_meta_size(n);
        CHECK(m >= prev);
        if (m < prev)
            break;
        prev = m;
    }
}

TEST(init_with_too_small_meta_buffer_is_enomem) {
    for (size_t n = 1; n <= 5000; n += 37) {
        size_t need = kbuddy_frames_meta_size(n);
        unsigned char *meta = malloc(need);
        REQUIRE(meta);
        kbuddy_frames fa;
        CHECK_STATUS(kbuddy_frames_init(&fa, 12345, n, meta, need - 1), KBUDDY_ENOMEM);
        CHECK_STATUS(kbuddy_frames_init(&fa, 12345, n, meta, 0), KBUDDY_ENOMEM);
        CHECK_STATUS(kbuddy_frames_init(&fa, 12345, n, meta, need), KBUDDY_OK);
        VERIFY(&fa);
        free(meta);
    }
    /* A window too large for any buffer (2^40 frames needs 400 GiB). */
    unsigned char small[256];
    kbuddy_frames fa;
    CHECK_STATUS(kbuddy_frames_init(&fa, 0, (size_t)1 << 40, small, sizeof small),
                 KBUDDY_ENOMEM);
}

/* Bytes init lays out for the window [base, base + n) (white box: the
 * layout of frames.c), to hold kbuddy_frames_meta_size to its word. */
static size_t layout_bytes(size_t base, size_t n) {
    if (n < KB_PACKED_UNITS)
        return 7u + (kb_packed_words(base, base + n) + (n + 63) / 64) * sizeof(kb_word);
    size_t words = kb_engine_words(base, base + n);
    if (words == 0)
        return SIZE_MAX;
    return 7u + kb_orders_for(n) * sizeof(kb_order) + (words + (n + 63) / 64) * sizeof(kb_word);
}

TEST(meta_size_is_honest_up_to_the_documented_limit) {
    /* Windows up to KBUDDY_FRAMES_MAX get a finite size that covers the
     * layout at every base alignment (such windows cannot be allocated
     * here, so the layout is computed, not built); above it, SIZE_MAX and
     * ENOMEM, as the header says. */
    const size_t max = KBUDDY_FRAMES_MAX;
    CHECK_EQ(max, (size_t)1 << 36);
    size_t ns[] = {max, max - 1, max / 2 + 1, ((size_t)1 << 33) + 12345, (size_t)1 << 30, 1024};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        size_t n = ns[i], m = kbuddy_frames_meta_size(n);
        CHECK(m != SIZE_MAX);
        CHECK(m <= n / 2 + 640);
        for (unsigned k = 0; k < 40; k++) {
            size_t base = ((size_t)1 << k) - 1; /* the worst: just below a boundary */
            CHECK(layout_bytes(base, n) <= m);
            CHECK(layout_bytes(base + 1, n) <= m);
        }
    }
    /* At the limit the bitmaps themselves cost 3 bits a frame: the size is
     * not inflated either. */
    CHECK(kbuddy_frames_meta_size(max) >= max / 8 * 3);
    CHECK(kbuddy_frames_meta_size(max) * 8 <= max / 100 * 304);
    CHECK_EQ(kbuddy_frames_meta_size(max + 1), SIZE_MAX);
    CHECK_EQ(kbuddy_frames_meta_size((size_t)1 << 40), SIZE_MAX);
    CHECK_EQ(kbuddy_frames_meta_size(SIZE_MAX), SIZE_MAX);
    unsigned char meta[512];
    kbuddy_frames fa;
    CHECK_STATUS(kbuddy_frames_init(&fa, 0, max + 1, meta, sizeof meta), KBUDDY_ENOMEM);
}

TEST(meta_size_covers_every_base_alignment) {
    /* Every window of up to 20,000 frames (both layouts and the switch
     * between them) at the bases that matter: just below, at and just after
     * each power of two, where the orders' blocks straddle the window's
     * ends the most. */
    for (size_t n = 1; n <= 20000; n++) {
        size_t m = kbuddy_frames_meta_size(n);
        for (unsigned k = 0; k < 44; k++) {
            size_t p = (size_t)1 << k;
            if (layout_bytes(p - 1, n) > m || layout_bytes(p, n) > m || layout_bytes(p + 1, n) > m) {
                CHECK(layout_bytes(p - 1, n) <= m);
                fprintf(stderr, "  %zu frames at base 2^%u: over\n", n, k);
                return;
            }
        }
    }
    /* The windows at the switch, built: guard bytes after the buffer stay. */
    size_t ns[] = {1023, 1024, 1025, 1037, KB_PACKED_UNITS - 1, KB_PACKED_UNITS};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        size_t n = ns[i], m = kbuddy_frames_meta_size(n);
        unsigned char *buf = malloc(m + 8);
        REQUIRE(buf);
        for (unsigned k = 0; k < 20; k++) {
            size_t base = ((size_t)1 << k) - 1;
            memset(buf, 0xA5, m + 8);
            kbuddy_frames fa;
            CHECK_STATUS(kbuddy_frames_init(&fa, base, n, buf, m), KBUDDY_OK);
            CHECK_STATUS(kbuddy_frames_add(&fa, base, n), KBUDDY_OK);
            size_t f = 0;
            while (kbuddy_frames_alloc(&fa, 1 + (f & 1), 1, &f) == KBUDDY_OK)
                ;
            while (kbuddy_frames_alloc(&fa, 1, 1, &f) == KBUDDY_OK)
                ;
            CHECK_STATUS(kbuddy_frames_check(&fa), KBUDDY_OK);
            kbuddy_frame_stats st;
            kbuddy_frames_get_stats(&fa, &st);
            CHECK_EQ(st.allocated, n);
            for (size_t j = m; j < m + 8; j++)
                CHECK_EQ(buf[j], 0xA5);
        }
        free(buf);
    }
}

TEST(init_rejects_bad_arguments) {
    unsigned char meta[4096];
    kbuddy_frames fa;
    CHECK_STATUS(kbuddy_frames_init(NULL, 0, 16, meta, sizeof meta), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_init(&fa, 0, 16, NULL, sizeof meta), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_init(&fa, 0, 0, meta, sizeof meta), KBUDDY_EINVAL);
    /* base + nframes wraps around the end of size_t. */
    CHECK_STATUS(kbuddy_frames_init(&fa, SIZE_MAX - 15, 16, meta, sizeof meta), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_init(&fa, SIZE_MAX, 1, meta, sizeof meta), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_init(&fa, 1, SIZE_MAX, meta, sizeof meta), KBUDDY_EINVAL);
}

TEST(nothing_is_free_until_added) {
    window w;
    REQUIRE(window_open(&w, 1000, 4096));
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.total, 0);
    CHECK_EQ(s.allocated, 0);
    CHECK_EQ(s.largest_free, 0);
    size_t first = 77;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 1, &first), KBUDDY_ENOMEM);
    CHECK_EQ(first, 77);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 1000, 1), KBUDDY_EFOREIGN);
    CHECK(walk_is(&w.fa, NULL, 0));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(odd_aligned_meta_buffers_work_and_stay_inside_the_buffer) {
    /* The buffer may start at any byte; init and every operation after it
     * must stay inside [meta, meta + meta_size). Guard bytes on both sides
     * must survive a workload. */
    const size_t base = 777, n = 3000;
    size_t need = kbuddy_frames_meta_size(n);
    for (size_t off = 0; off < 16; off++) {
        unsigned char *buf = malloc(need + 64);
        REQUIRE(buf);
        memset(buf, 0xA5, need + 64);
        unsigned char *meta = buf + 16 + off;
        kbuddy_frames fa;
        CHECK_STATUS(kbuddy_frames_init(&fa, base, n, meta, need), KBUDDY_OK);
        CHECK_STATUS(kbuddy_frames_add(&fa, base, n), KBUDDY_OK);
        size_t firsts[64], counts[64];
        for (size_t i = 0; i < 64; i++) {
            counts[i] = 1 + i % 13;
            CHECK_STATUS(kbuddy_frames_alloc(&fa, counts[i], (size_t)1 << (i % 5), &firsts[i]),
                         KBUDDY_OK);
        }
        for (size_t i = 0; i < 64; i += 2)
            CHECK_STATUS(kbuddy_frames_free(&fa, firsts[i], counts[i]), KBUDDY_OK);
        VERIFY(&fa);
        for (size_t i = 1; i < 64; i += 2)
            CHECK_STATUS(kbuddy_frames_free(&fa, firsts[i], counts[i]), KBUDDY_OK);
        VERIFY(&fa);
        run_list want = {NULL, 0, 0, false};
        push_free_blocks(&want, base, base + n);
        run_list got = walk_runs(&fa);
        CHECK(runs_equal(&got, &want));
        run_list_free(&got);
        run_list_free(&want);
        for (size_t i = 0; i < 16 + off; i++)
            CHECK_EQ(buf[i], 0xA5);
        for (size_t i = 16 + off + need; i < need + 64; i++)
            CHECK_EQ(buf[i], 0xA5);
        free(buf);
    }
}

TEST(init_forgets_the_previous_state) {
    window w;
    REQUIRE(window_open(&w, 0, 1024));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 1024), KBUDDY_OK);
    size_t first;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 100, 1, &first), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_init(&w.fa, 0, 1024, w.meta, kbuddy_frames_meta_size(1024)),
                 KBUDDY_OK);
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.total, 0);
    CHECK_EQ(s.allocated, 0);
    CHECK(walk_is(&w.fa, NULL, 0));
    VERIFY(&w.fa);
    window_close(&w);
}

/* ------------------------------------------------------------------------ */
/* add                                                                       */
/* ------------------------------------------------------------------------ */

TEST(add_makes_frames_free_as_aligned_blocks) {
    window w;
    REQUIRE(window_open(&w, 0, 64));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 3, 26), KBUDDY_OK); /* [3, 29) */
    static const run want[] = {{3, 1, false}, {4, 4, false}, {8, 8, false},
                               {16, 8, false}, {24, 4, false}, {28, 1, false}};
    CHECK(walk_is(&w.fa, want, 6));
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.total, 26);
    CHECK_EQ(s.allocated, 0);
    CHECK_EQ(s.largest_free, 8);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(adjacent_adds_merge_into_one_block) {
    /* Frame by frame, in increasing, decreasing and scrambled order: the
     * result is one block of the whole window every time. */
    for (int pass = 0; pass < 3; pass++) {
        window w;
        REQUIRE(window_open(&w, 4096, 1024));
        for (size_t i = 0; i < 1024; i++) {
            size_t f = pass == 0 ? i : pass == 1 ? 1023 - i : (i * 389) % 1024;
            CHECK_STATUS(kbuddy_frames_add(&w.fa, 4096 + f, 1), KBUDDY_OK);
        }
        static const run want[] = {{4096, 1024, false}};
        CHECK(walk_is(&w.fa, want, 1));
        kbuddy_frame_stats s;
        kbuddy_frames_get_stats(&w.fa, &s);
        CHECK_EQ(s.total, 1024);
        CHECK_EQ(s.largest_free, 1024);
        VERIFY(&w.fa);
        window_close(&w);
    }
    /* Two runs of odd lengths meeting at an odd frame. */
    window w;
    REQUIRE(window_open(&w, 0, 256));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 37, 64), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 37), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 101, 155), KBUDDY_OK);
    static const run whole[] = {{0, 256, false}};
    CHECK(walk_is(&w.fa, whole, 1));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(add_next_to_allocated_frames_merges_once_they_are_freed) {
    window w;
    REQUIRE(window_open(&w, 0, 8));
    size_t first;
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 4), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 4, 1, &first), KBUDDY_OK);
    CHECK_EQ(first, 0);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 4, 4), KBUDDY_OK);
    static const run mid[] = {{0, 4, true}, {4, 4, false}};
    CHECK(walk_is(&w.fa, mid, 2));
    VERIFY(&w.fa);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, 4), KBUDDY_OK);
    static const run whole[] = {{0, 8, false}};
    CHECK(walk_is(&w.fa, whole, 1));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(add_outside_the_window_is_einval) {
    window w;
    REQUIRE(window_open(&w, 1000, 100)); /* [1000, 1100) */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 1010, 10), KBUDDY_OK);
    snapshot s = take_snapshot(&w.fa);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 999, 1), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 999, 2), KBUDDY_EINVAL);  /* straddles base */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 1099, 2), KBUDDY_EINVAL); /* straddles the end */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 1100, 1), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 5000), KBUDDY_EINVAL);   /* covers it all */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 1050, SIZE_MAX), KBUDDY_EINVAL); /* wraps */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, SIZE_MAX, 2), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 1050, 0), KBUDDY_EINVAL); /* count 0 */
    CHECK_STATUS(kbuddy_frames_add(NULL, 1050, 1), KBUDDY_EINVAL);
    CHECK(unchanged_since(&w.fa, &s));
    VERIFY(&w.fa);
    /* The window's own edges are fine. */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 1000, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 1099, 1), KBUDDY_OK);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(add_overlapping_added_frames_is_eoverlap) {
    window w;
    REQUIRE(window_open(&w, 0, 256));
    size_t first;
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 100, 50), KBUDDY_OK); /* [100, 150) */
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 4, 4, &first), KBUDDY_OK);
    CHECK_EQ(first, 100);
    snapshot s = take_snapshot(&w.fa);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 100, 50), KBUDDY_EOVERLAP);  /* the same run */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 90, 11), KBUDDY_EOVERLAP);   /* first frame */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 149, 10), KBUDDY_EOVERLAP);  /* last frame */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 256), KBUDDY_EOVERLAP);   /* covering */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 120, 1), KBUDDY_EOVERLAP);   /* a free frame */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 102, 1), KBUDDY_EOVERLAP);   /* an allocated one */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 103, 1), KBUDDY_EOVERLAP);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 99, 2), KBUDDY_EOVERLAP);    /* allocated edge */
    CHECK(unchanged_since(&w.fa, &s));
    VERIFY(&w.fa);
    /* Right next to the added run on both sides is not an overlap. */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 99, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 150, 1), KBUDDY_OK);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(add_of_many_runs_then_everything_is_allocatable_frame_by_frame) {
    /* Runs with never-added gaps between them: alloc(1) hands out exactly
     * the added frames, each once, and then fails. */
    window w;
    const size_t base = 5003, n = 2000;
    REQUIRE(window_open(&w, base, n));
    unsigned char *added = calloc(n, 1), *taken = calloc(n, 1);
    REQUIRE(added && taken);
    size_t total = 0;
    for (size_t f = 0; f < n;) {
        size_t len = 1 + rng_below(40), gap = rng_below(9);
        if (len > n - f)
            len = n - f;
        CHECK_STATUS(kbuddy_frames_add(&w.fa, base + f, len), KBUDDY_OK);
        memset(added + f, 1, len);
        total += len;
        f += len + gap;
    }
    VERIFY(&w.fa);
    size_t got = 0, first;
    while (kbuddy_frames_alloc(&w.fa, 1, 1, &first) == KBUDDY_OK) {
        REQUIRE(first >= base && first < base + n);
        CHECK(added[first - base]);
        CHECK(!taken[first - base]);
        taken[first - base] = 1;
        got++;
    }
    CHECK_EQ(got, total);
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.total, total);
    CHECK_EQ(s.allocated, total);
    CHECK_EQ(s.largest_free, 0);
    VERIFY(&w.fa);
    free(added);
    free(taken);
    window_close(&w);
}

/* ------------------------------------------------------------------------ */
/* alloc                                                                     */
/* ------------------------------------------------------------------------ */

TEST(three_frame_runs_pack_341_into_1024) {
    window w;
    REQUIRE(window_open(&w, 0, 1024));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 1024), KBUDDY_OK);
    unsigned char owner[1024] = {0};
    for (int i = 0; i < 341; i++) {
        size_t first = 0;
        CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 3, 1, &first), KBUDDY_OK);
        REQUIRE(first <= 1021);
        for (size_t f = first; f < first + 3; f++) {
            CHECK(!owner[f]);
            owner[f] = 1;
        }
    }
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.allocated, 1023);
    CHECK_EQ(s.largest_free, 1);
    size_t first;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 3, 1, &first), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 2, 1, &first), KBUDDY_ENOMEM);
    VERIFY(&w.fa);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 1, &first), KBUDDY_OK);
    CHECK(!owner[first]);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(alloc_takes_exact_count_not_a_power_of_two) {
    /* Every count from 1 to 100 in a fresh 128-frame window: exactly count
     * frames are allocated, and the rest of the window stays allocatable. */
    for (size_t count = 1; count <= 100; count++) {
        window w;
        REQUIRE(window_open(&w, 0, 128));
        CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 128), KBUDDY_OK);
        size_t first;
        CHECK_STATUS(kbuddy_frames_alloc(&w.fa, count, 1, &first), KBUDDY_OK);
        kbuddy_frame_stats s;
        kbuddy_frames_get_stats(&w.fa, &s);
        CHECK_EQ(s.allocated, count);
        run_list l = walk_runs(&w.fa);
        size_t used = 0, free_frames = 0;
        for (size_t i = 0; i < l.n; i++) {
            if (l.v[i].used) {
                CHECK_EQ(l.v[i].first, first);
                CHECK_EQ(l.v[i].count, count);
                used++;
            } else {
                free_frames += l.v[i].count;
            }
        }
        CHECK_EQ(used, 1);
        CHECK_EQ(free_frames, 128 - count);
        run_list_free(&l);
        VERIFY(&w.fa);
        /* The remainder really is usable: single frames fill it. */
        size_t more = 0, f;
        while (kbuddy_frames_alloc(&w.fa, 1, 1, &f) == KBUDDY_OK) {
            CHECK(f < first || f >= first + count);
            more++;
        }
        CHECK_EQ(more, 128 - count);
        VERIFY(&w.fa);
        window_close(&w);
    }
}

TEST(alloc_aligns_in_absolute_frame_numbers) {
    /* A window whose base is odd: align is about frame numbers, not offsets
     * into the window. */
    window w;
    const size_t base = 1000003, n = 5000;
    REQUIRE(window_open(&w, base, n));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base, n), KBUDDY_OK);
    for (unsigned k = 0; k <= 11; k++) {
        size_t align = (size_t)1 << k, first = 0;
        for (size_t count = 1; count <= 9; count += 4) {
            CHECK_STATUS(kbuddy_frames_alloc(&w.fa, count, align, &first), KBUDDY_OK);
            CHECK_EQ(first % align, 0);
            CHECK(first >= base && first + count <= base + n);
            CHECK_STATUS(kbuddy_frames_free(&w.fa, first, count), KBUDDY_OK);
        }
    }
    VERIFY(&w.fa);
    /* The window [1000003, 1005003) holds exactly one 2048-aligned block,
     * [1001472, 1003520), and no 4096-aligned one ([999424, 1003520) starts
     * before the window, [1003520, 1007616) ends after it). */
    size_t first;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 4096, &first), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 2048, &first), KBUDDY_OK);
    CHECK_EQ(first, 1001472);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 2048, &first), KBUDDY_ENOMEM);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(two_megabyte_huge_page_alignment) {
    /* 512-frame pages in a window with an odd base and odd size: every
     * aligned 512 block that lies fully inside is handed out, no more. */
    window w;
    const size_t base = 3 * 512 + 17, n = 20 * 512 + 300;
    REQUIRE(window_open(&w, base, n));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base, n), KBUDDY_OK);
    size_t lo = (base + 511) / 512 * 512, hi = (base + n) / 512 * 512;
    size_t expect = (hi - lo) / 512, got = 0, first;
    while (kbuddy_frames_alloc(&w.fa, 512, 512, &first) == KBUDDY_OK) {
        CHECK_EQ(first % 512, 0);
        CHECK(first >= lo && first + 512 <= hi);
        got++;
    }
    CHECK_EQ(got, expect);
    VERIFY(&w.fa);
    /* The edges stay available for small allocations. */
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.total - s.allocated, (lo - base) + (base + n - hi));
    window_close(&w);
}

TEST(gigabyte_huge_page_alignment) {
    /* 2^18-frame (1 GiB of 4 KiB) pages, with 2 MiB pages and single frames
     * taken around them first. */
    const size_t giga = (size_t)1 << 18;
    const size_t base = giga - 12345, n = 3 * giga + 24690; /* [giga-12345, 4 giga+12345) */
    window w;
    REQUIRE(window_open(&w, base, n));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base, n), KBUDDY_OK);
    size_t first;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 1, &first), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 512, 512, &first), KBUDDY_OK);
    CHECK_EQ(first % 512, 0);
    size_t pages[4], got = 0;
    while (got < 4 && kbuddy_frames_alloc(&w.fa, giga, giga, &pages[got]) == KBUDDY_OK) {
        CHECK_EQ(pages[got] % giga, 0);
        got++;
    }
    /* Three aligned gigabyte blocks lie inside the window; the small
     * allocations take blocks of the unaligned edges ([giga - 12345, giga)
     * and [4 giga, 4 giga + 12345) hold blocks of up to 8192 frames), not
     * one of them. */
    CHECK_EQ(got, 3);
    VERIFY(&w.fa);
    for (size_t i = 0; i < got; i++)
        CHECK_STATUS(kbuddy_frames_free(&w.fa, pages[i], giga), KBUDDY_OK);
    VERIFY(&w.fa);
    window_close(&w);

    /* Without the small allocations all three are there. */
    REQUIRE(window_open(&w, base, n));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base, n), KBUDDY_OK);
    for (got = 0; got < 4 && kbuddy_frames_alloc(&w.fa, giga, giga, &pages[got]) == KBUDDY_OK;)
        got++;
    CHECK_EQ(got, 3);
    CHECK_EQ(pages[0] % giga, 0);
    CHECK_EQ(pages[1] % giga, 0);
    CHECK_EQ(pages[2] % giga, 0);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(gigabyte_page_is_placed_away_from_small_allocations) {
    /* Small allocations must not split a 1 GiB block while smaller free
     * blocks exist: after they are made, a 1 GiB page is still there. */
    const size_t giga = (size_t)1 << 18;
    window w;
    REQUIRE(window_open(&w, 0, giga + 4096));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, giga + 4096), KBUDDY_OK);
    size_t first;
    for (int i = 0; i < 1000; i++)
        CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1 + (size_t)i % 4, 1, &first), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, giga, giga, &first), KBUDDY_OK);
    CHECK_EQ(first, 0);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(alloc_rejects_bad_arguments) {
    window w;
    REQUIRE(window_open(&w, 0, 64));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 64), KBUDDY_OK);
    snapshot s = take_snapshot(&w.fa);
    size_t first = 1234;
    CHECK_STATUS(kbuddy_frames_alloc(NULL, 1, 1, &first), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 1, NULL), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 0, 1, &first), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 0, &first), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 3, &first), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 12, &first), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, SIZE_MAX, &first), KBUDDY_EINVAL);
    CHECK_EQ(first, 1234);
    CHECK(unchanged_since(&w.fa, &s));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(alloc_larger_than_the_window_is_enomem) {
    window w;
    REQUIRE(window_open(&w, 0, 100));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 100), KBUDDY_OK);
    snapshot s = take_snapshot(&w.fa);
    size_t first = 1234;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 65, 1, &first), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 101, 1, &first), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, SIZE_MAX, 1, &first), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, SIZE_MAX / 2 + 2, 1, &first), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 128, &first), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, (size_t)1 << 63, &first), KBUDDY_ENOMEM);
    CHECK_EQ(first, 1234);
    CHECK(unchanged_since(&w.fa, &s));
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 64, 64, &first), KBUDDY_OK);
    CHECK_EQ(first, 0);
    VERIFY(&w.fa);
    window_close(&w);
}

/* Is there a free block of at least `need` frames (free runs in the walk are
 * naturally aligned blocks, and a free block holds aligned blocks of every
 * smaller size)? */
static bool aligned_free_block_exists(const kbuddy_frames *fa, size_t need) {
    run_list l = walk_runs(fa);
    bool found = false;
    for (size_t i = 0; i < l.n; i++)
        if (!l.v[i].used && l.v[i].count >= need)
            found = true;
    run_list_free(&l);
    return found;
}

TEST(never_enomem_while_aligned_free_block_exists) {
    /* Fragment a window, then try every count 1..300 and alignment 1..1024:
     * alloc succeeds exactly when a free, naturally aligned block of at
     * least max(count, align) frames exists; a success is undone and must
     * leave the state as it was. */
    window w;
    const size_t base = 9001, n = 6000;
    REQUIRE(window_open(&w, base, n));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base, n), KBUDDY_OK);
    size_t firsts[400], counts[400], live = 0;
    for (int round = 0; round < 3; round++) {
        while (live < 400) {
            size_t c = 1 + rng_below(round == 2 ? 4 : 40), first;
            if (kbuddy_frames_alloc(&w.fa, c, (size_t)1 << rng_below(4), &first) != KBUDDY_OK)
                break;
            firsts[live] = first;
            counts[live++] = c;
        }
        for (size_t i = 0; i < live;) {
            if (rng_below(2)) {
                CHECK_STATUS(kbuddy_frames_free(&w.fa, firsts[i], counts[i]), KBUDDY_OK);
                firsts[i] = firsts[--live];
                counts[i] = counts[live];
            } else {
                i++;
            }
        }
        VERIFY(&w.fa);
        for (size_t count = 1; count <= 300; count++) {
            for (size_t align = 1; align <= 1024; align *= 2) {
                size_t need = 1;
                while (need < count || need < align)
                    need *= 2;
                bool exists = aligned_free_block_exists(&w.fa, need);
                size_t first;
                kbuddy_status st = kbuddy_frames_alloc(&w.fa, count, align, &first);
                CHECK_STATUS(st, exists ? KBUDDY_OK : KBUDDY_ENOMEM);
                if (st == KBUDDY_OK) {
                    CHECK_EQ(first % align, 0);
                    CHECK_STATUS(kbuddy_frames_free(&w.fa, first, count), KBUDDY_OK);
                }
            }
        }
        VERIFY(&w.fa);
    }
    window_close(&w);
}

TEST(free_run_longer_than_every_block_is_not_a_promise) {
    /* [4, 12) is free but made of two blocks that are not buddies: the
     * largest naturally aligned free block is 4, so largest_free is 4 and a
     * 5-frame request may fail; 4-frame requests succeed twice. */
    window w;
    REQUIRE(window_open(&w, 0, 16));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 16), KBUDDY_OK);
    size_t first;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 16, 1, &first), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 4, 8), KBUDDY_OK);
    static const run want[] = {{0, 4, true}, {4, 4, false}, {8, 4, false}, {12, 4, true}};
    CHECK(walk_is(&w.fa, want, 4));
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.largest_free, 4);
    VERIFY(&w.fa);
    size_t a, b;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 4, 4, &a), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 4, 1, &b), KBUDDY_OK);
    CHECK((a == 4 && b == 8) || (a == 8 && b == 4));
    VERIFY(&w.fa);
    window_close(&w);
}

/* ------------------------------------------------------------------------ */
/* free                                                                      */
/* ------------------------------------------------------------------------ */

TEST(free_of_whole_allocations_merges_back_into_one_block) {
    window w;
    const size_t base = 2048, n = 1024;
    REQUIRE(window_open(&w, base, n));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base, n), KBUDDY_OK);
    size_t firsts[1024], counts[1024], live = 0, first;
    for (size_t c = 1; kbuddy_frames_alloc(&w.fa, c, 1, &first) == KBUDDY_OK; c = c % 7 + 1) {
        firsts[live] = first;
        counts[live++] = c;
    }
    VERIFY(&w.fa);
    /* Free in a scrambled order. */
    for (size_t i = 0; i < live; i++) {
        size_t j = i + rng_below(live - i), tf = firsts[i], tc = counts[i];
        firsts[i] = firsts[j];
        counts[i] = counts[j];
        firsts[j] = tf;
        counts[j] = tc;
        CHECK_STATUS(kbuddy_frames_free(&w.fa, firsts[i], counts[i]), KBUDDY_OK);
    }
    static const run want[] = {{2048, 1024, false}};
    CHECK(walk_is(&w.fa, want, 1));
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.allocated, 0);
    CHECK_EQ(s.total, 1024);
    CHECK_EQ(s.largest_free, 1024);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(partial_free_of_an_allocation) {
    window w;
    REQUIRE(window_open(&w, 0, 64));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 64), KBUDDY_OK);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 10, 16, &f), KBUDDY_OK);
    REQUIRE(f == 0 || f == 16 || f == 32 || f == 48);
    /* The middle: [f+3, f+7). */
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f + 3, 4), KBUDDY_OK);
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.allocated, 6);
    run_list l = walk_runs(&w.fa);
    size_t used_runs = 0;
    for (size_t i = 0; i < l.n; i++) {
        if (l.v[i].used) {
            CHECK(l.v[i].first == f ? l.v[i].count == 3
                                    : l.v[i].first == f + 7 && l.v[i].count == 3);
            used_runs++;
        }
    }
    CHECK_EQ(used_runs, 2);
    run_list_free(&l);
    VERIFY(&w.fa);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f + 3, 4), KBUDDY_EDOUBLEFREE);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f + 2, 2), KBUDDY_EDOUBLEFREE);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 10), KBUDDY_EDOUBLEFREE);
    /* The head frame by frame, then the tail at once. */
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f + 2, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f + 1, 1), KBUDDY_OK);
    VERIFY(&w.fa);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f + 7, 3), KBUDDY_OK);
    static const run whole[] = {{0, 64, false}};
    CHECK(walk_is(&w.fa, whole, 1));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(partial_free_returns_the_tail_of_a_huge_page) {
    /* Like free_pages_exact: take 512 aligned frames, keep the first 100. */
    window w;
    REQUIRE(window_open(&w, 512, 512));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 512, 512), KBUDDY_OK);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 512, 512, &f), KBUDDY_OK);
    CHECK_EQ(f, 512);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 612, 412), KBUDDY_OK);
    run_list want = {NULL, 0, 0, false};
    run_list_push(&want, 512, 100, true);
    push_free_blocks(&want, 612, 1024);
    run_list got = walk_runs(&w.fa);
    CHECK(runs_equal(&got, &want));
    run_list_free(&got);
    run_list_free(&want);
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.allocated, 100);
    CHECK_EQ(s.largest_free, 256);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(one_free_may_span_several_allocations) {
    window w;
    REQUIRE(window_open(&w, 0, 8));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 8), KBUDDY_OK);
    size_t a, b, c;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 4, 4, &a), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 2, 2, &b), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 2, 2, &c), KBUDDY_OK);
    static const run full[] = {{0, 8, true}};
    CHECK(walk_is(&w.fa, full, 1));
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 1, 6), KBUDDY_OK);
    static const run ends[] = {{0, 1, true}, {1, 1, false}, {2, 2, false},
                               {4, 2, false}, {6, 1, false}, {7, 1, true}};
    CHECK(walk_is(&w.fa, ends, 6));
    VERIFY(&w.fa);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, 8), KBUDDY_EDOUBLEFREE);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 7, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, 1), KBUDDY_OK);
    static const run whole[] = {{0, 8, false}};
    CHECK(walk_is(&w.fa, whole, 1));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(free_outside_the_window_is_eforeign) {
    window w;
    REQUIRE(window_open(&w, 1000, 100));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 1000, 100), KBUDDY_OK);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 100, 1, &f), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 64, 1, &f), KBUDDY_OK);
    size_t g;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 8, 1, &g), KBUDDY_OK);
    snapshot s = take_snapshot(&w.fa);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 999, 1), KBUDDY_EFOREIGN);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, 1), KBUDDY_EFOREIGN);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 999, 2), KBUDDY_EFOREIGN); /* straddles base */
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 1100, 1), KBUDDY_EFOREIGN);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 1099, 2), KBUDDY_EFOREIGN); /* straddles end */
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, SIZE_MAX), KBUDDY_EFOREIGN); /* wraps */
    CHECK_STATUS(kbuddy_frames_free(&w.fa, SIZE_MAX, 1), KBUDDY_EFOREIGN);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 1000, 101), KBUDDY_EFOREIGN);
    CHECK(unchanged_since(&w.fa, &s));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(free_of_never_added_frames_is_eforeign) {
    window w;
    REQUIRE(window_open(&w, 0, 64));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 16, 16), KBUDDY_OK);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 16, 1, &f), KBUDDY_OK);
    CHECK_EQ(f, 16);
    snapshot s = take_snapshot(&w.fa);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, 1), KBUDDY_EFOREIGN);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 40, 8), KBUDDY_EFOREIGN);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 15, 2), KBUDDY_EFOREIGN); /* allocated + not added */
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 31, 2), KBUDDY_EFOREIGN);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, 64), KBUDDY_EFOREIGN);
    CHECK(unchanged_since(&w.fa, &s));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(free_of_free_frames_is_edoublefree) {
    window w;
    REQUIRE(window_open(&w, 0, 64));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 64), KBUDDY_OK);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 8, 8, &f), KBUDDY_OK);
    snapshot s = take_snapshot(&w.fa);
    size_t other = f == 0 ? 8 : 0; /* a free frame */
    CHECK_STATUS(kbuddy_frames_free(&w.fa, other, 1), KBUDDY_EDOUBLEFREE);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, other, 8), KBUDDY_EDOUBLEFREE);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, 64), KBUDDY_EDOUBLEFREE);
    /* Runs partly allocated, partly free, on either side. */
    if (f > 0)
        CHECK_STATUS(kbuddy_frames_free(&w.fa, f - 1, 9), KBUDDY_EDOUBLEFREE);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 9), KBUDDY_EDOUBLEFREE);
    CHECK(unchanged_since(&w.fa, &s));
    VERIFY(&w.fa);
    /* Free it, then free it again. */
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 8), KBUDDY_OK);
    s = take_snapshot(&w.fa);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 8), KBUDDY_EDOUBLEFREE);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f + 7, 1), KBUDDY_EDOUBLEFREE);
    CHECK(unchanged_since(&w.fa, &s));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(foreign_frames_take_precedence_over_free_ones) {
    /* A run with both never-added and free frames (in either order) is
     * reported as foreign. */
    window w;
    REQUIRE(window_open(&w, 0, 64));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 8, 8), KBUDDY_OK);
    snapshot s = take_snapshot(&w.fa);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 8, 9), KBUDDY_EFOREIGN);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 7, 9), KBUDDY_EFOREIGN);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 60, 5), KBUDDY_EFOREIGN);
    CHECK(unchanged_since(&w.fa, &s));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(free_with_zero_count_or_null_is_einval) {
    window w;
    REQUIRE(window_open(&w, 0, 64));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 64), KBUDDY_OK);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 8, 1, &f), KBUDDY_OK);
    snapshot s = take_snapshot(&w.fa);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 0), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 1000, 0), KBUDDY_EINVAL);
    CHECK_STATUS(kbuddy_frames_free(NULL, f, 8), KBUDDY_EINVAL);
    CHECK(unchanged_since(&w.fa, &s));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(refused_free_changes_nothing) {
    /* A busy window; every kind of refused free, each followed by a
     * comparison of the whole observable state. */
    window w;
    const size_t base = 333, n = 1500;
    REQUIRE(window_open(&w, base, n));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base, 700), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base + 800, 700), KBUDDY_OK);
    size_t firsts[200], counts[200], live = 0, first;
    while (live < 200 &&
           kbuddy_frames_alloc(&w.fa, counts[live] = 1 + rng_below(11), 1, &first) == KBUDDY_OK)
        firsts[live++] = first;
    for (size_t i = 0; i < live; i += 3)
        CHECK_STATUS(kbuddy_frames_free(&w.fa, firsts[i], counts[i]), KBUDDY_OK);
    VERIFY(&w.fa);
    struct {
        size_t first, count;
        kbuddy_status want;
    } bad[] = {
        {firsts[0], counts[0], KBUDDY_EDOUBLEFREE},     /* freed above */
        {firsts[3], 1, KBUDDY_EDOUBLEFREE},
        {firsts[1], counts[1] + counts[0] + 700, KBUDDY_EFOREIGN}, /* reaches the hole */
        {base + 700, 100, KBUDDY_EFOREIGN},               /* the never-added hole */
        {base + 699, 2, KBUDDY_EFOREIGN},
        {base - 1, 2, KBUDDY_EFOREIGN},
        {base + n - 1, 2, KBUDDY_EFOREIGN},
        {firsts[1], 0, KBUDDY_EINVAL},
        {base, n, KBUDDY_EFOREIGN},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_STATUS(expected_free_status(&w.fa, bad[i].first, bad[i].count), bad[i].want);
        snapshot s = take_snapshot(&w.fa);
        CHECK_STATUS(kbuddy_frames_free(&w.fa, bad[i].first, bad[i].count), bad[i].want);
        CHECK(unchanged_since(&w.fa, &s));
    }
    /* Each live allocation extended by 64 frames: the status follows from
     * what the walk says those frames are. */
    for (size_t i = 1; i < live; i++) {
        if (i % 3 == 0)
            continue;
        snapshot s = take_snapshot(&w.fa);
        kbuddy_status want = expected_free_status(&w.fa, firsts[i], counts[i] + 64);
        kbuddy_status st = kbuddy_frames_free(&w.fa, firsts[i], counts[i] + 64);
        CHECK_STATUS(st, want);
        CHECK(want != KBUDDY_OK);
        if (st == KBUDDY_OK)
            break;
        CHECK(unchanged_since(&w.fa, &s));
    }
    VERIFY(&w.fa);
    window_close(&w);
}

/* ------------------------------------------------------------------------ */
/* Windows                                                                   */
/* ------------------------------------------------------------------------ */

TEST(window_with_base_zero) {
    window w;
    REQUIRE(window_open(&w, 0, 1000));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 1000), KBUDDY_OK);
    run_list want = {NULL, 0, 0, false};
    push_free_blocks(&want, 0, 1000);
    run_list got = walk_runs(&w.fa);
    CHECK(runs_equal(&got, &want));
    CHECK_EQ(want.v[0].first, 0);
    CHECK_EQ(want.v[0].count, 512);
    run_list_free(&got);
    run_list_free(&want);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 512, 512, &f), KBUDDY_OK);
    CHECK_EQ(f, 0);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 1, &f), KBUDDY_OK);
    CHECK_EQ(f, 0);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(frame_zero_block_is_not_capped) {
    /* Frame 0 is aligned to every power of two: with base 0 its block is as
     * large as the window allows, for every window size. */
    for (unsigned k = 0; k <= 22; k++) {
        size_t n = (size_t)1 << k;
        window w; /* n + n/2 frames: the largest block is n, at frame 0 */
        REQUIRE(window_open(&w, 0, n + n / 2));
        CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, n + n / 2), KBUDDY_OK);
        kbuddy_frame_stats s;
        kbuddy_frames_get_stats(&w.fa, &s);
        CHECK_EQ(s.largest_free, n);
        run_list l = walk_runs(&w.fa);
        REQUIRE(l.n >= 1);
        CHECK_EQ(l.v[0].first, 0);
        CHECK_EQ(l.v[0].count, n);
        run_list_free(&l);
        size_t f = 1;
        CHECK_STATUS(kbuddy_frames_alloc(&w.fa, n, n, &f), KBUDDY_OK);
        CHECK_EQ(f, 0);
        CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, n), KBUDDY_OK);
        VERIFY(&w.fa);
        window_close(&w);
    }
}

TEST(window_with_unaligned_base) {
    window w;
    const size_t base = 1000003, n = 5000;
    REQUIRE(window_open(&w, base, n));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base, n), KBUDDY_OK);
    run_list want = {NULL, 0, 0, false};
    push_free_blocks(&want, base, base + n);
    run_list got = walk_runs(&w.fa);
    CHECK(runs_equal(&got, &want));
    run_list_free(&got);
    run_list_free(&want);
    VERIFY(&w.fa);
    /* Fill it with single frames, free them all: back to the start. */
    size_t f, count = 0;
    while (kbuddy_frames_alloc(&w.fa, 1, 1, &f) == KBUDDY_OK) {
        CHECK(f >= base && f < base + n);
        count++;
    }
    CHECK_EQ(count, n);
    for (size_t i = 0; i < n; i++)
        CHECK_STATUS(kbuddy_frames_free(&w.fa, base + (i * 7919) % n, 1), KBUDDY_OK);
    want = (run_list){NULL, 0, 0, false};
    push_free_blocks(&want, base, base + n);
    got = walk_runs(&w.fa);
    CHECK(runs_equal(&got, &want));
    run_list_free(&got);
    run_list_free(&want);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(window_of_one_frame) {
    window w;
    REQUIRE(window_open(&w, 12345, 1));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 12345, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 12345, 1), KBUDDY_EOVERLAP);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 1, &f), KBUDDY_OK);
    CHECK_EQ(f, 12345);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 1, &f), KBUDDY_ENOMEM);
    VERIFY(&w.fa);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 12345, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 12345, 1), KBUDDY_EDOUBLEFREE);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 2, &f), KBUDDY_ENOMEM); /* 12345 is odd */
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(window_at_the_top_of_size_t) {
    /* The last frames a size_t can number: [SIZE_MAX - n, SIZE_MAX). */
    const size_t n = 4096 + 77, base = SIZE_MAX - n;
    window w;
    REQUIRE(window_open(&w, base, n));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base + 1, n - 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, SIZE_MAX - 1, 1), KBUDDY_EOVERLAP);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, SIZE_MAX, 1), KBUDDY_EINVAL);
    run_list want = {NULL, 0, 0, false};
    push_free_blocks(&want, base, SIZE_MAX);
    run_list got = walk_runs(&w.fa);
    CHECK(runs_equal(&got, &want));
    run_list_free(&got);
    run_list_free(&want);
    VERIFY(&w.fa);
    size_t f, big;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 2048, 2048, &big), KBUDDY_OK);
    CHECK_EQ(big % 2048, 0);
    CHECK_EQ(big, (SIZE_MAX - 2048 + 1) - 2048); /* the only aligned 2048 block inside */
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 2048, 2048, &f), KBUDDY_ENOMEM);
    size_t count = 0, last = 0;
    while (kbuddy_frames_alloc(&w.fa, 1, 1, &f) == KBUDDY_OK) {
        CHECK(f >= base && f < SIZE_MAX && (f < big || f >= big + 2048));
        if (f > last)
            last = f;
        count++;
    }
    CHECK_EQ(count, n - 2048);
    CHECK_EQ(last, SIZE_MAX - 1);
    VERIFY(&w.fa);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, SIZE_MAX - 1, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, SIZE_MAX - 1, 1), KBUDDY_EDOUBLEFREE);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, SIZE_MAX - 1, 2), KBUDDY_EFOREIGN);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, SIZE_MAX, 1), KBUDDY_EFOREIGN);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, big + 1000, 2048 - 1000), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, base, SIZE_MAX - 1 - base), KBUDDY_EDOUBLEFREE);
    VERIFY(&w.fa);
    /* Give back everything still allocated, one run at a time. */
    run_list l = walk_runs(&w.fa);
    for (size_t i = 0; i < l.n; i++)
        if (l.v[i].used)
            CHECK_STATUS(kbuddy_frames_free(&w.fa, l.v[i].first, l.v[i].count), KBUDDY_OK);
    run_list_free(&l);
    want = (run_list){NULL, 0, 0, false};
    push_free_blocks(&want, base, SIZE_MAX);
    got = walk_runs(&w.fa);
    CHECK(runs_equal(&got, &want));
    run_list_free(&got);
    run_list_free(&want);
    VERIFY(&w.fa);
    window_close(&w);

    /* The very last frame alone. */
    REQUIRE(window_open(&w, SIZE_MAX - 1, 1));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, SIZE_MAX - 1, 1), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 1, &f), KBUDDY_OK);
    CHECK_EQ(f, SIZE_MAX - 1);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 1), KBUDDY_OK);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(window_ending_at_a_power_of_two_boundary_high_up) {
    /* [2^63 - 2^12, 2^63 + 2^12): the biggest aligned blocks meet at 2^63
     * and must not merge across it (their buddies lie outside). */
    const size_t mid = (size_t)1 << 63, half = 4096;
    window w;
    REQUIRE(window_open(&w, mid - half, 2 * half));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, mid, half), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, mid - half, half), KBUDDY_OK);
    static const run want[] = {{((size_t)1 << 63) - 4096, 4096, false},
                               {(size_t)1 << 63, 4096, false}};
    CHECK(walk_is(&w.fa, want, 2));
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 4097, 1, &f), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 4096, 4096, &f), KBUDDY_OK);
    CHECK(f == mid || f == mid - half);
    VERIFY(&w.fa);
    window_close(&w);
}

/* ------------------------------------------------------------------------ */
/* Regressions of the Rust crate                                              */
/* ------------------------------------------------------------------------ */

TEST(top_order_merge_keeps_both_halves) {
    /* A window of exactly 2^k frames, aligned: its top order has one block.
     * Adding (and later freeing) the two halves separately must end with
     * that whole block free, not lose a half at the top order. */
    for (unsigned k = 1; k <= 16; k++) {
        size_t n = (size_t)1 << k, half = n / 2;
        for (int order = 0; order < 2; order++) {
            window w;
            size_t base = n * 3; /* aligned to n, not zero */
            REQUIRE(window_open(&w, base, n));
            CHECK_STATUS(kbuddy_frames_add(&w.fa, order ? base + half : base, half), KBUDDY_OK);
            CHECK_STATUS(kbuddy_frames_add(&w.fa, order ? base : base + half, half), KBUDDY_OK);
            run_list got = walk_runs(&w.fa);
            CHECK_EQ(got.n, 1);
            if (got.n == 1) {
                CHECK_EQ(got.v[0].first, base);
                CHECK_EQ(got.v[0].count, n);
                CHECK(!got.v[0].used);
            }
            run_list_free(&got);
            kbuddy_frame_stats s;
            kbuddy_frames_get_stats(&w.fa, &s);
            CHECK_EQ(s.total, n);
            CHECK_EQ(s.largest_free, n);
            VERIFY(&w.fa);
            size_t a, b;
            CHECK_STATUS(kbuddy_frames_alloc(&w.fa, half, half, &a), KBUDDY_OK);
            CHECK_STATUS(kbuddy_frames_alloc(&w.fa, half, half, &b), KBUDDY_OK);
            CHECK_STATUS(kbuddy_frames_free(&w.fa, order ? b : a, half), KBUDDY_OK);
            CHECK_STATUS(kbuddy_frames_free(&w.fa, order ? a : b, half), KBUDDY_OK);
            kbuddy_frames_get_stats(&w.fa, &s);
            CHECK_EQ(s.total, n);
            CHECK_EQ(s.allocated, 0);
            CHECK_EQ(s.largest_free, n);
            CHECK_STATUS(kbuddy_frames_alloc(&w.fa, n, 1, &a), KBUDDY_OK);
            CHECK_EQ(a, base);
            CHECK_STATUS(kbuddy_frames_free(&w.fa, a, n), KBUDDY_OK);
            VERIFY(&w.fa);
            window_close(&w);
        }
    }
    /* A window whose top order holds one block and a part: 3 * 2^9 frames
     * starting at 0 has top order 10; [0, 1024) must form and [1024, 1536)
     * stay its own. */
    window w;
    REQUIRE(window_open(&w, 0, 1536));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 512, 1024), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 512), KBUDDY_OK);
    static const run want[] = {{0, 1024, false}, {1024, 512, false}};
    CHECK(walk_is(&w.fa, want, 2));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(adjacent_frees_merge_like_adjacent_adds) {
    window w;
    REQUIRE(window_open(&w, 0, 16));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 16), KBUDDY_OK);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 16, 1, &f), KBUDDY_OK);
    for (size_t i = 0; i < 16; i++)
        CHECK_STATUS(kbuddy_frames_free(&w.fa, (i * 5) % 16, 1), KBUDDY_OK);
    static const run want[] = {{0, 16, false}};
    CHECK(walk_is(&w.fa, want, 1));
    VERIFY(&w.fa);
    window_close(&w);
}

/* ------------------------------------------------------------------------ */
/* Statistics, walk, check                                                    */
/* ------------------------------------------------------------------------ */

TEST(stats_are_exact_after_every_step) {
    window w;
    const size_t base = 7777, n = 3000;
    REQUIRE(window_open(&w, base, n));
    size_t total = 0, allocated = 0;
    for (size_t f = 0; f < n; f += 300) {
        CHECK_STATUS(kbuddy_frames_add(&w.fa, base + f, 250), KBUDDY_OK);
        total += 250;
        kbuddy_frame_stats s;
        kbuddy_frames_get_stats(&w.fa, &s);
        CHECK_EQ(s.total, total);
        CHECK_EQ(s.allocated, 0);
        VERIFY(&w.fa);
    }
    size_t firsts[100], counts[100];
    for (size_t i = 0; i < 100; i++) {
        counts[i] = 1 + rng_below(20);
        CHECK_STATUS(kbuddy_frames_alloc(&w.fa, counts[i], 1, &firsts[i]), KBUDDY_OK);
        allocated += counts[i];
        kbuddy_frame_stats s;
        kbuddy_frames_get_stats(&w.fa, &s);
        CHECK_EQ(s.total, total);
        CHECK_EQ(s.allocated, allocated);
        if (i % 10 == 0)
            VERIFY(&w.fa);
    }
    for (size_t i = 0; i < 100; i++) {
        /* Free the first half of each allocation, then the rest. */
        size_t h = counts[i] / 2;
        if (h) {
            CHECK_STATUS(kbuddy_frames_free(&w.fa, firsts[i], h), KBUDDY_OK);
            allocated -= h;
        }
        kbuddy_frame_stats s;
        kbuddy_frames_get_stats(&w.fa, &s);
        CHECK_EQ(s.allocated, allocated);
        CHECK_STATUS(kbuddy_frames_free(&w.fa, firsts[i] + h, counts[i] - h), KBUDDY_OK);
        allocated -= counts[i] - h;
        kbuddy_frames_get_stats(&w.fa, &s);
        CHECK_EQ(s.total, total);
        CHECK_EQ(s.allocated, allocated);
        if (i % 10 == 0)
            VERIFY(&w.fa);
    }
    CHECK_EQ(allocated, 0);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(largest_free_is_exactly_what_alloc_satisfies) {
    /* In a series of fragmented states, alloc(largest_free, 1) succeeds
     * and alloc(largest_free + 1, 1) fails (checked by verify()), and no
     * count in between behaves differently from the rule. */
    window w;
    const size_t base = 100, n = 4000;
    REQUIRE(window_open(&w, base, n));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base, n), KBUDDY_OK);
    for (int step = 0; step < 60; step++) {
        size_t f;
        if (kbuddy_frames_alloc(&w.fa, 1 + rng_below(100), 1, &f) != KBUDDY_OK)
            break;
        if (step % 3 == 0)
            CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 1), KBUDDY_OK);
        kbuddy_frame_stats s;
        kbuddy_frames_get_stats(&w.fa, &s);
        for (size_t c = 1; c <= s.largest_free + 2; c++) {
            kbuddy_status st = kbuddy_frames_alloc(&w.fa, c, 1, &f);
            CHECK_STATUS(st, c <= s.largest_free ? KBUDDY_OK : KBUDDY_ENOMEM);
            if (st == KBUDDY_OK)
                CHECK_STATUS(kbuddy_frames_free(&w.fa, f, c), KBUDDY_OK);
        }
        VERIFY(&w.fa);
    }
    window_close(&w);
}

TEST(stats_of_null_are_zero) {
    kbuddy_frame_stats s;
    memset(&s, 0xff, sizeof s);
    kbuddy_frames_get_stats(NULL, &s);
    CHECK_EQ(s.total, 0);
    CHECK_EQ(s.allocated, 0);
    CHECK_EQ(s.largest_free, 0);
    window w;
    REQUIRE(window_open(&w, 0, 16));
    kbuddy_frames_get_stats(&w.fa, NULL); /* tolerated: nothing to fill */
    window_close(&w);
}

TEST(walk_reports_runs_in_order) {
    /* Window [100, 164): [100, 110) never added, the rest added; allocated
     * runs at known places (align forces them); adjacent allocations are one
     * used run; free runs come block by block. */
    window w;
    REQUIRE(window_open(&w, 100, 64));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 110, 54), KBUDDY_OK);
    /* Free blocks: [110,112) [112,128) [128,160) [160,164). */
    size_t a, b, c;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 32, 32, &a), KBUDDY_OK);
    CHECK_EQ(a, 128);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 16, 16, &b), KBUDDY_OK);
    CHECK_EQ(b, 112);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 4, 4, &c), KBUDDY_OK);
    CHECK_EQ(c, 160);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 120, 3), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 150, 10), KBUDDY_OK);
    /* [120, 123) frees as [120, 122) and [122, 123); [150, 160) as
     * [150, 152) and [152, 160). Used: [112, 120), [123, 150), [160, 164). */
    static const run want[] = {
        {110, 2, false}, {112, 8, true},  {120, 2, false}, {122, 1, false},
        {123, 27, true}, {150, 2, false}, {152, 8, false}, {160, 4, true},
    };
    CHECK(walk_is(&w.fa, want, 8));
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(walk_of_null_does_nothing) {
    kbuddy_frames_walk(NULL, collect_run, NULL);
    window w;
    REQUIRE(window_open(&w, 0, 16));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 16), KBUDDY_OK);
    kbuddy_frames_walk(&w.fa, NULL, NULL);
    VERIFY(&w.fa);
    window_close(&w);
}

TEST(check_passes_on_healthy_state) {
    window w;
    REQUIRE(window_open(&w, 3, 1000));
    CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_OK); /* nothing added */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 3, 500), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_OK);
    size_t f;
    for (int i = 0; i < 50; i++) {
        size_t c = 1 + (size_t)i % 10;
        CHECK_STATUS(kbuddy_frames_alloc(&w.fa, c, 1, &f), KBUDDY_OK);
        CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_OK);
        if (i % 2)
            CHECK_STATUS(kbuddy_frames_free(&w.fa, f + c / 2, 1), KBUDDY_OK);
        CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_OK);
        if (i == 20)
            CHECK_STATUS(kbuddy_frames_add(&w.fa, 503, 500), KBUDDY_OK);
    }
    CHECK_STATUS(kbuddy_frames_check(NULL), KBUDDY_EINVAL);
    window_close(&w);
}

/* The struct's fields are private but visible: damage each kind of
 * bookkeeping of a window of n frames (n % 64 > 200 - 64: the used bitmap's
 * last word has spare bits) and check must say so; undo it and check
 * passes again. */
static void check_detects_damage_in(size_t n) {
    window w;
    const size_t base = 64;
    REQUIRE(window_open(&w, base, n));
    CHECK_STATUS(kbuddy_frames_add(&w.fa, base, 200), KBUDDY_OK);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 10, 16, &f), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_OK);

    w.fa.allocated++;
    CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_ECORRUPT);
    w.fa.allocated--;
    w.fa.added--;
    CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_ECORRUPT);
    w.fa.added++;
    CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_OK);

    /* A used bit on a free frame, on a never-added frame, past the window
     * (a spare bit of the last word). */
    size_t probes[] = {f + 10 - base, 220, n + 3};
    for (size_t i = 0; i < 3; i++) {
        size_t bit = probes[i];
        w.fa.used[bit / 64] ^= (uint64_t)1 << (bit % 64);
        CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_ECORRUPT);
        w.fa.used[bit / 64] ^= (uint64_t)1 << (bit % 64);
        CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_OK);
    }
    /* An allocated frame losing its used bit. */
    w.fa.used[(f - base) / 64] ^= (uint64_t)1 << ((f - base) % 64);
    CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_ECORRUPT);
    w.fa.used[(f - base) / 64] ^= (uint64_t)1 << ((f - base) % 64);
    /* The order summary mask. */
    w.fa.engine.nonempty ^= 1;
    CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_ECORRUPT);
    w.fa.engine.nonempty ^= 1;
    w.fa.engine.nonempty ^= (uint64_t)1 << 40;
    CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_ECORRUPT);
    w.fa.engine.nonempty ^= (uint64_t)1 << 40;
    CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_OK);
    if (n < KB_PACKED_UNITS) { /* the packed table must fit the window */
        w.fa.engine.orders--;
        CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_ECORRUPT);
        w.fa.engine.orders++;
        w.fa.engine.hi += KB_PACKED_UNITS;
        CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_ECORRUPT);
        w.fa.engine.hi -= KB_PACKED_UNITS;
        CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_OK);
    }
    /* Any single bit of the free bitmaps (the engine's words precede the
     * used bitmap in the buffer; in the packed layout they include its
     * table): every flip is caught. */
    size_t nwords = (size_t)(w.fa.used - w.fa.engine.words), missed = 0;
    for (size_t i = 0; i < nwords; i++) {
        for (unsigned bit = 0; bit < 64; bit++) {
            w.fa.engine.words[i] ^= (uint64_t)1 << bit;
            if (kbuddy_frames_check(&w.fa) != KBUDDY_ECORRUPT) {
                if (missed++ < 5)
                    fprintf(stderr, "  free bitmap word %zu bit %u flipped: check passed\n", i,
                            bit);
            }
            w.fa.engine.words[i] ^= (uint64_t)1 << bit;
        }
    }
    CHECK_EQ(missed, 0);
    CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_OK);
    window_close(&w);
}

/* Runs of free frames in whole blocks of order k or above, from the walk:
 * free blocks of order >= k, adjacent ones merged (white box: what
 * kb_engine_free_runs must report). */
static void push_runs_of_order(run_list *want, const run_list *walk, unsigned k) {
    for (size_t i = 0; i < walk->n; i++) {
        const run *r = &walk->v[i];
        if (r->used || r->count < ((size_t)1 << k))
            continue;
        run *last = want->n ? &want->v[want->n - 1] : NULL;
        if (last && last->first + last->count == r->first)
            last->count += r->count;
        else
            run_list_push(want, r->first, r->count, false);
    }
}

static void collect_free_run(void *ctx, uintptr_t a, uintptr_t b) {
    run_list_push(ctx, a, b - a, false);
}

TEST(engine_primitives_agree_in_both_layouts) {
    /* The engine calls the frame allocator does not make (the heap's free
     * runs, the generic take and release) work on frame engines of either
     * layout too (white box). */
    size_t ns[] = {1000, KB_PACKED_UNITS + 1000};
    for (size_t t = 0; t < 2; t++) {
        const size_t base = 4093, n = ns[t];
        window w;
        REQUIRE(window_open(&w, base, n));
        CHECK(t == 0 ? w.fa.engine.order == NULL : w.fa.engine.order != NULL);
        CHECK_STATUS(kbuddy_frames_add(&w.fa, base, n), KBUDDY_OK);
        size_t f;
        for (size_t i = 0; i < 40; i++) {
            CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1 + i % 7, (size_t)1 << (i % 3), &f),
                         KBUDDY_OK);
            if (i % 3 == 1)
                CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 1), KBUDDY_OK);
        }
        VERIFY(&w.fa);
        run_list walk = walk_runs(&w.fa);
        for (unsigned k = 0; k < w.fa.engine.orders; k++) {
            run_list want = {NULL, 0, 0, false}, got = {NULL, 0, 0, false};
            push_runs_of_order(&want, &walk, k);
            uintptr_t units = kb_engine_free_runs(&w.fa.engine, k, collect_free_run, &got);
            size_t sum = 0;
            for (size_t i = 0; i < want.n; i++)
                sum += want.v[i].count;
            CHECK_EQ(units, sum);
            CHECK(runs_equal(&got, &want));
            run_list_free(&want);
            run_list_free(&got);
        }
        run_list_free(&walk);
        /* Take a block through the generic entry and give it back: the
         * engine is as before. */
        kb_engine *e = &w.fa.engine;
        uint64_t before = e->nonempty;
        uintptr_t s;
        REQUIRE(kb_engine_take(e, 5, 3, 0, &s));
        CHECK(!kb_engine_any_free(e, s, s + 5));
        kb_engine_release(e, s, s + 5);
        CHECK_EQ(e->nonempty, before);
        VERIFY(&w.fa);
        window_close(&w);
    }
}

/* kb_engine_release of an empty range [u, u) frees nothing, in either
 * layout, at an odd and an even unit inside an allocation and at the
 * window's ends: the release loops return at once instead of taking u's
 * parity for an edge (an odd u became a free block, an even one climbed
 * past the top order). */
TEST(engine_release_of_an_empty_range_changes_nothing) {
    static const size_t ns[2] = {300, KB_PACKED_UNITS + 300};
    for (size_t t = 0; t < 2; t++) {
        const size_t base = 4093, n = ns[t];
        window w;
        REQUIRE(window_open(&w, base, n));
        CHECK(t == 0 ? w.fa.engine.order == NULL : w.fa.engine.order != NULL);
        CHECK_STATUS(kbuddy_frames_add(&w.fa, base, n), KBUDDY_OK);
        size_t f, g;
        CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 37, 1, &f), KBUDDY_OK);
        CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 5, 1, &g), KBUDDY_OK);
        size_t size = kbuddy_frames_meta_size(n);
        unsigned char *saved = malloc(size);
        REQUIRE(saved != NULL);
        memcpy(saved, w.meta, size);
        const kb_word nonempty = w.fa.engine.nonempty;
        const size_t at[5] = {f + 3, f + 4, g + 1, base, base + n};
        for (size_t i = 0; i < 5; i++) {
            kb_engine_release(&w.fa.engine, at[i], at[i]);
            CHECK(memcmp(saved, w.meta, size) == 0);
            CHECK_EQ(w.fa.engine.nonempty, nonempty);
        }
        VERIFY(&w.fa);
        free(saved);
        window_close(&w);
    }
}

TEST(check_detects_damaged_bookkeeping) {
    check_detects_damage_in(250);                       /* the packed layout    */
    check_detects_damage_in(KB_PACKED_UNITS + 64 + 250); /* the per-order layout */
}

/* ------------------------------------------------------------------------ */
/* Locking                                                                    */
/* ------------------------------------------------------------------------ */

/* A lock that counts, and notices nesting and unbalanced use. */
typedef struct {
    int depth;
    unsigned long acquires, releases;
    bool misuse;
} count_lock;

static void count_acquire(void *ctx) {
    count_lock *l = ctx;
    if (l->depth != 0)
        l->misuse = true;
    l->depth++;
    l->acquires++;
}

static void count_release(void *ctx) {
    count_lock *l = ctx;
    if (l->depth != 1)
        l->misuse = true;
    l->depth--;
    l->releases++;
}

static void walk_nothing(void *ctx, size_t first, size_t count, bool used) {
    (void)ctx;
    (void)first;
    (void)count;
    (void)used;
}

/* Run `call`, then: the lock was taken `want` times (-1: any number) and
 * released as often, and is free now. */
#define LOCKED_CALL(lk, want, call)                                                      \
    do {                                                                                 \
        unsigned long a0_ = (lk).acquires, r0_ = (lk).releases;                          \
        call;                                                                            \
        CHECK_EQ((lk).acquires - a0_, (lk).releases - r0_);                              \
        if ((want) >= 0)                                                                 \
            CHECK_EQ((lk).acquires - a0_, (unsigned long)(want));                        \
        CHECK_EQ((lk).depth, 0);                                                         \
        CHECK(!(lk).misuse);                                                             \
    } while (0)

TEST(lock_hook_is_balanced_in_every_function) {
    window w;
    REQUIRE(window_open(&w, 10, 100));
    count_lock lk = {0, 0, 0, false};
    kbuddy_lock hook = {count_acquire, count_release, &lk};
    kbuddy_frames_set_lock(&w.fa, &hook);
    size_t f = 0;
    kbuddy_frame_stats s;
    LOCKED_CALL(lk, 1, CHECK_STATUS(kbuddy_frames_add(&w.fa, 10, 50), KBUDDY_OK));
    LOCKED_CALL(lk, 1, CHECK_STATUS(kbuddy_frames_add(&w.fa, 20, 5), KBUDDY_EOVERLAP));
    LOCKED_CALL(lk, -1, CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 5), KBUDDY_EINVAL));
    LOCKED_CALL(lk, 1, CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 5, 1, &f), KBUDDY_OK));
    LOCKED_CALL(lk, 1, CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 64, 1, &f), KBUDDY_ENOMEM));
    LOCKED_CALL(lk, -1, CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 0, 1, &f), KBUDDY_EINVAL));
    LOCKED_CALL(lk, 1, CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 3, 1, &f), KBUDDY_OK));
    LOCKED_CALL(lk, 1, CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 3), KBUDDY_OK));
    LOCKED_CALL(lk, 1, CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 3), KBUDDY_EDOUBLEFREE));
    LOCKED_CALL(lk, 1, CHECK_STATUS(kbuddy_frames_free(&w.fa, 70, 3), KBUDDY_EFOREIGN));
    LOCKED_CALL(lk, -1, CHECK_STATUS(kbuddy_frames_free(&w.fa, 5, 3), KBUDDY_EFOREIGN));
    LOCKED_CALL(lk, -1, CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 0), KBUDDY_EINVAL));
    LOCKED_CALL(lk, 1, kbuddy_frames_get_stats(&w.fa, &s));
    LOCKED_CALL(lk, 1, kbuddy_frames_walk(&w.fa, walk_nothing, NULL));
    LOCKED_CALL(lk, 1, CHECK_STATUS(kbuddy_frames_check(&w.fa), KBUDDY_OK));
    CHECK_EQ(s.allocated, 5);
    CHECK_EQ(lk.acquires, 11);
    window_close(&w);
}

TEST(set_lock_null_removes_the_lock) {
    window w;
    REQUIRE(window_open(&w, 0, 64));
    count_lock lk = {0, 0, 0, false};
    kbuddy_lock hook = {count_acquire, count_release, &lk};
    kbuddy_frames_set_lock(&w.fa, &hook);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 64), KBUDDY_OK);
    CHECK_EQ(lk.acquires, 1);
    kbuddy_frames_set_lock(&w.fa, NULL);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 1, &f), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 1), KBUDDY_OK);
    VERIFY(&w.fa);
    CHECK_EQ(lk.acquires, 1);
    CHECK_EQ(lk.releases, 1);
    kbuddy_frames_set_lock(NULL, &hook); /* tolerated */
    kbuddy_frames_set_lock(NULL, NULL);
    window_close(&w);
}

TEST(set_lock_copies_the_hook) {
    window w;
    REQUIRE(window_open(&w, 0, 64));
    count_lock lk = {0, 0, 0, false}, other = {0, 0, 0, false};
    kbuddy_lock hook = {count_acquire, count_release, &lk};
    kbuddy_frames_set_lock(&w.fa, &hook);
    hook.ctx = &other; /* changing the caller's copy changes nothing */
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 64), KBUDDY_OK);
    CHECK_EQ(lk.acquires, 1);
    CHECK_EQ(other.acquires, 0);
    window_close(&w);
}

TEST(shipped_spinlock_works_as_the_hook) {
    static kbuddy_spinlock sl = KBUDDY_SPINLOCK_INIT;
    kbuddy_lock hook = KBUDDY_SPINLOCK_HOOK(&sl);
    window w;
    REQUIRE(window_open(&w, 0, 64));
    kbuddy_frames_set_lock(&w.fa, &hook);
    CHECK_STATUS(kbuddy_frames_add(&w.fa, 0, 64), KBUDDY_OK);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 7, 1, &f), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 7), KBUDDY_OK);
    VERIFY(&w.fa);
    /* Released after every call: it can be taken now. */
    CHECK(kbuddy_spinlock_try_acquire(&sl));
    kbuddy_spinlock_release(&sl);
    window_close(&w);
}

KBTEST_MAIN()
