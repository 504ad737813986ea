/*
 * kbuddy_malloc: the global allocator. One process-wide (kernel-wide) kbuddy
 * heap, the C malloc family on it, and per-CPU caches of small blocks in
 * front of it so that the common malloc and free take no shared lock.
 *
 * Layers, bottom up:
 *
 *   core heap   a kbuddy_heap (kbuddy.h) fed by kbuddy_malloc_add_region,
 *               the "transfer(region)" of a kernel's boot code, and by the
 *               optional grow hook when it runs out. One lock (the hooks'
 *               lock, by default a spinlock) serialises every call into it.
 *   depot       per size class, a bounded stack of full magazines and one of
 *               empty magazines, under the same lock.
 *   per-CPU     per size class, two magazines (arrays of pointers to free
 *   caches      blocks of that class), touched only by their own CPU (thread
 *               in TLS builds) with interrupts masked: malloc pops, free
 *               pushes. Only when both magazines are empty (full) does the
 *               CPU trade one with the depot, which is O(1) under the lock;
 *               when the depot has none to give, a magazine is filled from
 *               the core heap in one lock acquisition. Full magazines beyond
 *               the depot's bound go back to the core heap. A block freed on
 *               another CPU than the one that allocated it simply goes into
 *               the freeing CPU's cache: magazines, not blocks, travel.
 *   malloc      kbm_malloc, kbm_free, ...: small requests (at most
 *               KBUDDY_MALLOC_CACHE_MAX bytes with any alignment up to
 *               KBUDDY_MALLOC_CACHE_MAX) go through the caches; the rest
 *               straight to the core heap, but for large blocks below.
 *   mappings    with the map and unmap hooks (hosted: mmap, munmap,
 *               mremap), a request above the map threshold (1 MiB) gets a
 *               mapping of its own, which nothing is written into: it costs
 *               nothing until touched, calloc clears none of it when fresh
 *               mappings read as zero, and free gives it back at once (or
 *               keeps it for the next one: KBUDDY_MALLOC_MAP_CACHE). The
 *               layer keeps its mappings in a registry (a sorted array
 *               under the lock, taken from the core heap beyond its first
 *               16 entries), so bad frees of them are refused like any
 *               other without reading memory the layer does not own.
 *
 * Every block but the mapped ones is an allocation of the core heap: a
 * cached block is one the core heap counts as allocated but that the
 * program does not hold. Small
 * requests are rounded up to a size class: 32-byte steps up to 512 bytes,
 * then KBUDDY_MALLOC_CLASS_STEPS classes per doubling (576, 640, ..., 1024,
 * 1152, ...) up to KBUDDY_MALLOC_CACHE_MAX (with the default 32-byte
 * minimum block). The core heap hands a class's blocks out aligned to the
 * largest power of two that divides the class size (a 640-byte block to
 * 128, a 4096-byte block to 4096), so a request aligned to A is served by
 * the class of its size rounded up to a multiple of A, from the caches.
 * With KBUDDY_MALLOC_SLABS (the Linux build) the odd multiples of 16 from
 * 48 to 496 are classes too, objects carved from slabs (see below).
 *
 * Bad frees. Nothing is ever written into a block the program holds or has
 * freed: the magazines are arrays outside the blocks, and the layer keeps a
 * state byte (a "tag") for the first minimum block of every block it hands
 * out, in a table at the head of each region (1 byte per 32 bytes, 3.1%);
 * the tag bytes of a small block's second and third minimum blocks hold
 * the size requested, so that a sized free of a block of more than 64
 * bytes is checked exactly. free reads the tag of its pointer: "held by the program" (with the size
 * class) is changed to "cached" with one compare-and-swap, so of two frees
 * of the same pointer, even racing on two CPUs, exactly one wins; "cached"
 * means a double free of a block sitting in some cache; no tag means the
 * pointer is not the start of a block the program holds, and the core heap
 * is asked why (double free of memory given back to the heap, interior
 * pointer, ...). Pointers outside every region are foreign. A refused call
 * changes nothing; it is counted and reported through the bad_free hook.
 *
 * Freestanding: malloc/kbuddy_malloc.c is C11 that needs nothing but the core
 * and memcpy/memset. Build options (compile-time macros, set them when
 * compiling malloc/kbuddy_malloc.c; the defaults suit a kernel):
 *
 *   KBUDDY_MALLOC_TLS        1: one cache per thread in thread-local storage
 *                            (hosted builds); 0: one per CPU, chosen by the
 *                            cpu_id hook, with interrupts masked by the
 *                            irq_save/irq_restore hooks (kernels). Default 0.
 *   KBUDDY_MALLOC_ERRNO      1: set errno as the C standard and POSIX say
 *                            (hosted builds). Default 0: no errno.
 *   KBUDDY_MALLOC_STD_NAMES  1: also define malloc, free, calloc, realloc,
 *                            reallocarray, aligned_alloc, posix_memalign,
 *                            memalign, malloc_usable_size, free_sized and
 *                            free_aligned_sized as calls to the kbm_
 *                            functions (for kernels; the hosted shared
 *                            library defines its own). Default 0.
 *   KBUDDY_MALLOC_MAX_CPUS, KBUDDY_MALLOC_MAX_REGIONS, KBUDDY_MALLOC_CACHE_SHIFT,
 *   KBUDDY_MALLOC_MAG_BYTES, KBUDDY_MALLOC_DEPOT_MAGS, KBUDDY_MALLOC_SLABS:
 *                            see below.
 *   KBUDDY_MALLOC_CACHE_LINE the layer's own per-CPU structures are whole,
 *                            aligned lines of this size, so that CPUs do
 *                            not share them. Default 64.
 *
 * Names: the malloc family is kbm_<standard name>, because kbuddy_free,
 * kbuddy_realloc, kbuddy_free_sized and kbuddy_usable_size are the core
 * heap's functions (with a heap argument). Everything else is
 * kbuddy_malloc_*.
 *
 * Thread-safety: every function may be called concurrently from any CPU or
 * thread, except kbuddy_malloc_set_hooks, which must run before the heap is
 * shared. In kernels whose interrupt handlers allocate, install irq_save and
 * irq_restore: each call masks interrupts on the local CPU for its whole
 * duration (the hooks' lock then need not); with cpu_id_unmasked set, the
 * cached malloc and free paths claim the CPU's cache instead, and only the
 * paths that take the lock mask them.
 *
 * Complexity: the cached paths are O(1). A trade with the depot is O(1)
 * under the lock; filling or emptying a magazine is one batch call of the
 * core heap (kbuddy_alloc_many_aligned, kbuddy_free_many: O(R + L + M) and
 * O(R + M * L)) under one lock acquisition (M = blocks per magazine, at
 * most 64). Large requests cost what the core heap's calls cost
 * (O(R + L), kbuddy.h), under the lock; mapped ones what the hooks cost,
 * plus O(log M) under the lock to find a mapping and O(M) to record or
 * forget one (M = live mappings). Resolving a pointer is O(1) for the
 * region the CPU used last, else O(number of regions).
 */
