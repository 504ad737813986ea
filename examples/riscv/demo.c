/*
 * The demo's test logic (see demo.h): the same code runs in the QEMU kernel
 * and, when the cross tools are missing, in a host process.
 *
 * Every check goes through EXPECT, which prints what failed and counts it;
 * demo_finish turns the count into the exit status. Output lines stay
 * within 80 columns.
 */
#include "demo.h"

#include "../heapmap.h"
#include "kbuddy_malloc.h"
#include "printf.h"

#include <stdatomic.h>

kbuddy_heap kheap = KBUDDY_HEAP_INIT;
kbuddy_frames kframes;
char demo_cpu_name[DEMO_MAX_CPUS][16];

/* The shipped spinlock, counting how often a CPU found it taken: proof that
 * the CPUs really did overlap. `taken` is only touched under the lock. */
struct counted_lock {
    kbuddy_spinlock sl;
    unsigned long taken;
    _Atomic unsigned long waited;
};

static void counted_acquire(void *ctx) {
    struct counted_lock *l = ctx;
    if (!kbuddy_spinlock_try_acquire(&l->sl)) {
        atomic_fetch_add_explicit(&l->waited, 1ul, memory_order_relaxed);
        kbuddy_spinlock_acquire(&l->sl);
    }
    l->taken++;
}

static void counted_release(void *ctx) {
    struct counted_lock *l = ctx;
    kbuddy_spinlock_release(&l->sl);
}

static struct counted_lock heap_lock = {KBUDDY_SPINLOCK_INIT, 0, 0};
static struct counted_lock frames_lock = {KBUDDY_SPINLOCK_INIT, 0, 0};
static struct counted_lock malloc_lock = {KBUDDY_SPINLOCK_INIT, 0, 0};
static size_t window_lo, window_n; /* the frame window */
static _Atomic unsigned int failures;

/* ------------------------------------------------------------------------ */
/* Checks and small helpers                                                  */
/* ------------------------------------------------------------------------ */

void demo_fail(const char *file, int line, const char *fmt, ...) {
    unsigned n = atomic_fetch_add(&failures, 1u);
    if (n >= 20) /* the first ones tell the story */
        return;
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    kvsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kprintf("  FAILED (%s:%d): %s\n", file, line, msg);
}

unsigned demo_failures(void) { return atomic_load(&failures); }

static const char *status_name(kbuddy_status st) {
    static const char *const names[] = {"OK",       "ENOMEM",  "EINVAL",      "EOVERLAP", "EFOREIGN",
                                        "EBADPTR",  "EDOUBLEFREE", "ESIZE",   "ECORRUPT"};
    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "?";
}

static const char *ok(kbuddy_status st) { return st == KBUDDY_OK ? "ok" : status_name(st); }

/* xorshift64*: each CPU its own deterministic stream. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(0x2545f4914f6cdd1d);
}

/* ------------------------------------------------------------------------ */
/* init_heap and heap_test                                                   */
/* ------------------------------------------------------------------------ */

void demo_init_heap(void *space, size_t size) {
    kbuddy_lock hook = {counted_acquire, counted_release, &heap_lock}; /* copied */
    kbuddy_init(&kheap);
    kbuddy_set_lock(&kheap, &hook);
    kbuddy_status st = kbuddy_add_region(&kheap, space, size);
    kprintf("[heap] init_heap: HEAP_SPACE %p, KERNEL_HEAP_SIZE 0x%zx -> %s\n", space, size, ok(st));
    EXPECT(st == KBUDDY_OK);
}

void demo_heap_test(uintptr_t bss_lo, uintptr_t bss_hi) {
    unsigned before = demo_failures();
    /* let a = Box::new(5); */
    long *a = kbuddy_alloc(&kheap, sizeof *a, _Alignof(long));
    EXPECT(a != NULL);
    if (!a)
        return;
    *a = 5;
    EXPECT(*a == 5);
    EXPECT((uintptr_t)a >= bss_lo && (uintptr_t)a < bss_hi);
    kprintf("[heap] heap_test: Box::new(5) at %p, inside .bss, holds %ld\n", (void *)a, *a);
    EXPECT(kbuddy_free(&kheap, a) == KBUDDY_OK); /* drop(a) */

    /* let mut v: Vec<usize> = Vec::new(); for i in 0..500 { v.push(i); }
     * Vec's growth: capacity 4 on the first push, doubled when full. */
    size_t *v = NULL, len = 0, cap = 0;
    unsigned grows = 0, in_place = 0;
    for (size_t i = 0; i < 500; i++) {
        if (len == cap) {
            size_t ncap = cap ? 2 * cap : 4;
            size_t *nv = kbuddy_realloc(&kheap, v, ncap * sizeof *v, _Alignof(size_t));
            EXPECT(nv != NULL);
            if (!nv)
                break;
            grows++;
            in_place += v && nv == v;
            v = nv;
            cap = ncap;
        }
        v[len++] = i;
    }
    bool values = len == 500;
    for (size_t i = 0; i < len; i++)
        values &= v[i] == i;
    EXPECT(values);
    EXPECT((uintptr_t)v >= bss_lo && (uintptr_t)v + len * sizeof *v <= bss_hi);
    kprintf("[heap] heap_test: Vec of 500 at %p, inside .bss, holds 0..499 (%s)\n", (void *)v,
            values ? "yes" : "NO");
    kprintf("[heap]   grown by %u kbuddy_realloc calls to capacity %zu, %u of them in place\n",
            grows, cap, in_place);
    EXPECT(kbuddy_free(&kheap, v) == KBUDDY_OK); /* drop(v) */
    EXPECT(kbuddy_check(&kheap) == KBUDDY_OK);
    kputs(demo_failures() == before ? "heap_test passed!\n" : "heap_test FAILED\n");
}

