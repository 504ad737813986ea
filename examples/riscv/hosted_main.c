/*
 * The hosted fallback: the kernel's tests (demo.c) as a host program, for
 * machines without the RISC-V cross compiler or QEMU. What differs from
 * the kernel, and only that:
 *   - "RAM" is a malloc'd block; its frames get fake numbers from 0x80000
 *     on, as on QEMU's virt machine (RAM at 0x80000000); the first 2 MiB
 *     play OpenSBI's part, the next 3.25 MiB the kernel's, the last 1 MiB
 *     the device tree's: none of them are handed to the frame allocator;
 *   - there is no page table: 2 MiB runs are written at their own address;
 *   - threads stand in for harts.
 */
#define _POSIX_C_SOURCE 200809L
#include "demo.h"
#include "printf.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define RAM_SIZE (64u << 20)
#define FAKE_BASE 0x80000u   /* frame number of the first byte of "RAM" */
#define FW_FRAMES 0x200u     /* 2 MiB of "firmware"                      */
#define KERNEL_FRAMES 0x340u /* 3.25 MiB of "kernel image"               */
#define DTB_FRAMES 0x100u    /* 1 MiB of "device tree" at the top        */

static _Alignas(4096) unsigned char HEAP_SPACE[KERNEL_HEAP_SIZE]; /* in .bss */
static _Alignas(4096) unsigned char MALLOC_SPACE[MALLOC_SPACE_SIZE]; /* in .bss */
static _Thread_local unsigned this_cpu; /* the "CPU" a thread stands in for */
static unsigned char *ram;

/* GNU linkers define these around .bss; elsewhere HEAP_SPACE stands in. */
extern char __bss_start[] __attribute__((weak));
extern char _end[] __attribute__((weak));

void plat_write(const char *s, size_t n) {
    while (n) {
        ssize_t k = write(1, s, n);
        if (k <= 0)
            return;
        s += k;
        n -= (size_t)k;
    }
}

void *plat_frame_addr(size_t frame) { return ram + ((frame - FAKE_BASE) << DEMO_PAGE_SHIFT); }

uint64_t plat_time_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void plat_relax(void) { sched_yield(); } /* threads may outnumber cores */

unsigned plat_cpu_id(void) { return this_cpu; }
unsigned long plat_irq_save(void) { return 0; } /* no interrupts here */
void plat_irq_restore(unsigned long state) { (void)state; }

static void *thread_main(void *arg) {
    this_cpu = (unsigned)(uintptr_t)arg;
    demo_smp_run(this_cpu);
    return NULL;
}

int main(int argc, char **argv) {
    unsigned ncpu = argc > 1 ? (unsigned)atoi(argv[1]) : 4;
    if (ncpu < 1 || ncpu > DEMO_MAX_CPUS)
        ncpu = 4;
    uint64_t t0 = plat_time_us();
    kprintf("\n[hosted] kbuddy demo, hosted fallback: the kernel's tests as a host\n"
            "[hosted] program (threads for harts, malloc'd RAM with fake frame\n"
            "[hosted] numbers, no page table)\n");

    demo_init_heap(HEAP_SPACE, sizeof HEAP_SPACE);
    uintptr_t lo = (uintptr_t)HEAP_SPACE, hi = lo + sizeof HEAP_SPACE;
    if (__bss_start && _end && (uintptr_t)__bss_start <= lo && hi <= (uintptr_t)_end) {
        lo = (uintptr_t)__bss_start;
        hi = (uintptr_t)_end;
    }
    demo_heap_test(lo, hi);
    demo_init_malloc(MALLOC_SPACE, sizeof MALLOC_SPACE);

    ram = aligned_alloc(2u << 20, RAM_SIZE);
    if (!ram) {
        kprintf("[hosted] no memory for the fake RAM\n");
        return 1;
    }
    size_t nframes = RAM_SIZE >> DEMO_PAGE_SHIFT;
    demo_init_frames(FAKE_BASE, nframes);
    demo_add_frames(FAKE_BASE + FW_FRAMES + KERNEL_FRAMES,
                    nframes - FW_FRAMES - KERNEL_FRAMES - DTB_FRAMES, "RAM after the kernel");
    struct demo_snapshot start;
    demo_snapshot(&start);
    demo_show("after boot");

    kprintf("[vm] no page table in the hosted build: runs are used in place\n");
    demo_huge_runs(NULL);

    pthread_t threads[DEMO_MAX_CPUS];
    for (unsigned i = 0; i < ncpu; i++)
        snprintf(demo_cpu_name[i], sizeof demo_cpu_name[i], "thread %u", i);
    demo_smp_setup(ncpu);
    unsigned started = 1;
    for (; started < ncpu; started++)
        if (pthread_create(&threads[started], NULL, thread_main, (void *)(uintptr_t)started)) {
            kprintf("[hosted] pthread_create failed\n");
            return 1;
        }
    demo_smp_run(0);
    for (unsigned i = 1; i < started; i++)
        pthread_join(threads[i], NULL);

    demo_bad_input();
    kprintf("[hosted] %lu ms\n", (unsigned long)((plat_time_us() - t0) / 1000));
    int status = demo_finish(&start);
    free(ram);
    return status;
}