#ifndef KBUDDY_MALLOC_H
#define KBUDDY_MALLOC_H

#include "kbuddy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

/* CPUs that can have a cache (cpu_id() must be below this; a CPU with a
 * larger number works without a cache, through the lock; with
 * cpu_id_unmasked set and this a power of two, its cached calls borrow the
 * cache of its number modulo this, if that CPU has one, claimed as every
 * cached call claims it). Per-CPU builds. */
#ifndef KBUDDY_MALLOC_MAX_CPUS
#define KBUDDY_MALLOC_MAX_CPUS 64
#endif

/* Regions the global heap can have (kbuddy_malloc_add_region and grow).
 * A grown region given back (ungrow) keeps its slot: slots are never
 * reused, so that lookups stay lock-free. */
#ifndef KBUDDY_MALLOC_MAX_REGIONS
#define KBUDDY_MALLOC_MAX_REGIONS 64
#endif

/* log2 of the largest request served by the caches (4096 bytes), with any
 * alignment up to it. Larger requests, and requests aligned beyond it, go
 * to the core heap under the lock. 4 + KBUDDY_MIN_BLOCK_SHIFT ..
 * 15 + KBUDDY_MIN_BLOCK_SHIFT. */
#ifndef KBUDDY_MALLOC_CACHE_SHIFT
#define KBUDDY_MALLOC_CACHE_SHIFT 12
#endif
#define KBUDDY_MALLOC_CACHE_MAX ((size_t)1 << KBUDDY_MALLOC_CACHE_SHIFT)

/* Size classes per doubling above 16 minimum blocks (512 bytes): 8 (576,
 * 640, ..., 1024, 1152, ...: at most 1/8 of a block unused by the
 * request's rounding, W5 88% of the region in live requests) or 4 (640,
 * 768, 896, 1024, 1280, ...: fewer magazines per CPU, W5 85%). 8 needs
 * KBUDDY_MALLOC_CACHE_SHIFT at most 9 above KBUDDY_MIN_BLOCK_SHIFT (the
 * classes must fit a tag's 6 bits); above that the default is 4. */
#ifndef KBUDDY_MALLOC_CLASS_STEPS
#if KBUDDY_MALLOC_CACHE_SHIFT - KBUDDY_MIN_BLOCK_SHIFT <= 9
#define KBUDDY_MALLOC_CLASS_STEPS 8
#else
#define KBUDDY_MALLOC_CLASS_STEPS 4
#endif
#endif

/* 1: sub-unit size classes. The odd multiples of 16 bytes from 48 to 496
 * are classes too, whose objects are carved from slabs (core blocks of 4,
 * 8 or 16 KiB holding objects of one class) instead of being blocks of
 * whole 32-byte units: a request of 100 bytes then costs 112 bytes and
 * about 1/64 more for the slab's header, the tag and core bookkeeping of
 * its units, instead of 128 + 8.5. Their objects go through the same
 * magazines; free refuses every bad free of them as of blocks (the state
 * of each object is kept in the tag table); a sized free of one accepts
 * exactly the sizes of its class, (class - 16, class]. Slab objects are
 * 16-byte aligned (requests aligned to more take block classes). The
 * statistics count a slab as one internal block, and the bytes of its
 * objects that are neither live nor cached as internal bytes. Needs the
 * 32-byte minimum block and KBUDDY_MALLOC_CACHE_SHIFT <= 12. Default 0
 * (the kernel configuration: its benchmark measures the block classes);
 * the hosted library uses 1. */
#ifndef KBUDDY_MALLOC_SLABS
#define KBUDDY_MALLOC_SLABS 0
#endif

/* Bytes of blocks one magazine holds, roughly: a magazine of a class holds
 * KBUDDY_MALLOC_MAG_BYTES / class size blocks, but at least 8 and at most
 * 64. A CPU holds at most two magazines per class, and the depot
 * KBUDDY_MALLOC_DEPOT_MAGS full ones per class. With the defaults that is
 * at most 1.27 MiB per CPU and 5.1 MiB in the depot; with 8192, 0.59 and
 * 2.4 MiB. The hosted library uses 65536 (1.93 MiB per thread, 7.7 MiB in
 * the depot, at most). Larger magazines mean fewer trips to the lock, and
 * fewer to the core heap when blocks are freed in bursts; a kernel with a
 * heap of a few MiB should choose smaller ones. */
