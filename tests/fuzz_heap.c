/*
 * libFuzzer target for the byte heap. The input is decoded into a sequence
 * of operations on a fresh heap over a static arena: adding regions of
 * derived offsets and sizes (some overlapping, some too small), alloc with
 * derived size and alignment (some invalid), free and free_sized with right
 * and wrong arguments, interior, misaligned, foreign and double frees,
 * batches (kbuddy_alloc_many, kbuddy_alloc_each; kbuddy_free_many upward,
 * downward or in any order, with a repeated, interior or misaligned entry
 * where it must stop), realloc, usable_size, walks and checks.
 *
 * A shadow model tracks every region and live allocation and which
 * allocation owns each minimum block of the arena. After every operation
 * the statistics must equal the model's sums; results are predicted (alloc
 * succeeds exactly when a large enough block is free, refused calls return
 * the right status); allocations keep their fill pattern, never overlap and
 * lie inside a region; refused calls change nothing; kbuddy_check passes
 * every few operations and the walk matches the model. Any violation
 * aborts.
 *
 * Build: make fuzz (CMake option KBUDDY_FUZZ, clang).
 */
#include "kbuddy.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNIT KBUDDY_MIN_BLOCK
#define ARENA_SIZE ((size_t)512 << 10)
#define MAX_REGIONS 16
#define MAX_LIVE 256
#define FREED_RING 16
#define CHECK_EVERY 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static _Alignas(4096) unsigned char arena[ARENA_SIZE];
static unsigned char arena_copy[ARENA_SIZE];
static int16_t owner[ARENA_SIZE / UNIT]; /* live slot owning each unit, or -1 */

typedef struct {
    unsigned char *p;
    size_t size, align, usable;
    uint32_t seed;
} live_t;

typedef struct {
    uintptr_t start;
    size_t size, total;
} region_t;

static kbuddy_heap heap;
static live_t live[MAX_LIVE];
static size_t nlive;
static region_t regions[MAX_REGIONS];
static size_t nregions, bytes_added, total_expected, sum_usable, sum_size;
static uintptr_t freed_ring[FREED_RING];
static size_t freed_next;
static uint32_t next_seed;
static unsigned long op_no, refusals;

/* ------------------------------------------------------------------------ */
/* Input decoding                                                            */
/* ------------------------------------------------------------------------ */

static const uint8_t *in;
static size_t in_left;

static uint8_t get8(void) {
    if (!in_left)
        return 0;
    in_left--;
    return *in++;
}
static uint16_t get16(void) { return (uint16_t)(get8() | (unsigned)get8() << 8); }
static uint32_t get32(void) { return (uint32_t)get16() | (uint32_t)get16() << 16; }

/* ------------------------------------------------------------------------ */
/* Model                                                                     */
/* ------------------------------------------------------------------------ */

static void violation(const char *what) {
    fprintf(stderr, "fuzz_heap: op %lu: %s\n", op_no, what);
    abort();
}

static size_t unit_of(uintptr_t a) { return (size_t)((a - (uintptr_t)arena) / UNIT); }

static size_t round_units(size_t size) { return size ? (size + UNIT - 1) / UNIT * UNIT : UNIT; }

static size_t block_needed(size_t size, size_t align) {
    size_t b = UNIT;
    if (size > SIZE_MAX / 2)
        return SIZE_MAX;
    while (b < size)
        b *= 2;
    return align > b ? align : b;
}

static const region_t *region_holding(uintptr_t a) {
    for (size_t i = 0; i < nregions; i++)
        if (a >= regions[i].start && a - regions[i].start < regions[i].size)
            return &regions[i];
    return NULL;
}

static unsigned char pattern(uint32_t seed, size_t i) {
    return (unsigned char)((seed >> (i % 4 * 8)) ^ (i * 29u) ^ (i >> 7));
}

static void fill(unsigned char *p, size_t n, uint32_t seed) {
    unsigned char *volatile vp = p; /* alloc_size: the compiler thinks n may be too big */
    unsigned char *q = vp;
    for (size_t i = 0; i < n; i++)
        q[i] = pattern(seed, i);
}

