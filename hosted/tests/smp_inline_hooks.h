/*
 * Compile-time hooks (KBUDDY_MALLOC_HOOKS_H) for the malloc_smp_inline_hooks
 * test: the same per-thread CPU number and interrupt-mask depth as the
 * function-pointer hooks of test_malloc_smp.c, reached through the macros
 * a kernel would define, so that the same checks (cpu_id only while
 * masked, every mask restored exactly once) cover the inlined paths.
 */
#ifndef SMP_INLINE_HOOKS_H
#define SMP_INLINE_HOOKS_H

unsigned kbm_test_cpu_id(void);
unsigned long kbm_test_irq_save(void);
void kbm_test_irq_restore(unsigned long state);

#define KBUDDY_MALLOC_CPU_ID() kbm_test_cpu_id()
#define KBUDDY_MALLOC_IRQ_SAVE() kbm_test_irq_save()
#define KBUDDY_MALLOC_IRQ_RESTORE(s) kbm_test_irq_restore(s)

#endif