#ifndef KBUDDY_MALLOC_MAG_BYTES
#define KBUDDY_MALLOC_MAG_BYTES 32768
#endif

/* Magazines may grow with the heap: a new magazine holds
 * KBUDDY_MALLOC_MAG_BYTES once the core heap's allocated bytes reach
 * KBUDDY_MALLOC_MAG_SHARE times that, a KBUDDY_MALLOC_MAG_SHARE-th of them
 * before, but at least KBUDDY_MALLOC_MAG_MIN_BYTES (and 8 to 64 blocks as
 * above). A program of a few MiB then keeps a few hundred KiB per CPU in
 * its caches, not MiB, at the price of more trips to the lock while it is
 * small. By default MIN = MAG_BYTES: fixed magazines, as a kernel whose
 * heap is its whole memory wants (the hosted library uses 8192). */
#ifndef KBUDDY_MALLOC_MAG_MIN_BYTES
#define KBUDDY_MALLOC_MAG_MIN_BYTES KBUDDY_MALLOC_MAG_BYTES
#endif
#ifndef KBUDDY_MALLOC_MAG_SHARE
#define KBUDDY_MALLOC_MAG_SHARE 1024
#endif

/* The fewest blocks a magazine holds, however large its class (1 to 64;
 * the "at least 8" above). With magazines sized by bytes for a small heap
 * the floor decides what the classes of a KiB and more cache: a thread
 * that uses every class up to 4 KiB held about 700 KiB in two magazines of
 * 8 blocks per class (suite glibc-thread: 2.9 MiB cached beside 2.4 MiB
 * live, four threads). The hosted library uses 2: a trip to the lock per
 * two blocks of a KiB and more is small beside writing them. */
#ifndef KBUDDY_MALLOC_MAG_MIN_BLOCKS
#define KBUDDY_MALLOC_MAG_MIN_BLOCKS 8
#endif

/* A fill of a magazine from the core heap takes its blocks in runs of at
 * most KBUDDY_MALLOC_RUN_BYTES (one block when a block is larger; 1: every
 * block alone), each run one core operation. A whole magazine in one run
 * needs a free block of its size (64 blocks of 4 KiB: 256 KiB), which a
 * heap whose free memory lies in small pieces between live blocks has only
 * in memory never touched, so fills spread a program over fresh pages
 * while the pieces stay free; a block alone is the lowest free piece that
 * fits. By default no bound (SIZE_MAX): one run per fill, the fewest
 * instructions. The hosted library uses 1 (suite, peak RSS as a ratio to
 * glibc's: larson 1.1 -> 0.6, glibc-thread 2.5 -> 1.7, barnes 1.7 -> 1.35;
 * a tree of 50,000 nodes of 100 bytes rebuilt 30 times, 1% kept each time:
 * 56 -> 10.6 MiB, glibc 10.4; at the price of a core operation per block:
 * 1.8x the instructions in barnes, whose every node is a fill). Runs of a
 * page (4096) kept most of the instructions and only half the saving. */
#ifndef KBUDDY_MALLOC_RUN_BYTES
#define KBUDDY_MALLOC_RUN_BYTES SIZE_MAX
#endif

/* The large-block trim (kbm_release.h): with the release hook installed, a
 * free of a core block of 1 MiB and more releases the heap's free spans
 * beyond max(KBUDDY_MALLOC_TRIM_SLACK, allocated bytes) of them (the
 * lowest kept), as glibc trims its heap's top beyond M_TRIM_THRESHOLD. Off
 * by default (SIZE_MAX), the hosted library too: 64 MiB took the suite's
 * malloc-large from 1.68x glibc's peak RSS to 1.21x, but from 0.36x its
 * time to 2.0x (pages touched again). For programs that free large blocks
 * and then sit idle. */
#ifndef KBUDDY_MALLOC_TRIM_SLACK
#define KBUDDY_MALLOC_TRIM_SLACK SIZE_MAX
#endif

/* Full magazines the depot keeps per class (and empty ones); more go back
 * to the core heap. The depot is what carries blocks from CPUs that free
 * them to CPUs that allocate them. It is also given back to the core heap
 * whenever the heap runs out of memory. */
#ifndef KBUDDY_MALLOC_DEPOT_MAGS
#define KBUDDY_MALLOC_DEPOT_MAGS 8
#endif

/* And the depot's blocks, over all classes, may be bounded: to
 * KBUDDY_MALLOC_DEPOT_MIN_BYTES or a KBUDDY_MALLOC_DEPOT_SHARE-th of the
 * core heap's allocated bytes, whichever is more (a full magazine that
 * would pass that goes back to the core heap), so that the depot grows
 * with the program, not with the number of classes it frees in. By
 * default no bound (SIZE_MAX): a kernel's depot is bounded by the count
 * above, and the check costs its benchmark 0.3 instructions per operation
 * (W3, W4); the hosted library uses 262144. */
#ifndef KBUDDY_MALLOC_DEPOT_MIN_BYTES
#define KBUDDY_MALLOC_DEPOT_MIN_BYTES SIZE_MAX
#endif
#ifndef KBUDDY_MALLOC_DEPOT_SHARE
#define KBUDDY_MALLOC_DEPOT_SHARE 8
#endif

