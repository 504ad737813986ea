/*
 * kbuddy: a buddy-system memory allocator for kernels and bare-metal code.
 *
 * This header is the whole public API. Two allocators share one buddy engine:
 *
 *   - kbuddy_heap    a byte heap fed with any number of memory regions
 *                    ("transfer"), serving alloc(size, align) / free / realloc;
 *   - kbuddy_frames  a page-frame allocator over frame numbers, whose
 *                    bookkeeping lives in a caller-supplied buffer, so the
 *                    frames themselves need not be mapped.
 *
 * The core (src/) is freestanding C11: it calls no libc function and needs
 * nothing from the environment except, at most, memcpy/memset/memmove.
 * Every function reports errors as a kbuddy_status value; none prints,
 * aborts or allocates.
 *
 * Complexity notes use these symbols:
 *   L  the number of orders of a region or frame window
 *      (log2 of its size in minimum blocks, at most 64);
 *   R  the number of regions added to a heap (regions are kept in an
 *      address-sorted list; lookups start at the last region used).
 *
 * Thread-safety: an object without a lock installed must be used by one
 * thread (CPU) at a time. With a lock installed (kbuddy_set_lock,
 * kbuddy_frames_set_lock) every function on that object may be called
 * concurrently from any number of CPUs, except the *_init functions and the
 * *_set_lock functions themselves, which must run before sharing.
 */
#ifndef KBUDDY_H
#define KBUDDY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KBUDDY_VERSION_MAJOR 1
#define KBUDDY_VERSION_MINOR 0
#define KBUDDY_VERSION_PATCH 0

/* What kbuddy_alloc returns, for the compiler. No alloc_size: that would
 * tell object-size checking (_FORTIFY_SOURCE) the block is exactly the size
 * requested, while kbuddy_usable_size promises every byte up to the end of
 * its last minimum block. */
#if defined(__GNUC__) || defined(__clang__)
#define KBUDDY_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#define KBUDDY_ALLOC_SIZE(n) __attribute__((alloc_size(n)))
#define KBUDDY_ALLOC_ALIGN(n) __attribute__((alloc_align(n)))
#else
#define KBUDDY_MALLOC_ATTR
#define KBUDDY_ALLOC_SIZE(n)
#define KBUDDY_ALLOC_ALIGN(n)
#endif

/* ------------------------------------------------------------------------ */
/* Status codes                                                             */
/* ------------------------------------------------------------------------ */

typedef enum kbuddy_status {
    KBUDDY_OK = 0,
    KBUDDY_ENOMEM,      /* not enough free memory, or a region too small to be of use        */
    KBUDDY_EINVAL,      /* malformed argument: NULL object, alignment not a power of two,
                           empty or address-wrapping range, frames added outside the window  */
    KBUDDY_EOVERLAP,    /* the region or frame range overlaps memory already managed          */
    KBUDDY_EFOREIGN,    /* the pointer or frame lies outside everything this allocator manages */
    KBUDDY_EBADPTR,     /* inside managed memory but not the start of a live allocation       */
    KBUDDY_EDOUBLEFREE, /* the pointer or frames are already free                              */
    KBUDDY_ESIZE,       /* a sized free whose size/alignment does not match the allocation   */
    KBUDDY_ECORRUPT,    /* the integrity check found damaged bookkeeping                       */
    KBUDDY_EBUSY        /* the region still holds allocations (kbuddy_remove_region)          */
} kbuddy_status;

/* A short English description of `status` ("double free", ...). Never NULL:
 * unknown values give "unknown status". O(1), thread-safe. */
const char *kbuddy_strerror(kbuddy_status status);

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

/* log2 of the heap's minimum block (its allocation granule), in bytes.
 * Every heap block, and so every pointer kbuddy_alloc returns, is aligned to
 * at least this much. The heap spends one control byte per minimum block plus
 * about two bits of free bitmaps, so 32-byte blocks cost 3.9% of a region.
 * A kernel may set it to 4 (16-byte blocks, 7.8%) when compiling src/; all
 * files must agree. Only 4 and 5 are accepted: an allocation record keeps
 * the unused bytes of its last block in 6 bits. */