/* ------------------------------------------------------------------------ */
/* The global allocator                                                      */
/* ------------------------------------------------------------------------ */

/* kbm_free and friends return nothing: a refusal reaches this hook. */
static _Atomic unsigned int kbm_refusals;
static _Atomic int kbm_last_refusal;

static void kbm_bad_free(void *ptr, kbuddy_status st, const char *func) {
    (void)ptr;
    (void)func;
    atomic_store(&kbm_last_refusal, (int)st);
    atomic_fetch_add(&kbm_refusals, 1u);
}

void demo_init_malloc(void *space, size_t size) {
    kbuddy_malloc_hooks hooks = {0};
    hooks.cpu_id = plat_cpu_id;
    hooks.irq_save = plat_irq_save;
    hooks.irq_restore = plat_irq_restore;
    hooks.lock = (kbuddy_lock){counted_acquire, counted_release, &malloc_lock};
    hooks.bad_free = kbm_bad_free;
    kbuddy_malloc_set_hooks(&hooks);
    kbuddy_status st = kbuddy_malloc_add_region(space, size);
    kprintf("[malloc] global allocator: %p, 0x%zx bytes -> %s; kbm_malloc\n", space,
            size, ok(st));
    kprintf("[malloc]   and friends, per-CPU caches of blocks up to %zu B in front\n",
            (size_t)KBUDDY_MALLOC_CACHE_MAX);
    EXPECT(st == KBUDDY_OK);
}

/* ------------------------------------------------------------------------ */
/* Frames                                                                    */
/* ------------------------------------------------------------------------ */

void demo_init_frames(size_t base, size_t nframes) {
    size_t meta_size = kbuddy_frames_meta_size(nframes);
    void *meta = kbuddy_alloc(&kheap, meta_size, 8);
    EXPECT(meta != NULL);
    kbuddy_status st = meta ? kbuddy_frames_init(&kframes, base, nframes, meta, meta_size)
                            : KBUDDY_ENOMEM;
    EXPECT(st == KBUDDY_OK);
    kbuddy_lock hook = {counted_acquire, counted_release, &frames_lock}; /* init cleared it */
    kbuddy_frames_set_lock(&kframes, &hook);
    window_lo = base;
    window_n = nframes;
    kprintf("[frames] window 0x%zx..0x%zx (%zu frames of 4 KiB) -> %s\n", base, base + nframes,
            nframes, ok(st));
    kprintf("[frames]   its %zu bytes of bookkeeping come from the heap, at %p\n", meta_size, meta);
}

void demo_add_frames(size_t first, size_t count, const char *what) {
    kbuddy_status st = kbuddy_frames_add(&kframes, first, count);
    kprintf("[frames] add 0x%zx..0x%zx %6zu frames, %s -> %s\n", first, first + count, count, what,
            ok(st));
    EXPECT(st == KBUDDY_OK);
}

/* ------------------------------------------------------------------------ */
/* Statistics and maps                                                       */
/* ------------------------------------------------------------------------ */

void demo_snapshot(struct demo_snapshot *s) {
    kbuddy_get_stats(&kheap, &s->heap);
    kbuddy_frames_get_stats(&kframes, &s->frames);
    kbuddy_malloc_stats m;
    kbuddy_malloc_get_stats(&m);
    s->kbm_live = m.live_blocks;
    s->kbm_cached = m.cached_blocks;
    s->kbm_allocated = m.heap.allocated - m.internal_bytes;
}

bool demo_same(const struct demo_snapshot *a, const struct demo_snapshot *b) {
    const kbuddy_stats *x = &a->heap, *y = &b->heap;
    const kbuddy_frame_stats *f = &a->frames, *g = &b->frames;
    return x->total == y->total && x->allocated == y->allocated && x->user == y->user &&
           x->overhead == y->overhead && x->largest_free == y->largest_free &&
           x->allocations == y->allocations && x->regions == y->regions && f->total == g->total &&
           f->allocated == g->allocated && f->largest_free == g->largest_free &&
           a->kbm_live == b->kbm_live && a->kbm_cached == b->kbm_cached &&
           a->kbm_allocated == b->kbm_allocated;
}

