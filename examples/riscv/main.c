/*
 * The demo kernel: RISC-V 64, supervisor mode, on QEMU's virt machine
 * behind OpenSBI, in the manner of the rCore tutorial's chapter 4 kernel,
 * with kbuddy for all of its memory.
 *
 * kmain runs on the boot hart:
 *   1. clear .bss, read the device tree, start the other harts (SBI HSM),
 *      which wait in wfi;
 *   2. init_heap: HEAP_SPACE, a 3 MiB array in .bss, goes to the heap;
 *      heap_test; MALLOC_SPACE, 2 MiB in .bss, goes to the global allocator
 *      (kbm_malloc, per-CPU caches); then the RAM between the end of the kernel and the end of
 *      memory, less what the device tree reserves, goes to the frame
 *      allocator;
 *   3. an Sv39 page table from the frame allocator maps the kernel (its
 *      sections with their own permissions) and RAM above it one to one;
 *      paging goes on; every 2 MiB run of frames is taken, mapped with a
 *      2 MiB leaf, written, checked, unmapped and freed;
 *   4. the other harts switch to the same page table and every hart
 *      allocates and frees at once (demo.c);
 *   5. bad input; 6. paging off, the page table freed, final statistics,
 *   and QEMU stopped with the verdict.
 * Any trap is a bug: trap_panic reports it and stops QEMU with status 3.
 */
#include "demo.h"
#include "fdt.h"
#include "kernel.h"
#include "printf.h"
#include "sbi.h"
#include "vm.h"

#include <stdatomic.h>

#define HUGE_VA UINT64_C(0x2000000000) /* where the 2 MiB runs are mapped */
#define SIE_SSIE (1ul << 1)
#define SSTATUS_SIE (1ul << 1)
#define SIP_SSIP (1ul << 1)
#define FINISHER_PASS 0x5555u
#define FINISHER_FAIL 0x3333u
#define JOIN_CLOSED 0x80000000u

static _Alignas(4096) unsigned char HEAP_SPACE[KERNEL_HEAP_SIZE]; /* in .bss */
static _Alignas(4096) unsigned char MALLOC_SPACE[MALLOC_SPACE_SIZE]; /* in .bss */

static struct fdt_info fdt;
static uint64_t timebase = 10000000; /* QEMU virt's; the device tree says */
static uint64_t boot_time;
/* QEMU virt's test finisher, until the device tree says otherwise: a panic
 * before it is read must not end in an SBI shutdown, which Debian's
 * OpenSBI 1.1 turns into QEMU exit status 0. */
static volatile uint32_t *finisher = (volatile uint32_t *)0x100000;
static struct vm_space kvm;
static uint64_t kernel_satp;
static _Atomic unsigned int joined;   /* secondary CPUs registered | JOIN_CLOSED */
static _Atomic unsigned int named;    /* secondaries that wrote their name */
static _Atomic unsigned int smp_go;   /* set with kernel_satp ready */
static _Atomic unsigned int parked;   /* secondaries done, translation off */
static _Atomic unsigned int exiting;  /* 1 + the CPU slot that is exiting */

/* ------------------------------------------------------------------------ */
/* Platform hooks for printf.c and demo.c                                    */
/* ------------------------------------------------------------------------ */

void plat_write(const char *s, size_t n) { sbi_console_write(s, n); }

uint64_t plat_time_us(void) { return csr_read(time) * 1000000u / timebase; }

/* RAM above the kernel is mapped one to one, before and after paging. */
void *plat_frame_addr(size_t frame) { return (void *)(uintptr_t)((uint64_t)frame << PAGE_SHIFT); }

void plat_relax(void) { __asm__ __volatile__("nop"); }

/* The CPU slot (tp): below KERNEL_MAX_CPUS, which is DEMO_MAX_CPUS. */
unsigned plat_cpu_id(void) { return cpu_id(); }

/* sstatus.SIE off, its previous value returned. This kernel never turns
 * interrupts on, but a kernel whose handlers allocate needs exactly this. */
unsigned long plat_irq_save(void) {
    unsigned long old;
    __asm__ __volatile__("csrrc %0, sstatus, %1" : "=r"(old) : "r"(SSTATUS_SIE) : "memory");
    return old & SSTATUS_SIE;
}

