/*
 * What the kernel's files share: limits, the linker script's symbols, CSR
 * access, and the way out (kernel_exit, panic). Also read by entry.S.
 */
#ifndef KERNEL_H
#define KERNEL_H

#define KERNEL_MAX_CPUS 8       /* CPU slots: stacks and per-CPU test state */
#define KERNEL_STACK_SHIFT 14
#define KERNEL_STACK_SIZE (1 << KERNEL_STACK_SHIFT)

#ifndef __ASSEMBLER__
#include <stdint.h>

/* From kernel.ld: each section's bounds, all page aligned. */
extern char skernel[], stext[], etext[], srodata[], erodata[], sdata[], edata[];
extern char sbss[], ebss[], ekernel[], stacks[], stacks_end[];

/* From entry.S. */
void secondary_start(void);
void trap_vector(void);
extern _Atomic unsigned int next_cpu;        /* next free CPU slot */
extern _Atomic unsigned int lottery_release; /* boot hart: .bss is clear */

#define csr_read(csr)                                              \
    ({                                                             \
        unsigned long v_;                                          \
        __asm__ __volatile__("csrr %0, " #csr : "=r"(v_));         \
        v_;                                                        \
    })
#define csr_write(csr, v) __asm__ __volatile__("csrw " #csr ", %0" ::"rK"(v) : "memory")

static inline unsigned cpu_id(void) {
    unsigned long tp;
    __asm__("mv %0, tp" : "=r"(tp));
    return (unsigned)tp;
}

/* Stop QEMU: status 0 on success, non-zero on failure. */
_Noreturn void kernel_exit(int status);
_Noreturn void panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif

#endif
