/*
 * mstress-like: many threads (8 on any machine), mixed sizes with some
 * big ones (up to 4 MiB, one in a hundred), blocks that live across
 * threads: each thread keeps its own slots and also swaps blocks with a
 * shared table (an atomic exchange), so a block may be freed by any
 * thread, long after it was made. Blocks are verified when freed.
 */
#include "suite.h"

#include <stdatomic.h>

#define T 8
#define LOCAL 500
#define SHARED 4096

typedef struct {
    size_t len;
    uint64_t tag;
    unsigned char data[];
} blk;

static _Atomic(blk *) shared[SHARED];
static size_t ops;
static uint64_t sums[T];

static blk *make(rng *r) {
    uint64_t c = rnd(r) % 1000;
    size_t n = c < 800 ? 8 + rnd(r) % 248 : c < 995 ? 256 + rnd(r) % 32512 : 65536 + rnd(r) % (4u << 20);
    blk *b = xmalloc(sizeof *b + n);
    b->len = n;
    b->tag = rnd(r);
    if (n > 65536)
        fill_pages(b->data, n, b->tag);
    else
        fill(b->data, n, b->tag);
    return b;
}

static uint64_t drop(blk *b) {
    if (!b)
        return 0;
    uint64_t s = b->len > 65536 ? verify_pages(b->data, b->len, b->tag) : verify(b->data, b->len, b->tag);
    free(b);
    return s;
}

static void *worker(void *arg) {
    size_t id = (size_t)(uintptr_t)arg;
    rng r = rng_seed(70 + id);
    blk *local[LOCAL] = {0};
    uint64_t sum = 0;
    for (size_t k = 0; k < ops; k++) {
        uint64_t c = rnd(&r);
        if (c % 4 == 0) { /* trade with the shared table */
            blk *b = atomic_exchange(&shared[(c >> 8) % SHARED], make(&r));
            sum += drop(b);
        } else {
            size_t i = (c >> 8) % LOCAL;
            sum += drop(local[i]);
            local[i] = (c >> 32) % 3 ? make(&r) : NULL;
        }
    }
    for (size_t i = 0; i < LOCAL; i++)
        sum += drop(local[i]);
    sums[id] = sum;
    return NULL;
}

int main(int argc, char **argv) {
    suite_args(argc, argv);
    ops = scaled(400000);
    run_threads(T, worker);
    uint64_t check = 0;
    for (size_t i = 0; i < SHARED; i++)
        check += drop(atomic_exchange(&shared[i], NULL));
    for (size_t i = 0; i < T; i++)
        check += sums[i];
    suite_done("mstress", check);
    return 0;
}
