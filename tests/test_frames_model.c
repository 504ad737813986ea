/*
 * Randomised model test of the page-frame allocator. A shadow model holds
 * the state of every frame of the window (not added / free / allocated) and,
 * for every order k, how many frames of each naturally aligned 2^k block are
 * free, so it knows at once whether a fully free aligned block of a given
 * size exists. Random operations run against both:
 *
 *   add runs (and overlapping or out-of-window adds that must be refused),
 *   alloc of 1..64 frames and occasionally far more, at power-of-two
 *     alignments, which must succeed exactly when the model has a fully free
 *     naturally aligned block of at least max(count, align) frames,
 *   frees of whole allocations, of sub-runs of one (partial frees) and of
 *     runs spanning several,
 *   bad frees (outside the window, never added, already free, partly free)
 *     that must return the exact status and change nothing.
 *
 * After every operation the statistics must equal the model's; every few
 * operations the walk is compared frame by frame with the model and
 * kbuddy_frames_check must pass. Windows range from a few thousand frames
 * to 2^20, at odd bases, across 2^32 and at the top of size_t.
 *
 * KBUDDY_SEED=<n> reruns with another seed; the seed of a failing window is
 * printed.
 */
#include "kbtest.h"
#include "kbuddy.h"

#include <stdbool.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* Random numbers                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t rng_s;

static uint64_t rng(void) {
    uint64_t x = rng_s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_s = x;
    return x * UINT64_C(0x2545F4914F6CDD1D);
}

/* What the operations did, to show that each path is exercised. */
static struct {
    size_t adds, add_refused, allocs, enomem, frees, partial, refused[KBUDDY_ECORRUPT + 1];
} tally;

static size_t below(size_t n) { return n ? (size_t)(rng() % n) : 0; }
static bool chance(unsigned percent) { return rng() % 100 < percent; }

/* ------------------------------------------------------------------------ */
/* The model                                                                 */
/* ------------------------------------------------------------------------ */

enum { NOT_ADDED = 0, FREE = 1, USED = 2 };

/* One allocation (or what is left of it after partial frees). */
typedef struct {
    size_t first, count, pos; /* pos: index in model.live */
} rec;

typedef struct {
    size_t base, n;
    unsigned orders;           /* orders 0 .. orders - 1 fit in the window */
    unsigned char *state;      /* per frame                                */
    uint32_t *cnt[64];         /* cnt[k][b - blk0[k]]: free frames in block b */
    size_t blk0[64];           /* block number of the first block of order k */
    size_t full[64];           /* fully free blocks of order k              */
    size_t added, allocated;
    rec *recs;                 /* allocations, by id                        */
    uint32_t *owner;           /* per frame: id of its allocation            */
    uint32_t *live;            /* ids of live allocations                    */
    size_t nlive;
    uint32_t *spare;           /* unused ids                                 */
    size_t nspare;
} model;

static unsigned floor_log2(size_t x) {
    unsigned k = 0;
    while (x >>= 1)
        k++;
    return k;
}

static bool model_init(model *m, size_t base, size_t n) {
    memset(m, 0, sizeof *m);
    m->base = base;
    m->n = n;
    m->orders = floor_log2(n) + 1;
    m->state = calloc(n, 1);
    m->recs = malloc(n * sizeof *m->recs);
    m->owner = malloc(n * sizeof *m->owner);
    m->live = malloc(n * sizeof *m->live);
    m->spare = malloc(n * sizeof *m->spare);
    if (!m->state || !m->recs || !m->owner || !m->live || !m->spare)
        return false;
    for (size_t i = 0; i < n; i++)
        m->spare[i] = (uint32_t)(n - 1 - i);
    m->nspare = n;
    for (unsigned k = 0; k < m->orders; k++) {
        m->blk0[k] = base >> k;
        size_t blocks = ((base + n - 1) >> k) - m->blk0[k] + 1;
        m->cnt[k] = calloc(blocks, sizeof(uint32_t));
        if (!m->cnt[k])
            return false;
    }
    return true;
}

static void model_destroy(model *m) {
    for (unsigned k = 0; k < m->orders; k++)
        free(m->cnt[k]);
    free(m->state);
    free(m->recs);
    free(m->owner);
    free(m->live);
    free(m->spare);
}

static unsigned char state_of(const model *m, size_t f) { return m->state[f - m->base]; }

