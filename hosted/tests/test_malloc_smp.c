/*
 * The kernel configuration of the global allocator (per-CPU caches chosen by
 * the cpu_id hook, interrupts masked through irq_save/irq_restore, memory
 * only from kbuddy_malloc_add_region, no grow hook, no errno), run on
 * threads that stand in for CPUs: each thread has a CPU number and an
 * "interrupt mask" depth of its own, so the test can check that every call
 * masks, calls cpu_id only while masked, and restores exactly once. With
 * function-pointer hooks and cpu_id_unmasked set the fast paths claim the
 * CPU's cache instead of masking (kbuddy_malloc.h): the last tests set it,
 * give two threads one CPU number, move a thread between CPUs, and
 * "interrupt" a call that holds the claim.
 */
#include "kbtest.h"
#include "kbuddy_malloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HEAP_BYTES ((size_t)48 << 20)

static _Alignas(4096) unsigned char boot_region[HEAP_BYTES / 4];
static unsigned char *later_region; /* "found later", as a kernel finds memory */

static _Thread_local unsigned my_cpu;
static _Thread_local int irq_depth;
static _Thread_local unsigned moving;    /* nonzero: cpu_id cycles through CPUs 5..7 */
static _Thread_local void (*interrupt)(void); /* run by irq_save while unmasked */
static _Thread_local unsigned irq_saves;      /* this thread's calls of irq_save */
static kbuddy_malloc_hooks hooks; /* as boot installed them */
static bool unmasked;             /* hooks.cpu_id_unmasked */
static _Atomic size_t cpu_id_unmasked, irq_misuse, hook_masked;
static _Atomic size_t bad_frees;
static _Atomic int last_bad;

/* Also the compile-time hooks of the malloc_smp_inline_hooks build
 * (smp_inline_hooks.h), hence external. */
unsigned kbm_test_cpu_id(void);
unsigned long kbm_test_irq_save(void);
void kbm_test_irq_restore(unsigned long state);

unsigned kbm_test_cpu_id(void) {
    if (irq_depth == 0)
        atomic_fetch_add(&cpu_id_unmasked, 1);
    if (moving) /* preempted and moved: another CPU at every call */
        return 5 + moving++ % 3;
    return my_cpu;
}

/* An interrupt arrives just before the mask takes effect: its handler
 * runs (once; not nested) with interrupts still on. */
unsigned long kbm_test_irq_save(void) {
    irq_saves++;
    void (*handler)(void) = interrupt;
    if (handler && irq_depth == 0) {
        interrupt = NULL;
        handler();
    }
    return (unsigned long)irq_depth++;
}

void kbm_test_irq_restore(unsigned long state) {
    if (irq_depth != (int)state + 1)
        atomic_fetch_add(&irq_misuse, 1);
    irq_depth = (int)state;
}

static void bad_free(void *ptr, kbuddy_status st, const char *func) {
    (void)ptr;
    (void)func;
    if (irq_depth)
        atomic_fetch_add(&hook_masked, 1);
    atomic_store(&last_bad, (int)st);
    atomic_fetch_add(&bad_frees, 1);
}

static kbuddy_malloc_stats stats(void) {
    kbuddy_malloc_stats st;
    kbuddy_malloc_get_stats(&st);
    return st;
}

static void boot(void) {
    static int done;
    if (done)
        return;
    done = 1;
    /* The boot CPU hands the first region over before the hooks exist... */
    CHECK_STATUS(kbuddy_malloc_add_region(boot_region, sizeof boot_region), KBUDDY_OK);
    hooks.cpu_id = kbm_test_cpu_id; /* ignored where the hooks are compiled in */
    hooks.irq_save = kbm_test_irq_save;
    hooks.irq_restore = kbm_test_irq_restore;
    hooks.bad_free = bad_free;
    kbuddy_malloc_set_hooks(&hooks);
    /* ...and more once the memory map is parsed. */
    /* 4 MiB-aligned (then started 100 bytes in), so that how many 3 MiB
     * blocks it can hold does not depend on where the C library put it. */
    later_region = aligned_alloc((size_t)4 << 20, HEAP_BYTES - sizeof boot_region);
    CHECK_STATUS(kbuddy_malloc_add_region(later_region + 100, HEAP_BYTES - sizeof boot_region - 100),
                 KBUDDY_OK);
}

