/*
 * Size classes of the global allocator. Part of kbuddy_malloc.c (included
 * once, by it: the fast paths must inline across the parts).
 *
 * A small request of n units (32-byte minimum blocks) is rounded up to a
 * class: one class per unit up to 16 units (512 bytes), then STEPS =
 * KBUDDY_MALLOC_CLASS_STEPS classes per doubling (8 by default: 576, 640,
 * ... 1024, 1152, ...; 4 when the cache limit is raised so far that 8
 * would not fit the tag's 6-bit class field). Every class is a whole multiple of its own
 * largest power-of-two divisor, and the core heap hands its blocks out
 * aligned to that divisor (natural alignment): a class of 5 << s units is
 * aligned to 1 << s units. So a request aligned to A units is served by the
 * class of roundup(n, A) units, which is a multiple of A (every multiple of
 * 2^s in (2^(s + 4 - log2 STEPS) * STEPS, twice that] is a class), and any
 * request up to the cache limit with any alignment up to it comes from the
 * caches.
 *
 * With KBUDDY_MALLOC_SLABS (the Linux build), the odd multiples of 16 bytes
 * from 48 to 496 are classes too, NSLAB of them, numbered after the NBLOCK
 * block classes: their objects are carved from slabs (kbm_slab.h), so that
 * a request of 100 bytes costs 112 and not 128. A request is then rounded
 * to 16 bytes first; an even number of 16-byte granules is a block class
 * as before. Slab objects are 16-byte aligned: a request aligned to more
 * goes to a block class. The cached figures are then counted in 16-byte
 * accounting units (ACCT_SHIFT), as class_units says.
 */

#define MAXU_LOG2 (KBUDDY_MALLOC_CACHE_SHIFT - KBUDDY_MIN_BLOCK_SHIFT)
#if MAXU_LOG2 < 4 || MAXU_LOG2 > 15
#error "KBUDDY_MALLOC_CACHE_SHIFT must be 4..15 more than KBUDDY_MIN_BLOCK_SHIFT"
#endif
#define MAXU ((size_t)1 << MAXU_LOG2)
#if KBUDDY_MALLOC_CLASS_STEPS == 8
#define STEPS_LOG2 3u
#elif KBUDDY_MALLOC_CLASS_STEPS == 4
#define STEPS_LOG2 2u
#else
#error "KBUDDY_MALLOC_CLASS_STEPS must be 4 or 8"
#endif
#define STEPS (1u << STEPS_LOG2)
#define NBLOCK (16u + STEPS * (MAXU_LOG2 - 4u)) /* classes of whole blocks */
#if defined(KBUDDY_MALLOC_SLABS) && KBUDDY_MALLOC_SLABS
#if UNIT_SHIFT != 5 || MAXU_LOG2 > 7
#error "KBUDDY_MALLOC_SLABS needs 32-byte minimum blocks and KBUDDY_MALLOC_CACHE_SHIFT <= 12"
#endif
#define SLABS 1
#define NSLAB 15u         /* 48, 80, ..., 496 bytes */
#define ACCT_SHIFT 4u     /* the cached figures count 16-byte units */
#else
#define SLABS 0
#define NSLAB 0u
#define ACCT_SHIFT UNIT_SHIFT
#endif
#define NCLASSES (NBLOCK + NSLAB)
#define CACHE_MAX KBUDDY_MALLOC_CACHE_MAX
#if KBUDDY_MALLOC_MAG_MIN_BLOCKS < 1 || KBUDDY_MALLOC_MAG_MIN_BLOCKS > 64
#error "KBUDDY_MALLOC_MAG_MIN_BLOCKS must be 1..64"
#endif
#define MAG_MIN ((uint32_t)KBUDDY_MALLOC_MAG_MIN_BLOCKS)
#define MAG_MAX 64u

/* Units of class c: c + 1 below 16, then (STEPS + 1 + i) << (d + 4 -
 * STEPS_LOG2) for c = 16 + d * STEPS + i. */
#define CJ(c) ((c) < 16u ? 0u : (c)-16u) /* 0 below 16: no arm shifts too far */
#define CUB(c) ((c) < 16u ? (c) + 1u : (STEPS + 1u + CJ(c) % STEPS) << (CJ(c) / STEPS + 4u - STEPS_LOG2))
#define CU(c) ((c) < NBLOCK ? CUB(c) << (UNIT_SHIFT - ACCT_SHIFT) : 3u + 2u * ((c)-NBLOCK))
#define CU4(c) CU(c), CU((c) + 1u), CU((c) + 2u), CU((c) + 3u)
#define CU16(c) CU4(c), CU4((c) + 4u), CU4((c) + 8u), CU4((c) + 12u)
static const uint32_t k_class_units[64] = { /* 64: more than there can be */
    CU16(0u), CU16(16u), CU16(32u), CU16(48u)};
#undef CU16
#undef CU4
#undef CU
#undef CUB
#undef CJ

/* The size of class c in accounting units (1 << ACCT_SHIFT bytes: the
 * minimum block, or 16 bytes with slabs), and in bytes. */
static inline size_t class_units(unsigned c) { return k_class_units[c]; }

static inline size_t class_bytes(unsigned c) { return class_units(c) << ACCT_SHIFT; }

/* Whether class c is carved from slabs (false for every class without). */
#if SLABS
static inline bool is_slab_class(unsigned c) { return c - NBLOCK < NSLAB; }
#else
static inline bool is_slab_class(unsigned c) {
    (void)c;
    return false;
}
#endif

/* The alignment the core gives the blocks of class c. */
static inline size_t class_align(unsigned c) {
    size_t b = class_bytes(c);
    return b & (~b + 1u);
}

