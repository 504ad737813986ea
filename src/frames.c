/*
 * The page-frame allocator: the buddy engine (buddy.c) over frame numbers,
 * with all bookkeeping in a caller-supplied buffer, so the frames themselves
 * are never read or written and need not be mapped.
 *
 * Metadata layout in the caller's buffer (8-byte aligned):
 *   order descriptors | free bitmaps of every order | used bitmap
 * or, for windows of fewer than KB_PACKED_UNITS frames, where descriptors
 * and per-order rounding would cost more than the bits (kbuddy_internal.h),
 *   packed table and bits of all orders | used bitmap
 * The used bitmap has one bit per frame of the window ("allocated"): frames
 * can be freed in any sub-run (like Linux's free_pages_exact), so what is
 * allocated is recorded per frame, not per allocation. A frame is
 *   allocated  its used bit is set;
 *   free       it lies in a free block of the engine;
 *   not added  neither.
 * Memory: about 2.03 bits (free bitmaps) + 1 bit (used) per frame, plus
 * 48 bytes per order (per-order layout) or 16 to 64 bytes (packed): at most
 * 4 bits per frame from 1024 frames up.
 * Cost: O(L) engine work plus O(count / 64) for the used bits of a run.
 */
#include "kbuddy_internal.h"

static uintptr_t align8(uintptr_t x) { return (x + 7u) & ~(uintptr_t)7u; }

static size_t used_words(size_t nframes) {
    return (nframes + KB_WORD_BITS - 1) >> KB_WORD_SHIFT;
}

/* Is a window of nframes frames laid out packed? */
static bool packed_window(size_t nframes) { return nframes < KB_PACKED_UNITS; }

size_t kbuddy_frames_meta_size(size_t nframes) {
    if (nframes == 0)
        return 0;
    if (nframes > KBUDDY_FRAMES_MAX)
        return SIZE_MAX;
    if (packed_window(nframes))
        return 7u + (kb_packed_words_bound(nframes) + used_words(nframes)) * sizeof(kb_word);
    size_t words = kb_engine_words_bound(nframes);
    if (words == 0) /* cannot happen up to KBUDDY_FRAMES_MAX (a test checks) */
        return SIZE_MAX;
    return 7u + kb_orders_for(nframes) * sizeof(kb_order) +
           (words + used_words(nframes)) * sizeof(kb_word);
}

kbuddy_status kbuddy_frames_init(kbuddy_frames *fa, size_t base, size_t nframes, void *meta,
                                 size_t meta_size) {
    if (!fa || !meta || nframes == 0 || base > SIZE_MAX - nframes)
        return KBUDDY_EINVAL;
    size_t need = kbuddy_frames_meta_size(nframes);
    if (need == SIZE_MAX || meta_size < need)
        return KBUDDY_ENOMEM;
    unsigned char *p = (unsigned char *)meta + (align8((uintptr_t)meta) - (uintptr_t)meta);
    kb_zero(fa, sizeof *fa);
    if (packed_window(nframes)) {
        kb_word *words = (kb_word *)(void *)p;
        fa->used = words + kb_engine_init_packed(&fa->engine, base, base + nframes, words);
    } else {
        kb_order *order = (kb_order *)(void *)p;
        kb_word *words = (kb_word *)(void *)(p + kb_orders_for(nframes) * sizeof(kb_order));
        kb_engine_init(&fa->engine, base, base + nframes, order, words);
        fa->used = words + kb_engine_words(base, base + nframes);
    }
    fa->engine.used = fa->used;
    kb_zero(fa->used, used_words(nframes) * sizeof(kb_word));
    return KBUDDY_OK;
}

/* Is [first, first + count) a non-empty run inside the window? */
static bool run_in_window(const kbuddy_frames *fa, size_t first, size_t count) {
    return count != 0 && first >= fa->engine.lo && first < fa->engine.hi &&
           count <= fa->engine.hi - first;
}

kbuddy_status kbuddy_frames_add(kbuddy_frames *fa, size_t first, size_t count) {
    if (!fa || !run_in_window(fa, first, count))
        return KBUDDY_EINVAL;
    kbuddy_status st = KBUDDY_OK;
    kb_engine *e = &fa->engine;
    size_t a = first - e->lo;
    kb_lock(&fa->lock);
    if (kb_bits_any_set(fa->used, a, a + count) || kb_engine_any_free(e, first, first + count)) {
        st = KBUDDY_EOVERLAP;
    } else {
        kb_engine_release_frames(e, first, first + count);
        fa->added += count;
    }
    kb_unlock(&fa->lock);
    return st;
}

kbuddy_status kbuddy_frames_alloc(kbuddy_frames *fa, size_t count, size_t align, size_t *first) {
    if (!fa || !first || count == 0 || !kb_is_pow2(align))
        return KBUDDY_EINVAL;
    unsigned ka = kb_floor_log2(align);
    unsigned k = kb_ceil_log2(count);
    if (ka > k)
        k = ka;
    kbuddy_status st = KBUDDY_ENOMEM;
    uintptr_t s;
    kb_lock(&fa->lock);
    if (k < fa->engine.orders && kb_engine_take_frames(&fa->engine, count, k, ka, &s)) {
        kb_bits_set(fa->used, s - fa->engine.lo, s - fa->engine.lo + count);
        fa->allocated += count;
        *first = s;
        st = KBUDDY_OK;
    }
    kb_unlock(&fa->lock);
    return st;
}

