/*
 * cache-thrash: active false sharing. Each thread, many times, allocates
 * a small object itself, writes it over and over, and frees it. An
 * allocator that places different threads' small objects in one cache
 * line makes the threads fight over it.
 */
#include "suite.h"

#define T 4
#define OBJ 8

static size_t rounds, writes;
static uint64_t sums[T];

static void *worker(void *arg) {
    size_t id = (size_t)(uintptr_t)arg;
    sums[id] = scribble_objects(id, rounds, writes, OBJ);
    return NULL;
}

int main(int argc, char **argv) {
    suite_args(argc, argv);
    rounds = scaled(5000);
    writes = 100000;
    run_threads(T, worker);
    uint64_t check = 0;
    for (size_t i = 0; i < T; i++)
        check += sums[i];
    suite_done("cache-thrash", check);
    return 0;
}
