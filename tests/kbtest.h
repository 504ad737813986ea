/*
 * A tiny test harness shared by every test program: each test is a
 * function registered with TEST(name); CHECK* macros record failures and
 * keep going; main() comes from KBTEST_MAIN() and prints one line per test
 * and a closing "N passed, N failed" line. Exit status is non-zero on any
 * failure.
 */
#ifndef KBTEST_H
#define KBTEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*kbtest_fn)(void);
struct kbtest_case {
    const char *name;
    kbtest_fn fn;
};

extern int kbtest_failures; /* failures in the running test */

#define KBTEST_MAX 512
extern struct kbtest_case kbtest_cases[KBTEST_MAX];
extern int kbtest_count;

/* Register a test from a constructor, so tests need no list by hand. */
#define TEST(name)                                                          \
    static void name(void);                                                 \
    __attribute__((constructor)) static void kbtest_register_##name(void) { \
        if (kbtest_count < KBTEST_MAX)                                      \
            kbtest_cases[kbtest_count++] = (struct kbtest_case){#name, name}; \
    }                                                                       \
    static void name(void)

#define KBTEST_FAIL(...)                                                  \
    do {                                                                  \
        kbtest_failures++;                                                \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                 \
        fprintf(stderr, __VA_ARGS__);                                     \
        fputc('\n', stderr);                                              \
    } while (0)

#define CHECK(cond)                                   \
    do {                                              \
        if (!(cond))                                  \
            KBTEST_FAIL("CHECK(%s) failed", #cond);   \
    } while (0)

#define CHECK_EQ(a, b)                                                              \
    do {                                                                            \
        uintmax_t kbt_a_ = (uintmax_t)(a), kbt_b_ = (uintmax_t)(b);                 \
        if (kbt_a_ != kbt_b_)                                                       \
            KBTEST_FAIL("CHECK_EQ(%s, %s): %ju != %ju", #a, #b, kbt_a_, kbt_b_);    \
    } while (0)

#define CHECK_STATUS(expr, want)                                                   \
    do {                                                                           \
        kbuddy_status kbt_s_ = (expr);                                             \
        if (kbt_s_ != (want))                                                      \
            KBTEST_FAIL("%s returned %s, wanted %s", #expr, kbuddy_strerror(kbt_s_), \
                        kbuddy_strerror(want));                                    \
    } while (0)

/* x rounded up to a multiple of m (m > 0): expected sizes in terms of the
 * heap's granule, e.g. ROUND_UP(100, KBUDDY_MIN_BLOCK), so that tests hold
 * for every KBUDDY_MIN_BLOCK_SHIFT. */
#define ROUND_UP(x, m) (((x) + (m) - 1) / (m) * (m))

/* Stop the current test (after a failure that makes going on pointless). */
#define REQUIRE(cond)                                   \
    do {                                                \
        if (!(cond)) {                                  \
            KBTEST_FAIL("REQUIRE(%s) failed", #cond);   \
            return;                                     \
        }                                               \
    } while (0)

#define KBTEST_MAIN()                                                         \
    int kbtest_failures;                                                      \
    struct kbtest_case kbtest_cases[KBTEST_MAX];                              \
    int kbtest_count;                                                         \
    int main(int argc, char **argv) {                                         \
        int passed = 0, failed = 0;                                           \
        for (int i = 0; i < kbtest_count; i++) {                              \
            if (argc > 1 && !strstr(kbtest_cases[i].name, argv[1]))           \
                continue;                                                     \
            kbtest_failures = 0;                                              \
            kbtest_cases[i].fn();                                             \
            printf("%s %s\n", kbtest_failures ? "FAIL" : "ok  ",              \
                   kbtest_cases[i].name);                                     \
            if (kbtest_failures)                                              \
                failed++;                                                     \
            else                                                              \
                passed++;                                                     \
        }                                                                     \
        printf("%d passed, %d failed\n", passed, failed);                     \
        return failed ? 1 : 0;                                                \
    }

#endif
