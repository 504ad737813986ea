/*
 * An outside program that uses an installed (or add_subdirectory'd) kbuddy
 * the way its README says: the core heap and frame allocator on memory of
 * its own, and the global allocator (kbuddy::malloc, kbm_*) on a region
 * handed over at start-up. Every call is checked for its exact result, so a
 * build that links but does not allocate through kbuddy fails here.
 * tests/consumer/run.sh builds it several ways.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kbuddy.h"
#include "kbuddy_malloc.h"

#ifndef CONSUMER_HOW
#define CONSUMER_HOW "?"
#endif

static int failures;

#define EXPECT(cond)                                                               \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "consumer (%s): %s:%d: failed: %s\n", CONSUMER_HOW,    \
                    __FILE__, __LINE__, #cond);                                    \
            failures++;                                                            \
        }                                                                          \
    } while (0)

static _Alignas(64) unsigned char heap_space[64 << 10];
static _Alignas(64) unsigned char malloc_space[256 << 10];
static uint64_t frame_meta[512];

static int inside(const void *p, const unsigned char *base, size_t size) {
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
    return a >= b && a < b + size;
}

static void core_heap(void) {
    kbuddy_heap heap = KBUDDY_HEAP_INIT;
    kbuddy_stats before, during, after;
    EXPECT(kbuddy_add_region(&heap, heap_space, sizeof heap_space) == KBUDDY_OK);
    kbuddy_get_stats(&heap, &before);
    EXPECT(before.regions == 1 && before.allocations == 0 && before.allocated == 0);

    char *p = kbuddy_alloc(&heap, 100, 16);
    EXPECT(p != NULL && inside(p, heap_space, sizeof heap_space));
    EXPECT(((uintptr_t)p & 15) == 0);
    if (p)
        memset(p, 0xab, 100);
    kbuddy_get_stats(&heap, &during);
    EXPECT(during.allocations == 1 && during.user == 100 && during.allocated >= 100);

    EXPECT(kbuddy_free_sized(&heap, p, 100, 16) == KBUDDY_OK);
    EXPECT(kbuddy_free(&heap, p) == KBUDDY_EDOUBLEFREE);
    EXPECT(kbuddy_free(&heap, &during) == KBUDDY_EFOREIGN);
    kbuddy_get_stats(&heap, &after);
    EXPECT(after.allocations == 0 && after.allocated == 0 && after.total == before.total);
    EXPECT(kbuddy_check(&heap) == KBUDDY_OK);
}

static void frames(void) {
    kbuddy_frames fa;
    kbuddy_frame_stats st;
    size_t first = 0;
    EXPECT(kbuddy_frames_meta_size(1024) <= sizeof frame_meta);
    EXPECT(kbuddy_frames_init(&fa, 0x80000, 1024, frame_meta, sizeof frame_meta) == KBUDDY_OK);
    EXPECT(kbuddy_frames_add(&fa, 0x80000, 1024) == KBUDDY_OK);
    EXPECT(kbuddy_frames_alloc(&fa, 16, 16, &first) == KBUDDY_OK);
    EXPECT(first >= 0x80000 && first + 16 <= 0x80000 + 1024 && first % 16 == 0);
    kbuddy_frames_get_stats(&fa, &st);
    EXPECT(st.total == 1024 && st.allocated == 16);
    EXPECT(kbuddy_frames_free(&fa, first, 16) == KBUDDY_OK);
    EXPECT(kbuddy_frames_free(&fa, first, 16) == KBUDDY_EDOUBLEFREE);
    kbuddy_frames_get_stats(&fa, &st);
    EXPECT(st.allocated == 0 && st.largest_free == 1024);
    EXPECT(kbuddy_frames_check(&fa) == KBUDDY_OK);
}

static void global_allocator(void) {
    kbuddy_malloc_stats st;
    int local = 0;
    EXPECT(kbuddy_malloc_add_region(malloc_space, sizeof malloc_space) == KBUDDY_OK);

    char *m = kbm_malloc(100);
    EXPECT(m != NULL && inside(m, malloc_space, sizeof malloc_space));
    if (m)
        memset(m, 0x5a, 100);
    kbuddy_malloc_get_stats(&st);
    EXPECT(st.live_blocks == 1 && st.regions == 1 && st.bad_frees == 0);

    char *big = kbm_calloc(1000, 20); /* above the caches: the core heap */
    EXPECT(big != NULL && inside(big, malloc_space, sizeof malloc_space) && big[19999] == 0);
    kbm_free(big);
    kbm_free(m);
    kbuddy_malloc_get_stats(&st);
    EXPECT(st.live_blocks == 0 && st.bad_frees == 0);

    kbm_free(m);      /* double free: refused and counted, nothing changes */
    kbm_free(&local); /* not kbuddy's */
    kbuddy_malloc_get_stats(&st);
    EXPECT(st.live_blocks == 0 && st.bad_frees == 2);
    EXPECT(kbuddy_malloc_check() == KBUDDY_OK);
}

int main(void) {
    core_heap();
    frames();
    global_allocator();
    /* Goes through the process's malloc: under LD_PRELOAD of
     * libkbuddy-malloc.so, that is kbuddy too (run.sh checks its report). */
    char *line = malloc(128);
    EXPECT(line != NULL);
    if (!line)
        return 1;
    snprintf(line, 128, "consumer (%s): kbuddy %d.%d.%d: heap, frames, kbm_malloc: %s",
             CONSUMER_HOW, KBUDDY_VERSION_MAJOR, KBUDDY_VERSION_MINOR, KBUDDY_VERSION_PATCH,
             failures ? "FAILED" : "ok");
    puts(line);
    free(line);
    return failures ? 1 : 0;
}
