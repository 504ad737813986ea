/*
 * kbuddy internals: the types every core file shares and the bit tricks,
 * each in a small named helper. Freestanding: no libc.
 */
#ifndef KBUDDY_INTERNAL_H
#define KBUDDY_INTERNAL_H

#include "kbuddy.h"

#include <limits.h>

#if KBUDDY_MIN_BLOCK_SHIFT < 4 || KBUDDY_MIN_BLOCK_SHIFT > 5
/* The allocation record keeps the unused bytes of the last block in 6 bits
 * (0 .. KBUDDY_MIN_BLOCK), so blocks of 16 or 32 bytes are supported. */
#error "KBUDDY_MIN_BLOCK_SHIFT must be 4 or 5"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define KB_LIKELY(x) __builtin_expect(!!(x), 1)
#define KB_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define KB_INLINE static inline __attribute__((always_inline))
#define KB_NOINLINE __attribute__((noinline))
/* A function on the rare side of a branch: its callers' paths to it are
 * laid out and register-allocated as the unlikely ones. */
#define KB_COLD __attribute__((cold))
#else
#define KB_LIKELY(x) (x)
#define KB_UNLIKELY(x) (x)
#define KB_INLINE static inline
#define KB_NOINLINE
#define KB_COLD
#endif

typedef uint64_t kb_word;
#define KB_WORD_BITS 64u
#define KB_WORD_SHIFT 6u

/* A free bitmap is a 64-ary tree of words: depth 0 holds one bit per block,
 * each higher depth one bit per word below ("that word is non-zero"), and
 * the last depth is a single root word. Seven depths cover 2^42 blocks. */
#define KB_TREE_MAX_DEPTH 7u

/* The free bitmap of one order. Bit i of depth 0 stands for the block whose
 * absolute number is first + i (block number = unit >> order), so block b's
 * bit is bit (b + leaf) of the words seen as one bit array: leaf = 64 off[0]
 * - first (mod 2^64), which saves the tree updates a load and a subtraction
 * per block (first and off[0] folded into one number). off[1] is the end of
 * the leaf words in every tree, a one-word tree too (where no depth 1
 * exists), so that the leaf's bound needs no field of its own; the bits
 * past the last block in its word are always clear. */
struct kbuddy_order {
    uintptr_t first;                  /* block number of bit 0               */
    uintptr_t leaf;                   /* 64 off[0] - first: block b's bit     */
    uint32_t off[KB_TREE_MAX_DEPTH];  /* word offset of each depth in words   */
    uint32_t depth;                   /* depths in use (1 .. 7)               */
};

typedef struct kbuddy_engine kb_engine;
typedef struct kbuddy_order kb_order;

/* ------------------------------------------------------------------------ */
/* Bit tricks. Compilers lower __builtin_ctzll to a libgcc call (__ctzdi2)
 * on targets without a count-trailing-zeros instruction (riscv64 without
 * Zbb, for one), and kernels often link without libgcc, so the builtins are
 * used only where they are known to be single instructions; elsewhere a de
 * Bruijn multiply does the job. */
/* ------------------------------------------------------------------------ */

#if defined(__x86_64__) || defined(__aarch64__) || defined(__riscv_zbb) || \
    (defined(KBUDDY_USE_BUILTIN_CTZ) && KBUDDY_USE_BUILTIN_CTZ)
#define KB_HAVE_FAST_CTZ 1
#else
#define KB_HAVE_FAST_CTZ 0
#endif

/* Index of the lowest set bit of x; x != 0. */
KB_INLINE unsigned kb_ctz(kb_word x) {
#if KB_HAVE_FAST_CTZ
    return (unsigned)__builtin_ctzll(x);
#else
    static const unsigned char debruijn_index[64] = {
        0,  1,  2,  53, 3,  7,  54, 27, 4,  38, 41, 8,  34, 55, 48, 28,
        62, 5,  39, 46, 44, 42, 22, 9,  24, 35, 59, 56, 49, 18, 29, 11,
        63, 52, 6,  26, 37, 40, 33, 47, 61, 45, 43, 21, 23, 58, 17, 10,
        51, 25, 36, 32, 60, 20, 57, 16, 50, 31, 19, 15, 30, 14, 13, 12};
    return debruijn_index[((x & (~x + 1)) * UINT64_C(0x022fdd63cc95386d)) >> 58];
#endif
}

/* Index of the highest set bit of x; x != 0. */
KB_INLINE unsigned kb_floor_log2(kb_word x) {
#if KB_HAVE_FAST_CTZ
    return 63u - (unsigned)__builtin_clzll(x);
#else
    x |= x >> 1;
    x |= x >> 2;
    x |= x >> 4;
    x |= x >> 8;
    x |= x >> 16;
    x |= x >> 32;
    return kb_ctz(x - (x >> 1));
#endif
}