/* floor(log2 m) for 16 <= m < 2^15, without a libgcc call on any target. */
static inline unsigned log2_small(size_t m) {
#if defined(__x86_64__) || defined(__aarch64__) || defined(__riscv_zbb)
    return 63u - (unsigned)__builtin_clzll((unsigned long long)m);
#else
    unsigned k = 4;
    while (m >> (k + 1))
        k++;
    return k;
#endif
}

/* The class of n units, 1 <= n <= MAXU, computed. */
static inline unsigned class_of_units_calc(size_t n) {
    if (n <= 16)
        return (unsigned)n - 1u;
    size_t m = n - 1;
    unsigned k = log2_small(m);
    return 16u + (k - 4u) * STEPS + (unsigned)(m >> (k - STEPS_LOG2)) - STEPS;
}

#if MAXU_LOG2 <= 8
/* The same as a table of bytes, indexed by units (0 counts as 1): one load
 * on the fast path. Built by the compiler from the same formula. */
#define FL2(m) ((m) >= 128u ? 7u : (m) >= 64u ? 6u : (m) >= 32u ? 5u : 4u)
#define CO(n)                                                                                      \
    (unsigned char)((n) <= 16u ? ((n) ? (n)-1u : 0u)                                               \
                               : 16u + (FL2((n)-1u) - 4u) * STEPS +                                \
                                     (((n)-1u) >> (FL2((n)-1u) - STEPS_LOG2)) - STEPS)
#define CO4(n) CO(n), CO((n) + 1u), CO((n) + 2u), CO((n) + 3u)
#define CO16(n) CO4(n), CO4((n) + 4u), CO4((n) + 8u), CO4((n) + 12u)
#define CO64(n) CO16(n), CO16((n) + 16u), CO16((n) + 32u), CO16((n) + 48u)
static const unsigned char k_unit_class[257] = {CO64(0u), CO64(64u), CO64(128u), CO64(192u),
                                                CO(256u)};
#undef CO64
#undef CO16
#undef CO4
#undef CO
#undef FL2
static inline unsigned class_of_units(size_t n) { return k_unit_class[n]; }
#else
static inline unsigned class_of_units(size_t n) { return class_of_units_calc(n ? n : 1); }
#endif

#if SLABS
/* The class of g 16-byte granules (0 counts as 1): an odd number from 3 to
 * 31 is a slab class, any other the block class of its units. One load,
 * as without slabs. */
#define GC(g)                                                                                      \
    (unsigned char)(((g) & 1u) && (g) >= 3u && (g) <= 31u ? NBLOCK + ((g)-3u) / 2u                \
                                                          : k_unit_class_of((g) + 1u))
#define k_unit_class_of(g2) CO((g2) / 2u)
#define FL2(m) ((m) >= 128u ? 7u : (m) >= 64u ? 6u : (m) >= 32u ? 5u : 4u)
#define CO(n)                                                                                      \
    ((n) <= 16u ? ((n) ? (n)-1u : 0u)                                                              \
                : 16u + (FL2((n)-1u) - 4u) * STEPS + (((n)-1u) >> (FL2((n)-1u) - STEPS_LOG2)) - STEPS)
#define GC4(g) GC(g), GC((g) + 1u), GC((g) + 2u), GC((g) + 3u)
#define GC16(g) GC4(g), GC4((g) + 4u), GC4((g) + 8u), GC4((g) + 12u)
#define GC64(g) GC16(g), GC16((g) + 16u), GC16((g) + 32u), GC16((g) + 48u)
static const unsigned char k_gran_class[257] = {GC64(0u), GC64(64u), GC64(128u), GC64(192u),
                                                GC(256u)};
#undef GC64
#undef GC16
#undef GC4
#undef CO
#undef FL2
#undef k_unit_class_of
#undef GC

/* The class of a request of size bytes (size <= CACHE_MAX). */
static inline unsigned class_of_size(size_t size) { return k_gran_class[(size + 15u) >> 4]; }

/* The class of size bytes aligned to align (a power of two; both at most
 * CACHE_MAX): the class of the request rounded up to the alignment (to a
 * block class when that is 32 or more). */
static inline unsigned class_of_aligned(size_t size, size_t align) {
    size_t a = align > 16u ? align : 16u;
    return class_of_size(((size ? size : 1) + a - 1) & ~(a - 1));
}
#else
/* The class of a request of size bytes (size <= CACHE_MAX). */
static inline unsigned class_of_size(size_t size) {
    return class_of_units((size + UNIT - 1) >> UNIT_SHIFT);
}

/* The class of size bytes aligned to align (a power of two; both at most
 * CACHE_MAX): the class of the request rounded up to the alignment. */
static inline unsigned class_of_aligned(size_t size, size_t align) {
    size_t a = align > UNIT ? align : UNIT;
    return class_of_units((((size ? size : 1) + a - 1) & ~(a - 1)) >> UNIT_SHIFT);
}
#endif

/* Blocks a magazine of class c holds when magazines hold about `bytes`. */
static inline uint32_t mag_cap_for(unsigned c, size_t bytes) {
    size_t n = bytes / class_bytes(c);
    return n < MAG_MIN ? MAG_MIN : n > MAG_MAX ? MAG_MAX : (uint32_t)n;
}

/* The most blocks a magazine of class c holds (a heap of full size). */
static inline uint32_t mag_cap(unsigned c) { return mag_cap_for(c, KBUDDY_MALLOC_MAG_BYTES); }

/* The fewest: a magazine made while the heap is small. */
static inline uint32_t mag_cap_min(unsigned c) {
    return mag_cap_for(c, KBUDDY_MALLOC_MAG_MIN_BYTES < KBUDDY_MALLOC_MAG_BYTES
                              ? KBUDDY_MALLOC_MAG_MIN_BYTES
                              : KBUDDY_MALLOC_MAG_BYTES);
}