static void expect_pattern(const live_t *l) {
    for (size_t i = 0; i < l->usable; i++)
        if (l->p[i] != pattern(l->seed, i))
            violation("allocation contents changed");
}

static void stats_expect(void) {
    kbuddy_stats st;
    kbuddy_get_stats(&heap, &st);
    if (st.total != total_expected || st.overhead != bytes_added - total_expected ||
        st.allocated != sum_usable || st.user != sum_size || st.allocations != nlive ||
        st.regions != nregions || st.largest_free > st.total - st.allocated)
        violation("statistics differ from the model");
}

static void own(size_t slot, uintptr_t p, size_t usable) {
    const region_t *r = region_holding(p);
    if (!r || p + usable > r->start + r->size)
        violation("block outside every region");
    if (p % UNIT)
        violation("block misaligned");
    for (size_t u = unit_of(p); u < unit_of(p) + usable / UNIT; u++) {
        if (owner[u] != -1)
            violation("block overlaps a live allocation");
        owner[u] = (int16_t)slot;
    }
}

static void disown(uintptr_t p, size_t usable) {
    for (size_t u = unit_of(p); u < unit_of(p) + usable / UNIT; u++)
        owner[u] = -1;
}

static void drop(size_t slot) {
    live_t *l = &live[slot];
    disown((uintptr_t)l->p, l->usable);
    sum_usable -= l->usable;
    sum_size -= l->size;
    freed_ring[freed_next++ % FREED_RING] = (uintptr_t)l->p;
    if (slot != nlive - 1) {
        /* Move the last into this slot, renaming its units. */
        live[slot] = live[nlive - 1];
        for (size_t u = unit_of((uintptr_t)live[slot].p);
             u < unit_of((uintptr_t)live[slot].p) + live[slot].usable / UNIT; u++)
            owner[u] = (int16_t)slot;
    }
    nlive--;
}

/* A refused call must return `want` and change nothing. */
typedef struct {
    kbuddy_stats st;
    bool deep;
} before_t;

static before_t before_take(void) {
    before_t b;
    kbuddy_get_stats(&heap, &b.st);
    b.deep = refusals++ % 8 == 0;
    if (b.deep)
        memcpy(arena_copy, arena, ARENA_SIZE);
    return b;
}

static void after_compare(const before_t *b) {
    kbuddy_stats st;
    kbuddy_get_stats(&heap, &st);
    if (memcmp(&st, &b->st, sizeof st) != 0)
        violation("refused call changed the statistics");
    if (b->deep && memcmp(arena_copy, arena, ARENA_SIZE) != 0)
        violation("refused call changed managed memory");
}

static void refused(kbuddy_status got, kbuddy_status want, const before_t *b) {
    if (got != want) {
        fprintf(stderr, "fuzz_heap: got %s, wanted %s\n", kbuddy_strerror(got),
                kbuddy_strerror(want));
        violation("wrong status");
    }
    after_compare(b);
}

/* ------------------------------------------------------------------------ */
/* Walk                                                                      */
/* ------------------------------------------------------------------------ */

typedef struct {
    uintptr_t prev_end;
    const region_t *prev_region;
    size_t used, largest, per_region[MAX_REGIONS];
} walk_state;

static void walk_visit(void *ctx, void *start, size_t size, bool used) {
    walk_state *w = ctx;
    uintptr_t s = (uintptr_t)start;
    const region_t *r = region_holding(s);
    if (!r || s + size > r->start + r->size || size == 0 || size % UNIT || s % UNIT)
        violation("walk: bad block");
    if (s < w->prev_end || (r == w->prev_region && s != w->prev_end))
        violation("walk: blocks out of order or not tiling");
    w->prev_end = s + size;
    w->prev_region = r;
    w->per_region[r - regions] += size;
    int16_t o = owner[unit_of(s)];
    if (used) {
        if (o < 0 || (uintptr_t)live[o].p != s || live[o].usable != size)
            violation("walk: used block is not a live allocation");
        w->used++;
    } else {
        if ((size & (size - 1)) || s % size)
            violation("walk: free block is not a buddy block");
        for (size_t u = unit_of(s); u < unit_of(s) + size / UNIT; u++)
            if (owner[u] != -1)
                violation("walk: free block over a live allocation");
        if (size > w->largest)
            w->largest = size;
    }
}

