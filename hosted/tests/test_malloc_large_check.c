/*
 * White-box tests of kbuddy_malloc_check's view of the mappings' registry
 * (kbm_large.h): each test damages one thing about it on purpose (order,
 * overlap, page alignment, a size requested beyond the mapping, a mapping
 * inside a region, the byte count, the capacity), checks that
 * kbuddy_malloc_check says KBUDDY_ECORRUPT, restores it and checks that it
 * says KBUDDY_OK again. The layer is compiled into this file (kernel
 * configuration) so that its state can be reached.
 */
#include "../../malloc/kbuddy_malloc.c"

#include "kbtest.h"

#include <stdlib.h>
#include <string.h>

#define MIB ((size_t)1 << 20)
#define SLOT (2 * MIB)
#define SLOTS 4

static _Alignas(4096) unsigned char region[8 * MIB];
static _Alignas(4096) unsigned char pool[SLOTS][SLOT];
static unsigned char used[SLOTS];

static void *pool_map(size_t size, size_t align, void *ctx) {
    (void)ctx;
    for (int i = 0; i < SLOTS && size <= SLOT; i++)
        if (!used[i] && (uintptr_t)pool[i] % align == 0) {
            used[i] = 1;
            return pool[i];
        }
    return NULL;
}

static void pool_unmap(void *start, size_t size, void *ctx) {
    (void)ctx;
    (void)size;
    used[(size_t)((unsigned char *)start - &pool[0][0]) / SLOT] = 0;
}

static void *blk[3];

/* Three live mappings of different sizes, and a check that passes. */
static void fixture(void) {
    static int done;
    if (!done) {
        done = 1;
        CHECK_STATUS(kbuddy_malloc_add_region(region, sizeof region), KBUDDY_OK);
        kbuddy_malloc_hooks h;
        memset(&h, 0, sizeof h);
        h.map = pool_map;
        h.unmap = pool_unmap;
        h.map_threshold = 64 << 10;
        kbuddy_malloc_set_hooks(&h);
        blk[0] = kbm_malloc(100 << 10);
        blk[1] = kbm_malloc(SLOT);
        blk[2] = kbm_malloc(300 << 10);
    }
    CHECK(blk[0] && blk[1] && blk[2]);
    CHECK_EQ(g_nmaps, 3);
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
}

/* Damage, check (which names the registry: kbuddy_malloc_check_why),
 * restore, check. */
#define DAMAGED(type, lvalue, bad)                                                  \
    do {                                                                            \
        fixture();                                                                  \
        type saved_ = (lvalue);                                                     \
        (lvalue) = (bad);                                                           \
        CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_ECORRUPT);                       \
        const char *why_ = kbuddy_malloc_check_why(NULL);                           \
        CHECK(why_ && strcmp(why_, "large mappings' registry") == 0);               \
        (lvalue) = saved_;                                                          \
        CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);                             \
        CHECK(kbuddy_malloc_check_why(NULL) == NULL);                               \
    } while (0)

TEST(a_size_that_is_not_whole_pages_is_caught) { DAMAGED(size_t, g_maps[1].size, g_maps[1].size + 32); }

TEST(a_start_that_is_not_page_aligned_is_caught) { DAMAGED(uintptr_t, g_maps[0].start, g_maps[0].start + 64); }

TEST(a_requested_size_beyond_the_mapping_is_caught) {
    DAMAGED(size_t, g_maps[2].req, g_maps[2].size + 1);
}

TEST(an_empty_mapping_is_caught) { DAMAGED(size_t, g_maps[0].size, 0); }

TEST(mappings_out_of_order_are_caught) { DAMAGED(uintptr_t, g_maps[0].start, g_maps[2].start + SLOT); }

TEST(overlapping_mappings_are_caught) { DAMAGED(size_t, g_maps[0].size, g_maps[1].start - g_maps[0].start + 4096); }

/* The first or the last entry moved into the region, the order kept (the
 * region lies below the pool or above it), so that only the region test
 * can object. */
TEST(a_mapping_inside_a_region_is_caught) {
    fixture();
    size_t i = (uintptr_t)region < g_maps[1].start ? 0 : 2;
    mapping saved = g_maps[i];
    g_maps[i].start = (uintptr_t)region + sizeof region / 2;
    g_maps[i].size = 4096;
    g_maps[i].req = 4096;
    g_mapped_bytes += 4096 - saved.size;
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_ECORRUPT);
    g_mapped_bytes -= 4096 - saved.size;
    g_maps[i] = saved;
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
}

TEST(a_wrong_byte_count_is_caught) { DAMAGED(size_t, g_mapped_bytes, g_mapped_bytes - 4096); }

TEST(a_count_beyond_the_capacity_is_caught) { DAMAGED(size_t, g_maps_reserved, g_maps_cap); }

/* And the registry is consistent again after all of that: the blocks go
 * back, the statistics say so. */
TEST(zz_the_mappings_are_freed_cleanly) {
    fixture();
    for (int i = 0; i < 3; i++)
        kbm_free(blk[i]);
    kbuddy_malloc_stats st;
    kbuddy_malloc_get_stats(&st);
    CHECK_EQ(st.mapped_blocks, 0);
    CHECK_EQ(st.mapped_bytes, 0);
    CHECK_EQ(st.bad_frees, 0);
    CHECK(!used[0] && !used[1] && !used[2]);
    CHECK_STATUS(kbuddy_malloc_check(), KBUDDY_OK);
}

KBTEST_MAIN()
