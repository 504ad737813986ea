/*
 * kbuddy_bench: the workloads of bench-workloads.md (W1..W7, F1, F2), run
 * exactly as written, against kbuddy, glibc malloc and a no-op allocator in
 * one process, so that the figures compare with other allocators measured
 * the same way.
 *
 * How the comparison is kept fair
 *   Every allocator is reached through the same small table of function
 *   pointers (heap_ops / frame_ops), and every workload's loop is one
 *   function that does not know which allocator it drives. The no-op
 *   allocator (a fixed dummy pointer, a free that does nothing) therefore
 *   runs the very same instructions for the generator, the slot table and
 *   the indirect calls, and its time (or instruction count) is the loop's
 *   own cost, to be subtracted.
 *
 *   The loops are noinline with stable names (bench_loop_*): callgrind's
 *   --toggle-collect=bench_loop_* counts them and nothing else, so region
 *   set-up and tear-down are excluded. Set-up is run identically in every
 *   mode anyway (the kbuddy heap and frame window are initialised even for
 *   glibc and the no-op), so it would cancel in a subtraction too.
 *
 * Random draws: xorshift64 (13, 7, 17). A draw is made where the workload
 * text names one, in the order it names them: W3 draws r (slot) for every
 * operation and r2 (size) only when it allocates; W4 then draws r3 (align).
 * W3, W4 and W6 use seed 42, W5 seed 7; F1 and F2 give no seed and use 42.
 *
 * Timing: CLOCK_MONOTONIC around a whole loop; the tables show the median of
 * --runs runs (default 5). Runs are the outer loop so that noise on a shared
 * machine is spread over every allocator alike.
 *
 * Usage: kbuddy_bench [--runs N] [--only W3,W4,...] [--ops N] [--markdown]
 *                     [--smoke] [--alloc kbuddy|kbuddy-unsized|glibc|noop|kbm|kbm-hooks|
 *                       kbm-hooks-unmasked]
 *                     [--placement fast|dense] [--lock] [--w5-offsets N]
 *   --alloc with --only <one workload> runs that loop once (callgrind mode).
 *   --placement sets the kbuddy heap's kbuddy_placement for every workload
 *   (W5 included).
 *   --lock installs the built-in spinlock on the kbuddy heap (kbuddy_set_lock
 *   with KBUDDY_SPINLOCK_HOOK), as a kernel sharing one heap between CPUs
 *   does: every call then takes and releases it through the hook pointers.
 */
#define _POSIX_C_SOURCE 200809L

#include <kbuddy.h>
#ifndef KBUDDY_BENCH_MALLOC /* 1: also the global allocator (bench/CMakeLists.txt) */
#define KBUDDY_BENCH_MALLOC 0
#endif
#if KBUDDY_BENCH_MALLOC
#include <kbuddy_malloc.h>
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__clang__)
#define BENCH_LOOP __attribute__((noinline, used))
#elif defined(__GNUC__)
/* noipa: no inlining, cloning or interprocedural tricks, so that the loop
 * keeps its name and calls the allocator through the pointer it is given. */
#define BENCH_LOOP __attribute__((noipa, used))
#else
#define BENCH_LOOP
#endif

/* ------------------------------------------------------------------------ */
/* Workload parameters (bench-workloads.md)                                  */
/* ------------------------------------------------------------------------ */

#define REGION_SIZE ((size_t)64 << 20)
#define REGION_ALIGN ((size_t)4096)
#define NFRAMES ((size_t)262144)
#define NSLOTS 10000u
#define W1_PAIRS 1000000u
#define W2_BLOCKS 100000u
#define W2_ROUNDS 10u
#define W3_OPS 2000000u
#define F_OPS 1000000u
#define W7_MIN_FREES 50000u /* W7 repeats small N until this many frees are timed */
#define SEED_RANDOM UINT64_C(42)
#define SEED_W5 UINT64_C(7)
#define SEED_FRAMES UINT64_C(42)
#define MAX_RUNS 101

static const size_t w7_sizes[] = {100, 1000, 10000, 50000};
#define W7_NSIZES (sizeof w7_sizes / sizeof w7_sizes[0])

/* ------------------------------------------------------------------------ */
/* Generator and clock                                                      */
/* ------------------------------------------------------------------------ */

static inline uint64_t xorshift64(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* The allocators, behind one table each                                    */
/* ------------------------------------------------------------------------ */

/* A byte allocator. free returns 0 on success; the loops count failures. */
typedef struct heap_ops {
    const char *name;
    void *(*alloc)(void *ctx, size_t size, size_t align);
    int (*free)(void *ctx, void *p, size_t size, size_t align);
    void *ctx;
} heap_ops;

/* A frame allocator. Both return 0 on success. */
typedef struct frame_ops {
    const char *name;
    int (*alloc)(void *ctx, size_t count, size_t align, size_t *first);
    int (*free)(void *ctx, size_t first, size_t count);
    void *ctx;
} frame_ops;

static kbuddy_heap g_heap;
static kbuddy_placement g_placement = KBUDDY_PLACE_DENSE; /* --placement */
static bool g_locked;                                      /* --lock */
static kbuddy_spinlock g_heap_lock = KBUDDY_SPINLOCK_INIT;
static unsigned char *g_region;
static kbuddy_frames g_frames;
static void *g_frames_meta;
static size_t g_frames_meta_size;

static void *kb_alloc(void *ctx, size_t size, size_t align) {
    return kbuddy_alloc((kbuddy_heap *)ctx, size, align);
}
static int kb_free_sized(void *ctx, void *p, size_t size, size_t align) {
    return (int)kbuddy_free_sized((kbuddy_heap *)ctx, p, size, align);
}
static int kb_free_unsized(void *ctx, void *p, size_t size, size_t align) {
    (void)size;
    (void)align;
    return (int)kbuddy_free((kbuddy_heap *)ctx, p);
}

/* glibc as a program calling it would: malloc when its natural alignment
 * (16 bytes on x86-64) suffices, posix_memalign otherwise. */
static void *glibc_alloc(void *ctx, size_t size, size_t align) {
    (void)ctx;
    if (align <= _Alignof(max_align_t))
        return malloc(size);
    void *p;
    return posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, size) ? NULL : p;
}
static int glibc_free(void *ctx, void *p, size_t size, size_t align) {
    (void)ctx;
    (void)size;
    (void)align;
    free(p);
    return 0;
}