/* Smallest k with 2^k >= x; x != 0. */
KB_INLINE unsigned kb_ceil_log2(kb_word x) {
    return x <= 1 ? 0u : kb_floor_log2(x - 1) + 1u;
}

/* Number of set bits (SWAR; used only by the integrity check). */
KB_INLINE unsigned kb_popcount(kb_word x) {
    x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
    x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
    x = (x + (x >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
    return (unsigned)((x * UINT64_C(0x0101010101010101)) >> 56);
}

KB_INLINE bool kb_is_pow2(uintptr_t x) { return x != 0 && (x & (x - 1)) == 0; }

KB_INLINE kb_word kb_bit(uintptr_t i) { return (kb_word)1 << (i & (KB_WORD_BITS - 1)); }

/* Words covering bits [a, b) of a flat bitmap: set / clear / tests. */
void kb_bits_set(kb_word *w, uintptr_t a, uintptr_t b);
void kb_bits_clear(kb_word *w, uintptr_t a, uintptr_t b);
bool kb_bits_all_set(const kb_word *w, uintptr_t a, uintptr_t b);
bool kb_bits_any_set(const kb_word *w, uintptr_t a, uintptr_t b);
/* Number of set bits in [a, b). */
uintptr_t kb_bits_count(const kb_word *w, uintptr_t a, uintptr_t b);
/* First clear bit in [a, b), or b when there is none. */
uintptr_t kb_bits_next_clear(const kb_word *w, uintptr_t a, uintptr_t b);

/* Fill / clear memory without calling libc (so that the core compiles with
 * -nostdlib and needs no memset symbol). */
void kb_zero(void *p, size_t n);

/* ------------------------------------------------------------------------ */
/* The buddy engine (buddy.c)                                               */
/* ------------------------------------------------------------------------ */

/* Number of orders a range of `units` units has (floor(log2 units) + 1). */
KB_INLINE unsigned kb_orders_for(uintptr_t units) { return kb_floor_log2(units) + 1u; }

/* Words of bitmap storage needed by the orders of [lo, hi), and by the worst
 * alignment of a range of `units` units. 0 if too many (more than 2^32). */
size_t kb_engine_words(uintptr_t lo, uintptr_t hi);
size_t kb_engine_words_bound(uintptr_t units);

/* The packed layout, for frame windows of fewer than KB_PACKED_UNITS
 * frames, where 48 bytes of descriptor and a word of rounding per order
 * would cost more than the bits themselves (11 orders at 1024 frames: 528
 * bytes of descriptors for 256 bytes of bits). The bits of all orders lie
 * one after the other in one bit array under one shared 64-ary summary
 * tree, and the descriptors are one small table of 16-bit numbers in the
 * first words:
 *   tab[0] tree depth, tab[1 + d] word offset of depth d (d < 3),
 *   tab[4 + k] first bit of order k, tab[4 + orders] bits in all,
 *   tab[5 + orders + k] free blocks of order k (a leaf word or summary
 *   turning zero says nothing about one order: the count says when it
 *   empties).
 * Such an engine has e->order == NULL and e->words at the table. Its
 * operations cost more instructions (they are out of line, an order's
 * first block is lo >> k, its lowest block is searched for from its first
 * bit: F1 on 8191 frames 292 instead of 219 per operation), so larger
 * windows and heap regions keep the per-order layout and its code. Every
 * number fits 16 bits: below 8192 frames the array has under 2^15 bits. */
#define KB_PACKED_UNITS 8192u

/* Words of a packed engine over [lo, hi) (table included), and the most
 * any alignment of a range of `units` units needs; units < KB_PACKED_UNITS. */
size_t kb_packed_words(uintptr_t lo, uintptr_t hi);
size_t kb_packed_words_bound(uintptr_t units);

/* Lay a packed engine out over [lo, hi) (hi - lo < KB_PACKED_UNITS) in
 * `words` (kb_packed_words(lo, hi) of them), all cleared: nothing is free.
 * Returns the words used. O(words). */
size_t kb_engine_init_packed(kb_engine *e, uintptr_t lo, uintptr_t hi, kb_word *words);

/* Lay the engine out over [lo, hi) with `order` (kb_orders_for entries) and
 * `words` (kb_engine_words words), all cleared: nothing is free.
 * kb_engine_layout does the same but for clearing, for words known to be
 * zero already (fresh mappings), and returns how many there are; with
 * order NULL it lays out the packed layout (its table in the words, which
 * it writes) and returns kb_packed_words. */
void kb_engine_init(kb_engine *e, uintptr_t lo, uintptr_t hi, kb_order *order, kb_word *words);
size_t kb_engine_layout(kb_engine *e, uintptr_t lo, uintptr_t hi, kb_order *order, kb_word *words);

/* Allocate n units aligned to 2^ka units, where k = max(ceil(log2 n), ka)
 * (k < 64): the lowest free block of the smallest non-empty order >= k is
 * used, starting early in the free run just before it when that run can
 * hold part of the allocation; whatever of the block is left over stays
 * free. Returns false, changing nothing, when no order >= k has a free
 * block. O(L). With ka == k no run is searched and the block is used from
 * its start: the heap's fast placement (KBUDDY_PLACE_FAST). */
bool kb_engine_take(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, uintptr_t *start);

/* Up to `count` successive kb_engine_take(e, n, k, ka) at once: returns
 * how many, m (0 when the first would fail), and they start at *start +
 * i 2^k (i < m), leaving the engine exactly as the m single takes would.
 * m > 1 only for a heap engine of at most 31 orders with ka >= k, where
 * one take costs O(L) and the other m - 1 O(1) amortised each (a gap
 * after each when n < 2^k: O(k) each); otherwise m <= 1. */
size_t kb_engine_take_each(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, size_t count,
                           uintptr_t *start);

/* Free units [a, b) (none of them free now, all inside [lo, hi)), merging
 * with free buddies; an empty range (a >= b) changes nothing. O(L). */
void kb_engine_release(kb_engine *e, uintptr_t a, uintptr_t b);

/* kb_engine_take and kb_engine_release for a heap engine (e->ctrl set),
 * which a heap's region knows it has: the order count and (take) the
 * alignment are the only things left to test. A heap engine's control
 * bytes have a guard byte of 0 on each side, ctrl[-1] and ctrl[hi - lo]
 * (see struct kbuddy_region), which these, and so kb_engine_take and
 * kb_engine_release on a heap engine, may read instead of testing bounds:
 * every heap engine needs them. The release returns KBUDDY_OK, always: a
 * heap's free without a lock ends in a jump to it instead of a call and a
 * return (callgrind, dense, sized free: W3 461.2 -> 459.3, W4 413.9 ->
 * 412.0). */
bool kb_engine_take_heap(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, uintptr_t *start);
kbuddy_status kb_engine_release_heap(kb_engine *e, uintptr_t a, uintptr_t b);

/* kb_engine_take and kb_engine_release for a frame engine (no control
 * bytes), which the frame allocator knows it has: the layout is the only
 * thing left to test. */
bool kb_engine_take_frames(kb_engine *e, uintptr_t n, unsigned k, unsigned ka, uintptr_t *start);
void kb_engine_release_frames(kb_engine *e, uintptr_t a, uintptr_t b);

/* Is unit u inside a free block? If so, its order and block number. O(L). */
bool kb_engine_find_free(const kb_engine *e, uintptr_t u, unsigned *order, uintptr_t *block);

/* Is a free block starting exactly at unit u? Its order if so. O(L). */
bool kb_engine_free_block_at(const kb_engine *e, uintptr_t u, unsigned *order);

/* Does any free block intersect [a, b)? O(L + (b - a) / 64). */
bool kb_engine_any_free(const kb_engine *e, uintptr_t a, uintptr_t b);

/* How many units of [a, b) are free. O(L + (b - a) / 64). */
uintptr_t kb_engine_free_units_in(const kb_engine *e, uintptr_t a, uintptr_t b);

/* If every unit of [a, b) is free, make them not free (the parts of the free
 * blocks outside [a, b) stay free) and return true; else change nothing and
 * return false. O(L^2) in the worst case; used by in-place realloc. */
bool kb_engine_claim(kb_engine *e, uintptr_t a, uintptr_t b);

/* Call fn(ctx, a, b) for every maximal run [a, b) of units covered by free
 * blocks of order k (k < orders) or above, in address order; return the
 * units covered.
 * Since every fully free aligned block lies inside one free block (I2),
 * these are exactly the free units of whole, aligned blocks of order k.
 * O(L * (R + 1) + D * R) for R runs' blocks. */
typedef void (*kb_run_fn)(void *ctx, uintptr_t a, uintptr_t b);
uintptr_t kb_engine_free_runs(const kb_engine *e, unsigned k, kb_run_fn fn, void *ctx);
/* The engine leaves its owner (a region leaving its heap): every order it
 * has free is taken out of the owner's counts (and mask), as if it had
 * emptied. The engine is not used afterwards. O(L). */
void kb_engine_detach(kb_engine *e);
/* Check the bitmaps' own invariants: summaries agree with the words below,
 * no bit outside the range, no two free buddies. Count the free blocks and
 * free units. Returns false on any violation. O(size / 64 + free blocks). */
bool kb_engine_check(const kb_engine *e, size_t *free_blocks, uintptr_t *free_units);

/* Helpers for locking, shared by the heap and the frame allocator. */
KB_INLINE void kb_lock(const kbuddy_lock *lock) {
    if (lock->acquire)
        lock->acquire(lock->ctx);
}
KB_INLINE void kb_unlock(const kbuddy_lock *lock) {
    if (lock->release)
        lock->release(lock->ctx);
}

/* ------------------------------------------------------------------------ */
/* Heap regions (heap.c)                                                    */
/* ------------------------------------------------------------------------ */

/* The bookkeeping at the head of every region. The units [engine.lo,
 * engine.hi) follow it; ctrl holds one control byte per unit:
 *   a free unit: 0;
 *   the first unit of an allocation: KB_CTRL_START | [KB_CTRL_LONG] | slack,
 *     slack being the unused bytes of the last unit (0 .. KBUDDY_MIN_BLOCK;
 *     KBUDDY_MIN_BLOCK only for a zero-byte allocation). Without
 *     KB_CTRL_LONG the allocation is this one unit;
 *   with KB_CTRL_LONG, the next bytes hold the unit count, 4 bits per byte,
 *     least significant first, KB_CTRL_MORE on all but the last (n >= 2
 *     units always leave room: n needs at most 1 + log16(n) bytes);
 *   the last unit of an allocation of n >= 2 units also carries
 *     KB_CTRL_END (OR-ed into a count byte when they share a unit);
 *   any other unit of an allocation: 0;
 *   the first and the last unit of a free block of order k:
 *     KB_CTRL_FREE | min(k, KB_CTRL_ORDER) (written by the engine);
 *   any other free unit: 0.
 * The classes cannot be confused: starts have bit 7 set, free marks are
 * 001xxxxx, count and end bytes are 0x0xxxxx. So a byte that reads as a
 * free mark of order k at a unit aligned to 2^k is one. With them the
 * engine finds the free block that starts or ends at a unit in O(1), which
 * keeps placement cheap.
 * Two guard bytes, always 0, frame the control bytes: ctrl[-1] and
 * ctrl[hi - lo] (KB_CTRL_GUARDS). A guard reads as "no free block here",
 * so the engine's hot paths read the byte beside a block without first
 * asking whether the block is at the region's edge (kbuddy_check verifies
 * both guards). */
struct kbuddy_region {
    struct kbuddy_region *next; /* next region, higher address             */
    uintptr_t start, end;       /* the bytes given to kbuddy_add_region     */
    kb_engine engine;
    uint8_t *ctrl;              /* ctrl[u - engine.lo] for unit u           */
};

#define KB_CTRL_GUARDS 2u   /* bytes of guard around the control bytes    */
#define KB_CTRL_START 0x80u /* first unit of an allocation                */
#define KB_CTRL_LONG 0x40u  /* first unit: the allocation has >= 2 units  */
#define KB_CTRL_SLACK 0x3fu /* first unit: unused bytes of the last unit  */
#define KB_CTRL_END 0x40u   /* other units: the allocation's last unit     */
#define KB_CTRL_MORE 0x10u  /* count bytes: another count byte follows    */
#define KB_CTRL_VALUE 0x0fu /* count bytes: 4 bits of the unit count       */
#define KB_CTRL_FREE 0x20u  /* free block's first/last unit: | its order   */
#define KB_CTRL_FREE_MASK 0xe0u
#define KB_CTRL_ORDER 0x1fu /* order field; all ones: order 31 or above     */

/* The mark on the first and last unit of a free block of order k. */
KB_INLINE uint8_t kb_free_mark(unsigned k) {
    return (uint8_t)(KB_CTRL_FREE | (k < KB_CTRL_ORDER ? k : KB_CTRL_ORDER));
}

/* Is c the control byte of the last unit of an allocation? */
KB_INLINE bool kb_ctrl_is_last(uint8_t c) {
    return (c & KB_CTRL_START) ? !(c & KB_CTRL_LONG) : (c & KB_CTRL_END) != 0;
}

/* The control byte before index x (0 <= x <= hi - lo): the leading guard
 * when x is 0. Read as (ctrl + x) - 1, so that no pointer before the guard
 * is ever formed, as ctrl[x - 1] would with an index that wraps. */
KB_INLINE uint8_t kb_ctrl_before(const uint8_t *ctrl, uintptr_t x) { return *(ctrl + x - 1); }

#endif /* KBUDDY_INTERNAL_H */
