/*
 * The buddy engine: one algorithm, shared by heap regions and frame windows.
 *
 * ALGORITHM
 * A range of units [lo, hi) (heap minimum blocks, or page frames) is split
 * into blocks. A block of order k is 2^k units starting at a unit number
 * that is a multiple of 2^k in ABSOLUTE terms, so a block of order k is
 * aligned to 2^k units whatever lo is. Its buddy is the other half of the
 * order-(k+1) block that contains it: block number b ^ 1 at order k.
 *
 * Free blocks are kept in one bitmap per order (bit = "a free block of this
 * order starts here"), never in the free memory itself: frames may be
 * unmapped, and a hostile or buggy pointer can never make the engine follow
 * a forged link. Each bitmap is a 64-ary tree (depth 0 = one bit per block,
 * each depth above = one bit per non-zero word below), so the lowest free
 * block of an order is found by one word read per depth, and setting or
 * clearing a bit touches the depths above only when a word changes between
 * zero and non-zero. A 64-bit mask `nonempty` says which orders have a free
 * block, so the smallest sufficient order is one count-trailing-zeros away.
 *
 * Invariants (checked by kb_engine_check):
 *   I1 every free unit belongs to exactly one free block, and every free
 *      block lies inside [lo, hi);
 *   I2 no two buddies are both free at the same order (they would have been
 *      merged), so every fully free aligned block lies inside one free block;
 *   I3 every summary bit equals "the word it stands for is non-zero", and
 *      bit k of `nonempty` equals "the root of order k is non-zero".
 *
 * Allocation of n units at order k = max(ceil(log2 n), alignment order)
 * takes the lowest free block of the smallest order j >= k, keeps its first
 * n units and gives the rest back as the maximal aligned pieces of
 * [n, 2^j): the remainder of a power-of-two block is never wasted, so an
 * allocation reserves n units, not 2^k.
 *
 * Release of any range [a, b) walks up the orders once: at each order only
 * the two edge blocks of the range can lack their buddy inside the range;
 * each edge block either merges with its free buddy (widening the range) or
 * becomes a free block of that order (narrowing it); the pairs in between
 * move up an order together. The walk ends at the order where an edge
 * block becoming free leaves the range empty (only that can empty it). So
 * a range free costs O(L) bitmap updates whatever its length, each one
 * needed (every block it removes was free before and every block it adds
 * is free after), and ends with every buddy pair merged (I2).
 *
 * COST (L = number of orders, at most 64; D = tree depth, at most 7)
 *   take, release:  O(L) bitmap updates, each O(1) amortised, O(D) at worst;
 *   the lowest free block of an order: O(D) word reads.
 *   Memory: 2 bits per unit for all orders' bitmaps, plus 1/63 of that for
 *   the summaries, plus one word per order and depth of rounding (and a
 *   48-byte descriptor per order). Frame windows under KB_PACKED_UNITS
 *   frames use the packed layout instead (kbuddy_internal.h): one array
 *   and one tree for all orders, a few dozen bytes of table; their
 *   operations have the same costs, an order's emptiness after a clear
 *   being asked of the shared tree (O(D) word reads).
 *   Neither cost depends on how many blocks are free or allocated.
 *
 * WHY ONE INDEX ENTRY PER FREE BLOCK, NOT PER FREE RUN
 * Dense heap placement leaves free runs that start off block boundaries,
 * which this index keeps as up to two blocks per order, each updated on
 * its own. Filing each maximal free run once instead, under the largest
 * aligned block inside it (same bitmaps, same control bytes, the same
 * contracts), was prototyped for issue 13: about four index updates per
 * allocation and free instead of eleven, but each dearer (a run's length
 * written at both ends, its class and anchor recomputed), and aligned
 * allocations leave gaps that become runs. Its engine cost 314 / 376
 * instructions per W3 / W4 operation against this one's 359 / 315, at
 * W5 90.8% against 90.3%.
 */
#include "kbuddy_internal.h"

/* ------------------------------------------------------------------------ */
/* Flat bitmap helpers (also used for the frame allocator's used bits).     */
/* ------------------------------------------------------------------------ */

/* The bits of [a, b) that lie in the word holding bit a, as a mask of that
 * word; a < b. */
static kb_word range_mask(uintptr_t a, uintptr_t b) {
    kb_word m = ~(kb_word)0 << (a & (KB_WORD_BITS - 1));
    if (b - (a & ~(uintptr_t)(KB_WORD_BITS - 1)) < KB_WORD_BITS)
        m &= ~(~(kb_word)0 << (b & (KB_WORD_BITS - 1)));
    return m;
}

/* The first bit of the word after the one holding bit a. */
static uintptr_t next_word(uintptr_t a) { return (a | (KB_WORD_BITS - 1)) + 1; }

void kb_bits_set(kb_word *w, uintptr_t a, uintptr_t b) {
    for (; a < b; a = next_word(a))
        w[a >> KB_WORD_SHIFT] |= range_mask(a, b);
}

void kb_bits_clear(kb_word *w, uintptr_t a, uintptr_t b) {
    for (; a < b; a = next_word(a))
        w[a >> KB_WORD_SHIFT] &= ~range_mask(a, b);
}

bool kb_bits_all_set(const kb_word *w, uintptr_t a, uintptr_t b) {
    for (; a < b; a = next_word(a)) {
        kb_word m = range_mask(a, b);
        if ((w[a >> KB_WORD_SHIFT] & m) != m)
            return false;
    }
    return true;
}

bool kb_bits_any_set(const kb_word *w, uintptr_t a, uintptr_t b) {
    for (; a < b; a = next_word(a))
        if (w[a >> KB_WORD_SHIFT] & range_mask(a, b))
            return true;
    return false;
}

uintptr_t kb_bits_next_clear(const kb_word *w, uintptr_t a, uintptr_t b) {
    for (; a < b; a = next_word(a)) {
        kb_word clear = ~w[a >> KB_WORD_SHIFT] & range_mask(a, b);
        if (clear)
            return (a & ~(uintptr_t)(KB_WORD_BITS - 1)) + kb_ctz(clear);
    }
    return b;
}

void kb_zero(void *p, size_t n) {
    /* memset is one of the three symbols the core may need (kernels have
     * it); clearing a 2^26-frame window's 25 MB byte by byte took 50 ms. */
    __builtin_memset(p, 0, n);
}

uintptr_t kb_bits_count(const kb_word *w, uintptr_t a, uintptr_t b) {
    uintptr_t n = 0;
    for (; a < b; a = next_word(a))
        n += kb_popcount(w[a >> KB_WORD_SHIFT] & range_mask(a, b));
    return n;
}

/* ------------------------------------------------------------------------ */
/* Layout                                                                    */
/* ------------------------------------------------------------------------ */

/* Words of a tree over nbits bits, and optionally its per-depth offsets
 * (and off[1], the end of its leaf words, in a tree of one depth). */
static size_t tree_words(uintptr_t nbits, kb_order *o, size_t base) {
    size_t total = 0;
    uint32_t depth = 0;
    uintptr_t n = nbits;
    do {
        n = (n + KB_WORD_BITS - 1) >> KB_WORD_SHIFT;
        if (depth == KB_TREE_MAX_DEPTH)
            return 0;
        if (o)
            o->off[depth] = (uint32_t)(base + total);
        total += n;
        depth++;
    } while (n > 1);
    if (o) {
        o->depth = depth;
        if (depth == 1)
            o->off[1] = (uint32_t)(base + total);
    }
    return total;
}

static uintptr_t order_nbits(uintptr_t lo, uintptr_t hi, unsigned k) {
    return ((hi - 1) >> k) - (lo >> k) + 1;
}

/* The blocks of order k that [lo, hi) meets, or (bound) the most that a
 * range of hi - lo units meets however it is aligned: ((units - 1) >> k)
 * + 2. */
static uintptr_t order_bits(uintptr_t lo, uintptr_t hi, unsigned k, bool bound) {
    return bound ? ((hi - lo - 1) >> k) + 2 : order_nbits(lo, hi, k);
}

static size_t engine_words(uintptr_t lo, uintptr_t hi, bool bound) {
    size_t total = 0;
    unsigned orders = kb_orders_for(hi - lo);
    for (unsigned k = 0; k < orders; k++) {
        size_t w = tree_words(order_bits(lo, hi, k, bound), NULL, 0);
        if (w == 0 || total + w > UINT32_MAX)
            return 0;
        total += w;
    }
    return total;
}

size_t kb_engine_words(uintptr_t lo, uintptr_t hi) { return engine_words(lo, hi, false); }

size_t kb_engine_words_bound(uintptr_t units) { return engine_words(0, units, true); }

/* The packed layout (kbuddy_internal.h): a table of 16-bit numbers in the
 * first words, then the tree over all orders' bits. */
#define PACKED_TAB_MAX (4u * 34u) /* entries of the largest table, in whole words */

/* Words the table of an engine of `orders` orders takes. */
static size_t packed_tab_words(unsigned orders) {
    return ((5u + 2u * orders) * sizeof(uint16_t) + sizeof(kb_word) - 1) / sizeof(kb_word);
}

/* Is e laid out packed? A frame engine (no control bytes) without order
 * descriptors. */
KB_INLINE bool is_packed(const kb_engine *e) { return !e->ctrl && !e->order; }

KB_INLINE const uint16_t *packed_tab(const kb_engine *e) {
    return (const uint16_t *)(const void *)e->words;
}

/* The free-block counts: tab[5 + orders + k] for order k. */
KB_INLINE uint16_t *packed_counts(kb_engine *e) {
    return (uint16_t *)(void *)e->words + 5 + e->orders;
}

/* Fill tab (packed_tab_words of it, counts and unused entries zero) for
 * [lo, hi), or (bound) for the worst alignment of hi - lo units; return the
 * engine's words, table included. */
static size_t packed_table(uintptr_t lo, uintptr_t hi, bool bound, uint16_t *tab) {
    unsigned orders = 0; /* kb_orders_for(hi - lo), found on the way */
    uintptr_t bits = 0;
    for (; (hi - lo) >> orders; orders++) {
        tab[4 + orders] = (uint16_t)bits;
        bits += order_bits(lo, hi, orders, bound);
    }
    tab[4 + orders] = (uint16_t)bits;
    size_t head = packed_tab_words(orders);
    for (size_t i = 5 + orders; i < head * 4; i++)
        tab[i] = 0;
    /* The tree (tree_words): under 2^15 bits need at most three depths. */
    size_t words = (bits + KB_WORD_BITS - 1) >> KB_WORD_SHIFT;
    tab[0] = 1;
    tab[1] = (uint16_t)head;
    tab[2] = tab[3] = 0;
    for (size_t n = words; n > 1; tab[0]++) {
        n = (n + KB_WORD_BITS - 1) >> KB_WORD_SHIFT;
        tab[1 + tab[0]] = (uint16_t)(head + words);
        words += n;
    }
    return head + words;
}

