/*
 * libFuzzer target for the page-frame allocator. The input chooses a window
 * (base 0, odd, across 2^32, at the top of size_t; 1 to 65536 frames) and a
 * metadata buffer of exactly kbuddy_frames_meta_size bytes at any alignment,
 * then a sequence of operations: adds, allocs, frees of arbitrary runs and
 * of sub-runs of allocated frames. A shadow model (the state of every frame
 * and, per order, the free frames of each aligned block) predicts every
 * status; the statistics are compared after every operation, the walk and
 * kbuddy_frames_check regularly. Any disagreement aborts.
 *
 * Build: make fuzz (CMake -DKBUDDY_FUZZ=ON with clang).
 */
#include "kbuddy.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ------------------------------------------------------------------------ */
/* Input decoding                                                            */
/* ------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t left;
} input;

static unsigned byte(input *in) {
    if (!in->left)
        return 0;
    in->left--;
    return *in->p++;
}

static size_t u16(input *in) { return byte(in) | (size_t)byte(in) << 8; }

/* ------------------------------------------------------------------------ */
/* Model                                                                     */
/* ------------------------------------------------------------------------ */

enum { NOT_ADDED = 0, FREE = 1, USED = 2 };

typedef struct {
    size_t base, n;
    unsigned orders;
    uint8_t *state;
    uint32_t *cnt[64]; /* per order: free frames in each aligned block */
    size_t blk0[64];
    size_t full[64];   /* per order: fully free blocks */
    size_t added, allocated;
} model;

static void fail(const char *what, size_t a, size_t b) {
    fprintf(stderr, "fuzz_frames: %s (%zu, %zu)\n", what, a, b);
    abort();
}

static unsigned floor_log2(size_t x) {
    unsigned k = 0;
    while (x >>= 1)
        k++;
    return k;
}

static void model_init(model *m, size_t base, size_t n) {
    memset(m, 0, sizeof *m);
    m->base = base;
    m->n = n;
    m->orders = floor_log2(n) + 1;
    m->state = calloc(n, 1);
    if (!m->state)
        abort();
    for (unsigned k = 0; k < m->orders; k++) {
        m->blk0[k] = base >> k;
        m->cnt[k] = calloc(((base + n - 1) >> k) - m->blk0[k] + 1, sizeof(uint32_t));
        if (!m->cnt[k])
            abort();
    }
}

static void model_destroy(model *m) {
    for (unsigned k = 0; k < m->orders; k++)
        free(m->cnt[k]);
    free(m->state);
}

static uint8_t st(const model *m, size_t f) { return m->state[f - m->base]; }

static void set(model *m, size_t f, uint8_t s) {
    uint8_t old = m->state[f - m->base];
    m->state[f - m->base] = s;
    if ((old == FREE) != (s == FREE)) {
        for (unsigned k = 0; k < m->orders; k++) {
            uint32_t *c = &m->cnt[k][(f >> k) - m->blk0[k]];
            if (*c == (1u << k))
                m->full[k]--;
            *c = s == FREE ? *c + 1 : *c - 1;
            if (*c == (1u << k))
                m->full[k]++;
        }
    }
    if (old == NOT_ADDED && s != NOT_ADDED)
        m->added++;
    if (old == USED)
        m->allocated--;
    if (s == USED)
        m->allocated++;
}

static bool in_window(const model *m, size_t first, size_t count) {
    return first >= m->base && first - m->base < m->n && count <= m->n - (first - m->base);
}

static size_t largest(const model *m) {
    for (unsigned k = m->orders; k-- > 0;)
        if (m->full[k])
            return (size_t)1 << k;
    return 0;
}

static bool block_full(const model *m, unsigned k, size_t b) {
    if (k >= m->orders || b < m->blk0[k] || (b << k) < m->base ||
        ((b + 1) << k) - 1 > m->base + m->n - 1)
        return false;
    return m->cnt[k][b - m->blk0[k]] == (1u << k);
}

/* ------------------------------------------------------------------------ */
/* Checks                                                                    */
/* ------------------------------------------------------------------------ */

static void check_stats(const kbuddy_frames *fa, const model *m) {
    kbuddy_frame_stats s;
    kbuddy_frames_get_stats(fa, &s);
    if (s.total != m->added)
        fail("stats total", s.total, m->added);
    if (s.allocated != m->allocated)
        fail("stats allocated", s.allocated, m->allocated);
    if (s.largest_free != largest(m))
        fail("stats largest_free", s.largest_free, largest(m));
}

typedef struct {
    const model *m;
    size_t next, used, free_frames;
} walker;

