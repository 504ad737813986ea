/*
 * espresso-like: one thread, mixed sizes (mostly under 1 KiB, some to
 * 16 KiB), moderate lifetimes: a working set of 4,000 slots where each
 * step frees or allocates at a random slot, and some blocks grow by
 * realloc. Every block is filled when made and verified when freed.
 */
#include "suite.h"

#define SLOTS 4000

static unsigned char *blk[SLOTS];
static size_t len[SLOTS];
static uint64_t tag[SLOTS];

static size_t pick_size(rng *r) {
    uint64_t c = rnd(r) % 100;
    if (c < 70)
        return 8 + rnd(r) % 120;
    if (c < 95)
        return 128 + rnd(r) % 896;
    return 1024 + rnd(r) % 15360;
}

int main(int argc, char **argv) {
    suite_args(argc, argv);
    rng r = rng_seed(2);
    uint64_t check = 0, next = 1;
    size_t ops = scaled(15000000);
    for (size_t k = 0; k < ops; k++) {
        size_t i = rnd(&r) % SLOTS;
        if (blk[i] && rnd(&r) % 8 == 0) { /* grow it: realloc keeps the prefix */
            size_t n = len[i] + 1 + rnd(&r) % 512;
            check += verify(blk[i], len[i], tag[i]);
            unsigned char *p = realloc(blk[i], n);
            if (!p)
                suite_fail("realloc returned NULL");
            check += verify(p, len[i], tag[i]);
            for (size_t j = len[i]; j < n; j++)
                p[j] = pat(tag[i], j);
            blk[i] = p;
            len[i] = n;
        } else if (blk[i]) {
            check += verify(blk[i], len[i], tag[i]);
            free(blk[i]);
            blk[i] = NULL;
        } else {
            len[i] = pick_size(&r);
            tag[i] = next++;
            blk[i] = xmalloc(len[i]);
            fill(blk[i], len[i], tag[i]);
        }
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (blk[i]) {
            check += verify(blk[i], len[i], tag[i]);
            free(blk[i]);
        }
    suite_done("espresso", check);
    return 0;
}
