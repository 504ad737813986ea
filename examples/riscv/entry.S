/*
 * Where every hart enters the kernel, and the trap vector.
 *
 * OpenSBI (fw_dynamic) jumps to _start on one hart, the boot hart, with
 * a0 = its hart id and a1 = the device tree; the boot hart starts the others
 * with SBI HSM hart_start at secondary_start, passing each a CPU slot in a1
 * (the "opaque" argument). Firmware that sends every hart to _start at once
 * is handled too: the harts draw lots (boot_lottery), the winner boots, the
 * others wait for lottery_release and take a slot from next_cpu.
 *
 * CPU slot n (0 = boot hart) runs on the stack
 *   [stacks + n * KERNEL_STACK_SIZE, stacks + (n + 1) * KERNEL_STACK_SIZE)
 * and keeps n in tp for the rest of its life. The stacks are in .bss.stack,
 * outside [sbss, ebss), so clearing .bss does not pull the boot hart's stack
 * from under it.
 */
#include "kernel.h"

    .section .text.entry
    .globl _start
_start:
    la      t0, boot_lottery
    li      t1, 1
    amoswap.w.aqrl t1, t1, (t0)
    bnez    t1, lottery_lost

    li      tp, 0
    la      sp, stacks + KERNEL_STACK_SIZE
    call    kmain                   /* a0 = hart id, a1 = device tree */
    j       park

lottery_lost:
    la      t0, lottery_release
1:  lw      t1, 0(t0)
    beqz    t1, 1b
    fence   r, rw
    la      t0, next_cpu
    li      t1, 1
    amoadd.w.aqrl a1, t1, (t0)      /* a1 = this hart's CPU slot */
    j       secondary_start

    /* SBI HSM entry: a0 = hart id, a1 = CPU slot, satp = 0, SIE = 0. */
    .globl secondary_start
secondary_start:
    li      t0, KERNEL_MAX_CPUS
    bgeu    a1, t0, park            /* no stack for it: leave it parked */
    mv      tp, a1
    addi    t0, a1, 1
    slli    t0, t0, KERNEL_STACK_SHIFT
    la      sp, stacks
    add     sp, sp, t0
    call    secondary_main          /* a0 = hart id, a1 = CPU slot */

    .globl park
park:
    csrw    sie, zero
1:  wfi
    j       1b

/*
 * Any trap is a bug in this kernel (it enables no interrupts and makes no
 * faults on purpose): report it and stop QEMU with a failure status.
 */
    .align  2
    .globl trap_vector
trap_vector:
    csrr    a0, scause
    csrr    a1, sepc
    csrr    a2, stval
    mv      a3, sp
    j       trap_panic

    .section .data
    .align  2
boot_lottery:
    .word   0
    .globl lottery_release
lottery_release:
    .word   0
    .globl next_cpu
next_cpu:
    .word   1                       /* slot 0 is the boot hart's */

    .section .bss.stack, "aw", @nobits
    .align  12
    .globl stacks
stacks:
    .space  KERNEL_STACK_SIZE * KERNEL_MAX_CPUS
    .globl stacks_end
stacks_end:
