/*
 * Giving memory back: free pages to the release hook, wholly free grown
 * regions to the ungrow hook. Part of kbuddy_malloc.c (included once, by
 * it, after kbm_regions.h).
 *
 * The core heap keeps nothing inside free memory, and the layer's tags of
 * free memory are all zero, so the pages of a free span, and the pages of
 * tag table that describe only free memory, can lose their contents without
 * telling anyone, provided that they read as zero when touched again
 * (anonymous memory after MADV_DONTNEED does). This runs under the lock, so
 * no allocation can take a span while its pages are being dropped.
 *
 * When: kbuddy_malloc_trim, at the program's request; and automatically,
 * from the paths that give memory back to the core heap in bulk (large
 * frees, magazines beyond the depot's bound, thread exit), but only once
 * the heap's free bytes have grown by RELEASE_STEP since the last time, so
 * that the cost is amortised over that many bytes freed and the fast paths
 * never see it. An automatic release gives back only whole free spans of
 * KBUDDY_MALLOC_RELEASE_SPAN (aligned), memory that is unlikely to be taken
 * again at once, and ungrows regions only while a step's worth of free
 * memory stays, so that a program that frees and allocates that much in
 * turn does not unmap and map a region every time.
 */

/* The smallest free span an automatic release gives back (a power of two,
 * at least the release page), and the free bytes that must pile up in the
 * core heap before one runs: at least KBUDDY_MALLOC_RELEASE_STEP and an
 * eighth of the heap. */
#ifndef KBUDDY_MALLOC_RELEASE_SPAN
#define KBUDDY_MALLOC_RELEASE_SPAN ((size_t)1 << 20)
#endif
#ifndef KBUDDY_MALLOC_RELEASE_STEP
#define KBUDDY_MALLOC_RELEASE_STEP ((size_t)32 << 20)
#endif

static size_t release_page(void) { return g_hooks.release_page ? g_hooks.release_page : 4096; }

static uintptr_t page_up(uintptr_t x, size_t page) { return (x + page - 1) & ~(uintptr_t)(page - 1); }
static uintptr_t page_down(uintptr_t x, size_t page) { return x & ~(uintptr_t)(page - 1); }

/* Hand the whole pages of [a, b) to the release hook; the bytes given. */
static size_t release_range(unsigned char *base, uintptr_t a, uintptr_t b, size_t page) {
    uintptr_t s = page_up(a, page), e = page_down(b, page);
    if (s >= e)
        return 0;
    g_hooks.release(base + (s - (uintptr_t)base), (size_t)(e - s), g_hooks.release_ctx);
    g_released_bytes += (size_t)(e - s);
    return (size_t)(e - s);
}

typedef struct releaser {
    size_t page, bytes;
    size_t skip; /* bytes of the lowest spans to leave alone */
} releaser;

/* A free span of the core heap (kbuddy_heap_trim, under the lock, in
 * address order): its pages, and the pages of tag table that describe
 * nothing but it; less the first rl->skip bytes of all spans. */
static void release_span(void *ctx, void *start, size_t size) {
    releaser *rl = ctx;
    if (rl->skip >= size) {
        rl->skip -= size;
        return;
    }
    unsigned char *p = start;
    start = p + rl->skip;
    size -= rl->skip;
    rl->skip = 0;
    uintptr_t a = (uintptr_t)start;
    rl->bytes += release_range(start, a, a + size, rl->page);
    const mregion *r = region_of(&g_lock_hint, a);
    if (r) {
        unsigned char *tags = (unsigned char *)(void *)r->tags;
        uintptr_t t = (uintptr_t)tags;
        rl->bytes += release_range(tags, t + ((a >> UNIT_SHIFT) - r->base),
                                   t + (((a + size) >> UNIT_SHIFT) - r->base), rl->page);
    }
}