void plat_irq_restore(unsigned long state) {
    if (state & SSTATUS_SIE)
        __asm__ __volatile__("csrs sstatus, %0" ::"r"(SSTATUS_SIE) : "memory");
}

/* ------------------------------------------------------------------------ */
/* The way out                                                               */
/* ------------------------------------------------------------------------ */

_Noreturn void kernel_exit(int status) {
    /* Translation off: the finisher is not mapped (the kernel still runs,
     * being identity-mapped). The first CPU to get here stops QEMU; any
     * other waits for it: an SBI reset from a second CPU could win the
     * race and, with Debian's OpenSBI 1.1, end QEMU with status 0. The
     * first CPU coming back (a trap while writing to the finisher) falls
     * back to SBI reset. */
    csr_write(satp, 0);
    vm_flush();
    unsigned me = cpu_id() + 1u, first = 0;
    if (atomic_compare_exchange_strong(&exiting, &first, me)) {
        if (finisher)
            *finisher = status == 0 ? FINISHER_PASS : (uint32_t)status << 16 | FINISHER_FAIL;
        sbi_shutdown(status != 0);
    } else if (first == me) {
        sbi_shutdown(status != 0);
    }
    for (;;)
        __asm__ __volatile__("wfi");
}

_Noreturn void panic(const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    kvsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kprintf_force("panic on cpu %u: %s\nkbuddy demo: FAILED (panic)\n", cpu_id(), msg);
    kernel_exit(2);
}

_Noreturn void trap_panic(unsigned long scause, unsigned long sepc, unsigned long stval,
                          unsigned long sp);
_Noreturn void trap_panic(unsigned long scause, unsigned long sepc, unsigned long stval,
                          unsigned long sp) {
    kprintf_force("trap on cpu %u: scause 0x%lx sepc 0x%lx stval 0x%lx sp 0x%lx\n"
                  "kbuddy demo: FAILED (trap)\n",
                  cpu_id(), scause, sepc, stval, sp);
    kernel_exit(3);
}

/* ------------------------------------------------------------------------ */
/* Boot                                                                      */
/* ------------------------------------------------------------------------ */

static void clear_bss(void) {
    for (uint64_t *p = (uint64_t *)sbss; p < (uint64_t *)ebss; p++)
        *p = 0;
}

static void read_device_tree(uintptr_t dtb) {
    const char *why;
    if (fdt_parse((const void *)dtb, &fdt, &why) != 0)
        panic("device tree at 0x%lx: %s", (unsigned long)dtb, why);
    if (fdt.nmem == 0)
        panic("device tree: no /memory node");
    if (fdt.timebase)
        timebase = fdt.timebase;
    finisher = (volatile uint32_t *)(uintptr_t)fdt.finisher;
    for (unsigned i = 0; i < fdt.nmem; i++)
        kprintf("[kernel] %s: 0x%lx..0x%lx (%lu MiB)\n", fdt.mem[i].name,
                (unsigned long)fdt.mem[i].base, (unsigned long)(fdt.mem[i].base + fdt.mem[i].size),
                (unsigned long)(fdt.mem[i].size >> 20));
    for (unsigned i = 0; i < fdt.nresv; i++)
        kprintf("[kernel] reserved %s: 0x%lx..0x%lx\n", fdt.resv[i].name,
                (unsigned long)fdt.resv[i].base,
                (unsigned long)(fdt.resv[i].base + fdt.resv[i].size));
    kprintf("[kernel] device tree: 0x%lx..0x%lx (kept, not given out)\n", (unsigned long)dtb,
            (unsigned long)(dtb + fdt.totalsize));
    kprintf("[kernel] %u harts, timebase %lu Hz, test finisher at 0x%lx\n", fdt.nharts,
            (unsigned long)timebase, (unsigned long)fdt.finisher);
    if (fdt.dropped)
        kprintf("[kernel] device tree: %u entries beyond this kernel's tables ignored\n",
                fdt.dropped);
}

static void show_layout(void) {
    kprintf("[kernel] .text 0x%lx..0x%lx  .rodata ..0x%lx  .data ..0x%lx\n",
            (unsigned long)stext, (unsigned long)etext, (unsigned long)erodata,
            (unsigned long)edata);
    kprintf("[kernel] stacks 0x%lx..0x%lx  .bss 0x%lx..0x%lx\n", (unsigned long)stacks,
            (unsigned long)stacks_end, (unsigned long)sbss, (unsigned long)ebss);
}

