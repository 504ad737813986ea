/*
 * Compile-time hooks for the global allocator (KBUDDY_MALLOC_HOOKS_H), as a
 * kernel would write them, for kbuddy_bench_hooks: the CPU number and the
 * interrupt-enable flag are variables here (a kernel reads its thread
 * pointer and clears/sets sstatus.SIE or does pushf/cli/popf), so the cost
 * measured is the layer's own plus a load and a store or two.
 */
#ifndef KBM_BENCH_HOOKS_H
#define KBM_BENCH_HOOKS_H

extern unsigned kbm_bench_cpu;
extern unsigned long kbm_bench_irq;

static inline unsigned long kbm_bench_irq_save(void) {
    unsigned long s = kbm_bench_irq;
    kbm_bench_irq = 0;
    return s;
}

#define KBUDDY_MALLOC_CPU_ID() (kbm_bench_cpu)
#define KBUDDY_MALLOC_IRQ_SAVE() kbm_bench_irq_save()
#define KBUDDY_MALLOC_IRQ_RESTORE(s) (kbm_bench_irq = (s))

#endif