#ifndef KBUDDY_MALLOC_HOOKS_H
/* Install the hooks again with cpu_id_unmasked on or off (between tests:
 * no call is under way, no cache claimed). Off again, the count of cpu_id
 * calls made unmasked starts over. */
static void set_unmasked(bool on) {
    hooks.cpu_id_unmasked = on;
    kbuddy_malloc_set_hooks(&hooks);
    unmasked = on;
    if (!on)
        atomic_store(&cpu_id_unmasked, 0);
}
#endif

#define CHECK_CONSISTENT()                                                                    \
    do {                                                                                      \
        kbuddy_malloc_stats s_ = stats();                                                     \
        CHECK_EQ(s_.heap.allocations, s_.live_blocks + s_.cached_blocks + s_.internal_blocks); \
        CHECK_EQ(s_.heap.allocated, s_.live_bytes + s_.cached_bytes + s_.internal_bytes);     \
        CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);                                       \
        CHECK_EQ(atomic_load(&irq_misuse), 0);                                                \
        CHECK_EQ(unmasked ? 0 : atomic_load(&cpu_id_unmasked), 0);                            \
        CHECK_EQ(irq_depth, 0);                                                               \
    } while (0)

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* --- Each CPU runs W3; a quarter of its frees are of another CPU's blocks -- */

enum { CPUS = 4, SLOTS = 4000, OPS = 150000 };
static unsigned char *_Atomic shared_slot[CPUS][SLOTS];

typedef struct {
    unsigned cpu;
    size_t errors;
} cpu_arg;

static void *cpu_main(void *varg) {
    cpu_arg *a = varg;
    my_cpu = a->cpu;
    uint64_t seed = 42 + a->cpu;
    for (unsigned op = 0; op < OPS; op++) {
        /* Slots are shared: a CPU frees whatever block it finds, whoever
         * allocated it. */
        unsigned owner = op % 4 ? a->cpu : (unsigned)(xorshift(&seed) % CPUS);
        unsigned i = (unsigned)(xorshift(&seed) % SLOTS);
        unsigned char *p = atomic_exchange(&shared_slot[owner][i], NULL);
        if (p) {
            size_t n = p[0] | (size_t)p[1] << 8;
            a->errors += p[n > 2 ? n - 1 : 1] != (unsigned char)n;
            kbm_free(p);
        } else {
            size_t n = 3 + xorshift(&seed) % (op % 32 ? 4000 : 30000);
            p = kbm_malloc(n);
            if (!p) {
                a->errors++;
                continue;
            }
            p[0] = (unsigned char)n;
            p[1] = (unsigned char)(n >> 8);
            p[n - 1] = (unsigned char)n;
            p = atomic_exchange(&shared_slot[owner][i], p);
            if (p)
                kbm_free(p); /* raced with another CPU: drop the older */
        }
    }
    return NULL;
}

TEST(cpus_share_the_heap_through_their_caches) {
    boot();
    pthread_t t[CPUS];
    cpu_arg a[CPUS];
    for (unsigned i = 0; i < CPUS; i++) {
        a[i] = (cpu_arg){i, 0};
        REQUIRE(pthread_create(&t[i], NULL, cpu_main, &a[i]) == 0);
    }
    for (unsigned i = 0; i < CPUS; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(a[i].errors, 0);
    }
    CHECK_EQ(stats().caches, CPUS);
    CHECK_CONSISTENT();
    /* Blocks left in the slots are still live and intact. */
    size_t left = 0;
    for (unsigned c = 0; c < CPUS; c++)
        for (unsigned i = 0; i < SLOTS; i++) {
            unsigned char *p = atomic_exchange(&shared_slot[c][i], NULL);
            if (p) {
                size_t n = p[0] | (size_t)p[1] << 8;
                CHECK_EQ(p[n - 1], (unsigned char)n);
                kbm_free(p);
                left++;
            }
        }
    CHECK(left > 0);
    CHECK_EQ(stats().live_blocks, 0);
    CHECK_EQ(atomic_load(&bad_frees), 0);
    CHECK_CONSISTENT();
}

/* --- A CPU numbered beyond KBUDDY_MALLOC_MAX_CPUS works without a cache ---- */