/* Start every other hart of the device tree; each registers in `joined`.
 * Returns the number of CPUs taking part, the boot hart included. */
static unsigned start_harts(unsigned long boot_hart) {
    unsigned expected = 0;
    for (unsigned i = 0; i < fdt.nharts; i++) {
        unsigned long h = (unsigned long)fdt.harts[i];
        if (h == boot_hart)
            continue;
        if (!sbi_has_hsm()) {
            kprintf("[kernel] hart %lu: no SBI HSM to start it\n", h);
            continue;
        }
        unsigned slot = atomic_fetch_add(&next_cpu, 1u);
        if (slot >= KERNEL_MAX_CPUS) {
            kprintf("[kernel] hart %lu: no CPU slot left (KERNEL_MAX_CPUS %d); stays off\n", h,
                    KERNEL_MAX_CPUS);
            continue;
        }
        long err = sbi_hart_start(h, (unsigned long)(uintptr_t)secondary_start, slot);
        if (err == 0 || err == SBI_ERR_ALREADY_AVAILABLE) /* already here: a lottery loser */
            expected++;
        else
            kprintf("[kernel] hart %lu: sbi_hart_start error %ld\n", h, err);
    }
    uint64_t deadline = csr_read(time) + timebase; /* one second */
    while ((atomic_load(&joined) & ~JOIN_CLOSED) < expected && csr_read(time) < deadline)
        plat_relax();
    unsigned n = atomic_fetch_or(&joined, JOIN_CLOSED) & ~JOIN_CLOSED;
    while (atomic_load(&named) < n)
        plat_relax();
    EXPECT(n == expected);
    kprintf("[kernel] %u of %u harts up, waiting in wfi:", n + 1, fdt.nharts);
    for (unsigned i = 0; i <= n; i++)
        kprintf(" %s", demo_cpu_name[i]);
    kputs("\n");
    return n + 1;
}

/* A secondary hart, entered from entry.S on its own stack. */
_Noreturn void secondary_main(unsigned long hartid, unsigned long slot);
_Noreturn void secondary_main(unsigned long hartid, unsigned long slot) {
    csr_write(stvec, (uintptr_t)trap_vector);
    (void)slot;
    unsigned v = atomic_load(&joined);
    do {
        if (v & JOIN_CLOSED) /* too late: the SMP test is sized already */
            for (;;)
                __asm__ __volatile__("wfi");
    } while (!atomic_compare_exchange_weak(&joined, &v, v + 1));
    unsigned cpu = v + 1;
    ksnprintf(demo_cpu_name[cpu], sizeof demo_cpu_name[cpu], "hart %lu", hartid);
    atomic_fetch_add(&named, 1u);

    /* Sleep until the boot hart has the page table ready; its IPI wakes
     * us (wfi returns on a pending enabled interrupt even with SIE off). */
    csr_write(sie, SIE_SSIE);
    while (!atomic_load(&smp_go))
        __asm__ __volatile__("wfi");
    __asm__ __volatile__("csrc sip, %0" ::"r"(SIP_SSIP));
    csr_write(sie, 0);
    csr_write(satp, kernel_satp);
    vm_flush();

    demo_smp_run(cpu);
#ifdef KERNEL_FAULT_trap /* make FAULT=trap: a page fault on a secondary hart */
    if (cpu == 1) {
        uintptr_t nowhere = 0x10; /* not mapped */
        __asm__ __volatile__("" : "+r"(nowhere)); /* hide the constant */
        (void)*(volatile int *)nowhere;
    }
#endif

    csr_write(satp, 0); /* the page table is about to be freed */
    vm_flush();
    atomic_fetch_add(&parked, 1u);
    for (;;)
        __asm__ __volatile__("wfi");
}

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

struct span {
    uint64_t lo, hi;
};
#define MAX_SPANS 32
static struct span spans[MAX_SPANS];
static unsigned nspans;

static uint64_t page_up(uint64_t x) { return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1); }
static uint64_t page_down(uint64_t x) { return x & ~(PAGE_SIZE - 1); }

