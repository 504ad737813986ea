/*
 * The acceptance tests of issue 11 ("the global allocator as a good
 * citizen"): each case measures one figure of the table in a fresh
 * process under glibc and in a fresh process under LD_PRELOAD=LIBRARY, in
 * the same run, prints both, and checks the library's figure against the
 * issue's target (absolute where the issue gives one, else relative to
 * the glibc run, since the figure depends on the machine).
 *
 *   citizen CASE LIBRARY      measure glibc, then LIBRARY; check LIBRARY
 *   citizen CASE -            measure glibc twice; check the second run
 *                             (sanity: every case must pass under glibc)
 *   citizen --list            the cases
 *   citizen --measure CASE    (internal) measure in this process and print
 *                             "key value" lines on stdout
 *
 * Exit status: 0 target met, 1 missed (or the measurement failed), 77
 * skipped (the machine cannot run the case, e.g. glibc itself fails).
 *
 * RSS and VmSize come from /proc/self/statm and /proc/self/status. The
 * measuring process never holds more than about 2.1 GiB resident (the
 * 2 GiB grow-and-shrink); the 16 GiB case touches nothing. Every
 * measurement has a time limit (the driver kills it), so a slow allocator
 * fails the test instead of hanging CI.
 *
 * The program under test reaches kbuddy-only functions (kbuddy_malloc_check)
 * through dlsym, as preload_selftest.c does: under glibc they are absent.
 */
#define _GNU_SOURCE
#include "kbuddy_malloc.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024.0 * 1024.0)

/* ------------------------------------------------------------------------ */
/* Measuring helpers                                                         */
/* ------------------------------------------------------------------------ */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Read a /proc file into buf without stdio: FILE needs malloc, and some
 * figures are read after memory has run out on purpose. */
static void read_proc(const char *path, char *buf, size_t cap) {
    size_t n = 0;
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        ssize_t r;
        while (n < cap - 1 && (r = read(fd, buf + n, cap - 1 - n)) > 0)
            n += (size_t)r;
        close(fd);
    }
    buf[n] = 0;
}

/* Resident set in bytes: the second field of /proc/self/statm, in pages. */
static double rss_bytes(void) {
    char buf[256];
    read_proc("/proc/self/statm", buf, sizeof buf);
    char *s = strchr(buf, ' ');
    return s ? strtod(s + 1, NULL) * (double)sysconf(_SC_PAGESIZE) : 0;
}

/* VmSize in bytes, from /proc/self/status (kB there). */
static double vmsize_bytes(void) {
    char buf[8192];
    read_proc("/proc/self/status", buf, sizeof buf);
    char *s = strstr(buf, "VmSize:");
    return s ? strtod(s + 7, NULL) * 1024.0 : 0;
}

static void put(const char *key, double v) {
    printf("%s %.6g\n", key, v);
    fflush(stdout);
}

/* xorshift64 (13, 7, 17), as in the project's benchmark workloads. */
static uint64_t rng_state = 42;
static uint64_t rnd(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* Memory the measurement itself needs (pointer tables) comes straight from
 * mmap, so it neither goes through nor disturbs the allocator measured,
 * and can be unmapped before the RSS is read. */
static void *table(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return p;
}

static void limit_as(rlim_t bytes) {
    struct rlimit rl = {bytes, bytes};
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        perror("setrlimit");
        exit(2);
    }
}

/* Hidden from the optimiser: a malloc whose result is only freed may
 * otherwise be dropped altogether. */
static void *volatile sink;

/* ------------------------------------------------------------------------ */
/* Measurements (each runs in a fresh process)                               */
/* ------------------------------------------------------------------------ */

/* malloc(n) or calloc(1, n) of a large block, left untouched: the time it
 * takes, the RSS it costs, and the VmSize left after free. */
static int m_large(size_t n, int zeroed) {
    double vm0 = vmsize_bytes(), r0 = rss_bytes();
    double t0 = now();
    unsigned char *p = zeroed ? calloc(1, n) : malloc(n);
    double t = now() - t0;
    sink = p;
    put("ok", p != NULL);
    if (!p)
        return 0;
    put("time_s", t);
    put("rss_mib", (rss_bytes() - r0) / MIB);
    if (zeroed) {
        /* Reading untouched anonymous memory maps the shared zero page:
         * it costs no RSS, and the RSS was read above anyway. */
        int bad = 0;
        for (size_t i = 0; i < n; i += 65536)
            bad |= p[i] != 0;
        bad |= p[n - 1] != 0;
        put("zero", !bad);
    }
    t0 = now();
    free(p);
    put("free_s", now() - t0);
    put("vm_kept_mib", (vmsize_bytes() - vm0) / MIB);
    return 0;
}