/* The lowest-word hint of an order of fewer than KB_TREE_MAX_DEPTH depths
 * (every order of a heap engine of at most 31 orders, whose take_heap asks
 * it): a leaf-word index no greater than that of the order's lowest free
 * block, kept in off[KB_TREE_MAX_DEPTH - 1], which such an order does not
 * use, so that it costs no bookkeeping byte. A lower bound needs upkeep
 * only where a leaf word becomes non-zero below it (a set into a non-zero
 * word is at or above the lowest block's word already), and none on
 * removal: hinted_lowest_word tries the hinted word first and descends
 * from the root only when it is empty, and then moves the hint up to the
 * word found; take_heap and block_lowest (the frame engines' take,
 * take_block_start) both ask it. Measured for issue 13 (callgrind, 200k ops, dense; placement
 * as before): the hint names the lowest block's word on 70% of take_heap's
 * lookups; W3 473.3 -> 464.2, W4 426.0 -> 417.6, F1 213.9 -> 212.3, F2
 * 359.5 -> 357.6. Tried and not kept: take_heap alone asking the hint
 * (W3 466.4, W4 420.4, F1 215.8, F2 361.7: frames paid the upkeep for
 * nothing); the hint in a per-engine array indexed by order, with a climb
 * from the hinted word on a miss instead of the descent: W3 504.2, W4
 * 452.2 (the climb, and finding k from o in every tree_set). Builds for
 * size keep no hint (LOWEST_HINT 0: no -Os .text). */
#if KBUDDY_SMALL
#define LOWEST_HINT 0
#else
#define LOWEST_HINT 1
#endif

KB_INLINE uint32_t *lowest_hint(const kb_order *o) {
    return (uint32_t *)&o->off[KB_TREE_MAX_DEPTH - 1]; /* the orders are the engine's, writable */
}

/* Leaf word `word` of order o became non-zero: lower the hint to it.
 * `shallow`: o is known to have fewer than KB_TREE_MAX_DEPTH depths. */
KB_INLINE void lowest_hint_lower(const kb_order *o, uintptr_t word, bool shallow) {
    if (LOWEST_HINT && word < *lowest_hint(o) && (shallow || o->depth < KB_TREE_MAX_DEPTH))
        *lowest_hint(o) = (uint32_t)word;
}

#if LOWEST_HINT
/* The leaf word holding order o's lowest free block (its index among the
 * order's leaf words; the order must be non-empty and have fewer than
 * KB_TREE_MAX_DEPTH depths): the hinted word when it has a free block
 * (every word below the hint is empty), else the descent from the root,
 * which moves the hint up to the word found. `words` is the engine's,
 * passed in so that callers holding it in a local do not reload it. */
KB_INLINE uintptr_t hinted_lowest_word(const kb_word *words, const kb_order *o) {
    uint32_t *hint = lowest_hint(o);
    uintptr_t i = *hint;
    if (KB_LIKELY(words[o->off[0] + i] != 0))
        return i;
    i = 0;
    for (uint32_t d = o->depth; --d > 0;)
        i = (i << KB_WORD_SHIFT) + kb_ctz(words[o->off[d] + i]);
    *hint = (uint32_t)i;
    return i;
}
#endif

size_t kb_engine_layout(kb_engine *e, uintptr_t lo, uintptr_t hi, kb_order *order, kb_word *words) {
    size_t total = 0;
    e->lo = lo;
    e->hi = hi;
    e->orders = kb_orders_for(hi - lo);
    e->order = order;
    e->words = words;
    e->nonempty = 0;
    e->ctrl = NULL;
    e->used = NULL;
    e->owner_mask = NULL;
    e->owner_count = NULL;
    if (!order) /* the packed layout: its table is in the words */
        return packed_table(lo, hi, false, (uint16_t *)(void *)words);
    for (unsigned k = 0; k < e->orders; k++) {
        order[k].first = lo >> k;
        total += tree_words(order_nbits(lo, hi, k), &order[k], total);
        order[k].leaf = ((uintptr_t)order[k].off[0] << KB_WORD_SHIFT) - order[k].first;
        if (LOWEST_HINT && order[k].depth < KB_TREE_MAX_DEPTH)
            *lowest_hint(&order[k]) = 0;
    }
    return total;
}

void kb_engine_init(kb_engine *e, uintptr_t lo, uintptr_t hi, kb_order *order, kb_word *words) {
    kb_zero(words, kb_engine_layout(e, lo, hi, order, words) * sizeof(kb_word));
}

size_t kb_packed_words(uintptr_t lo, uintptr_t hi) {
    uint16_t tab[PACKED_TAB_MAX];
    return packed_table(lo, hi, false, tab);
}

size_t kb_packed_words_bound(uintptr_t units) {
    uint16_t tab[PACKED_TAB_MAX];
    return packed_table(0, units, true, tab);
}

size_t kb_engine_init_packed(kb_engine *e, uintptr_t lo, uintptr_t hi, kb_word *words) {
    kb_zero(words, kb_packed_words(lo, hi) * sizeof(kb_word));
    return kb_engine_layout(e, lo, hi, NULL, words);
}

/* ------------------------------------------------------------------------ */
/* One order's free set                                                      */
/* ------------------------------------------------------------------------ */

/* Order k of this engine became non-empty / empty: keep the mask, and tell
 * the owner (a heap), which answers "which orders are free anywhere" in
 * O(1) from a count of its engines per order. */
KB_INLINE void order_filled(kb_engine *e, unsigned k) {
    kb_word bit = (kb_word)1 << k;
    e->nonempty |= bit;
    if (e->owner_mask && e->owner_count[k]++ == 0)
        *e->owner_mask |= bit;
}

KB_INLINE void order_emptied(kb_engine *e, unsigned k) {
    kb_word bit = (kb_word)1 << k;
    e->nonempty &= ~bit;
    if (e->owner_mask && --e->owner_count[k] == 0)
        *e->owner_mask &= ~bit;
}

void kb_engine_detach(kb_engine *e) {
    for (unsigned k = 0; k < e->orders; k++)
        if ((e->nonempty >> k) & 1u)
            order_emptied(e, k);
    e->owner_mask = NULL;
    e->owner_count = NULL;
}

/* The engine's fields that bitmap and mark updates use, copied into locals
 * once per operation: stores through the control bytes (uint8_t) may alias
 * anything, so read through `e` they would be reloaded after every store. */
typedef struct {
    kb_engine *e;
    uint8_t *ctrl;
    kb_word *words;
    const kb_order *order;
    uintptr_t lo;
    bool packed; /* the packed layout: set only where it is a constant
                  * (KBUDDY_SMALL: tested at run time instead) */
} kb_view;

KB_INLINE kb_view view_of(kb_engine *e) {
    kb_view v = {e, e->ctrl, e->words, e->order, e->lo, false};
    return v;
}

/* Heap engines also mark the first and last unit of every free block in
 * the control bytes (see kbuddy_internal.h), so that the block starting or
 * ending at a unit is known in O(1) during placement. */
KB_INLINE void block_mark(const kb_view *v, unsigned k, uintptr_t b, uint8_t mark, bool heap) {
    if (heap) {
        uintptr_t first = (b << k) - v->lo;
        v->ctrl[first] = mark;
        v->ctrl[first + ((uintptr_t)1 << k) - 1] = mark;
    }
}

/* The tree updates. Setting a leaf bit touches the depth above only when
 * the leaf word was zero, and the depth above that only when that word was
 * zero too: on a 64 MiB region about half of all updates reach depth 1 and
 * few go further. So the leaf and depth 1 are straight-line code at every
 * call site, and the rest of the climb (depth 2 up, and the order's mask
 * when its root changes) is one out-of-line loop shared by all of them,
 * marked cold so that the hot loops around the call sites keep their
 * registers (dense W3 542.8 -> 537.8, W4 488.1 -> 484.3 instructions).
 * The climb takes the depth-1 index i, which its callers hold anyway, and
 * shifts it itself: handed i >> 6, they computed that (and spilled it to
 * the stack for the call) on every leaf word that changed, not only on the
 * rare climbs. Dense W3 / W4 / F1 / F2: 464.1 / 416.9 / 211.6 / 352.7
 * handed i >> 6; 462.6 / 415.5 / 212.6 / 354.7 handed the block number
 * (the climb re-derived i from it); with the right-edge change in
 * release_heap, 461.1 / 414.6 / 212.6 / 354.7 so and 460.9 / 414.9 /
 * 211.6 / 352.6 handed i. */
static KB_NOINLINE KB_COLD void tree_set_from(kb_engine *e, kb_word *words, const kb_order *o,
                                      uintptr_t i) {
    i >>= KB_WORD_SHIFT;
    for (uint32_t d = 2; d < o->depth; d++, i >>= KB_WORD_SHIFT) {
        kb_word *w = &words[o->off[d] + (i >> KB_WORD_SHIFT)];
        kb_word old = *w;
        *w = old | kb_bit(i);
        if (old)
            return;
    }
    order_filled(e, (unsigned)(o - e->order)); /* rare: the order's k */
}

static KB_NOINLINE KB_COLD void tree_clear_from(kb_engine *e, kb_word *words, const kb_order *o,
                                        uintptr_t i) {
    i >>= KB_WORD_SHIFT;
    for (uint32_t d = 2; d < o->depth; d++, i >>= KB_WORD_SHIFT) {
        kb_word *w = &words[o->off[d] + (i >> KB_WORD_SHIFT)];
        kb_word now = *w & ~kb_bit(i);
        *w = now;
        if (now)
            return;
    }
    order_emptied(e, (unsigned)(o - e->order));
}

/* Set the leaf bit of block b in order o's tree, and each summary bit
 * above whose word was zero. The leaf is addressed from b alone (o->leaf);
 * depth 1 from the leaf word's index in the leaf, i. */
KB_INLINE void tree_set_in(kb_engine *e, kb_word *words, const kb_order *o, uintptr_t b,
                           bool shallow) {
    uintptr_t p = b + o->leaf;
    kb_word *w = &words[p >> KB_WORD_SHIFT];
    kb_word old = *w;
    *w = old | kb_bit(p);
    if (KB_LIKELY(old != 0))
        return;
    uintptr_t i = (b - o->first) >> KB_WORD_SHIFT; /* b is live, p need not be */
    lowest_hint_lower(o, i, shallow);
    if (o->depth > 1) {
        w = &words[o->off[1] + (i >> KB_WORD_SHIFT)];
        old = *w;
        *w = old | kb_bit(i);
        if (KB_LIKELY(old != 0))
            return;
    }
    tree_set_from(e, words, o, i);
}

KB_INLINE void tree_set(kb_engine *e, kb_word *words, const kb_order *o, uintptr_t b) {
    tree_set_in(e, words, o, b, false);
}

#if !KBUDDY_SMALL
/* tree_set in a heap engine of at most 31 orders, none of which has
 * KB_TREE_MAX_DEPTH depths (2^36 blocks): take_heap's, take_block_start's
 * and release_heap's (builds for size have none of them). The hint's
 * depth test goes: dense W3 / W4 429.5 / 386.9 -> 427.7 / 385.4. */
KB_INLINE void tree_set_heap(kb_engine *e, kb_word *words, const kb_order *o, uintptr_t b) {
    tree_set_in(e, words, o, b, true);
}
#endif

/* Clear the leaf bit of block b in order o's tree (it must be set), and
 * each summary bit above whose word became zero. */