static void span_add(uint64_t lo, uint64_t hi) {
    if (lo >= hi)
        return;
    if (nspans == MAX_SPANS)
        panic("free RAM in more than %d pieces", MAX_SPANS);
    spans[nspans++] = (struct span){lo, hi};
}

/* Take [lo, hi) out of every span. */
static void span_cut(uint64_t lo, uint64_t hi) {
    for (unsigned i = 0; i < nspans; i++) {
        struct span s = spans[i];
        if (hi <= s.lo || lo >= s.hi)
            continue;
        spans[i] = spans[--nspans];
        span_add(s.lo, lo < s.lo ? s.lo : lo);
        span_add(hi > s.hi ? s.hi : hi, s.hi);
        i = (unsigned)-1; /* start over: the list changed */
    }
}

/* The frames: RAM between the end of the kernel and the end of memory,
 * less the device tree's reservations and the device tree itself. */
static void init_frames(uintptr_t dtb) {
    uint64_t lo = UINT64_MAX, hi = 0, kend = page_up((uintptr_t)ekernel);
    for (unsigned i = 0; i < fdt.nmem; i++) {
        uint64_t b = fdt.mem[i].base, e = b + fdt.mem[i].size;
        lo = b < lo ? b : lo;
        hi = e > hi ? e : hi;
        span_add(page_up(b > kend ? b : kend), page_down(e));
    }
    for (unsigned i = 0; i < fdt.nresv; i++)
        span_cut(page_down(fdt.resv[i].base), page_up(fdt.resv[i].base + fdt.resv[i].size));
    span_cut(page_down(dtb), page_up(dtb + fdt.totalsize));
    demo_init_frames((size_t)(page_down(lo) >> PAGE_SHIFT),
                     (size_t)((page_up(hi) - page_down(lo)) >> PAGE_SHIFT));
    /* Add in address order, for a readable log. */
    for (unsigned i = 0; i < nspans; i++)
        for (unsigned j = i + 1; j < nspans; j++)
            if (spans[j].lo < spans[i].lo) {
                struct span t = spans[i];
                spans[i] = spans[j];
                spans[j] = t;
            }
    for (unsigned i = 0; i < nspans; i++)
        demo_add_frames((size_t)(spans[i].lo >> PAGE_SHIFT),
                        (size_t)((spans[i].hi - spans[i].lo) >> PAGE_SHIFT),
                        spans[i].lo == kend ? "RAM after the kernel" : "RAM after a reservation");
}

static void map_or_panic(uint64_t lo, uint64_t hi, unsigned perm, const char *what) {
    kbuddy_status st = vm_map(&kvm, lo, lo, hi - lo, perm);
    if (st != KBUDDY_OK)
        panic("mapping %s 0x%lx..0x%lx: %s", what, (unsigned long)lo, (unsigned long)hi,
              kbuddy_strerror(st));
}

/* rCore's new_kernel(): the kernel's sections with their own permissions,
 * then all RAM above the kernel read-write (the frames, the device tree). */
static void paging_on(void) {
    kbuddy_status st = vm_init(&kvm, &kframes);
    if (st != KBUDDY_OK)
        panic("no frame for the root page table: %s", kbuddy_strerror(st));
    map_or_panic((uintptr_t)stext, (uintptr_t)etext, PTE_R | PTE_X, ".text");
    map_or_panic((uintptr_t)srodata, (uintptr_t)erodata, PTE_R, ".rodata");
    map_or_panic((uintptr_t)sdata, (uintptr_t)ekernel, PTE_R | PTE_W, ".data/.bss");
    uint64_t kend = (uintptr_t)ekernel;
    for (unsigned i = 0; i < fdt.nmem; i++) {
        uint64_t b = fdt.mem[i].base, e = page_down(b + fdt.mem[i].size);
        b = page_up(b > kend ? b : kend);
        if (b < e)
            map_or_panic(b, e, PTE_R | PTE_W, "RAM");
    }
    uint64_t pa;
    EXPECT(vm_translate(&kvm, (uintptr_t)HEAP_SPACE, &pa) && pa == (uintptr_t)HEAP_SPACE);
    kernel_satp = vm_satp(&kvm);
    csr_write(satp, kernel_satp);
    vm_flush();
    kprintf("[vm] Sv39 on: satp 0x%lx; %zu table pages from the frame allocator,\n",
            (unsigned long)kernel_satp, kvm.tables);
    kprintf("[vm]   %zu 4 KiB + %zu 2 MiB leaves: the kernel by section, RAM above it;\n"
            "[vm]   still running\n",
            kvm.leaves_4k, kvm.leaves_2m);
}