/* The no-op: one dummy block, aligned for every workload; free forgets. */
static _Alignas(4096) unsigned char noop_block[4096];
static void *noop_alloc(void *ctx, size_t size, size_t align) {
    (void)ctx;
    (void)size;
    (void)align;
    return noop_block;
}
static int noop_free(void *ctx, void *p, size_t size, size_t align) {
    (void)ctx;
    (void)p;
    (void)size;
    (void)align;
    return 0;
}

static int kbf_alloc(void *ctx, size_t count, size_t align, size_t *first) {
    return (int)kbuddy_frames_alloc((kbuddy_frames *)ctx, count, align, first);
}
static int kbf_free(void *ctx, size_t first, size_t count) {
    return (int)kbuddy_frames_free((kbuddy_frames *)ctx, first, count);
}
static int noopf_alloc(void *ctx, size_t count, size_t align, size_t *first) {
    (void)ctx;
    (void)count;
    (void)align;
    *first = 0;
    return 0;
}
static int noopf_free(void *ctx, size_t first, size_t count) {
    (void)ctx;
    (void)first;
    (void)count;
    return 0;
}

#if KBUDDY_BENCH_MALLOC
/* The global allocator (kbuddy_malloc.h) in its kernel configuration
 * (bench/CMakeLists.txt builds malloc/ without TLS): per-CPU caches, one
 * CPU, the built-in spinlock, in front of a core heap given a region of its
 * own of the same size. kbm_malloc / kbm_aligned_alloc, freed with
 * kbm_free_sized / kbm_free_aligned_sized, as a kernel's typed allocations
 * (Rust's GlobalAlloc) are. Its heap cannot be reset between runs: each run
 * ends with the caches flushed, which leaves the heap as empty as new. */
static void *kbm_alloc_op(void *ctx, size_t size, size_t align) {
    (void)ctx;
    return align <= KBUDDY_MIN_BLOCK ? kbm_malloc(size) : kbm_aligned_alloc(align, size);
}
static int kbm_free_op(void *ctx, void *p, size_t size, size_t align) {
    (void)ctx;
    if (align <= KBUDDY_MIN_BLOCK)
        kbm_free_sized(p, size);
    else
        kbm_free_aligned_sized(p, align, size);
    return 0;
}

#if defined(KBUDDY_BENCH_STATIC_HOOKS) && KBUDDY_BENCH_STATIC_HOOKS
/* kbuddy_bench_hooks: the layer was built with kbm_bench_hooks.h, whose
 * compile-time hooks read and write these. */
unsigned kbm_bench_cpu;
unsigned long kbm_bench_irq = 1;
#endif

/* --alloc kbm-hooks: as a kernel installs them, a cpu_id hook and interrupt
 * hooks that save and restore a flag (a kernel's read and clear of its
 * status register's interrupt-enable bit: a load and a store or two). */
static unsigned long g_fake_irq = 1;
static unsigned g_fake_cpu;
static unsigned fake_cpu_id(void) { return g_fake_cpu; }
static unsigned long fake_irq_save(void) {
    unsigned long s = g_fake_irq;
    g_fake_irq = 0;
    return s;
}
static void fake_irq_restore(unsigned long s) { g_fake_irq = s; }
#endif

/* The first NALLOC run side by side; the rest only with --alloc. */
#if KBUDDY_BENCH_MALLOC
enum { A_KB, A_KBU, A_GLIBC, A_NOOP, A_KBM, NALLOC, A_KBMH = NALLOC, A_KBMU };
#else
enum { A_KB, A_KBU, A_GLIBC, A_NOOP, NALLOC, A_KBM = -1, A_KBMH = -2, A_KBMU = -3 };
#endif
static const heap_ops heaps[] = {
    {"kbuddy", kb_alloc, kb_free_sized, &g_heap},
    {"kbuddy-unsized", kb_alloc, kb_free_unsized, &g_heap},
    {"glibc", glibc_alloc, glibc_free, NULL},
    {"noop", noop_alloc, noop_free, NULL},
#if KBUDDY_BENCH_MALLOC
    {"kbm", kbm_alloc_op, kbm_free_op, NULL},
    {"kbm-hooks", kbm_alloc_op, kbm_free_op, NULL},
    {"kbm-hooks-unmasked", kbm_alloc_op, kbm_free_op, NULL},
#endif
};
/* Column headings of the side-by-side tables. */
static const char *const heap_short[] = {"kbuddy", "kb-unsz",   "glibc",        "noop",
                                         "kbm",    "kbm-hooks", "kbm-hooks-unm"};
#define NHEAPS ((int)(sizeof heaps / sizeof heaps[0]))

enum { FA_KB, FA_NOOP, NFALLOC };
static const frame_ops frames[NFALLOC] = {
    {"kbuddy", kbf_alloc, kbf_free, &g_frames},
    {"noop", noopf_alloc, noopf_free, NULL},
};

/* Fresh kbuddy state over the same memory. Run before every workload, for
 * every allocator alike, so set-up is identical in all modes. */
static void reset_kbuddy(void) {
    kbuddy_init(&g_heap);
    kbuddy_status st = kbuddy_set_placement(&g_heap, g_placement);
    if (g_locked) {
        kbuddy_lock lk = KBUDDY_SPINLOCK_HOOK(&g_heap_lock);
        kbuddy_set_lock(&g_heap, &lk);
    }
    if (st == KBUDDY_OK)
        st = kbuddy_add_region(&g_heap, g_region, REGION_SIZE);
    if (st != KBUDDY_OK) {
        fprintf(stderr, "kbuddy_add_region: %s\n", kbuddy_strerror(st));
        exit(2);
    }
    st = kbuddy_frames_init(&g_frames, 0, NFRAMES, g_frames_meta, g_frames_meta_size);
    if (st == KBUDDY_OK)
        st = kbuddy_frames_add(&g_frames, 0, NFRAMES);
    if (st != KBUDDY_OK) {
        fprintf(stderr, "kbuddy_frames_init/add: %s\n", kbuddy_strerror(st));
        exit(2);
    }
}

/* ------------------------------------------------------------------------ */
/* The loops. Each returns the number of failed calls.                       */
/* ------------------------------------------------------------------------ */