KB_INLINE void tree_clear(kb_engine *e, kb_word *words, const kb_order *o, uintptr_t b) {
    uintptr_t p = b + o->leaf;
    kb_word *w = &words[p >> KB_WORD_SHIFT];
    kb_word now = *w & ~kb_bit(p);
    *w = now;
    if (KB_LIKELY(now != 0))
        return;
    uintptr_t i = (b - o->first) >> KB_WORD_SHIFT; /* b is live, p need not be */
    if (o->depth > 1) {
        w = &words[o->off[1] + (i >> KB_WORD_SHIFT)];
        now = *w & ~kb_bit(i);
        *w = now;
        if (KB_LIKELY(now != 0))
            return;
    }
    tree_clear_from(e, words, o, i);
}

/* Packed engines (kbuddy_internal.h): the same operations on the shared
 * tree, out of line, so that they add little code. Order k's bits are
 * [tab[4 + k], tab[5 + k]) of the leaf depth; its first block is lo >> k.
 * A leaf word or summary becoming zero or non-zero says nothing about one
 * order, so `nonempty` follows the order's count of free blocks. */

/* The first set leaf bit in [a, end), or end: one word per depth up, one
 * down. */
static KB_NOINLINE uintptr_t packed_find(const kb_engine *e, uintptr_t a, uintptr_t end) {
    const uint16_t *t = packed_tab(e);
    const kb_word *words = e->words;
    uintptr_t i = a, n = t[4 + e->orders]; /* bits at the current depth */
    uint32_t d = 0;
    kb_word w;
    for (;;) { /* climb until a word has a set bit at or after i */
        if (i >= n)
            return end;
        w = words[t[1 + d] + (i >> KB_WORD_SHIFT)] & ~(kb_bit(i) - 1);
        if (w)
            break;
        if (++d == t[0])
            return end;
        i = (i >> KB_WORD_SHIFT) + 1;
        n = (n + KB_WORD_BITS - 1) >> KB_WORD_SHIFT;
    }
    i = (i & ~(uintptr_t)(KB_WORD_BITS - 1)) + kb_ctz(w);
    while (d-- > 0)
        i = (i << KB_WORD_SHIFT) + kb_ctz(words[t[1 + d] + i]);
    return i < end ? i : end;
}

/* Set (or clear) the bit of block b of order k, and each summary bit above
 * whose word was zero (became zero); then keep `nonempty`. */
static KB_NOINLINE void packed_update(kb_engine *e, unsigned k, uintptr_t b, bool set) {
    const uint16_t *t = packed_tab(e);
    uintptr_t i = t[4 + k] + (b - (e->lo >> k));
    for (uint32_t d = 0; d < t[0]; d++, i >>= KB_WORD_SHIFT) {
        kb_word *w = &e->words[t[1 + d] + (i >> KB_WORD_SHIFT)];
        kb_word old = *w, now = old ^ kb_bit(i); /* the bit is clear (set) now */
        *w = now;
        if (set ? old : now)
            break;
    }
    /* Frame engines have no owner to tell (order_filled, order_emptied). */
    uint16_t *count = &packed_counts(e)[k];
    if (set) {
        ++*count;
        e->nonempty |= (kb_word)1 << k;
    } else if (--*count == 0) {
        e->nonempty &= ~((kb_word)1 << k);
    }
}

/* The lowest free block of order k; the order must be non-empty. */
static uintptr_t packed_lowest(const kb_engine *e, unsigned k) {
    const uint16_t *t = packed_tab(e);
    return (e->lo >> k) + (packed_find(e, t[4 + k], t[5 + k]) - t[4 + k]);
}

/* Mark block b of order k free / not free (it must be free): its control
 * byte marks (heap engines) and its tree bits. */
KB_INLINE void block_insert(const kb_view *v, unsigned k, uintptr_t b, bool heap) {
    if (v->packed) {
        packed_update(v->e, k, b, true);
        return;
    }
    block_mark(v, k, b, kb_free_mark(k), heap);
    const kb_order *o = &v->order[k];
    tree_set(v->e, v->words, o, b);
}

KB_INLINE void block_remove(const kb_view *v, unsigned k, uintptr_t b, bool heap) {
    if (v->packed) {
        packed_update(v->e, k, b, false);
        return;
    }
    block_mark(v, k, b, 0, heap);
    const kb_order *o = &v->order[k];
    tree_clear(v->e, v->words, o, b);
}

#if !KBUDDY_SMALL
/* block_insert / block_remove of a heap engine, out of line for the take
 * paths of engines of 32 orders and up (see take_insert), so that their
 * copy of the take code stays small. */
static KB_NOINLINE void heap_block_insert(kb_engine *e, unsigned k, uintptr_t b) {
    kb_view v = view_of(e);
    block_insert(&v, k, b, true);
}

static KB_NOINLINE void heap_block_remove(kb_engine *e, unsigned k, uintptr_t b) {
    kb_view v = view_of(e);
    block_remove(&v, k, b, true);
}
#endif

/* The updates of the take paths: out of line for heap engines whose marks
 * can saturate (31 orders or more, regions of 2^31 units and up), so that
 * their copy of the take code stays small; inline for the others. Builds
 * for size (KBUDDY_SMALL) have one copy of the take code, for every kind
 * of engine, with the updates inline in it: a call per update saved 2 KiB
 * but cost a third more instructions per operation (W3 at -Os: 931
 * against 708, and 625 before KBUDDY_SMALL). */
KB_INLINE void take_insert(const kb_view *v, unsigned k, uintptr_t b, bool heap, bool small) {
#if KBUDDY_SMALL
    (void)small;
    block_insert(v, k, b, heap);
#else
    if (heap && !small) {
        heap_block_insert(v->e, k, b);
    } else if (heap) { /* below 31 orders the mark is exact: no clamp */
        const kb_order *o = &v->order[k];
        block_mark(v, k, b, (uint8_t)(KB_CTRL_FREE | k), true);
        tree_set(v->e, v->words, o, b);
    } else {
        block_insert(v, k, b, heap);
    }
#endif
}

KB_INLINE void take_remove(const kb_view *v, unsigned k, uintptr_t b, bool heap, bool small) {
#if KBUDDY_SMALL
    (void)small;
    block_remove(v, k, b, heap);
#else
    if (heap && !small)
        heap_block_remove(v->e, k, b);
    else
        block_remove(v, k, b, heap);
#endif
}

/* Is block b of order o free? Any b, in range or not: a b past the last
 * block but in its leaf word finds its bit clear. */
KB_INLINE bool order_block_is_free(const kb_word *words, const kb_order *o, uintptr_t b) {
    uintptr_t i = b - o->first; /* wraps to a huge value when b < first */
    uintptr_t at = o->off[0] + (i >> KB_WORD_SHIFT); /* wraps too: >= off[1] */
    if (at >= o->off[1])
        return false;
    return (words[at] >> (i & (KB_WORD_BITS - 1))) & 1u;
}

/* Is block b of order k free? Any b, in range or not. */
KB_INLINE bool block_is_free(const kb_engine *e, unsigned k, uintptr_t b) {
    return order_block_is_free(e->words, &e->order[k], b);
}

/* The lowest free block of order k; the order must be non-empty. The
 * hinted leaf word when the order has one (lowest_hint) and it has a free
 * block, else the descent from the root, which moves the hint up. */
KB_INLINE uintptr_t block_lowest(const kb_engine *e, unsigned k) {
    const kb_order *o = &e->order[k];
    const uint32_t depth = o->depth;
    uintptr_t i = 0;
#if LOWEST_HINT
    if (depth < KB_TREE_MAX_DEPTH) {
        i = hinted_lowest_word(e->words, o);
        return o->first + (i << KB_WORD_SHIFT) + kb_ctz(e->words[o->off[0] + i]);
    }
#endif
    for (uint32_t d = depth; d-- > 0;)
        i = (i << KB_WORD_SHIFT) + kb_ctz(e->words[o->off[d] + i]);
    return o->first + i;
}

/* Order k's leaf bits in either layout: bit i (i < *nbits) of the flat
 * bitmap e->words from the returned bit on stands for block *first + i. */
static uintptr_t order_leaf(const kb_engine *e, unsigned k, uintptr_t *first, uintptr_t *nbits) {
    *first = e->lo >> k; /* the same in both layouts (kb_engine_layout) */
    *nbits = order_nbits(e->lo, e->hi, k);
    if (!is_packed(e))
        return (uintptr_t)e->order[k].off[0] << KB_WORD_SHIFT;
    const uint16_t *t = packed_tab(e);
    return ((uintptr_t)t[1] << KB_WORD_SHIFT) + t[4 + k];
}

/* block_is_free for either layout: for the packed layout's paths and those
 * that are not hot. */
static bool block_is_free_any(const kb_engine *e, unsigned k, uintptr_t b) {
    uintptr_t first, nbits, at = order_leaf(e, k, &first, &nbits);
    uintptr_t i = b - first; /* wraps to a huge value when b < first */
    return i < nbits && ((e->words[(at + i) >> KB_WORD_SHIFT] >> ((at + i) & 63)) & 1u);
}

/* ------------------------------------------------------------------------ */
/* Taking and releasing units                                                */
/* ------------------------------------------------------------------------ */

/* Free [s, end) where end is a multiple of 2^j and s is not: the pieces are
 * maximal aligned blocks, none of which can have a free buddy (each buddy
 * holds the units just before s, which are in use). */
KB_INLINE void release_tail(const kb_view *v, uintptr_t s, uintptr_t end, bool heap, bool small) {
    while (s < end) {
        unsigned k = kb_ctz(s);
        take_insert(v, k, s >> k, heap, small);
        s += (uintptr_t)1 << k;
    }
}

/* Runs of free blocks. A free run is the set of free blocks between two
 * units in use; with every buddy pair merged (I2) its blocks are exactly the
 * maximal aligned blocks of the run, so from any block boundary inside it
 * the next block left or right is determined by one question: which free
 * block ends (starts) here? Heap engines answer that in O(1) from the marks
 * in the control bytes (block_ending_at, block_starting_at: heap engines
 * only); frame engines, which have no marks, go down the orders once
 * (run_before). */

static bool bit_of(const kb_word *w, uintptr_t i) {
    return (w[i >> KB_WORD_SHIFT] >> (i & (KB_WORD_BITS - 1))) & 1u;
}

KB_INLINE bool unit_in_range(const kb_engine *e, uintptr_t u) { return u - e->lo < e->hi - e->lo; }

/* The order of the free block whose first or last unit is u, read from its
 * mark; false when u carries no free mark. A mark saturates at order 31, so
 * for larger blocks the bitmaps of orders 31 and up are asked which one
 * holds u (`at_start`: a block starting at u, else one ending at u). */
KB_INLINE bool marked_block(const kb_engine *e, uintptr_t u, bool at_start, unsigned *order,
                             bool small) {
    uint8_t c = e->ctrl[u - e->lo];
    if ((c & KB_CTRL_FREE_MASK) != KB_CTRL_FREE)
        return false;
    if (small || (c & KB_CTRL_ORDER) != KB_CTRL_ORDER) {
        *order = c & KB_CTRL_ORDER;
        return true;
    }
    for (unsigned p = KB_CTRL_ORDER; p < e->orders; p++) {
        uintptr_t edge = at_start ? u : u + 1;
        if ((edge & (((uintptr_t)1 << p) - 1)) == 0 && block_is_free(e, p, u >> p)) {
            *order = p;
            return true;
        }
    }
    return false;
}

/* Order of the free block that ends at unit y (y a block boundary), if it
 * is below `limit`. Heap engines only. */