/* 2 GiB of mixed blocks, every byte written; every 200th kept (about
 * 10 MiB), the rest freed in allocation order; malloc_trim(0); RSS. With
 * all, the kept ones are freed too before the trim. The kept blocks'
 * contents are verified: an allocator that corrupts them fails. */
static int m_trim(int all) {
    const size_t total = (size_t)2 << 30;
    const size_t maxn = 2u << 20;
    unsigned char **ptr = table(maxn * sizeof *ptr);
    size_t *len = table(maxn * sizeof *len);
    size_t n = 0, bytes = 0;
    while (bytes < total && n < maxn) {
        uint64_t r = rnd() % 100, r2 = rnd();
        size_t sz = r < 60 ? 16 + r2 % 240          /* small: 16..255 */
                  : r < 90 ? 256 + r2 % 3840        /* medium: 256..4095 */
                  : r < 99 ? 4096 + r2 % 61440      /* 4 KiB..64 KiB */
                           : 65536 + r2 % 983040;   /* 64 KiB..1 MiB */
        unsigned char *p = malloc(sz);
        if (!p) {
            put("ok", 0);
            return 0;
        }
        memset(p, (int)(n & 0xff), sz);
        ptr[n] = p;
        len[n] = sz;
        n++;
        bytes += sz;
    }
    put("peak_rss_mib", rss_bytes() / MIB);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 200 == 0) {
            kept += len[i];
            continue;
        }
        free(ptr[i]);
    }
    int bad = 0;
    for (size_t i = 0; i < n; i += 200)
        for (size_t j = 0; j < len[i]; j += 61)
            bad |= ptr[i][j] != (unsigned char)(i & 0xff);
    if (all) {
        for (size_t i = 0; i < n; i += 200)
            free(ptr[i]);
        kept = 0;
    }
    double t0 = now();
    malloc_trim(0);
    double t = now() - t0;
    munmap(ptr, maxn * sizeof *ptr);
    munmap(len, maxn * sizeof *len);
    put("ok", !bad);
    put("blocks", (double)n);
    put("kept_mib", (double)kept / MIB);
    put("trim_s", t);
    put("rss_mib", rss_bytes() / MIB);
    return 0;
}

/* 20,000 short-lived threads, four at a time; each allocates and frees 100
 * mixed blocks and keeps one of 50 bytes (1 MB in all at the end). */
#define CHURN_THREADS 20000
static unsigned char *churn_kept[CHURN_THREADS];

static void *churn(void *arg) {
    size_t id = (size_t)(uintptr_t)arg;
    unsigned char *blk[100];
    uint64_t x = id * 2654435761u + 1;
    for (int i = 0; i < 100; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t sz = 16 + x % 2032;
        blk[i] = malloc(sz);
        if (!blk[i])
            return NULL;
        memset(blk[i], (int)(id & 0xff), sz);
    }
    for (int i = 0; i < 100; i++)
        free(blk[i]);
    unsigned char *k = malloc(50);
    if (k)
        memset(k, (int)(id & 0xff), 50);
    churn_kept[id] = k;
    return NULL;
}

static int m_threads(void) {
    double t0 = now();
    for (size_t i = 0; i < CHURN_THREADS; i += 4) {
        pthread_t t[4];
        for (size_t j = 0; j < 4; j++)
            if (pthread_create(&t[j], NULL, churn, (void *)(uintptr_t)(i + j)) != 0) {
                put("ok", 0);
                return 0;
            }
        for (size_t j = 0; j < 4; j++)
            pthread_join(t[j], NULL);
    }
    int bad = 0;
    for (size_t i = 0; i < CHURN_THREADS; i++) {
        if (!churn_kept[i]) {
            bad = 1;
            continue;
        }
        for (size_t j = 0; j < 50; j++)
            bad |= churn_kept[i][j] != (unsigned char)(i & 0xff);
    }
    put("ok", !bad);
    put("time_s", now() - t0);
    put("rss_mib", rss_bytes() / MIB);
    return 0;
}

