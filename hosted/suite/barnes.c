/*
 * barnes-like: each step builds an octree over N bodies (one node of
 * about 100 bytes per split, allocated as bodies are inserted), computes
 * every node's mass and centre of mass bottom-up, walks it once more, and
 * tears it down. Masses are integers, so the root's mass is exactly the
 * sum of the bodies', and the nodes freed must be the nodes made.
 */
#include "suite.h"

typedef struct node {
    struct node *child[8];
    double cx, cy, cz, half;   /* the cube this node covers */
    double mx, my, mz;         /* mass-weighted position     */
    uint64_t mass;
    int body;                  /* leaf: its body, else -1    */
} node;

typedef struct {
    double x, y, z;
    uint64_t m;
} body;

static size_t made, freed;

static node *new_node(double cx, double cy, double cz, double half) {
    node *n = xmalloc(sizeof *n);
    memset(n->child, 0, sizeof n->child);
    n->cx = cx, n->cy = cy, n->cz = cz, n->half = half;
    n->mx = n->my = n->mz = 0;
    n->mass = 0;
    n->body = -1;
    made++;
    return n;
}

static int octant(const node *n, const body *b) {
    return (b->x >= n->cx) | (b->y >= n->cy) << 1 | (b->z >= n->cz) << 2;
}

static node *child_for(node *n, int o) {
    double h = n->half / 2;
    if (!n->child[o])
        n->child[o] = new_node(n->cx + (o & 1 ? h : -h), n->cy + (o & 2 ? h : -h),
                               n->cz + (o & 4 ? h : -h), h);
    return n->child[o];
}

static void insert(node *n, const body *bs, int i, int depth) {
    for (;;) {
        int leaf = 1;
        for (int o = 0; o < 8; o++)
            leaf &= n->child[o] == NULL;
        if (leaf && n->body < 0 && n->mass == 0) { /* empty leaf: take it */
            n->body = i;
            n->mass = 1; /* marks it used; recomputed later */
            return;
        }
        if (n->body >= 0 && depth < 40) { /* occupied leaf: push its body down */
            int old = n->body;
            n->body = -1;
            node *c = child_for(n, octant(n, &bs[old]));
            c->body = old;
            c->mass = 1;
        }
        if (depth >= 40) { /* coincident bodies: keep the extra at this depth */
            return;
        }
        n = child_for(n, octant(n, &bs[i]));
        depth++;
    }
}

static void summarise(node *n, const body *bs) {
    n->mass = 0;
    n->mx = n->my = n->mz = 0;
    if (n->body >= 0) {
        const body *b = &bs[n->body];
        n->mass = b->m;
        n->mx = b->x * (double)b->m, n->my = b->y * (double)b->m, n->mz = b->z * (double)b->m;
    }
    for (int o = 0; o < 8; o++)
        if (n->child[o]) {
            summarise(n->child[o], bs);
            n->mass += n->child[o]->mass;
            n->mx += n->child[o]->mx, n->my += n->child[o]->my, n->mz += n->child[o]->mz;
        }
}

static void teardown(node *n) {
    for (int o = 0; o < 8; o++)
        if (n->child[o])
            teardown(n->child[o]);
    free(n);
    freed++;
}

int main(int argc, char **argv) {
    suite_args(argc, argv);
    size_t nb = 20000, steps = scaled(300);
    body *bs = xmalloc(nb * sizeof *bs);
    rng r = rng_seed(3);
    uint64_t total = 0;
    for (size_t i = 0; i < nb; i++) {
        bs[i].x = (double)(rnd(&r) % 1000000) / 1e6;
        bs[i].y = (double)(rnd(&r) % 1000000) / 1e6;
        bs[i].z = (double)(rnd(&r) % 1000000) / 1e6;
        bs[i].m = 1 + rnd(&r) % 100;
        total += bs[i].m;
    }
    uint64_t check = 0;
    for (size_t s = 0; s < steps; s++) {
        node *root = new_node(0.5, 0.5, 0.5, 0.5);
        for (size_t i = 0; i < nb; i++)
            insert(root, bs, (int)i, 0);
        summarise(root, bs);
        /* The bodies' masses are distinct positions, so no two coincide at
         * depth 40 in practice; the root must hold all the mass. */
        if (root->mass != total)
            suite_fail("octree mass");
        check = check * 31 + made;
        teardown(root);
        if (made != freed)
            suite_fail("octree nodes");
        /* move the bodies a little (deterministically) */
        for (size_t i = 0; i < nb; i++) {
            bs[i].x = bs[i].x * 0.999 + 0.0005;
            bs[i].y = bs[i].y * 0.998 + 0.001;
        }
    }
    free(bs);
    suite_done("barnes", check);
    return 0;
}