KB_INLINE bool block_ending_at(const kb_engine *e, uintptr_t y, unsigned limit, unsigned *order,
                               bool small) {
    return unit_in_range(e, y - 1) && marked_block(e, y - 1, false, order, small) && *order < limit;
}

/* Order of the free block that starts at unit x (x a block boundary). Heap
 * engines only. */
KB_INLINE bool block_starting_at(const kb_engine *e, uintptr_t x, unsigned *order, bool small) {
    return unit_in_range(e, x) && marked_block(e, x, true, order, small);
}

/* Length of the free run that ends at unit `end` (a multiple of 2^o),
 * counting only blocks of order below o, up to at least `want` units when
 * the run is that long. Going left from such an end, each block is strictly
 * smaller than the one after it, so the bits of the result are exactly the
 * orders of the blocks it covers. */
KB_INLINE uintptr_t run_before(const kb_engine *e, uintptr_t end, unsigned o, uintptr_t want,
                               bool heap, bool small) {
    uintptr_t t = 0;
    unsigned p = 0; /* set by block_ending_at before each use; gcc -Og cannot see that */
    if (!heap) {
        /* No marks (a frame engine): since the orders strictly decrease
         * going left, one pass down the orders, one bitmap probe each,
         * finds every block of the run: O(L), where asking "which block
         * ends here?" afresh at each step would cost O(L^2). */
        for (p = o < e->orders ? o : e->orders; p-- > 0 && t < want;) {
            uintptr_t y = end - t; /* a multiple of 2^(p + 1) */
            if (!unit_in_range(e, y - 1) || bit_of(e->used, y - 1 - e->lo))
                break;
            if ((KBUDDY_SMALL ? is_packed(e) : small) ? block_is_free_any(e, p, (y >> p) - 1)
                                                      : block_is_free(e, p, (y >> p) - 1))
                t += (uintptr_t)1 << p;
        }
        return t;
    }
    while (t < want && block_ending_at(e, end - t, o, &p, small)) {
        t += (uintptr_t)1 << p;
        o = p;
    }
    return t;
}

/* Take the blocks of the run [end - t, end) found by run_before: one per
 * bit of t, the lowest bit the leftmost block. */
KB_INLINE void take_run_before(const kb_view *v, uintptr_t end, uintptr_t t, bool heap,
                                bool small) {
    uintptr_t x = end - t;
    for (; t; t &= t - 1) {
        unsigned p = kb_ctz(t);
        take_remove(v, p, x >> p, heap, small);
        x += (uintptr_t)1 << p;
    }
}

/* Length of the free run that starts at unit x, up to at least `want`. */
KB_INLINE uintptr_t run_after(const kb_engine *e, uintptr_t x, uintptr_t want, bool small) {
    uintptr_t u = 0;
    unsigned p = 0; /* set by block_starting_at before each use (see run_before) */
    while (u < want && block_starting_at(e, x + u, &p, small))
        u += (uintptr_t)1 << p;
    return u;
}

/* Take the units [x, end) of the free run that starts at x; the part of its
 * last block past `end` stays free. */
KB_INLINE void take_run_after(const kb_view *v, uintptr_t x, uintptr_t end, bool small) {
    unsigned p = 0;
    while (x < end) {
        (void)block_starting_at(v->e, x, &p, small);
        take_remove(v, p, x >> p, true, small);
        x += (uintptr_t)1 << p;
    }
    release_tail(v, end, x, true, small);
}

/* How many blocks of one order the spanning search looks at: a bounded
 * effort, so that allocation stays O(L). Measured on workload W5 (peak
 * utilisation, median of five region addresses) against W3's cost
 * (allocator's instructions per operation, callgrind, 100k ops), with the
 * orders searched k - 1 first or k - 2 first:
 *   k - 1 first, budget     1       2       4       8 (1, 8: one address)
 *     W5                  89.5%   90.2%   90.6%   90.9%
 *     W3                    -     629     680       -
 *   k - 2 first, budget     1       2       k-2: 1, k-1: 2
 *     W5                  90.4%   91.4%   90.8%
 *     W3                  618     717     662
 * The smaller blocks of order k - 2 are the leftovers a run most often
 * needs, so looking there first fills the heap better for less work.
 * Tried later for issue 13 (200k ops; W5 over 3-6 region addresses), none
 * keeping W5 at 90% for less than today's W3 594.4 / W4 533.4 / W5
 * 90.2-90.5%:
 *   order k - 2 only                          W3 597.5  W4 532.2  W5 83.8-84.1%
 *   k - 1 first, then k - 2                      565.0     519.3     89.5-89.6%
 *   k - 1, k - 2, k - 3                          580.8     533.0     89.6-89.7%
 *   k - 3, k - 2, k - 1                          625.0     546.2     89.7-90.0%
 *   a run covered before the block: end the
 *   allocation at the block's aligned end        581.8     521.6     89.8-89.9%
 *   the same in the fallback (t >= n) too        579.6     516.4     89.8-90.0%
 *   ... in the fallback only                     599.6     533.0     90.3%
 * Fewer probes do not make allocation cheaper: a failed probe sends the
 * allocation to the fallback, which costs as much, and the heap it leaves
 * has more small pieces for later operations to take and merge.
 * Again after take_heap (W3 507.2, W4 459.5; W5 at 500 region addresses,
 * kbuddy_bench --w5-offsets 500: median 90.28%, 4 below 90%), where the
 * probe of order k - 2 places 6% of the takes for 86% failed probes:
 *   k - 1 first, then k - 2        W3 488.5  W4 454.4  W5 89.54%, 500 below
 *   order k - 1 only                  467.7     435.3     88.90%, 500 below
 *   k - 2 only when n <= 2^k 3/4      494.0     452.3     90.14%, 29 below
 *   k - 2 only when n <= 2^k 7/8      505.2     457.8     90.26%, 6 below
 * so order k - 2 first stays, at every size. */
#define SPAN_BUDGET 1u

/* The spanning search is tried only for an allocation that would leave at
 * least 2^-SPAN_GAP_SHIFT of its block of order k over (2^k - n >= 2^k /
 * 32): one that nearly fills the block needs a run of nearly 2^k units
 * around a block of order k - 2 or k - 1, which the probes seldom find, so
 * their cost is spent for little. Measured for issue 13 (callgrind, 200k
 * ops; W5 at five region addresses), searched when 2^k - n is at least:
 *   always (before)     W3 555.8  W4 496.2  W5 90.08-90.46% (15 addresses)
 *   2^k / 32               548.9     491.2     90.19-90.37%
 *   2^k / 16               542.8     488.1     90.06-90.35% (15: 90.06-90.32%)
 *   2^k * 3 / 32           536.8     483.3     90.04-90.17%
 *   2^k / 8                531.6     478.4     89.87-90.02%
 * (skipping order k - 2 too above 3/4 of the block: W3 530.6, W5 89.93%;
 * not searching below 4 units changed nothing.) W5 over many runs at random
 * region addresses (kbuddy_bench --only W5): always 90.16-90.45% (24 runs,
 * median 90.35), 2^k / 32 90.12-90.42% (24, median 90.30), 2^k / 16
 * 90.00-90.37% (44, median 90.2; two at 90.0001%, the target's edge).
 * At 500 addresses 37 pages apart (kbuddy_bench --w5-offsets 500): always
 * median 90.33%, min 89.88%, 1 below 90%; 2^k / 32 90.28%, 89.85%, 4;
 * 2^k / 16 90.20%, 89.56%, 9. So 2^k / 32 (W3 539.9, W4 484.0): half the
 * saving of 2^k / 16 for a third of its loss of density. */
#define SPAN_GAP_SHIFT 5u

/* Is the spanning search worth trying for n units at order k (n <= 2^k;
 * heap engines have k <= 36, so nothing overflows)? The same in every
 * build, so that a heap places its blocks alike at every optimisation
 * level (builds for size pay 16 bytes of riscv64 .text for it). */
KB_INLINE bool span_worth_trying(uintptr_t n, unsigned k) {
    return n << SPAN_GAP_SHIFT <= (((uintptr_t)1 << SPAN_GAP_SHIFT) - 1) << k;
}

/* The free blocks of order k in the bitmap word holding the first free block
 * numbered `from` or higher (0: the lowest; the order must be non-empty):
 * the word (bit i = block *base + i, bits below `from` cleared), or 0 when
 * there is none. The leaf word is returned as read on the way: for the
 * lowest block, the one the descent from the root ends in; otherwise the
 * first word at or after `from` with a bit set, found by climbing. */
static kb_word free_word_from(const kb_engine *e, unsigned k, uintptr_t from, uintptr_t *base) {
    const kb_order *o = &e->order[k];
    const kb_word *words = e->words;
    uintptr_t i = 0;
    uint32_t d;
    if (from == 0) {
        for (d = o->depth; --d > 0;)
            i = (i << KB_WORD_SHIFT) + kb_ctz(words[o->off[d] + i]);
        *base = o->first + (i << KB_WORD_SHIFT);
        return words[o->off[0] + i];
    }
    i = from < o->first ? 0 : from - o->first;
    /* Bits at the current depth: at the leaf the whole of its last word,
     * whose bits past the last block are clear. */
    uintptr_t n = (uintptr_t)(o->off[1] - o->off[0]) << KB_WORD_SHIFT;
    kb_word w;
    for (d = 0;; ) { /* climb until a word has a set bit at or after i */
        if (i >= n)
            return 0;
        w = words[o->off[d] + (i >> KB_WORD_SHIFT)] & ~(kb_bit(i) - 1);
        if (w)
            break;
        if (++d == o->depth)
            return 0;
        i = (i >> KB_WORD_SHIFT) + 1;
        n = (n + KB_WORD_BITS - 1) >> KB_WORD_SHIFT;
    }
    if (d > 0) { /* descend to the leaf word of the lowest set bit below */
        i = (i & ~(uintptr_t)(KB_WORD_BITS - 1)) + kb_ctz(w);
        while (--d > 0)
            i = (i << KB_WORD_SHIFT) + kb_ctz(words[o->off[d] + i]);
        w = words[o->off[0] + i];
        i <<= KB_WORD_SHIFT;
    }
    *base = o->first + (i & ~(uintptr_t)(KB_WORD_BITS - 1));
    return w;
}

/* free_word_from past the first word of an order, for the spanning search
 * when SPAN_BUDGET goes past the lowest block's word: out of line and
 * cold, as the search's first probe always has a block in hand, so that
 * the probe loop keeps its registers (dense W3 537.8 -> 534.0, W4 484.3
 * -> 481.0). Builds for size call free_word_from (8 bytes less). */
#if KBUDDY_SMALL
KB_INLINE kb_word free_word_after(const kb_engine *e, unsigned k, uintptr_t from, uintptr_t *base) {
    return free_word_from(e, k, from, base);
}
#else
static KB_NOINLINE KB_COLD kb_word free_word_after(const kb_engine *e, unsigned k, uintptr_t from,
                                                   uintptr_t *base) {
    return free_word_from(e, k, from, base);
}
#endif

