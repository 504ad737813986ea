/*
 * Multi-threaded stress of the heap under the shipped spinlock
 * (kbuddy_spinlock + KBUDDY_SPINLOCK_HOOK), for the TSan build and for
 * correctness under contention:
 *   - four workers allocate, fill with their own pattern, check, realloc
 *     and free (sized and unsized), and make refused calls;
 *   - a producer hands allocations to a consumer, which checks and frees
 *     them (cross-thread free);
 *   - one thread adds regions while all this runs;
 *   - one thread reads statistics and runs kbuddy_check and kbuddy_walk
 *     continuously: every snapshot must be self-consistent.
 * At the end kbuddy_check passes and the statistics are back to where they
 * started, plus exactly the regions added. The spinlock itself is tested
 * for mutual exclusion and try_acquire semantics across threads.
 *
 * Threads report failures through an atomic counter and a message buffer
 * (the harness's CHECK is not thread-safe); the main thread turns them into
 * test failures.
 */
#define _POSIX_C_SOURCE 200809L

#include "kbuddy.h"
#include "kbtest.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define THREADS_SLOW 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define THREADS_SLOW 1
#endif
#ifndef THREADS_SLOW
#define THREADS_SLOW 0
#endif

#if THREADS_SLOW
#define WORKER_OPS 20000
#define HANDOFFS 8000
#else
#define WORKER_OPS 150000
#define HANDOFFS 60000
#endif

#define UNIT KBUDDY_MIN_BLOCK
#define NWORKERS 4
#define NEW_REGIONS 6
#define ARENA_SIZE ((size_t)16 << 20)
#define FIRST_REGION ((size_t)4 << 20)

/* ------------------------------------------------------------------------ */
/* Failure reporting from threads                                            */
/* ------------------------------------------------------------------------ */

static atomic_int thread_errors;
static char first_error[256];
static atomic_flag first_error_taken = ATOMIC_FLAG_INIT;

static void thread_fail(const char *what, unsigned long a, unsigned long b) {
    if (!atomic_flag_test_and_set(&first_error_taken))
        snprintf(first_error, sizeof first_error, "%s (%lu, %lu)", what, a, b);
    atomic_fetch_add(&thread_errors, 1);
}

static void report_thread_errors(void) {
    int n = atomic_load(&thread_errors);
    if (n)
        KBTEST_FAIL("%d failures in threads; first: %s", n, first_error);
    atomic_store(&thread_errors, 0);
    atomic_flag_clear(&first_error_taken);
}

/* ------------------------------------------------------------------------ */
/* Shared state                                                               */
/* ------------------------------------------------------------------------ */

static kbuddy_heap heap;
static kbuddy_spinlock heap_lock = KBUDDY_SPINLOCK_INIT;
static unsigned char *arena;
static atomic_int workers_running;
static atomic_ulong progress; /* operations done by all workers */

/* Bytes of regions after each add: region_bytes[k] with k regions. The
 * adder publishes entry k before adding region k. */
static size_t region_bytes[NEW_REGIONS + 2];
static size_t added_total; /* sum of the totals of the regions added */

static uint64_t rnd_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}

static uint64_t pattern_word(uint64_t seed, size_t j) {
    return (seed * UINT64_C(0x9E3779B97F4A7C15)) ^ (j * UINT64_C(0xD1B54A32D192ED03));
}

/* Allocations are UNIT-aligned and usable sizes UNIT multiples, so whole
 * words cover them. The pointer is laundered: alloc_size tells the compiler
 * the object is only as large as requested. */
static void fill(void *p, size_t usable, uint64_t seed) {
    uint64_t *volatile vw = p;
    uint64_t *w = vw;
    for (size_t j = 0; j < usable / 8; j++)
        w[j] = pattern_word(seed, j);
}

static bool holds(const void *p, size_t n, uint64_t seed) {
    const uint64_t *w = p;
    for (size_t j = 0; j < n / 8; j++)
        if (w[j] != pattern_word(seed, j))
            return false;
    return true;
}

static size_t round_units(size_t size) { return size ? (size + UNIT - 1) / UNIT * UNIT : UNIT; }

/* ------------------------------------------------------------------------ */
/* Workers                                                                    */
/* ------------------------------------------------------------------------ */

#define WORKER_LIVE 128

typedef struct {
    void *p;
    size_t size, align, usable;
    uint64_t seed;
} alloc_t;

