/*
 * Shared by the in-process tests of the hosted build: the hosted hooks with
 * a bad_free hook that records what it is told instead of printing, and
 * helpers that read the statistics.
 */
#ifndef KBM_SETUP_H
#define KBM_SETUP_H

#include "kbtest.h"
#include "kbuddy_hosted.h"
#include "kbuddy_malloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

static _Atomic size_t kbm_bad_count;
static _Atomic(void *) kbm_bad_ptr;
static _Atomic int kbm_bad_status;
static const char *_Atomic kbm_bad_func;

static inline void kbm_record_bad_free(void *ptr, kbuddy_status st, const char *func) {
    atomic_store(&kbm_bad_ptr, ptr);
    atomic_store(&kbm_bad_status, (int)st);
    atomic_store(&kbm_bad_func, func);
    atomic_fetch_add(&kbm_bad_count, 1);
}

static pthread_once_t kbm_once = PTHREAD_ONCE_INIT;
static inline void kbm_init_once(void) {
    kbuddy_malloc_hooks h;
    kbuddy_hosted_hooks(&h);
    h.bad_free = kbm_record_bad_free;
    kbuddy_hosted_init(&h);
}

/* Install the hooks (once) and forget earlier reports. */
static inline void kbm_setup(void) {
    pthread_once(&kbm_once, kbm_init_once);
    atomic_store(&kbm_bad_count, 0);
    atomic_store(&kbm_bad_ptr, NULL);
    atomic_store(&kbm_bad_status, KBUDDY_OK);
    atomic_store(&kbm_bad_func, NULL);
}

/* x, hidden from the compiler: requests that are impossible on purpose
 * must not be refused at compile time (-Walloc-size-larger-than). */
static inline size_t opaque(size_t x) {
    volatile size_t v = x;
    return v;
}

static inline kbuddy_malloc_stats kbm_stats(void) {
    kbuddy_malloc_stats st;
    kbuddy_malloc_get_stats(&st);
    return st;
}

/* The statistics add up (exact while no other thread allocates). */
#define CHECK_STATS_ADD_UP()                                                                \
    do {                                                                                    \
        kbuddy_malloc_stats s_ = kbm_stats();                                               \
        CHECK_EQ(s_.heap.allocations + s_.mapped_blocks + s_.slab_objects,                  \
                 s_.live_blocks + s_.cached_blocks + s_.internal_blocks);                   \
        CHECK_EQ(s_.heap.allocated + s_.mapped_bytes,                                       \
                 s_.live_bytes + s_.cached_bytes + s_.internal_bytes);                      \
        CHECK_EQ(s_.region_bytes, s_.heap.total + s_.heap.overhead + s_.tag_bytes);         \
        CHECK_MALLOC_OK();                                                                  \
    } while (0)

/* kbuddy_malloc_check is OK; if not, the failure says what it found wrong
 * first and where (kbuddy_malloc_check_why). */
#define CHECK_MALLOC_OK()                                                                   \
    do {                                                                                    \
        kbuddy_status c_ = kbuddy_malloc_check();                                           \
        if (c_ != KBUDDY_OK) {                                                              \
            const void *w_ = NULL;                                                          \
            const char *y_ = kbuddy_malloc_check_why(&w_);                                  \
            KBTEST_FAIL("kbuddy_malloc_check() returned %s, wanted success: %s at %p",      \
                        kbuddy_strerror(c_), y_ ? y_ : "(no reason kept)", w_);             \
        }                                                                                   \
    } while (0)

/* One report, with this status, from this function, about this pointer. */
#define CHECK_REPORTED(ptr, status, func)                                          \
    do {                                                                           \
        CHECK_EQ(atomic_load(&kbm_bad_count), 1);                                  \
        CHECK(atomic_load(&kbm_bad_ptr) == (void *)(ptr));                         \
        CHECK_STATUS((kbuddy_status)atomic_load(&kbm_bad_status), status);         \
        const char *f_ = atomic_load(&kbm_bad_func);                               \
        CHECK(f_ && strcmp(f_, func) == 0);                                        \
        atomic_store(&kbm_bad_count, 0);                                           \
    } while (0)

#endif