/* An upper bound, from two control bytes, on the free units on both sides
 * of the free block of order o at unit b that take_spanning can use: going
 * left, run_before's blocks have strictly decreasing orders below the first
 * one's p, so they hold less than 2^(p+1) units; going right from x = b +
 * 2^o, a first block of order q < ctz(x) is the left half of a pair whose
 * other half is not wholly free (I2), so the run ends within 2^(q+1) units.
 * The part before is used rounded down to the alignment (amask), and the
 * largest multiple of 2^ka below 2^(p+1) bounds it. Rejecting a probe with
 * this changes nothing but the work done. */
KB_INLINE uintptr_t span_bound(const kb_engine *e, uintptr_t b, unsigned o, uintptr_t amask,
                               bool small) {
    const uintptr_t any = ~(uintptr_t)0 >> 2;
    uintptr_t lo = e->lo, x = b + ((uintptr_t)1 << o), before = 0, after = 0;
    if (b > lo) {
        uint8_t c = e->ctrl[b - 1 - lo];
        if ((c & KB_CTRL_FREE_MASK) == KB_CTRL_FREE) {
            unsigned p = c & KB_CTRL_ORDER;
            before = !small && p == KB_CTRL_ORDER ? any : p < o ? (((uintptr_t)2 << p) - 1) & ~amask : 0;
        }
    }
    if (x < e->hi) {
        uint8_t c = e->ctrl[x - lo];
        if ((c & KB_CTRL_FREE_MASK) == KB_CTRL_FREE) {
            unsigned q = c & KB_CTRL_ORDER;
            uintptr_t m = ((uintptr_t)2 << q) - 1; /* q < ctz(x): x is a multiple of m + 1 */
            after = (!small && q == KB_CTRL_ORDER) || (x & m) ? any : m;
        }
    }
    return before + after;
}

/* Look for a run of n free units made of smaller blocks: around the lowest
 * SPAN_BUDGET blocks of order k - 2, then of order k - 1 (no order below
 * ka), extended by the free runs on both sides. Placing an allocation
 * there uses up the small blocks that trimmed tails leave behind, instead
 * of splitting a larger block. */
KB_INLINE bool take_spanning(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, uintptr_t *start,
                             bool small) {
    uintptr_t amask = ((uintptr_t)1 << ka) - 1;
    kb_view v = view_of(e);
    for (unsigned o = k >= ka + 2 ? k - 2 : ka; o < k; o++) {
        if (!((e->nonempty >> o) & 1u))
            continue;
        uintptr_t base = 0, size = (uintptr_t)1 << o;
        kb_word w = free_word_from(e, o, 0, &base); /* non-zero: the order has a block */
        for (unsigned tries = 0; tries < SPAN_BUDGET; tries++) {
            if (!w && !(w = free_word_after(e, o, base + KB_WORD_BITS, &base)))
                break;
            uintptr_t blk = base + kb_ctz(w);
            w &= w - 1;
            uintptr_t b = blk << o;
            if (span_bound(e, b, o, amask, small) < n - size)
                continue;
            uintptr_t t = run_before(e, b, o, n - size, true, small) & ~amask;
            uintptr_t need = t + size >= n ? 0 : n - t - size;
            if (need && run_after(e, b + size, need, small) < need)
                continue;
            take_run_before(&v, b, t, true, small);
            take_remove(&v, o, blk, true, small);
            if (need)
                take_run_after(&v, b + size, b - t + n, small);
            else
                release_tail(&v, b - t + n, b + size, true, small);
            *start = b - t;
            return true;
        }
    }
    return false;
}

KB_INLINE bool take_impl(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, uintptr_t *start,
                         bool heap, bool small) {
    kb_word candidates = k < KB_WORD_BITS ? e->nonempty >> k : 0;
    if (!candidates)
        return false;
    /* Success depends only on a block of order >= k existing (so that the
     * largest free size is exact and O(1)); where the allocation goes is a
     * placement choice: in a heap, a run of smaller blocks first when one
     * is near. Frame engines skip that search: without control-byte marks
     * it costs a bitmap probe per order (F2: 788 instead of 434
     * instructions per operation), and page-frame requests are mostly
     * powers of two anyway. */
    if (heap && ka < k && span_worth_trying(n, k) && take_spanning(e, n, k, ka, start, small))
        return true;
    unsigned j = k + kb_ctz(candidates);
    kb_view v = view_of(e);
    v.packed = KBUDDY_SMALL ? is_packed(e) : !heap && small;
    uintptr_t blk = v.packed ? packed_lowest(e, j) : block_lowest(e, j);
    uintptr_t b = blk << j;
    uintptr_t t = 0;
    if (ka < k) {
        /* Start in the free run just before the block when there is one:
         * the small blocks left over by earlier allocations get used, and
         * runs of exact sizes pack densely (341 runs of 3 in 1024). */
        t = run_before(e, b, k, n, heap, small) & ~(((uintptr_t)1 << ka) - 1);
        take_run_before(&v, b, t, heap, small);
    }
    uintptr_t end = b; /* the end of what was taken: the run, or the block too */
    if (t < n) {
        take_remove(&v, j, blk, heap, small);
        end += (uintptr_t)1 << j;
    }
    release_tail(&v, b - t + n, end, heap, small);
    *start = b - t;
    return true;
}

#if KBUDDY_SMALL
/* Builds for size: one copy of take_impl for every kind of engine, the
 * kind (heap or frames, layout) tested at run time; heap engines take the
 * path that allows for saturated marks whatever their size. The other
 * entry points jump to it. */
bool kb_engine_take(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, uintptr_t *start) {
    return take_impl(e, n, k, ka, start, e->ctrl != NULL, false);
}

bool kb_engine_take_frames(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, uintptr_t *start) {
    return kb_engine_take(e, n, k, ka, start);
}

/* Builds for size: one take per call (heap.c built for size does not call
 * it; defined for a heap.c built otherwise). */
size_t kb_engine_take_each(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, size_t count,
                           uintptr_t *start) {
    return count && kb_engine_take(e, n, k, ka, start) ? 1u : 0u;
}

bool kb_engine_take_heap(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, uintptr_t *start) {
    return kb_engine_take(e, n, k, ka, start);
}
#else
/* The take of a heap engine of at most 31 orders (take_heap): take_impl's
 * placement, written for that case alone (tests/test_heap_engine_large.c
 * holds it to take_impl's in an engine of 32 orders). Every mark is exact
 * there (KB_CTRL_FREE + k, k <= 30), so "is c a free mark, of an order
 * below `limit`?" is one subtraction and one comparison (c - KB_CTRL_FREE
 * < limit <= 32); positions are kept as control-byte indices (units - lo),
 * which are what the marks need; the engine's fields are read once, into
 * a heap_take, before the first store through the control bytes (which
 * may alias anything); the two control bytes around a probed block are
 * read once, for the bound and the run before it. Measured for issue 13
 * (callgrind, 200k ops, dense; every variant placing as before):
 *   take_impl (before)                               W3 539.9  W4 484.0
 *   this function, marks written after the tree         519.7     469.0
 *   + the probe's two marks read once                   516.7     467.1
 *   + marks written before the tree update              513.9     465.0
 *   + the bound's failure (58% of probes) likely        511.8     463.7
 *   + the descents read the words through h             510.9     462.9
 *   + a failed run_after (8% of probes) unlikely        507.2     459.5
 * Tried and not kept (against the row in brackets: 1 = 519.7, 2 = 516.7,
 * 4 = 511.8, 6 = 507.2 above):
 *   the probe a function called once per order (1)    526.0     473.3
 *   the probe's block from block_lowest (4)             518.4     467.3
 *   the fallback a function of its own (2)              523.5     473.7
 *   run_after from the mark the bound read (2)          519.1     468.9
 *   pieces given back order by order, no ctz (2)        523.8     472.3
 *   the fallback's run taken as it is walked (4)        513.0     464.6
 *   the fallback's descent, root hoisted (2)            520.6     469.7
 *   take_block_start giving back by ctz (2)             516.7     467.8
 *   descents of depth 3 (the W3 orders) straight-line:
 *   a switch on the depth (4)                           515.4     466.1
 *   a test for depth 3 (4)                              513.8     464.8
 *   the search (91% of takes) marked likely (6)         507.1     459.6
 *   an empty order marked unlikely (6)                  515.9     466.4
 *   no block of order k or more marked unlikely (6)     510.9     462.7
 * By order: the probe of order k - 2 fails its bound 86% of the time and
 * places 6% of all takes, that of order k - 1 succeeds 62% of the time
 * and places 53% (placehash's sequences); SPAN_BUDGET's table shows W5
 * falling when order k - 2 is searched second or alone.
 * Later: the guard bytes around the control bytes (struct kbuddy_region)
 * let heap_mark_at and heap_mark_before read without a bound test, and
 * release_heap too: see there for the figures.
 * The takes' tree updates clear a leaf word to zero 1.6 times per take and
 * set one from zero 0.9 times, but only 0.14 of those sets refill a word
 * the same take emptied (placehash's sequences), so ordering the sets
 * before the clears would save about 3 instructions per take: not done. */
typedef struct {
    kb_engine *e;
    uint8_t *ctrl;
    kb_word *words;
    const kb_order *order;
    uintptr_t lo;
} heap_take;

/* The order of the free block whose first or last unit is control byte u
 * (u <= hi - lo), or a number >= 32 when u carries no free mark: the guard
 * byte at hi - lo carries none. */
KB_INLINE unsigned heap_mark_at(const heap_take *h, uintptr_t u) {
    return (unsigned)h->ctrl[u] - KB_CTRL_FREE;
}

/* heap_mark_at of the control byte before x (x <= hi - lo), which is the
 * guard byte when x is 0. */
KB_INLINE unsigned heap_mark_before(const heap_take *h, uintptr_t x) {
    return (unsigned)kb_ctrl_before(h->ctrl, x) - KB_CTRL_FREE;
}

/* Remove the free block of order p at control byte u from the free set. */
KB_INLINE void heap_take_block(const heap_take *h, unsigned p, uintptr_t u) {
    const kb_order *o = &h->order[p];
    h->ctrl[u] = 0;
    h->ctrl[u + ((uintptr_t)1 << p) - 1] = 0;
    tree_clear(h->e, h->words, o, (u + h->lo) >> p);
}

/* Give [u, end) back (control-byte indices; end - u < 2^ctz(end + lo), as
 * release_tail requires): one block per set bit of end - u, lowest first. */
KB_INLINE void heap_give_back(const heap_take *h, uintptr_t u, uintptr_t end) {
    for (uintptr_t tail = end - u; tail; tail &= tail - 1) {
        unsigned p = kb_ctz(tail);
        const kb_order *o = &h->order[p];
        uintptr_t blk = (u + h->lo) >> p;
        h->ctrl[u] = (uint8_t)(KB_CTRL_FREE + p);
        u += (uintptr_t)1 << p;
        h->ctrl[u - 1] = (uint8_t)(KB_CTRL_FREE + p);
        tree_set_heap(h->e, h->words, o, blk);
    }
}

/* run_before at control byte x: the free run ending there, of blocks of
 * order below `limit`, up to at least `want` units (want > 0); p is
 * heap_mark_before(h, x), which the caller has read. */
KB_INLINE uintptr_t heap_run_before(const heap_take *h, uintptr_t x, unsigned p, unsigned limit,
                                    uintptr_t want) {
    uintptr_t t = 0;
    while (p < limit) {
        t += (uintptr_t)1 << p;
        if (t >= want)
            break;
        limit = p;
        p = heap_mark_before(h, x - t);
    }
    return t;
}

