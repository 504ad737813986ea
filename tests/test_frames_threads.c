/*
 * SMP stress of the page-frame allocator with the shipped spinlock: four
 * threads allocate, free whole allocations and parts of them, add frames,
 * make refused calls and run the integrity check and the walk, all at once
 * on one kbuddy_frames. A shared array records which thread owns each frame:
 * an allocation must only ever hand out frames nobody owns, so a race inside
 * the allocator shows up as a frame owned twice (and, under TSan, as a data
 * race). At the end everything is freed and the window must be whole again.
 *
 * The file name contains "thread", so `make test-tsan` runs it.
 */
#include "kbtest.h"
#include "kbuddy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__) || !defined(__OPTIMIZE__)
#define OPS_PER_THREAD 100000
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define OPS_PER_THREAD 100000
#endif
#endif
#ifndef OPS_PER_THREAD
#define OPS_PER_THREAD 600000
#endif

#define THREADS 4
#define BASE ((size_t)12289) /* odd: alignment is about absolute numbers */
#define ADDED_AT_START ((size_t)1 << 15)
#define RESERVED ((size_t)1 << 13) /* per thread, added in chunks as it runs */
#define NEVER_ADDED ((size_t)1000)  /* the window's last frames */
#define NFRAMES (ADDED_AT_START + THREADS * RESERVED + NEVER_ADDED)
#define MAX_LIVE 512

static kbuddy_frames fa;
static kbuddy_spinlock spin = KBUDDY_SPINLOCK_INIT;
static _Atomic unsigned char owner[NFRAMES]; /* 0: nobody, else thread + 1 */
static atomic_size_t errors;

/* The spinlock, wrapped to prove mutual exclusion: a plain counter that only
 * the holder touches (TSan would see any overlap as a race). */
static int holders;
static unsigned long lock_taken;

static void checked_acquire(void *ctx) {
    kbuddy_spinlock_acquire(ctx);
    if (holders++ != 0)
        atomic_fetch_add(&errors, 1);
    lock_taken++;
}

static void checked_release(void *ctx) {
    if (--holders != 0)
        atomic_fetch_add(&errors, 1);
    kbuddy_spinlock_release(ctx);
}

typedef struct {
    unsigned id;
    uint64_t rng;
    size_t first[MAX_LIVE], count[MAX_LIVE], live;
    size_t reserved_next; /* next frame of its reserved run to add */
    size_t allocs, frees, partial, refused, checks;
    char why[200];        /* the first error */
} worker;

static uint64_t next_rng(worker *w) {
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}
static size_t below(worker *w, size_t n) { return (size_t)(next_rng(w) % n); }

static void fail(worker *w, const char *what, size_t a, size_t b) {
    if (atomic_fetch_add(&errors, 1) == 0 || !w->why[0])
        snprintf(w->why, sizeof w->why, "thread %u: %s (%zu, %zu)", w->id, what, a, b);
}

static unsigned char me(const worker *w) { return (unsigned char)(w->id + 1); }

/* Take frames [f, f + n) for w: nobody may own any of them. */
static void claim(worker *w, size_t f, size_t n) {
    for (size_t i = f; i < f + n; i++) {
        unsigned char prev = atomic_exchange(&owner[i - BASE], me(w));
        if (prev != 0)
            fail(w, "frame handed out while owned", i, prev);
    }
}

/* Give frames [f, f + n) up, before freeing them (after the free another
 * thread may get them at once). */
static void disown(worker *w, size_t f, size_t n) {
    for (size_t i = f; i < f + n; i++) {
        unsigned char prev = atomic_exchange(&owner[i - BASE], 0);
        if (prev != me(w))
            fail(w, "owned frame was not ours", i, prev);
    }
}

static void do_alloc(worker *w) {
    if (w->live == MAX_LIVE)
        return;
    size_t count, align;
    if (below(w, 50) == 0) {
        count = 512; /* a 2 MiB page */
        align = 512;
    } else {
        count = 1 + below(w, below(w, 4) ? 8 : 40);
        align = (size_t)1 << below(w, below(w, 3) ? 1 : 7);
    }
    size_t f;
    kbuddy_status st = kbuddy_frames_alloc(&fa, count, align, &f);
    if (st == KBUDDY_ENOMEM)
        return;
    if (st != KBUDDY_OK) {
        fail(w, "alloc failed", count, align);
        return;
    }
    if (f % align != 0 || f < BASE || f + count > BASE + NFRAMES - NEVER_ADDED)
        fail(w, "alloc misplaced", f, align);
    claim(w, f, count);
    w->first[w->live] = f;
    w->count[w->live++] = count;
    w->allocs++;
}