static void walk_expect(void) {
    walk_state w;
    memset(&w, 0, sizeof w);
    kbuddy_walk(&heap, walk_visit, &w);
    kbuddy_stats st;
    kbuddy_get_stats(&heap, &st);
    if (w.used != nlive)
        violation("walk: live allocations missing");
    for (size_t i = 0; i < nregions; i++)
        if (w.per_region[i] != regions[i].total)
            violation("walk: region not tiled");
    if (w.largest != st.largest_free)
        violation("walk: largest free block is not largest_free");
}

/* ------------------------------------------------------------------------ */
/* Operations                                                                */
/* ------------------------------------------------------------------------ */

static void op_add_region(void) {
    size_t off = (size_t)get32() % ARENA_SIZE;
    size_t size;
    switch (get8() % 4) {
    case 0:
        size = get8(); /* tiny, often too small */
        break;
    case 1:
        size = get16();
        break;
    default:
        size = (size_t)get32() % (ARENA_SIZE / 2);
        break;
    }
    if (size > ARENA_SIZE - off)
        size = ARENA_SIZE - off;
    uintptr_t s = (uintptr_t)arena + off;
    bool overlaps = false;
    for (size_t i = 0; i < nregions; i++)
        if (s < regions[i].start + regions[i].size && regions[i].start < s + size)
            overlaps = true;
    before_t b = before_take();
    kbuddy_status st = kbuddy_add_region(&heap, (void *)s, size);
    if (size == 0) {
        refused(st, KBUDDY_EINVAL, &b);
    } else if (overlaps) {
        /* Which of "too small" and "overlaps" wins is not specified. */
        if (st != KBUDDY_EOVERLAP && st != KBUDDY_ENOMEM)
            violation("overlapping region not refused");
        after_compare(&b);
    } else if (st == KBUDDY_ENOMEM) {
        if (size >= 512)
            violation("region of 512 bytes or more refused");
        after_compare(&b);
    } else if (st != KBUDDY_OK) {
        violation("add_region failed");
    } else {
        if (nregions == MAX_REGIONS)
            violation("model full"); /* cannot happen: guarded below */
        kbuddy_stats after;
        kbuddy_get_stats(&heap, &after);
        regions[nregions++] = (region_t){s, size, after.total - b.st.total};
        bytes_added += size;
        total_expected += after.total - b.st.total;
        if (after.total == b.st.total || (after.total - b.st.total) % UNIT)
            violation("region adds no usable memory");
        /* The bookkeeping overwrote whatever was there: no live units. */
        for (size_t u = unit_of(s); u < unit_of(s) + size / UNIT && u < ARENA_SIZE / UNIT; u++)
            if (owner[u] != -1)
                violation("region over a live allocation");
    }
}

static size_t decode_size(void) {
    switch (get8() % 8) {
    case 0:
        return 0;
    case 1:
    case 2:
    case 3:
        return get8();
    case 4:
    case 5:
        return get16() % 4096;
    case 6:
        return get16();
    default: {
        uint32_t x = get32();
        if (x > 0xFFFFFFF0u) /* rarely: sizes that overflow */
            return SIZE_MAX - (x & 0xF) * 3;
        return x % (ARENA_SIZE / 2);
    }
    }
}

static size_t decode_align(void) {
    uint8_t a = get8();
    if (a >= 250)
        return a == 250 ? 0 : (size_t)a * 3; /* invalid */
    return (size_t)1 << (a % 20);
}

/* A new live allocation p of size bytes aligned to align: checked, owned
 * by the model, filled with its pattern. */