/* run_after at control byte x: the free run starting there, up to at least
 * `want` units. */
KB_INLINE uintptr_t heap_run_after(const heap_take *h, uintptr_t x, uintptr_t want) {
    uintptr_t u = 0;
    for (unsigned p; u < want && (p = heap_mark_at(h, x + u)) < 32u;)
        u += (uintptr_t)1 << p;
    return u;
}

/* take_run_before: the blocks of the run [x, x + t), one per bit of t,
 * the lowest bit the leftmost block. */
KB_INLINE void heap_take_run(const heap_take *h, uintptr_t x, uintptr_t t) {
    for (; t; t &= t - 1) {
        unsigned p = kb_ctz(t);
        heap_take_block(h, p, x);
        x += (uintptr_t)1 << p;
    }
}

/* take_run_after: the units [x, end) of the free run starting at x; the
 * part of its last block past end stays free. */
KB_INLINE void heap_take_run_after(const heap_take *h, uintptr_t x, uintptr_t end) {
    while (x < end) {
        unsigned p = (unsigned)h->ctrl[x] - KB_CTRL_FREE;
        heap_take_block(h, p, x);
        x += (uintptr_t)1 << p;
    }
    heap_give_back(h, end, x);
}

/* span_bound from the control bytes on either side of the free block of
 * order o that ends at control byte xe: p and q are heap_mark_at of the
 * byte just before the block and of xe, the byte just after it. */
KB_INLINE uintptr_t heap_span_bound(const heap_take *h, uintptr_t xe, unsigned p, unsigned q,
                                    unsigned o, uintptr_t amask) {
    const uintptr_t any = ~(uintptr_t)0 >> 2;
    uintptr_t before = 0, after = 0;
    if (p < o)
        before = (((uintptr_t)2 << p) - 1) & ~amask;
    if (q < 32u) {
        uintptr_t m = ((uintptr_t)2 << q) - 1; /* q < ctz(xe + lo): a multiple of m + 1 */
        after = ((xe + h->lo) & m) ? any : m;
    }
    return before + after;
}

/* take_impl for a heap engine of at most 31 orders and an allocation
 * aligned below its order (ka < k): the same placement (take_spanning,
 * then the lowest block of the smallest sufficient order with the run
 * before it). */
static KB_NOINLINE bool take_heap(kb_engine *e, uintptr_t n, unsigned k, unsigned ka,
                                  uintptr_t *start) {
    kb_word candidates = k < KB_WORD_BITS ? e->nonempty >> k : 0;
    if (!candidates)
        return false;
    const heap_take h = {e, e->ctrl, e->words, e->order, e->lo};
    const uintptr_t amask = ((uintptr_t)1 << ka) - 1;
    if (span_worth_trying(n, k)) {
        for (unsigned o = k >= ka + 2 ? k - 2 : ka; o < k; o++) {
            if (!((e->nonempty >> o) & 1u))
                continue;
            uintptr_t size = (uintptr_t)1 << o;
            const kb_order *ord = &h.order[o];
            uintptr_t i = hinted_lowest_word(h.words, ord);
            uintptr_t base = ord->first + (i << KB_WORD_SHIFT);
            kb_word w = h.words[ord->off[0] + i]; /* non-zero: the order has a block */
            for (unsigned tries = 0; tries < SPAN_BUDGET; tries++) {
                if (!w && !(w = free_word_after(e, o, base + KB_WORD_BITS, &base)))
                    break;
                uintptr_t blk = base + kb_ctz(w);
                w &= w - 1;
                uintptr_t x = (blk << o) - h.lo;
                unsigned p = heap_mark_before(&h, x), q = heap_mark_at(&h, x + size);
                if (KB_LIKELY(heap_span_bound(&h, x + size, p, q, o, amask) < n - size))
                    continue;
                uintptr_t t = heap_run_before(&h, x, p, o, n - size) & ~amask;
                uintptr_t need = t + size >= n ? 0 : n - t - size;
                if (KB_UNLIKELY(need && heap_run_after(&h, x + size, need) < need))
                    continue;
                heap_take_run(&h, x - t, t);
                heap_take_block(&h, o, x);
                if (need)
                    heap_take_run_after(&h, x + size, x - t + n);
                else
                    heap_give_back(&h, x - t + n, x + size);
                *start = x - t + h.lo;
                return true;
            }
        }
    }
    unsigned j = k + kb_ctz(candidates);
    const kb_order *oj = &h.order[j];
    uintptr_t i = hinted_lowest_word(h.words, oj);
    i = (i << KB_WORD_SHIFT) + kb_ctz(h.words[oj->off[0] + i]);
    uintptr_t x = ((oj->first + i) << j) - h.lo;
    uintptr_t t = heap_run_before(&h, x, heap_mark_before(&h, x), k, n) & ~amask;
    heap_take_run(&h, x - t, t);
    uintptr_t end = x; /* the end of what was taken: the run, or the block too */
    if (t < n) {
        heap_take_block(&h, j, x);
        end += (uintptr_t)1 << j;
    }
    heap_give_back(&h, x - t + n, end);
    *start = x - t + h.lo;
    return true;
}

/* Heap engines of 32 orders and more, whose marks saturate at order 31:
 * take_impl, which asks the bitmaps of orders 31 and up where a mark is
 * saturated. */
static KB_NOINLINE bool take_heap_large(kb_engine *e, uintptr_t n, unsigned k, unsigned ka,
                                        uintptr_t *start) {
    return take_impl(e, n, k, ka, start, true, false);
}

/* Frame engines: `small` is a small window's packed layout. */
static KB_NOINLINE bool take_frames(kb_engine *e, uintptr_t n, unsigned k, unsigned ka,
                                    uintptr_t *start) {
    return take_impl(e, n, k, ka, start, false, false);
}

static KB_NOINLINE bool take_frames_packed(kb_engine *e, uintptr_t n, unsigned k, unsigned ka,
                                           uintptr_t *start) {
    return take_impl(e, n, k, ka, start, false, true);
}

/* take_impl for a heap engine of at most 31 orders when the allocation is
 * aligned to its whole block (ka >= k): the lowest block of the smallest
 * non-empty order j >= k, used from its start. Its tail [n, 2^j) goes
 * back as one block per set bit of 2^j - n, lowest first; walking the
 * orders up with the block number, the control-byte index and the size
 * kept as they move (no variable shift per piece). */
static KB_NOINLINE bool take_block_start(kb_engine *e, uintptr_t n, unsigned k, uintptr_t *start) {
    kb_word candidates = k < KB_WORD_BITS ? e->nonempty >> k : 0;
    if (!candidates)
        return false;
    uint8_t *const ctrl = e->ctrl;
    kb_word *const words = e->words;
    unsigned j = k + kb_ctz(candidates);
    const kb_order *o = &e->order[j];
    uintptr_t blk = block_lowest(e, j);
    uintptr_t b = blk << j, x = b - e->lo, s = (uintptr_t)1 << j;
    ctrl[x] = 0;
    ctrl[x + s - 1] = 0;
    tree_clear(e, words, o, blk);
    *start = b;
    uintptr_t tail = s - n, bn = b + n; /* bn: the next piece's block number */
    uint8_t mark = KB_CTRL_FREE;          /* kb_free_mark of the order */
    x += n;
    o = e->order;
    for (s = 1; tail; tail >>= 1, bn >>= 1, s <<= 1, mark++, o++) {
        if (tail & 1) {
            ctrl[x] = mark;
            ctrl[x + s - 1] = mark;
            tree_set_heap(e, words, o, bn);
            bn++;
            x += s;
        }
    }
    return true;
}

/* Up to `count` takes of take_block_start's kind (n <= 2^k units aligned
 * to 2^k) at once. The first takes the lowest block of the smallest
 * non-empty order j >= k; since no order in [k, j) had a block, the blocks
 * its tail leaves at those orders are the only ones there, and the next
 * take finds the lowest of them, 2^k units further on; and so on. So m =
 * min(count, 2^(j-k)) successive takes use the block from its start at a
 * stride of 2^k, and what they leave free is the gap after each
 * allocation, [b + i 2^k + n, b + (i+1) 2^k), and the tail after the
 * last, [b + m 2^k, b + 2^j). With every buddy pair merged (I2) the free
 * blocks are determined by the free units, so giving those ranges back as
 * their maximal aligned pieces leaves the bitmaps and marks exactly as the
 * m single takes would, for one block search and one tree climb instead
 * of m of each. Returns m (0 when no order >= k has a block); the takes
 * start at *start + i 2^k. */
static KB_NOINLINE size_t take_block_each(kb_engine *e, uintptr_t n, unsigned k, size_t count,
                                          uintptr_t *start) {
    kb_word candidates = k < KB_WORD_BITS ? e->nonempty >> k : 0;
    if (!candidates)
        return 0;
    unsigned j = k + kb_ctz(candidates);
    const kb_order *o = &e->order[j];
    uintptr_t blk = block_lowest(e, j);
    uintptr_t b = blk << j, s = (uintptr_t)1 << j, step = (uintptr_t)1 << k;
    uintptr_t room = (uintptr_t)1 << (j - k);
    uintptr_t m = count < room ? (uintptr_t)count : room;
    kb_view v = view_of(e);
    e->ctrl[b - e->lo] = 0;
    e->ctrl[b - e->lo + s - 1] = 0;
    tree_clear(e, e->words, o, blk);
    if (n < step)
        for (uintptr_t i = 0; i < m; i++)
            release_tail(&v, b + i * step + n, b + (i + 1) * step, true, true);
    release_tail(&v, b + m * step, b + s, true, true);
    *start = b;
    return (size_t)m;
}

size_t kb_engine_take_each(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, size_t count,
                           uintptr_t *start) {
    if (count > 1 && e->ctrl && ka >= k && e->orders <= KB_CTRL_ORDER)
        return take_block_each(e, n, k, count, start);
    return count && kb_engine_take(e, n, k, ka, start) ? 1u : 0u;
}

bool kb_engine_take_frames(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, uintptr_t *start) {
    if (e->order)
        return take_frames(e, n, k, ka, start);
    return take_frames_packed(e, n, k, ka, start);
}

bool kb_engine_take_heap(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, uintptr_t *start) {
    /* Aligned to the whole block (the fast placement, and requests whose
     * alignment sets their order) in an engine of at most 31 orders: a
     * function of its own, without the search's setup. */
    if (e->orders > KB_CTRL_ORDER)
        return take_heap_large(e, n, k, ka, start);
    if (ka >= k)
        return take_block_start(e, n, k, start);
    return take_heap(e, n, k, ka, start);
}

bool kb_engine_take(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, uintptr_t *start) {
    if (!e->ctrl)
        return kb_engine_take_frames(e, n, k, ka, start);
    return kb_engine_take_heap(e, n, k, ka, start);
}
#endif /* KBUDDY_SMALL */

/* Is block b of order k free? For release's buddy tests: heap engines read
 * the block's first control byte (a free block of order k, and only one,
 * starts with kb_free_mark(k) there), frame engines test the bitmap. */