#ifndef KBUDDY_MIN_BLOCK_SHIFT
#define KBUDDY_MIN_BLOCK_SHIFT 5
#endif
#define KBUDDY_MIN_BLOCK ((size_t)1 << KBUDDY_MIN_BLOCK_SHIFT)

/* Orders a heap region or frame window can have: enough for any size_t. */
#define KBUDDY_MAX_ORDERS 64

/* 1: build the core (src/) for code size rather than speed. The engine's
 * allocation and release are compiled once for every kind of engine (heap
 * region, frame window, packed frame window) with the kind tested at run
 * time, instead of once per kind with the tests folded away, and the
 * special cases that only pay for themselves at -O2 (the heap's release
 * without variable shifts, its block-start allocation, its one-word check
 * of a sized free's record) are left out. Behaviour, statistics and checks
 * are the same; at -Os operations cost 5-18% more instructions, for a
 * sixth less code (README.md, "Using it in a kernel"). Defaults to 1 in builds for size (-Os, which defines
 * __OPTIMIZE_SIZE__) and 0 otherwise; a kernel may set it either way when
 * compiling src/. */
#ifndef KBUDDY_SMALL
#ifdef __OPTIMIZE_SIZE__
#define KBUDDY_SMALL 1
#else
#define KBUDDY_SMALL 0
#endif
#endif

/* ------------------------------------------------------------------------ */
/* Locking                                                                  */
/* ------------------------------------------------------------------------ */

/* A lock supplied by the caller: acquire(ctx) / release(ctx). The callbacks
 * must provide mutual exclusion with acquire/release memory ordering. In a
 * kernel whose interrupt handlers allocate, acquire must also mask
 * interrupts on the local CPU. The only callbacks made with the lock held
 * are the walk functions' (which must not call into the allocator); the
 * out-of-memory handler runs without it. */
typedef struct kbuddy_lock {
    void (*acquire)(void *ctx);
    void (*release)(void *ctx);
    void *ctx;
} kbuddy_lock;

/* A ready spinlock on C11 atomics for kernels that have nothing better
 * (test-and-test-and-set; it does not mask interrupts). Usage:
 *
 *     static kbuddy_spinlock heap_lock = KBUDDY_SPINLOCK_INIT;
 *     kbuddy_lock lk = KBUDDY_SPINLOCK_HOOK(&heap_lock);
 *     kbuddy_set_lock(&heap, &lk);
 */
typedef struct kbuddy_spinlock {
#ifdef __cplusplus
    unsigned int word; /* private */
#else
    _Atomic unsigned int word; /* private */
#endif
} kbuddy_spinlock;
#define KBUDDY_SPINLOCK_INIT {0}
#define KBUDDY_SPINLOCK_HOOK(sl) \
    ((kbuddy_lock){kbuddy_spinlock_acquire, kbuddy_spinlock_release, (void *)(sl)})

/* Spin until the kbuddy_spinlock at `ctx` is taken (acquire ordering). */
void kbuddy_spinlock_acquire(void *ctx);
/* Release the kbuddy_spinlock at `ctx` (release ordering). */
void kbuddy_spinlock_release(void *ctx);
/* Take the lock if it is free; true on success. O(1). */
bool kbuddy_spinlock_try_acquire(void *ctx);

/* ------------------------------------------------------------------------ */
/* Private state shared by the heap and the frame allocator                  */
/* ------------------------------------------------------------------------ */

/* The buddy engine's state for one contiguous range of units (heap minimum
 * blocks or page frames). Private: declared here only so that the public
 * types below are complete. See src/buddy.c. */
struct kbuddy_engine {
    uint64_t *words;           /* the free bitmaps of every order            */
    struct kbuddy_order *order;/* per-order bitmap layout, `orders` entries  */
    uintptr_t lo, hi;          /* units [lo, hi), absolute unit numbers      */
    unsigned int orders;       /* orders 0 .. orders - 1                     */
    uint64_t nonempty;         /* bit k: order k has a free block            */
    uint8_t *ctrl;             /* heap: control bytes (free-block marks)     */
    const uint64_t *used;      /* frames: used bits (neighbour hints)        */
    uint64_t *owner_mask;      /* owner's union of nonempty masks, or NULL   */
    size_t *owner_count;       /* owner's per-order count of engines with
                                  that order non-empty (with owner_mask)     */
};

/* ------------------------------------------------------------------------ */
/* The byte heap                                                            */
/* ------------------------------------------------------------------------ */