/* 100-byte blocks until malloc says NULL, chained through their first
 * word (so no table is needed); the chain's head, and the count in *n. */
static void *fill_until_null(size_t *n) {
    void *head = NULL;
    for (*n = 0;; ++*n) {
        void **p = malloc(100);
        if (!p)
            return head;
        *p = head;
        head = p;
    }
}

static void free_chain(void *head) {
    while (head) {
        void *next = *(void **)head;
        free(head);
        head = next;
    }
}

/* ulimit -v 400000: 100-byte blocks until NULL; the bytes reached. */
static int m_ulimit_small(void) {
    limit_as((rlim_t)400000 * 1024);
    size_t n;
    void *head = fill_until_null(&n);
    put("ok", n > 0);
    put("reached_mib", (double)n * 100.0 / MIB);
    free_chain(head);
    return 0;
}

/* ulimit -v 1 GiB: the largest single malloc(n) that succeeds, to 1 MiB,
 * each try in a fresh child (fork before anything else is allocated), so
 * that one failure cannot spoil the next try. */
static int try_alloc(size_t n) {
    pid_t pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
        void *p = malloc(n);
        sink = p;
        _exit(p ? 0 : 1);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int m_ulimit_large(void) {
    limit_as((rlim_t)1 << 30);
    size_t lo = 0, hi = 1024; /* MiB: lo succeeds (0 trivially), hi fails */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (try_alloc(mid << 20))
            lo = mid;
        else
            hi = mid;
    }
    put("ok", lo > 0);
    put("reached_mib", (double)lo);
    return 0;
}

/* ulimit -v 400000 (as in ulimit_small, where the region limit is what
 * stops kbuddy today): 100-byte blocks until NULL, then 200 more mallocs
 * (100 bytes, 4 KiB and 1 MiB in turn); how much VmSize grew over those
 * 200. Nothing should: memory the system handed over must not be dropped. */
static int m_fail_vmsize(void) {
    limit_as((rlim_t)400000 * 1024);
    size_t n;
    void *head = fill_until_null(&n);
    double vm0 = vmsize_bytes();
    put("vm_at_null_mib", vm0 / MIB);
    static const size_t sizes[3] = {100, 4096, 1 << 20};
    size_t got = 0;
    for (int i = 0; i < 200; i++) {
        void **p = malloc(sizes[i % 3]);
        if (p) { /* memory came back meanwhile: hold it, count it */
            *p = head;
            head = p;
            got++;
        }
    }
    double vm1 = vmsize_bytes();
    put("ok", n > 0);
    put("blocks", (double)n);
    put("late_successes", (double)got);
    put("vm_growth_mib", (vm1 - vm0) / MIB);
    free_chain(head);
    return 0;
}

/* fork from a process whose 3 threads allocate: in each child the
 * allocator's own check (when it has one) must say OK, and the child must
 * allocate normally, in its main thread and in a new thread. A child that
 * hangs (a lock held at fork) is killed by its alarm. */
static volatile int fork_stop;
typedef int (*check_fn)(void);
static check_fn fork_check;

static void *fork_worker(void *arg) {
    uint64_t x = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15u + 1;
    unsigned char *slot[256] = {0};
    while (!fork_stop) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t i = x % 256, sz = 8 + (x >> 8) % 3000;
        if ((x >> 40) % 64 == 0)
            sz += (size_t)256 << 10; /* now and then a large one */
        free(slot[i]);
        slot[i] = malloc(sz);
        if (slot[i])
            slot[i][0] = (unsigned char)i;
    }
    for (size_t i = 0; i < 256; i++)
        free(slot[i]);
    return NULL;
}

/* Allocate 2000 mixed blocks, fill, verify, free: 0 if all went well. */
static int exercise(uint64_t seed) {
    static unsigned char *blk[2000];
    size_t len[2000];
    uint64_t x = seed;
    int bad = 0;
    for (size_t i = 0; i < 2000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        len[i] = 1 + x % 5000;
        if (i % 500 == 0)
            len[i] += (size_t)1 << 20;
        blk[i] = malloc(len[i]);
        if (!blk[i])
            return 1;
        memset(blk[i], (int)(i & 0xff), len[i]);
    }
    for (size_t i = 0; i < 2000; i++) {
        for (size_t j = 0; j < len[i]; j += 97)
            bad |= blk[i][j] != (unsigned char)(i & 0xff);
        bad |= blk[i][len[i] - 1] != (unsigned char)(i & 0xff);
        free(blk[i]);
    }
    return bad;
}

