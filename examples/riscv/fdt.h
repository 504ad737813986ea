/*
 * What the kernel needs from the flattened device tree OpenSBI passes in
 * a1: the RAM, the memory it must not touch, the harts, the timer
 * frequency, and where QEMU's test finisher is.
 */
#ifndef FDT_H
#define FDT_H

#include <stdint.h>

#define FDT_MAX_RANGES 16
#define FDT_MAX_HARTS 16

struct fdt_range {
    uint64_t base, size;
    char name[40]; /* node name, or "/memreserve/" */
};

struct fdt_info {
    uint32_t totalsize;                      /* of the blob itself          */
    struct fdt_range mem[FDT_MAX_RANGES];    /* /memory* reg entries         */
    unsigned nmem;
    struct fdt_range resv[FDT_MAX_RANGES];   /* /memreserve/ + /reserved-memory */
    unsigned nresv;
    uint64_t harts[FDT_MAX_HARTS];           /* /cpus/cpu* reg, enabled ones */
    unsigned nharts;
    uint32_t timebase;                       /* /cpus timebase-frequency     */
    uint64_t finisher;                       /* sifive,test0 reg, or 0       */
    unsigned dropped;                        /* entries beyond the arrays    */
};

/* Parse the blob at dtb. 0 on success, or a negative number for a blob that
 * is not a device tree or is malformed (the reason in *why). */
int fdt_parse(const void *dtb, struct fdt_info *out, const char **why);

#endif