static void adopt(unsigned char *p, size_t size, size_t align) {
    if ((uintptr_t)p % (align > UNIT ? align : UNIT))
        violation("alloc misaligned");
    live_t *l = &live[nlive];
    *l = (live_t){p, size, align, round_units(size), next_seed++};
    own(nlive, (uintptr_t)p, l->usable);
    nlive++;
    sum_usable += l->usable;
    sum_size += size;
    fill(p, l->usable, l->seed);
    if (kbuddy_usable_size(&heap, p) != l->usable)
        violation("usable_size");
}

static void op_alloc(void) {
    size_t size = decode_size(), align = decode_align();
    bool valid = align && !(align & (align - 1)) && size <= SIZE_MAX - (UNIT - 1);
    kbuddy_stats before;
    kbuddy_get_stats(&heap, &before);
    if (nlive == MAX_LIVE)
        return;
    unsigned char *p = kbuddy_alloc(&heap, size, align);
    if (!p) {
        if (valid && block_needed(size, align) <= before.largest_free)
            violation("alloc failed with a large enough block free");
        kbuddy_stats after;
        kbuddy_get_stats(&heap, &after);
        if (memcmp(&before, &after, sizeof after) != 0)
            violation("failed alloc changed the statistics");
        return;
    }
    if (!valid)
        violation("invalid alloc succeeded");
    if (size > before.largest_free)
        violation("alloc beyond largest_free succeeded");
    adopt(p, size, align);
}

/* A batch: up to 8 separate allocations of one size, each checked and
 * owned like op_alloc's. It may stop short only when a single block of
 * that size no longer fits. */
static void op_alloc_many(void) {
    size_t size = decode_size(), count = 1 + get8() % 8;
    if (nlive + count > MAX_LIVE)
        return;
    bool valid = size <= SIZE_MAX - (UNIT - 1);
    unsigned char *out[8];
    size_t got = kbuddy_alloc_many(&heap, size, count, (void **)out);
    if (!valid && got)
        violation("alloc_many of an overflowing size succeeded");
    kbuddy_stats st;
    kbuddy_get_stats(&heap, &st);
    if (valid && got < count && block_needed(size, 1) <= st.largest_free)
        violation("alloc_many stopped short with a large enough block free");
    for (size_t i = 0; i < got; i++)
        adopt(out[i], size, 1);
}

/* A batch placed as single calls would place it (kbuddy_alloc_each): up
 * to 8 allocations of one size and alignment, each checked and owned like
 * op_alloc's; short only when such a block no longer fits. Where it puts
 * them is proven against single calls by the unit tests; here the model
 * checks that whatever it does leaves the heap exact. */
static void op_alloc_each(void) {
    size_t size = decode_size(), align = decode_align(), count = 1 + get8() % 8;
    if (nlive + count > MAX_LIVE)
        return;
    bool valid = align && !(align & (align - 1)) && size <= SIZE_MAX - (UNIT - 1);
    unsigned char *out[8];
    size_t got = kbuddy_alloc_each(&heap, size, align, count, (void **)out);
    if (!valid && got)
        violation("alloc_each of invalid arguments succeeded");
    kbuddy_stats st;
    kbuddy_get_stats(&heap, &st);
    if (valid && got < count && block_needed(size, align) <= st.largest_free)
        violation("alloc_each stopped short with a large enough block free");
    for (size_t i = 0; i < got; i++)
        adopt(out[i], size, align);
}

static void op_free(uint8_t how) {
    if (!nlive)
        return;
    size_t slot = get8() % nlive;
    live_t *l = &live[slot];
    expect_pattern(l);
    kbuddy_status st;
    if (how == 0) {
        st = kbuddy_free(&heap, l->p);
    } else {
        size_t a = (size_t)1 << (get8() % 20);
        if ((uintptr_t)l->p % a)
            a = l->align ? l->align : 1;
        st = kbuddy_free_sized(&heap, l->p, l->size, a);
    }
    if (st != KBUDDY_OK)
        violation("free of a live allocation failed");
    drop(slot);
}

static int cmp_ptr(const void *x, const void *y) {
    uintptr_t a = (uintptr_t) * (unsigned char *const *)x, b = (uintptr_t) * (unsigned char *const *)y;
    return a < b ? -1 : a > b;
}