static void *child_thread(void *arg) {
    (void)arg;
    return (void *)(uintptr_t)exercise(99);
}

static int m_fork(void) {
    fork_check = (check_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "kbuddy_malloc_check");
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        if (pthread_create(&t[i], NULL, fork_worker, (void *)(uintptr_t)(i + 1)) != 0) {
            put("ok", 0);
            return 0;
        }
    int children = 200, corrupt = 0, failed = 0, hung = 0;
    for (int c = 0; c < children; c++) {
        usleep(2000); /* let the threads get going between forks */
        pid_t pid = fork();
        if (pid < 0) {
            failed++;
            continue;
        }
        if (pid == 0) {
            alarm(20);
            if (fork_check && fork_check() != 0)
                _exit(3);
            if (exercise((uint64_t)c + 7) != 0)
                _exit(4);
            pthread_t ct;
            void *res = (void *)1;
            if (pthread_create(&ct, NULL, child_thread, NULL) != 0 || pthread_join(ct, &res) != 0 || res)
                _exit(5);
            if (fork_check && fork_check() != 0)
                _exit(3);
            _exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid)
            failed++;
        else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
            hung++;
        else if (WIFEXITED(st) && WEXITSTATUS(st) == 3)
            corrupt++;
        else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed++;
    }
    fork_stop = 1;
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    put("ok", 1);
    put("has_check", fork_check != NULL);
    put("children", children);
    put("corrupt", corrupt);
    put("hung", hung);
    put("failed", failed);
    put("bad", corrupt + hung + failed);
    return 0;
}

/* mallinfo2, malloc_stats, malloc_info, mallopt: the library that serves
 * malloc must answer them (dladdr: the same object), and with its own
 * figures: while 64 MiB are live in 1024 blocks of 64 KiB, mallinfo2's
 * bytes in use (uordblks + hblkhd) lie between them and twice them plus
 * 8 MiB, and fall below a tenth of them once the blocks are freed;
 * malloc_stats and malloc_info each print a figure between the live bytes
 * and four times them. mallopt: for kbuddy, the parameters of glibc's
 * arenas and fastbins (M_ARENA_MAX, M_ARENA_TEST, M_MXFAST), which have no
 * counterpart there, return 0; glibc honours them and returns 1. */
static int same_object(void *a, void *b) {
    Dl_info ia, ib;
    if (!a || !b || !dladdr(a, &ia) || !dladdr(b, &ib))
        return 0;
    return ia.dli_fbase == ib.dli_fbase;
}

/* 1 if text holds a decimal number within [lo, hi]. */
static int has_number_in(const char *text, double lo, double hi) {
    for (const char *s = text; *s; s++) {
        if (*s < '0' || *s > '9' || (s > text && s[-1] >= '0' && s[-1] <= '9'))
            continue;
        double v = strtod(s, NULL);
        if (v >= lo && v <= hi)
            return 1;
    }
    return 0;
}

