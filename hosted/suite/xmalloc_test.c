/*
 * xmalloc-test-like: producer/consumer. Two producer threads allocate
 * blocks (16 B to 2 KiB), fill them, and pass them in batches of 64
 * through a bounded queue to two consumer threads, which verify and free
 * them: every block is freed by a thread that did not allocate it.
 */
#include "suite.h"

#define PRODUCERS 2
#define CONSUMERS 2
#define BATCH 64
#define QCAP 64 /* batches */

typedef struct {
    unsigned char *p[BATCH];
    size_t len[BATCH];
    uint64_t tag[BATCH];
    size_t n;
} batch;

static batch *queue[QCAP];
static size_t qhead, qtail, qcount, producers_left = PRODUCERS;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qnotfull = PTHREAD_COND_INITIALIZER, qnotempty = PTHREAD_COND_INITIALIZER;
static size_t batches_per_producer;
static uint64_t sums[CONSUMERS];

static void push(batch *b) {
    pthread_mutex_lock(&qlock);
    while (qcount == QCAP)
        pthread_cond_wait(&qnotfull, &qlock);
    queue[qtail] = b;
    qtail = (qtail + 1) % QCAP;
    qcount++;
    pthread_cond_signal(&qnotempty);
    pthread_mutex_unlock(&qlock);
}

static batch *pop(void) { /* NULL: all producers done and the queue empty */
    pthread_mutex_lock(&qlock);
    while (qcount == 0 && producers_left)
        pthread_cond_wait(&qnotempty, &qlock);
    batch *b = NULL;
    if (qcount) {
        b = queue[qhead];
        qhead = (qhead + 1) % QCAP;
        qcount--;
        pthread_cond_signal(&qnotfull);
    }
    pthread_mutex_unlock(&qlock);
    return b;
}

static void *producer(void *arg) {
    size_t id = (size_t)(uintptr_t)arg;
    rng r = rng_seed(50 + id);
    for (size_t k = 0; k < batches_per_producer; k++) {
        batch *b = xmalloc(sizeof *b);
        b->n = BATCH;
        for (size_t i = 0; i < BATCH; i++) {
            b->len[i] = 16 + rnd(&r) % 2032;
            b->tag[i] = rnd(&r);
            b->p[i] = xmalloc(b->len[i]);
            fill(b->p[i], b->len[i], b->tag[i]);
        }
        push(b);
    }
    pthread_mutex_lock(&qlock);
    producers_left--;
    pthread_cond_broadcast(&qnotempty);
    pthread_mutex_unlock(&qlock);
    return NULL;
}

static void *consumer(void *arg) {
    size_t id = (size_t)(uintptr_t)arg - PRODUCERS;
    batch *b;
    uint64_t sum = 0;
    while ((b = pop()) != NULL) {
        for (size_t i = 0; i < b->n; i++) {
            sum += verify(b->p[i], b->len[i], b->tag[i]);
            free(b->p[i]);
        }
        free(b);
    }
    sums[id] = sum;
    return NULL;
}

static void *either(void *arg) {
    return (size_t)(uintptr_t)arg < PRODUCERS ? producer(arg) : consumer(arg);
}

int main(int argc, char **argv) {
    suite_args(argc, argv);
    batches_per_producer = scaled(40000);
    run_threads(PRODUCERS + CONSUMERS, either);
    uint64_t check = 0;
    for (size_t i = 0; i < CONSUMERS; i++)
        check += sums[i];
    suite_done("xmalloc-test", check);
    return 0;
}
