/*
 * A compact text map of a kbuddy heap, for demos: one character per run of
 * blocks in the same state, in address order, wrapped at HEAPMAP_COLUMNS.
 * The letter tells the run's size, its case whether it is in use:
 *   a/A  under 64 bytes     b/B  under 128 bytes    c/C  under 256 bytes
 *   ...  each letter doubles ...                    k/K  under 64 KiB
 *   p/P  under 2 MiB         u/U  under 64 MiB       z/Z  anything larger
 *   upper case: allocated   lower case: free
 * so "aBcD" reads: a small free run, a used run of ~100 bytes, and so on.
 * Each region gets a header line; a region with more runs than fit in
 * HEAPMAP_LINES lines ends with "... N more runs".
 * Freestanding (no libc): output goes through a caller-supplied putc.
 */
#ifndef KBUDDY_HEAPMAP_H
#define KBUDDY_HEAPMAP_H

#include "kbuddy.h"

#ifndef HEAPMAP_COLUMNS
#define HEAPMAP_COLUMNS 64
#endif
#ifndef HEAPMAP_LINES
#define HEAPMAP_LINES 6
#endif

typedef void (*heapmap_putc_fn)(char c);

struct heapmap_state {
    heapmap_putc_fn out;
    uintptr_t region_end;  /* end of the previous block: a gap starts a region */
    uintptr_t run_start;   /* the run being gathered                         */
    size_t run_bytes;
    bool run_used;
    bool in_run;
    size_t column, lines, hidden; /* output position; runs not shown      */
};

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

static char heapmap_letter(size_t bytes, bool used) {
    unsigned c = 0;
    for (size_t b = bytes >> 6; b && c < 25; b >>= 1)
        c++;
    return (char)((used ? 'A' : 'a') + (int)c);
}

static void heapmap_end_line(struct heapmap_state *st) {
    if (st->column) {
        st->out('\n');
        st->column = 0;
        st->lines++;
    }
}

static void heapmap_emit_run(struct heapmap_state *st) {
    if (!st->in_run)
        return;
    if (st->lines >= HEAPMAP_LINES) {
        st->hidden++;
        return;
    }
    if (st->column == 0)
        heapmap_puts(st->out, "    ");
    st->out(heapmap_letter(st->run_bytes, st->run_used));
    if (++st->column == HEAPMAP_COLUMNS)
        heapmap_end_line(st);
}

static void heapmap_end_region(struct heapmap_state *st) {
    heapmap_emit_run(st);
    heapmap_end_line(st);
    if (st->hidden) {
        heapmap_puts(st->out, "    ... ");
        heapmap_putu(st->out, st->hidden, 10);
        heapmap_puts(st->out, " more runs\n");
    }
    st->in_run = false;
    st->lines = st->hidden = 0;
}

static void heapmap_block(void *ctx, void *start, size_t size, bool used) {
    struct heapmap_state *st = ctx;
    uintptr_t s = (uintptr_t)start;
    if (s != st->region_end) { /* bookkeeping lies between regions' blocks */
        if (st->region_end)
            heapmap_end_region(st);
        heapmap_puts(st->out, "  region at 0x");
        heapmap_putu(st->out, s, 16);
        heapmap_puts(st->out, ":\n");
    } else if (st->in_run && used == st->run_used) {
        st->run_bytes += size;
        st->region_end = s + size;
        return;
    } else {
        heapmap_emit_run(st);
    }
    st->in_run = true;
    st->run_start = s;
    st->run_bytes = size;
    st->run_used = used;
    st->region_end = s + size;
}

/* Draw every region of `heap`. */
static void heapmap_print(const kbuddy_heap *heap, heapmap_putc_fn out) {
    struct heapmap_state st = {out, 0, 0, 0, false, false, 0, 0, 0};
    kbuddy_walk(heap, heapmap_block, &st);
    if (st.region_end)
        heapmap_end_region(&st);
}

#endif