static int m_info(void) {
    void *fmalloc = dlsym(RTLD_DEFAULT, "malloc");
    put("owns_mallinfo2", same_object(fmalloc, dlsym(RTLD_DEFAULT, "mallinfo2")));
    put("owns_malloc_stats", same_object(fmalloc, dlsym(RTLD_DEFAULT, "malloc_stats")));
    put("owns_malloc_info", same_object(fmalloc, dlsym(RTLD_DEFAULT, "malloc_info")));
    put("owns_mallopt", same_object(fmalloc, dlsym(RTLD_DEFAULT, "mallopt")));
    int is_kbuddy = dlsym(RTLD_DEFAULT, "kbuddy_malloc_check") != NULL;
    put("is_kbuddy", is_kbuddy);

    enum { N = 1024, SZ = 65536 };
    static unsigned char *blk[N];
    double live = (double)N * SZ;
    for (int i = 0; i < N; i++) {
        blk[i] = malloc(SZ);
        if (!blk[i]) {
            put("ok", 0);
            return 0;
        }
        memset(blk[i], i & 0xff, SZ);
    }
    struct mallinfo2 mi = mallinfo2();
    double used = (double)(mi.uordblks + mi.hblkhd);
    put("live_mib", live / MIB);
    put("mallinfo2_used_mib", used / MIB);
    put("mallinfo2_arena_mib", (double)(mi.arena + mi.hblkhd) / MIB);

    /* malloc_stats writes to stderr: catch it in a temporary file. */
    char stats[65536] = {0}, path[] = "/tmp/citizen-statsXXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) {
        unlink(path);
        fflush(stderr);
        int saved = dup(2);
        dup2(fd, 2);
        malloc_stats();
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
        ssize_t got = pread(fd, stats, sizeof stats - 1, 0);
        stats[got > 0 ? got : 0] = 0;
        close(fd);
    }
    put("malloc_stats_bytes", (double)strlen(stats));
    put("malloc_stats_shows_live", has_number_in(stats, live, 4 * live));

    char *info = NULL;
    size_t info_len = 0;
    FILE *mf = open_memstream(&info, &info_len);
    int info_ok = 0;
    if (mf) {
        info_ok = malloc_info(0, mf) == 0;
        fclose(mf);
    }
    put("malloc_info_ok", info_ok);
    put("malloc_info_shows_live", info ? has_number_in(info, live, 4 * live) : 0);
    free(info);

    int bad = 0;
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < SZ; j += 4093)
            bad |= blk[i][j] != (unsigned char)(i & 0xff);
        free(blk[i]);
    }
    mi = mallinfo2();
    put("mallinfo2_used_after_free_mib", (double)(mi.uordblks + mi.hblkhd) / MIB);

    put("mallopt_arena_max", mallopt(M_ARENA_MAX, 4));
    put("mallopt_arena_test", mallopt(M_ARENA_TEST, 4));
    put("mallopt_mxfast", mallopt(M_MXFAST, 64));
    void *after = malloc(1000); /* still allocates after mallopt */
    put("ok", !bad && after != NULL);
    free(after);
    return 0;
}

/* Bad frees of a large block (256 MiB, above any sensible direct-mapping
 * threshold) are refused like any other: an interior pointer (16 bytes,
 * one page, half way in) and, after the real free, a double free. Each
 * must be counted in bad_frees, change nothing (the block's contents
 * intact, kbuddy_malloc_check OK) and not crash. kbuddy only: glibc aborts
 * on such frees, so under glibc the case only reports "not applicable". */
typedef void (*stats_fn)(kbuddy_malloc_stats *);

static int m_large_bad_free(void) {
    stats_fn get_stats = (stats_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "kbuddy_malloc_get_stats");
    check_fn kcheck = (check_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "kbuddy_malloc_check");
    put("applicable", get_stats && kcheck);
    if (!get_stats || !kcheck) {
        put("ok", 1);
        return 0;
    }
    const size_t n = (size_t)256 << 20;
    unsigned char *p = malloc(n);
    if (!p) {
        put("ok", 0);
        return 0;
    }
    for (size_t i = 0; i < n; i += (size_t)1 << 20) /* one byte per MiB */
        p[i] = (unsigned char)(i >> 20);
    p[n - 1] = 0xA5;
    kbuddy_malloc_stats st;
    get_stats(&st);
    size_t before = st.bad_frees;
    free(p + 16);
    free(p + 4096);
    free(p + n / 2);
    get_stats(&st);
    size_t interior = st.bad_frees - before;
    int intact = p[n - 1] == 0xA5;
    for (size_t i = 0; i < n; i += (size_t)1 << 20)
        intact &= p[i] == (unsigned char)(i >> 20);
    int check_ok = kcheck() == 0;
    free(p);
    get_stats(&st);
    size_t after_free = st.bad_frees - before;
    free(p); /* double free: refused without touching p's pages */
    get_stats(&st);
    put("ok", 1);
    put("interior_refused", (double)interior);
    put("intact", intact);
    put("check_ok", check_ok && kcheck() == 0);
    put("good_free_refused", (double)(after_free - interior));
    put("double_free_refused", (double)(st.bad_frees - before - after_free));
    void *q = malloc(1000); /* and the allocator goes on */
    put("allocates_after", q != NULL);
    free(q);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Cases: what to measure, how long it may take, and the target             */
/* ------------------------------------------------------------------------ */

#define MAXKEYS 32
typedef struct {
    int n;
    char key[MAXKEYS][48];
    double val[MAXKEYS];
} figures;

static double fig(const figures *f, const char *key) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->key[i], key) == 0)
            return f->val[i];
    return -1;
}

