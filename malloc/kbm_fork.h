/*
 * Fork: the global allocator in the child of a multi-threaded fork. Part of
 * kbuddy_malloc.c (included once, by it, after kbm_regions.h).
 *
 * fork copies the whole heap but only the calling thread. The lock is held
 * across fork (kbuddy_malloc_fork_prepare), so nothing done under it is half
 * done in the child; what the parent's other threads were doing without it
 * may be. At the instant of fork another thread may have been
 *   - in malloc, past popping a block off its magazine (count lowered) but
 *     before making it LIVE: the block is tagged CACHED and counted nowhere;
 *   - in free, past turning a LIVE block CACHED but before pushing it (its
 *     entry perhaps unwritten, the count not raised): the same;
 *   - in a swap of its two magazines of a class (cache_refill,
 *     cache_overflow), between the two stores: both slots name one
 *     magazine, and the other one, with any blocks in it, is named by none.
 * Those threads do not exist in the child, so neither does any use of their
 * caches. The child (kbuddy_malloc_fork_child, with the lock still held):
 *   1. takes every cache but the caller's (per-CPU builds: if it can claim
 *      it, i.e. no thread caught mid-call held it) off the list and frees it and its
 *      magazines (each once), trusting neither their counts nor entries;
 *   2. marks the blocks of the magazines that remain (the caller's cache
 *      and the depot, which only the caller and the lock change): their
 *      tags go CACHED|c -> LIVE|CACHED|c, a state nothing else writes;
 *   3. scans the tag table of every region: a CACHED tag left unmarked is a
 *      block that no magazine holds. Its tag and kept size are cleared and
 *      it goes back to the core heap (for the dead thread's malloc: it never
 *      happened; for its free: it completed); a slab object whose state is
 *      found so goes back into its slab unless it is free there already
 *      (kbm_slab.h). Marks are undone.
 * A block a dead thread had made LIVE stays LIVE: the program held it,
 * as with any allocator; its kept size is as found (a realloc in place
 * caught between its two stores leaves a mix of the old and new bytes,
 * which size_change in kbm_tags.h keeps within the class). The magazine
 * named by neither slot of a swap (at most one per thread caught
 * swapping) cannot be found without a type on untagged blocks: it stays
 * allocated and counted as the layer's own (internal_blocks), so the
 * check and the statistics still agree; its blocks are found by step 3.
 * Every other tag change happens under the lock (large blocks' claim, a
 * cacheless thread's free), so no other state can be caught half done.
 *
 * Cost in the child: O(caches x classes + depot blocks), plus, when another
 * cache existed (another thread may have been mid-call), the scan of the
 * tag tables, 1/32 of the regions' bytes, 64 tags per test. Measured with
 * 3 other threads: 64 MiB of regions, 0.75 ms when their caches are empty,
 * 2.2 ms when 10,000 cached blocks go back (the pages written are copied:
 * giving them back in batches saved nothing); 1.4 GiB, 14-22 ms. fork
 * itself took 1-5 and 28-70 ms.
 */

#if KBUDDY_MALLOC_TLS
static void forget_cache(const kcache *cc) { (void)cc; } /* the dead threads' TLS went with them */
static kcache *fork_survivor(void) { return tls_cache; }
#else
/* Per-CPU builds: the other CPUs' slots no longer name their caches. The
 * caller's survives if it can claim it: held by a call that was caught
 * half done, it goes with the others. */
static void forget_cache(const kcache *cc) {
    for (unsigned i = 0; i < KBUDDY_MALLOC_MAX_CPUS; i++)
        if (g_cpu_home[i] == cc) {
            g_cpu_home[i] = NULL;
            atomic_store_explicit(&g_cpu_cache[i], NULL, memory_order_relaxed);
        }
}
static kcache *fork_survivor(void) { return cache_claim(); }
#endif

static unsigned long g_fork_irq; /* the forking CPU's interrupt state */

/* Step 1: free a cache of a thread (CPU) that no longer exists, and its
 * magazines, each once (a swap caught half done names one twice). */
static void fork_drop_cache(kcache *cc) {
    *cc->pprev = cc->next;
    if (cc->next)
        cc->next->pprev = cc->pprev;
    for (unsigned c = 0; c < NCLASSES; c++) {
        mag *l = slot_loaded(&cc->slot[c]), *p = slot_prev(&cc->slot[c]);
        if (l->cap)
            internal_free(l, mag_size(l->cap));
        if (p->cap && p != l)
            internal_free(p, mag_size(p->cap));
    }
    forget_cache(cc);
    internal_free(cc, sizeof *cc);
}