typedef struct {
    unsigned id;
    uint64_t rng;
    alloc_t live[WORKER_LIVE];
    size_t nlive;
    unsigned long allocs, frees, reallocs, refusals;
} worker_t;

static size_t pick_size(worker_t *w) {
    unsigned r = (unsigned)(rnd_next(&w->rng) % 100);
    if (r < 60)
        return (size_t)(rnd_next(&w->rng) % 257);
    if (r < 95)
        return 257 + (size_t)(rnd_next(&w->rng) % 4000);
    return 4257 + (size_t)(rnd_next(&w->rng) % 60000);
}

static size_t pick_align(worker_t *w) {
    unsigned r = (unsigned)(rnd_next(&w->rng) % 100);
    if (r < 70)
        return 1;
    return (size_t)1 << (rnd_next(&w->rng) % 13);
}

static void worker_free_one(worker_t *w, size_t i) {
    alloc_t *a = &w->live[i];
    if (!holds(a->p, a->usable, a->seed))
        thread_fail("contents changed before free", w->id, (unsigned long)a->size);
    kbuddy_status st = rnd_next(&w->rng) % 2 ? kbuddy_free(&heap, a->p)
                                             : kbuddy_free_sized(&heap, a->p, a->size, a->align);
    if (st != KBUDDY_OK)
        thread_fail("free failed", w->id, (unsigned long)st);
    /* Freed: a second free is refused (nobody else can have reused the
     * address as an allocation *start* that we own, but another thread may
     * have been handed memory there, so only "not OK" is certain). */
    w->live[i] = w->live[--w->nlive];
    w->frees++;
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    for (unsigned long op = 0; op < WORKER_OPS; op++) {
        unsigned r = (unsigned)(rnd_next(&w->rng) % 100);
        if (r < 40 && w->nlive < WORKER_LIVE) {
            size_t size = pick_size(w), align = pick_align(w);
            void *p = kbuddy_alloc(&heap, size, align);
            if (p) {
                if ((uintptr_t)p % (align > UNIT ? align : UNIT))
                    thread_fail("alloc misaligned", w->id, (unsigned long)align);
                size_t usable = kbuddy_usable_size(&heap, p);
                if (usable != round_units(size))
                    thread_fail("usable size", w->id, (unsigned long)usable);
                alloc_t *a = &w->live[w->nlive++];
                *a = (alloc_t){p, size, align, usable, ((uint64_t)w->id << 40) | op};
                fill(p, usable, a->seed);
                w->allocs++;
            }
        } else if (r < 75 && w->nlive) {
            worker_free_one(w, (size_t)(rnd_next(&w->rng) % w->nlive));
        } else if (r < 92 && w->nlive) {
            alloc_t *a = &w->live[rnd_next(&w->rng) % w->nlive];
            if (!holds(a->p, a->usable, a->seed))
                thread_fail("contents changed before realloc", w->id, (unsigned long)a->size);
            size_t nsize = rnd_next(&w->rng) % 2 ? a->size / 2 : a->size * 2 + 7;
            void *q = kbuddy_realloc(&heap, a->p, nsize, a->align);
            if (q) {
                size_t keep = (a->size < nsize ? a->size : nsize) / 8 * 8;
                if (!holds(q, keep, a->seed))
                    thread_fail("realloc lost contents", w->id, (unsigned long)nsize);
                if (round_units(nsize) <= a->usable && q != a->p)
                    thread_fail("realloc that fits moved", w->id, (unsigned long)nsize);
                if ((uintptr_t)q % (a->align > UNIT ? a->align : UNIT))
                    thread_fail("realloc misaligned", w->id, (unsigned long)a->align);
                a->p = q;
                a->size = nsize;
                a->usable = round_units(nsize);
                a->seed = ((uint64_t)w->id << 40) | (op + (1ul << 32));
                fill(q, a->usable, a->seed);
                w->reallocs++;
            } else if (!holds(a->p, a->usable, a->seed)) {
                thread_fail("failed realloc changed contents", w->id, (unsigned long)nsize);
            }
        } else if (w->nlive) {
            /* Refused calls on our own allocation: interior, misaligned,
             * wrong size, foreign. */
            alloc_t *a = &w->live[rnd_next(&w->rng) % w->nlive];
            unsigned char *p = a->p;
            int local;
            if (a->usable > UNIT && kbuddy_free(&heap, p + UNIT) != KBUDDY_EBADPTR)
                thread_fail("interior free not refused", w->id, 0);
            if (kbuddy_free(&heap, p + 1) != KBUDDY_EBADPTR)
                thread_fail("misaligned free not refused", w->id, 0);
            if (kbuddy_free_sized(&heap, p, a->size + 1, a->align) != KBUDDY_ESIZE)
                thread_fail("wrong size not refused", w->id, 0);
            if (kbuddy_free(&heap, &local) != KBUDDY_EFOREIGN)
                thread_fail("foreign free not refused", w->id, 0);
            if (!holds(p, a->usable, a->seed))
                thread_fail("refused calls changed contents", w->id, 0);
            w->refusals++;
        }
        atomic_fetch_add_explicit(&progress, 1, memory_order_relaxed);
    }
    while (w->nlive)
        worker_free_one(w, w->nlive - 1);
    atomic_fetch_sub(&workers_running, 1);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Producer / consumer: allocations freed by another thread                   */
/* ------------------------------------------------------------------------ */

#define QUEUE_LEN 64

static struct {
    pthread_mutex_t mu;
    alloc_t q[QUEUE_LEN];
    size_t head, tail;
    bool done;
} handoff = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0, 0, false};