/* Give back every grown region that is wholly free, as long as at least
 * `keep` free bytes stay in the heap (a region counts with all its bytes
 * after the tag table, so this errs on the side of keeping). Its entry is
 * marked gone; its tag table stays mapped but released (see kbm_tags.h),
 * and the rest goes to the ungrow hook. Returns the bytes given back. */
static size_t ungrow_free_regions(size_t keep) {
    if (!g_hooks.ungrow)
        return 0;
    size_t page = release_page(), bytes = 0;
    size_t n = atomic_load_explicit(&g_nregions, memory_order_relaxed);
    for (size_t i = n; i-- > 0;) { /* the newest (largest) first */
        mregion *r = &g_regions[i];
        uintptr_t core = (uintptr_t)r->core, end = r->start + r->size;
        if (!r->grown || region_gone(r))
            continue;
        if (keep) {
            kbuddy_stats st;
            kbuddy_get_stats(&g_heap, &st);
            size_t avail = st.total - st.allocated;
            if (avail < keep || avail - keep < (size_t)(end - core))
                continue;
        }
        if (kbuddy_remove_region(&g_heap, r->core) != KBUDDY_OK)
            continue; /* something in it is allocated */
        atomic_store_explicit(&r->gone, true, memory_order_relaxed);
        g_lock_hint = &g_no_region; /* it may have named r */
        g_region_bytes -= r->size;
        g_tag_bytes -= (size_t)(core - r->start);
        g_regions_returned++;
        if (g_hooks.release) {
            unsigned char *tags = (unsigned char *)(void *)r->tags;
            bytes += release_range(tags, (uintptr_t)tags, core, page);
        }
        uintptr_t head = page_up(core, page);
        if (head < end) {
            g_hooks.ungrow(r->core + (head - core), (size_t)(end - head), g_hooks.grow_ctx);
            bytes += (size_t)(end - head);
        }
    }
    return bytes;
}

/* A run of all-zero pages of the core heap's bookkeeping. */
static void release_zero_pages(void *ctx, void *start, size_t size) {
    releaser *rl = ctx;
    rl->bytes += release_range(start, (uintptr_t)start, (uintptr_t)start + size, rl->page);
}

/* Ungrow, then release the free spans of `span` bytes and more (aligned)
 * but the lowest `skip` bytes of them, and with `bookkeeping` the all-zero
 * pages of the core heap's bookkeeping too (every page of it is read: for
 * trims, not for automatic releases), with the lock held. Returns the
 * bytes given back. */
static size_t release_locked(size_t keep, size_t span, size_t skip, bool bookkeeping) {
    size_t bytes = ungrow_free_regions(keep);
    if (g_hooks.release) {
        size_t page = release_page();
        releaser rl = {page, 0, skip};
        (void)kbuddy_heap_trim(&g_heap, span > page ? span : page, release_span, &rl);
        if (bookkeeping)
            (void)kbuddy_heap_trim_bookkeeping(&g_heap, page, release_zero_pages, &rl);
        bytes += rl.bytes;
    }
    kbuddy_stats st;
    kbuddy_get_stats(&g_heap, &st);
    g_free_mark = st.total - st.allocated;
    return bytes;
}

/* The automatic release, with the lock held (a no-op call without hooks).
 * g_free_mark is the least free memory seen at a poll since the last
 * release: about that much stayed free all along, the rest was taken and
 * freed again meanwhile. When the free memory has grown a step above it,
 * whole free spans of KBUDDY_MALLOC_RELEASE_SPAN go back, but for the
 * lowest ones worth what was freed since (the core heap takes the lowest
 * free block of the smallest order that suffices, so those tend to come
 * back into use first), and grown regions go back only out of what stayed
 * free, a step's worth kept.
 *
 * Hysteresis: a program that frees and allocates a working set in turn
 * would otherwise have the same pages released and touched again every
 * time. So the step grows fourfold (to half the heap and more) whenever a release comes
 * due before the program has allocated the heap's size since the last one
 * (memory is being recycled, and released pages would be touched again),
 * and drops back to its base when one comes after that much. Allocation is
 * measured as the falls of the free memory between polls (an underestimate:
 * the step errs on the large side). O(1) when nothing is due. */