static void free_at(worker *w, size_t i, size_t off, size_t n) {
    size_t f = w->first[i] + off;
    disown(w, f, n);
    kbuddy_status st = kbuddy_frames_free(&fa, f, n);
    if (st != KBUDDY_OK) {
        fail(w, "free of own frames refused", f, n);
        return;
    }
    w->frees++;
    size_t c = w->count[i];
    if (off == 0 && n == c) { /* whole */
        w->first[i] = w->first[--w->live];
        w->count[i] = w->count[w->live];
        return;
    }
    w->partial++;
    if (off == 0) { /* head */
        w->first[i] += n;
        w->count[i] -= n;
    } else if (off + n == c) { /* tail */
        w->count[i] = off;
    } else { /* middle: keep the head, record the tail */
        w->count[i] = off;
        if (w->live < MAX_LIVE) {
            w->first[w->live] = f + n;
            w->count[w->live++] = c - off - n;
        } else { /* no room: free the tail too */
            disown(w, f + n, c - off - n);
            if (kbuddy_frames_free(&fa, f + n, c - off - n) != KBUDDY_OK)
                fail(w, "free of own tail refused", f + n, c - off - n);
        }
    }
}

static void do_free(worker *w) {
    if (!w->live)
        return;
    size_t i = below(w, w->live), c = w->count[i];
    if (below(w, 3) == 0 && c > 1) {
        size_t off = below(w, c), n = 1 + below(w, c - off);
        free_at(w, i, off, n);
    } else {
        free_at(w, i, 0, c);
    }
}

static void do_add(worker *w) {
    size_t end = BASE + ADDED_AT_START + (w->id + 1) * RESERVED;
    if (w->reserved_next >= end)
        return;
    size_t n = 1 + below(w, 700);
    if (n > end - w->reserved_next)
        n = end - w->reserved_next;
    if (kbuddy_frames_add(&fa, w->reserved_next, n) != KBUDDY_OK)
        fail(w, "add of reserved frames refused", w->reserved_next, n);
    /* Adding them again overlaps. */
    if (kbuddy_frames_add(&fa, w->reserved_next, n) != KBUDDY_EOVERLAP)
        fail(w, "second add not refused", w->reserved_next, n);
    w->reserved_next += n;
}

/* Calls that must be refused whatever the other threads do. */
static void do_refused(worker *w) {
    size_t never = BASE + NFRAMES - NEVER_ADDED;
    size_t f = never + below(w, NEVER_ADDED - 10), g;
    if (kbuddy_frames_free(&fa, f, 1 + below(w, 10)) != KBUDDY_EFOREIGN)
        fail(w, "free of never-added frames not EFOREIGN", f, 0);
    if (kbuddy_frames_free(&fa, BASE - 1, 2) != KBUDDY_EFOREIGN)
        fail(w, "free across the base not EFOREIGN", BASE - 1, 2);
    if (kbuddy_frames_free(&fa, BASE + NFRAMES, 1) != KBUDDY_EFOREIGN)
        fail(w, "free past the window not EFOREIGN", BASE + NFRAMES, 1);
    if (kbuddy_frames_free(&fa, BASE, 0) != KBUDDY_EINVAL)
        fail(w, "free of 0 frames not EINVAL", BASE, 0);
    if (kbuddy_frames_add(&fa, BASE, 1) != KBUDDY_EOVERLAP)
        fail(w, "add of the first frame not EOVERLAP", BASE, 1);
    if (kbuddy_frames_alloc(&fa, NFRAMES, 1, &g) != KBUDDY_ENOMEM)
        fail(w, "alloc of the whole window not ENOMEM", NFRAMES, 1);
    /* (A double free is not tried: once freed, another thread may own the
     * frames again, so the right answer depends on timing.) */
    w->refused++;
}