struct kbuddy_region; /* private: the bookkeeping at the head of each region */

/* A heap. The type is complete so that a kernel can declare it static, but
 * its fields are private: use only the functions below. Initialise with
 * KBUDDY_HEAP_INIT or kbuddy_init. */
typedef struct kbuddy_heap kbuddy_heap;

typedef bool (*kbuddy_oom_fn)(kbuddy_heap *heap, size_t size, size_t align, void *ctx);

struct kbuddy_heap {
    struct kbuddy_region *regions; /* address-sorted list of regions            */
    struct kbuddy_region *hint;    /* the region last used by alloc or free      */
    size_t total;                  /* see kbuddy_stats                           */
    size_t allocated;
    size_t user;
    size_t overhead;
    size_t allocations;
    size_t region_count;
    uint64_t orders_free;          /* bit k: some region has a free block of order k */
    size_t regions_with_order[KBUDDY_MAX_ORDERS]; /* regions whose order k is non-empty */
    kbuddy_oom_fn oom;
    void *oom_ctx;
    kbuddy_lock lock;              /* acquire == NULL: no locking               */
    unsigned int placement;        /* a kbuddy_placement                         */
};

/* Static initialiser of an empty heap: `static kbuddy_heap h = KBUDDY_HEAP_INIT;`
 * (dense placement). */
#define KBUDDY_HEAP_INIT {0}

/* Make `heap` empty, without regions, lock or out-of-memory handler, with
 * dense placement. Forgets any regions it had (their memory is not
 * touched). O(1). Not thread-safe: call before the heap is shared. */
void kbuddy_init(kbuddy_heap *heap);

/* Where kbuddy_alloc puts a block inside the free memory. Both keep every
 * other promise of this header alike: an allocation of n minimum blocks
 * reserves exactly n, the rest of its power-of-two block goes back at once,
 * alignment is absolute, merging is complete, largest_free is exact, and
 * an allocation succeeds exactly when a free block of its order k (see
 * kbuddy_alloc) exists. They differ in cost and in how densely a heap
 * fills (measured with bench/callgrind.sh and workload W5 of the bench):
 *
 *   KBUDDY_PLACE_DENSE  (the default) a run of small free blocks around the
 *                       lowest free block of order k-2, then of order k-1,
 *                       when one is long enough (looked for only when the
 *                       allocation leaves at least 1/32 of its block
 *                       over), else the lowest free block
 *                       of the smallest order that suffices, starting in
 *                       the free run just before it when there is one.
 *                       About 90% of a region can be live at the first
 *                       failure (W5) for random sizes.
 *   KBUDDY_PLACE_FAST   the lowest free block of the smallest order that
 *                       suffices, from its start: no search, and a free
 *                       that merges with one edge per order. About 40%
 *                       fewer instructions per operation, about 74% W5. For
 *                       kernels whose heap is far from full, or whose
 *                       sizes are mostly powers of two (where both modes
 *                       place alike).
 */
typedef enum kbuddy_placement {
    KBUDDY_PLACE_DENSE = 0,
    KBUDDY_PLACE_FAST = 1
} kbuddy_placement;

/* Choose the placement of later allocations (blocks already placed stay
 * where they are; switching at any time is safe). Returns KBUDDY_OK, or
 * KBUDDY_EINVAL (heap is NULL or placement is not one of the values above;
 * nothing changes). Takes the heap's lock. O(1). */
kbuddy_status kbuddy_set_placement(kbuddy_heap *heap, kbuddy_placement placement);

/* Hand the memory [start, start + size) over to the heap ("transfer").
 * Any alignment and size; any number of regions, at any time, including from
 * inside the out-of-memory handler. The region's own first bytes hold its
 * bookkeeping (about 4% of it, see KBUDDY_MIN_BLOCK_SHIFT); no memory
 * outside the region is ever touched. The caller must not use the memory
 * afterwards except through the heap.
 *
 * Returns KBUDDY_OK, or:
 *   KBUDDY_EINVAL    heap or start is NULL, size is 0, or the range wraps
 *                    around the end of the address space;
 *   KBUDDY_ENOMEM    the region cannot hold its bookkeeping and at least one
 *                    minimum block (a few hundred bytes are enough);
 *   KBUDDY_EOVERLAP  the range overlaps a region already added, whatever
 *                    its size.
 * When several apply, the first in this order wins: EINVAL, EOVERLAP, ENOMEM
 * (a region that both overlaps and is too small gets EOVERLAP).
 * On error the heap is unchanged.
 * O(R + L + size / (64 * KBUDDY_MIN_BLOCK)): the bitmaps are cleared. */