static void visit(void *ctx, size_t first, size_t count, bool used) {
    walker *w = ctx;
    const model *m = w->m;
    if (count == 0 || !in_window(m, first, count) || first < w->next)
        fail("walk run out of order or outside", first, count);
    for (size_t f = w->next; f < first; f++)
        if (st(m, f) != NOT_ADDED)
            fail("walk skipped an added frame", f, first);
    for (size_t f = first; f < first + count; f++)
        if (st(m, f) != (used ? USED : FREE))
            fail(used ? "walk: used run with a frame not allocated"
                      : "walk: free run with a frame not free",
                 first, f);
    if (used) {
        if ((first > m->base && st(m, first - 1) == USED) ||
            (first + count < m->base + m->n && st(m, first + count) == USED))
            fail("walk: used run not maximal", first, count);
        w->used += count;
    } else {
        unsigned k = floor_log2(count);
        if (count != ((size_t)1 << k) || first % count)
            fail("walk: free run not an aligned block", first, count);
        if (block_full(m, k + 1, first >> (k + 1)))
            fail("walk: free buddies not merged", first, count);
        w->free_frames += count;
    }
    w->next = first + count;
}

static void check_all(const kbuddy_frames *fa, const model *m) {
    if (kbuddy_frames_check(fa) != KBUDDY_OK)
        fail("kbuddy_frames_check", 0, 0);
    walker w = {m, m->base, 0, 0};
    kbuddy_frames_walk(fa, visit, &w);
    for (size_t f = w.next; f < m->base + m->n; f++)
        if (st(m, f) != NOT_ADDED)
            fail("walk missed an added frame at the end", f, 0);
    if (w.used != m->allocated || w.used + w.free_frames != m->added)
        fail("walk totals", w.used, w.free_frames);
}

/* ------------------------------------------------------------------------ */
/* Operations                                                                */
/* ------------------------------------------------------------------------ */

static void op_add(kbuddy_frames *fa, model *m, size_t first, size_t count) {
    kbuddy_status want = KBUDDY_OK;
    if (count == 0 || !in_window(m, first, count)) {
        want = KBUDDY_EINVAL;
    } else {
        for (size_t f = first; f < first + count; f++)
            if (st(m, f) != NOT_ADDED)
                want = KBUDDY_EOVERLAP;
    }
    kbuddy_status got = kbuddy_frames_add(fa, first, count);
    if (got != want)
        fail("add status", got, want);
    if (got == KBUDDY_OK)
        for (size_t f = first; f < first + count; f++)
            set(m, f, FREE);
}

static void op_alloc(kbuddy_frames *fa, model *m, size_t count, size_t align) {
    size_t first = 0x5a5a;
    kbuddy_status want;
    if (count == 0 || !align || (align & (align - 1))) {
        want = KBUDDY_EINVAL;
    } else {
        unsigned k = floor_log2(count);
        k += ((size_t)1 << k) < count;
        if (floor_log2(align) > k)
            k = floor_log2(align);
        want = KBUDDY_ENOMEM;
        for (unsigned j = k; j < m->orders; j++)
            if (m->full[j])
                want = KBUDDY_OK;
    }
    kbuddy_status got = kbuddy_frames_alloc(fa, count, align, &first);
    if (got != want)
        fail("alloc status (count, align)", count, align);
    if (got != KBUDDY_OK) {
        if (first != 0x5a5a)
            fail("refused alloc wrote *first", first, 0);
        return;
    }
    if (first % align || !in_window(m, first, count))
        fail("alloc misplaced", first, align);
    for (size_t f = first; f < first + count; f++) {
        if (st(m, f) != FREE)
            fail("alloc handed out a frame that was not free", f, st(m, f));
        set(m, f, USED);
    }
}

static void op_free(kbuddy_frames *fa, model *m, size_t first, size_t count) {
    kbuddy_status want = KBUDDY_OK;
    if (count == 0) {
        want = KBUDDY_EINVAL;
    } else if (!in_window(m, first, count)) {
        want = KBUDDY_EFOREIGN;
    } else {
        for (size_t f = first; f < first + count; f++) {
            if (st(m, f) == NOT_ADDED) {
                want = KBUDDY_EFOREIGN;
                break;
            }
            if (st(m, f) == FREE)
                want = KBUDDY_EDOUBLEFREE;
        }
    }
    kbuddy_frame_stats before;
    kbuddy_frames_get_stats(fa, &before);
    kbuddy_status got = kbuddy_frames_free(fa, first, count);
    if (got != want)
        fail("free status", got, want);
    if (got == KBUDDY_OK) {
        for (size_t f = first; f < first + count; f++)
            set(m, f, FREE);
    } else {
        kbuddy_frame_stats after;
        kbuddy_frames_get_stats(fa, &after);
        if (memcmp(&before, &after, sizeof before))
            fail("refused free changed the statistics", first, count);
    }
}