static void *producer_main(void *arg) {
    (void)arg;
    uint64_t rng = 0xABCDEF;
    for (unsigned long i = 0; i < HANDOFFS;) {
        size_t size = (size_t)(rnd_next(&rng) % 3000);
        void *p = kbuddy_alloc(&heap, size, 1);
        if (!p) {
            sched_yield();
            continue;
        }
        alloc_t a = {p, size, 1, round_units(size), UINT64_C(0x5000000000) + i};
        fill(p, a.usable, a.seed);
        for (;;) {
            pthread_mutex_lock(&handoff.mu);
            if (handoff.tail - handoff.head < QUEUE_LEN) {
                handoff.q[handoff.tail++ % QUEUE_LEN] = a;
                pthread_mutex_unlock(&handoff.mu);
                break;
            }
            pthread_mutex_unlock(&handoff.mu);
            sched_yield();
        }
        i++;
    }
    pthread_mutex_lock(&handoff.mu);
    handoff.done = true;
    pthread_mutex_unlock(&handoff.mu);
    atomic_fetch_sub(&workers_running, 1);
    return NULL;
}

static void *consumer_main(void *arg) {
    (void)arg;
    unsigned long got = 0;
    for (;;) {
        alloc_t a;
        bool have = false, done;
        pthread_mutex_lock(&handoff.mu);
        if (handoff.head < handoff.tail) {
            a = handoff.q[handoff.head++ % QUEUE_LEN];
            have = true;
        }
        done = handoff.done && handoff.head == handoff.tail;
        pthread_mutex_unlock(&handoff.mu);
        if (have) {
            if (!holds(a.p, a.usable, a.seed))
                thread_fail("handed-off allocation changed", (unsigned long)a.size, got);
            if (kbuddy_usable_size(&heap, a.p) != a.usable)
                thread_fail("handed-off usable size", (unsigned long)a.size, got);
            kbuddy_status st = got % 2 ? kbuddy_free(&heap, a.p)
                                       : kbuddy_free_sized(&heap, a.p, a.size, 1);
            if (st != KBUDDY_OK)
                thread_fail("cross-thread free failed", (unsigned long)st, got);
            got++;
        } else if (done) {
            break;
        } else {
            sched_yield();
        }
    }
    if (got != HANDOFFS)
        thread_fail("consumer got the wrong count", got, HANDOFFS);
    atomic_fetch_sub(&workers_running, 1);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Region adder and observer                                                  */
/* ------------------------------------------------------------------------ */

static void *adder_main(void *arg) {
    (void)arg;
    unsigned long total_ops = (unsigned long)NWORKERS * WORKER_OPS;
    for (size_t k = 0; k < NEW_REGIONS; k++) {
        /* Spread the adds over the run. */
        while (atomic_load_explicit(&progress, memory_order_relaxed) <
                   total_ops * (k + 1) / (NEW_REGIONS + 1) &&
               atomic_load(&workers_running) > 0)
            sched_yield();
        /* Regions above and below the first one, at odd offsets. */
        size_t slot = k < 3 ? k : k + 5; /* 1 MiB slots; the first region is in 4..7 */
        unsigned char *start = arena + slot * ((size_t)1 << 20) + 17 * k + 3;
        size_t size = ((size_t)1 << 20) - 4096 - 999 * k;
        kbuddy_stats before, after;
        kbuddy_get_stats(&heap, &before);
        kbuddy_status st = kbuddy_add_region(&heap, start, size);
        if (st != KBUDDY_OK) {
            thread_fail("add_region failed", (unsigned long)k, (unsigned long)st);
            continue;
        }
        kbuddy_get_stats(&heap, &after);
        if (after.regions != before.regions + 1)
            thread_fail("region count", (unsigned long)after.regions, (unsigned long)before.regions);
        added_total += after.total - before.total;
        /* A second add of the same memory is refused, even under load. */
        if (kbuddy_add_region(&heap, start + 100, 5000) != KBUDDY_EOVERLAP)
            thread_fail("overlapping add not refused", (unsigned long)k, 0);
    }
    return NULL;
}

static void walk_sum(void *ctx, void *start, size_t size, bool used) {
    size_t *sums = ctx;
    (void)start;
    sums[used ? 1 : 0] += size;
    if (used)
        sums[2]++;
}

static void *observer_main(void *arg) {
    (void)arg;
    unsigned long rounds = 0;
    while (atomic_load(&workers_running) > 0) {
        kbuddy_stats st;
        kbuddy_get_stats(&heap, &st);
        if (st.regions < 1 || st.regions > NEW_REGIONS + 1)
            thread_fail("region count out of range", (unsigned long)st.regions, 0);
        else if (st.total + st.overhead != region_bytes[st.regions])
            thread_fail("total + overhead is not the bytes added",
                        (unsigned long)(st.total + st.overhead),
                        (unsigned long)region_bytes[st.regions]);
        if (st.allocated > st.total || st.user > st.allocated ||
            st.allocations * UNIT > st.allocated || st.largest_free > st.total - st.allocated)
            thread_fail("inconsistent statistics snapshot", (unsigned long)st.allocated,
                        (unsigned long)st.total);
        if (rounds % 4 == 0) {
            kbuddy_status cs = kbuddy_check(&heap);
            if (cs != KBUDDY_OK)
                thread_fail("kbuddy_check failed under load", (unsigned long)cs, rounds);
        }
        if (rounds % 8 == 1) {
            /* The walk is one consistent snapshot, though the stats read
             * before and after may differ: it must add up by itself. */
            size_t sums[3] = {0, 0, 0};
            kbuddy_walk(&heap, walk_sum, sums);
            if (sums[0] + sums[1] == 0 || (sums[0] + sums[1]) % UNIT || sums[2] * UNIT > sums[1])
                thread_fail("walk does not add up", (unsigned long)sums[0],
                            (unsigned long)sums[1]);
        }
        rounds++;
        sched_yield();
    }
    if (rounds < 2)
        thread_fail("observer did not run", rounds, 0);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                      */
/* ------------------------------------------------------------------------ */

TEST(threads_alloc_free_realloc_concurrently_under_the_spinlock) {
    arena = aligned_alloc((size_t)1 << 21, ARENA_SIZE);
    REQUIRE(arena);
    kbuddy_init(&heap);
    kbuddy_lock lk = KBUDDY_SPINLOCK_HOOK(&heap_lock);
    kbuddy_set_lock(&heap, &lk);
    REQUIRE(kbuddy_add_region(&heap, arena + 4 * ((size_t)1 << 20) + 1, FIRST_REGION - 2) ==
            KBUDDY_OK);
    /* The bytes the heap will have after each add (published up front:
     * the adder's sizes are fixed). */
    region_bytes[0] = 0;
    region_bytes[1] = FIRST_REGION - 2;
    for (size_t k = 0; k < NEW_REGIONS; k++)
        region_bytes[k + 2] = region_bytes[k + 1] + ((size_t)1 << 20) - 4096 - 999 * k;
    kbuddy_stats start;
    kbuddy_get_stats(&heap, &start);
    added_total = 0;

    static worker_t workers[NWORKERS];
    pthread_t tw[NWORKERS], tp, tc, ta, to;
    atomic_store(&workers_running, NWORKERS + 2); /* and producer, consumer */
    atomic_store(&progress, 0);
    for (unsigned i = 0; i < NWORKERS; i++) {
        memset(&workers[i], 0, sizeof workers[i]);
        workers[i].id = i + 1;
        workers[i].rng = 0x1234567ull * (i + 1);
        REQUIRE(pthread_create(&tw[i], NULL, worker_main, &workers[i]) == 0);
    }
    REQUIRE(pthread_create(&tp, NULL, producer_main, NULL) == 0);
    REQUIRE(pthread_create(&tc, NULL, consumer_main, NULL) == 0);
    REQUIRE(pthread_create(&ta, NULL, adder_main, NULL) == 0);
    REQUIRE(pthread_create(&to, NULL, observer_main, NULL) == 0);
    for (unsigned i = 0; i < NWORKERS; i++)
        pthread_join(tw[i], NULL);
    pthread_join(tp, NULL);
    pthread_join(tc, NULL);
    pthread_join(ta, NULL);
    pthread_join(to, NULL);
    report_thread_errors();

    unsigned long allocs = 0, frees = 0, reallocs = 0, refusals = 0;
    for (unsigned i = 0; i < NWORKERS; i++) {
        allocs += workers[i].allocs;
        frees += workers[i].frees;
        reallocs += workers[i].reallocs;
        refusals += workers[i].refusals;
    }
    CHECK_EQ(allocs, frees);
    CHECK(allocs > NWORKERS * WORKER_OPS / 4);
    CHECK(reallocs > NWORKERS * WORKER_OPS / 10);
    CHECK(refusals > 0);

    /* Back to the start, plus exactly the regions added. */
    CHECK_STATUS(kbuddy_check(&heap), KBUDDY_OK);
    kbuddy_stats end;
    kbuddy_get_stats(&heap, &end);
    CHECK_EQ(end.allocated, start.allocated);
    CHECK_EQ(end.user, start.user);
    CHECK_EQ(end.allocations, start.allocations);
    CHECK_EQ(end.allocations, 0);
    CHECK_EQ(end.regions, NEW_REGIONS + 1);
    CHECK_EQ(end.total, start.total + added_total);
    CHECK_EQ(end.total + end.overhead, region_bytes[NEW_REGIONS + 1]);
    size_t sums[3] = {0, 0, 0};
    kbuddy_walk(&heap, walk_sum, sums);
    CHECK_EQ(sums[1], 0);
    CHECK_EQ(sums[0], end.total);
    /* The lock is free. */
    CHECK(kbuddy_spinlock_try_acquire(&heap_lock));
    kbuddy_spinlock_release(&heap_lock);
    free(arena);
}

/* Mutual exclusion: a plain (non-atomic) counter incremented under the
 * spinlock by several threads ends exact. */
#define LOCK_THREADS 4
#if THREADS_SLOW
#define LOCK_ROUNDS 20000
#else
#define LOCK_ROUNDS 200000
#endif

static kbuddy_spinlock counter_lock = KBUDDY_SPINLOCK_INIT;
static unsigned long counter;
static atomic_ulong try_successes;

static void *counter_main(void *arg) {
    bool use_try = arg != NULL;
    for (int i = 0; i < LOCK_ROUNDS; i++) {
        if (use_try && i % 2) {
            while (!kbuddy_spinlock_try_acquire(&counter_lock))
                sched_yield();
            atomic_fetch_add_explicit(&try_successes, 1, memory_order_relaxed);
        } else {
            kbuddy_spinlock_acquire(&counter_lock);
        }
        counter++;
        kbuddy_spinlock_release(&counter_lock);
    }
    return NULL;
}

TEST(threads_spinlock_gives_mutual_exclusion) {
    pthread_t t[LOCK_THREADS];
    counter = 0;
    atomic_store(&try_successes, 0);
    for (uintptr_t i = 0; i < LOCK_THREADS; i++)
        REQUIRE(pthread_create(&t[i], NULL, counter_main, (void *)(i % 2)) == 0);
    for (int i = 0; i < LOCK_THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(counter, (unsigned long)LOCK_THREADS * LOCK_ROUNDS);
    CHECK_EQ(atomic_load(&try_successes), (unsigned long)(LOCK_THREADS / 2) * (LOCK_ROUNDS / 2));
}

static kbuddy_spinlock held_lock = KBUDDY_SPINLOCK_INIT;
static atomic_int try_result = -1;

static void *try_from_other_thread(void *arg) {
    (void)arg;
    atomic_store(&try_result, kbuddy_spinlock_try_acquire(&held_lock) ? 1 : 0);
    return NULL;
}

TEST(threads_try_acquire_fails_while_another_thread_holds_the_lock) {
    pthread_t t;
    kbuddy_spinlock_acquire(&held_lock);
    REQUIRE(pthread_create(&t, NULL, try_from_other_thread, NULL) == 0);
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&try_result), 0);
    kbuddy_spinlock_release(&held_lock);
    REQUIRE(pthread_create(&t, NULL, try_from_other_thread, NULL) == 0);
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&try_result), 1);
    /* Taken by the other thread, which has exited holding it. */
    CHECK(!kbuddy_spinlock_try_acquire(&held_lock));
    kbuddy_spinlock_release(&held_lock);
}