kbuddy_status kbuddy_add_region(kbuddy_heap *heap, void *start, size_t size);

/* As kbuddy_add_region, for a range that reads as zero (a fresh anonymous
 * mapping, RAM cleared at boot): the bookkeeping at its head is not
 * cleared, so the pages of it that the heap never needs stay untouched
 * (about 1/32 of the range: 2 MiB of a 64 MiB region). Memory that is not
 * zero corrupts the heap (kbuddy_check finds it). Same results;
 * O(R + L). */
kbuddy_status kbuddy_add_region_zeroed(kbuddy_heap *heap, void *start, size_t size);

/* Take back the region that kbuddy_add_region was given at `start` (the
 * same address), if none of it is allocated: the heap forgets it, and the
 * caller owns [start, start + size) again (unmap it, give its frames back to
 * a frame allocator, or add it again later). Statistics drop by what the
 * region added to them. Returns KBUDDY_OK, or
 *   KBUDDY_EINVAL    heap or start is NULL;
 *   KBUDDY_EFOREIGN  no region was added at exactly `start`;
 *   KBUDDY_EBUSY     some of the region is allocated.
 * On error the heap is unchanged. Takes the heap's lock.
 * O(R + L^2): the free blocks that tile the region are checked one by one
 * (at most two per order; a busy region is found at its first used unit). */
kbuddy_status kbuddy_remove_region(kbuddy_heap *heap, void *start);

/* Allocate `size` bytes aligned to `align` (absolute address alignment).
 * `align` must be a power of two no larger than the largest block a region
 * can hold; any value below KBUDDY_MIN_BLOCK gives KBUDDY_MIN_BLOCK.
 * Size 0 returns a unique minimum block. The block is rounded up to a whole
 * number of minimum blocks and nothing more: the rest of the power-of-two
 * block it was carved from goes straight back to the free lists.
 *
 * Returns NULL when heap is NULL, align is 0 or not a power of two, the
 * rounded size would overflow, or no region has a free block of order
 * k = max(ceil(log2(units)), log2(align / KBUDDY_MIN_BLOCK)), that is a free
 * block at least as large as both the rounded size and the alignment (a
 * smaller free block that happens to be aligned enough is not searched for:
 * that search could not be O(L)), and the out-of-memory handler (if any)
 * declines. So kbuddy_alloc(heap, size, 1) succeeds exactly for the sizes
 * up to largest_free (kbuddy_get_stats). The handler runs with the
 * heap's lock released; each time it returns true the allocation is retried.
 * O(R + L) without the handler (the R term only when regions must be
 * skipped). Placement: the lowest region that has a large enough block;
 * in it, as the heap's kbuddy_placement says (by default dense: a run of
 * small free blocks around the lowest free block of order k-2, then of
 * order k-1, if one is long enough, else the lowest free block of the
 * smallest order that suffices, starting in the free run just before that
 * block when there is one). */
void *kbuddy_alloc(kbuddy_heap *heap, size_t size, size_t align)
    KBUDDY_MALLOC_ATTR KBUDDY_ALLOC_ALIGN(3);

/* Allocate up to `count` blocks of `size` bytes, each exactly what
 * kbuddy_alloc(heap, size, 1) returns (a separate allocation, freed on its
 * own), side by side in one run when a free block can hold them all, else
 * one by one. Stores them in out[0 .. n) and returns n: fewer than count
 * only when memory runs out (the out-of-memory handler is not called), 0
 * when heap or out is NULL, count is 0 or the rounded size would overflow.
 * For caches that refill in batches: one engine operation for the whole
 * run, and blocks that lie together, so that one CPU's blocks do not share
 * cache lines of bookkeeping with another's. O(R + L + count). */
size_t kbuddy_alloc_many(kbuddy_heap *heap, size_t size, size_t count, void **out);

