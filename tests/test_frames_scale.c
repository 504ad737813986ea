/*
 * Scale tests of the page-frame allocator: windows of 2^26 and 2^27 frames
 * (256 and 512 GiB of 4 KiB frames) and, where the machine has the memory,
 * 2^33 frames. Metadata must stay within 4 bits per frame; init + add of
 * the whole window must take well under a second; 1 GiB (2^18-frame) and
 * 2 MiB (2^9-frame) pages must be allocatable up to the last one that fits;
 * operations must not slow down when millions of blocks are free.
 *
 * Timing assertions hold only in optimised builds without sanitizers or
 * coverage (or with KBUDDY_SLOW=1 set); those builds still run every step
 * and print what they measured.
 */
#define _POSIX_C_SOURCE 200809L

#include "kbtest.h"
#include "kbuddy.h"

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(__OPTIMIZE__)
#define KB_SLOW_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define KB_SLOW_BUILD 1
#endif
#endif
#ifndef KB_SLOW_BUILD
#define KB_SLOW_BUILD 0
#endif

/* Are timings meaningful in this build? */
static bool timing_asserted(void) {
    const char *e = getenv("KBUDDY_SLOW");
    return !KB_SLOW_BUILD && !(e && *e && strcmp(e, "0") != 0);
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* MemAvailable from /proc/meminfo in bytes; 0 when unknown. */
static uint64_t available_memory(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &kib) == 1)
            break;
    fclose(f);
    return kib * 1024;
}

typedef struct {
    kbuddy_frames fa;
    unsigned char *meta;
    size_t meta_size;
    double init_add_seconds;
} big_window;

/* Set up [base, base + n) and add all of it, timing init + add. */
static bool big_open(big_window *w, size_t base, size_t n) {
    w->meta_size = kbuddy_frames_meta_size(n);
    w->meta = malloc(w->meta_size);
    if (!w->meta)
        return false;
    double t0 = now_seconds();
    kbuddy_status a = kbuddy_frames_init(&w->fa, base, n, w->meta, w->meta_size);
    kbuddy_status b = a == KBUDDY_OK ? kbuddy_frames_add(&w->fa, base, n) : a;
    w->init_add_seconds = now_seconds() - t0;
    if (a != KBUDDY_OK || b != KBUDDY_OK) {
        fprintf(stderr, "  init: %s, add: %s\n", kbuddy_strerror(a), kbuddy_strerror(b));
        free(w->meta);
        return false;
    }
    return true;
}

static void big_close(big_window *w) {
    free(w->meta);
    w->meta = NULL;
}

static bool check_ok(const kbuddy_frames *fa, const char *what) {
    double t0 = now_seconds();
    kbuddy_status st = kbuddy_frames_check(fa);
    printf("  check (%s): %.1f ms\n", what, (now_seconds() - t0) * 1e3);
    if (st != KBUDDY_OK)
        fprintf(stderr, "  check (%s): %s\n", what, kbuddy_strerror(st));
    return st == KBUDDY_OK;
}

static void report_window(const char *name, const big_window *w, size_t n) {
    printf("  %s: %zu frames, meta %zu bytes = %.3f bits/frame, init+add %.1f ms\n", name, n,
           w->meta_size, (double)w->meta_size * 8 / (double)n, w->init_add_seconds * 1e3);
}

/* Allocate pages of `page` frames aligned to `page` until ENOMEM; every one
 * must be aligned, inside the window and distinct (they are handed out in
 * increasing order or checked against a bitmap of page numbers). Returns
 * how many, storing them in out (capacity cap). */
static size_t take_all_pages(kbuddy_frames *fa, size_t page, size_t base, size_t n, size_t *out,
                             size_t cap) {
    size_t got = 0, f;
    size_t lo_page = (base + page - 1) / page, pages = (base + n) / page - lo_page;
    unsigned char *seen = calloc(pages ? pages : 1, 1);
    if (!seen)
        return 0;
    while (kbuddy_frames_alloc(fa, page, page, &f) == KBUDDY_OK) {
        if (f % page != 0 || f < base || f - base > n - page) {
            KBTEST_FAIL("page %zu of %zu frames misplaced: %zu", got, page, f);
            break;
        }
        size_t i = f / page - lo_page;
        if (i >= pages || seen[i]) {
            KBTEST_FAIL("page at %zu handed out twice or outside", f);
            break;
        }
        seen[i] = 1;
        if (got < cap)
            out[got] = f;
        got++;
    }
    free(seen);
    return got;
}