/* heapmap.h draws "  [<64 columns>] 0x<start> +<size>K", 86 columns with a
 * kernel address: print the region on its own line, then the map. */
static char map_line[128];
static size_t map_len;

static void heap_map_putc(char c) {
    if (c != '\n') {
        if (map_len + 1 < sizeof map_line)
            map_line[map_len++] = c;
        return;
    }
    map_line[map_len] = '\0';
    map_len = 0;
    char *tail = map_line;
    while (*tail && !(tail[0] == ']' && tail[1] == ' '))
        tail++;
    if (*tail) {
        tail[1] = '\0';
        kprintf("  heap region %s:\n%s\n", tail + 2, map_line);
    } else {
        kprintf("%s\n", map_line);
    }
}

#define FMAP_COLUMNS 64

struct frames_map {
    size_t per; /* frames per column */
    size_t used[FMAP_COLUMNS], managed[FMAP_COLUMNS];
};

static void frames_map_run(void *ctx, size_t first, size_t count, bool used) {
    struct frames_map *m = ctx;
    size_t f = first, end = first + count;
    while (f < end) {
        size_t col = (f - window_lo) / m->per;
        size_t col_end = window_lo + (col + 1) * m->per;
        size_t upto = end < col_end ? end : col_end;
        if (col < FMAP_COLUMNS) {
            m->managed[col] += upto - f;
            if (used)
                m->used[col] += upto - f;
        }
        f = upto;
    }
}

void demo_show_frames(const char *title) {
    static struct frames_map m;
    for (size_t c = 0; c < FMAP_COLUMNS; c++)
        m.used[c] = m.managed[c] = 0;
    m.per = (window_n + FMAP_COLUMNS - 1) / FMAP_COLUMNS;
    if (m.per == 0)
        return;
    kbuddy_frames_walk(&kframes, frames_map_run, &m);
    char line[FMAP_COLUMNS + 8], *p = line;
    *p++ = ' ';
    *p++ = ' ';
    *p++ = '[';
    for (size_t c = 0; c < FMAP_COLUMNS; c++) {
        size_t u = m.used[c], n = m.managed[c];
        *p++ = n == 0 ? '-' : u == 0 ? '.' : u >= n ? '#' : u * 4 < n ? ':' : '+';
    }
    *p++ = ']';
    *p = '\0';
    kprintf("  frames 0x%zx..0x%zx, %zu frames per column%s%s:\n%s\n", window_lo,
            window_lo + window_n, m.per, title ? ", " : "", title ? title : "", line);
}

void demo_show(const char *title) {
    static bool legend;
    kbuddy_stats s;
    kbuddy_frame_stats f;
    kbuddy_get_stats(&kheap, &s);
    kbuddy_frames_get_stats(&kframes, &f);
    kbuddy_status hc = kbuddy_check(&kheap), fc = kbuddy_frames_check(&kframes);
    EXPECT(hc == KBUDDY_OK);
    EXPECT(fc == KBUDDY_OK);
    kprintf("== %s\n", title);
    kprintf("  heap:   %zu region, total %zu, allocated %zu (user %zu) in %zu blocks\n",
            s.regions, s.total, s.allocated, s.user, s.allocations);
    kprintf("          overhead %zu, largest free %zu, kbuddy_check: %s\n", s.overhead,
            s.largest_free, ok(hc));
    kprintf("  frames: %zu added, %zu allocated, largest free run %zu, check: %s\n", f.total,
            f.allocated, f.largest_free, ok(fc));
    kbuddy_malloc_stats m;
    kbuddy_malloc_get_stats(&m);
    kbuddy_status mc = kbuddy_malloc_check();
    EXPECT(mc == KBUDDY_OK);
    kprintf("  kbm:    %zu live blocks, %zu cached (%zu in the depot), %zu caches,\n",
            m.live_blocks, m.cached_blocks, m.depot_blocks, m.caches);
    kprintf("          heap %zu of %zu allocated (%zu its own), check: %s\n",
            m.heap.allocated, m.heap.total, m.internal_bytes, ok(mc));
    if (!legend) {
        kputs("  heap map: one letter per run of blocks, upper case in use, lower case\n"
              "    free; the letter is its size: a < 64 B, b < 128 B, ... k < 64 KiB,\n"
              "    p < 2 MiB (each letter doubles)\n"
              "  frame map: one column per share of the window: '.' free, ':' < 1/4\n"
              "    used, '+' partly used, '#' all used, '-' unmanaged\n");
        legend = true;
    }
    heapmap_print(&kheap, heap_map_putc);
    demo_show_frames(NULL);
}

/* ------------------------------------------------------------------------ */
/* Huge-page runs                                                            */
/* ------------------------------------------------------------------------ */

#define MAX_HUGE 1024 /* 2 GiB */

static uint64_t huge_word(size_t frame) { return UINT64_C(0x4b42554444590000) ^ frame; }

