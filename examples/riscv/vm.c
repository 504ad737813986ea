/*
 * Sv39: three levels of 512 eight-byte entries; a virtual address is
 * VPN[2] | VPN[1] | VPN[0] | offset (9 + 9 + 9 + 12 bits, sign-extended from
 * bit 38). A PTE with R, W or X set is a leaf: at level 0 it maps 4 KiB, at
 * level 1 2 MiB, at level 2 1 GiB (unused here). A PTE with only V points
 * to the next table. A and D are set on every leaf, so the hardware never
 * needs to (it may not support updating them).
 */
#include "vm.h"

#define PTE_LEAF (PTE_R | PTE_W | PTE_X)
#define ENTRIES 512u

typedef uint64_t pte_t;

static pte_t *table(size_t frame) { return (pte_t *)(uintptr_t)((uint64_t)frame << PAGE_SHIFT); }

static size_t pte_frame(pte_t e) { return (size_t)(e >> 10); }

static pte_t pte_make(size_t frame, unsigned flags) { return (pte_t)frame << 10 | flags; }

static unsigned vpn(uint64_t va, unsigned level) {
    return (unsigned)(va >> (PAGE_SHIFT + 9 * level)) & (ENTRIES - 1);
}

static kbuddy_status new_table(struct vm_space *vm, size_t *frame) {
    kbuddy_status st = kbuddy_frames_alloc(vm->frames, 1, 1, frame);
    if (st != KBUDDY_OK)
        return st;
    pte_t *t = table(*frame);
    for (unsigned i = 0; i < ENTRIES; i++)
        t[i] = 0;
    vm->tables++;
    return KBUDDY_OK;
}

static void free_table(struct vm_space *vm, size_t frame) {
    (void)kbuddy_frames_free(vm->frames, frame, 1);
    vm->tables--;
}

kbuddy_status vm_init(struct vm_space *vm, kbuddy_frames *frames) {
    *vm = (struct vm_space){frames, 0, 0, 0, 0};
    return new_table(vm, &vm->root);
}

/* The entry for va at `level`, creating tables on the way down. NULL with
 * *st set when a table cannot be had or a leaf is in the way. */
static pte_t *slot(struct vm_space *vm, uint64_t va, unsigned level, kbuddy_status *st) {
    pte_t *t = table(vm->root);
    for (unsigned l = 2; l > level; l--) {
        pte_t *e = &t[vpn(va, l)];
        if (!(*e & PTE_V)) {
            size_t f;
            if ((*st = new_table(vm, &f)) != KBUDDY_OK)
                return NULL;
            *e = pte_make(f, PTE_V);
        } else if (*e & PTE_LEAF) {
            *st = KBUDDY_EOVERLAP;
            return NULL;
        }
        t = table(pte_frame(*e));
    }
    return &t[vpn(va, level)];
}

kbuddy_status vm_map(struct vm_space *vm, uint64_t va, uint64_t pa, uint64_t size, unsigned perm) {
    unsigned flags = (perm & PTE_LEAF) | PTE_V | PTE_A | ((perm & PTE_W) ? PTE_D : 0);
    if ((va | pa | size) & (PAGE_SIZE - 1) || !(perm & PTE_LEAF))
        return KBUDDY_EINVAL;
    while (size) {
        bool mega = ((va | pa) & (MEGA_SIZE - 1)) == 0 && size >= MEGA_SIZE;
        kbuddy_status st = KBUDDY_OK;
        pte_t *e = slot(vm, va, mega ? 1 : 0, &st);
        if (!e)
            return st;
        if (*e & PTE_V)
            return KBUDDY_EOVERLAP;
        *e = pte_make((size_t)(pa >> PAGE_SHIFT), flags);
        uint64_t step = mega ? MEGA_SIZE : PAGE_SIZE;
        if (mega)
            vm->leaves_2m++;
        else
            vm->leaves_4k++;
        va += step;
        pa += step;
        size -= step;
    }
    return KBUDDY_OK;
}

static bool table_empty(const pte_t *t) {
    for (unsigned i = 0; i < ENTRIES; i++)
        if (t[i])
            return false;
    return true;
}

void vm_unmap(struct vm_space *vm, uint64_t va, uint64_t size) {
    uint64_t end = va + size;
    while (va < end) {
        /* Descend, remembering the path so empty tables can be freed. */
        pte_t *path[3];
        pte_t *t = table(vm->root);
        unsigned level = 2;
        for (;;) {
            pte_t *e = &t[vpn(va, level)];
            path[level] = e;
            if (!(*e & PTE_V) || (*e & PTE_LEAF) || level == 0)
                break;
            t = table(pte_frame(*e));
            level--;
        }
        pte_t *e = path[level];
        uint64_t span = (uint64_t)1 << (PAGE_SHIFT + 9 * level);
        if (*e & PTE_V) {
            *e = 0;
            if (level == 1)
                vm->leaves_2m--;
            else if (level == 0)
                vm->leaves_4k--;
            /* Free the tables this made empty, bottom up (never the root). */
            for (unsigned l = level; l < 2; l++) {
                pte_t *parent = path[l + 1];
                pte_t *child = table(pte_frame(*parent));
                if (!table_empty(child))
                    break;
                free_table(vm, pte_frame(*parent));
                *parent = 0;
            }
        }
        va = (va & ~(span - 1)) + span; /* next leaf or hole at this level */
    }
}

bool vm_translate(const struct vm_space *vm, uint64_t va, uint64_t *pa) {
    pte_t *t = table(vm->root);
    for (unsigned level = 3; level-- > 0;) {
        pte_t e = t[vpn(va, level)];
        if (!(e & PTE_V))
            return false;
        if (e & PTE_LEAF) {
            uint64_t span = (uint64_t)1 << (PAGE_SHIFT + 9 * level);
            *pa = ((uint64_t)pte_frame(e) << PAGE_SHIFT) + (va & (span - 1));
            return true;
        }
        t = table(pte_frame(e));
    }
    return false;
}

uint64_t vm_satp(const struct vm_space *vm) { return (uint64_t)8 << 60 | vm->root; }

static void destroy_level(struct vm_space *vm, size_t frame, unsigned level) {
    pte_t *t = table(frame);
    for (unsigned i = 0; level > 0 && i < ENTRIES; i++)
        if ((t[i] & PTE_V) && !(t[i] & PTE_LEAF))
            destroy_level(vm, pte_frame(t[i]), level - 1);
    free_table(vm, frame);
}

void vm_destroy(struct vm_space *vm) {
    destroy_level(vm, vm->root, 2);
    vm->root = 0;
    vm->leaves_4k = vm->leaves_2m = 0;
}