/* Aligned blocks of `page` frames that lie inside [base, base + n). */
static size_t pages_inside(size_t base, size_t n, size_t page) {
    size_t lo = (base + page - 1) / page * page, hi = (base + n) / page * page;
    return hi > lo ? (hi - lo) / page : 0;
}

TEST(window_of_2_26_frames_is_cheap_to_set_up) {
    const size_t n = (size_t)1 << 26;
    big_window w;
    REQUIRE(big_open(&w, 0, n));
    report_window("2^26 frames at base 0", &w, n);
    CHECK(w.meta_size <= n / 2); /* at most 4 bits per frame */
    if (timing_asserted())
        CHECK(w.init_add_seconds < 1.0);
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.total, n);
    CHECK_EQ(s.allocated, 0);
    CHECK_EQ(s.largest_free, n);
    CHECK(check_ok(&w.fa, "2^26 fresh"));
    size_t f = 1;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, n, n, &f), KBUDDY_OK);
    CHECK_EQ(f, 0);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 1, &f), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, n), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, n), KBUDDY_EDOUBLEFREE);
    CHECK(check_ok(&w.fa, "2^26 after whole-window alloc and free"));
    big_close(&w);
}

TEST(gigabyte_pages_fill_a_2_26_window) {
    const size_t n = (size_t)1 << 26, giga = (size_t)1 << 18;
    big_window w;
    REQUIRE(big_open(&w, 0, n));
    size_t pages[256];
    size_t got = take_all_pages(&w.fa, giga, 0, n, pages, 256);
    CHECK_EQ(got, 256);
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.allocated, n);
    CHECK_EQ(s.largest_free, 0);
    CHECK(check_ok(&w.fa, "256 gigabyte pages"));
    /* Give back every other one: those and only those come back. */
    for (size_t i = 0; i < got; i += 2)
        CHECK_STATUS(kbuddy_frames_free(&w.fa, pages[i], giga), KBUDDY_OK);
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.allocated, n / 2);
    CHECK_EQ(s.largest_free, giga);
    CHECK_EQ(take_all_pages(&w.fa, giga, 0, n, pages, 0), 128);
    /* Split one in the middle with a partial free, then free the rest. */
    CHECK_STATUS(kbuddy_frames_free(&w.fa, pages[1] + 1000, giga - 2000), KBUDDY_OK);
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.allocated, n - giga + 2000);
    /* Its first and last 1000 frames stay, so the largest whole blocks are
     * its second and third quarters. */
    CHECK_EQ(s.largest_free, (size_t)1 << 16);
    CHECK(check_ok(&w.fa, "after partial free of a gigabyte page"));
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, n), KBUDDY_EDOUBLEFREE);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, pages[1], 1000), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, pages[1] + giga - 1000, 1000), KBUDDY_OK);
    for (size_t i = 0; i < n; i += giga)
        if (i != pages[1])
            CHECK_STATUS(kbuddy_frames_free(&w.fa, i, giga), KBUDDY_OK);
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.allocated, 0);
    CHECK_EQ(s.largest_free, n);
    CHECK(check_ok(&w.fa, "all gigabyte pages freed"));
    big_close(&w);
}