void demo_huge_runs(const struct demo_huge_hooks *h) {
    static size_t run[MAX_HUGE];
    struct demo_snapshot before, after;
    demo_snapshot(&before);
    size_t n = 0;
    kbuddy_status st = KBUDDY_OK;
    while (n < MAX_HUGE) {
        st = kbuddy_frames_alloc(&kframes, DEMO_HUGE_FRAMES, DEMO_HUGE_FRAMES, &run[n]);
        if (st != KBUDDY_OK)
            break;
        EXPECT(run[n] % DEMO_HUGE_FRAMES == 0);
        n++;
    }
    EXPECT(st == KBUDDY_ENOMEM || n == MAX_HUGE);
    EXPECT(n > 0);
    kprintf("[huge] %zu runs of 512 frames, all 2 MiB aligned, %s\n", n,
            st == KBUDDY_OK ? "(the demo's limit)" : "then ENOMEM");

    /* Write one word per 4 KiB page through the mapping, read it back at
     * the frame's own address: the mapping points where it should. */
    size_t good = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char *va = h ? h->map(i, run[i]) : plat_frame_addr(run[i]);
        EXPECT(va != NULL);
        if (!va)
            continue;
        for (size_t pg = 0; pg < DEMO_HUGE_FRAMES; pg++)
            *(volatile uint64_t *)(va + (pg << DEMO_PAGE_SHIFT)) = huge_word(run[i] + pg);
        bool same = true;
        for (size_t pg = 0; pg < DEMO_HUGE_FRAMES; pg++)
            same &= *(volatile uint64_t *)plat_frame_addr(run[i] + pg) == huge_word(run[i] + pg);
        EXPECT(same);
        good += same;
    }
    kprintf("[huge] a word in every page written through %s,\n"
            "[huge]   read back at the frame's own address: %zu of %zu runs right\n",
            h ? h->through : "the run's address", good, n);
    demo_show_frames("every 2 MiB run taken");
    for (size_t i = 0; i < n; i++) {
        if (h)
            h->unmap(i, run[i]);
        EXPECT(kbuddy_frames_free(&kframes, run[i], DEMO_HUGE_FRAMES) == KBUDDY_OK);
    }
    demo_snapshot(&after);
    bool same = demo_same(&before, &after);
    EXPECT(same);
    EXPECT(kbuddy_frames_check(&kframes) == KBUDDY_OK);
    kprintf("[huge] %s: frame statistics restored: %s\n", h ? "unmapped and freed" : "freed",
            same ? "yes" : "NO");
}

/* ------------------------------------------------------------------------ */
/* SMP stress                                                                */
/* ------------------------------------------------------------------------ */

#define HEAP_SLOTS 160
#define KBM_SLOTS 128
#define FRAME_SLOTS 16
#define MAILBOXES 16

struct heap_slot {
    unsigned char *p;
    size_t size, align;
    unsigned char tag;
};

struct frame_slot {
    size_t first, count;
};

struct cpu_counts {
    unsigned long allocs, frees, reallocs, full, frame_runs, frame_full, checks;
    unsigned long kbm_allocs, kbm_frees, kbm_reallocs, kbm_full, kbm_remote;
    uint64_t us;
};

static struct cpu_work {
    struct heap_slot h[HEAP_SLOTS];
    struct heap_slot m[KBM_SLOTS]; /* kbm_malloc blocks (align unused) */
    struct frame_slot f[FRAME_SLOTS];
    uint64_t rng;
    struct cpu_counts c;
} work[DEMO_MAX_CPUS];

static unsigned smp_ncpu;
static struct demo_snapshot smp_before;
static kbuddy_malloc_stats kbm_before;
/* kbm blocks on their way from the CPU that allocated them to whichever
 * CPU takes them out and frees them. */
static _Atomic(uintptr_t) mailbox[MAILBOXES];
static _Atomic unsigned int barrier_count, barrier_generation;

static void barrier(void) {
    unsigned gen = atomic_load(&barrier_generation);
    if (atomic_fetch_add(&barrier_count, 1u) + 1u == smp_ncpu) {
        atomic_store(&barrier_count, 0u);
        atomic_fetch_add(&barrier_generation, 1u);
    } else {
        while (atomic_load(&barrier_generation) == gen)
            plat_relax();
    }
}

static unsigned char pattern(unsigned char tag, size_t i) {
    return (unsigned char)(tag ^ (i * 7u) ^ (i >> 8));
}

static void fill(unsigned char *p, size_t from, size_t to, unsigned char tag) {
    for (size_t i = from; i < to; i++)
        p[i] = pattern(tag, i);
}

static bool intact_from(const unsigned char *p, size_t from, size_t to, unsigned char tag) {
    for (size_t i = from; i < to; i++)
        if (p[i] != pattern(tag, i))
            return false;
    return true;
}

static bool intact(const unsigned char *p, size_t n, unsigned char tag) {
    return intact_from(p, 0, n, tag);
}

static uint64_t frame_word(size_t frame, unsigned cpu) {
    return UINT64_C(0x9e3779b97f4a7c15) * (frame + 1) ^ ((uint64_t)cpu << 56);
}