static void *big_cpu_main(void *varg) {
    (void)varg;
    my_cpu = 1000;
    void *p[300];
    for (unsigned i = 0; i < 300; i++)
        p[i] = kbm_malloc(1 + i * 13);
    for (unsigned i = 0; i < 300; i++) {
        if (!p[i] || kbm_malloc_usable_size(p[i]) < 1 + i * 13)
            return (void *)1;
        kbm_free(p[i]);
    }
    void *q = kbm_malloc(64);
    kbm_free(q);
    kbm_free(q); /* still caught without a cache */
    return NULL;
}

TEST(cpus_without_a_cache_use_the_heap_directly) {
    boot();
    kbuddy_malloc_stats before = stats();
    size_t bad0 = atomic_load(&bad_frees);
    pthread_t t;
    void *r;
    REQUIRE(pthread_create(&t, NULL, big_cpu_main, NULL) == 0);
    pthread_join(t, &r);
    CHECK(r == NULL);
    kbuddy_malloc_stats after = stats();
    CHECK_EQ(after.caches, before.caches);
    CHECK_EQ(after.cached_blocks, before.cached_blocks);
    CHECK_EQ(atomic_load(&bad_frees), bad0 + 1);
    CHECK_EQ(atomic_load(&last_bad), KBUDDY_EDOUBLEFREE);
    CHECK_EQ(atomic_load(&hook_masked), 0);
    CHECK_CONSISTENT();
}

/* --- Out of memory -------------------------------------------------------- */

TEST(out_of_memory_fails_cleanly_and_caches_give_memory_back) {
    boot();
    my_cpu = 0;
    /* Fill the heap with small blocks until it refuses. */
    enum { MAXB = 1 << 20 };
    static void *p[MAXB];
    size_t n = 0;
    while (n < MAXB && (p[n] = kbm_malloc(1000)) != NULL)
        n++;
    CHECK(n < MAXB);
    CHECK(n > HEAP_BYTES / 1024 / 2);
    CHECK(kbm_malloc(HEAP_BYTES / 8) == NULL);
    for (size_t i = 0; i < n; i++)
        kbm_free(p[i]);
    CHECK(stats().depot_blocks > 0);
    /* Every CPU empties its own magazines (per-CPU builds: thread_exit is a
     * flush of this CPU's cache alone); the depot is left full... */
    for (unsigned c = 0; c < CPUS; c++) {
        my_cpu = c;
        kbuddy_malloc_thread_exit();
    }
    my_cpu = 0;
    CHECK(stats().depot_blocks > 0);
    CHECK_EQ(stats().cached_blocks, stats().depot_blocks);
    /* ...and goes back to the heap by itself when the heap runs out: take
     * large blocks until the heap refuses one. */
    void *big[16];
    size_t nb = 0;
    while (nb < 16 && (big[nb] = kbm_malloc(HEAP_BYTES / 16)) != NULL)
        nb++;
    /* The later region holds eight whole 4 MiB-aligned blocks, the boot
     * region two or three (it is only 4 KiB-aligned); the caches' own
     * structures may break one or two of them: at least six 3 MiB blocks
     * prove the depot went back. */
    CHECK(nb >= 6 && nb < 16);
    CHECK_EQ(stats().depot_blocks, 0);
    for (size_t i = 0; i < nb; i++)
        kbm_free(big[i]);
    CHECK_EQ(stats().cached_blocks, 0);
    CHECK_CONSISTENT();
}

TEST(bad_frees_are_counted_and_reported_with_interrupts_restored) {
    boot();
    my_cpu = 2;
    size_t b0 = stats().bad_frees;
    int x;
    kbm_free(&x);
    CHECK_EQ(atomic_load(&last_bad), KBUDDY_EFOREIGN);
    void *p = kbm_malloc(100);
    kbm_free(p);
    kbm_free(p);
    CHECK_EQ(atomic_load(&last_bad), KBUDDY_EDOUBLEFREE);
    kbm_free_sized(kbm_malloc(100), 4000);
    CHECK_EQ(atomic_load(&last_bad), KBUDDY_ESIZE);
    CHECK_EQ(stats().bad_frees, b0 + 3);
    CHECK_EQ(atomic_load(&hook_masked), 0);
    /* errno is not the kernel build's business; the results are the same. */
    volatile size_t three = 3; /* a bad alignment the compiler cannot see */
    CHECK(kbm_aligned_alloc(three, 10) == NULL);
    void *o = (void *)1;
    CHECK_EQ(kbm_posix_memalign(&o, 3, 10), 22);
    CHECK_CONSISTENT();
}