static void set_state(model *m, size_t f, unsigned char s) {
    unsigned char old = m->state[f - m->base];
    if (old == s)
        return;
    m->state[f - m->base] = s;
    int delta = (s == FREE) - (old == FREE);
    if (delta) {
        for (unsigned k = 0; k < m->orders; k++) {
            uint32_t *c = &m->cnt[k][(f >> k) - m->blk0[k]];
            size_t size = (size_t)1 << k;
            if (*c == size)
                m->full[k]--;
            *c = (uint32_t)((int64_t)*c + delta);
            if (*c == size)
                m->full[k]++;
        }
    }
    if (old == NOT_ADDED)
        m->added++;
    if (old == USED)
        m->allocated--;
    if (s == USED)
        m->allocated++;
}

static void set_run(model *m, size_t a, size_t count, unsigned char s) {
    for (size_t f = a; f < a + count; f++)
        set_state(m, f, s);
}

/* Is block b of order k fully free (and inside the window)? */
static bool block_full(const model *m, unsigned k, size_t b) {
    if (k >= m->orders || b < m->blk0[k] || (b << k) < m->base ||
        ((b + 1) << k) - 1 > m->base + m->n - 1)
        return false;
    return m->cnt[k][b - m->blk0[k]] == ((size_t)1 << k);
}

/* Is there a fully free naturally aligned block of order >= k? */
static bool aligned_block_exists(const model *m, unsigned k) {
    for (unsigned j = k; j < m->orders; j++)
        if (m->full[j])
            return true;
    return false;
}

static size_t model_largest(const model *m) {
    for (unsigned k = m->orders; k-- > 0;)
        if (m->full[k])
            return (size_t)1 << k;
    return 0;
}

static bool in_window(const model *m, size_t first, size_t count) {
    return first >= m->base && first - m->base < m->n && count <= m->n - (first - m->base);
}

/* The status kbuddy_frames_free must return for [first, first + count). */
static kbuddy_status expected_free_status(const model *m, size_t first, size_t count) {
    if (count == 0)
        return KBUDDY_EINVAL;
    if (!in_window(m, first, count))
        return KBUDDY_EFOREIGN;
    bool any_free = false;
    for (size_t f = first; f < first + count; f++) {
        unsigned char s = state_of(m, f);
        if (s == NOT_ADDED)
            return KBUDDY_EFOREIGN;
        any_free |= s == FREE;
    }
    return any_free ? KBUDDY_EDOUBLEFREE : KBUDDY_OK;
}

static kbuddy_status expected_add_status(const model *m, size_t first, size_t count) {
    if (count == 0 || !in_window(m, first, count))
        return KBUDDY_EINVAL;
    for (size_t f = first; f < first + count; f++)
        if (state_of(m, f) != NOT_ADDED)
            return KBUDDY_EOVERLAP;
    return KBUDDY_OK;
}

/* Allocation records. */
static void rec_label(model *m, uint32_t id) {
    for (size_t f = m->recs[id].first; f < m->recs[id].first + m->recs[id].count; f++)
        m->owner[f - m->base] = id;
}

static void rec_new(model *m, size_t first, size_t count) {
    uint32_t id = m->spare[--m->nspare];
    m->recs[id] = (rec){first, count, m->nlive};
    m->live[m->nlive++] = id;
    rec_label(m, id);
}

static void rec_delete(model *m, uint32_t id) {
    size_t pos = m->recs[id].pos;
    uint32_t last = m->live[--m->nlive];
    m->live[pos] = last;
    m->recs[last].pos = pos;
    m->spare[m->nspare++] = id;
}

/* Frames [a, b), all allocated, become free: trim, split or drop the
 * allocations they belonged to. */
static void model_release(model *m, size_t a, size_t b) {
    for (size_t f = a; f < b;) {
        uint32_t id = m->owner[f - m->base];
        rec *r = &m->recs[id];
        size_t s = r->first, e = s + r->count, fb = e < b ? e : b;
        bool head = s < f, tail = e > fb;
        if (head && tail) {
            r->count = f - s;
            rec_new(m, fb, e - fb);
        } else if (head) {
            r->count = f - s;
        } else if (tail) {
            r->first = fb;
            r->count = e - fb;
        } else {
            rec_delete(m, id);
        }
        f = fb;
    }
    set_run(m, a, b - a, FREE);
}