typedef struct {
    size_t next, used, bad;
} walk_state;

static void walk_visit(void *ctx, size_t first, size_t count, bool used) {
    walk_state *s = ctx;
    if (first < s->next || count == 0 || first + count > BASE + NFRAMES - NEVER_ADDED)
        s->bad++;
    s->next = first + count;
    if (used)
        s->used += count;
}

static void do_inspect(worker *w) {
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&fa, &s);
    if (s.allocated > s.total || s.total > NFRAMES - NEVER_ADDED || s.total < ADDED_AT_START ||
        s.largest_free > s.total - s.allocated)
        fail(w, "inconsistent statistics", s.total, s.allocated);
    /* Our own frames are allocated: at least that many are. */
    size_t mine = 0;
    for (size_t i = 0; i < w->live; i++)
        mine += w->count[i];
    if (s.allocated < mine)
        fail(w, "fewer frames allocated than this thread holds", s.allocated, mine);
    if (below(w, 20) == 0) {
        if (kbuddy_frames_check(&fa) != KBUDDY_OK)
            fail(w, "check failed under concurrency", 0, 0);
        walk_state ws = {BASE, 0, 0};
        kbuddy_frames_walk(&fa, walk_visit, &ws);
        if (ws.bad || ws.used < mine)
            fail(w, "walk inconsistent under concurrency", ws.bad, ws.used);
        w->checks++;
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    for (int i = 0; i < OPS_PER_THREAD && atomic_load(&errors) == 0; i++) {
        size_t p = below(w, 1000);
        if (p < 440)
            do_alloc(w);
        else if (p < 900)
            do_free(w);
        else if (p < 930)
            do_add(w);
        else if (p < 980)
            do_refused(w);
        else
            do_inspect(w);
    }
    /* Finish adding, free what is left. */
    while (w->reserved_next < BASE + ADDED_AT_START + (w->id + 1) * RESERVED)
        do_add(w);
    while (w->live)
        free_at(w, 0, 0, w->count[0]);
    return NULL;
}

static worker workers[THREADS];

TEST(threads_share_one_frame_allocator_under_the_spinlock) {
    static unsigned char meta[1 << 16];
    REQUIRE(kbuddy_frames_meta_size(NFRAMES) <= sizeof meta);
    CHECK_STATUS(kbuddy_frames_init(&fa, BASE, NFRAMES, meta, sizeof meta), KBUDDY_OK);
    kbuddy_lock hook = {checked_acquire, checked_release, &spin};
    kbuddy_frames_set_lock(&fa, &hook);
    CHECK_STATUS(kbuddy_frames_add(&fa, BASE, ADDED_AT_START), KBUDDY_OK);

    pthread_t tid[THREADS];
    for (unsigned t = 0; t < THREADS; t++) {
        workers[t] = (worker){0};
        workers[t].id = t;
        workers[t].rng = 0x9e3779b97f4a7c15u * (t + 1);
        workers[t].reserved_next = BASE + ADDED_AT_START + t * RESERVED;
        REQUIRE(pthread_create(&tid[t], NULL, worker_main, &workers[t]) == 0);
    }
    for (unsigned t = 0; t < THREADS; t++)
        pthread_join(tid[t], NULL);

    size_t allocs = 0, frees = 0, partial = 0, refused = 0, checks = 0;
    for (unsigned t = 0; t < THREADS; t++) {
        if (workers[t].why[0])
            KBTEST_FAIL("%s", workers[t].why);
        allocs += workers[t].allocs;
        frees += workers[t].frees;
        partial += workers[t].partial;
        refused += workers[t].refused;
        checks += workers[t].checks;
    }
    printf("  %d threads: %zu allocs, %zu frees (%zu partial), %zu rounds of refused calls, "
           "%zu checks; lock taken %lu times\n",
           THREADS, allocs, frees, partial, refused, checks, lock_taken);
    CHECK_EQ(atomic_load(&errors), 0);
    CHECK(allocs > 0 && partial > 0);

    /* Everything is back: one window of free frames, as if added at once. */
    const size_t end = BASE + NFRAMES - NEVER_ADDED;
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&fa, &s);
    CHECK_EQ(s.total, end - BASE);
    CHECK_EQ(s.allocated, 0);
    size_t largest = 0;
    for (size_t a = BASE; a < end;) { /* the largest aligned block inside */
        size_t size = 1;
        while (a % (2 * size) == 0 && 2 * size <= end - a)
            size *= 2;
        if (size > largest)
            largest = size;
        a += size;
    }
    CHECK_EQ(s.largest_free, largest);
    CHECK_STATUS(kbuddy_frames_check(&fa), KBUDDY_OK);
    for (size_t i = 0; i < NFRAMES; i++)
        if (atomic_load(&owner[i]) != 0) {
            KBTEST_FAIL("frame %zu still owned", BASE + i);
            break;
        }
    CHECK_EQ(holders, 0);
    /* The spinlock is free. */
    CHECK(kbuddy_spinlock_try_acquire(&spin));
    kbuddy_spinlock_release(&spin);
}

