/*
 * The demo's test logic, shared by the QEMU kernel (main.c) and its hosted
 * fallback (hosted_main.c): the tutorial's init_heap and heap_test, the
 * frame allocator over "RAM", 2 MiB huge-page runs, the SMP stress, bad
 * input, and the statistics and maps that show it all. Freestanding: it
 * calls no libc function; what it needs from where it runs is below.
 */
#ifndef DEMO_H
#define DEMO_H

#include "kbuddy.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KERNEL_HEAP_SIZE 0x300000 /* 3 MiB, as the tutorial's config.rs */
#define MALLOC_SPACE_SIZE 0x200000 /* 2 MiB for the global allocator (kbm_*) */
#define DEMO_PAGE_SHIFT 12
#define DEMO_HUGE_FRAMES 512      /* a 2 MiB run of 4 KiB frames */
#define DEMO_MAX_CPUS 8
#ifndef DEMO_SMP_OPS
#define DEMO_SMP_OPS 40000        /* operations per CPU in the SMP stress */
#endif

extern kbuddy_heap kheap;         /* the kernel heap: HEAP_SPACE in .bss */
extern kbuddy_frames kframes;     /* the frames of free RAM */

/* ---- supplied by the platform ---- */
void *plat_frame_addr(size_t frame); /* where a frame's bytes can be touched */
uint64_t plat_time_us(void);
void plat_relax(void);               /* a spin-wait hint */
/* For the global allocator's per-CPU caches: this CPU's number (below
 * DEMO_MAX_CPUS), and masking this CPU's interrupts around each call. */
unsigned plat_cpu_id(void);
unsigned long plat_irq_save(void);
void plat_irq_restore(unsigned long state);

/* Names of the CPUs for the report ("hart 2", "thread 2"); set by the
 * platform before demo_smp_run. */
extern char demo_cpu_name[DEMO_MAX_CPUS][16];

/* ---- checks ---- */
void demo_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define EXPECT(cond)                                                                      \
    do {                                                                                  \
        if (!(cond))                                                                      \
            demo_fail(__FILE__, __LINE__, "%s", #cond);                                   \
    } while (0)
unsigned demo_failures(void);

/* ---- steps, in the order the demo runs them ---- */
void demo_init_heap(void *space, size_t size);               /* init_heap()  */
void demo_heap_test(uintptr_t bss_lo, uintptr_t bss_hi);      /* heap_test()  */
/* The global allocator (kbuddy_malloc.h): kbm_malloc and friends, per-CPU
 * caches in front of one more kbuddy heap, fed with `space`. */
void demo_init_malloc(void *space, size_t size);
/* Frames [base, base + nframes) may ever be managed; bookkeeping comes from
 * the heap. */
void demo_init_frames(size_t base, size_t nframes);
void demo_add_frames(size_t first, size_t count, const char *what);

struct demo_snapshot {
    kbuddy_stats heap;
    kbuddy_frame_stats frames;
    /* the global allocator: blocks held, blocks cached, and what its core
     * heap has allocated besides its own structures */
    size_t kbm_live, kbm_cached, kbm_allocated;
};
void demo_snapshot(struct demo_snapshot *s);
bool demo_same(const struct demo_snapshot *a, const struct demo_snapshot *b);
void demo_show(const char *title);        /* statistics, checks and maps */
void demo_show_frames(const char *title); /* the frames map alone */

/* Allocate every 2 MiB-aligned run of 512 frames there is, write and check
 * each through map() (NULL hooks: through plat_frame_addr), unmap and free
 * them. */
struct demo_huge_hooks {
    void *(*map)(size_t index, size_t first_frame); /* NULL on failure */
    void (*unmap)(size_t index, size_t first_frame);
    const char *through;                            /* how it is reached */
};
void demo_huge_runs(const struct demo_huge_hooks *hooks);

/* The SMP stress: call demo_smp_setup on CPU 0 first, then demo_smp_run on
 * every CPU 0 .. ncpu - 1 at once; CPU 0 reports. */
void demo_smp_setup(unsigned ncpu);
void demo_smp_run(unsigned cpu);

void demo_bad_input(void);

/* Final statistics, maps and verdict against the snapshot taken after
 * boot. Returns the exit status: 0 when every check passed. */
int demo_finish(const struct demo_snapshot *start);

#endif