/* --- The last bytes: no memory even for a magazine ---------------------- */

TEST(without_memory_for_a_magazine_blocks_bypass_the_cache) {
    boot();
    for (unsigned c = 0; c < 8; c++) { /* every cache and the depot empty */
        my_cpu = c;
        kbuddy_malloc_flush_caches();
    }
    size_t live0 = stats().live_blocks;
    my_cpu = 5; /* a CPU with a cache but no magazines */
    void *warm = kbm_malloc(32);
    kbm_free(warm);
    kbuddy_malloc_flush_caches();
    /* Fill every byte of the heap with minimum blocks, from a CPU without a
     * cache (straight from the heap, nothing cached). */
    my_cpu = 1000;
    size_t cap = HEAP_BYTES / 32, n = 0;
    void **all = malloc(cap * sizeof *all); /* the C library's */
    REQUIRE(all != NULL);
    while (n < cap && (all[n] = kbm_malloc(1)) != NULL)
        n++;
    REQUIRE(n < cap);
    CHECK_EQ(stats().heap.largest_free, 0);
    /* One block free: not enough for a magazine (576 bytes). */
    kbm_free(all[--n]);
    my_cpu = 5;
    kbuddy_malloc_stats before = stats();
    void *p = kbm_malloc(20);
    CHECK(p != NULL); /* the one block, without a magazine */
    CHECK_EQ(stats().internal_blocks, before.internal_blocks);
    CHECK(kbm_malloc(20) == NULL);
    kbm_free(p); /* no magazine to put it in: straight back */
    CHECK_EQ(stats().cached_blocks, before.cached_blocks);
    CHECK_EQ(stats().heap.largest_free, 32);
    kbm_free(p);
    CHECK_EQ(atomic_load(&last_bad), KBUDDY_EDOUBLEFREE);
    CHECK_CONSISTENT();
    my_cpu = 1000;
    while (n)
        kbm_free(all[--n]);
    free(all);
    my_cpu = 0;
    CHECK_EQ(stats().live_blocks, live0);
    CHECK_CONSISTENT();
}

TEST(the_region_table_has_a_limit) {
    boot();
    static _Alignas(64) unsigned char pieces[KBUDDY_MALLOC_MAX_REGIONS][4096];
    size_t have = stats().regions, added = 0;
    kbuddy_status st = KBUDDY_OK;
    for (size_t i = 0; i < KBUDDY_MALLOC_MAX_REGIONS && st == KBUDDY_OK; i++)
        if ((st = kbuddy_malloc_add_region(pieces[i], sizeof pieces[i])) == KBUDDY_OK)
            added++;
    CHECK_STATUS(st, KBUDDY_ENOMEM);
    CHECK_EQ(have + added, KBUDDY_MALLOC_MAX_REGIONS);
    CHECK_EQ(stats().regions, KBUDDY_MALLOC_MAX_REGIONS);
    CHECK_CONSISTENT();
}

/* --- The other CPUs stopped for good: kbuddy_malloc_fork_child ----------- */

enum { KEPT = 10 };

/* As CPU varg: fill this CPU's cache, keep KEPT blocks live. */
static void *fill_cache_main(void *varg) {
    my_cpu = (unsigned)(uintptr_t)varg;
    void **p = malloc(200 * sizeof *p);
    for (unsigned i = 0; p && i < 200; i++)
        p[i] = kbm_malloc(1 + i * 19 % 4000);
    for (unsigned i = KEPT; p && i < 200; i++)
        kbm_free(p[i]);
    return p;
}