static int verdicts; /* misses found by check() */
static const figures *G, *L;

/* A figure as text: "n/a" if the run did not report it. */
static const char *txt(const figures *f, const char *key, char *buf, size_t cap) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->key[i], key) == 0) {
            snprintf(buf, cap, "%.4g", f->val[i]);
            return buf;
        }
    return "n/a";
}

/* One line of the report: the figure under glibc and under the library,
 * the target in words, and whether the library's figure meets it. */
static void check(const char *key, int met, const char *target) {
    char a[32], b[32];
    printf("  %-30s glibc %10s   library %10s   target %-34s %s\n", key, txt(G, key, a, sizeof a),
           txt(L, key, b, sizeof b), target, met ? "ok" : "MISSED");
    if (!met)
        verdicts++;
}

static void show(const char *key) {
    char a[32], b[32];
    printf("  %-30s glibc %10s   library %10s\n", key, txt(G, key, a, sizeof a), txt(L, key, b, sizeof b));
}

#define g(k) fig(G, k)
#define l(k) fig(L, k)

static void t_large(void) {
    check("ok", l("ok") == 1, "== 1 (block returned)");
    check("time_s", l("time_s") >= 0 && l("time_s") < 0.1, "< 0.1");
    check("rss_mib", l("rss_mib") < 16, "< 16");
    check("vm_kept_mib", l("vm_kept_mib") < 16, "< 16 (free returns it)");
    show("free_s");
}
static void t_calloc(void) {
    t_large();
    check("zero", l("zero") == 1, "== 1 (reads as zero)");
}
static void t_trim_keep(void) {
    check("ok", l("ok") == 1, "== 1 (kept data intact)");
    show("peak_rss_mib");
    show("kept_mib");
    show("trim_s");
    char target[64];
    snprintf(target, sizeof target, "<= 2*glibc+32 = %.1f", 2 * g("rss_mib") + 32);
    check("rss_mib", l("rss_mib") <= 2 * g("rss_mib") + 32, target);
}
static void t_trim_all(void) {
    check("ok", l("ok") == 1, "== 1 (kept data intact)");
    show("peak_rss_mib");
    show("trim_s");
    double lim = 2 * g("rss_mib") > 64 ? 2 * g("rss_mib") : 64;
    char target[64];
    snprintf(target, sizeof target, "<= max(64, 2*glibc) = %.1f", lim);
    check("rss_mib", l("rss_mib") <= lim, target);
}
static void t_threads(void) {
    check("ok", l("ok") == 1, "== 1 (kept data intact)");
    show("time_s");
    char target[64];
    snprintf(target, sizeof target, "<= 2*glibc = %.1f", 2 * g("rss_mib"));
    check("rss_mib", l("rss_mib") <= 2 * g("rss_mib"), target);
}
static void t_reach(void) {
    check("ok", l("ok") == 1, "== 1");
    char target[64];
    snprintf(target, sizeof target, ">= 0.9*glibc = %.1f", 0.9 * g("reached_mib"));
    check("reached_mib", l("reached_mib") >= 0.9 * g("reached_mib"), target);
}
static void t_fail_vmsize(void) {
    check("ok", l("ok") == 1, "== 1");
    show("blocks");
    show("late_successes");
    show("vm_at_null_mib");
    char target[64];
    snprintf(target, sizeof target, "<= glibc+1 = %.2f", g("vm_growth_mib") + 1);
    check("vm_growth_mib", l("vm_growth_mib") <= g("vm_growth_mib") + 1, target);
}
static void t_fork(void) {
    check("ok", l("ok") == 1, "== 1");
    show("has_check");
    show("children");
    show("corrupt");
    show("hung");
    show("failed");
    check("bad", l("bad") == 0, "== 0 children corrupt/hung/failed");
}
static void t_info(void) {
    check("ok", l("ok") == 1, "== 1");
    check("owns_mallinfo2", l("owns_mallinfo2") == 1, "== 1 (served by malloc's object)");
    check("owns_malloc_stats", l("owns_malloc_stats") == 1, "== 1");
    check("owns_malloc_info", l("owns_malloc_info") == 1, "== 1");
    check("owns_mallopt", l("owns_mallopt") == 1, "== 1");
    show("live_mib");
    double live = l("live_mib");
    check("mallinfo2_used_mib", l("mallinfo2_used_mib") >= live && l("mallinfo2_used_mib") <= 2 * live + 8,
          "in [live, 2*live+8]");
    show("mallinfo2_arena_mib");
    check("mallinfo2_used_after_free_mib", l("mallinfo2_used_after_free_mib") < live / 10, "< live/10");
    check("malloc_stats_shows_live", l("malloc_stats_shows_live") == 1, "== 1 (a figure in [live, 4*live])");
    check("malloc_info_ok", l("malloc_info_ok") == 1, "== 1");
    check("malloc_info_shows_live", l("malloc_info_shows_live") == 1, "== 1 (a figure in [live, 4*live])");
    double want = l("is_kbuddy") == 1 ? 0 : 1; /* kbuddy ignores them; glibc honours them */
    const char *tw = want == 0 ? "== 0 (ignored by kbuddy)" : "== 1 (glibc honours it)";
    check("mallopt_arena_max", l("mallopt_arena_max") == want, tw);
    check("mallopt_arena_test", l("mallopt_arena_test") == want, tw);
    check("mallopt_mxfast", l("mallopt_mxfast") == want, tw);
}

