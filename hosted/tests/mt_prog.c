/*
 * An ordinary threaded C program, run by preload_run.sh with and without
 * libkbuddy-malloc.so: its output depends only on its own seeds, never on
 * addresses, so it must be identical under any allocator. It exercises
 * malloc/calloc/realloc/free/aligned_alloc/posix_memalign from several
 * threads at once, blocks freed by other threads, threads that come and go,
 * and fork from a threaded process.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void stamp(unsigned char *p, size_t n, uint64_t v) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(v + i);
}

static int stamped(const unsigned char *p, size_t n, uint64_t v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(v + i))
            return 0;
    return 1;
}

/* --- Workers: random operations on private slots ------------------------- */

enum { SLOTS = 3000, OPS = 300000, WORKERS = 4 };

typedef struct worker {
    unsigned id;
    unsigned long errors, checksum;
} worker;

static void *work(void *varg) {
    worker *w = varg;
    unsigned char **slot = calloc(SLOTS, sizeof *slot);
    size_t *len = calloc(SLOTS, sizeof *len);
    uint64_t *val = calloc(SLOTS, sizeof *val);
    uint64_t seed = 1000 + w->id;
    for (unsigned op = 0; op < OPS; op++) {
        unsigned i = (unsigned)(xorshift(&seed) % SLOTS);
        uint64_t r = xorshift(&seed);
        size_t n = 1 + (size_t)(r % (op % 50 ? 3000 : 200000));
        if (!slot[i]) {
            unsigned char *p;
            switch (r % 4) {
            case 0:
                p = calloc(1, n);
                for (size_t j = 0; j < n; j++)
                    w->errors += p[j] != 0;
                break;
            case 1:
                p = aligned_alloc(64, n);
                w->errors += (uintptr_t)p % 64 != 0;
                break;
            case 2: {
                void *q = NULL;
                w->errors += posix_memalign(&q, 256, n) != 0;
                p = q;
                w->errors += (uintptr_t)p % 256 != 0;
                break;
            }
            default:
                p = malloc(n);
            }
            if (!p) {
                w->errors++;
                continue;
            }
            stamp(p, n, r);
            slot[i] = p;
            len[i] = n;
            val[i] = r;
            w->checksum += n;
        } else if (r % 3 == 0) {
            size_t keep = n < len[i] ? n : len[i];
            w->errors += !stamped(slot[i], len[i], val[i]);
            unsigned char *p = realloc(slot[i], n);
            if (!p) {
                w->errors++;
                continue;
            }
            w->errors += !stamped(p, keep, val[i]);
            stamp(p, n, val[i]);
            slot[i] = p;
            len[i] = n;
            w->checksum += n * 3;
        } else {
            w->errors += !stamped(slot[i], len[i], val[i]);
            free(slot[i]);
            slot[i] = NULL;
        }
    }
    for (unsigned i = 0; i < SLOTS; i++)
        free(slot[i]);
    free(slot);
    free(len);
    free(val);
    return NULL;
}

/* --- Producer-consumer ----------------------------------------------------- */

enum { QCAP = 256, ITEMS = 200000 };
static pthread_mutex_t qmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcv = PTHREAD_COND_INITIALIZER;
static unsigned char *queue[QCAP];
static size_t qlen[QCAP];
static unsigned qhead, qcount;
static unsigned long consumed_sum, consumed_errors;

static void *produce(void *varg) {
    (void)varg;
    uint64_t seed = 77;
    for (unsigned i = 0; i < ITEMS; i++) {
        size_t n = 8 + (size_t)(xorshift(&seed) % 2000);
        unsigned char *p = malloc(n);
        stamp(p, n, n);
        pthread_mutex_lock(&qmu);
        while (qcount == QCAP)
            pthread_cond_wait(&qcv, &qmu);
        queue[(qhead + qcount) % QCAP] = p;
        qlen[(qhead + qcount) % QCAP] = n;
        qcount++;
        pthread_cond_broadcast(&qcv);
        pthread_mutex_unlock(&qmu);
    }
    return NULL;
}

static void *consume(void *varg) {
    (void)varg;
    for (unsigned i = 0; i < ITEMS; i++) {
        pthread_mutex_lock(&qmu);
        while (qcount == 0)
            pthread_cond_wait(&qcv, &qmu);
        unsigned char *p = queue[qhead];
        size_t n = qlen[qhead];
        qhead = (qhead + 1) % QCAP;
        qcount--;
        pthread_cond_broadcast(&qcv);
        pthread_mutex_unlock(&qmu);
        consumed_errors += !stamped(p, n, n);
        consumed_sum += n;
        free(p);
    }
    return NULL;
}

/* --- Short-lived threads --------------------------------------------------- */

static void *short_lived(void *varg) {
    uintptr_t id = (uintptr_t)varg;
    char *s = malloc(64);
    snprintf(s, 64, "thread %lu", (unsigned long)id);
    void *junk[50];
    for (unsigned i = 0; i < 50; i++)
        junk[i] = malloc(10 + i * 30);
    for (unsigned i = 0; i < 50; i++)
        free(junk[i]);
    return s; /* freed by the joining thread */
}

int main(void) {
    pthread_t t[WORKERS], pc[2];
    worker w[WORKERS];
    for (unsigned i = 0; i < WORKERS; i++) {
        w[i] = (worker){i, 0, 0};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    pthread_create(&pc[0], NULL, produce, NULL);
    pthread_create(&pc[1], NULL, consume, NULL);

    /* fork while the other threads allocate: the child must find a working
     * allocator (no lock left held by a thread that does not exist). */
    unsigned forks_ok = 0;
    for (unsigned i = 0; i < 40; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            int bad = 0;
            for (unsigned j = 0; j < 2000; j++) {
                unsigned char *p = malloc(1 + j * 7);
                if (!p)
                    _exit(2);
                stamp(p, 1 + j * 7, j);
                bad += !stamped(p, 1 + j * 7, j);
                free(p);
            }
            char *s = strdup("child");
            bad += strcmp(s, "child") != 0;
            free(s);
            _exit(bad ? 1 : 0);
        }
        int status = 0;
        if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
            WEXITSTATUS(status) == 0)
            forks_ok++;
    }

    for (unsigned i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    pthread_join(pc[0], NULL);
    pthread_join(pc[1], NULL);

    unsigned churn_ok = 0;
    for (uintptr_t round = 0; round < 50; round++) {
        pthread_t s[4];
        for (uintptr_t i = 0; i < 4; i++)
            pthread_create(&s[i], NULL, short_lived, (void *)(round * 4 + i));
        for (uintptr_t i = 0; i < 4; i++) {
            char *msg, want[64];
            pthread_join(s[i], (void **)&msg);
            snprintf(want, sizeof want, "thread %lu", (unsigned long)(round * 4 + i));
            churn_ok += strcmp(msg, want) == 0;
            free(msg);
        }
    }

    for (unsigned i = 0; i < WORKERS; i++)
        printf("worker %u: errors %lu checksum %lu\n", i, w[i].errors, w[i].checksum);
    printf("producer-consumer: items %u sum %lu errors %lu\n", (unsigned)ITEMS, consumed_sum,
           consumed_errors);
    printf("forks: %u of 40 children ok\n", forks_ok);
    printf("thread churn: %u of 200 ok\n", churn_ok);
    return 0;
}
