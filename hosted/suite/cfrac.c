/*
 * cfrac-like: many small, short-lived allocations of bignum-style numbers
 * (arrays of 32-bit limbs, each result a fresh block, the operands freed
 * at once), as a factoring program's arithmetic makes them. Every result
 * is checked against the same arithmetic done modulo the prime 2^31 - 1 in
 * plain integers, so a corrupted limb fails the run.
 */
#include "suite.h"

typedef struct {
    size_t n;       /* limbs in use */
    uint32_t l[];   /* least significant first */
} bn;

static bn *bn_new(size_t n) {
    bn *b = xmalloc(sizeof *b + n * sizeof(uint32_t));
    b->n = n;
    return b;
}

static bn *bn_small(uint32_t v) {
    bn *b = bn_new(1);
    b->l[0] = v;
    return b;
}

static void bn_trim(bn *b) {
    while (b->n > 1 && b->l[b->n - 1] == 0)
        b->n--;
}

static bn *bn_add(const bn *a, const bn *b) {
    size_t n = (a->n > b->n ? a->n : b->n) + 1;
    bn *c = bn_new(n);
    uint64_t carry = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t s = carry + (i < a->n ? a->l[i] : 0) + (i < b->n ? b->l[i] : 0);
        c->l[i] = (uint32_t)s;
        carry = s >> 32;
    }
    bn_trim(c);
    return c;
}

static bn *bn_mul(const bn *a, const bn *b) {
    size_t n = a->n + b->n;
    bn *c = bn_new(n);
    memset(c->l, 0, n * sizeof(uint32_t));
    for (size_t i = 0; i < a->n; i++) {
        uint64_t carry = 0;
        for (size_t j = 0; j < b->n; j++) {
            uint64_t t = (uint64_t)a->l[i] * b->l[j] + c->l[i + j] + carry;
            c->l[i + j] = (uint32_t)t;
            carry = t >> 32;
        }
        c->l[i + b->n] = (uint32_t)carry;
    }
    bn_trim(c);
    return c;
}

#define P ((uint64_t)0x7FFFFFFF) /* 2^31 - 1: products of residues fit in 64 bits */

static uint64_t mulmod(uint64_t a, uint64_t b) { return (a % P) * (b % P) % P; }

static uint64_t bn_modp(const bn *a) {
    uint64_t r = 0;
    for (size_t i = a->n; i-- > 0;)
        r = ((r << 32) % P + a->l[i]) % P;
    return r;
}

int main(int argc, char **argv) {
    suite_args(argc, argv);
    rng r = rng_seed(1);
    uint64_t check = 0;
    size_t rounds = scaled(800000);
    for (size_t k = 0; k < rounds; k++) {
        /* x = product of a few random numbers plus random terms: the
         * intermediate values are freed as soon as they are used. */
        uint32_t v = (uint32_t)rnd(&r) | 1;
        bn *x = bn_small(v);
        uint64_t xm = v % P;
        size_t steps = 4 + rnd(&r) % 24;
        for (size_t s = 0; s < steps; s++) {
            uint32_t f = (uint32_t)rnd(&r) | 1, a = (uint32_t)rnd(&r);
            bn *bf = bn_small(f), *ba = bn_small(a);
            bn *m = bn_mul(x, bf);
            free(x);
            free(bf);
            x = bn_add(m, ba);
            free(m);
            free(ba);
            xm = (mulmod(xm, f) + a) % P;
            if (s % 4 == 3) { /* a square now and then: longer numbers */
                bn *sq = bn_mul(x, x);
                uint64_t sqm = mulmod(xm, xm);
                if (bn_modp(sq) != sqm)
                    suite_fail("bignum square");
                check += sqm;
                free(sq);
            }
        }
        if (bn_modp(x) != xm)
            suite_fail("bignum result");
        check = check * 31 + xm;
        free(x);
    }
    suite_done("cfrac", check);
    return 0;
}
