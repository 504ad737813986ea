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
 *
 * Each configuration runs --reps times (default 5); the median is printed,
 * one line per configuration:
 *   W3 threads=2 ops=4000000 ops_per_s=... ns_per_op=... min=... max=...
 *      cpu_ops_per_s=...
 * ops_per_s is wall-clock throughput (ns_per_op: per thread); cpu_ops_per_s
 * divides by the busiest thread's CPU time instead, which a machine shared
 * with other work distorts much less.
 * --quick runs tiny versions once (a smoke test); --threads N goes up to
 * N threads (doubling); --only W3 or --only PC runs one workload.
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

static unsigned long w3_ops = 2000000, pc_blocks = 1000000;
static unsigned reps = 5;

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
    for (unsigned i = 0; i < threads; i++) {
        a[i] = (targ){&r, i};
        if (pthread_create(&t[i], NULL, fn_for(i, threads), &a[i]))
            abort();
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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void measure(const char *name, unsigned threads, thread_fn (*fn_for)(unsigned, unsigned)) {
    double v[32] = {0}, c[32] = {0};
    unsigned long ops = 0;
    ring *rings = aligned_alloc(64, sizeof(ring) * 32);
    for (unsigned i = 0; i < reps; i++) {
        memset(rings, 0, sizeof(ring) * 32);
        v[i] = run_once(threads, fn_for, rings, &ops, &c[i]);
    }
    free(rings);
    qsort(v, reps, sizeof v[0], cmp_double);
    qsort(c, reps, sizeof c[0], cmp_double);
    double med = v[reps / 2];
    printf("%s threads=%u ops=%lu ops_per_s=%.0f ns_per_op=%.2f min=%.0f max=%.0f cpu_ops_per_s=%.0f\n",
           name, threads, ops, med, 1e9 / med * threads, v[0], v[reps - 1], c[reps / 2]);
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
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            max_threads = (unsigned)atoi(argv[++i]);
            if (max_threads < 1 || max_threads > 32)
                max_threads = 2;
        } else {
            fprintf(stderr, "usage: %s [--quick] [--reps N] [--threads N] [--only W3|PC]\n", argv[0]);
            return 2;
        }
    }
    for (unsigned t = 1; t <= max_threads && (!only || !strcmp(only, "W3")); t *= 2)
        measure("W3", t, w3_for);
    for (unsigned t = 1; t <= max_threads && (!only || !strcmp(only, "PC")); t *= 2)
        measure("PC", t, pc_for);
    return 0;
}