TEST(two_megabyte_pages_fill_a_2_26_window) {
    const size_t n = (size_t)1 << 26, mega2 = 512, giga = (size_t)1 << 18;
    big_window w;
    REQUIRE(big_open(&w, 0, n));
    size_t *pages = malloc((n / mega2) * sizeof *pages);
    REQUIRE(pages);
    double t0 = now_seconds();
    size_t got = take_all_pages(&w.fa, mega2, 0, n, pages, n / mega2);
    double dt = now_seconds() - t0;
    printf("  %zu 2 MiB pages in %.1f ms (%.0f ns each)\n", got, dt * 1e3, dt * 1e9 / (double)got);
    CHECK_EQ(got, n / mega2);
    CHECK(check_ok(&w.fa, "all 2 MiB pages taken"));
    /* Free every other page: no gigabyte block is whole any more. */
    for (size_t i = 0; i < got; i += 2)
        CHECK_STATUS(kbuddy_frames_free(&w.fa, pages[i], mega2), KBUDDY_OK);
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.allocated, n / 2);
    CHECK_EQ(s.largest_free, mega2);
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, giga, giga, &f), KBUDDY_ENOMEM);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, mega2 + 1, 1, &f), KBUDDY_ENOMEM);
    CHECK(check_ok(&w.fa, "every other 2 MiB page free"));
    /* Free the rest of one gigabyte's worth: that gigabyte page returns. */
    size_t target = 5 * giga;
    for (size_t i = 1; i < got; i += 2)
        if (pages[i] >= target && pages[i] < target + giga)
            CHECK_STATUS(kbuddy_frames_free(&w.fa, pages[i], mega2), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, giga, giga, &f), KBUDDY_OK);
    CHECK_EQ(f, target);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, giga), KBUDDY_OK);
    for (size_t i = 1; i < got; i += 2)
        if (pages[i] < target || pages[i] >= target + giga)
            CHECK_STATUS(kbuddy_frames_free(&w.fa, pages[i], mega2), KBUDDY_OK);
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.allocated, 0);
    CHECK_EQ(s.largest_free, n);
    CHECK(check_ok(&w.fa, "all 2 MiB pages freed"));
    free(pages);
    big_close(&w);
}

TEST(window_of_2_27_frames_with_odd_base) {
    /* 512 GiB of frames starting at an odd frame number high up. */
    const size_t n = (size_t)1 << 27, base = ((size_t)1 << 40) + 12345;
    const size_t giga = (size_t)1 << 18, mega2 = 512;
    big_window w;
    REQUIRE(big_open(&w, base, n));
    report_window("2^27 frames at base 2^40 + 12345", &w, n);
    CHECK(w.meta_size <= n / 2);
    if (timing_asserted())
        CHECK(w.init_add_seconds < 1.0);
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.total, n);
    CHECK_EQ(s.largest_free, (size_t)1 << 26); /* no aligned 2^27 block fits */
    CHECK(check_ok(&w.fa, "2^27 fresh"));
    /* Some single frames and 2 MiB pages first, at the edges or not. */
    size_t f, small[100];
    for (size_t i = 0; i < 100; i++) {
        CHECK_STATUS(kbuddy_frames_alloc(&w.fa, i % 2 ? 1 : mega2, i % 2 ? 1 : mega2, &small[i]),
                     KBUDDY_OK);
        if (i % 2 == 0)
            CHECK_EQ(small[i] % mega2, 0);
    }
    size_t pages[512];
    size_t got = take_all_pages(&w.fa, giga, base, n, pages, 512);
    /* 511 aligned gigabyte blocks fit; the small allocations fit into the
     * unaligned head (giga - 12345 frames long, enough for them all). */
    CHECK_EQ(pages_inside(base, n, giga), 511);
    CHECK_EQ(got, 511);
    CHECK(check_ok(&w.fa, "2^27 with 511 gigabyte pages"));
    for (size_t i = 0; i < got && i < 512; i++)
        CHECK_STATUS(kbuddy_frames_free(&w.fa, pages[i], giga), KBUDDY_OK);
    for (size_t i = 0; i < 100; i++)
        CHECK_STATUS(kbuddy_frames_free(&w.fa, small[i], i % 2 ? 1 : mega2), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, 1, &f), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, f, 1), KBUDDY_OK);
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.allocated, 0);
    CHECK_EQ(s.largest_free, (size_t)1 << 26);
    CHECK(check_ok(&w.fa, "2^27 all freed"));
    big_close(&w);
}

