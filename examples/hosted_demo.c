/*
 * The hosted demo: a "kernel" heap fed the way the rCore tutorial feeds
 * one (a static array first, then more memory as it is found, of any
 * alignment and size), used, abused, and shown as statistics and a map.
 */
#include "heapmap.h"
#include "kbuddy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KERNEL_HEAP_SIZE 0x300000 /* 3 MiB, as in the tutorial */

static _Alignas(4096) unsigned char heap_space[KERNEL_HEAP_SIZE];
static kbuddy_heap heap = KBUDDY_HEAP_INIT;

static void put(char c) { putchar(c); }

static void show(const char *title) {
    static bool legend;
    if (!legend) {
        printf("heap map: one letter per run of blocks, upper case in use, lower case free;\n"
               "the letter is its size: a < 64 B, b < 128 B, ... k < 64 KiB (each doubles)\n\n");
        legend = true;
    }
    kbuddy_stats st;
    kbuddy_get_stats(&heap, &st);
    printf("%s\n  regions %zu  total %zu  allocated %zu  user %zu  overhead %zu\n"
           "  allocations %zu  largest free %zu  check: %s\n",
           title, st.regions, st.total, st.allocated, st.user, st.overhead, st.allocations,
           st.largest_free, kbuddy_strerror(kbuddy_check(&heap)));
    heapmap_print(&heap, put);
}

static int failures;
#define EXPECT(cond)                                                   \
    do {                                                               \
        if (!(cond)) {                                                 \
            printf("  FAILED: %s (line %d)\n", #cond, __LINE__);       \
            failures++;                                                \
        }                                                              \
    } while (0)

int main(void) {
    /* init_heap(): the static array, then two more regions "found later":
     * one at an odd address and size, one tiny (800 bytes). */
    EXPECT(kbuddy_add_region(&heap, heap_space, sizeof heap_space) == KBUDDY_OK);
    unsigned char *extra = malloc(1 << 20);
    unsigned char *tiny = malloc(800);
    EXPECT(kbuddy_add_region(&heap, extra + 7, (1 << 20) - 123) == KBUDDY_OK);
    EXPECT(kbuddy_add_region(&heap, tiny, 800) == KBUDDY_OK);
    show("after init_heap (3 regions):");

    /* heap_test(): a boxed integer and a 500-element vector grown by
     * realloc, both inside the static array, values intact. */
    long *boxed = kbuddy_alloc(&heap, sizeof *boxed, _Alignof(long));
    EXPECT(boxed != NULL);
    if (boxed) {
        *boxed = 5;
        EXPECT((unsigned char *)boxed >= heap_space &&
               (unsigned char *)boxed < heap_space + sizeof heap_space);
    }
    size_t *vec = NULL;
    for (size_t i = 0; i < 500; i++) {
        if ((i & (i - 1)) == 0) { /* grow by doubling, as Vec does */
            size_t *grown = kbuddy_realloc(&heap, vec, (i ? 2 * i : 1) * sizeof *vec, _Alignof(size_t));
            EXPECT(grown != NULL);
            if (!grown)
                break;
            vec = grown;
        }
        vec[i] = i;
    }
    int vec_ok = vec != NULL;
    for (size_t i = 0; vec && i < 500; i++)
        vec_ok &= vec[i] == i;
    EXPECT(vec_ok);
    if (boxed)
        EXPECT(*boxed == 5);
    printf("heap_test passed!\n");

    /* A mixed load: many sizes and alignments, then free every other one. */
    enum { N = 2000 };
    static void *p[N];
    unsigned seed = 1;
    for (int i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t size = 1 + (seed >> 16) % 3000;
        size_t align = (size_t)1 << ((seed >> 8) % 10);
        p[i] = kbuddy_alloc(&heap, size, align);
        EXPECT(p[i] != NULL && ((uintptr_t)p[i] & (align - 1)) == 0);
        if (p[i])
            memset(p[i], 0xab, size);
    }
    for (int i = 0; i < N; i += 2)
        EXPECT(kbuddy_free(&heap, p[i]) == KBUDDY_OK);
    show("\nafter 2000 allocations of 1..3000 bytes, every other one freed:");

    /* Bad input is refused with a clear status and changes nothing. */
    kbuddy_stats before, after;
    kbuddy_get_stats(&heap, &before);
    int local;
    printf("\nfree(foreign pointer)  -> %s\n", kbuddy_strerror(kbuddy_free(&heap, &local)));
    printf("free(interior pointer) -> %s\n",
           kbuddy_strerror(kbuddy_free(&heap, (char *)p[1] + 64)));
    printf("free(freed block)      -> %s\n", kbuddy_strerror(kbuddy_free(&heap, p[0])));
    printf("free_sized(wrong size) -> %s\n",
           kbuddy_strerror(kbuddy_free_sized(&heap, p[1], 1, 1)));
    printf("add_region(overlap)    -> %s\n",
           kbuddy_strerror(kbuddy_add_region(&heap, heap_space + 4096, 4096)));
    kbuddy_get_stats(&heap, &after);
    EXPECT(memcmp(&before, &after, sizeof before) == 0);
    EXPECT(kbuddy_check(&heap) == KBUDDY_OK);

    for (int i = 1; i < N; i += 2)
        EXPECT(kbuddy_free(&heap, p[i]) == KBUDDY_OK);
    EXPECT(kbuddy_free(&heap, vec) == KBUDDY_OK);
    EXPECT(kbuddy_free(&heap, boxed) == KBUDDY_OK);
    show("\nafter freeing everything:");
    kbuddy_get_stats(&heap, &after);
    EXPECT(after.allocated == 0 && after.user == 0 && after.allocations == 0);

    printf("\n%s\n", failures ? "demo FAILED" : "demo passed");
    free(extra);
    free(tiny);
    return failures ? 1 : 0;
}
