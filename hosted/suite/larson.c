/*
 * larson-like: server-style churn across threads. Each of T threads works
 * for a while on an array of slots, replacing a random slot's block with
 * a new one of random size; then the arrays move on to other threads (the
 * next round's thread j takes array (j + round) % T), so most blocks are
 * freed by a thread other than the one that allocated them. Each block
 * holds its size and tag in its first bytes and is verified when freed.
 */
#include "suite.h"

#define T 4
#define SLOTS 2000

typedef struct {
    unsigned char *blk[SLOTS];
    size_t len[SLOTS];
    uint64_t tag[SLOTS];
} slots;

static slots arr[T];
static size_t round_no, ops_per_round;
static uint64_t sums[T];

static void *worker(void *arg) {
    size_t j = (size_t)(uintptr_t)arg;
    slots *a = &arr[(j + round_no) % T];
    rng r = rng_seed(1000 * round_no + j + 4);
    uint64_t sum = 0;
    for (size_t k = 0; k < ops_per_round; k++) {
        size_t i = rnd(&r) % SLOTS;
        if (a->blk[i]) {
            sum += verify(a->blk[i], a->len[i], a->tag[i]);
            free(a->blk[i]);
        }
        a->len[i] = 16 + rnd(&r) % 1008;
        a->tag[i] = rnd(&r);
        a->blk[i] = xmalloc(a->len[i]);
        fill(a->blk[i], a->len[i], a->tag[i]);
    }
    sums[j] += sum;
    return NULL;
}

int main(int argc, char **argv) {
    suite_args(argc, argv);
    size_t rounds = scaled(200);
    ops_per_round = 20000;
    for (round_no = 0; round_no < rounds; round_no++)
        run_threads(T, worker);
    uint64_t check = 0;
    for (size_t a = 0; a < T; a++)
        for (size_t i = 0; i < SLOTS; i++)
            if (arr[a].blk[i]) {
                check += verify(arr[a].blk[i], arr[a].len[i], arr[a].tag[i]);
                free(arr[a].blk[i]);
            }
    for (size_t j = 0; j < T; j++)
        check += sums[j];
    suite_done("larson", check);
    return 0;
}