static size_t slot_of(const unsigned char *p) {
    for (size_t i = 0; i < nlive; i++)
        if (live[i].p == p)
            return i;
    violation("freed pointer not in the model");
    return 0;
}

/* A batch: up to 16 distinct live allocations, by address upward or
 * downward (runs of side-by-side blocks) or as picked, perhaps with a NULL
 * (skipped) or a bad entry (a repeat, an interior or misaligned pointer)
 * put in: the batch must stop exactly there, the ones before it freed, the
 * rest still live. */
static void op_free_many(void) {
    if (!nlive)
        return;
    uint8_t mode = get8();
    size_t k = 1 + get8() % 16, n = 0;
    unsigned char *batch[17];
    size_t start = get8() % nlive;
    for (size_t i = 0; i < k && i < nlive; i++) {
        live_t *l = &live[(start + i) % nlive];
        expect_pattern(l);
        batch[n++] = l->p;
    }
    if (mode % 3 != 2)
        qsort(batch, n, sizeof batch[0], cmp_ptr);
    if (mode % 3 == 1)
        for (size_t i = 0; i < n / 2; i++) {
            unsigned char *t = batch[i];
            batch[i] = batch[n - 1 - i];
            batch[n - 1 - i] = t;
        }
    size_t bad = n + 1; /* index of the entry that must stop the batch */
    if (mode & 0x10) {
        size_t j = get8() % (n + 1); /* where the extra entry goes */
        unsigned char *x = NULL;     /* NULL: skipped */
        switch ((mode >> 5) % 4) {
        case 1: /* a repeat of an entry before it */
            j = 1 + j % n;
            x = batch[get8() % j];
            bad = j;
            break;
        case 2: { /* one unit into an allocation of the batch */
            unsigned char *p = batch[get8() % n];
            if (live[slot_of(p)].usable < 2 * UNIT)
                return;
            x = p + UNIT;
            bad = j;
            break;
        }
        case 3: /* misaligned */
            x = batch[get8() % n] + 1 + get8() % (UNIT - 1);
            bad = j;
            break;
        default:
            break;
        }
        for (size_t i = n; i > j; i--)
            batch[i] = batch[i - 1];
        batch[j] = x;
        n++;
    }
    size_t want = bad < n ? bad : n;
    size_t got = kbuddy_free_many(&heap, (void *const *)batch, n);
    if (got != want) {
        fprintf(stderr, "fuzz_heap: free_many returned %zu, wanted %zu\n", got, want);
        violation("free_many stopped at the wrong entry");
    }
    for (size_t i = 0; i < want; i++)
        if (batch[i])
            drop(slot_of(batch[i]));
}

