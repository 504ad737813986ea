/*
 * rptest-like: random sizes (16 B to 16 KiB, small ones more likely),
 * random lifetimes, across threads. Each of 4 threads keeps a working set
 * of 2,000 slots; a block whose time is up is freed there, or, one time
 * in four, handed to another thread through that thread's mailbox (a
 * mutex-protected list) and freed by it. Blocks are verified when freed.
 */
#include "suite.h"

#define T 4
#define SLOTS 2000

typedef struct blk {
    struct blk *next;
    size_t len;
    uint64_t tag;
    size_t dies; /* the step at which the owner lets go of it */
    unsigned char data[];
} blk;

static struct {
    pthread_mutex_t lock;
    blk *head;
} mailbox[T];
static size_t ops;
static uint64_t sums[T];

static uint64_t drop(blk *b) {
    uint64_t s = verify(b->data, b->len, b->tag);
    free(b);
    return s;
}

static uint64_t empty_mailbox(size_t id) {
    pthread_mutex_lock(&mailbox[id].lock);
    blk *b = mailbox[id].head;
    mailbox[id].head = NULL;
    pthread_mutex_unlock(&mailbox[id].lock);
    uint64_t s = 0;
    while (b) {
        blk *next = b->next;
        s += drop(b);
        b = next;
    }
    return s;
}

static void *worker(void *arg) {
    size_t id = (size_t)(uintptr_t)arg;
    rng r = rng_seed(90 + id);
    blk *slot[SLOTS] = {0};
    uint64_t sum = 0;
    for (size_t k = 0; k < ops; k++) {
        size_t i = rnd(&r) % SLOTS;
        blk *b = slot[i];
        if (b && b->dies <= k) {
            uint64_t c = rnd(&r);
            if (c % 4 == 0) {
                size_t to = (id + 1 + (c >> 8) % (T - 1)) % T;
                pthread_mutex_lock(&mailbox[to].lock);
                b->next = mailbox[to].head;
                mailbox[to].head = b;
                pthread_mutex_unlock(&mailbox[to].lock);
            } else {
                sum += drop(b);
            }
            b = slot[i] = NULL;
        }
        if (!b) {
            /* size: 16 << (0..10) scaled down at random: small ones dominate */
            size_t n = 16 + rnd(&r) % ((size_t)16 << (rnd(&r) % 11));
            if (n > 16384)
                n = 16384;
            b = xmalloc(sizeof *b + n);
            b->len = n;
            b->tag = rnd(&r);
            b->dies = k + rnd(&r) % 20000;
            fill(b->data, n, b->tag);
            slot[i] = b;
        }
        if (k % 1024 == 0)
            sum += empty_mailbox(id);
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (slot[i])
            sum += drop(slot[i]);
    sums[id] = sum;
    return NULL;
}

int main(int argc, char **argv) {
    suite_args(argc, argv);
    ops = scaled(4000000);
    for (size_t i = 0; i < T; i++)
        pthread_mutex_init(&mailbox[i].lock, NULL);
    run_threads(T, worker);
    uint64_t check = 0;
    for (size_t i = 0; i < T; i++)
        check += empty_mailbox(i) + sums[i];
    suite_done("rptest", check);
    return 0;
}