TEST(fork_child_frees_the_other_cpus_caches) {
    boot();
    my_cpu = 0;
    kbm_free(kbm_malloc(100)); /* CPU 0 has a cache, with a block in it */
    void **kept[CPUS];
    for (unsigned i = 1; i < CPUS; i++) {
        pthread_t t;
        REQUIRE(pthread_create(&t, NULL, fill_cache_main, (void *)(uintptr_t)i) == 0);
        pthread_join(t, (void **)&kept[i]);
        REQUIRE(kept[i] != NULL);
    }
    kbuddy_malloc_stats before = stats();
    size_t bad0 = atomic_load(&bad_frees);
    CHECK(before.caches >= CPUS); /* and any earlier tests made */
    /* prepare and parent: the lock and the interrupt mask, nothing else */
    kbuddy_malloc_fork_prepare();
    kbuddy_malloc_fork_parent();
    CHECK_EQ(stats().caches, before.caches);
    CHECK_EQ(stats().cached_blocks, before.cached_blocks);
    CHECK_CONSISTENT();
    /* child: only CPU 0's cache is left; blocks held stay held */
    kbuddy_malloc_fork_prepare();
    kbuddy_malloc_fork_child();
    kbuddy_malloc_stats after = stats();
    CHECK_EQ(after.caches, 1);
    CHECK_EQ(after.live_blocks, before.live_blocks);
    CHECK_EQ(after.live_bytes, before.live_bytes);
    CHECK(after.cached_blocks >= 1 && after.cached_blocks < before.cached_blocks);
    CHECK(after.internal_blocks < before.internal_blocks);
    CHECK_CONSISTENT();
    /* a CPU that comes back makes a new cache */
    pthread_t t;
    void **again = NULL;
    REQUIRE(pthread_create(&t, NULL, fill_cache_main, (void *)(uintptr_t)2) == 0);
    pthread_join(t, (void **)&again);
    REQUIRE(again != NULL);
    CHECK_EQ(stats().caches, 2);
    CHECK_CONSISTENT();
    for (unsigned i = 1; i < CPUS; i++) {
        for (unsigned j = 0; j < KEPT; j++)
            kbm_free(kept[i][j]);
        free(kept[i]);
    }
    for (unsigned j = 0; j < KEPT; j++)
        kbm_free(again[j]);
    free(again);
    CHECK_EQ(stats().live_blocks, before.live_blocks - (CPUS - 1) * KEPT);
    CHECK_EQ(atomic_load(&bad_frees), bad0);
    CHECK_CONSISTENT();
}

/* Two mallocs and two frees (one sized) that the calling CPU's cache
 * serves. */
static void four_cached_calls(void) {
    void *p = kbm_malloc(64);
    REQUIRE(p != NULL);
    kbm_free_sized(p, 64);
    p = kbm_malloc(64);
    REQUIRE(p != NULL);
    kbm_free(p);
}

/* The hook contract by default (function-pointer hooks too): each cached
 * malloc and free masks interrupts once and calls cpu_id masked. */
TEST(by_default_every_call_masks_and_calls_cpu_id_masked) {
    boot();
    my_cpu = 3;
    kbm_free(kbm_malloc(64)); /* CPU 3 has a cache, a block of the class */
    size_t unmasked0 = atomic_load(&cpu_id_unmasked);
    unsigned saves0 = irq_saves;
    four_cached_calls();
    CHECK_EQ(irq_saves - saves0, 4);
    CHECK_EQ(atomic_load(&cpu_id_unmasked), unmasked0);
    CHECK_CONSISTENT();
    my_cpu = 0;
}

#ifndef KBUDDY_MALLOC_HOOKS_H
/* --- cpu_id_unmasked: the fast paths claim the cache ------------------- */

/* The same calls with cpu_id_unmasked set: the cached ones mask nothing
 * and call cpu_id unmasked. */
TEST(with_cpu_id_unmasked_the_cached_calls_do_not_mask) {
    boot();
    set_unmasked(true);
    my_cpu = 3;
    kbm_free(kbm_malloc(64));
    size_t unmasked0 = atomic_load(&cpu_id_unmasked);
    unsigned saves0 = irq_saves;
    four_cached_calls();
    CHECK_EQ(irq_saves - saves0, 0);
    CHECK_EQ(atomic_load(&cpu_id_unmasked), unmasked0 + 4);
    CHECK_CONSISTENT();
    my_cpu = 0;
    set_unmasked(false);
}

/* With cpu_id_unmasked set, a CPU numbered beyond the table claims the
 * cache of its number modulo the table's size where one exists, if that
 * size is a power of two (the claim keeps that safe, and the fast paths
 * save a bounds check); with any other size (malloc_smp_cpus6) it borrows
 * none. Without one it works through the lock and makes no cache. */