static void t_large_bad_free(void) {
    check("ok", l("ok") == 1, "== 1");
    if (l("applicable") != 1) {
        printf("  not applicable: the library has no kbuddy_malloc_get_stats (glibc aborts on bad frees)\n");
        return;
    }
    check("interior_refused", l("interior_refused") == 3, "== 3 (all counted as bad frees)");
    check("intact", l("intact") == 1, "== 1 (the block unchanged)");
    check("check_ok", l("check_ok") == 1, "== 1 (kbuddy_malloc_check OK)");
    check("good_free_refused", l("good_free_refused") == 0, "== 0 (the real free accepted)");
    check("double_free_refused", l("double_free_refused") == 1, "== 1");
    check("allocates_after", l("allocates_after") == 1, "== 1");
}

typedef struct {
    const char *name;
    int (*measure)(void);
    void (*judge)(void);
    int timeout_s;
    const char *what;
} testcase;

static int m_big1g(void) { return m_large((size_t)1 << 30, 0); }
static int m_big16g(void) { return m_large((size_t)16 << 30, 0); }
static int m_calloc1g(void) { return m_large((size_t)1 << 30, 1); }
static int m_trim_keep(void) { return m_trim(0); }
static int m_trim_all(void) { return m_trim(1); }

static const testcase cases[] = {
    {"malloc_1g", m_big1g, t_large, 60, "malloc(1 GiB) untouched: time, RSS; free gives it back"},
    {"malloc_16g", m_big16g, t_large, 60, "malloc(16 GiB) untouched: time, RSS; free gives it back"},
    {"calloc_1g", m_calloc1g, t_calloc, 60, "calloc(1 GiB): time, RSS (fresh memory is not cleared)"},
    {"trim_keep", m_trim_keep, t_trim_keep, 240, "2 GiB of mixed blocks, 10 MiB kept, malloc_trim(0): RSS"},
    {"trim_all", m_trim_all, t_trim_all, 240, "2 GiB of mixed blocks, all freed, malloc_trim(0): RSS"},
    {"thread_churn", m_threads, t_threads, 240, "20,000 short-lived threads, 1 MB live at the end: RSS"},
    {"ulimit_small", m_ulimit_small, t_reach, 120, "ulimit -v 400000, 100-byte blocks until NULL: bytes"},
    {"ulimit_large", m_ulimit_large, t_reach, 120, "ulimit -v 1 GiB, one malloc(n): largest n"},
    {"fail_vmsize", m_fail_vmsize, t_fail_vmsize, 120, "ulimit -v 400000, 200 failing mallocs: VmSize growth"},
    {"fork", m_fork, t_fork, 240, "fork while 3 threads allocate: child checks OK, allocates"},
    {"large_bad_free", m_large_bad_free, t_large_bad_free, 60, "bad frees of a 256 MiB block are refused, nothing changed"},
    {"info", m_info, t_info, 60, "mallinfo2/malloc_stats/malloc_info/mallopt are the allocator's own"},
};
#define NCASES (sizeof cases / sizeof cases[0])

