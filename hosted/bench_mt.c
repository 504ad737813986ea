/*
 * The multi-threaded benchmark of the global allocator. It calls plain
 * malloc/free, so the allocator measured is whichever the process has:
 * glibc's, or one given with LD_PRELOAD (bench_mt.sh runs it under glibc,
 * jemalloc, mimalloc and libkbuddy-malloc.so).
 *
 *   W3  each thread runs workload W3 of bench-workloads.md on its own
 *       blocks: seed 42, 10,000 slots, 2,000,000 operations; slot = r %
 *       10000; an occupied slot is freed, an empty one gets malloc(1 + r2 %
 *       4096). Throughput = all threads' operations / wall time.
 *   PC  producer-consumer: blocks of 1 + r % 4096 bytes are allocated by
 *       one thread and freed by another, passed through a 1024-entry
 *       single-producer single-consumer ring; 1,000,000 blocks per pair,
 *       an operation being a malloc or a free. With one thread, the same
 *       thread fills the ring and then empties it.
 *   CTL the control: W3's loop with malloc and free replaced by a stack of
 *       free slots private to the thread (the ideal per-thread cache: no
 *       shared state at all). How far its two threads fall short of twice
 *       one thread is what the machine itself takes away (two vCPUs that
 *       share a core, other work, shared caches), for any allocator.
 *
 * Each workload runs a warm-up round (untimed: the heap's pages touched
 * once), then --reps rounds (default 5), each round running every thread
 * count in turn, so that 1 and 2 threads see the same machine: the medians
 * are printed, one line per configuration,
 *   W3 threads=2 ops=4000000 ops_per_s=... ns_per_op=... min=... max=...
 *      cpu_ops_per_s=...
 * and then the median over rounds of each round's ratio to one thread,
 *   W3 ratio threads=2 wall=... cpu=...
 * ops_per_s is wall-clock throughput (ns_per_op: per thread); cpu_ops_per_s
 * divides by the busiest thread's CPU time instead, which a machine shared
 * with other work distorts much less.
 * Threads of a run with several are pinned, thread i to CPU i, when there
 * are CPUs enough: a 25 ms run is over before the scheduler would move a
 * second thread that woke beside the first onto a CPU that other work
 * holds (--no-pin leaves placement to the scheduler).
 * --quick runs tiny versions once (a smoke test); --threads N goes up to
 * N threads (doubling); --only W3, PC or CTL runs one workload.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static unsigned long w3_ops = 2000000, pc_blocks = 1000000;
static unsigned reps = 5;
static int pin = 1;

static double clock_now(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
static double now(void) { return clock_now(CLOCK_MONOTONIC); }
static double cpu_now(void) { return clock_now(CLOCK_THREAD_CPUTIME_ID); }

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#endif
}

typedef struct run {
    pthread_barrier_t start;
    unsigned threads;
    double t0[64], t1[64], cpu[64];
    unsigned long ops[64];
    void *ctx;
} run;

typedef struct targ {
    run *r;
    unsigned id;
} targ;

/* --- W3 ------------------------------------------------------------------ */

enum { SLOTS = 10000 };

static void *w3_thread(void *varg) {
    targ *a = varg;
    void **slot = calloc(SLOTS, sizeof *slot);
    uint64_t seed = 42;
    pthread_barrier_wait(&a->r->start);
    double t0 = now(), c0 = cpu_now();
    for (unsigned long op = 0; op < w3_ops; op++) {
        size_t i = (size_t)(xorshift(&seed) % SLOTS);
        if (slot[i]) {
            free(slot[i]);
            slot[i] = NULL;
        } else {
            slot[i] = malloc(1 + (size_t)(xorshift(&seed) % 4096));
            if (!slot[i])
                abort();
        }
    }
    a->r->t1[a->id] = now();
    a->r->cpu[a->id] = cpu_now() - c0;
    a->r->t0[a->id] = t0;
    a->r->ops[a->id] = w3_ops;
    for (size_t i = 0; i < SLOTS; i++)
        free(slot[i]);
    free(slot);
    return NULL;
}

/* --- Control ------------------------------------------------------------- */

/* W3's loop and random numbers, blocks from a stack private to the thread. */
static void *ctl_thread(void *varg) {
    targ *a = varg;
    void **slot = calloc(SLOTS, sizeof *slot);
    void **stack = calloc(SLOTS, sizeof *stack);
    unsigned char *pool = malloc(SLOTS * 64);
    if (!slot || !stack || !pool)
        abort();
    size_t top = 0;
    for (size_t i = 0; i < SLOTS; i++)
        stack[top++] = pool + 64 * i;
    uint64_t seed = 42;
    unsigned long sum = 0;
    pthread_barrier_wait(&a->r->start);
    double t0 = now(), c0 = cpu_now();
    for (unsigned long op = 0; op < w3_ops; op++) {
        size_t i = (size_t)(xorshift(&seed) % SLOTS);
        if (slot[i]) {
            stack[top++] = slot[i];
            slot[i] = NULL;
        } else {
            sum += 1 + (size_t)(xorshift(&seed) % 4096); /* the size W3 asks for */
            slot[i] = stack[--top];
        }
    }
    a->r->t1[a->id] = now();
    a->r->cpu[a->id] = cpu_now() - c0;
    a->r->t0[a->id] = t0;
    a->r->ops[a->id] = w3_ops;
    if (sum == 1) /* keep the sizes */
        puts("");
    free(pool);
    free(stack);
    free(slot);
    return NULL;
}

