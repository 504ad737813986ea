/*
 * The shipped spinlock: test-and-test-and-set on a C11 atomic word, for
 * kernels that have no lock of their own to hand kbuddy. Waiting spins on
 * a relaxed load, so contended CPUs do not bounce the cache line with
 * writes; taking and releasing use acquire/release ordering, which is all
 * the allocator needs to publish its bookkeeping between CPUs.
 */
#include "kbuddy_internal.h"

#include <stdatomic.h>

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

bool kbuddy_spinlock_try_acquire(void *ctx) {
    kbuddy_spinlock *sl = ctx;
    return atomic_load_explicit(&sl->word, memory_order_relaxed) == 0 &&
           atomic_exchange_explicit(&sl->word, 1u, memory_order_acquire) == 0;
}

void kbuddy_spinlock_acquire(void *ctx) {
    kbuddy_spinlock *sl = ctx;
    while (atomic_exchange_explicit(&sl->word, 1u, memory_order_acquire) != 0)
        while (atomic_load_explicit(&sl->word, memory_order_relaxed) != 0)
            cpu_relax();
}

void kbuddy_spinlock_release(void *ctx) {
    kbuddy_spinlock *sl = ctx;
    atomic_store_explicit(&sl->word, 0u, memory_order_release);
}