static size_t g_step = KBUDDY_MALLOC_RELEASE_STEP; /* under the lock */
static size_t g_prev_avail, g_alloc_volume;        /* under the lock */

static NOINLINE void release_poll_slow(void) {
    kbuddy_stats st;
    kbuddy_get_stats(&g_heap, &st);
    size_t avail = st.total - st.allocated, base = st.total / 8;
    if (base < KBUDDY_MALLOC_RELEASE_STEP)
        base = KBUDDY_MALLOC_RELEASE_STEP;
    if (g_step < base)
        g_step = base;
    if (avail < g_prev_avail)
        g_alloc_volume += g_prev_avail - avail;
    g_prev_avail = avail;
    if (avail < g_free_mark)
        g_free_mark = avail; /* allocations took some: count from here */
    if (avail - g_free_mark < g_step)
        return;
    size_t fresh = avail - g_free_mark;
    if (g_alloc_volume >= st.total)
        g_step = base;
    else if (g_step < st.total / 2)
        g_step *= 4;
    g_alloc_volume = 0;
    /* No region is ungrown here (keep everything): its pages are released
     * like any free span, and mapping a region again costs more than
     * keeping its address range. kbuddy_malloc_trim ungrows. */
    (void)release_locked(SIZE_MAX, KBUDDY_MALLOC_RELEASE_SPAN, fresh, false);
}

static inline void release_poll_locked(void) {
    if (UNLIKELY(g_give_back))
        release_poll_slow();
}

/* A large block of `bytes` went back to the core heap (the lock held).
 * With KBUDDY_MALLOC_TRIM_SLACK set (kbuddy_malloc.h), a block of
 * KBUDDY_MALLOC_RELEASE_SPAN and more may trim the heap, as glibc's free
 * trims the top of its heap beyond M_TRIM_THRESHOLD: when the heap's free
 * bytes exceed the slack, max(KBUDDY_MALLOC_TRIM_SLACK, allocated bytes),
 * every free span of RELEASE_SPAN and more is released but the lowest
 * slack's worth of them (the placement takes the lowest free blocks
 * first, so those are the ones reused). So the free memory a program
 * keeps resident stays within its allocated bytes and the slack, however
 * the large blocks it frees fall. Cost: a walk of the free spans and a
 * release call per span beyond the slack, for each such free; and pages
 * released and then reused are touched again. Otherwise the ordinary
 * poll. */
static void release_large_poll_locked(size_t bytes) {
    if (KBUDDY_MALLOC_TRIM_SLACK != SIZE_MAX && g_hooks.release &&
        bytes >= KBUDDY_MALLOC_RELEASE_SPAN) {
        kbuddy_stats st;
        kbuddy_get_stats(&g_heap, &st);
        size_t avail = st.total - st.allocated;
        size_t slack = st.allocated;
        if (slack < KBUDDY_MALLOC_TRIM_SLACK)
            slack = KBUDDY_MALLOC_TRIM_SLACK;
        if (avail > slack) {
            (void)release_locked(SIZE_MAX, KBUDDY_MALLOC_RELEASE_SPAN, slack, false);
            return;
        }
    }
    release_poll_locked();
}

size_t kbuddy_malloc_trim(size_t keep) {
    unsigned long irq = irq_off();
    kcache *cc = cache_claim();
    cached_map kept[MAP_CACHE_N];
    lock();
    caches_flush_locked(cc);
    size_t nkept = map_cache_take_all_locked(kept);
    size_t bytes = release_locked(keep, 0, 0, true);
    unlock();
    cache_unclaim(cc);
    irq_on(irq);
    /* The kept mappings go back with no lock held, as unmap expects. */
    for (size_t i = 0; i < nkept; i++) {
        g_hooks.unmap((void *)kept[i].start, kept[i].size, g_hooks.map_ctx);
        bytes += kept[i].size;
    }
    return bytes;
}
