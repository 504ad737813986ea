/*
 * Sv39 page tables whose table pages come from the kbuddy frame allocator.
 * Table pages are reached at their physical address, so every frame the
 * allocator can hand out must be identity-mapped (the kernel maps all of
 * RAM above itself; see main.c) before paging is switched on.
 */
#ifndef VM_H
#define VM_H

#include "kbuddy.h"

#include <stdbool.h>
#include <stdint.h>

#define PAGE_SHIFT 12
#define PAGE_SIZE ((uint64_t)1 << PAGE_SHIFT)
#define MEGA_SIZE ((uint64_t)1 << 21) /* a level-1 leaf: 2 MiB */

#define PTE_V (1u << 0)
#define PTE_R (1u << 1)
#define PTE_W (1u << 2)
#define PTE_X (1u << 3)
#define PTE_G (1u << 5)
#define PTE_A (1u << 6)
#define PTE_D (1u << 7)

struct vm_space {
    kbuddy_frames *frames; /* where table pages come from and go back to */
    size_t root;           /* frame number of the root table              */
    size_t tables;         /* table pages in use, the root included       */
    size_t leaves_4k, leaves_2m;
};

/* Allocate an empty root table. KBUDDY_OK or the frame allocator's error. */
kbuddy_status vm_init(struct vm_space *vm, kbuddy_frames *frames);

/* Map [va, va + size) to [pa, pa + size) with the permissions perm (PTE_R,
 * PTE_W, PTE_X; A, D and V are added). All three page aligned. 2 MiB leaves
 * are used wherever va and pa are 2 MiB aligned and the rest of the range
 * holds 2 MiB. Fails with KBUDDY_EOVERLAP if a page is already mapped, or
 * with KBUDDY_ENOMEM if a table page cannot be had (what was mapped stays). */
kbuddy_status vm_map(struct vm_space *vm, uint64_t va, uint64_t pa, uint64_t size, unsigned perm);

/* Remove the leaves covering [va, va + size) (whole leaves: a range must
 * not cut a 2 MiB leaf) and free the table pages left empty. The caller
 * runs sfence.vma. */
void vm_unmap(struct vm_space *vm, uint64_t va, uint64_t size);

/* Walk the tables in software: the physical address va maps to. */
bool vm_translate(const struct vm_space *vm, uint64_t va, uint64_t *pa);

/* The satp value that selects this space (Sv39, ASID 0). */
uint64_t vm_satp(const struct vm_space *vm);

/* Free every table page. The space must not be in use by any hart. */
void vm_destroy(struct vm_space *vm);

/* Flush this hart's TLB. */
static inline void vm_flush(void) { __asm__ __volatile__("sfence.vma zero, zero" ::: "memory"); }

#endif