/* Requests above this many bytes get a mapping of their own when the map
 * and unmap hooks are installed (kbuddy_malloc_hooks.map_threshold
 * overrides it at run time). 1 MiB: below it the heap's blocks are
 * cheaper than a system call each (and cached up to
 * KBUDDY_MALLOC_CACHE_MAX whatever the threshold); above it a block of
 * its own costs no memory until touched, none of the heap's 2.25x room
 * for a buddy block, and goes back to the system at free. Unless the hook
 * sets one, the threshold then moves as glibc's does: the free of a
 * mapped block of up to KBUDDY_MALLOC_MAP_THRESHOLD_MAX bytes raises it
 * to that block's size, so that blocks of that size, allocated and freed
 * again and again, come from the heap, which reuses their pages, rather
 * than costing a fresh mapping and a page fault per page each time. */
#ifndef KBUDDY_MALLOC_MAP_THRESHOLD
#define KBUDDY_MALLOC_MAP_THRESHOLD ((size_t)1 << 20)
#endif
/* Freed mappings of up to KBUDDY_MALLOC_MAP_THRESHOLD_MAX bytes kept for
 * the next large requests, at most this many (kbm_large.h): with the remap
 * hook installed and the default map threshold, a request takes the
 * smallest kept mapping that holds it or grows one with the remap hook,
 * and its pages stay; the cache holds at most
 * max(KBUDDY_MALLOC_MAP_THRESHOLD_MAX, live mapped bytes / 4), and frees
 * no longer raise the map threshold (nor give such a block back at once).
 * kbuddy_malloc_trim unmaps them (with no lock held) and counts them in
 * its result; the core heap's out-of-memory handler unmaps them before it
 * asks grow for a region, and then the unmap hook runs with the lock held,
 * as grow does. kbuddy_malloc_check checks them. Default 0: no cache (a
 * kernel's large blocks go straight back); the hosted library uses 8. */
#ifndef KBUDDY_MALLOC_MAP_CACHE
#define KBUDDY_MALLOC_MAP_CACHE 0
#endif
#ifndef KBUDDY_MALLOC_MAP_THRESHOLD_MAX
#define KBUDDY_MALLOC_MAP_THRESHOLD_MAX ((size_t)32 << 20)
#endif

/* ------------------------------------------------------------------------ */
/* Hooks                                                                    */
/* ------------------------------------------------------------------------ */
/* Compile-time hooks, for kernels that want the fast paths to inline them
 * (o1heap's style): compile malloc/kbuddy_malloc.c with
 * -DKBUDDY_MALLOC_HOOKS_H='"my_hooks.h"', a header that defines
 *   KBUDDY_MALLOC_CPU_ID()         this CPU's number, an unsigned expression
 *                                  (evaluated with interrupts masked);
 *   KBUDDY_MALLOC_IRQ_SAVE()       mask interrupts, giving the previous state
 *                                  as an unsigned long (optional);
 *   KBUDDY_MALLOC_IRQ_RESTORE(s)   restore that state (optional);
 * as, say, a read of the thread pointer and csrrc/csrs of sstatus.SIE on
 * RISC-V. They then replace the cpu_id, irq_save and irq_restore members of
 * kbuddy_malloc_hooks, which are ignored; every other hook is as below.
 * With function-pointer hooks each malloc and free makes three indirect
 * calls and saves registers for them, one with cpu_id_unmasked set
 * (bench/callgrind.sh shows what each way costs). */
#ifdef KBUDDY_MALLOC_HOOKS_H
/* cppcheck-suppress preprocessorErrorDirective ; a header the build names */
#include KBUDDY_MALLOC_HOOKS_H
#endif

/* What the environment supplies. Every member may be NULL (zero): the
 * default is described with each. */