/* ------------------------------------------------------------------------ */
/* Comparing the allocator with the model                                    */
/* ------------------------------------------------------------------------ */

typedef struct {
    const model *m;
    size_t next;      /* the walk must not go back before this frame */
    size_t used, free_frames;
    bool bad;
} walk_cmp;

static void walk_fail(walk_cmp *c, const char *what, size_t first, size_t count) {
    if (!c->bad)
        KBTEST_FAIL("walk: %s at [%zu +%zu]", what, first, count);
    c->bad = true;
}

static void walk_visit(void *ctx, size_t first, size_t count, bool used) {
    walk_cmp *c = ctx;
    const model *m = c->m;
    if (c->bad)
        return;
    if (count == 0 || !in_window(m, first, count) || first < c->next) {
        walk_fail(c, "run out of order or outside the window", first, count);
        return;
    }
    /* Frames skipped since the last run must be not added. */
    for (size_t f = c->next; f < first; f++)
        if (state_of(m, f) != NOT_ADDED) {
            walk_fail(c, "added frame skipped before run", f, 1);
            return;
        }
    for (size_t f = first; f < first + count; f++)
        if (state_of(m, f) != (used ? USED : FREE)) {
            walk_fail(c, used ? "used run has a frame that is not allocated"
                              : "free run has a frame that is not free",
                      first, count);
            return;
        }
    if (used) {
        /* Maximal: the frames around it are not allocated. */
        if ((first > m->base && state_of(m, first - 1) == USED) ||
            (first + count < m->base + m->n && state_of(m, first + count) == USED))
            walk_fail(c, "used run not maximal", first, count);
        c->used += count;
    } else {
        /* A whole naturally aligned block whose parent is not fully free. */
        unsigned k = floor_log2(count);
        if (count != ((size_t)1 << k) || first % count != 0)
            walk_fail(c, "free run is not an aligned block", first, count);
        else if (block_full(m, k + 1, first >> (k + 1)))
            walk_fail(c, "free block not merged with its buddy", first, count);
        c->free_frames += count;
    }
    c->next = first + count;
}

static bool walk_matches(const kbuddy_frames *fa, const model *m) {
    walk_cmp c = {m, m->base, 0, 0, false};
    kbuddy_frames_walk(fa, walk_visit, &c);
    if (c.bad)
        return false;
    for (size_t f = c.next; f < m->base + m->n; f++)
        if (state_of(m, f) != NOT_ADDED) {
            KBTEST_FAIL("walk: added frame %zu after the last run", f);
            return false;
        }
    if (c.used != m->allocated || c.used + c.free_frames != m->added) {
        KBTEST_FAIL("walk: %zu used + %zu free, model %zu allocated of %zu", c.used,
                    c.free_frames, m->allocated, m->added);
        return false;
    }
    return true;
}