static void *huge_map(size_t i, size_t first) {
    uint64_t va = HUGE_VA + i * MEGA_SIZE, pa = (uint64_t)first << PAGE_SHIFT, got = 0;
    size_t leaves = kvm.leaves_2m;
    kbuddy_status st = vm_map(&kvm, va, pa, MEGA_SIZE, PTE_R | PTE_W);
    EXPECT(st == KBUDDY_OK);
    if (st != KBUDDY_OK)
        return NULL;
    EXPECT(kvm.leaves_2m == leaves + 1);
    EXPECT(vm_translate(&kvm, va + 0x12345, &got) && got == pa + 0x12345);
    vm_flush();
    if (i == 0)
        kprintf("[vm] run 0 (frames 0x%zx..) at VA 0x%lx: one 2 MiB leaf, %zu tables now\n",
                first, (unsigned long)va, kvm.tables);
    return (void *)(uintptr_t)va;
}

static void huge_unmap(size_t i, size_t first) {
    (void)first;
    vm_unmap(&kvm, HUGE_VA + i * MEGA_SIZE, MEGA_SIZE);
    vm_flush();
}

static void paging_off(void) {
    while (atomic_load(&parked) < (atomic_load(&joined) & ~JOIN_CLOSED))
        plat_relax();
    csr_write(satp, 0);
    vm_flush();
    size_t tables = kvm.tables;
    vm_destroy(&kvm);
    EXPECT(kvm.tables == 0);
    kprintf("[vm] every hart back to bare addressing; %zu table pages freed\n", tables);
}

/* ------------------------------------------------------------------------ */
/* kmain                                                                     */
/* ------------------------------------------------------------------------ */

_Noreturn void kmain(unsigned long hartid, uintptr_t dtb);
_Noreturn void kmain(unsigned long hartid, uintptr_t dtb) {
    clear_bss();
    csr_write(stvec, (uintptr_t)trap_vector);
    boot_time = csr_read(time);
    atomic_store(&lottery_release, 1u);
    sbi_init();
    char line[120];
    sbi_describe(line, sizeof line);
    kprintf("\n[kernel] kbuddy demo kernel: RISC-V 64, S-mode, Sv39, boot hart %lu\n", hartid);
    kprintf("[kernel] %s\n", line);
    ksnprintf(demo_cpu_name[0], sizeof demo_cpu_name[0], "hart %lu", hartid);
    show_layout();
    read_device_tree(dtb);
    unsigned ncpu = start_harts(hartid);

    demo_init_heap(HEAP_SPACE, sizeof HEAP_SPACE);
    demo_heap_test((uintptr_t)sbss, (uintptr_t)ebss);
    demo_init_malloc(MALLOC_SPACE, sizeof MALLOC_SPACE);
    init_frames(dtb);
    struct demo_snapshot start;
    demo_snapshot(&start);
    demo_show("after boot");

    paging_on();
    static const struct demo_huge_hooks hooks = {huge_map, huge_unmap, "the 2 MiB leaves"};
    demo_huge_runs(&hooks);

    demo_smp_setup(ncpu);
    atomic_store(&smp_go, 1u);
    sbi_send_ipi_all();
    __asm__ __volatile__("csrc sip, %0" ::"r"(SIP_SSIP)); /* ours too: drop it */
    demo_smp_run(0);

    demo_bad_input();
#ifdef KERNEL_FAULT_check /* make FAULT=check: one failed check */
    EXPECT(!"a deliberate failure (FAULT=check)");
#endif
#ifdef KERNEL_FAULT_panic /* make FAULT=panic */
    panic("a deliberate panic (FAULT=panic)");
#endif
#ifdef KERNEL_FAULT_hang /* make FAULT=hang: for check's time limit */
    for (;;)
        __asm__ __volatile__("wfi");
#endif
    paging_off();
    kprintf("[kernel] %lu ms since kmain (rdtime)\n",
            (unsigned long)((csr_read(time) - boot_time) * 1000 / timebase));
    kernel_exit(demo_finish(&start));
}