static void frames_fill(const struct frame_slot *s, unsigned cpu) {
    for (size_t f = s->first; f < s->first + s->count; f++) {
        uint64_t *w = plat_frame_addr(f);
        w[0] = frame_word(f, cpu);
        w[511] = ~frame_word(f, cpu);
    }
}

static bool frames_intact(const struct frame_slot *s, unsigned cpu) {
    for (size_t f = s->first; f < s->first + s->count; f++) {
        const uint64_t *w = plat_frame_addr(f);
        if (w[0] != frame_word(f, cpu) || w[511] != ~frame_word(f, cpu))
            return false;
    }
    return true;
}

/* Mostly small blocks, some pages, a few tens of KiB; alignments 1..4096. */
static size_t pick_size(uint64_t r) {
    unsigned c = (unsigned)(r % 100);
    if (c < 70)
        return 1 + (size_t)(r >> 8) % 256;
    if (c < 95)
        return 257 + (size_t)(r >> 8) % (4096 - 256);
    return 4097 + (size_t)(r >> 8) % (32768 - 4096);
}

static size_t pick_align(uint64_t r) {
    unsigned c = (unsigned)(r >> 40) % 16;
    return c < 8 ? 8 : (size_t)1 << ((r >> 48) % 13);
}

static void heap_op(struct cpu_work *w, uint64_t r) {
    struct heap_slot *s = &w->h[(r >> 3) % HEAP_SLOTS];
    if (!s->p) {
        size_t size = pick_size(r >> 8), align = pick_align(r);
        unsigned char *p = kbuddy_alloc(&kheap, size, align);
        if (!p) {
            w->c.full++;
            return;
        }
        EXPECT(((uintptr_t)p & (align - 1)) == 0);
        EXPECT(kbuddy_usable_size(&kheap, p) >= size);
        *s = (struct heap_slot){p, size, align, (unsigned char)(r >> 56)};
        fill(p, 0, size, s->tag);
        w->c.allocs++;
        return;
    }
    if ((r >> 12) % 4 == 0) { /* realloc: the common prefix must survive */
        size_t size = pick_size(r >> 16);
        unsigned char *q = kbuddy_realloc(&kheap, s->p, size, s->align);
        if (!q) {
            w->c.full++;
            EXPECT(intact(s->p, s->size, s->tag));
            return;
        }
        size_t keep = size < s->size ? size : s->size;
        EXPECT(((uintptr_t)q & (s->align - 1)) == 0);
        EXPECT(intact(q, keep, s->tag));
        fill(q, keep, size, s->tag);
        s->p = q;
        s->size = size;
        w->c.reallocs++;
        return;
    }
    EXPECT(intact(s->p, s->size, s->tag));
    kbuddy_status st = (r >> 14) & 1 ? kbuddy_free_sized(&kheap, s->p, s->size, s->align)
                                      : kbuddy_free(&kheap, s->p);
    EXPECT(st == KBUDDY_OK);
    s->p = NULL;
    w->c.frees++;
}

/* kbm_malloc: mostly what the per-CPU caches serve (up to 4 KiB), some
 * larger blocks that go to the core heap under the lock. */
static size_t kbm_pick_size(uint64_t r) {
    unsigned c = (unsigned)(r % 100);
    if (c < 75)
        return 1 + (size_t)(r >> 8) % 256;
    if (c < 95)
        return 257 + (size_t)(r >> 8) % (4096 - 256);
    return 4097 + (size_t)(r >> 8) % (16384 - 4096);
}

/* A block in a mailbox carries its size in its first word; the rest is
 * patterned with a tag taken from its address. */
static unsigned char mail_tag(const unsigned char *p) { return (unsigned char)((uintptr_t)p >> 5); }

static void take_mail(struct cpu_work *w, unsigned char *p) {
    size_t n = *(const size_t *)(const void *)p;
    EXPECT(n >= sizeof(size_t) && n <= 16384 && intact_from(p, sizeof(size_t), n, mail_tag(p)));
    kbm_free(p); /* most likely allocated on another CPU */
    w->c.kbm_frees++;
    w->c.kbm_remote++;
}