TEST(frame_zero_block_is_not_capped_at_2_32) {
    /* The Rust crate capped the block at frame 0 at 2^32 frames. A window of
     * 2^33 frames from 0 must be one free block of 2^33. Its metadata is
     * 3.3 GB and init clears it all, so this runs only in optimised builds
     * without sanitizers, with the memory available (KBUDDY_HUGE=1 forces
     * it, KBUDDY_HUGE=0 skips it). */
    const size_t n = (size_t)1 << 33;
    const char *e = getenv("KBUDDY_HUGE");
    bool want = e && *e ? strcmp(e, "0") != 0 : !KB_SLOW_BUILD;
    uint64_t avail = available_memory();
    size_t need = kbuddy_frames_meta_size(n);
    if (!want || avail < (uint64_t)need + ((uint64_t)2 << 30)) {
        printf("  skipped: %s (meta %zu bytes, %" PRIu64 " available)\n",
               want ? "not enough memory" : "slow build or KBUDDY_HUGE=0", need, avail);
        return;
    }
    big_window w;
    REQUIRE(big_open(&w, 0, n));
    report_window("2^33 frames at base 0", &w, n);
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.total, n);
    CHECK_EQ(s.largest_free, n);
    size_t f = 1;
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, ((size_t)1 << 32) + 1, 1, &f), KBUDDY_OK);
    CHECK_EQ(f, 0);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, ((size_t)1 << 32) + 1), KBUDDY_OK);
    kbuddy_frames_get_stats(&w.fa, &s);
    CHECK_EQ(s.largest_free, n);
    CHECK_STATUS(kbuddy_frames_alloc(&w.fa, 1, n, &f), KBUDDY_OK);
    CHECK_EQ(f, 0);
    CHECK_STATUS(kbuddy_frames_free(&w.fa, 0, 1), KBUDDY_OK);
    CHECK(check_ok(&w.fa, "2^33"));
    big_close(&w);
}

/* Average nanoseconds of an alloc(1, 1) + free pair, `reps` times. */
static double ns_per_alloc_free(kbuddy_frames *fa, size_t reps) {
    double t0 = now_seconds();
    for (size_t i = 0; i < reps; i++) {
        size_t f;
        if (kbuddy_frames_alloc(fa, 1, 1, &f) != KBUDDY_OK ||
            kbuddy_frames_free(fa, f, 1) != KBUDDY_OK) {
            KBTEST_FAIL("alloc/free pair %zu failed", i);
            return 0;
        }
    }
    return (now_seconds() - t0) * 1e9 / (double)reps;
}

/* Allocate all of [0, n), then free every other frame: n / 2 free blocks
 * that cannot merge. */
static bool fragment(big_window *w, size_t n) {
    size_t f;
    if (kbuddy_frames_alloc(&w->fa, n, 1, &f) != KBUDDY_OK || f != 0)
        return false;
    for (size_t i = 0; i < n; i += 2)
        if (kbuddy_frames_free(&w->fa, i, 1) != KBUDDY_OK)
            return false;
    return true;
}