#define BORROWS ((KBUDDY_MALLOC_MAX_CPUS & (KBUDDY_MALLOC_MAX_CPUS - 1)) == 0)
TEST(with_cpu_id_unmasked_a_cpu_beyond_a_power_of_two_table_borrows_a_cache) {
    boot();
    set_unmasked(true);
    my_cpu = 2;
    kbm_free(kbm_malloc(200)); /* CPU 2 has a cache, a block of 200's class in it */
    kbuddy_malloc_stats before = stats();
    size_t bad0 = atomic_load(&bad_frees);
    my_cpu = 2 + KBUDDY_MALLOC_MAX_CPUS;
    void *p = kbm_malloc(200);
    REQUIRE(p != NULL);
    kbm_free_sized(p, 200);
    kbuddy_malloc_stats after = stats();
    /* both from CPU 2's cache, or both through the lock */
    CHECK_EQ(after.large_calls, before.large_calls + (BORROWS ? 0 : 2));
    CHECK_EQ(after.caches, before.caches);
    CHECK_EQ(after.cached_blocks, before.cached_blocks);
    /* Slot 1: CPU 1's cache went in fork_child_frees_the_other_cpus_caches
     * and no test since ran on CPU 1, so there is none to borrow. */
    my_cpu = 1 + KBUDDY_MALLOC_MAX_CPUS;
    p = kbm_malloc(200);
    REQUIRE(p != NULL);
    kbm_free(p);
    kbm_free(p); /* still caught */
    kbuddy_malloc_stats last = stats();
    CHECK_EQ(last.large_calls, after.large_calls + 2);
    CHECK_EQ(last.caches, after.caches);
    CHECK_EQ(last.cached_blocks, after.cached_blocks);
    CHECK_EQ(atomic_load(&bad_frees), bad0 + 1);
    CHECK_EQ(atomic_load(&last_bad), KBUDDY_EDOUBLEFREE);
    CHECK_CONSISTENT();
    my_cpu = 0;
    set_unmasked(false);
}

/* Two threads given CPU 6 (one by a number beyond the table: it borrows
 * CPU 6's cache), one on CPU 7, one moved between CPUs 5..7 at every call:
 * each cache is used by one call at a time (the others go through the
 * lock), so no block is handed out twice and every block keeps what its
 * owner wrote. (malloc_smp_cpus6: CPUs 6 and 7 are beyond its table and
 * work through the lock; CPU 5's cache is the one shared.) */
enum { SHARE_THREADS = 4, SHARE_SLOTS = 512, SHARE_OPS = 200000 };

static void *share_main(void *varg) {
    unsigned id = (unsigned)(uintptr_t)varg;
    /* Thread 1 is CPU 6 too, by a number beyond the table (claim_slot). */
    my_cpu = id == 0 ? 6 : id == 1 ? 6 + KBUDDY_MALLOC_MAX_CPUS : 7;
    moving = id == 3;
    unsigned char *slot[SHARE_SLOTS] = {0};
    size_t size[SHARE_SLOTS] = {0};
    uint64_t seed = 99 + id;
    uintptr_t errors = 0;
    for (unsigned op = 0; op < SHARE_OPS; op++) {
        unsigned i = (unsigned)(xorshift(&seed) % SHARE_SLOTS);
        if (slot[i]) {
            for (size_t k = 0; k < size[i]; k += 61)
                errors += slot[i][k] != (unsigned char)(id + i);
            errors += slot[i][size[i] - 1] != (unsigned char)(id + i);
            if (op % 2)
                kbm_free_sized(slot[i], size[i]);
            else
                kbm_free(slot[i]);
            slot[i] = NULL;
        } else {
            size[i] = 1 + xorshift(&seed) % 3000;
            slot[i] = kbm_malloc(size[i]);
            if (!slot[i]) {
                errors++;
                continue;
            }
            memset(slot[i], (unsigned char)(id + i), size[i]);
        }
    }
    for (unsigned i = 0; i < SHARE_SLOTS; i++)
        kbm_free(slot[i]);
    return (void *)errors;
}

/* Run SHARE_THREADS threads of share_main: none finds a block damaged,
 * they leave nothing live, no free is refused, at most new_caches caches
 * are made, and the layer is consistent after. */