typedef struct slot {
    void *p;
    uint32_t size;
    uint32_t align;
} slot;

typedef struct fslot {
    size_t first;
    size_t count; /* 0: empty */
} fslot;

/* W1: alloc 64 B align 8, then free it. */
BENCH_LOOP static size_t bench_loop_pair(const heap_ops *a, size_t pairs) {
    size_t errs = 0;
    for (size_t i = 0; i < pairs; i++) {
        void *p = a->alloc(a->ctx, 64, 8);
        if (!p)
            errs++;
        else
            errs += a->free(a->ctx, p, 64, 8) != 0;
    }
    return errs;
}

/* W2: rounds of: alloc `blocks` blocks of 64 B, free them in allocation
 * order. */
BENCH_LOOP static size_t bench_loop_batch(const heap_ops *a, void **ptrs, size_t blocks,
                                          size_t rounds) {
    size_t errs = 0;
    for (size_t r = 0; r < rounds; r++) {
        for (size_t i = 0; i < blocks; i++) {
            ptrs[i] = a->alloc(a->ctx, 64, 8);
            errs += ptrs[i] == NULL;
        }
        for (size_t i = 0; i < blocks; i++)
            if (ptrs[i])
                errs += a->free(a->ctx, ptrs[i], 64, 8) != 0;
    }
    return errs;
}

/* W3 (aligned == false) and W4: the random slot workload. */
BENCH_LOOP static size_t bench_loop_random(const heap_ops *a, slot *slots, size_t ops,
                                           uint64_t seed, bool aligned) {
    size_t errs = 0;
    uint64_t s = seed;
    for (size_t i = 0; i < ops; i++) {
        slot *sl = &slots[xorshift64(&s) % NSLOTS];
        if (sl->p) {
            errs += a->free(a->ctx, sl->p, sl->size, sl->align) != 0;
            sl->p = NULL;
        } else {
            uint32_t size = (uint32_t)(1 + xorshift64(&s) % 4096);
            uint32_t align = aligned ? (uint32_t)1 << (3 + xorshift64(&s) % 10) : 8;
            sl->p = a->alloc(a->ctx, size, align);
            sl->size = size;
            sl->align = align;
            errs += sl->p == NULL;
        }
    }
    return errs;
}

/* W6: W3 with every operation timed on its own; lat[i] in ns. */
BENCH_LOOP static size_t bench_loop_random_timed(const heap_ops *a, slot *slots, size_t ops,
                                                 uint64_t seed, uint32_t *lat) {
    size_t errs = 0;
    uint64_t s = seed;
    for (size_t i = 0; i < ops; i++) {
        slot *sl = &slots[xorshift64(&s) % NSLOTS];
        uint64_t t0, t1;
        if (sl->p) {
            void *p = sl->p;
            uint32_t size = sl->size, align = sl->align;
            t0 = now_ns();
            int st = a->free(a->ctx, p, size, align);
            t1 = now_ns();
            errs += st != 0;
            sl->p = NULL;
        } else {
            uint32_t size = (uint32_t)(1 + xorshift64(&s) % 4096);
            t0 = now_ns();
            void *p = a->alloc(a->ctx, size, 8);
            t1 = now_ns();
            sl->p = p;
            sl->size = size;
            sl->align = 8;
            errs += p == NULL;
        }
        uint64_t d = t1 - t0;
        lat[i] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    }
    return errs;
}

/* W7's timed part: free n blocks. */
BENCH_LOOP static size_t bench_loop_free_all(const heap_ops *a, void **ptrs, size_t n) {
    size_t errs = 0;
    for (size_t i = 0; i < n; i++)
        errs += a->free(a->ctx, ptrs[i], 64, 8) != 0;
    return errs;
}

/* F1 (mixed == false) and F2. */
BENCH_LOOP static size_t bench_loop_frames(const frame_ops *a, fslot *slots, size_t ops,
                                           uint64_t seed, bool mixed) {
    size_t errs = 0;
    uint64_t s = seed;
    for (size_t i = 0; i < ops; i++) {
        fslot *sl = &slots[xorshift64(&s) % NSLOTS];
        if (sl->count) {
            errs += a->free(a->ctx, sl->first, sl->count) != 0;
            sl->count = 0;
        } else {
            size_t count = mixed ? (size_t)(1 + xorshift64(&s) % 16) : 1;
            if (a->alloc(a->ctx, count, 1, &sl->first) == 0)
                sl->count = count;
            else
                errs++;
        }
    }
    return errs;
}

/* ------------------------------------------------------------------------ */
/* Workload drivers: set-up, the timed loop, tear-down                       */
/* ------------------------------------------------------------------------ */

typedef enum { W1, W2, W3, W4, W5, W6, W7, F1, F2, NWORK } workload;
static const char *const work_id[NWORK] = {"W1", "W2", "W3", "W4", "W5",
                                           "W6", "W7", "F1", "F2"};
static const char *const work_name[NWORK] = {
    "pair", "batch", "random", "random-aligned", "efficiency",
    "tail latency", "dealloc-scan", "frames", "frames-mixed"};

static slot *g_slots;
static fslot *g_fslots;
static void **g_ptrs;      /* W2 blocks; W7 first halves  */
static void **g_ptrs2;     /* W7 second halves            */
static void **g_strays;    /* W7 blocks that paired with nothing */
static uint32_t *g_lat;
static size_t g_lat_cap;
static size_t g_errors;    /* failed calls, over everything */
static size_t g_check_failures;

static void note_errors(const char *what, const char *alloc, size_t errs) {
    if (!errs)
        return;
    g_errors += errs;
    fprintf(stderr, "ANOMALY: %s with %s: %zu failed calls\n", what, alloc, errs);
}

/* kbuddy_check after a kbuddy run (untimed): the bench doubles as a test. */
static void check_heap(const char *what) {
    kbuddy_status st = kbuddy_check(&g_heap);
    if (st != KBUDDY_OK) {
        g_check_failures++;
        fprintf(stderr, "ANOMALY: kbuddy_check after %s: %s\n", what, kbuddy_strerror(st));
    }
}

/* After a run of the global allocator (untimed): its caches back to the
 * heap, which must then hold nothing but its own structures, and
 * kbuddy_malloc_check. */