/* ------------------------------------------------------------------------ */
/* Driver                                                                    */
/* ------------------------------------------------------------------------ */

/* Run "self --measure name" with LD_PRELOAD=lib (NULL: none), killed after
 * timeout_s; collect its "key value" lines. 0 on success; -1 if it could
 * not run, did not finish in time, or exited with failure. */
static int run_measure(const testcase *tc, const char *lib, figures *out) {
    int pfd[2];
    if (pipe(pfd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        if (lib)
            setenv("LD_PRELOAD", lib, 1);
        else
            unsetenv("LD_PRELOAD");
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0)
            _exit(127);
        exe[n] = 0;
        execl(exe, exe, "--measure", tc->name, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    FILE *f = fdopen(pfd[0], "r");
    double t0 = now();
    int timed_out = 0;
    /* The reader blocks on the pipe; an alarm-driven kill would need a
     * signal handler, so a watchdog child kills the measurement instead. */
    pid_t dog = fork();
    if (dog == 0) {
        sleep((unsigned)tc->timeout_s);
        kill(pid, SIGKILL);
        _exit(0);
    }
    char line[256];
    out->n = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (out->n < MAXKEYS && sscanf(line, "%47s %lf", out->key[out->n], &out->val[out->n]) == 2)
            out->n++;
    }
    if (f)
        fclose(f);
    int st = 0;
    waitpid(pid, &st, 0);
    if (dog > 0) {
        kill(dog, SIGKILL);
        waitpid(dog, NULL, 0);
    }
    double t = now() - t0;
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL && t >= tc->timeout_s - 1)
        timed_out = 1;
    if (timed_out) {
        printf("  (%s: killed after %d s)\n", lib ? lib : "glibc", tc->timeout_s);
        return -1;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("  (%s: measurement ended abnormally: %s %d)\n", lib ? lib : "glibc",
               WIFSIGNALED(st) ? "signal" : "exit", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < NCASES; i++)
            printf("%-14s %s\n", cases[i].name, cases[i].what);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--measure") == 0) {
        /* Unbuffered: a buffer would be malloc'ed at the first figure,
         * possibly after memory has run out on purpose. */
        setvbuf(stdout, NULL, _IONBF, 0);
        for (size_t i = 0; i < NCASES; i++)
            if (strcmp(argv[2], cases[i].name) == 0)
                return cases[i].measure();
        return 2;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s CASE LIBRARY|-   (%s --list: the cases)\n", argv[0], argv[0]);
        return 2;
    }
    const testcase *tc = NULL;
    for (size_t i = 0; i < NCASES; i++)
        if (strcmp(argv[1], cases[i].name) == 0)
            tc = &cases[i];
    if (!tc) {
        fprintf(stderr, "unknown case %s\n", argv[1]);
        return 2;
    }
    const char *lib = strcmp(argv[2], "-") == 0 ? NULL : argv[2];
    if (lib && access(lib, R_OK) != 0) {
        fprintf(stderr, "cannot read %s\n", lib);
        return 2;
    }
    printf("%s: %s\n  library: %s\n", tc->name, tc->what, lib ? lib : "glibc (sanity run)");
    fflush(stdout);
    static figures fg, fl;
    if (run_measure(tc, NULL, &fg) != 0 || fig(&fg, "ok") != 1) {
        printf("SKIP: the glibc run failed, so this machine cannot measure the case\n");
        return 77;
    }
    int lr = run_measure(tc, lib, &fl);
    G = &fg;
    L = &fl;
    if (lr != 0) {
        for (int i = 0; i < fg.n; i++)
            printf("  %-30s glibc %10.4g   library (no figure)\n", fg.key[i], fg.val[i]);
        printf("FAIL: %s\n", tc->name);
        return 1;
    }
    tc->judge();
    printf("%s: %s\n", verdicts ? "FAIL" : "PASS", tc->name);
    return verdicts ? 1 : 0;
}