static void kbm_op(struct cpu_work *w, uint64_t r) {
    struct heap_slot *s = &w->m[(r >> 3) % KBM_SLOTS];
    if (!s->p) {
        size_t size = kbm_pick_size(r >> 8);
        bool zeroed = (r >> 20) % 8 == 0;
        unsigned char *p = zeroed ? kbm_calloc(1, size) : kbm_malloc(size);
        if (!p) {
            w->c.kbm_full++;
            return;
        }
        EXPECT(((uintptr_t)p & (KBUDDY_MIN_BLOCK - 1)) == 0);
        EXPECT(kbm_malloc_usable_size(p) >= size);
        if (zeroed) {
            bool zero = true;
            for (size_t i = 0; i < size; i++)
                zero &= p[i] == 0;
            EXPECT(zero);
        }
        *s = (struct heap_slot){p, size, 1, (unsigned char)(r >> 56)};
        fill(p, 0, size, s->tag);
        w->c.kbm_allocs++;
        return;
    }
    if ((r >> 12) % 4 == 0) { /* realloc: the common prefix must survive */
        size_t size = kbm_pick_size(r >> 16);
        unsigned char *q = kbm_realloc(s->p, size);
        if (!q) {
            w->c.kbm_full++;
            EXPECT(intact(s->p, s->size, s->tag));
            return;
        }
        size_t keep = size < s->size ? size : s->size;
        EXPECT(intact(q, keep, s->tag));
        fill(q, keep, size, s->tag);
        s->p = q;
        s->size = size;
        w->c.kbm_reallocs++;
        return;
    }
    EXPECT(intact(s->p, s->size, s->tag));
    if ((r >> 14) % 4 == 0 && s->size >= sizeof(size_t)) {
        /* Post it for another CPU to free; free what was there. */
        *(size_t *)(void *)s->p = s->size;
        fill(s->p, sizeof(size_t), s->size, mail_tag(s->p));
        uintptr_t old = atomic_exchange(&mailbox[(r >> 24) % MAILBOXES], (uintptr_t)s->p);
        if (old)
            take_mail(w, (unsigned char *)old);
    } else {
        if ((r >> 17) & 1)
            kbm_free_sized(s->p, s->size);
        else
            kbm_free(s->p);
        w->c.kbm_frees++;
    }
    s->p = NULL;
}

static void frame_op(struct cpu_work *w, unsigned cpu, uint64_t r) {
    struct frame_slot *s = &w->f[(r >> 3) % FRAME_SLOTS];
    if (s->count) {
        EXPECT(frames_intact(s, cpu));
        EXPECT(kbuddy_frames_free(&kframes, s->first, s->count) == KBUDDY_OK);
        s->count = 0;
        return;
    }
    size_t count = 1 + (size_t)(r >> 8) % 16;
    size_t align = (r >> 20) & 1 ? (size_t)1 << ((r >> 21) % 5) : 1;
    size_t first;
    kbuddy_status st = kbuddy_frames_alloc(&kframes, count, align, &first);
    if (st != KBUDDY_OK) {
        EXPECT(st == KBUDDY_ENOMEM);
        w->c.frame_full++;
        return;
    }
    EXPECT(first % align == 0);
    *s = (struct frame_slot){first, count};
    frames_fill(s, cpu);
    w->c.frame_runs++;
}

static void release_all(struct cpu_work *w, unsigned cpu) {
    for (size_t i = 0; i < KBM_SLOTS; i++) {
        struct heap_slot *s = &w->m[i];
        if (s->p) {
            EXPECT(intact(s->p, s->size, s->tag));
            kbm_free(s->p);
            s->p = NULL;
            w->c.kbm_frees++;
        }
    }
    for (size_t i = 0; i < HEAP_SLOTS; i++) {
        struct heap_slot *s = &w->h[i];
        if (s->p) {
            EXPECT(intact(s->p, s->size, s->tag));
            EXPECT(kbuddy_free(&kheap, s->p) == KBUDDY_OK);
            s->p = NULL;
            w->c.frees++;
        }
    }
    for (size_t i = 0; i < FRAME_SLOTS; i++) {
        struct frame_slot *s = &w->f[i];
        if (s->count) {
            EXPECT(frames_intact(s, cpu));
            EXPECT(kbuddy_frames_free(&kframes, s->first, s->count) == KBUDDY_OK);
            s->count = 0;
        }
    }
}

void demo_smp_setup(unsigned ncpu) {
    smp_ncpu = ncpu ? ncpu : 1;
    demo_snapshot(&smp_before);
    heap_lock.taken = frames_lock.taken = 0;
    atomic_store(&heap_lock.waited, 0ul);
    atomic_store(&frames_lock.waited, 0ul);
    kbuddy_malloc_get_stats(&kbm_before); /* takes the lock: count from here */
    malloc_lock.taken = 0;
    atomic_store(&malloc_lock.waited, 0ul);
    for (unsigned i = 0; i < smp_ncpu; i++)
        work[i].rng = UINT64_C(0x9e3779b97f4a7c15) * (i + 1);
    kprintf("[smp] %u CPUs x %u operations, every byte patterned and checked:\n", smp_ncpu,
            (unsigned)DEMO_SMP_OPS);
    kputs("[smp]   1/2 kbuddy_alloc/realloc/free of 1 B..32 KiB aligned 1..4096;\n"
          "[smp]   3/8 kbm_malloc/calloc/realloc/free of 1 B..16 KiB, a quarter of\n"
          "[smp]   the frees left in mailboxes for another CPU to free;\n");
    kputs("[smp]   1/8 frame runs of 1..16; a kbuddy_spinlock per allocator (kbm:\n"
          "[smp]   behind its per-CPU caches); CPU 0 also checks\n");
}