/* Step 2: mark the blocks of a magazine of class c that survives (step 3
 * undoes the marks). A block whose tag is not CACHED|c is left alone: only
 * a damaged heap has one, and the check reports it. */
static void fork_mark_mag(mag *m, unsigned c) {
    for (uint32_t i = 0, n = mag_n(m); i < n && i < m->cap; i++) {
        unsigned tag = TAG_CACHED | c;
        (void)tag_cas(m->e[i].t, &tag, TAG_FLIP | c);
    }
}

/* Step 3 for one tag: restore a mark, or give an unmarked cached block
 * (unit u of region r) back to the core. Returns blocks given back. */
static size_t fork_sweep_tag(const mregion *r, uintptr_t u) {
    uintptr_t a = u << UNIT_SHIFT;
    tagref t = tag_of(r, a);
    unsigned tag = tag_get(t), c = tag & TAG_CLASS;
    if (!(tag & TAG_CACHED) || c >= NCLASSES)
        return 0;
    if (tag & TAG_LIVE) {
        (void)tag_cas(t, &tag, TAG_CACHED | c);
        return 0;
    }
    if (is_slab_class(c)) /* a slab's unit: the state of one of its objects */
        return slab_fork_sweep(r, a, c);
    /* The block's pointer, derived from the region's (as kbm_regions.h's
     * are), not made from an integer. */
    unsigned char *p = (unsigned char *)r->tags + (a - (uintptr_t)r->tags);
    core_give(p, t, c);
    return 1;
}

/* Whether any of the 64 tag bytes at p has the CACHED bit (no other tag,
 * and no kept-size byte, has it). Read as bytes (memcpy): any group of 64
 * starting at a multiple of 4 holds the same 64 tags whatever the byte
 * order of packed tags. */
static bool fork_any_cached(const unsigned char *p) {
    _Static_assert(TAG_CACHED == 0x40u, "the scan looks for this bit in every byte");
    uint64_t w[8], any = 0;
    memcpy(w, p, sizeof w);
    for (unsigned i = 0; i < 8; i++)
        any |= w[i];
    return (any & 0x4040404040404040u) != 0;
}

/* Step 3 for a region: 64 tags at a time, skipped unless one is cached,
 * then each by tag_get. The table starts 4-byte aligned. */
static size_t fork_sweep_region(const mregion *r) {
    uintptr_t n = ((r->start + r->size - 1) >> UNIT_SHIFT) - r->base + 1;
    const unsigned char *bytes = (const unsigned char *)r->tags;
    size_t given = 0;
    for (uintptr_t i = 0; i < n; i += 64) {
        if (n - i >= 64 && !fork_any_cached(bytes + i))
            continue;
        for (uintptr_t j = i; j < n && j < i + 64; j++)
            given += fork_sweep_tag(r, r->base + j);
    }
    return given;
}

void kbuddy_malloc_fork_prepare(void) {
    unsigned long irq = irq_off();
    lock();
    g_fork_irq = irq;
}

void kbuddy_malloc_fork_parent(void) {
    unsigned long irq = g_fork_irq;
    unlock();
    irq_on(irq);
}

void kbuddy_malloc_fork_child(void) {
    unsigned long irq = g_fork_irq;
    kcache *mine = fork_survivor();
    bool others = false;
    for (kcache *cc = g_caches, *next; cc; cc = next) {
        next = cc->next;
        if (cc != mine) {
            fork_drop_cache(cc);
            others = true;
        }
    }
    if (others) {
        for (unsigned c = 0; c < NCLASSES; c++) {
            if (mine) {
                fork_mark_mag(slot_loaded(&mine->slot[c]), c);
                fork_mark_mag(slot_prev(&mine->slot[c]), c);
            }
            for (mag *m = g_depot[c].full; m; m = m->next)
                fork_mark_mag(m, c);
        }
        size_t nr = atomic_load_explicit(&g_nregions, memory_order_relaxed), given = 0;
        for (size_t i = 0; i < nr; i++)
            if (!region_gone(&g_regions[i])) /* its blocks went with it */
                given += fork_sweep_region(&g_regions[i]);
        g_drains += given;
    }
    unlock();
    cache_unclaim(mine);
    irq_on(irq);
}
