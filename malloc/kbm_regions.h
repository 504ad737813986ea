/*
 * Regions and growth of the global allocator: memory handed over by
 * kbuddy_malloc_add_region ("transfer") or found by the grow hook, and the
 * core heap's out-of-memory handler. Part of kbuddy_malloc.c (included
 * once, by it).
 *
 * Nothing grow hands over is dropped: a region the layer cannot take (too
 * small, the region table full, an overlap) goes straight back through the
 * ungrow hook, and grown regions that become wholly free go back too
 * (kbm_release.h).
 */

static size_t g_region_bytes, g_tag_bytes; /* under the lock */
static size_t g_regions_returned;          /* under the lock: entries gone */
static size_t g_released_bytes;            /* under the lock: bytes given to release */
static size_t g_free_mark; /* under the lock: the heap's free bytes after the last release */
static bool g_give_back;   /* the release or the ungrow hook is installed */

/* Layout: [start, t) alignment, [t, t + tag bytes) the tag table (one byte
 * per unit of the whole range, rounded up to words), the rest to the core. */
static kbuddy_status add_region_locked(void *start, size_t size, bool zeroed, bool grown) {
    uintptr_t s = (uintptr_t)start;
    if (!start || !size || size > UINTPTR_MAX - s)
        return KBUDDY_EINVAL;
    uintptr_t e = s + size;
    if (meets_region(s, size))
        return KBUDDY_EOVERLAP;
    size_t n = atomic_load_explicit(&g_nregions, memory_order_relaxed);
    if (n == KBUDDY_MALLOC_MAX_REGIONS)
        return KBUDDY_ENOMEM;
    uintptr_t t = (s + 3u) & ~(uintptr_t)3u;
    uintptr_t base = s >> UNIT_SHIFT;
    uintptr_t tag_bytes = ((((e - 1) >> UNIT_SHIFT) - base + 1) + 3u) & ~(uintptr_t)3u;
    if (t >= e || tag_bytes >= e - t)
        return KBUDDY_ENOMEM;
    uintptr_t core = t + tag_bytes;
    unsigned char *bytes = start; /* pointers are derived from start, not made from integers */
    kbuddy_status st = (zeroed ? kbuddy_add_region_zeroed : kbuddy_add_region)(
        &g_heap, bytes + (core - s), (size_t)(e - core));
    if (st != KBUDDY_OK)
        return st;
    if (!zeroed)
        memset(bytes + (t - s), 0, (size_t)tag_bytes);
    mregion *r = &g_regions[n];
    r->start = s;
    r->size = size;
    r->base = base;
    r->tags = (tagcell *)(void *)(bytes + (t - s));
    r->core = bytes + (core - s);
    r->grown = grown;
    atomic_init(&r->gone, false);
    atomic_store_explicit(&g_nregions, n + 1, memory_order_release);
    g_region_bytes += size;
    g_tag_bytes += (size_t)(core - s);
    kbuddy_stats hs; /* new memory is not memory freed: no release is due for it */
    kbuddy_get_stats(&g_heap, &hs);
    g_free_mark = hs.total - hs.allocated;
    return KBUDDY_OK;
}

/* The core heap's out-of-memory handler. Every core call is made with the
 * lock held (the core heap itself has none), so this runs under it too:
 * first the depot goes back to the heap, then the grow hook is asked for a
 * region in which the request surely fits: two blocks of the order it
 * needs (an aligned block of order k lies in any 2^(k+1) units) plus the
 * bookkeeping. */
static bool map_cache_drain_locked(void); /* kbm_large.h */

static bool on_oom(kbuddy_heap *h, size_t size, size_t align, void *ctx) {
    (void)h;
    (void)ctx;
    if (depot_drain())
        return true;
    if (!g_hooks.grow)
        return false;
    (void)map_cache_drain_locked(); /* their address space, for the region */
    size_t block = UNIT;
    while (block < size || block < align) {
        if (block > SIZE_MAX / 8)
            return false;
        block <<= 1;
    }
    size_t need = 2 * block + block / 4 + 4096;
    void *start;
    size_t got;
    if (!g_hooks.grow(need, &start, &got, g_hooks.grow_ctx))
        return false;
    /* Less than asked for cannot serve the request: added, it would only
     * take a slot (and be asked for again and again). */
    if ((got >= need || !g_hooks.ungrow) &&
        add_region_locked(start, got, g_hooks.grow_zeroed, true) == KBUDDY_OK)
        return true;
    if (g_hooks.ungrow) /* not dropped: it goes back */
        g_hooks.ungrow(start, got, g_hooks.grow_ctx);
    return false;
}

static void install_oom(void) { kbuddy_set_oom_handler(&g_heap, on_oom, NULL); }

kbuddy_status kbuddy_malloc_add_region(void *start, size_t size) {
    unsigned long irq = irq_off();
    lock();
    kbuddy_status st = add_region_locked(start, size, false, false);
    install_oom();
    unlock();
    irq_on(irq);
    return st;
}

const kbuddy_heap *kbuddy_global_heap(void) { return &g_heap; }

void kbuddy_malloc_set_hooks(const kbuddy_malloc_hooks *hooks) {
    if (hooks)
        g_hooks = *hooks;
    else
        memset(&g_hooks, 0, sizeof g_hooks);
    if (g_hooks.lock.acquire && g_hooks.lock.release)
        g_lock = g_hooks.lock;
    else
        g_lock = (kbuddy_lock){kbuddy_spinlock_acquire, kbuddy_spinlock_release, &g_spin};
#if RUNTIME_HOOKS
    /* The paths and the pointers they call are in place before g_hooked
     * sends calls to them. */
    g_cpu_id = g_hooks.cpu_id ? g_hooks.cpu_id : cpu_zero;
    g_irq_save = g_hooks.irq_save ? g_hooks.irq_save : irq_save_none;
    g_irq_restore = g_hooks.irq_restore ? g_hooks.irq_restore : irq_restore_none;
    hooked_paths_choose(g_hooks.cpu_id_unmasked);
#endif
    /* cpu_id_unmasked alone (one CPU, no handler allocates, threads
     * preemptible) still needs the claiming copies: the unhooked ones
     * read CPU 0's cache without a claim. */
    g_hooked = g_hooks.cpu_id || g_hooks.irq_save || g_hooks.irq_restore || g_hooks.cpu_id_unmasked;
    g_give_back = g_hooks.release || g_hooks.ungrow;
    install_oom();
}