void demo_smp_run(unsigned cpu) {
    struct cpu_work *w = &work[cpu];
    barrier(); /* everyone is here: go */
    uint64_t t0 = plat_time_us();
    for (unsigned op = 0; op < DEMO_SMP_OPS; op++) {
        uint64_t r = rng_next(&w->rng);
        if (r % 8 == 0)
            frame_op(w, cpu, r);
        else if (r % 8 < 4)
            kbm_op(w, r);
        else
            heap_op(w, r);
        if (cpu == 0 && op % 1500 == 1499) { /* checks under fire */
            EXPECT(kbuddy_check(&kheap) == KBUDDY_OK);
            EXPECT(kbuddy_frames_check(&kframes) == KBUDDY_OK);
            w->c.checks++;
        }
    }
    w->c.us = plat_time_us() - t0;
    barrier(); /* everyone holds what it has: draw it */
    if (cpu == 0)
        demo_show("under load: every CPU holding its live blocks");
    barrier();
    release_all(w, cpu);
    barrier(); /* every slot is empty: CPU 0 empties the mailboxes */
    if (cpu == 0)
        for (unsigned i = 0; i < MAILBOXES; i++) {
            uintptr_t p = atomic_exchange(&mailbox[i], (uintptr_t)0);
            if (p)
                take_mail(w, (unsigned char *)p);
        }
    barrier();
    kbuddy_malloc_flush_caches(); /* this CPU's cache (and the depot) */
    barrier(); /* everything is back */
    if (cpu != 0)
        return;

    struct cpu_counts total = {0};
    kprintf("  %-3s  %-9s %11s %8s %11s %8s %11s %5s\n", "cpu", "name", "heap allocs",
            "reallocs", "kbm allocs", "reallocs", "frame runs", "ms");
    for (unsigned i = 0; i < smp_ncpu; i++) {
        const struct cpu_counts *c = &work[i].c;
        kprintf("  %-3u  %-9s %11lu %8lu %11lu %8lu %11lu %5lu\n", i, demo_cpu_name[i],
                c->allocs, c->reallocs, c->kbm_allocs, c->kbm_reallocs, c->frame_runs,
                (unsigned long)(c->us / 1000));
        EXPECT(c->allocs == c->frees);
        total.allocs += c->allocs;
        total.frees += c->frees;
        total.reallocs += c->reallocs;
        total.full += c->full;
        total.frame_runs += c->frame_runs;
        total.frame_full += c->frame_full;
        total.checks += c->checks;
        total.kbm_allocs += c->kbm_allocs;
        total.kbm_frees += c->kbm_frees;
        total.kbm_reallocs += c->kbm_reallocs;
        total.kbm_full += c->kbm_full;
        total.kbm_remote += c->kbm_remote;
    }
    EXPECT(total.allocs == total.frees);
    EXPECT(total.kbm_allocs == total.kbm_frees);
    kprintf("[smp] heap: %lu allocs = %lu frees, %lu reallocs, %lu full answers\n",
            total.allocs, total.frees, total.reallocs, total.full);
    kprintf("[smp] kbm: %lu allocs = %lu frees (%lu through a mailbox), %lu reallocs,\n",
            total.kbm_allocs, total.kbm_frees, total.kbm_remote, total.kbm_reallocs);
    kprintf("[smp]   %lu full answers\n", total.kbm_full);
    kprintf("[smp] frames: %lu runs, %lu full answers; %lu checks while the others ran\n",
            total.frame_runs, total.frame_full, total.checks);
    kprintf("[smp] locks taken (after waiting): heap %lu (%lu), frames %lu (%lu),\n",
            heap_lock.taken, atomic_load(&heap_lock.waited), frames_lock.taken,
            atomic_load(&frames_lock.waited));
    unsigned long kbm_taken = malloc_lock.taken, kbm_waited = atomic_load(&malloc_lock.waited);
    kprintf("[smp]   kbm %lu (%lu) for %lu kbm calls: the rest hit the caches\n", kbm_taken,
            kbm_waited, total.kbm_allocs + total.kbm_frees + total.kbm_reallocs);
    kbuddy_malloc_stats m;
    kbuddy_malloc_get_stats(&m);
    kprintf("[smp]   behind the caches: %zu magazine trades with the depot, %zu blocks\n"
            "[smp]   filled from and %zu drained to the core heap, %zu large calls\n",
            m.depot_trades - kbm_before.depot_trades, m.core_fills - kbm_before.core_fills,
            m.core_drains - kbm_before.core_drains, m.large_calls - kbm_before.large_calls);
    EXPECT(m.bad_frees == kbm_before.bad_frees); /* nothing refused */
    EXPECT(m.cached_blocks == 0);
    struct demo_snapshot now;
    demo_snapshot(&now);
    bool same = demo_same(&smp_before, &now);
    EXPECT(same);
    kbuddy_status hc = kbuddy_check(&kheap), fc = kbuddy_frames_check(&kframes);
    kbuddy_status mc = kbuddy_malloc_check();
    EXPECT(hc == KBUDDY_OK);
    EXPECT(fc == KBUDDY_OK);
    EXPECT(mc == KBUDDY_OK);
    kprintf("[smp] kbuddy_check: %s, kbuddy_frames_check: %s, kbuddy_malloc_check: %s,\n"
            "[smp]   caches flushed, stats restored: %s\n",
            ok(hc), ok(fc), ok(mc), same ? "yes" : "NO");
}