static void share_threads_run(size_t new_caches) {
    kbuddy_malloc_stats before = stats();
    size_t bad0 = atomic_load(&bad_frees);
    pthread_t t[SHARE_THREADS];
    for (unsigned i = 0; i < SHARE_THREADS; i++)
        REQUIRE(pthread_create(&t[i], NULL, share_main, (void *)(uintptr_t)i) == 0);
    for (unsigned i = 0; i < SHARE_THREADS; i++) {
        void *errors;
        pthread_join(t[i], &errors);
        CHECK(errors == NULL);
    }
    kbuddy_malloc_stats after = stats();
    CHECK_EQ(after.live_blocks, before.live_blocks);
    CHECK_EQ(after.live_bytes, before.live_bytes);
    CHECK(after.caches <= before.caches + new_caches);
    CHECK_EQ(atomic_load(&bad_frees), bad0);
    CHECK_CONSISTENT();
}

TEST(threads_sharing_a_cpu_or_moving_between_cpus_never_share_a_block) {
    boot();
    set_unmasked(true);
    share_threads_run(3); /* CPUs 5, 6, 7 at most, one cache each */
    set_unmasked(false);
}

/* cpu_id_unmasked alone (no cpu_id, no interrupt hooks: one CPU, whose
 * threads are preemptible): every thread is CPU 0, and the fast paths
 * must still claim its cache, or two threads pop the same block. */
TEST(cpu_id_unmasked_alone_still_claims_the_one_cache) {
    boot();
    kbuddy_malloc_hooks only = hooks;
    only.cpu_id = NULL;
    only.irq_save = NULL;
    only.irq_restore = NULL;
    only.cpu_id_unmasked = true;
    kbuddy_malloc_set_hooks(&only);
    share_threads_run(0); /* CPU 0's, no other */
    kbuddy_malloc_set_hooks(&hooks);
}

/* The "interrupt handler": allocates and frees on the CPU whose cache the
 * interrupted call holds, and frees one block twice. */
static void allocating_handler(void) {
    unsigned char *p = kbm_malloc(48), *q = kbm_malloc(3000);
    if (p && q) {
        memset(p, 1, 48);
        memset(q, 2, 3000);
    }
    kbm_free(q);
    kbm_free_sized(p, 48);
    kbm_free(p);
}

TEST(an_interrupt_while_the_cache_is_claimed_goes_through_the_lock) {
    boot();
    set_unmasked(true);
    my_cpu = 4;
    void *warm = kbm_malloc(100); /* CPU 4 has a cache */
    kbm_free(warm);
    kbuddy_malloc_stats before = stats();
    size_t bad0 = atomic_load(&bad_frees);
    /* A class CPU 4 never used: its fast path claims the cache, finds no
     * block, and masks on the way to the slow path; the handler runs then.
     * Its four calls find the cache claimed: each a call to the heap under
     * the lock (large_calls), no new cache, nothing cached. */
    interrupt = allocating_handler;
    unsigned char *a = kbm_malloc(2000);
    CHECK(interrupt == NULL); /* it ran */
    REQUIRE(a != NULL);
    kbuddy_malloc_stats mid = stats();
    CHECK_EQ(mid.large_calls, before.large_calls + 4);
    CHECK_EQ(mid.caches, before.caches);
    CHECK_EQ(mid.live_blocks, before.live_blocks + 1);
    CHECK_EQ(atomic_load(&bad_frees), bad0 + 1);
    CHECK_EQ(atomic_load(&last_bad), KBUDDY_EDOUBLEFREE);
    CHECK_CONSISTENT();
    /* Free: a large block leaves the fast path for the slow one with the
     * claim held; the handler runs there the same way. */
    void *big = kbm_malloc(64 << 10);
    REQUIRE(big != NULL);
    before = stats();
    interrupt = allocating_handler;
    kbm_free(big);
    CHECK(interrupt == NULL);
    kbuddy_malloc_stats after = stats();
    CHECK_EQ(after.large_calls, before.large_calls + 4 + 1); /* and the large block's own */
    CHECK_EQ(after.caches, before.caches);
    CHECK_EQ(after.live_blocks, before.live_blocks - 1);
    CHECK_EQ(atomic_load(&bad_frees), bad0 + 2);
    kbm_free_sized(a, 2000);
    CHECK_CONSISTENT();
    my_cpu = 0;
    set_unmasked(false);
}
#endif

KBTEST_MAIN()