/* Why is the run not all allocated? Every frame is allocated, free or
 * never added, so if the allocated and the free frames of the run add up to
 * all of it, some frame is free (a double free); otherwise some frame was
 * never added. Counting, not searching, keeps this O(L + count / 64)
 * however many free blocks the run covers. */
static kbuddy_status classify_bad_run(const kbuddy_frames *fa, size_t first, size_t count) {
    const kb_engine *e = &fa->engine;
    uintptr_t used = kb_bits_count(fa->used, first - e->lo, first - e->lo + count);
    uintptr_t free = kb_engine_free_units_in(e, first, first + count);
    return used + free == count ? KBUDDY_EDOUBLEFREE : KBUDDY_EFOREIGN;
}

kbuddy_status kbuddy_frames_free(kbuddy_frames *fa, size_t first, size_t count) {
    if (!fa || count == 0)
        return KBUDDY_EINVAL;
    if (!run_in_window(fa, first, count))
        return KBUDDY_EFOREIGN;
    kbuddy_status st = KBUDDY_OK;
    size_t a = first - fa->engine.lo;
    kb_lock(&fa->lock);
    if (!kb_bits_all_set(fa->used, a, a + count)) {
        st = classify_bad_run(fa, first, count);
    } else {
        kb_bits_clear(fa->used, a, a + count);
        kb_engine_release_frames(&fa->engine, first, first + count);
        fa->allocated -= count;
    }
    kb_unlock(&fa->lock);
    return st;
}

void kbuddy_frames_get_stats(const kbuddy_frames *fa, kbuddy_frame_stats *out) {
    if (!out)
        return;
    if (!fa) {
        kb_zero(out, sizeof *out);
        return;
    }
    kb_lock(&fa->lock);
    out->total = fa->added;
    out->allocated = fa->allocated;
    out->largest_free =
        fa->engine.nonempty ? (size_t)1 << kb_floor_log2(fa->engine.nonempty) : 0;
    kb_unlock(&fa->lock);
}

/* Visit runs in order; counts what it saw. */
typedef struct {
    size_t used, free_units, free_blocks;
} frame_tally;

static void walk_locked(const kbuddy_frames *fa, kbuddy_frames_walk_fn fn, void *ctx,
                        frame_tally *t) {
    const kb_engine *e = &fa->engine;
    for (uintptr_t f = e->lo; f < e->hi;) {
        uintptr_t i = f - e->lo;
        unsigned k;
        if ((fa->used[i >> KB_WORD_SHIFT] >> (i & 63)) & 1u) {
            uintptr_t end = kb_bits_next_clear(fa->used, i, e->hi - e->lo) + e->lo;
            if (fn)
                fn(ctx, f, end - f, true);
            t->used += end - f;
            f = end;
        } else if (kb_engine_free_block_at(e, f, &k)) {
            if (fn)
                fn(ctx, f, (size_t)1 << k, false);
            t->free_units += (size_t)1 << k;
            t->free_blocks++;
            f += (uintptr_t)1 << k;
        } else {
            f++;
        }
    }
}

void kbuddy_frames_walk(const kbuddy_frames *fa, kbuddy_frames_walk_fn fn, void *ctx) {
    if (!fa || !fn)
        return;
    frame_tally t = {0, 0, 0};
    kb_lock(&fa->lock);
    walk_locked(fa, fn, ctx, &t);
    kb_unlock(&fa->lock);
}

kbuddy_status kbuddy_frames_check(const kbuddy_frames *fa) {
    if (!fa)
        return KBUDDY_EINVAL;
    kbuddy_status st = KBUDDY_OK;
    size_t blocks;
    uintptr_t units;
    frame_tally t = {0, 0, 0};
    kb_lock(&fa->lock);
    const kb_engine *e = &fa->engine;
    size_t n = e->hi - e->lo;
    if (!kb_engine_check(e, &blocks, &units)) {
        st = KBUDDY_ECORRUPT;
    } else {
        walk_locked(fa, NULL, NULL, &t);
        /* The walk steps over used runs: a free bit inside one would be
         * missed, so the counts would differ. */
        if (t.free_blocks != blocks || t.free_units != units || t.used != fa->allocated ||
            t.used + t.free_units != fa->added ||
            ((n & 63) && (fa->used[n >> KB_WORD_SHIFT] >> (n & 63))))
            st = KBUDDY_ECORRUPT;
    }
    kb_unlock(&fa->lock);
    return st;
}

void kbuddy_frames_set_lock(kbuddy_frames *fa, const kbuddy_lock *lock) {
    if (!fa)
        return;
    if (lock && lock->acquire && lock->release)
        fa->lock = *lock;
    else
        kb_zero(&fa->lock, sizeof fa->lock);
}