/* A sub-run of the allocated run found at or after window offset `pos`
 * (len SIZE_MAX: from the chosen frame to the end of the run). */
static void op_free_used(kbuddy_frames *fa, model *m, size_t pos, size_t off, size_t len) {
    size_t s = m->base + pos % m->n, scanned = 0, limit = m->n < 256 ? m->n : 256;
    while (scanned < limit && st(m, s) != USED) {
        s = s + 1 == m->base + m->n ? m->base : s + 1;
        scanned++;
    }
    if (scanned == limit)
        return;
    size_t e = s;
    while (e < m->base + m->n && st(m, e) == USED)
        e++;
    while (s > m->base && st(m, s - 1) == USED)
        s--;
    size_t a = s + off % (e - s);
    size_t n = len == SIZE_MAX ? e - a : 1 + len % (e - a);
    op_free(fa, m, a, n);
}

/* The window: base and size from the first bytes. */
static void choose_window(input *in, size_t *base, size_t *n) {
    unsigned sel = byte(in);
    size_t v = u16(in);
    /* Up to 512 frames; up to 65536 only for long inputs (the walk and the
     * check cost O(frames) even when few are added, and speed finds more). */
    *n = (sel & 0xf8) == 0xf8 && in->left >= 1024 ? 1 + (v & 0xffff) : 1 + (v & 0x1ff);
    switch (sel & 7) {
    case 0:
        *base = 0;
        break;
    case 1:
        *base = u16(in) | 1;
        break;
    case 2:
        *base = ((size_t)1 << 32) - *n / 2 - (u16(in) & 0xff);
        break;
    case 3:
        *base = SIZE_MAX - *n - (byte(in) & 3);
        break;
    case 4:
        *base = (size_t)u16(in) << 20;
        break;
    default:
        *base = u16(in) * (size_t)4093;
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    input in = {data, size};
    size_t base, n;
    choose_window(&in, &base, &n);
    size_t meta_size = kbuddy_frames_meta_size(n), off = byte(&in) & 7;
    uint8_t *buf = malloc(meta_size + off);
    if (!buf)
        return 0;
    kbuddy_frames fa;
    if (kbuddy_frames_init(&fa, base, n, buf + off, meta_size) != KBUDDY_OK)
        fail("init", base, n);
    model m;
    model_init(&m, base, n);
    /* check + walk cost O(n): after every operation only in tiny windows
     * (the statistics, compared every time, catch most faults at once). */
    size_t every = n <= 64 ? 1 : n <= 512 ? 16 : 256;
    for (size_t i = 0; in.left; i++) {
        unsigned op = byte(&in);
        size_t a = u16(&in), b = u16(&in);
        switch (op % 8) {
        case 0: /* add: mostly inside the window */
        case 1:
            op_add(&fa, &m, op & 0x80 ? base + a * 17 % (n + 8) - 4 : base + a % n,
                   op & 0x40 ? b : b % 64 + (op & 8 ? 0 : 1));
            break;
        case 2: /* alloc: small counts, power-of-two alignments */
        case 3:
            op_alloc(&fa, &m, op & 0x80 ? a % (n + 2) : a % 70 + (op & 0x20 ? 0 : 1),
                     op & 0x40 ? b % 8 : (size_t)1 << (b % (m.orders + 2)));
            break;
        case 4: /* free a sub-run of an allocated run */
        case 5:
            op_free_used(&fa, &m, a, b, op >> 3);
            break;
        case 6: /* free anything */
            op_free(&fa, &m, base + a % (n + 16) - 8 * (op >> 7), b % 80 + (op & 0x40 ? 0 : 1));
            break;
        default: /* a whole allocated run, or across the window's edges */
            if (op & 0x80)
                op_free(&fa, &m, op & 0x40 ? base - 1 - a % 4 : base + n - a % 4, 1 + b % 8);
            else
                op_free_used(&fa, &m, a, 0, SIZE_MAX);
            break;
        }
        check_stats(&fa, &m);
        if (i % every == every - 1)
            check_all(&fa, &m);
    }
    if (n <= 512)
        check_all(&fa, &m);
    /* Free every allocated run: all added frames are free again. */
    for (size_t f = base; f < base + n; f++)
        if (st(&m, f) == USED) {
            size_t e = f;
            while (e < base + n && st(&m, e) == USED)
                e++;
            op_free(&fa, &m, f, e - f);
        }
    check_stats(&fa, &m);
    check_all(&fa, &m);
    model_destroy(&m);
    free(buf);
    return 0;
}