typedef struct kbuddy_malloc_hooks {
    /* The number of the calling CPU, below KBUDDY_MALLOC_MAX_CPUS. Called
     * with interrupts masked (after irq_save). NULL: always CPU 0, i.e. one
     * CPU. Not used in TLS builds, nor with KBUDDY_MALLOC_CPU_ID. (With
     * cpu_id_unmasked set, the cached paths call it unmasked.) */
    unsigned (*cpu_id)(void);

    /* Mask interrupts on the calling CPU and return the previous state;
     * restore a state irq_save returned. Every kbm_ and kbuddy_malloc_ call
     * runs between the two, so that an interrupt handler that allocates
     * cannot find the CPU's cache half-updated or the lock taken by the code
     * it interrupted. NULL: nothing is masked (no handler allocates). Not
     * used in TLS builds, nor with KBUDDY_MALLOC_CPU_ID. (cpu_id_unmasked
     * lets the cached malloc and free paths run unmasked.) */
    unsigned long (*irq_save)(void);
    void (*irq_restore)(unsigned long state);

    /* The lock over the core heap and the depot (copied). Held for O(1)
     * trades and for filling or emptying one magazine; never while a hook
     * other than grow runs. acquire == NULL: a built-in kbuddy_spinlock. */
    kbuddy_lock lock;

    /* Out of memory: find at least min_size more bytes (any alignment) and
     * store where they are in *start and *size; return false if there are
     * none. The layer hands them to the heap itself (as
     * kbuddy_malloc_add_region would). Runs with the lock held and
     * interrupts masked: it must not call into this allocator. min_size
     * leaves room for bookkeeping and alignment, so that the request that
     * ran out fits in a region of that size. NULL: the heap never grows
     * beyond the regions added. */
    bool (*grow)(size_t min_size, void **start, size_t *size, void *ctx);
    void *grow_ctx;
    /* true: memory from grow is already zero-filled (fresh mmap pages), so
     * the layer need not clear its tag table. */
    bool grow_zeroed;

    /* A refused free (or realloc, free_sized, ...) of ptr, for the reason
     * `status` (KBUDDY_EFOREIGN, KBUDDY_EBADPTR, KBUDDY_EDOUBLEFREE,
     * KBUDDY_ESIZE or KBUDDY_ECORRUPT); `func` names the call ("free",
     * "realloc", "free_sized", ...). Called after the refusal, with no lock
     * held and interrupts restored; nothing was changed, and the call
     * returns normally after the hook does (a hook may also stop the
     * system). NULL: refusals are only counted (kbuddy_malloc_stats). */
    void (*bad_free)(void *ptr, kbuddy_status status, const char *func);

    /* TLS builds: called once in each thread, the first time it gets its
     * cache, with no lock held. A hosted environment arranges here for
     * kbuddy_malloc_thread_exit to run when the thread ends. May allocate.
     * NULL: nothing is arranged (the cache of an ended thread is then lost
     * to the heap, with its blocks). */
    void (*thread_cache_created)(void);

    /* Large blocks. A request above map_threshold bytes (0: the default,
     * KBUDDY_MALLOC_MAP_THRESHOLD, raised by frees up to
     * KBUDDY_MALLOC_MAP_THRESHOLD_MAX; requests up to KBUDDY_MALLOC_CACHE_MAX
     * are cached whatever it says) gets a mapping of its own, the block
     * being its first byte: map returns `size` bytes (the request rounded
     * up to a multiple of 4096) aligned to `align` (a power of two, at
     * least 4096), or NULL, and then the core heap serves the request;
     * unmap gives such a mapping back whole, at free. remap (optional)
     * resizes a mapping, moving it if it must, and returns its new address
     * or NULL (the old one then stays as it was); without it a large
     * realloc that grows maps, copies and unmaps, one that shrinks keeps
     * the block. map_zeroed: fresh mappings read as zero (calloc then
     * writes nothing). They run with no lock held and interrupts
     * restored; except that with KBUDDY_MALLOC_MAP_CACHE, unmap may also
     * run from the out-of-memory handler, under the lock as grow does (it
     * must then not call the allocator). The layer writes nothing into a
     * mapping: it keeps each in a registry. map == NULL or unmap == NULL:
     * every block comes from the core heap. */
    void *(*map)(size_t size, size_t align, void *ctx);
    void (*unmap)(void *start, size_t size, void *ctx);
    void *(*remap)(void *start, size_t old_size, size_t new_size, void *ctx);
    void *map_ctx;
    size_t map_threshold;
    bool map_zeroed;

    /* Giving memory back. release: the contents of [start, start + size)
     * (whole pages of release_page bytes, 0: 4096) are no longer needed:
     * free memory of the core heap, or pages of the layer's tag tables
     * that hold nothing but zeros. The range stays part of the heap and may
     * be handed out again at any time; touched again, it must read as
     * zeros (hosted: madvise(MADV_DONTNEED) on anonymous memory; a kernel
     * with a demand-paged heap unmaps the pages, gives their frames back,
     * and maps zeroed frames on the next fault). ungrow: memory that grow
     * returned goes back for good (hosted: munmap; a kernel: to the frame
     * allocator), with grow_ctx: a whole range the layer could not use
     * (too small, KBUDDY_MALLOC_MAX_REGIONS reached), or the part after the
     * tag table of a grown region that became wholly free (from the first
     * release_page boundary after the table to the range's end; the table's
     * own pages stay mapped, released: racing bad frees may still read
     * them). Both run with the lock held and interrupts masked (as grow
     * does: no allocation can take released pages meanwhile), and must not
     * call into this allocator. They run from kbuddy_malloc_trim; release
     * also runs by itself, from the paths that give memory back to the core
     * heap in bulk (large frees, magazines beyond the depot's bound, thread
     * exit; never the cached fast paths), for free spans of 1 MiB and more
     * that stayed free, once the free memory has grown by 32 MiB and an
     * eighth of the heap (more for programs that recycle their memory:
     * malloc/kbm_release.h, KBUDDY_MALLOC_RELEASE_SPAN and _STEP). NULL:
     * nothing is given back (release) or dropped (ungrow: grow's memory is
     * then used or kept, never given up). */
    void (*release)(void *start, size_t size, void *ctx);
    void *release_ctx;
    size_t release_page;
    void (*ungrow)(void *start, size_t size, void *ctx);

    /* true: cpu_id may be called with interrupts on and preemption allowed
     * (a number stale by the time it is used is fine), and the kernel does
     * not need every call to run with interrupts masked. The cached malloc
     * and free paths then do not mask: they call cpu_id and claim that
     * CPU's cache with one atomic swap (acquire), giving it back with a
     * store (release). A call that finds it claimed (an interrupt handler
     * on that CPU, or a thread preempted and moved to another CPU, e.g. in
     * a kernel that switches threads on timer interrupts in kernel mode)
     * masks interrupts and works through the lock without it, as a CPU
     * without a cache does; so does every path that takes the lock. Each
     * cached malloc and free then makes one indirect call instead of three
     * (bench/callgrind.sh, kbm-hooks-unmasked: about +15 to +17
     * instructions per operation over no hooks, instead of +24 to +26).
     * false (zero):
     * cpu_id and every call run between irq_save and irq_restore, as those
     * members say. Not used in TLS builds, nor with KBUDDY_MALLOC_CPU_ID. */
    bool cpu_id_unmasked;
} kbuddy_malloc_hooks;