TEST(operations_do_not_slow_down_with_millions_of_free_blocks) {
    /* Every operation is O(log n), whatever the number of free blocks: an
     * alloc/free pair among 2^23 free blocks costs about what it costs
     * among 2^11, and so do the refused and failing calls. */
    const size_t big = (size_t)1 << (KB_SLOW_BUILD ? 20 : 24), small = (size_t)1 << 12;
    const size_t reps = KB_SLOW_BUILD ? 20000 : 400000;
    big_window a, b;
    REQUIRE(big_open(&a, 0, big));
    REQUIRE(big_open(&b, 0, small));
    double t0 = now_seconds();
    REQUIRE(fragment(&a, big));
    double t_frag = now_seconds() - t0;
    REQUIRE(fragment(&b, small));
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(&a.fa, &s);
    CHECK_EQ(s.allocated, big / 2);
    CHECK_EQ(s.largest_free, 1);
    double ns_big = ns_per_alloc_free(&a.fa, reps), ns_small = ns_per_alloc_free(&b.fa, reps);
    /* Failing allocations and refused frees among the free blocks. */
    size_t f;
    t0 = now_seconds();
    for (size_t i = 0; i < reps; i++) {
        if (kbuddy_frames_alloc(&a.fa, 2, 1, &f) != KBUDDY_ENOMEM ||
            kbuddy_frames_free(&a.fa, (i * 2 + 1) % big, 2) != KBUDDY_EDOUBLEFREE) {
            KBTEST_FAIL("refused call %zu gave the wrong status", i);
            break;
        }
    }
    double ns_refused = (now_seconds() - t0) * 1e9 / (double)reps;
    printf("  %zu single-frame frees to fragment 2^%d frames: %.0f ns each\n", big / 2,
           big == ((size_t)1 << 24) ? 24 : 20, t_frag * 1e9 / (double)(big / 2));
    printf("  alloc+free among %zu free blocks: %.0f ns; among %zu: %.0f ns; "
           "ENOMEM+EDOUBLEFREE pair: %.0f ns\n",
           big / 2, ns_big, small / 2, ns_small, ns_refused);
    if (timing_asserted()) {
        CHECK(ns_big < 3 * ns_small + 200);
        CHECK(ns_big < 2000);
        CHECK(ns_refused < 2000);
    }
    CHECK(check_ok(&a.fa, "fragmented"));
    /* One free of the whole allocated pattern is refused as a double free,
     * and frees of the remaining frames merge everything back. */
    CHECK_STATUS(kbuddy_frames_free(&a.fa, 0, big), KBUDDY_EDOUBLEFREE);
    for (size_t i = 1; i < big; i += 2)
        CHECK_STATUS(kbuddy_frames_free(&a.fa, i, 1), KBUDDY_OK);
    kbuddy_frames_get_stats(&a.fa, &s);
    CHECK_EQ(s.allocated, 0);
    CHECK_EQ(s.largest_free, big);
    CHECK(check_ok(&a.fa, "merged back"));
    big_close(&a);
    big_close(&b);
}

/* The fastest of `reps` refused frees of [0, count), in milliseconds. */
static double refused_free_ms(kbuddy_frames *fa, size_t count, int reps) {
    double best = 1e9;
    for (int i = 0; i < reps; i++) {
        double t0 = now_seconds();
        kbuddy_status st = kbuddy_frames_free(fa, 0, count);
        double dt = (now_seconds() - t0) * 1e3;
        if (st != KBUDDY_EDOUBLEFREE)
            KBTEST_FAIL("free(0, %zu) returned %s, wanted double free", count,
                        kbuddy_strerror(st));
        if (dt < best)
            best = dt;
    }
    return best;
}

TEST(refused_free_is_not_slowed_by_many_free_blocks) {
    /* Requirement 5: every operation is O(log n) plus O(count / 64) for the
     * bits of its run, whatever the number of free blocks. A refused free of
     * 2^24 frames must cost about the same whether the run holds one free
     * frame or 2^23 free blocks (it is refused either way, as a double
     * free). */
    const size_t n = (size_t)1 << (KB_SLOW_BUILD ? 20 : 24);
    big_window one, many;
    REQUIRE(big_open(&one, 0, n));
    REQUIRE(big_open(&many, 0, n));
    size_t f;
    CHECK_STATUS(kbuddy_frames_alloc(&one.fa, n, 1, &f), KBUDDY_OK);
    CHECK_STATUS(kbuddy_frames_free(&one.fa, n / 2 + 1, 1), KBUDDY_OK);
    REQUIRE(fragment(&many, n));
    double ms_one = refused_free_ms(&one.fa, n, 5), ms_many = refused_free_ms(&many.fa, n, 5);
    printf("  refused free of %zu frames: %.3f ms with 1 free frame, %.3f ms with %zu free "
           "blocks\n",
           n, ms_one, ms_many, n / 2);
    if (timing_asserted())
        CHECK(ms_many < 8 * ms_one + 1.0);
    CHECK(check_ok(&many.fa, "after refused frees"));
    big_close(&one);
    big_close(&many);
}

KBTEST_MAIN()