/* As kbuddy_alloc_many, but each block exactly what kbuddy_alloc(heap,
 * size, align) returns: aligned to `align` (a power of two). The blocks lie
 * side by side in one run when their rounded size is a multiple of align
 * and a free block can hold them all, else they are taken one by one. For
 * caches of size classes whose blocks must be naturally aligned. Returns
 * how many were stored: fewer than count only when memory runs out (the
 * out-of-memory handler is not called); 0 when heap or out is NULL, count
 * is 0, align is not a power of two or the rounded size would overflow.
 * O(R + L + count). */
size_t kbuddy_alloc_many_aligned(kbuddy_heap *heap, size_t size, size_t align, size_t count,
                                 void **out);

/* Allocate up to `count` blocks of `size` bytes aligned to `align` (a power
 * of two), each placed exactly where `count` successive calls of
 * kbuddy_alloc(heap, size, align) would place it, in that order (out[0]
 * the first), and leaving the heap exactly as those calls would: the same
 * free blocks, records and statistics. Unlike kbuddy_alloc_many_aligned,
 * which takes one run of count blocks wherever a block can hold them all,
 * this keeps the single allocation's placement (the lowest fitting free
 * piece), for callers whose memory use depends on it, at a fraction of the
 * cost: the calls that would carve one free block from its start (requests
 * aligned to their whole block, as naturally aligned size classes are, or
 * any request under KBUDDY_PLACE_FAST) are one engine operation for the
 * whole block, the rest one each, all under one lock acquisition. Stores
 * the blocks in out[0 .. n) and returns n: fewer than count only when
 * memory runs out (the out-of-memory handler is not called); 0 when heap
 * or out is NULL, count is 0, align is not a power of two or the rounded
 * size would overflow. O(R + L) per free block carved, plus O(count);
 * builds for size (KBUDDY_SMALL) make the allocations one at a time,
 * O(count * (R + L)), with the same result. */
size_t kbuddy_alloc_each(kbuddy_heap *heap, size_t size, size_t align, size_t count, void **out);

/* Free an allocation made by kbuddy_alloc or kbuddy_realloc on this heap.
 * Returns KBUDDY_OK (also for ptr == NULL), or:
 *   KBUDDY_EINVAL       heap is NULL;
 *   KBUDDY_EFOREIGN     ptr lies outside every region of the heap;
 *   KBUDDY_EBADPTR      ptr lies inside a region but is not the start of a live
 *                       allocation (interior pointer, bookkeeping area);
 *   KBUDDY_EDOUBLEFREE  ptr lies in free memory: it was already freed;
 *   KBUDDY_ECORRUPT     the allocation record at ptr is damaged (only after
 *                       memory outside any allocation was overwritten).
 * A refused call changes nothing. O(R + L). */
kbuddy_status kbuddy_free(kbuddy_heap *heap, void *ptr);

/* Free ptrs[0], ptrs[1], ... in order, as kbuddy_free would (NULL entries
 * are skipped), stopping at the first that is not a live allocation of the
 * heap (foreign, interior, already freed, also earlier in this batch): that
 * one and those after it are left as they are. Returns how many entries
 * were dealt with: count when all were freed, else the index of the
 * refused one; 0 when heap or ptrs is NULL. Allocations that lie side by
 * side and follow each other in the batch (in either direction) go back
 * to the free lists as one run: one engine operation instead of one each.
 * For caches that give blocks back in batches. O(R + count * L). */
size_t kbuddy_free_many(kbuddy_heap *heap, void *const *ptrs, size_t count);

/* Free, stating the size and alignment given at allocation (as Rust's
 * GlobalAlloc::dealloc and C23's free_aligned_sized do). The statement is
 * checked: besides every error of kbuddy_free it returns
 *   KBUDDY_ESIZE  size differs from the size requested at allocation (or
 *                 the new size of the last realloc), or align is not a power
 *                 of two, or the block is not aligned to align.
 * A refused call changes nothing. O(R + L). */
kbuddy_status kbuddy_free_sized(kbuddy_heap *heap, void *ptr, size_t size, size_t align);

