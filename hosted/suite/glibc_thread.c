/*
 * glibc-thread-like (glibc's bench-malloc-thread): T threads (1, 2 and 4
 * in turn), each with its own working set of 1,000 slots, replacing a
 * random slot's block with one of random size (up to 4 KiB, small ones
 * more likely) in a tight loop. Blocks are verified when freed.
 */
#include "suite.h"

#define SLOTS 1000

static size_t ops;
static uint64_t sums[4];

static void *worker(void *arg) {
    size_t id = (size_t)(uintptr_t)arg;
    rng r = rng_seed(30 + id);
    unsigned char *blk[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    uint64_t sum = 0;
    for (size_t k = 0; k < ops; k++) {
        size_t i = rnd(&r) % SLOTS;
        if (blk[i]) {
            if (blk[i][0] != (unsigned char)len[i] || blk[i][len[i] - 1] != (unsigned char)i)
                suite_fail("block contents");
            sum += len[i];
            free(blk[i]);
        }
        len[i] = 4 + rnd(&r) % ((size_t)64 << (rnd(&r) % 7));
        blk[i] = xmalloc(len[i]);
        blk[i][0] = (unsigned char)len[i];
        blk[i][len[i] - 1] = (unsigned char)i;
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (blk[i]) {
            sum += len[i];
            free(blk[i]);
        }
    sums[id] += sum;
    return NULL;
}

int main(int argc, char **argv) {
    suite_args(argc, argv);
    ops = scaled(4000000);
    for (size_t t = 1; t <= 4; t *= 2)
        run_threads(t, worker);
    uint64_t check = 0;
    for (size_t i = 0; i < 4; i++)
        check += sums[i];
    suite_done("glibc-thread", check);
    return 0;
}
