/*
 * malloc-large: blocks of 2 to 32 MiB. A working set of 8 slots; each
 * step frees the block at a random slot and allocates another of random
 * size, writing one byte in each of its pages (every page costs memory,
 * as a real user of the buffer would), verified before it is freed.
 */
#include "suite.h"

#define SLOTS 8

int main(int argc, char **argv) {
    suite_args(argc, argv);
    rng r = rng_seed(11);
    unsigned char *blk[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    uint64_t tag[SLOTS] = {0}, check = 0;
    size_t steps = scaled(1000);
    for (size_t k = 0; k < steps; k++) {
        size_t i = rnd(&r) % SLOTS;
        if (blk[i]) {
            check += verify_pages(blk[i], len[i], tag[i]);
            free(blk[i]);
        }
        len[i] = ((size_t)2 << 20) + rnd(&r) % ((size_t)30 << 20);
        tag[i] = rnd(&r);
        blk[i] = xmalloc(len[i]);
        fill_pages(blk[i], len[i], tag[i]);
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (blk[i]) {
            check += verify_pages(blk[i], len[i], tag[i]);
            free(blk[i]);
        }
    suite_done("malloc-large", check);
    return 0;
}