/* --- Producer-consumer ------------------------------------------------------ */

enum { RING = 1024 };

typedef struct ring {
    _Alignas(64) _Atomic unsigned long head; /* consumer's */
    _Alignas(64) _Atomic unsigned long tail; /* producer's */
    _Alignas(64) unsigned char *item[RING];
} ring;

static void ring_wait(unsigned *spins) {
    if (++*spins < 200)
        cpu_relax();
    else
        sched_yield();
}

static void *pc_producer(void *varg) {
    targ *a = varg;
    ring *q = a->r->ctx;
    q += a->id / 2;
    uint64_t seed = 42 + a->id;
    pthread_barrier_wait(&a->r->start);
    double t0 = now(), c0 = cpu_now();
    for (unsigned long i = 0; i < pc_blocks; i++) {
        unsigned char *p = malloc(1 + (size_t)(xorshift(&seed) % 4096));
        if (!p)
            abort();
        p[0] = (unsigned char)i;
        unsigned long tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
        unsigned spins = 0;
        while (tail - atomic_load_explicit(&q->head, memory_order_acquire) == RING)
            ring_wait(&spins);
        q->item[tail % RING] = p;
        atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
    }
    a->r->t1[a->id] = now();
    a->r->cpu[a->id] = cpu_now() - c0;
    a->r->t0[a->id] = t0;
    a->r->ops[a->id] = pc_blocks;
    return NULL;
}

static void *pc_consumer(void *varg) {
    targ *a = varg;
    ring *q = a->r->ctx;
    q += a->id / 2;
    unsigned long sum = 0;
    pthread_barrier_wait(&a->r->start);
    double t0 = now(), c0 = cpu_now();
    for (unsigned long i = 0; i < pc_blocks; i++) {
        unsigned long head = atomic_load_explicit(&q->head, memory_order_relaxed);
        unsigned spins = 0;
        while (atomic_load_explicit(&q->tail, memory_order_acquire) == head)
            ring_wait(&spins);
        unsigned char *p = q->item[head % RING];
        atomic_store_explicit(&q->head, head + 1, memory_order_release);
        sum += p[0];
        free(p);
    }
    a->r->t1[a->id] = now();
    a->r->cpu[a->id] = cpu_now() - c0;
    a->r->t0[a->id] = t0;
    a->r->ops[a->id] = pc_blocks;
    if (sum == 1) /* keep the reads */
        puts("");
    return NULL;
}

/* One thread plays both parts: fill the ring, empty it. */
static void *pc_alone(void *varg) {
    targ *a = varg;
    static unsigned char *batch[RING];
    uint64_t seed = 42;
    unsigned long sum = 0;
    pthread_barrier_wait(&a->r->start);
    double t0 = now(), c0 = cpu_now();
    for (unsigned long i = 0; i < pc_blocks; i += RING) {
        unsigned long n = pc_blocks - i < RING ? pc_blocks - i : RING;
        for (unsigned long j = 0; j < n; j++) {
            batch[j] = malloc(1 + (size_t)(xorshift(&seed) % 4096));
            if (!batch[j])
                abort();
            batch[j][0] = (unsigned char)j;
        }
        for (unsigned long j = 0; j < n; j++) {
            sum += batch[j][0];
            free(batch[j]);
        }
    }
    a->r->t1[a->id] = now();
    a->r->cpu[a->id] = cpu_now() - c0;
    a->r->t0[a->id] = t0;
    a->r->ops[a->id] = 2 * pc_blocks;
    if (sum == 1)
        puts("");
    return NULL;
}

/* --- Driver -------------------------------------------------------------- */

typedef void *(*thread_fn)(void *);

/* Run `threads` threads (fn_for(i) each) once. Operations per second of
 * wall time, and per second of the busiest thread's CPU time (*cpu_rate):
 * what the run would give if every thread had a CPU to itself, which a
 * machine shared with other work does not promise. */