/* ------------------------------------------------------------------------ */
/* Bad input                                                                 */
/* ------------------------------------------------------------------------ */

static void refused(const char *what, kbuddy_status got, kbuddy_status want) {
    kprintf("  %-17s -> %s (%s)\n", what, status_name(got), kbuddy_strerror(got));
    EXPECT(got == want);
}

/* kbm_free returns nothing: the status is the one its bad_free hook got. */
static void kbm_refused(const char *what, void *ptr, kbuddy_status want) {
    unsigned before = atomic_load(&kbm_refusals);
    kbm_free(ptr);
    kbuddy_status got = atomic_load(&kbm_refusals) != before
                            ? (kbuddy_status)atomic_load(&kbm_last_refusal)
                            : KBUDDY_OK;
    refused(what, got, want);
}

void demo_bad_input(void) {
    unsigned char *p = kbuddy_alloc(&kheap, 100, 16), *q = kbuddy_alloc(&kheap, 300, 64);
    EXPECT(p && q);
    if (!p || !q)
        return;
    size_t f;
    EXPECT(kbuddy_frames_alloc(&kframes, 1, 1, &f) == KBUDDY_OK);
    int local = 0;
    kprintf("[bad input] p = alloc(100) = %p, q = alloc(300) = %p,\n", (void *)p, (void *)q);
    kprintf("[bad input]   &local = %p (on the stack), frame f = 0x%zx\n", (void *)&local, f);
    unsigned char *m = kbm_malloc(100);
    EXPECT(m != NULL);
    kprintf("[bad input] m = kbm_malloc(100) = %p, freed into this CPU's cache\n", (void *)m);
    EXPECT(kbuddy_free(&kheap, p) == KBUDDY_OK);
    EXPECT(kbuddy_frames_free(&kframes, f, 1) == KBUDDY_OK);
    kbm_free(m);

    struct demo_snapshot before, after;
    demo_snapshot(&before);
    refused("free(&local)", kbuddy_free(&kheap, &local), KBUDDY_EFOREIGN);
    refused("free(q + 64)", kbuddy_free(&kheap, q + 64), KBUDDY_EBADPTR);
    refused("free(p) again", kbuddy_free(&kheap, p), KBUDDY_EDOUBLEFREE);
    refused("free_sized(q,299)", kbuddy_free_sized(&kheap, q, 299, 64), KBUDDY_ESIZE);
    /* The window's first frame is firmware's (never added). */
    refused("frames_free(fw)", kbuddy_frames_free(&kframes, window_lo, 1), KBUDDY_EFOREIGN);
    refused("frames_free(f)", kbuddy_frames_free(&kframes, f, 1), KBUDDY_EDOUBLEFREE);
    kbm_refused("kbm_free(&local)", &local, KBUDDY_EFOREIGN);
    kbm_refused("kbm_free(m + 32)", m + 32, KBUDDY_EBADPTR);
    kbm_refused("kbm_free(m) again", m, KBUDDY_EDOUBLEFREE);
    demo_snapshot(&after);
    bool same = demo_same(&before, &after);
    EXPECT(same);
    kbuddy_status hc = kbuddy_check(&kheap), fc = kbuddy_frames_check(&kframes);
    EXPECT(hc == KBUDDY_OK);
    EXPECT(fc == KBUDDY_OK);
    kbuddy_status mc = kbuddy_malloc_check();
    EXPECT(mc == KBUDDY_OK);
    kprintf("[bad input] all refused; stats unchanged: %s; kbuddy_check: %s,"
            " frames: %s\n", same ? "yes" : "NO", ok(hc), ok(fc));
    kprintf("[bad input]   kbuddy_malloc_check: %s\n", ok(mc));
    EXPECT(kbuddy_free(&kheap, q) == KBUDDY_OK);
    kbuddy_malloc_flush_caches(); /* m goes back to the core heap */
}

/* ------------------------------------------------------------------------ */
/* The verdict                                                               */
/* ------------------------------------------------------------------------ */

int demo_finish(const struct demo_snapshot *start) {
    struct demo_snapshot now;
    demo_snapshot(&now);
    demo_show("at the end");
    bool same = demo_same(start, &now);
    EXPECT(same);
    kprintf("stats restored: %s (heap allocated %zu -> %zu, frames %zu -> %zu)\n",
            same ? "yes" : "NO", start->heap.allocated, now.heap.allocated,
            start->frames.allocated, now.frames.allocated);
    unsigned n = demo_failures();
    if (n == 0)
        kputs("kbuddy demo: all checks passed\n");
    else
        kprintf("kbuddy demo: %u checks FAILED\n", n);
    return n == 0 ? 0 : 1;
}