static bool stats_match(const kbuddy_frames *fa, const model *m) {
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(fa, &s);
    if (s.total != m->added || s.allocated != m->allocated ||
        s.largest_free != model_largest(m)) {
        KBTEST_FAIL("stats total %zu allocated %zu largest %zu; model %zu %zu %zu", s.total,
                    s.allocated, s.largest_free, m->added, m->allocated, model_largest(m));
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Operations                                                                */
/* ------------------------------------------------------------------------ */

/* Each returns false after reporting a mismatch. */

#define EXPECT_STATUS(got, want, ...)                                                 \
    do {                                                                              \
        if ((got) != (want)) {                                                        \
            KBTEST_FAIL("%s returned %s, wanted %s", #got, kbuddy_strerror(got),      \
                        kbuddy_strerror(want));                                       \
            KBTEST_FAIL(__VA_ARGS__);                                                 \
            return false;                                                             \
        }                                                                             \
    } while (0)

static bool op_add(kbuddy_frames *fa, model *m) {
    size_t first, count;
    if (chance(85)) {
        /* A run of never-added frames, when one is found quickly. */
        first = m->base + below(m->n);
        for (int tries = 0; tries < 16 && state_of(m, first) != NOT_ADDED; tries++)
            first = m->base + below(m->n);
        size_t max = chance(10) ? 1 + below(m->n / 4 + 1) : 1 + below(300);
        count = 0;
        while (count < max && first + count < m->base + m->n &&
               state_of(m, first + count) == NOT_ADDED)
            count++;
        if (count == 0)
            count = 1 + below(8); /* an overlap then */
        if (first - m->base + count > m->n)
            count = m->n - (first - m->base);
    } else if (chance(50)) {
        /* Sticking out of the window at either end. */
        count = 2 + below(100);
        first = chance(50) ? m->base + m->n - 1 - below(count - 1) : m->base - 1 - below(count);
        if (m->base < count) /* keep it from wrapping below 0 */
            first = m->base + m->n - 1;
    } else {
        first = m->base + below(m->n);
        count = chance(20) ? 0 : 1 + below(64);
    }
    kbuddy_status want = expected_add_status(m, first, count);
    kbuddy_status got = kbuddy_frames_add(fa, first, count);
    EXPECT_STATUS(got, want, "add(%zu, %zu)", first, count);
    if (got == KBUDDY_OK)
        set_run(m, first, count, FREE);
    if (got == KBUDDY_OK)
        tally.adds++;
    else
        tally.add_refused++;
    return true;
}

static bool op_alloc(kbuddy_frames *fa, model *m) {
    size_t count, align = 1;
    if (chance(90))
        count = 1 + below(chance(60) ? 8 : 64);
    else if (chance(80))
        count = 65 + below(chance(50) ? 1000 : m->n / 8 + 1);
    else
        count = (size_t)1 << below(m->orders + 2); /* may exceed the window */
    if (chance(40))
        align = (size_t)1 << below(chance(80) ? 10 : m->orders + 2);
    unsigned k = floor_log2(count);
    if (((size_t)1 << k) < count)
        k++;
    if (floor_log2(align) > k)
        k = floor_log2(align);
    bool exists = aligned_block_exists(m, k);
    size_t first = 0;
    kbuddy_status got = kbuddy_frames_alloc(fa, count, align, &first);
    EXPECT_STATUS(got, exists ? KBUDDY_OK : KBUDDY_ENOMEM,
                  "alloc(%zu, %zu): a free aligned block of 2^%u %s", count, align, k,
                  exists ? "exists" : "does not exist");
    if (got != KBUDDY_OK) {
        tally.enomem++;
        return true;
    }
    tally.allocs++;
    if (first % align != 0 || !in_window(m, first, count)) {
        KBTEST_FAIL("alloc(%zu, %zu) = %zu: misaligned or outside", count, align, first);
        return false;
    }
    for (size_t f = first; f < first + count; f++) {
        if (state_of(m, f) != FREE) {
            KBTEST_FAIL("alloc(%zu, %zu) = %zu: frame %zu was %s", count, align, first, f,
                        state_of(m, f) == USED ? "allocated" : "never added");
            return false;
        }
    }
    set_run(m, first, count, USED);
    rec_new(m, first, count);
    return true;
}

static bool do_free(kbuddy_frames *fa, model *m, size_t first, size_t count) {
    kbuddy_status want = expected_free_status(m, first, count);
    kbuddy_status got = kbuddy_frames_free(fa, first, count);
    EXPECT_STATUS(got, want, "free(%zu, %zu)", first, count);
    if (got == KBUDDY_OK) {
        /* Did it free part of an allocation (or parts of several)? */
        const rec *r = &m->recs[m->owner[first - m->base]];
        const rec *l = &m->recs[m->owner[first + count - 1 - m->base]];
        if (r->first != first || l->first + l->count != first + count)
            tally.partial++;
        tally.frees++;
        model_release(m, first, first + count);
    } else {
        tally.refused[got]++;
    }
    return true;
}

static bool op_free_whole(kbuddy_frames *fa, model *m) {
    if (!m->nlive)
        return true;
    const rec *r = &m->recs[m->live[below(m->nlive)]];
    return do_free(fa, m, r->first, r->count);
}

static bool op_free_part(kbuddy_frames *fa, model *m) {
    if (!m->nlive)
        return true;
    const rec *r = &m->recs[m->live[below(m->nlive)]];
    size_t a = below(r->count), len = 1 + below(r->count - a);
    return do_free(fa, m, r->first + a, len);
}

/* A run from inside one allocation across the allocations after it. */
static bool op_free_span(kbuddy_frames *fa, model *m) {
    if (!m->nlive)
        return true;
    const rec *r = &m->recs[m->live[below(m->nlive)]];
    size_t a = r->first + below(r->count), b = r->first + r->count, max = 1 + below(600);
    while (b < m->base + m->n && b - a < max && state_of(m, b) == USED)
        b++;
    return do_free(fa, m, a, b - a);
}

/* A free that must be refused; also random runs anywhere, whose expected
 * status the model computes (sometimes OK). */
static bool op_bad_free(kbuddy_frames *fa, model *m) {
    kbuddy_frame_stats before;
    kbuddy_frames_get_stats(fa, &before);
    size_t first, count;
    switch (below(6)) {
    case 0: /* outside the window, or sticking out */
        count = 1 + below(50);
        if (chance(50) && m->base >= count)
            first = m->base - count + below(count); /* straddles or precedes base */
        else
            first = m->base + m->n - below(count); /* straddles or follows the end */
        if (first > SIZE_MAX - count) /* near the top of size_t: wrap */
            count = SIZE_MAX - first + 1 + below(5);
        break;
    case 1: /* a free frame, or a run starting at one */
    case 2:
        first = m->base + below(m->n);
        for (int tries = 0; tries < 16 && state_of(m, first) != FREE; tries++)
            first = m->base + below(m->n);
        count = 1 + below(chance(70) ? 4 : 200);
        break;
    case 3: /* an allocation and a frame on either side */
        if (m->nlive) {
            const rec *r = &m->recs[m->live[below(m->nlive)]];
            first = r->first - (r->first > m->base && chance(50));
            count = r->count + 1 + (first == r->first - 1);
            break;
        }
        /* fall through */
    case 4: /* never added */
        first = m->base + below(m->n);
        for (int tries = 0; tries < 16 && state_of(m, first) != NOT_ADDED; tries++)
            first = m->base + below(m->n);
        count = 1 + below(20);
        break;
    default: /* count 0 */
        first = m->base + below(m->n);
        count = 0;
        break;
    }
    kbuddy_status want = expected_free_status(m, first, count);
    if (!do_free(fa, m, first, count))
        return false;
    if (want != KBUDDY_OK) {
        kbuddy_frame_stats after;
        kbuddy_frames_get_stats(fa, &after);
        if (memcmp(&before, &after, sizeof before) != 0) {
            KBTEST_FAIL("refused free(%zu, %zu) changed the statistics", first, count);
            return false;
        }
    }
    return true;
}

static bool op_bad_alloc(kbuddy_frames *fa, model *m) {
    (void)m;
    size_t first = 4242;
    static const size_t aligns[] = {0, 3, 6, 24, 1000, SIZE_MAX};
    size_t count = chance(30) ? 0 : 1 + below(10);
    size_t align = count == 0 ? 1 : aligns[below(6)];
    kbuddy_status got = kbuddy_frames_alloc(fa, count, align, &first);
    EXPECT_STATUS(got, KBUDDY_EINVAL, "alloc(%zu, %zu)", count, align);
    if (first != 4242) {
        KBTEST_FAIL("refused alloc wrote *first");
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Driver                                                                    */
/* ------------------------------------------------------------------------ */

static uint64_t base_seed(void) {
    const char *e = getenv("KBUDDY_SEED");
    return e && *e ? strtoull(e, NULL, 0) : UINT64_C(0x6b62756464790001);
}

static uint64_t splitmix(uint64_t x) {
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* Run `ops` random operations on the window [base, base + n). Returns
 * whether every one matched the model. */
static bool run_model(size_t base, size_t n, size_t ops, uint64_t seed) {
    rng_s = splitmix(seed) | 1;
    model m;
    kbuddy_frames fa;
    size_t meta_size = kbuddy_frames_meta_size(n);
    unsigned char *meta = malloc(meta_size + 1);
    bool ok = meta && model_init(&m, base, n);
    /* An odd address for the metadata, as the API allows. */
    if (ok && kbuddy_frames_init(&fa, base, n, meta + 1, meta_size) != KBUDDY_OK) {
        KBTEST_FAIL("init failed");
        ok = false;
    }
    /* Check and walk cost O(n): run them about 40 times per window, and
     * after every operation for small windows. */
    size_t every = n / 4096 + 1;
    if (every > ops / 40)
        every = ops / 40 + 1;
    /* Phase mix: start by adding, then churn; near the end, drain. */
    for (size_t i = 0; ok && i < ops; i++) {
        unsigned p = (unsigned)below(100);
        bool drain = i > ops - ops / 8;
        if (i < 20 || (m.added < m.n / 2 && p < 10) || p < 3)
            ok = op_add(&fa, &m);
        else if (p < (drain ? 15u : 45u))
            ok = op_alloc(&fa, &m);
        else if (p < 60)
            ok = op_free_whole(&fa, &m);
        else if (p < 72)
            ok = op_free_part(&fa, &m);
        else if (p < 77)
            ok = op_free_span(&fa, &m);
        else if (p < 97)
            ok = op_bad_free(&fa, &m);
        else
            ok = op_bad_alloc(&fa, &m);
        ok = ok && stats_match(&fa, &m);
        if (ok && (i % every == 0 || i + 1 == ops)) {
            kbuddy_status st = kbuddy_frames_check(&fa);
            if (st != KBUDDY_OK) {
                KBTEST_FAIL("check after op %zu: %s", i, kbuddy_strerror(st));
                ok = false;
            }
            ok = ok && walk_matches(&fa, &m);
        }
        if (!ok)
            fprintf(stderr, "  window [%zu, +%zu), seed %#" PRIx64 ", op %zu\n", base, n, seed,
                    i);
    }
    /* Free everything still allocated: the window must be whole again. */
    while (ok && m.nlive)
        ok = op_free_whole(&fa, &m) && stats_match(&fa, &m);
    if (ok) {
        ok = kbuddy_frames_check(&fa) == KBUDDY_OK && walk_matches(&fa, &m);
        if (!ok)
            fprintf(stderr, "  window [%zu, +%zu), seed %#" PRIx64 ", final\n", base, n, seed);
    }
    if (meta)
        model_destroy(&m);
    free(meta);
    return ok;
}

/* Print what the operations of a test did, and start counting afresh. */
static void report_tally(void) {
    printf("  %zu adds (%zu refused), %zu allocs (%zu ENOMEM), %zu frees (%zu partial); "
           "refused frees: %zu EFOREIGN, %zu EDOUBLEFREE, %zu EINVAL\n",
           tally.adds, tally.add_refused, tally.allocs, tally.enomem, tally.frees, tally.partial,
           tally.refused[KBUDDY_EFOREIGN], tally.refused[KBUDDY_EDOUBLEFREE],
           tally.refused[KBUDDY_EINVAL]);
    memset(&tally, 0, sizeof tally);
}

/* Keep the whole program around 10 s of CPU under ASan (Debug, -O0). */
#if defined(__OPTIMIZE__)
#define OPS_SCALE 4
#else
#define OPS_SCALE 1
#endif

TEST(model_small_window_at_base_zero) {
    CHECK(run_model(0, 4096, 12000 * OPS_SCALE, base_seed() + 1));
    report_tally();
}

TEST(model_small_window_at_odd_base) {
    CHECK(run_model(1000003, 3001, 12000 * OPS_SCALE, base_seed() + 2));
    report_tally();
}

TEST(model_tiny_windows) {
    /* Windows of 1 to 80 frames at assorted bases: the edge cases of
     * orders, words and alignment. */
    for (size_t n = 1; n <= 80; n++) {
        size_t base = (n * 7919) % 191;
        if (!run_model(base, n, 400, base_seed() + 100 + n)) {
            CHECK(false);
            break;
        }
    }
    report_tally();
}

TEST(model_window_across_2_32) {
    CHECK(run_model(((size_t)1 << 32) - 40000 + 1, 70001, 8000 * OPS_SCALE, base_seed() + 3));
    report_tally();
}

TEST(model_window_at_the_top_of_size_t) {
    CHECK(run_model(SIZE_MAX - 5000, 5000, 8000 * OPS_SCALE, base_seed() + 4));
    report_tally();
}

TEST(model_medium_window_high_up) {
    CHECK(run_model(((size_t)1 << 40) + 777, 300000, 5000 * OPS_SCALE, base_seed() + 5));
    report_tally();
}

TEST(model_window_of_a_million_frames) {
    CHECK(run_model(12345, (size_t)1 << 20, 5000 * OPS_SCALE, base_seed() + 6));
    report_tally();
}

TEST(model_many_seeds_small_windows) {
    for (uint64_t s = 0; s < 4 * OPS_SCALE; s++) {
        size_t n = 500 + (size_t)(splitmix(s) % 3000), base = (size_t)(splitmix(s + 99) % 100000);
        if (!run_model(base, n, 3000, base_seed() + 1000 + s)) {
            CHECK(false);
            break;
        }
    }
    report_tally();
}

KBTEST_MAIN()