static void op_bad_free(void) {
    uint8_t kind = get8();
    switch (kind % 7) {
    case 0: { /* wrong size */
        if (!nlive)
            return;
        live_t *l = &live[get8() % nlive];
        size_t wrong = l->size + 1 + get8();
        if (get8() % 2 && l->size)
            wrong = get16() % l->size; /* smaller */
        before_t b = before_take();
        refused(kbuddy_free_sized(&heap, l->p, wrong, 1), KBUDDY_ESIZE, &b);
        expect_pattern(l);
        return;
    }
    case 1: { /* wrong alignment */
        if (!nlive)
            return;
        live_t *l = &live[get8() % nlive];
        uintptr_t p = (uintptr_t)l->p;
        size_t bad = get8() % 2 ? (size_t)(p & (~p + 1)) << 1 : (size_t)(get8() | 1) * 3;
        before_t b = before_take();
        refused(kbuddy_free_sized(&heap, l->p, l->size, bad), KBUDDY_ESIZE, &b);
        return;
    }
    case 2: { /* interior or misaligned */
        if (!nlive)
            return;
        live_t *l = &live[get8() % nlive];
        size_t off = 1 + (size_t)get16() % (l->usable - 1 + 1);
        if (off >= l->usable)
            off = 1;
        before_t b = before_take();
        refused(kbuddy_free(&heap, l->p + off), KBUDDY_EBADPTR, &b);
        if (kbuddy_usable_size(&heap, l->p + off) != 0)
            violation("usable_size of an interior pointer");
        before_t b2 = before_take();
        if (kbuddy_realloc(&heap, l->p + off, 8, 1) != NULL)
            violation("realloc of an interior pointer");
        after_compare(&b2);
        expect_pattern(l);
        return;
    }
    case 3: { /* foreign */
        uintptr_t a = (uintptr_t)arena + (size_t)get32() % ARENA_SIZE;
        if (region_holding(a))
            a = (uintptr_t)&heap;
        before_t b = before_take();
        refused(kbuddy_free(&heap, (void *)a), KBUDDY_EFOREIGN, &b);
        return;
    }
    case 4: { /* double */
        if (!freed_next)
            return;
        size_t n = freed_next < FREED_RING ? freed_next : FREED_RING;
        uintptr_t a = freed_ring[get8() % n];
        if (!region_holding(a))
            return;
        int16_t o = owner[unit_of(a)];
        before_t b = before_take();
        if (o == -1)
            refused(kbuddy_free(&heap, (void *)a), KBUDDY_EDOUBLEFREE, &b);
        else if ((uintptr_t)live[o].p != a)
            refused(kbuddy_free(&heap, (void *)a), KBUDDY_EBADPTR, &b);
        return;
    }
    case 5: { /* the head of a region: bookkeeping */
        if (!nregions)
            return;
        const region_t *r = &regions[get8() % nregions];
        before_t b = before_take();
        refused(kbuddy_free(&heap, (void *)(r->start + get8() % 64)), KBUDDY_EBADPTR, &b);
        return;
    }
    default: { /* NULL is fine and changes nothing */
        before_t b = before_take();
        refused(kbuddy_free(&heap, NULL), KBUDDY_OK, &b);
        return;
    }
    }
}

/* realloc, or with in_place kbuddy_resize_in_place, which must succeed
 * exactly where realloc would keep the pointer: always for sizes that fit
 * the usable size, never by moving; refused, nothing changes. */
static void op_realloc(bool in_place) {
    if (!nlive)
        return;
    size_t slot = get8() % nlive;
    live_t *l = &live[slot];
    expect_pattern(l);
    size_t nsize = decode_size();
    bool valid = nsize <= SIZE_MAX - (UNIT - 1);
    kbuddy_stats before;
    kbuddy_get_stats(&heap, &before);
    unsigned char *q;
    if (in_place) {
        kbuddy_status st = kbuddy_resize_in_place(&heap, l->p, nsize, l->align);
        if (st != KBUDDY_OK && st != KBUDDY_ENOMEM)
            violation("resize of a live block gave a pointer error");
        q = st == KBUDDY_OK ? l->p : NULL;
    } else {
        q = kbuddy_realloc(&heap, l->p, nsize, l->align);
    }
    if (q && !valid)
        violation("realloc to an overflowing size succeeded");
    if (!q) {
        if (valid && round_units(nsize) <= l->usable)
            violation("realloc to a size that fits failed");
        if (!in_place && valid && block_needed(nsize, l->align) <= before.largest_free)
            violation("realloc failed though a move would fit");
        kbuddy_stats after;
        kbuddy_get_stats(&heap, &after);
        if (memcmp(&before, &after, sizeof after) != 0)
            violation("failed realloc changed the statistics");
        expect_pattern(l);
        return;
    }
    size_t nusable = round_units(nsize);
    if (nusable <= l->usable && q != l->p)
        violation("realloc that fits moved");
    if ((uintptr_t)q % (l->align > UNIT ? l->align : UNIT))
        violation("realloc misaligned");
    size_t keep = l->size < nsize ? l->size : nsize;
    for (size_t i = 0; i < keep; i++)
        if (q[i] != pattern(l->seed, i))
            violation("realloc lost the contents");
    if (q != l->p)
        freed_ring[freed_next++ % FREED_RING] = (uintptr_t)l->p;
    disown((uintptr_t)l->p, l->usable);
    sum_usable -= l->usable;
    sum_size -= l->size;
    l->p = q;
    l->size = nsize;
    l->usable = nusable;
    l->seed = next_seed++;
    own(slot, (uintptr_t)q, nusable);
    sum_usable += nusable;
    sum_size += nsize;
    fill(q, nusable, l->seed);
    if (kbuddy_usable_size(&heap, q) != nusable)
        violation("usable_size after realloc");
}