KB_INLINE bool buddy_is_free(const kb_view *v, uintptr_t span, unsigned k, uintptr_t b, bool heap) {
    if (KBUDDY_SMALL ? v->packed : !heap && v->packed)
        return block_is_free_any(v->e, k, b);
    if (heap && k < KB_CTRL_ORDER) {
        uintptr_t u = (b << k) - v->lo;
        return u < span && v->ctrl[u] == kb_free_mark(k);
    }
    return block_is_free(v->e, k, b);
}

/* The general release of units [a, b), from order 0 up (`small`: a frame
 * engine's packed layout). At each order only the two edge blocks of the
 * range can lack their buddy inside it: each either merges with its free
 * buddy (widening the range) or becomes a free block (narrowing it). The
 * range is empty only after an edge became a free block, so the loop ends
 * there and tests nothing else per order. No bound on k is needed: a block
 * of order top + 1 does not fit in [lo, hi), so at the top order an edge
 * never finds its buddy free (a buddy not wholly inside is never free,
 * I1), and a range there holds one block at most, which becomes free. */
KB_INLINE void release_impl(kb_engine *e, uintptr_t a, uintptr_t b, bool heap, bool small) {
    kb_view v = view_of(e);
    v.packed = KBUDDY_SMALL ? is_packed(e) : !heap && small;
    uintptr_t span = e->hi - e->lo;
    if (a >= b)
        return;
    for (unsigned k = 0;; k++, a >>= 1, b >>= 1) { /* here a < b */
        if (a & 1) { /* left edge: its buddy a - 1 lies outside the range */
            if (buddy_is_free(&v, span, k, a - 1, heap)) {
                block_remove(&v, k, --a, heap);
            } else {
                block_insert(&v, k, a, heap);
                if (++a == b)
                    return;
            }
        }
        if (b & 1) { /* right edge: its buddy b lies outside */
            if (buddy_is_free(&v, span, k, b, heap)) {
                block_remove(&v, k, b++, heap);
            } else {
                block_insert(&v, k, --b, heap);
                if (a == b)
                    return;
            }
        }
    }
}

#if KBUDDY_SMALL
/* Builds for size: one copy of release_impl for every kind of engine; the
 * other entry points jump to it. */
void kb_engine_release(kb_engine *e, uintptr_t a, uintptr_t b) {
    release_impl(e, a, b, e->ctrl != NULL, false);
}

void kb_engine_release_frames(kb_engine *e, uintptr_t a, uintptr_t b) { kb_engine_release(e, a, b); }

kbuddy_status kb_engine_release_heap(kb_engine *e, uintptr_t a, uintptr_t b) {
    kb_engine_release(e, a, b);
    return KBUDDY_OK;
}
#else
/* A heap release in an engine of at most 31 orders, where every mark is
 * exact and every buddy test is one control byte. Besides the block
 * numbers a and b the loop keeps the control-byte index of each edge
 * (x, y) and the block size s, so that no step needs a variable shift: the
 * edge and buddy positions move by s, the mark by one. Order 0 comes first
 * on its own (one mark per block, constant mark and descriptor).
 *
 * The loop tests nothing but the edges per order: the range can only
 * become empty where an edge becomes a free block (a merge widens it, and
 * with both edges even a < b implies a/2 < b/2), so it returns there. Nor
 * does it need a bound on the order: no block of order top + 1 fits in the
 * engine (2^(top+1) > hi - lo units), so a top-order edge never finds its
 * buddy free (the buddy cannot lie inside [lo, hi), and no free mark of
 * order top can start or end where it would) and becomes a free block,
 * which empties the range (it holds one block at most at the top order).
 * Callgrind, dense W3 / W4: 539.9 / 484.0 with the bound test a < b at
 * every order, 529.1 / 473.0 returning where the range empties, 527.2 /
 * 471.8 with order 0 on its own.
 *
 * Measured and dropped: each edge as a staircase of its own (below the
 * highest bit h in which a and b differ the edges never meet, the left one
 * acting only at a's set bits, the right one at b's; count-trailing-zeros
 * jumps from one to the next, then at most one block climbs from order h):
 * fewer steps (W3 frees act at 5.9 of 6.2 orders on average: 2.6 left,
 * 3.3 right, both at 1.3) but each jump pays a ctz, two variable shifts and
 * the descriptor's address: dense W3 557.6, W4 492.1 (fast placement,
 * whose frees skip more orders, 322.5 / 329.1 against 328.7 / 335.0).
 *
 * Issue 13 (dense W3 / W4 464.1 / 416.9 before it; a W3 free cost 257
 * instructions here): kept, the climb helpers taking the depth-1 index
 * (tree_set_from) and the right edge's marks written around y -= s (gcc
 * had kept y and y - s apart): 460.9 / 414.9. Measured and dropped, each
 * against 461.1 / 414.6 (the climb then handed the block number):
 *  - jumping over the orders where both edges are even (t = ctz(a | b),
 *    then a, b, s, mark and o advanced by t): W3 frees have 1.3 such
 *    orders and W4 frees 1.9, in runs of 1.3 on average, so the ctz and
 *    the variable shifts, paid at every order that acts, cost more than
 *    the 9 instructions an idle order costs: dense 468.1 / 418.3 (fast
 *    291.6 / 298.0 against 294.9 / 300.7). Skipping only at entry (a and
 *    b both even) saves W4 36k idle orders in 200k operations and pays a
 *    ctz on 46k frees: not tried further;
 *  - order 1 (and 2) on its own too, through an always-inline step
 *    shared with the loop: 460.3 / 413.9 (459.7 / 413.7) for 860 more
 *    bytes of -O2 code (the step inlines two tree updates per edge); the
 *    loop itself written with that step: 463.4 / 416.7 (gcc allocates
 *    its registers worse);
 *  - the left bound test as x >= s instead of x - s < span: no change;
 *  - the right edge before the left: 461.0 / 415.1 (against 460.9 /
 *    414.9, the kept version);
 *  - tree_set and tree_clear finding the depth-1 index as the leaf word's
 *    index less off[0] (p >> 6 kept live) instead of (b - first) >> 6:
 *    465.2 / 418.3.
 * Then the guard bytes (struct kbuddy_region): the buddy tests read the
 * byte beside the range without a bound test, the left one at the buddy's
 * last unit (x - 1, a free mark of order k there ends a free block of
 * order k, unit x + lo being a multiple of 2^k: for k >= 1 that byte
 * cannot start one); with the take's reads likewise, dense W3 / W4
 * 448.1 / 402.1 -> 429.5 / 386.9, fast 281.3 / 287.2 -> 275.0 / 280.7
 * (and 427.7 / 385.4, 273.7 / 279.4 with tree_set_heap after that).
 * What the 252 instructions of a W3 free were before the guards
 * (callgrind, -O2 gcc): about
 * 40 of entry, exit and order 0; 9 per order walked (5.3 orders beyond
 * order 0 per free: the shifts and the two edge tests); 20 to 26 per edge
 * that acts (3.2 blocks become free and 1.8 buddies merge per free); and
 * 15 to 19 more whenever a leaf word changes between zero and non-zero
 * (at order 0, 77% of all the tree's sets find the leaf word empty, 60%
 * at order 1: free blocks of low orders are sparse under dense
 * placement). */
static KB_NOINLINE void release_heap(kb_engine *e, uintptr_t a, uintptr_t b) {
    uint8_t *const ctrl = e->ctrl;
    kb_word *const words = e->words;
    const kb_order *o = e->order;
    uintptr_t x = a - e->lo, y = b - e->lo, s = 2;
    uint8_t mark = KB_CTRL_FREE + 1; /* the mark of order k is KB_CTRL_FREE + k */
    if (a >= b)
        return;
    /* Order 0 on its own: a block of one unit has one mark. */
    if (a & 1) {
        if (kb_ctrl_before(ctrl, x) == KB_CTRL_FREE) { /* the guard when x is 0 */
            ctrl[--x] = 0;
            tree_clear(e, words, o, a - 1);
            a--;
        } else {
            ctrl[x++] = KB_CTRL_FREE;
            tree_set_heap(e, words, o, a);
            if (++a == b)
                return;
        }
    }
    if (b & 1) {
        if (ctrl[y] == KB_CTRL_FREE) { /* the guard when y is hi - lo */
            ctrl[y++] = 0;
            tree_clear(e, words, o, b);
            b++;
        } else {
            ctrl[--y] = KB_CTRL_FREE;
            tree_set_heap(e, words, o, --b);
            if (a == b)
                return;
        }
    }
    a >>= 1;
    b >>= 1;
    o++;
    for (;; a >>= 1, b >>= 1, s <<= 1, mark++, o++) { /* here a < b */
        if (a & 1) { /* the left edge's buddy a - 1 lies outside the range */
            if (kb_ctrl_before(ctrl, x) == mark) { /* the buddy's last unit, or the guard */
                uintptr_t u = x - s;
                ctrl[u] = 0;
                ctrl[x - 1] = 0;
                tree_clear(e, words, o, a - 1);
                a--;
                x = u;
            } else {
                ctrl[x] = mark;
                ctrl[x + s - 1] = mark;
                tree_set_heap(e, words, o, a);
                if (++a == b)
                    return;
                x += s;
            }
        }
        if (b & 1) { /* the right edge's buddy b lies outside */
            if (ctrl[y] == mark) {
                ctrl[y] = 0;
                ctrl[y + s - 1] = 0;
                tree_clear(e, words, o, b);
                b++;
                y += s;
            } else {
                b--;
                ctrl[y - 1] = mark; /* the new block's last unit, then its first */
                y -= s;
                ctrl[y] = mark;
                tree_set_heap(e, words, o, b);
                if (a == b)
                    return;
            }
        }
    }
}

/* A heap release in an engine of 32 orders or more (regions of 2^31 units
 * and up), whose marks saturate at order 31: the general loop the frame
 * engine runs, with marks, and the buddy test on the bitmap from order 31
 * up (buddy_is_free). */
static KB_NOINLINE void release_heap_large(kb_engine *e, uintptr_t a, uintptr_t b) {
    release_impl(e, a, b, true, false);
}

/* A frame release in the per-order layout: release_impl's loop with the
 * order's descriptor followed from order to order (o++) rather than found
 * from k at every test and update. */
static KB_NOINLINE void release_frames(kb_engine *e, uintptr_t a, uintptr_t b) {
    kb_word *const words = e->words;
    const kb_order *o = e->order;
    if (a >= b)
        return;
    for (;; a >>= 1, b >>= 1, o++) { /* here a < b */
        if (a & 1) {
            if (order_block_is_free(words, o, a - 1)) {
                a--;
                tree_clear(e, words, o, a);
            } else {
                tree_set(e, words, o, a);
                if (++a == b)
                    return;
            }
        }
        if (b & 1) {
            if (order_block_is_free(words, o, b)) {
                tree_clear(e, words, o, b);
                b++;
            } else {
                b--;
                tree_set(e, words, o, b);
                if (a == b)
                    return;
            }
        }
    }
}

static KB_NOINLINE void release_frames_packed(kb_engine *e, uintptr_t a, uintptr_t b) {
    release_impl(e, a, b, false, true);
}

void kb_engine_release_frames(kb_engine *e, uintptr_t a, uintptr_t b) {
    if (e->order)
        release_frames(e, a, b);
    else
        release_frames_packed(e, a, b);
}