/* Install the hooks (copied; NULL restores the defaults). Call once, before
 * any other CPU or thread uses the allocator (at boot, before the other CPUs
 * start); regions may have been added before. O(1). Not thread-safe. */
void kbuddy_malloc_set_hooks(const kbuddy_malloc_hooks *hooks);

/* ------------------------------------------------------------------------ */
/* Memory                                                                   */
/* ------------------------------------------------------------------------ */

/* Hand [start, start + size) over to the global heap ("transfer(region)"):
 * any alignment, any size, any number of regions, at any time. The first
 * 1/32 of the range holds the layer's tag table, the next few percent the
 * core heap's bookkeeping (kbuddy_add_region). The caller must not touch
 * the memory afterwards. Returns KBUDDY_OK, or
 *   KBUDDY_EINVAL    start is NULL, size is 0, or the range wraps;
 *   KBUDDY_ENOMEM    the range is too small to hold the bookkeeping and a
 *                    block, or KBUDDY_MALLOC_MAX_REGIONS regions exist;
 *   KBUDDY_EOVERLAP  the range overlaps a region added before.
 * On error nothing changes. O(R + size / 32) (the tag table is cleared).
 * Thread-safe. Must not be called from the grow hook (which returns its
 * memory instead). */
kbuddy_status kbuddy_malloc_add_region(void *start, size_t size);

/* The core heap under the allocator, read-only: for kbuddy_get_stats,
 * kbuddy_check and kbuddy_walk while no other CPU can allocate (at boot, in
 * a debugger, in tests); kbuddy_malloc_get_stats and kbuddy_malloc_check
 * take the lock themselves. Blocks must not be allocated or freed on it
 * directly, nor regions added (use kbuddy_malloc_add_region, which also
 * builds the tag table): the core heap has no lock of its own, the layer's
 * lock guards it. O(1). */
const kbuddy_heap *kbuddy_global_heap(void);

/* ------------------------------------------------------------------------ */
/* The malloc family                                                        */
/* ------------------------------------------------------------------------ */

/* Every pointer returned is aligned to KBUDDY_MIN_BLOCK (32), which is at
 * least alignof(max_align_t) on common targets. "Sets errno" applies to
 * builds with KBUDDY_MALLOC_ERRNO; other builds leave errno alone. The
 * complexity of each call is given at the top of this file: O(1) through a
 * cache, else under the lock. All are thread-safe. */

/* size bytes. size 0 gives a unique minimum block. When the core heap has
 * no room, the depot's blocks go back to it, then the grow hook is asked,
 * and if there is still none, the calling CPU's own cached blocks go back
 * and the request is tried once more; NULL with errno ENOMEM when no
 * memory can be found even so. */
void *kbm_malloc(size_t size) KBUDDY_MALLOC_ATTR KBUDDY_ALLOC_SIZE(1);

/* Free a block from any function of this family; NULL is ignored. A pointer
 * that is not a live block of this allocator (foreign, interior, already
 * freed, even if it sits in a cache) is refused: nothing changes, the
 * bad_free hook is called. */
void kbm_free(void *ptr);

/* n * size bytes, zero-filled. NULL with ENOMEM when the product overflows
 * or no memory can be found. */
void *kbm_calloc(size_t n, size_t size) KBUDDY_MALLOC_ATTR;

/* Resize, glibc's way:
 *   ptr == NULL         kbm_malloc(size);
 *   size == 0           frees ptr and returns NULL (errno unchanged);
 *   the block is large enough and not more than twice too large (small
 *   blocks), or the core heap can resize it in place (large blocks)
 *                       the same pointer;
 *   a mapped block      the same pointer when the size needs no more
 *                       pages than the mapping has and no fewer than the
 *                       size asked before did (the slack of a reused kept
 *                       mapping, or of a shrink that failed, is kept), or
 *                       shrinks and cannot be remapped; else
 *                       the remap hook's result (mremap: no copy), or a
 *                       block from the heap at or below the threshold;
 *   otherwise           a new block, the contents copied, ptr freed.
 * NULL with ENOMEM on failure, ptr left untouched. A ptr that is not a live
 * block is refused as kbm_free refuses it (bad_free hook, func "realloc"):
 * NULL with EINVAL, nothing changed. */
void *kbm_realloc(void *ptr, size_t size) KBUDDY_ALLOC_SIZE(2);

/* kbm_realloc(ptr, n * size), but NULL with ENOMEM (ptr untouched) when the
 * product overflows. */
void *kbm_reallocarray(void *ptr, size_t n, size_t size);

/* size bytes aligned to align (C11/C23): align must be a power of two,
 * else NULL with EINVAL; size need not be a multiple of it. NULL with ENOMEM
 * when no memory can be found (also for alignments no region can hold). */
void *kbm_aligned_alloc(size_t align, size_t size) KBUDDY_MALLOC_ATTR KBUDDY_ALLOC_SIZE(2)
    KBUDDY_ALLOC_ALIGN(1);

/* POSIX: store size bytes aligned to align in *out and return 0; align must
 * be a power of two and a multiple of sizeof(void *), else EINVAL is
 * returned; ENOMEM when no memory can be found. *out is unchanged on error,
 * and errno is never changed. */
int kbm_posix_memalign(void **out, size_t align, size_t size);

/* glibc's memalign: an align that is not a power of two is rounded up to
 * one; NULL with EINVAL when that overflows, ENOMEM when out of memory. */