static void op_probe(void) {
    kbuddy_stats st;
    kbuddy_get_stats(&heap, &st);
    if (st.largest_free) {
        void *p = kbuddy_alloc(&heap, st.largest_free, 1);
        if (!p)
            violation("alloc(largest_free) failed");
        if (kbuddy_free(&heap, p) != KBUDDY_OK)
            violation("free after probe");
    }
    volatile size_t more = st.largest_free + 1;
    void *q = kbuddy_alloc(&heap, more, 1);
    if (q)
        violation("alloc(largest_free + 1) succeeded");
    kbuddy_stats after;
    kbuddy_get_stats(&heap, &after);
    if (memcmp(&st, &after, sizeof st) != 0)
        violation("probe changed the statistics");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    in = data;
    in_left = size;
    kbuddy_init(&heap);
    nlive = nregions = bytes_added = total_expected = sum_usable = sum_size = 0;
    freed_next = 0;
    next_seed = 1;
    refusals = 0;
    memset(owner, 0xFF, sizeof owner);

    for (op_no = 0; in_left && op_no < 4096; op_no++) {
        uint8_t op = get8();
        switch (op % 16) {
        case 0:
            if (nregions < MAX_REGIONS)
                op_add_region();
            break;
        case 1:
        case 2:
        case 3:
            op_alloc();
            break;
        case 4: {
            uint8_t b = get8();
            if (!(b & 1))
                op_free_many();
            else if (b & 2)
                op_alloc_each();
            else
                op_alloc_many();
            break;
        }
        case 5:
        case 6:
            op_free(0);
            break;
        case 7:
            op_free(1);
            break;
        case 8:
        case 9:
            op_bad_free();
            break;
        case 10:
            op_realloc(false);
            break;
        case 11:
            op_realloc(true);
            break;
        case 12:
            if (nlive) {
                const live_t *l = &live[get8() % nlive];
                if (kbuddy_usable_size(&heap, l->p) != l->usable)
                    violation("usable_size");
            }
            break;
        case 13:
            walk_expect();
            break;
        case 14:
            op_probe();
            break;
        default: {
            /* Switch placement now and then: every contract holds under
             * both, also for blocks placed under the other. */
            uint8_t x = get8();
            if (x & 0x80) {
                if (kbuddy_set_placement(&heap, x & 1 ? KBUDDY_PLACE_FAST : KBUDDY_PLACE_DENSE) !=
                    KBUDDY_OK)
                    violation("set_placement");
                if ((x & 0x40) && kbuddy_set_placement(&heap, (kbuddy_placement)(2 + (x & 0x3f))) !=
                                      KBUDDY_EINVAL)
                    violation("set_placement of an unknown value");
            }
            if (kbuddy_check(&heap) != KBUDDY_OK)
                violation("kbuddy_check");
            break;
        }
        }
        stats_expect();
        if (op_no % CHECK_EVERY == 0 && kbuddy_check(&heap) != KBUDDY_OK)
            violation("kbuddy_check");
    }
    if (kbuddy_check(&heap) != KBUDDY_OK)
        violation("kbuddy_check at end");
    walk_expect();
    while (nlive) {
        expect_pattern(&live[nlive - 1]);
        if (kbuddy_free_sized(&heap, live[nlive - 1].p, live[nlive - 1].size,
                              live[nlive - 1].align) != KBUDDY_OK)
            violation("final free");
        drop(nlive - 1);
    }
    stats_expect();
    if (kbuddy_check(&heap) != KBUDDY_OK)
        violation("kbuddy_check after freeing everything");
    return 0;
}
