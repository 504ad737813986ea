/*
 * A compact text map of a kbuddy heap, for demos: one line per region, each
 * character standing for an equal share of the region's bytes:
 *   '.' all free   ':' under a quarter used   '+' partly used   '#' all used
 * Freestanding (no libc): output goes through a caller-supplied putc.
 */
#ifndef KBUDDY_HEAPMAP_H
#define KBUDDY_HEAPMAP_H

#include "kbuddy.h"

#define HEAPMAP_COLUMNS 64

typedef void (*heapmap_putc_fn)(char c);

struct heapmap_state {
    uintptr_t lo, hi;                   /* the region being drawn (its blocks) */
    size_t used[HEAPMAP_COLUMNS];       /* used bytes falling in each column   */
    int region;                         /* index of the region to draw         */
    int seen;                           /* regions met so far                  */
    uintptr_t last_end;                 /* end of the previous block           */
};

static void heapmap_collect(void *ctx, void *start, size_t size, bool used) {
    struct heapmap_state *st = ctx;
    uintptr_t s = (uintptr_t)start, e = s + size;
    if (s != st->last_end)      /* a gap: the next region starts */
        st->seen++;
    st->last_end = e;
    if (st->seen - 1 != st->region)
        return;
    if (st->lo == 0)
        st->lo = s;
    st->hi = e;
    (void)used;
}

/* Drawing takes two walks: the first finds the region's extent
 * (heapmap_collect), the second adds up its used bytes per column. */
struct heapmap_pass2 {
    struct heapmap_state *st;
    int seen;
    uintptr_t last_end;
};

static void heapmap_count(void *ctx, void *start, size_t size, bool used) {
    struct heapmap_pass2 *p = ctx;
    uintptr_t s = (uintptr_t)start, e = s + size;
    if (s != p->last_end)
        p->seen++;
    p->last_end = e;
    if (p->seen - 1 != p->st->region || !used)
        return;
    uintptr_t span = p->st->hi - p->st->lo;
    while (s < e) {
        size_t col = (size_t)((s - p->st->lo) * HEAPMAP_COLUMNS / span);
        uintptr_t col_end = p->st->lo + (span * (col + 1) + HEAPMAP_COLUMNS - 1) / HEAPMAP_COLUMNS;
        uintptr_t upto = e < col_end ? e : col_end;
        if (upto <= s)
            upto = s + 1;
        p->st->used[col] += (size_t)(upto - s);
        s = upto;
    }
}

static void heapmap_puts(heapmap_putc_fn out, const char *s) {
    while (*s)
        out(*s++);
}

static void heapmap_putu(heapmap_putc_fn out, uintptr_t v, unsigned base) {
    char buf[24];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (n--)
        out(buf[n]);
}

/* Draw every region of `heap`. */
static void heapmap_print(const kbuddy_heap *heap, heapmap_putc_fn out) {
    for (int r = 0;; r++) {
        struct heapmap_state st = {0, 0, {0}, r, 0, 0};
        kbuddy_walk(heap, heapmap_collect, &st);
        if (st.hi == 0)
            break;
        struct heapmap_pass2 p = {&st, 0, 0};
        kbuddy_walk(heap, heapmap_count, &p);
        uintptr_t span = st.hi - st.lo;
        heapmap_puts(out, "  [");
        for (size_t c = 0; c < HEAPMAP_COLUMNS; c++) {
            uintptr_t cs = st.lo + span * c / HEAPMAP_COLUMNS;
            uintptr_t ce = st.lo + span * (c + 1) / HEAPMAP_COLUMNS;
            size_t width = ce > cs ? (size_t)(ce - cs) : 1;
            size_t u = st.used[c];
            out(u == 0 ? '.' : u >= width ? '#' : u * 4 < width ? ':' : '+');
        }
        heapmap_puts(out, "] 0x");
        heapmap_putu(out, st.lo, 16);
        heapmap_puts(out, " +");
        heapmap_putu(out, span >> 10, 10);
        heapmap_puts(out, "K\n");
    }
}

#endif