/* Resize an allocation, keeping `align` (which the caller states again, as
 * Rust's GlobalAlloc::realloc does; use the value given at allocation).
 *   ptr == NULL            acts as kbuddy_alloc(heap, size, align);
 *   new size fits          the same pointer, the record updated (shrinking
 *                          gives the freed tail back to the free lists);
 *   the memory right after the block is free
 *                          grows in place, the same pointer;
 *   otherwise              allocates a new block, copies, frees the old one.
 * Returns NULL on failure (invalid align, overflow, no memory, or ptr not a
 * live allocation of this heap) and leaves the old allocation untouched.
 * size == 0 is a valid size: the result is a minimum block, never a free.
 * O(R + L) in place, plus the copy when moving. */
void *kbuddy_realloc(kbuddy_heap *heap, void *ptr, size_t size, size_t align)
    KBUDDY_ALLOC_ALIGN(4);

/* Resize an allocation without moving it: what kbuddy_realloc does when it
 * returns the same pointer, and nothing else. For callers that move blocks
 * themselves (a global allocator that copies outside its own lock, or a
 * vector that would rather allocate a larger block than copy). `align` is
 * the alignment to keep, as for kbuddy_realloc. Returns KBUDDY_OK (the block
 * at ptr now has `size` bytes; shrinking gives the tail back), or:
 *   KBUDDY_EINVAL  heap or ptr is NULL, or align is not a power of two;
 *   KBUDDY_ENOMEM  it cannot be done in place: the memory after the block
 *                  is not free, the rounded size would overflow, or ptr is
 *                  not aligned to align;
 *   KBUDDY_EFOREIGN, KBUDDY_EBADPTR, KBUDDY_EDOUBLEFREE, KBUDDY_ECORRUPT
 *                  ptr is not a live allocation, as for kbuddy_free.
 * A refused call changes nothing. Never calls the out-of-memory handler.
 * O(R + L). */
kbuddy_status kbuddy_resize_in_place(kbuddy_heap *heap, void *ptr, size_t size, size_t align);

/* The number of bytes usable at ptr: the requested size rounded up to a
 * whole number of minimum blocks. 0 when ptr is NULL or not a live
 * allocation of this heap. O(R + log L). */
size_t kbuddy_usable_size(const kbuddy_heap *heap, const void *ptr);

typedef struct kbuddy_stats {
    size_t total;        /* bytes that can be handed out: regions minus bookkeeping and unusable edges */
    size_t allocated;    /* bytes reserved by live allocations                                          */
    size_t user;         /* bytes requested by live allocations                                         */
    size_t overhead;     /* bytes of added regions spent on bookkeeping or lost to alignment;
                            total + overhead == the bytes of all regions added                          */
    size_t largest_free; /* the largest size that kbuddy_alloc(heap, size, 1) can satisfy right now     */
    size_t allocations;  /* live allocations                                                            */
    size_t regions;      /* regions added                                                               */
} kbuddy_stats;

/* Fill *out with the heap's statistics, exact at the moment of the call.
 * free bytes = total - allocated. A NULL heap gives all zeroes. O(1). */
void kbuddy_get_stats(const kbuddy_heap *heap, kbuddy_stats *out);

/* Verify every invariant of the heap's bookkeeping: regions sorted and
 * disjoint, every block accounted for exactly once, every free block in its
 * order's bitmap and its summaries, no two free buddies left unmerged, every
 * allocation record well formed, and the statistics equal to what the blocks
 * add up to. Returns KBUDDY_OK or KBUDDY_ECORRUPT (KBUDDY_EINVAL for NULL).
 * Read-only. O(total size / KBUDDY_MIN_BLOCK): meant for tests and debug
 * builds. */
kbuddy_status kbuddy_check(const kbuddy_heap *heap);

/* Report every block, free or used, in address order: fn(ctx, start, size,
 * used). Used blocks are reported with their usable size; consecutive free
 * blocks are reported one by one (as the buddy system holds them). fn must
 * not call into the heap. O(total size / KBUDDY_MIN_BLOCK). */
typedef void (*kbuddy_walk_fn)(void *ctx, void *start, size_t size, bool used);
void kbuddy_walk(const kbuddy_heap *heap, kbuddy_walk_fn fn, void *ctx);