static void check_kbm(const char *what, const heap_ops *a) {
#if KBUDDY_BENCH_MALLOC
    if (a->alloc != kbm_alloc_op)
        return;
    kbuddy_malloc_flush_caches();
    kbuddy_malloc_stats st;
    kbuddy_malloc_get_stats(&st);
    kbuddy_status cs = kbuddy_malloc_check();
    if (cs != KBUDDY_OK || st.live_blocks || st.cached_blocks) {
        g_check_failures++;
        fprintf(stderr, "ANOMALY: after %s with %s: kbuddy_malloc_check %s, %zu live, %zu cached\n",
                what, a->name, kbuddy_strerror(cs), st.live_blocks, st.cached_blocks);
    }
#else
    (void)what;
    (void)a;
#endif
}

static void free_slots(const heap_ops *a) {
    for (size_t i = 0; i < NSLOTS; i++) {
        if (g_slots[i].p)
            (void)a->free(a->ctx, g_slots[i].p, g_slots[i].size, g_slots[i].align);
        g_slots[i].p = NULL;
    }
}

static void free_fslots(const frame_ops *a) {
    for (size_t i = 0; i < NSLOTS; i++) {
        if (g_fslots[i].count)
            (void)a->free(a->ctx, g_fslots[i].first, g_fslots[i].count);
        g_fslots[i].count = 0;
    }
}

/* Runs one heap workload (W1..W4) once; ns per figure unit. */
static double run_heap(workload w, int ai, size_t ops) {
    const heap_ops *a = &heaps[ai];
    reset_kbuddy();
    memset(g_slots, 0, NSLOTS * sizeof *g_slots);
    size_t errs = 0, units = ops;
    uint64_t t0 = now_ns();
    switch (w) {
    case W1:
        errs = bench_loop_pair(a, ops);
        break;
    case W2: {
        size_t blocks = ops / W2_ROUNDS ? ops / W2_ROUNDS : 1;
        errs = bench_loop_batch(a, g_ptrs, blocks, W2_ROUNDS);
        units = 2 * blocks * W2_ROUNDS;
        break;
    }
    case W3:
    case W4:
        errs = bench_loop_random(a, g_slots, ops, SEED_RANDOM, w == W4);
        break;
    default:
        abort();
    }
    uint64_t t = now_ns() - t0;
    if (w == W3 || w == W4)
        free_slots(a);
    note_errors(work_id[w], a->name, errs);
    if (a->ctx == &g_heap)
        check_heap(work_id[w]);
    check_kbm(work_id[w], a);
    return (double)t / (double)units;
}

static double run_frames(workload w, int fi, size_t ops) {
    const frame_ops *a = &frames[fi];
    reset_kbuddy();
    memset(g_fslots, 0, NSLOTS * sizeof *g_fslots);
    uint64_t t0 = now_ns();
    size_t errs = bench_loop_frames(a, g_fslots, ops, SEED_FRAMES, w == F2);
    uint64_t t = now_ns() - t0;
    free_fslots(a);
    note_errors(work_id[w], a->name, errs);
    if (a->ctx == &g_frames && kbuddy_frames_check(&g_frames) != KBUDDY_OK) {
        g_check_failures++;
        fprintf(stderr, "ANOMALY: kbuddy_frames_check after %s failed\n", work_id[w]);
    }
    return (double)t / (double)ops;
}

/* W5 with kbuddy (a fresh region) or the global allocator (its own region,
 * empty: every earlier run ends with its caches flushed). Returns the peak
 * in percent; *allocs the successful allocations before the first
 * failure. */
typedef struct {
    void *p;
    size_t size;
} live;

static double run_w5(const heap_ops *a, size_t *allocs, size_t *peak_out, size_t *live_at_end) {
    reset_kbuddy();
    size_t cap = 1 << 16, n = 0, cur = 0, peak = 0, count = 0;
    live *lv = malloc(cap * sizeof *lv);
    if (!lv)
        abort();
    uint64_t s = SEED_W5;
    for (;;) {
        size_t size = (size_t)(1 + xorshift64(&s) % 4096);
        void *p = a->alloc(a->ctx, size, 8);
        if (!p)
            break;
        count++;
        if (n == cap) {
            cap *= 2;
            live *nl = realloc(lv, cap * sizeof *lv);
            if (!nl)
                abort();
            lv = nl;
        }
        lv[n].p = p;
        lv[n].size = size;
        n++;
        cur += size;
        if (cur > peak)
            peak = cur;
        if (xorshift64(&s) % 3 == 0) {
            size_t k = (size_t)(xorshift64(&s) % n);
            if (a->free(a->ctx, lv[k].p, lv[k].size, 8) != 0)
                note_errors("W5", a->name, 1);
            cur -= lv[k].size;
            lv[k] = lv[--n];
        }
    }
    if (a->ctx == &g_heap)
        check_heap("W5");
    for (size_t i = 0; i < n; i++)
        (void)a->free(a->ctx, lv[i].p, lv[i].size, 8);
    check_kbm("W5", a);
    *allocs = count;
    *peak_out = peak;
    *live_at_end = n;
    free(lv);
    return 100.0 * (double)peak / (double)REGION_SIZE;
}

static int cmp_u32(const void *x, const void *y) {
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return (a > b) - (a < b);
}

/* Percentile p (0..1) of sorted v[0..n): the smallest value with at least
 * p * n values at or below it. */
