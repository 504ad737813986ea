/*
 * cache-scratch: passive false sharing. The main thread allocates one
 * small object per thread, all at once (so they may share a cache line),
 * and hands them out; each thread frees its object and then, many times,
 * allocates a small object, writes it over and over, and frees it. An
 * allocator that gives the freed neighbours back to different threads
 * makes the threads fight over one cache line.
 */
#include "suite.h"

#define T 4
#define OBJ 8

static unsigned char *handed[T];
static size_t rounds, writes;
static uint64_t sums[T];

static void *worker(void *arg) {
    size_t id = (size_t)(uintptr_t)arg;
    free(handed[id]);
    sums[id] = scribble_objects(id, rounds, writes, OBJ);
    return NULL;
}

int main(int argc, char **argv) {
    suite_args(argc, argv);
    rounds = scaled(5000);
    writes = 100000;
    for (size_t i = 0; i < T; i++)
        handed[i] = xmalloc(OBJ);
    run_threads(T, worker);
    uint64_t check = 0;
    for (size_t i = 0; i < T; i++)
        check += sums[i];
    suite_done("cache-scratch", check);
    return 0;
}