static double run_once(unsigned threads, thread_fn (*fn_for)(unsigned, unsigned), void *ctx,
                       unsigned long *total_ops, double *cpu_rate) {
    run r;
    memset(&r, 0, sizeof r);
    r.threads = threads;
    r.ctx = ctx;
    pthread_barrier_init(&r.start, NULL, threads);
    pthread_t t[64];
    targ a[64];
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    for (unsigned i = 0; i < threads; i++) {
        a[i] = (targ){&r, i};
        if (pthread_create(&t[i], NULL, fn_for(i, threads), &a[i]))
            abort();
        if (pin && threads > 1 && threads <= ncpu) { /* else the scheduler decides */
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(i, &set);
            (void)pthread_setaffinity_np(t[i], sizeof set, &set);
        }
    }
    for (unsigned i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&r.start);
    double t0 = r.t0[0], t1 = r.t1[0], cpu = 0;
    unsigned long ops = 0;
    for (unsigned i = 0; i < threads; i++) {
        t0 = r.t0[i] < t0 ? r.t0[i] : t0;
        t1 = r.t1[i] > t1 ? r.t1[i] : t1;
        cpu = r.cpu[i] > cpu ? r.cpu[i] : cpu;
        ops += r.ops[i];
    }
    *total_ops = ops;
    *cpu_rate = (double)ops / cpu;
    return (double)ops / (t1 - t0);
}

static thread_fn w3_for(unsigned i, unsigned n) {
    (void)i;
    (void)n;
    return w3_thread;
}

static thread_fn pc_for(unsigned i, unsigned n) {
    if (n == 1)
        return pc_alone;
    return i % 2 ? pc_consumer : pc_producer;
}

static thread_fn ctl_for(unsigned i, unsigned n) {
    (void)i;
    (void)n;
    return ctl_thread;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, unsigned n) {
    qsort(v, n, sizeof v[0], cmp_double);
    return v[n / 2];
}

enum { MAX_COUNTS = 6 }; /* thread counts 1, 2, 4, ... 32 */

/* A warm-up round, then `reps` rounds of every thread count in turn (so
 * that each round's counts see the same machine); medians printed. */
static void measure(const char *name, unsigned max_threads, thread_fn (*fn_for)(unsigned, unsigned)) {
    double v[MAX_COUNTS][32], c[MAX_COUNTS][32], rv[MAX_COUNTS][32], rc[MAX_COUNTS][32];
    unsigned long ops[MAX_COUNTS] = {0};
    unsigned counts = 0;
    for (unsigned t = 1; t <= max_threads && counts < MAX_COUNTS; t *= 2)
        counts++;
    ring *rings = aligned_alloc(64, sizeof(ring) * 32);
    if (!rings)
        abort();
    for (unsigned i = 0; i <= reps; i++) {
        for (unsigned k = 0; k < counts; k++) {
            double cpu, wall;
            memset(rings, 0, sizeof(ring) * 32);
            wall = run_once(1u << k, fn_for, rings, &ops[k], &cpu);
            if (i == 0 && reps > 1)
                continue; /* the warm-up round */
            unsigned j = reps > 1 ? i - 1 : 0;
            v[k][j] = wall;
            c[k][j] = cpu;
            rv[k][j] = wall / v[0][j];
            rc[k][j] = cpu / c[0][j];
        }
        if (reps == 1)
            break;
    }
    free(rings);
    for (unsigned k = 0; k < counts; k++) {
        double med = median(v[k], reps);
        printf("%s threads=%u ops=%lu ops_per_s=%.0f ns_per_op=%.2f min=%.0f max=%.0f cpu_ops_per_s=%.0f\n",
               name, 1u << k, ops[k], med, 1e9 / med * (1u << k), v[k][0], v[k][reps - 1],
               median(c[k], reps));
    }
    for (unsigned k = 1; k < counts; k++)
        printf("%s ratio threads=%u wall=%.3f cpu=%.3f\n", name, 1u << k, median(rv[k], reps),
               median(rc[k], reps));
    fflush(stdout);
}

int main(int argc, char **argv) {
    unsigned max_threads = 2;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            w3_ops = 100000;
            pc_blocks = 50000;
            reps = 1;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = (unsigned)atoi(argv[++i]);
            if (reps < 1 || reps > 31)
                reps = 5;
        } else if (!strcmp(argv[i], "--no-pin")) {
            pin = 0;
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            max_threads = (unsigned)atoi(argv[++i]);
            if (max_threads < 1 || max_threads > 32)
                max_threads = 2;
        } else {
            fprintf(stderr, "usage: %s [--quick] [--reps N] [--threads N] [--no-pin] [--only W3|PC|CTL]\n", argv[0]);
            return 2;
        }
    }
    if (!only || !strcmp(only, "W3"))
        measure("W3", max_threads, w3_for);
    if (!only || !strcmp(only, "PC"))
        measure("PC", max_threads, pc_for);
    if (!only || !strcmp(only, "CTL"))
        measure("CTL", max_threads, ctl_for);
    return 0;
}