/* Report the whole pages of free memory, so that they can be given back:
 * fn(ctx, start, size) for every maximal span of free memory whose start and
 * end are multiples of `page` (a power of two), in address order; returns the
 * bytes reported (0 when heap or fn is NULL or page is not a power of two).
 * The heap keeps no bookkeeping inside free memory, so the caller may drop
 * the contents of these pages (madvise(MADV_DONTNEED), or decommit them)
 * without telling the heap, on one condition: memory must be readable and
 * writable again before the heap hands it out (hosted: pages come back as
 * zeroes on first touch by themselves). Drop the pages inside fn: it runs
 * with the heap's lock held, so no allocation can take them meanwhile; once
 * kbuddy_heap_trim returns they may be handed out at any time. fn must not
 * call into the heap. Nothing of the heap changes.
 * O(L * (R + S) + size / (64 * page)) for R regions and S spans. */
typedef void (*kbuddy_span_fn)(void *ctx, void *start, size_t size);
size_t kbuddy_heap_trim(const kbuddy_heap *heap, size_t page, kbuddy_span_fn fn, void *ctx);

/* Report the pages of the heap's own bookkeeping (bitmaps and control
 * bytes at the head of each region) that hold nothing but zeros, so that
 * they can be given back too: fn(ctx, start, size) for every maximal run
 * of such pages (whole, aligned pages of `page` bytes, a power of two of
 * at least 8), region by region; returns the bytes reported (0 for a NULL
 * heap or fn or a bad page). Free memory keeps most of its bookkeeping at
 * zero (only the first and last control bytes of a free block, and one
 * bit per block, are set), so after a large heap has emptied, most of it
 * can go. The same condition as kbuddy_heap_trim: the pages must read as
 * zeros afterwards (anonymous memory after madvise(MADV_DONTNEED) does);
 * the heap writes them again when it needs them. Drop them inside fn,
 * which runs with the heap's lock held and must not call into the heap.
 * Nothing of the heap changes. O(bookkeeping bytes / 8): every page is
 * read. */
size_t kbuddy_heap_trim_bookkeeping(const kbuddy_heap *heap, size_t page, kbuddy_span_fn fn,
                                    void *ctx);

/* Install the out-of-memory handler (NULL removes it). When an allocation
 * finds no block, fn(heap, size, align, ctx) is called without the lock held;
 * it may add regions (kbuddy_add_region) or free memory and return true to
 * have the allocation retried, or return false to make it fail. O(1). */
void kbuddy_set_oom_handler(kbuddy_heap *heap, kbuddy_oom_fn fn, void *ctx);

/* Install a lock (copied; NULL: no locking). Call before the heap is shared.
 * O(1). */
void kbuddy_set_lock(kbuddy_heap *heap, const kbuddy_lock *lock);

/* Tell a heap that its struct has moved: `heap` holds a byte-for-byte copy
 * of a heap whose old copy will not be used again (a struct returned by
 * value, or a language runtime that moves objects, as Rust does). Each
 * region's bookkeeping points back at the heap struct; this re-points it at
 * `heap`. Call it after the copy and before any other call on the new copy.
 * Harmless on a heap that has not moved. Takes the heap's lock. O(R). */
void kbuddy_rebind(kbuddy_heap *heap);

/* ------------------------------------------------------------------------ */
/* The page-frame allocator                                                 */
/* ------------------------------------------------------------------------ */

/* A frame allocator over frame numbers in a fixed window. Complete type,
 * private fields; initialise with kbuddy_frames_init. */
typedef struct kbuddy_frames kbuddy_frames;
struct kbuddy_frames {
    struct kbuddy_engine engine; /* the buddy engine over [base, base + count)  */
    uint64_t *used;              /* one bit per frame of the window: allocated */
    size_t added;                /* see kbuddy_frame_stats                      */
    size_t allocated;
    kbuddy_lock lock;
};

/* The largest window a frame allocator manages: 2^36 frames (256 TiB of
 * 4 KiB pages) where size_t has 64 bits, every size_t value elsewhere. The
 * free bitmaps are addressed with 32-bit word offsets, which is what sets
 * the limit. */
#if SIZE_MAX > 0xffffffffu
#define KBUDDY_FRAMES_MAX ((size_t)1 << 36)
#else
#define KBUDDY_FRAMES_MAX SIZE_MAX
#endif