/* Many threads on a tiny window: single frames and pairs, at most 8 held
 * at a time by each, so the same few blocks split and merge constantly. */
#define TINY 64

static void *tiny_main(void *arg) {
    worker *w = arg;
    for (int i = 0; i < OPS_PER_THREAD && atomic_load(&errors) == 0; i++) {
        if (w->live < 8 && below(w, 2)) {
            size_t n = 1 + below(w, 2), f;
            kbuddy_status st = kbuddy_frames_alloc(&fa, n, n, &f);
            if (st == KBUDDY_ENOMEM)
                continue;
            if (st != KBUDDY_OK || f < BASE || f + n > BASE + TINY || f % n != 0) {
                fail(w, "tiny alloc", f, n);
                break;
            }
            claim(w, f, n);
            w->first[w->live] = f;
            w->count[w->live++] = n;
            w->allocs++;
        } else if (w->live) {
            /* Whole, or just the second frame of a pair. */
            size_t j = below(w, w->live);
            if (w->count[j] == 2 && below(w, 2))
                free_at(w, j, 1, 1);
            else
                free_at(w, j, 0, w->count[j]);
        }
    }
    while (w->live)
        free_at(w, 0, 0, w->count[0]);
    return NULL;
}

TEST(threads_contend_on_single_frames) {
    static unsigned char meta[4096];
    static kbuddy_spinlock sl = KBUDDY_SPINLOCK_INIT;
    kbuddy_lock hook = KBUDDY_SPINLOCK_HOOK(&sl);
    REQUIRE(kbuddy_frames_meta_size(TINY) <= sizeof meta);
    CHECK_STATUS(kbuddy_frames_init(&fa, BASE, TINY, meta, sizeof meta), KBUDDY_OK);
    kbuddy_frames_set_lock(&fa, &hook);
    CHECK_STATUS(kbuddy_frames_add(&fa, BASE, TINY), KBUDDY_OK);
    atomic_store(&errors, 0);
    for (size_t i = 0; i < NFRAMES; i++)
        atomic_store(&owner[i], 0);
    pthread_t tid[THREADS];
    for (unsigned t = 0; t < THREADS; t++) {
        workers[t] = (worker){0};
        workers[t].id = t;
        workers[t].rng = 0x2545F4914F6CDD1Du * (t + 3);
        REQUIRE(pthread_create(&tid[t], NULL, tiny_main, &workers[t]) == 0);
    }
    size_t allocs = 0, partial = 0;
    for (unsigned t = 0; t < THREADS; t++) {
        pthread_join(tid[t], NULL);
        if (workers[t].why[0])
            KBTEST_FAIL("%s", workers[t].why);
        allocs += workers[t].allocs;
        partial += workers[t].partial;
    }
    printf("  %d threads on %d frames: %zu allocs, %zu partial frees\n", THREADS, TINY, allocs,
           partial);
    CHECK_EQ(atomic_load(&errors), 0);
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&fa, &s);
    CHECK_EQ(s.total, TINY);
    CHECK_EQ(s.allocated, 0);
    CHECK_EQ(s.largest_free, 32); /* [12289, 12353): [12320, 12352) is the 32 */
    CHECK_STATUS(kbuddy_frames_check(&fa), KBUDDY_OK);
}

KBTEST_MAIN()
