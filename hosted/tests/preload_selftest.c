/*
 * Run under LD_PRELOAD=libkbuddy-malloc.so: checks, through the standard
 * names as an ordinary program calls them, that the library is the one
 * serving malloc, that the standard error behaviour holds (errno, EINVAL,
 * ENOMEM, realloc(p, 0)), that bootstrap pointers are accepted, that a bad
 * free is reported on stderr and survived, and that fork works in a
 * threaded program.
 */
#define _GNU_SOURCE
#include "kbuddy_malloc.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The misuse below is deliberate. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif

/* Hidden from the compiler's checks of sizes and alignments. */
static volatile size_t huge = SIZE_MAX, three = 3, zero = 0, forty_eight = 48;

static int failures;
#define EXPECT(cond)                                                   \
    do {                                                               \
        if (!(cond)) {                                                 \
            fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #cond);    \
            failures++;                                                \
        }                                                              \
    } while (0)

typedef void (*stats_fn)(kbuddy_malloc_stats *);
typedef kbuddy_status (*check_fn)(void);
typedef void *(*boot_fn)(size_t);
typedef void (*free_sized_fn)(void *, size_t);

static stats_fn get_stats;

static size_t live(void) {
    kbuddy_malloc_stats st;
    get_stats(&st);
    return st.live_blocks;
}

static volatile int stop;

static void *churn(void *arg) {
    (void)arg;
    void *p[64] = {0};
    for (unsigned i = 0; !stop; i++) {
        free(p[i % 64]);
        p[i % 64] = malloc(1 + (i * 37) % 5000);
    }
    for (unsigned i = 0; i < 64; i++)
        free(p[i]);
    return NULL;
}

/* Run fn with stderr going to a file; return what it wrote. */
static void capture_stderr(void (*fn)(void), char *out, size_t cap) {
    char path[] = "/tmp/kbm-selftest-XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, out, cap - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
}

static void *victim;
static void double_free(void) {
    free(victim);
    free(victim);
}

int main(void) {
    get_stats = (stats_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "kbuddy_malloc_get_stats");
    check_fn check = (check_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "kbuddy_malloc_check");
    boot_fn boot = (boot_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "kbuddy_preload_bootstrap_alloc");
    free_sized_fn fsized = (free_sized_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "free_sized");
    if (!get_stats || !check || !boot || !fsized) {
        fprintf(stderr, "libkbuddy-malloc.so is not loaded (run with LD_PRELOAD)\n");
        return 1;
    }

    /* malloc is served by the library. */
    size_t l0 = live();
    char *p = malloc(100);
    EXPECT(live() == l0 + 1);
    EXPECT(malloc_usable_size(p) == 112); /* a slab class (KBUDDY_MALLOC_SLABS) */
    free(p);
    EXPECT(live() == l0);
    char *d = strdup("libc calls malloc too"); /* through libc's internal calls */
    EXPECT(live() == l0 + 1);
    free(d);

    /* Standard error behaviour. */
    errno = 0;
    EXPECT(malloc(huge) == NULL && errno == ENOMEM);
    errno = 0;
    EXPECT(calloc(huge / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    EXPECT(aligned_alloc(three, 64) == NULL && errno == EINVAL);
    errno = 0;
    EXPECT(aligned_alloc(zero, 64) == NULL && errno == EINVAL);
    void *q = (void *)1;
    errno = 5;
    EXPECT(posix_memalign(&q, 12, 64) == EINVAL && q == (void *)1 && errno == 5);
    EXPECT(posix_memalign(&q, 64, huge) == ENOMEM && q == (void *)1 && errno == 5);
    p = malloc(10);
    errno = 5;
    EXPECT(realloc(p, 0) == NULL && errno == 5); /* freed, like glibc */
    EXPECT(live() == l0);
    p = malloc(10);
    errno = 0;
    EXPECT(reallocarray(p, huge, 16) == NULL && errno == ENOMEM);
    free(p);
    long page = sysconf(_SC_PAGESIZE);
    p = valloc(10);
    EXPECT(p && (uintptr_t)p % (uintptr_t)page == 0);
    free(p);
    p = pvalloc(1);
    EXPECT(p && (uintptr_t)p % (uintptr_t)page == 0 && malloc_usable_size(p) >= (size_t)page);
    free(p);
    p = memalign(forty_eight, 10);
    EXPECT(p && (uintptr_t)p % 64 == 0);
    free(p);
    p = malloc(1000);
    fsized(p, 1000);
    EXPECT(live() == l0);

    /* Bootstrap pointers (what calls during initialisation get). */
    unsigned char *b = boot(100);
    EXPECT(b != NULL);
    for (unsigned i = 0; i < 100; i++)
        b[i] = (unsigned char)i;
    EXPECT(malloc_usable_size(b) == 100);
    unsigned char *moved = realloc(b, 5000);
    EXPECT(moved && moved != b && moved[99] == 99 && moved[0] == 0);
    free(b); /* accepted, ignored */
    free(moved);

    /* A large block is a mapping of its own, and mallinfo2 says so (as
     * glibc's hblks and hblkhd do), outside the bytes in use in the arena. */
    struct mallinfo2 m0 = mallinfo2();
    void *mapped = malloc(10 << 20);
    struct mallinfo2 m1 = mallinfo2();
    EXPECT(mapped && m1.hblks == m0.hblks + 1 && m1.hblkhd == m0.hblkhd + (10 << 20));
    EXPECT(m1.uordblks == m0.uordblks);
    free(mapped);
    EXPECT(mallinfo2().hblks == m0.hblks);

    /* A bad free is reported on stderr and survived. */
    victim = malloc(64);
    char msg[512];
    capture_stderr(double_free, msg, sizeof msg);
    EXPECT(strstr(msg, "kbuddy-malloc: free(0x") != NULL);
    EXPECT(strstr(msg, "double free; ignored") != NULL);
    kbuddy_malloc_stats st;
    get_stats(&st);
    EXPECT(st.bad_frees == 1);
    EXPECT(check() == KBUDDY_OK);

    /* fork in a threaded program, many times. */
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, churn, NULL);
    int children_ok = 0;
    for (int i = 0; i < 100; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            int bad = 0;
            for (unsigned j = 0; j < 1000; j++) {
                char *c = malloc(1 + j * 11);
                if (!c)
                    _exit(3);
                memset(c, 1, 1 + j * 11);
                free(c);
            }
            void *big = malloc(1 << 20);
            bad += big == NULL;
            free(big);
            _exit(bad);
        }
        int status;
        if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0)
            children_ok++;
    }
    stop = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    EXPECT(children_ok == 100);
    EXPECT(check() == KBUDDY_OK);
    /* glibc keeps the per-thread structures it allocated for the churn
     * threads (its stack cache): a few blocks, not ours to count. */
    get_stats(&st);
    EXPECT(st.live_blocks < l0 + 8);

    printf("%s: %d failures\n", failures ? "FAIL" : "ok", failures);
    return failures != 0;
}
