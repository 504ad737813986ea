/*
 * Shared helpers of the allocator benchmark suite (hosted/suite): the mode
 * (quick for CI, full for measurement), a deterministic random generator,
 * patterns written into blocks and verified before they are freed, and a
 * failure exit. Each program is deterministic (fixed seeds): its one line
 * of output is the same under every correct allocator, and an allocator
 * that corrupts a block makes it fail (exit 1), not run fast.
 */
#ifndef KBUDDY_SUITE_H
#define KBUDDY_SUITE_H

#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "--quick" (each program well under a second) or full (the default). */
static int suite_quick;
static inline void suite_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0)
            suite_quick = 1;
}
/* full-mode count, or a tenth of it (at least 1) in quick mode */
static inline size_t scaled(size_t full) {
    size_t q = full / 10;
    return suite_quick ? (q ? q : 1) : full;
}

/* xorshift64 (13, 7, 17); the state must not be 0. */
typedef struct { uint64_t s; } rng;
static inline rng rng_seed(uint64_t seed) {
    rng r = {seed * 0x9E3779B97F4A7C15u + 0x632BE59BD9B4E019u};
    if (!r.s)
        r.s = 1;
    return r;
}
static inline uint64_t rnd(rng *r) {
    uint64_t x = r->s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return r->s = x;
}

static inline void suite_fail(const char *what) __attribute__((noreturn));
static inline void suite_fail(const char *what) {
    fprintf(stderr, "FAIL: %s\n", what);
    fflush(stderr);
    exit(1);
}

static inline void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p)
        suite_fail("malloc returned NULL");
    return p;
}

/* The byte a block of tag t holds at offset i. */
static inline unsigned char pat(uint64_t t, size_t i) {
    return (unsigned char)((t * 131u + i * 7u) >> 1);
}

/* Fill every byte of a block with its pattern (writes all its memory). */
static inline void fill(unsigned char *p, size_t n, uint64_t t) {
    for (size_t i = 0; i < n; i++)
        p[i] = pat(t, i);
}

/* Check a block filled by fill(); bytes sampled with a prime stride plus
 * both ends, so that large blocks cost little. Returns a value to fold
 * into the program's checksum. */
static inline uint64_t verify(const unsigned char *p, size_t n, uint64_t t) {
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i += 61) {
        if (p[i] != pat(t, i))
            suite_fail("a block's contents changed");
        sum += p[i];
    }
    if (n && p[n - 1] != pat(t, n - 1))
        suite_fail("a block's last byte changed");
    return sum;
}

/* Sparse variants for big blocks: one byte per 4 KiB page (every page is
 * touched, so it costs RSS, but the run is not all memset). */
static inline void fill_pages(unsigned char *p, size_t n, uint64_t t) {
    for (size_t i = 0; i < n; i += 4096)
        p[i] = pat(t, i);
    p[n - 1] = pat(t, n - 1);
}
static inline uint64_t verify_pages(const unsigned char *p, size_t n, uint64_t t) {
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i += 4096) {
        if (p[i] != pat(t, i))
            suite_fail("a large block's contents changed");
        sum += p[i];
    }
    if (p[n - 1] != pat(t, n - 1))
        suite_fail("a large block's last byte changed");
    return sum;
}

/* cache-scratch and cache-thrash: `rounds` times, take an object of `obj`
 * bytes, write every byte of it `writes` times (the writes are what false
 * sharing between threads would slow), check it and free it. The sum of
 * its final bytes. */
static inline uint64_t scribble_objects(size_t id, size_t rounds, size_t writes, size_t obj) {
    uint64_t sum = 0;
    for (size_t k = 0; k < rounds; k++) {
        volatile unsigned char *p = xmalloc(obj);
        for (size_t w = 0; w < writes; w++)
            for (size_t i = 0; i < obj; i++)
                p[i] = (unsigned char)(p[i] * 0 + w + i + id);
        for (size_t i = 0; i < obj; i++) {
            if (p[i] != (unsigned char)(writes - 1 + i + id))
                suite_fail("object contents");
            sum += p[i];
        }
        free((void *)p);
    }
    return sum;
}

static inline void suite_done(const char *name, uint64_t check) {
    printf("%s ok %016llx\n", name, (unsigned long long)check);
}

/* Start n threads running fn(i) and join them. */
static inline void run_threads(size_t n, void *(*fn)(void *)) {
    pthread_t t[64];
    if (n > 64)
        suite_fail("too many threads");
    for (size_t i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, fn, (void *)(uintptr_t)i) != 0)
            suite_fail("pthread_create");
    for (size_t i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

#endif