/* Several heaps, each with its own spinlock, used concurrently: no state is
 * shared between heaps. */
#define NHEAPS 3
static kbuddy_heap heaps[NHEAPS];
static kbuddy_spinlock heap_locks[NHEAPS];

static void *multi_heap_main(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    uint64_t rng = 77 + id;
    void *mine[64];
    size_t sizes[64], n = 0;
    for (int op = 0; op < WORKER_OPS / 2; op++) {
        kbuddy_heap *h = &heaps[rnd_next(&rng) % NHEAPS];
        if (n < 64 && rnd_next(&rng) % 2) {
            size_t size = (size_t)(rnd_next(&rng) % 2000);
            void *p = kbuddy_alloc(h, size, 1);
            if (p) {
                fill(p, round_units(size), id * 1000 + (uint64_t)n);
                mine[n] = p;
                sizes[n++] = size;
            }
        } else if (n) {
            size_t i = (size_t)(rnd_next(&rng) % n);
            if (!holds(mine[i], round_units(sizes[i]), id * 1000 + (uint64_t)i))
                thread_fail("multi-heap contents changed", (unsigned long)id, 0);
            /* Free through the right heap: the others must call it foreign. */
            size_t owner_heap = NHEAPS;
            for (size_t k = 0; k < NHEAPS; k++) {
                kbuddy_status st = kbuddy_free(&heaps[k], mine[i]);
                if (st == KBUDDY_OK)
                    owner_heap = k;
                else if (st != KBUDDY_EFOREIGN)
                    thread_fail("free through another heap", (unsigned long)st, k);
            }
            if (owner_heap == NHEAPS)
                thread_fail("no heap owned the allocation", (unsigned long)id, 0);
            n--;
            if (i != n) {
                /* Keep each slot's pattern seed tied to its index: refill. */
                mine[i] = mine[n];
                sizes[i] = sizes[n];
                fill(mine[i], round_units(sizes[i]), id * 1000 + (uint64_t)i);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        bool freed = false;
        for (size_t k = 0; k < NHEAPS && !freed; k++)
            freed = kbuddy_free(&heaps[k], mine[i]) == KBUDDY_OK;
        if (!freed)
            thread_fail("final multi-heap free", (unsigned long)id, (unsigned long)i);
    }
    return NULL;
}

TEST(threads_on_several_heaps_with_their_own_locks) {
    unsigned char *mem = aligned_alloc(4096, NHEAPS * ((size_t)1 << 20));
    REQUIRE(mem);
    for (size_t k = 0; k < NHEAPS; k++) {
        kbuddy_init(&heaps[k]);
        kbuddy_spinlock init = KBUDDY_SPINLOCK_INIT;
        heap_locks[k] = init;
        kbuddy_lock lk = KBUDDY_SPINLOCK_HOOK(&heap_locks[k]);
        kbuddy_set_lock(&heaps[k], &lk);
        REQUIRE(kbuddy_add_region(&heaps[k], mem + k * ((size_t)1 << 20) + k, ((size_t)1 << 20) - 8) ==
                KBUDDY_OK);
    }
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        REQUIRE(pthread_create(&t[i], NULL, multi_heap_main, (void *)i) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    report_thread_errors();
    for (size_t k = 0; k < NHEAPS; k++) {
        kbuddy_stats st;
        kbuddy_get_stats(&heaps[k], &st);
        CHECK_EQ(st.allocations, 0);
        CHECK_EQ(st.allocated, 0);
        CHECK_STATUS(kbuddy_check(&heaps[k]), KBUDDY_OK);
    }
    free(mem);
}

KBTEST_MAIN()