void *kbm_memalign(size_t align, size_t size) KBUDDY_MALLOC_ATTR KBUDDY_ALLOC_SIZE(2);

/* Bytes usable at ptr (at least what was requested: the size class, or the
 * request rounded up to KBUDDY_MIN_BLOCK for large blocks, or the mapping's
 * size, a multiple of 4096, for mapped ones). 0 for NULL or a pointer that
 * is not a live block (not reported: nothing is freed). */
size_t kbm_malloc_usable_size(const void *ptr);

/* C23: free a block stating its size. Refused (KBUDDY_ESIZE, bad_free hook,
 * func "free_sized") when the size is not the one requested (or given to
 * the realloc that last resized it in place): exactly for large blocks
 * (the core heap or the mappings' registry keeps it) and for cached blocks of more than 64 bytes
 * (the layer keeps it modulo 4096, exact for classes of at most 4096
 * bytes but for requests of 0 and 4096 bytes); blocks of 32 and 64 bytes
 * accept any size up to theirs. Otherwise as kbm_free. */
void kbm_free_sized(void *ptr, size_t size);

/* C23: as kbm_free_sized, also stating the alignment, which must be a
 * power of two the block is aligned to (else KBUDDY_ESIZE, func
 * "free_aligned_sized"). */
void kbm_free_aligned_sized(void *ptr, size_t align, size_t size);

/* ------------------------------------------------------------------------ */
/* Caches, statistics, checks                                               */
/* ------------------------------------------------------------------------ */

/* Statistics. The core heap counts a block the program holds, a block in a
 * cache, and the layer's own structures (magazines, per-CPU caches, the
 * mappings' registry beyond its static entries) alike as allocated; the
 * fields below split them. Small blocks are counted at their class size
 * (the request itself is not kept), large ones at the request rounded up
 * to KBUDDY_MIN_BLOCK, mapped ones at their mapping's size; heap.user, the
 * core's sum of requested sizes, therefore counts small blocks at their
 * class size too. Mapped blocks are the program's (live_blocks,
 * live_bytes) but not the core heap's.
 *
 * Exactness: the lock is held, so the heap figures, the depot and the
 * mappings are exact; each cache's figures are read as its CPU last wrote
 * them. With no allocation running on another CPU they add up exactly:
 *   heap.allocations + mapped_blocks == live_blocks + cached_blocks + internal_blocks
 *   heap.allocated   + mapped_bytes  == live_bytes  + cached_bytes  + internal_bytes
 *   region_bytes     == heap.total + heap.overhead + tag_bytes
 * Not counted anywhere: memory outside the regions (e.g. a hosted
 * build's bootstrap arena). */
typedef struct kbuddy_malloc_stats {
    kbuddy_stats heap;      /* the core heap's own statistics               */
    size_t live_blocks;     /* blocks the program holds                      */
    size_t live_bytes;      /* their usable sizes                            */
    size_t cached_blocks;   /* free blocks in per-CPU caches and the depot   */
    size_t cached_bytes;
    size_t depot_blocks;    /* of which in the depot                         */
    size_t internal_blocks; /* magazines and per-CPU cache structures        */
    size_t internal_bytes;
    size_t caches;          /* per-CPU (per-thread) caches in existence      */
    size_t regions;         /* regions added (add_region and grow)           */
    size_t region_bytes;    /* their bytes                                   */
    size_t tag_bytes;       /* of which the layer's tag tables               */
    size_t bad_frees;       /* calls refused so far                          */
    /* Traffic behind the caches so far (exact: counted under the lock). */
    size_t depot_trades;    /* magazines swapped with the depot                */
    size_t core_fills;      /* blocks taken from the core heap into caches     */
    size_t core_drains;     /* cached blocks given back to the core heap       */
    size_t large_calls;     /* malloc-family calls that went to the core heap
                               directly (large or over-aligned, or no cache)  */
    /* Large blocks in mappings of their own (hooks map/unmap), now; also
     * counted in live_blocks and live_bytes. */
    size_t mapped_blocks;
    size_t mapped_bytes;    /* their mappings' sizes                          */
    /* Memory given back so far (hooks release/ungrow). regions and
     * region_bytes count only the regions still in the heap. */
    size_t released_bytes;  /* bytes reported to the release hook (the same
                               page again each time it is released)         */
    size_t regions_returned; /* grown regions given back through ungrow      */
    /* Slabs (KBUDDY_MALLOC_SLABS; 0 without). A slab is one core allocation
     * counted in internal_blocks; its objects out of it (live or cached:
     * slab_objects, counted there too) are not core allocations, and the
     * bytes of the rest of it (free objects, header, tail) are counted in
     * internal_bytes. So heap.allocations + mapped_blocks + slab_objects
     * = live_blocks + cached_blocks + internal_blocks, and heap.allocated
     * + mapped_bytes = live_bytes + cached_bytes + internal_bytes. */
    size_t slabs;           /* slabs in the heap                              */
    size_t slab_bytes;      /* their bytes                                    */
    size_t slab_objects;    /* objects out of their slabs: live or cached     */
    /* Freed mappings kept for reuse (KBUDDY_MALLOC_MAP_CACHE; 0 without):
     * their bytes, in no other figure. */
    size_t map_cached_bytes;
} kbuddy_malloc_stats;

/* Fill *out (see kbuddy_malloc_stats). O(caches x size classes): the cached
 * figures are the magazines' counts, kept by nothing else, so that the
 * fast paths count nothing. Thread-safe. */