/* Bytes of metadata a window of `nframes` frames needs, whatever its base:
 * at most 4 bits per frame for every window of 1024 frames or more (1024
 * frames: 463 bytes; about 3.05 bits per frame for large windows), and at
 * most 4 bits per frame plus 64 bytes below that (64 frames: 87 bytes).
 * SIZE_MAX when nframes > KBUDDY_FRAMES_MAX,
 * and 0 when nframes is 0 (both refused by kbuddy_frames_init).
 * O(log nframes). */
size_t kbuddy_frames_meta_size(size_t nframes);

/* Set up `fa` to manage frame numbers [base, base + nframes), with its
 * bookkeeping in meta[0, meta_size) (any alignment; 8-byte alignment avoids
 * a few wasted bytes). Nothing is free until kbuddy_frames_add.
 * Returns KBUDDY_OK, or
 *   KBUDDY_EINVAL  fa or meta is NULL, nframes is 0, or base + nframes wraps;
 *   KBUDDY_ENOMEM  meta_size < kbuddy_frames_meta_size(nframes), or
 *                  nframes > KBUDDY_FRAMES_MAX.
 * O(meta_size / 8): the buffer is cleared. Not thread-safe; clears any lock
 * installed before (install it afterwards). */
kbuddy_status kbuddy_frames_init(kbuddy_frames *fa, size_t base, size_t nframes,
                                 void *meta, size_t meta_size);

/* Hand frames [first, first + count) over; they merge with free frames next
 * to them. Returns KBUDDY_OK, or
 *   KBUDDY_EINVAL    fa is NULL, count is 0, or the run leaves the window;
 *   KBUDDY_EOVERLAP  some frame of the run was already added.
 * O(L + count / 64). */
kbuddy_status kbuddy_frames_add(kbuddy_frames *fa, size_t first, size_t count);

/* Allocate exactly `count` frames starting at a multiple of `align` (a power
 * of two, absolute frame numbers), storing the first in *first. The rest of
 * the power-of-two block they were carved from stays free. Returns KBUDDY_OK,
 * or KBUDDY_EINVAL (NULL argument, count 0, align not a power of two) or
 * KBUDDY_ENOMEM (no free naturally aligned block holds both count and align;
 * it never fails while one exists). O(L + count / 64). */
kbuddy_status kbuddy_frames_alloc(kbuddy_frames *fa, size_t count, size_t align, size_t *first);

/* Free frames [first, first + count): any run of allocated frames, including
 * part of an allocation. Returns KBUDDY_OK, or
 *   KBUDDY_EINVAL       fa is NULL or count is 0;
 *   KBUDDY_EFOREIGN     a frame of the run is outside the window or was never
 *                       added;
 *   KBUDDY_EDOUBLEFREE  a frame of the run is already free (and every frame
 *                       of it was added).
 * A refused call changes nothing. O(L + count / 64), refused or not. */
kbuddy_status kbuddy_frames_free(kbuddy_frames *fa, size_t first, size_t count);

typedef struct kbuddy_frame_stats {
    size_t total;        /* frames added   */
    size_t allocated;    /* frames in use  */
    size_t largest_free; /* the largest count kbuddy_frames_alloc(fa, count, 1, ...) can satisfy now */
} kbuddy_frame_stats;

/* Exact statistics. O(1). A NULL fa gives zeroes. */
void kbuddy_frames_get_stats(const kbuddy_frames *fa, kbuddy_frame_stats *out);

/* Verify every invariant (bitmaps and summaries agree, no frame both free and
 * allocated, buddies merged, statistics exact). KBUDDY_OK or
 * KBUDDY_ECORRUPT. O(nframes). */
kbuddy_status kbuddy_frames_check(const kbuddy_frames *fa);

/* Report every run of free or allocated frames in order: fn(ctx, first,
 * count, used); never-added frames are skipped. Free runs are reported block
 * by block. fn runs with the lock held and must not call into the frame
 * allocator. O(nframes). */
typedef void (*kbuddy_frames_walk_fn)(void *ctx, size_t first, size_t count, bool used);
void kbuddy_frames_walk(const kbuddy_frames *fa, kbuddy_frames_walk_fn fn, void *ctx);

/* Install a lock (copied; NULL: none). Call after kbuddy_frames_init, which
 * clears it, and before the allocator is shared. O(1). */
void kbuddy_frames_set_lock(kbuddy_frames *fa, const kbuddy_lock *lock);

#ifdef __cplusplus
}
#endif

#endif /* KBUDDY_H */