kbuddy_status kb_engine_release_heap(kb_engine *e, uintptr_t a, uintptr_t b) {
    if (e->orders <= KB_CTRL_ORDER)
        release_heap(e, a, b);
    else
        release_heap_large(e, a, b);
    return KBUDDY_OK;
}

void kb_engine_release(kb_engine *e, uintptr_t a, uintptr_t b) {
    if (!e->ctrl)
        kb_engine_release_frames(e, a, b);
    else
        kb_engine_release_heap(e, a, b);
}
#endif /* KBUDDY_SMALL */

bool kb_engine_free_block_at(const kb_engine *e, uintptr_t u, unsigned *order) {
    for (unsigned k = 0; k < e->orders; k++) {
        if (k > 0 && (u & (((uintptr_t)1 << k) - 1)))
            break;
        if (block_is_free_any(e, k, u >> k)) {
            *order = k;
            return true;
        }
    }
    return false;
}

bool kb_engine_find_free(const kb_engine *e, uintptr_t u, unsigned *order, uintptr_t *block) {
    if (u < e->lo || u >= e->hi)
        return false;
    for (unsigned k = 0; k < e->orders; k++) {
        if (block_is_free_any(e, k, u >> k)) {
            *order = k;
            *block = u >> k;
            return true;
        }
    }
    return false;
}

bool kb_engine_any_free(const kb_engine *e, uintptr_t a, uintptr_t b) {
    if (a < e->lo)
        a = e->lo;
    if (b > e->hi)
        b = e->hi;
    if (a >= b)
        return false;
    for (unsigned k = 0; k < e->orders; k++) {
        uintptr_t f, nbits, at = order_leaf(e, k, &f, &nbits);
        if (kb_bits_any_set(e->words, at + (a >> k) - f, at + ((b - 1) >> k) - f + 1))
            return true;
    }
    return false;
}

/* The first unit of the lowest free block of order k numbered `from` or
 * higher, or UINTPTR_MAX when there is none. O(D) amortised. */
static uintptr_t next_free_unit(const kb_engine *e, unsigned k, uintptr_t from) {
    if (!(e->nonempty >> k & 1u))
        return UINTPTR_MAX;
    if (is_packed(e)) {
        const uint16_t *t = packed_tab(e);
        uintptr_t f = e->lo >> k, i = from < f ? 0 : from - f;
        uintptr_t p = packed_find(e, t[4 + k] + i, t[5 + k]);
        return p == t[5 + k] ? UINTPTR_MAX : (f + p - t[4 + k]) << k;
    }
    uintptr_t base;
    kb_word w = free_word_from(e, k, from, &base);
    return w ? (base + kb_ctz(w)) << k : UINTPTR_MAX;
}

uintptr_t kb_engine_free_runs(const kb_engine *e, unsigned k, kb_run_fn fn, void *ctx) {
    /* Merge the orders' free blocks in address order: each order keeps a
     * cursor on its next block, and the lowest cursor is taken each time.
     * By I2 the runs found are maximal: free memory next to a run but not
     * in it lies in blocks of order below k. */
    uintptr_t next[KBUDDY_MAX_ORDERS] = {0}; /* [k, orders) set below */
    for (unsigned j = k; j < e->orders; j++)
        next[j] = next_free_unit(e, j, 0);
    uintptr_t a = 0, b = 0, total = 0;
    for (;;) {
        unsigned j = k;
        for (unsigned i = k + 1; i < e->orders; i++)
            if (next[i] < next[j])
                j = i;
        if (next[j] == UINTPTR_MAX) /* j < orders: callers pass k < orders */
            break;
        uintptr_t s = next[j], t = s + ((uintptr_t)1 << j);
        if (s != b) {
            if (a < b)
                fn(ctx, a, b);
            a = s;
        }
        b = t;
        total += t - s;
        next[j] = next_free_unit(e, j, (s >> j) + 1);
    }
    if (a < b)
        fn(ctx, a, b);
    return total;
}

uintptr_t kb_engine_free_units_in(const kb_engine *e, uintptr_t a, uintptr_t b) {
    if (a < e->lo)
        a = e->lo;
    if (b > e->hi)
        b = e->hi;
    if (a >= b)
        return 0;
    uintptr_t total = 0;
    for (unsigned k = 0; k < e->orders; k++) { /* blocks wholly inside */
        uintptr_t f, nbits, at = order_leaf(e, k, &f, &nbits);
        uintptr_t first = (a >> k) + ((a & (((uintptr_t)1 << k) - 1)) != 0), last = b >> k;
        if (first < last)
            total += kb_bits_count(e->words, at + first - f, at + last - f) << k;
    }
    /* At most two free blocks stick out of the range: one over each edge
     * (or one over both). */
    unsigned k;
    uintptr_t blk;
    bool over_left = kb_engine_find_free(e, a, &k, &blk) && (blk << k) < a;
    if (over_left) {
        uintptr_t end = (blk + 1) << k;
        total += (end < b ? end : b) - a;
    }
    if (kb_engine_find_free(e, b - 1, &k, &blk) && ((blk + 1) << k) > b &&
        !(over_left && (blk << k) < a))
        total += b - (blk << k);
    return total;
}

bool kb_engine_claim(kb_engine *e, uintptr_t a, uintptr_t b) {
    unsigned k;
    uintptr_t blk, u;
    if (a >= b || a < e->lo || b > e->hi)
        return false;
    /* Pass 1, read-only: the free blocks covering [a, b) must be contiguous. */
    for (u = a; u < b; u = (blk + 1) << k)
        if (!kb_engine_find_free(e, u, &k, &blk))
            return false;
    kb_view v = view_of(e);
    v.packed = is_packed(e);
    /* Pass 2: remove them, then give back what lies outside [a, b). */
    uintptr_t head = a, tail = b;
    for (u = a; u < b; u = (blk + 1) << k) {
        (void)kb_engine_find_free(e, u, &k, &blk);
        block_remove(&v, k, blk, e->ctrl != NULL);
        if (u == a)
            head = blk << k;
        tail = (blk + 1) << k;
    }
    if (head < a)
        kb_engine_release(e, head, a);
    if (tail > b)
        kb_engine_release(e, b, tail);
    return true;
}

/* ------------------------------------------------------------------------ */
/* Integrity check                                                           */
/* ------------------------------------------------------------------------ */

/* The summaries of a tree over nbits bits: each bit of depth d+1 is "word
 * of depth d non-zero", and no bit stands for a word (or block) that does
 * not exist; the lowest-word hint (lowest_hint) names a leaf word and
 * every leaf word below it is empty. Its root word in *root. */
static bool check_tree(const kb_word *words, const kb_order *o, uintptr_t nbits, kb_word *root) {
    uintptr_t n = nbits;
    if (LOWEST_HINT && o->depth < KB_TREE_MAX_DEPTH) {
        uintptr_t hint = *lowest_hint(o);
        if (hint >= (n + KB_WORD_BITS - 1) >> KB_WORD_SHIFT)
            return false;
        for (uintptr_t i = 0; i < hint; i++)
            if (words[o->off[0] + i])
                return false;
    }
    for (uint32_t d = 0; d < o->depth; d++) {
        const kb_word *w = &words[o->off[d]];
        uintptr_t nw = (n + KB_WORD_BITS - 1) >> KB_WORD_SHIFT;
        if ((n & (KB_WORD_BITS - 1)) && (w[nw - 1] >> (n & (KB_WORD_BITS - 1))))
            return false;
        if (d + 1 < o->depth) {
            const kb_word *up = &words[o->off[d + 1]];
            for (uintptr_t i = 0; i < nw; i++)
                if (((up[i >> KB_WORD_SHIFT] >> (i & 63)) & 1u) != (w[i] != 0))
                    return false;
        } else {
            *root = w[0];
        }
        n = nw;
    }
    return true;
}

/* A packed engine's table must be the one its range has, and its tree
 * must agree with itself; `nonempty` with each order's bits. */
static bool check_packed(const kb_engine *e) {
    uint16_t want[PACKED_TAB_MAX];
    const uint16_t *t = packed_tab(e);
    if (e->hi - e->lo >= KB_PACKED_UNITS || e->orders != kb_orders_for(e->hi - e->lo))
        return false;
    (void)packed_table(e->lo, e->hi, false, want);
    const uint16_t *count = t + 5 + e->orders; /* the state; the rest is fixed */
    for (unsigned k = 0; k < e->orders; k++)
        want[5 + e->orders + k] = count[k];
    for (size_t i = 0; i < packed_tab_words(e->orders) * 4u; i++)
        if (t[i] != want[i])
            return false;
    kb_order tree = {0, 0, {t[1], t[2], t[3]}, t[0]}; /* the shared tree */
    kb_word root = 0;
    if (!check_tree(e->words, &tree, t[4 + e->orders], &root))
        return false;
    for (unsigned k = 0; k < e->orders; k++) {
        uintptr_t at = ((uintptr_t)t[1] << KB_WORD_SHIFT) + t[4 + k];
        if (count[k] != kb_bits_count(e->words, at, at + t[5 + k] - t[4 + k]) ||
            ((e->nonempty >> k) & 1u) != (count[k] != 0))
            return false;
    }
    return true;
}

static bool check_order(const kb_engine *e, unsigned k, size_t *blocks, uintptr_t *units) {
    uintptr_t size = (uintptr_t)1 << k;
    uintptr_t first, nbits, at = order_leaf(e, k, &first, &nbits);
    if (!is_packed(e)) {
        kb_word root = 0;
        if (!check_tree(e->words, &e->order[k], nbits, &root) ||
            ((e->nonempty >> k) & 1u) != (root != 0))
            return false;
    }
    for (uintptr_t i = 0; i < nbits; i = next_word(at + i) - at) {
        kb_word w = e->words[(at + i) >> KB_WORD_SHIFT] & range_mask(at + i, at + nbits);
        for (; w; w &= w - 1) {
            uintptr_t b = first + ((at + i) & ~(uintptr_t)(KB_WORD_BITS - 1)) + kb_ctz(w) - at;
            uintptr_t start = b << k;
            if (start < e->lo || start + size > e->hi) /* I1: inside */
                return false;
            if (k + 1 < e->orders && block_is_free_any(e, k, b ^ 1)) /* I2 */
                return false;
            for (unsigned j = k + 1; j < e->orders; j++) /* I1: no free ancestor */
                if (block_is_free_any(e, j, b >> (j - k)))
                    return false;
            (*blocks)++;
            *units += size;
        }
    }
    return true;
}

bool kb_engine_check(const kb_engine *e, size_t *free_blocks, uintptr_t *free_units) {
    *free_blocks = 0;
    *free_units = 0;
    if (e->orders == 0 || e->orders > KBUDDY_MAX_ORDERS || e->lo >= e->hi)
        return false;
    /* A heap engine's guard bytes (kb_engine_take_heap) read as "no free
     * block" only while they are 0. */
    if (e->ctrl && (kb_ctrl_before(e->ctrl, 0) != 0 || e->ctrl[e->hi - e->lo] != 0))
        return false;
    if (e->orders < KBUDDY_MAX_ORDERS && (e->nonempty >> e->orders))
        return false;
    if (is_packed(e) && !check_packed(e))
        return false;
    for (unsigned k = 0; k < e->orders; k++)
        if (!check_order(e, k, free_blocks, free_units))
            return false;
    return true;
}