void kbuddy_malloc_get_stats(kbuddy_malloc_stats *out);

/* Give the calling CPU's (thread's) cached blocks and every block in the
 * depot back to the core heap, with the magazines that held them; then
 * cached_blocks counts only the other CPUs' caches. Run it on every CPU to
 * empty all caches. (With cpu_id_unmasked set, a CPU's cache that a call
 * it interrupted, or a thread that moved, holds at that moment is left
 * alone, as are the other CPUs'.) O(cached blocks) under the lock.
 * Thread-safe. */
void kbuddy_malloc_flush_caches(void);

/* Give back what can be given, now: the calling CPU's (thread's) cache and
 * the depot go back to the core heap (as kbuddy_malloc_flush_caches);
 * then, with the ungrow hook, every grown region that is wholly free leaves
 * the heap and goes back, as long as at least `keep` free bytes stay in
 * the heap; then, with the release hook, every whole free page of the
 * remaining regions (and of the tag tables, where they describe only free
 * memory) goes to the release hook; and the freed mappings kept for reuse
 * (KBUDDY_MALLOC_MAP_CACHE) go to the unmap hook once the lock is let go.
 * Returns the bytes handed to the hooks (0 without them: a kernel without
 * hooks gives nothing back). The
 * pages of the core heap's bookkeeping that hold only zeros (most of it,
 * where memory is free) go to release too (kbuddy_heap_trim_bookkeeping).
 * O(cached blocks + R * L^2 + spans * L + heap size / 256) under the lock:
 * every byte of bookkeeping is read. Thread-safe. */
size_t kbuddy_malloc_trim(size_t keep);

/* TLS builds: flush the calling thread's cache and free it; the thread's
 * later calls (e.g. from other thread-exit destructors) work through the
 * lock without a cache. Per-CPU builds: as kbuddy_malloc_flush_caches for
 * this CPU alone, without the depot. O(cached blocks). Thread-safe. */
void kbuddy_malloc_thread_exit(void);

/* Verify the core heap (kbuddy_check) and the layer: every tag belongs to
 * the start of a core allocation of its class's size, every block in the
 * depot is tagged as cached in its class, the counters agree with the
 * tags, and the mappings' registry is sorted, its mappings disjoint, whole
 * pages, outside every region and summing to mapped_bytes. KBUDDY_OK or
 * KBUDDY_ECORRUPT. Exact only while no other CPU allocates (tests, debug
 * builds); O(heap size / KBUDDY_MIN_BLOCK + M x R) under the lock. */
kbuddy_status kbuddy_malloc_check(void);

/* After a kbuddy_malloc_check that did not return KBUDDY_OK: what it found
 * wrong first, a constant string naming the invariant ("core heap
 * (kbuddy_check)", "kept size beyond the class", "depot: ...", "cache:
 * ...", ...), and in *where (if where is not NULL) the block, magazine,
 * cache or slab concerned, or NULL; NULL (and *where NULL) after one that
 * returned KBUDDY_OK or before any. For tests and debugging: a failed check
 * in a test says which invariant broke. O(1) under the lock. */
const char *kbuddy_malloc_check_why(const void **where);

/* ------------------------------------------------------------------------ */
/* fork                                                                     */
/* ------------------------------------------------------------------------ */

/* Handlers for fork (hosted: pthread_atfork; kbuddy_hosted_init registers
 * them). prepare takes the lock (and masks interrupts) so that nothing done
 * under it is half done in the copy; parent releases it in the parent;
 * child runs in the child, whose only thread (CPU) is the caller, and
 * makes the copy whole again before releasing the lock: every other
 * thread's (CPU's) cache is freed, and its magazines, the blocks in them
 * and every block it was moving between the program and its cache at the
 * instant of fork (a malloc or free caught half done) go back to the core
 * heap; a block it had made the program's stays the program's. Afterwards
 * kbuddy_malloc_check is OK and the statistics add up; the caller keeps
 * its cache. One loss: a magazine a thread was swapping at that instant
 * (at most one per thread) stays allocated, counted in internal_blocks.
 * Per-CPU builds: the other CPUs' caches go the same way; call child only
 * while the other CPUs are stopped and will never resume a call they were
 * in (a crash kernel, say); a CPU that calls in later makes a new cache.
 * prepare and parent: O(1) plus the lock's wait. child: O(caches x size
 * classes + depot blocks), plus, when other caches existed, a scan of the
 * tag tables (region bytes / 256 8-byte loads). Call them in exactly this
 * pattern: prepare, fork, then parent in the parent and child in the
 * child, nothing of this allocator in between. */
void kbuddy_malloc_fork_prepare(void);
void kbuddy_malloc_fork_parent(void);
void kbuddy_malloc_fork_child(void);

/* ------------------------------------------------------------------------ */
/* The standard names, for kernels (KBUDDY_MALLOC_STD_NAMES)                */
/* ------------------------------------------------------------------------ */

#if defined(KBUDDY_MALLOC_STD_NAMES) && KBUDDY_MALLOC_STD_NAMES
void *malloc(size_t size);
void free(void *ptr);
void *calloc(size_t n, size_t size);
void *realloc(void *ptr, size_t size);
void *reallocarray(void *ptr, size_t n, size_t size);
void *aligned_alloc(size_t align, size_t size);
int posix_memalign(void **out, size_t align, size_t size);
void *memalign(size_t align, size_t size);
size_t malloc_usable_size(void *ptr);
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t align, size_t size);
#endif

#ifdef __cplusplus
}
#endif

#endif /* KBUDDY_MALLOC_H */