static uint32_t percentile(const uint32_t *v, size_t n, double p) {
    size_t rank = (size_t)((double)n * p + 0.999999);
    if (rank == 0)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

enum { P50, P99, P999, PMAX, NPCT };
static const char *const pct_name[NPCT] = {"p50", "p99", "p99.9", "max"};

static void run_w6(int ai, size_t ops, double out[NPCT]) {
    const heap_ops *a = &heaps[ai];
    reset_kbuddy();
    memset(g_slots, 0, NSLOTS * sizeof *g_slots);
    size_t errs = bench_loop_random_timed(a, g_slots, ops, SEED_RANDOM, g_lat);
    free_slots(a);
    note_errors("W6", a->name, errs);
    check_kbm("W6", a);
    qsort(g_lat, ops, sizeof *g_lat, cmp_u32);
    out[P50] = percentile(g_lat, ops, 0.50);
    out[P99] = percentile(g_lat, ops, 0.99);
    out[P999] = percentile(g_lat, ops, 0.999);
    out[PMAX] = g_lat[ops - 1];
}

/* W7 set-up (outside every bench_loop_*, so callgrind does not count it):
 * allocate 64 B blocks until n buddy pairs have formed: lo[i]
 * and hi[i], with hi[i] == lo[i] ^ 64 when `pairs` is asked for (kbuddy),
 * consecutive allocations otherwise. A block that pairs with neither
 * neighbour (at the region's start, say) is kept aside as a stray, still
 * allocated so the pairs stay as they are. Returns the strays, or
 * SIZE_MAX on failure. */
#define W7_MAX_STRAYS 1024u
static size_t w7_setup(const heap_ops *a, size_t n, bool pairs, void **lo, void **hi) {
    size_t got = 0, strays = 0;
    void *pending = NULL;
    while (got < n) {
        void *p = a->alloc(a->ctx, 64, 8);
        if (!p)
            return SIZE_MAX;
        if (!pending) {
            pending = p;
            continue;
        }
        uintptr_t x = (uintptr_t)pending, y = (uintptr_t)p;
        if (!pairs || (x ^ y) == 64) {
            bool in_order = x < y || !pairs;
            lo[got] = in_order ? pending : p;
            hi[got] = in_order ? p : pending;
            got++;
            pending = NULL;
            continue;
        }
        if (strays == W7_MAX_STRAYS)
            return SIZE_MAX;
        g_strays[strays++] = pending;
        pending = p;
    }
    if (pending) {
        if (strays == W7_MAX_STRAYS)
            return SIZE_MAX;
        g_strays[strays++] = pending;
    }
    return strays;
}

/* One W7 measurement at n: ns per timed free. *strays_out: strays seen. */
static double run_w7(int ai, size_t n, size_t reps, size_t *strays_out) {
    const heap_ops *a = &heaps[ai];
    bool pairs = a->ctx == &g_heap;
    reset_kbuddy();
    uint64_t total = 0;
    size_t max_strays = 0;
    for (size_t r = 0; r < reps; r++) {
        size_t strays = w7_setup(a, n, pairs, g_ptrs, g_ptrs2);
        if (strays == SIZE_MAX) {
            fprintf(stderr, "ANOMALY: W7 with %s at N=%zu: could not form %zu buddy pairs\n",
                    a->name, n, n);
            g_errors++;
            return 0;
        }
        if (strays > max_strays)
            max_strays = strays;
        size_t errs = 0;
        for (size_t i = 0; i < n; i++)
            errs += a->free(a->ctx, g_ptrs2[i], 64, 8) != 0;
        uint64_t t0 = now_ns();
        errs += bench_loop_free_all(a, g_ptrs, n);
        total += now_ns() - t0;
        for (size_t i = 0; i < strays; i++)
            errs += a->free(a->ctx, g_strays[i], 64, 8) != 0;
        note_errors("W7", a->name, errs);
    }
    if (pairs)
        check_heap("W7");
    check_kbm("W7", a);
    *strays_out = max_strays;
    return (double)total / (double)(n * reps);
}

/* ------------------------------------------------------------------------ */
/* Results and tables                                                       */
/* ------------------------------------------------------------------------ */

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double median(const double *v, int n) {
    double t[MAX_RUNS];
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

typedef struct options {
    int runs;
    bool only[NWORK];
    size_t ops; /* 0: the workload's own */
    const char *alloc;
    bool markdown;
    bool smoke;
    int w5_offsets; /* --w5-offsets N: W5 at N region addresses */
} options;

static double r_heap[NWORK][NALLOC][MAX_RUNS];
static double r_frames[NWORK][NFALLOC][MAX_RUNS];
static double r_w6[NALLOC][NPCT][MAX_RUNS];
static double r_w7[W7_NSIZES][NALLOC][MAX_RUNS];
static size_t w7_strays[W7_NSIZES];

/* A table printed either aligned or as Markdown. */
static bool md;
static void row_begin(void) {
    if (md)
        printf("|");
}
static void cell(int width, const char *s) {
    if (md)
        printf(" %s |", s);
    else
        printf("%*s", width, s);
}
static void cell_left(int width, const char *s) {
    if (md)
        printf(" %s |", s);
    else
        printf("%-*s", width, s);
}
static void cellf(int width, const char *fmt, double v) {
    char buf[64];
    snprintf(buf, sizeof buf, fmt, v);
    cell(width, buf);
}
static void row_end(void) { printf("\n"); }
static void md_rule(int cols) {
    if (!md)
        return;
    printf("|");
    for (int i = 0; i < cols; i++)
        printf(i ? " ---: |" : " --- |");
    printf("\n");
}
static void heading(const char *s) { printf(md ? "\n### %s\n\n" : "\n== %s\n", s); }

static size_t ops_for(const options *o, workload w) {
    if (o->ops)
        return o->ops;
    size_t div = o->smoke ? 1000 : 1;
    switch (w) {
    case W1:
        return W1_PAIRS / div;
    case W2:
        return W2_BLOCKS * W2_ROUNDS / div; /* blocks per round x rounds */
    case W3:
    case W4:
    case W6:
        return W3_OPS / div;
    case F1:
    case F2:
        return F_OPS / div;
    default:
        return 0;
    }
}

static void print_time_table(const options *o) {
    static const workload heap_w[] = {W1, W2, W3, W4};
    static const workload frame_w[] = {F1, F2};
    heading("Time per operation, ns (median)");
    if (!md)
        printf("W1 is per alloc+free pair; the others per single alloc or free. kbuddy frees with\n"
               "kbuddy_free_sized, kbuddy-unsized with kbuddy_free. net = minus noop.\n\n");
    row_begin();
    cell_left(22, "workload");
    for (int a = 0; a < NALLOC; a++)
        cell(10, heap_short[a]);
    cell(10, "kb/glibc");
    cell(14, "net kb/glibc");
    row_end();
    md_rule(NALLOC + 3);
    char label[64];
    for (size_t i = 0; i < sizeof heap_w / sizeof heap_w[0]; i++) {
        workload w = heap_w[i];
        if (!o->only[w])
            continue;
        double m[NALLOC];
        for (int a = 0; a < NALLOC; a++)
            m[a] = median(r_heap[w][a], o->runs);
        snprintf(label, sizeof label, "%s %s", work_id[w], work_name[w]);
        row_begin();
        cell_left(22, label);
        for (int a = 0; a < NALLOC; a++)
            cellf(10, "%.1f", m[a]);
        cellf(10, "%.2f", m[A_KB] / m[A_GLIBC]);
        double ng = m[A_GLIBC] - m[A_NOOP];
        if (ng > 0)
            cellf(14, "%.2f", (m[A_KB] - m[A_NOOP]) / ng);
        else
            cell(14, "n/a");
        row_end();
    }
    for (size_t i = 0; i < sizeof frame_w / sizeof frame_w[0]; i++) {
        workload w = frame_w[i];
        if (!o->only[w])
            continue;
        snprintf(label, sizeof label, "%s %s", work_id[w], work_name[w]);
        row_begin();
        cell_left(22, label);
        cellf(10, "%.1f", median(r_frames[w][FA_KB], o->runs));
        cell(10, "-");
        cell(10, "-");
        cellf(10, "%.1f", median(r_frames[w][FA_NOOP], o->runs));
        for (int a = A_NOOP + 1; a < NALLOC; a++)
            cell(10, "-");
        cell(10, "-");
        cell(14, "-");
        row_end();
    }
}

static void print_w6_table(const options *o) {
    heading("W6 tail latency of W3 operations, ns (median of runs; includes clock_gettime)");
    row_begin();
    cell_left(16, "allocator");
    for (int p = 0; p < NPCT; p++)
        cell(10, pct_name[p]);
    cell(14, "max (lowest)");
    row_end();
    md_rule(2 + NPCT);
    for (int a = 0; a < NALLOC; a++) {
        row_begin();
        cell_left(16, heaps[a].name);
        for (int p = 0; p < NPCT; p++)
            cellf(10, "%.0f", median(r_w6[a][p], o->runs));
        double lowest = r_w6[a][PMAX][0];
        for (int r = 1; r < o->runs; r++)
            if (r_w6[a][PMAX][r] < lowest)
                lowest = r_w6[a][PMAX][r];
        cellf(14, "%.0f", lowest);
        row_end();
    }
    if (!md)
        printf("max (lowest): the smallest of the runs' maxima. A preemption on a shared\n"
               "machine lands in some runs' max (see noop); it rarely lands in every run.\n");
}

static void print_w7_table(const options *o) {
    heading("W7 dealloc-scan: ns per free of the second buddy (median)");
    row_begin();
    cell_left(10, "N");
    for (int a = 0; a < NALLOC; a++)
        cell(16, heaps[a].name);
    cell(8, "strays");
    row_end();
    md_rule(NALLOC + 2);
    double mn[NALLOC] = {0}, mx[NALLOC] = {0};
    char buf[32];
    for (size_t i = 0; i < W7_NSIZES; i++) {
        row_begin();
        snprintf(buf, sizeof buf, "%zu", w7_sizes[i]);
        cell_left(10, buf);
        for (int a = 0; a < NALLOC; a++) {
            double m = median(r_w7[i][a], o->runs);
            if (i == 0 || m < mn[a])
                mn[a] = m;
            if (i == 0 || m > mx[a])
                mx[a] = m;
            cellf(16, "%.1f", m);
        }
        snprintf(buf, sizeof buf, "%zu", w7_strays[i]);
        cell(8, buf);
        row_end();
    }
    row_begin();
    cell_left(10, "max/min");
    for (int a = 0; a < NALLOC; a++)
        cellf(16, "%.2f", mn[a] > 0 ? mx[a] / mn[a] : 0);
    cell(8, "");
    row_end();
    if (!md)
        printf("goal: kbuddy max/min <= 1.5 (flat). kbuddy pairs are verified by address\n"
               "(second == first ^ 64); strays: blocks that formed no pair (kept allocated,\n"
               "outside the N pairs). glibc and noop: consecutive allocations.\n");
}

/* ------------------------------------------------------------------------ */
/* Modes                                                                    */
/* ------------------------------------------------------------------------ */

/* --alloc: run one workload's loop once, for callgrind. */
#if KBUDDY_BENCH_MALLOC
/* The global heap gets a region of its own, as large and as aligned as the
 * core heap's; the first kbm call sets up CPU 0's cache. */
static bool kbm_setup(void) {
    void *r = aligned_alloc(REGION_ALIGN, REGION_SIZE);
    if (r)
        memset(r, 0, REGION_SIZE); /* faulted in, like the core heap's */
    kbuddy_status st = r ? kbuddy_malloc_add_region(r, REGION_SIZE) : KBUDDY_ENOMEM;
    if (st != KBUDDY_OK) {
        fprintf(stderr, "kbuddy_malloc_add_region: %s\n", kbuddy_strerror(st));
        return false;
    }
    return true;
}
#endif

static int run_single(const options *o) {
    workload w = NWORK;
    for (int i = 0; i < NWORK; i++)
        if (o->only[i]) {
            if (w != NWORK) {
                fprintf(stderr, "--alloc needs exactly one workload in --only\n");
                return 2;
            }
            w = (workload)i;
        }
    if (w == NWORK) {
        fprintf(stderr, "--alloc runs one of W1..W7 F1 F2 (give it with --only)\n");
        return 2;
    }
    /* W7: one measurement at N = --ops (default 1000), timed frees only in
     * bench_loop_free_all, so callgrind can count instructions per free. */
    size_t ops = w == W7 ? (o->ops ? o->ops : 1000) : ops_for(o, w);
    double ns;
    if (w == F1 || w == F2) {
        int fi = !strcmp(o->alloc, "kbuddy") ? FA_KB : !strcmp(o->alloc, "noop") ? FA_NOOP : -1;
        if (fi < 0) {
            fprintf(stderr, "frames allocators: kbuddy, noop\n");
            return 2;
        }
        ns = run_frames(w, fi, ops);
    } else {
        int ai = -1;
        for (int a = 0; a < NHEAPS; a++)
            if (!strcmp(o->alloc, heaps[a].name))
                ai = a;
        if (ai < 0) {
            fprintf(stderr, "allocators:");
            for (int a = 0; a < NHEAPS; a++)
                fprintf(stderr, " %s", heaps[a].name);
            fprintf(stderr, "\n");
            return 2;
        }
#if KBUDDY_BENCH_MALLOC
        if (ai == A_KBMH || ai == A_KBMU) {
            kbuddy_malloc_hooks h = {0};
            h.cpu_id = fake_cpu_id;
            h.irq_save = fake_irq_save;
            h.irq_restore = fake_irq_restore;
            h.cpu_id_unmasked = ai == A_KBMU;
            kbuddy_malloc_set_hooks(&h);
        }
#endif
        if (w == W5) {
            size_t allocs, peak, live_end;
            double pct = run_w5(&heaps[ai], &allocs, &peak, &live_end);
            printf("W5 %s peak=%.2f%% allocs=%zu\n", o->alloc, pct, allocs);
            ns = 0;
        } else if (w == W6) {
            double pct[NPCT];
            run_w6(ai, ops, pct);
            ns = pct[P999];
        } else if (w == W7) {
            size_t strays;
            ns = run_w7(ai, ops, 1, &strays);
        } else {
            ns = run_heap(w, ai, ops);
        }
    }
    printf("%s %s ops=%zu ns/op=%.1f errors=%zu\n", work_id[w], o->alloc, ops, ns,
           g_errors + g_check_failures);
    return g_errors || g_check_failures ? 1 : 0;
}

/* W5 depends on where the region lies: blocks are aligned in absolute
 * terms, so the region's address sets which blocks its ends cut. One run
 * sees one address (ASLR picks it); --w5-offsets N runs kbuddy's W5 at N
 * addresses 37 pages apart (every page-multiple alignment up to 64 MiB
 * comes up) inside one buffer, and prints the spread. */
static int run_w5_offsets(int n) {
    const size_t step = (size_t)37 << 12;
    size_t bytes = REGION_SIZE + (size_t)n * step;
    bytes = (bytes + REGION_SIZE - 1) / REGION_SIZE * REGION_SIZE; /* C11: a multiple */
    unsigned char *buf = aligned_alloc(REGION_SIZE, bytes);
    double *pct = malloc((size_t)n * sizeof *pct);
    if (!buf || !pct) {
        fprintf(stderr, "out of memory\n");
        return 2;
    }
    void *home = g_region;
    int below = 0;
    for (int j = 0; j < n; j++) {
        size_t allocs, peak, live_end;
        g_region = buf + (size_t)j * step;
        pct[j] = run_w5(&heaps[A_KB], &allocs, &peak, &live_end);
        below += pct[j] < 90.0;
    }
    g_region = home;
    qsort(pct, (size_t)n, sizeof *pct, cmp_double);
    printf("W5 kbuddy at %d region addresses: min %.2f%%, tenth %.2f%%, median %.2f%%, max %.2f%%; "
           "%d below 90%%\n",
           n, pct[0], pct[n / 10], pct[n / 2], pct[n - 1], below);
    free(pct);
    free(buf);
    return g_errors || g_check_failures ? 1 : 0;
}

static int run_all(const options *o) {
    /* W5 is deterministic: once, for kbuddy and (if built) kbm. */
    static const int w5_alloc[] = {A_KB, A_KBM};
    size_t w5_allocs[2] = {0}, w5_peak[2] = {0}, w5_live[2] = {0};
    double w5_pct[2] = {0};
    int w5_n = A_KBM >= 0 ? 2 : 1;
    bool progress = isatty(2);
    if (o->only[W5])
        for (int i = 0; i < w5_n; i++)
            w5_pct[i] = run_w5(&heaps[w5_alloc[i]], &w5_allocs[i], &w5_peak[i], &w5_live[i]);

    for (int run = 0; run < o->runs; run++) {
        if (progress)
            fprintf(stderr, "run %d/%d\r", run + 1, o->runs);
        for (int w = W1; w <= W4; w++)
            if (o->only[w])
                for (int a = 0; a < NALLOC; a++)
                    r_heap[w][a][run] = run_heap((workload)w, a, ops_for(o, (workload)w));
        for (int w = F1; w <= F2; w++)
            if (o->only[w])
                for (int f = 0; f < NFALLOC; f++)
                    r_frames[w][f][run] = run_frames((workload)w, f, ops_for(o, (workload)w));
        if (o->only[W6])
            for (int a = 0; a < NALLOC; a++) {
                double pct[NPCT];
                run_w6(a, ops_for(o, W6), pct);
                for (int p = 0; p < NPCT; p++)
                    r_w6[a][p][run] = pct[p];
            }
        if (o->only[W7])
            for (size_t i = 0; i < W7_NSIZES; i++) {
                size_t n = w7_sizes[i];
                size_t reps = o->smoke ? 1 : (W7_MIN_FREES + n - 1) / n;
                for (int a = 0; a < NALLOC; a++) {
                    size_t strays = 0;
                    r_w7[i][a][run] = run_w7(a, n, reps, &strays);
                    if (a == A_KB && strays > w7_strays[i])
                        w7_strays[i] = strays;
                }
            }
    }
    if (progress)
        fprintf(stderr, "%20s\r", "");

    md = o->markdown;
    printf("kbuddy_bench: %d run%s, medians; region %zu MiB, %zu frames, min block %zu B\n",
           o->runs, o->runs == 1 ? "" : "s", REGION_SIZE >> 20, NFRAMES,
           (size_t)KBUDDY_MIN_BLOCK);
    if (o->only[W1] || o->only[W2] || o->only[W3] || o->only[W4] || o->only[F1] || o->only[F2])
        print_time_table(o);
    if (o->only[W5]) {
        heading("W5 efficiency");
        row_begin();
        cell_left(16, "allocator");
        cell(12, "peak %");
        cell(16, "peak bytes");
        cell(12, "allocs");
        cell(12, "live at end");
        row_end();
        md_rule(5);
        for (int i = 0; i < w5_n; i++) {
            char b1[32], b2[32], b3[32];
            snprintf(b1, sizeof b1, "%zu", w5_peak[i]);
            snprintf(b2, sizeof b2, "%zu", w5_allocs[i]);
            snprintf(b3, sizeof b3, "%zu", w5_live[i]);
            row_begin();
            cell_left(16, g_placement == KBUDDY_PLACE_FAST && strcmp(heaps[w5_alloc[i]].name, "kbuddy") == 0
                               ? "kbuddy (fast)"
                               : heaps[w5_alloc[i]].name);
            cellf(12, "%.1f", w5_pct[i]);
            cell(16, b1);
            cell(12, b2);
            cell(12, b3);
            row_end();
        }
        row_begin();
        cell_left(16, "glibc");
        cell(12, "n/a");
        cell(16, "");
        cell(12, "");
        cell(12, "");
        row_end();
    }
    if (o->only[W6])
        print_w6_table(o);
    if (o->only[W7])
        print_w7_table(o);
    if (g_errors || g_check_failures) {
        printf("\nANOMALIES: %zu failed calls, %zu failed integrity checks (see stderr)\n",
               g_errors, g_check_failures);
        return 1;
    }
    return 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: kbuddy_bench [--runs N] [--only W1,W2,...,F2] [--ops N] [--markdown]\n"
            "                    [--smoke] [--alloc kbuddy|kbuddy-unsized|glibc|noop|kbm|kbm-hooks|\n"
            "                               kbm-hooks-unmasked]\n"
            "                    [--placement fast|dense] [--lock] [--w5-offsets N]\n"
            "  --runs N     timed runs per figure, median reported (default 5)\n"
            "  --only LIST  workloads to run (default all: W1..W7 F1 F2)\n"
            "  --ops N      operation count for W1 W3 W4 W6 F1 F2 (W2: blocks x rounds;\n"
            "               W7 with --alloc: N)\n"
            "  --alloc A    run --only's single workload loop once with A (callgrind);\n"
            "               kbm: the global allocator, kernel configuration, one CPU;\n"
            "               kbm-hooks: the same with cpu_id and interrupt hooks installed\n"
            "               kbm-hooks-unmasked: the same with cpu_id_unmasked set\n"
            "  --placement fast|dense   the kbuddy heap's placement (default dense)\n"
            "  --lock       the kbuddy heap with the built-in spinlock installed\n"
            "  --markdown   print Markdown tables\n"
            "  --smoke      tiny sizes, one run: proves the bench builds and runs\n"
            "  --w5-offsets N   kbuddy's W5 at N region addresses, 37 pages apart:\n"
            "               min, tenth, median and max peak, and how many below 90%%\n");
}

static bool parse_only(options *o, char *list) {
    memset(o->only, 0, sizeof o->only);
    for (char *t = strtok(list, ","); t; t = strtok(NULL, ",")) {
        int found = -1;
        if (t[0] >= 'a' && t[0] <= 'z')
            t[0] = (char)(t[0] - 'a' + 'A');
        for (int i = 0; i < NWORK; i++)
            if (!strcmp(t, work_id[i]))
                found = i;
        if (found < 0)
            return false;
        o->only[found] = true;
    }
    return true;
}

int main(int argc, char **argv) {
    options o = {.runs = 5};
    bool runs_given = false;
    for (int i = 0; i < NWORK; i++)
        o.only[i] = true;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(arg, "--runs") && has_val) {
            o.runs = atoi(argv[++i]);
            runs_given = true;
        } else if (!strcmp(arg, "--only") && has_val) {
            if (!parse_only(&o, argv[++i])) {
                usage();
                return 2;
            }
        } else if (!strcmp(arg, "--ops") && has_val) {
            o.ops = (size_t)strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(arg, "--alloc") && has_val) {
            o.alloc = argv[++i];
        } else if (!strcmp(arg, "--placement") && has_val) {
            const char *pl = argv[++i];
            if (!strcmp(pl, "fast")) {
                g_placement = KBUDDY_PLACE_FAST;
            } else if (!strcmp(pl, "dense")) {
                g_placement = KBUDDY_PLACE_DENSE;
            } else {
                usage();
                return 2;
            }
        } else if (!strcmp(arg, "--lock")) {
            g_locked = true;
        } else if (!strcmp(arg, "--markdown")) {
            o.markdown = true;
        } else if (!strcmp(arg, "--smoke")) {
            o.smoke = true;
        } else if (!strcmp(arg, "--w5-offsets") && has_val) {
            o.w5_offsets = atoi(argv[++i]);
            if (o.w5_offsets < 1 || o.w5_offsets > 100000) {
                usage();
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    if (o.smoke && !runs_given)
        o.runs = 1;
    if (o.runs < 1 || o.runs > MAX_RUNS) {
        fprintf(stderr, "--runs must be 1..%d\n", MAX_RUNS);
        return 2;
    }

    g_region = aligned_alloc(REGION_ALIGN, REGION_SIZE);
    g_frames_meta_size = kbuddy_frames_meta_size(NFRAMES);
    g_frames_meta = malloc(g_frames_meta_size);
    g_slots = calloc(NSLOTS, sizeof *g_slots);
    g_fslots = calloc(NSLOTS, sizeof *g_fslots);
    size_t nptrs = W2_BLOCKS;
    if (o.ops / W2_ROUNDS > nptrs)
        nptrs = o.ops / W2_ROUNDS;
    if (w7_sizes[W7_NSIZES - 1] > nptrs)
        nptrs = w7_sizes[W7_NSIZES - 1];
    if (o.ops > nptrs) /* W7 with --alloc: N = --ops */
        nptrs = o.ops;
    g_ptrs = calloc(nptrs, sizeof *g_ptrs);
    g_ptrs2 = calloc(nptrs, sizeof *g_ptrs2);
    g_strays = calloc(W7_MAX_STRAYS, sizeof *g_strays);
    g_lat_cap = ops_for(&o, W6);
    g_lat = calloc(g_lat_cap ? g_lat_cap : 1, sizeof *g_lat);
    if (!g_region || !g_frames_meta || !g_slots || !g_fslots || !g_ptrs || !g_ptrs2 ||
        !g_strays || !g_lat) {
        fprintf(stderr, "out of memory\n");
        return 2;
    }
    /* Fault the region in once, so no run pays for first touches. */
    memset(g_region, 0, REGION_SIZE);
#if KBUDDY_BENCH_MALLOC
    if (!kbm_setup()) /* in every mode alike */
        return 2;
#endif

    if (o.w5_offsets)
        return run_w5_offsets(o.w5_offsets);
    return o.alloc ? run_single(&o) : run_all(&o);
}
