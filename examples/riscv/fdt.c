/*
 * A small reader of flattened device trees (the DTB format of the
 * Devicetree Specification, chapter 5): header, memory reservation block,
 * and one pass over the structure block.
 *
 * The pass keeps a stack of open nodes. Each entry remembers the node's
 * #address-cells/#size-cells (which govern its children's reg) and the
 * properties this kernel cares about; a node is judged when it closes,
 * because properties may come in any order. Every offset and length is
 * checked against the blob's size, so a damaged blob gives an error, not a
 * wild read.
 */
#include "fdt.h"

#include <stdbool.h>
#include <stddef.h>

#define FDT_MAGIC 0xd00dfeedu
#define FDT_BEGIN_NODE 1u
#define FDT_END_NODE 2u
#define FDT_PROP 3u
#define FDT_NOP 4u
#define FDT_END 9u
#define MAX_DEPTH 16

struct prop {
    const uint8_t *p;
    uint32_t len;
};

struct node {
    const char *name;
    unsigned addr_cells, size_cells; /* for this node's children */
    struct prop reg, device_type, status, compatible;
};

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t cells(const uint8_t *p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 32 | be32(p + 4 * i);
    return v;
}

static bool str_eq(const char *a, const char *b) {
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* Is name "base" or "base@unit"? */
static bool name_is(const char *name, const char *base) {
    while (*base && *name == *base)
        name++, base++;
    return *base == '\0' && (*name == '\0' || *name == '@');
}

static bool prop_is(struct prop pr, const char *s) {
    return pr.p && pr.len > 0 && pr.p[pr.len - 1] == '\0' && str_eq((const char *)pr.p, s);
}

/* Does a string list (like compatible) contain s? */
static bool list_has(struct prop pr, const char *s) {
    for (uint32_t i = 0; pr.p && i < pr.len;) {
        const char *item = (const char *)pr.p + i;
        uint32_t n = 0;
        while (i + n < pr.len && item[n])
            n++;
        if (i + n == pr.len)
            return false; /* unterminated */
        if (str_eq(item, s))
            return true;
        i += n + 1;
    }
    return false;
}

static void copy_name(char *dst, size_t size, const char *src) {
    size_t i = 0;
    for (; src[i] && i + 1 < size; i++)
        dst[i] = src[i];
    dst[i] = '\0';
}

static void add_range(struct fdt_info *out, struct fdt_range *arr, unsigned *n, uint64_t base,
                      uint64_t size, const char *name) {
    if (size == 0)
        return;
    if (*n == FDT_MAX_RANGES) {
        out->dropped++;
        return;
    }
    arr[*n].base = base;
    arr[*n].size = size;
    copy_name(arr[*n].name, sizeof arr[*n].name, name);
    (*n)++;
}

/* Add every (address, size) pair of a node's reg, read with its parent's
 * cell counts. */
static void add_reg(struct fdt_info *out, struct fdt_range *arr, unsigned *n, const struct node *nd,
                    const struct node *parent) {
    unsigned ac = parent->addr_cells, sc = parent->size_cells;
    uint32_t entry = 4 * (ac + sc);
    if (entry == 0 || ac > 2 || sc > 2)
        return;
    for (uint32_t off = 0; off + entry <= nd->reg.len; off += entry)
        add_range(out, arr, n, cells(nd->reg.p + off, ac), cells(nd->reg.p + off + 4 * ac, sc),
                  nd->name);
}

/* A node has closed: keep what it tells us. stack[1] is the root, so
 * /memory is at depth 2 and /cpus/cpu@0 at depth 3. */
static void judge(struct fdt_info *out, struct node *stack, unsigned depth) {
    struct node *nd = &stack[depth], *parent = &stack[depth - 1];
    bool enabled = !nd->status.p || prop_is(nd->status, "okay") || prop_is(nd->status, "ok");
    if (depth == 2 && nd->reg.p && (prop_is(nd->device_type, "memory") || name_is(nd->name, "memory")))
        add_reg(out, out->mem, &out->nmem, nd, parent);
    else if (depth == 3 && name_is(parent->name, "reserved-memory") && nd->reg.p)
        add_reg(out, out->resv, &out->nresv, nd, parent);
    else if (depth == 3 && name_is(parent->name, "cpus") && enabled && nd->reg.p &&
             (prop_is(nd->device_type, "cpu") || name_is(nd->name, "cpu"))) {
        unsigned ac = parent->addr_cells;
        if (ac >= 1 && ac <= 2 && nd->reg.len >= 4 * ac) {
            if (out->nharts < FDT_MAX_HARTS)
                out->harts[out->nharts++] = cells(nd->reg.p, ac);
            else
                out->dropped++;
        }
    } else if (nd->reg.p && (list_has(nd->compatible, "sifive,test0") ||
                             list_has(nd->compatible, "sifive,test1"))) {
        unsigned ac = parent->addr_cells;
        if (ac >= 1 && ac <= 2 && nd->reg.len >= 4 * ac)
            out->finisher = cells(nd->reg.p, ac);
    }
}

int fdt_parse(const void *dtb, struct fdt_info *out, const char **why) {
    const uint8_t *b = dtb;
    static const struct fdt_info empty;
    *out = empty;
    *why = "";
    if (!b || be32(b) != FDT_MAGIC) {
        *why = "bad magic";
        return -1;
    }
    uint32_t total = be32(b + 4), off_struct = be32(b + 8), off_strings = be32(b + 12);
    uint32_t off_rsv = be32(b + 16), version = be32(b + 20);
    uint32_t size_strings = be32(b + 32), size_struct = be32(b + 36);
    if (version < 17 || total < 40 || off_struct > total || size_struct > total - off_struct ||
        off_strings > total || size_strings > total - off_strings || off_rsv > total - 16) {
        *why = "bad header";
        return -2;
    }
    out->totalsize = total;

    /* The memory reservation block: (address, size) pairs up to (0, 0). */
    for (uint32_t o = off_rsv; o + 16 <= total; o += 16) {
        uint64_t base = cells(b + o, 2), size = cells(b + o + 8, 2);
        if (base == 0 && size == 0)
            break;
        add_range(out, out->resv, &out->nresv, base, size, "/memreserve/");
    }

    struct node stack[MAX_DEPTH];
    unsigned depth = 0; /* stack[depth] is the innermost open node; 0: none */
    const uint8_t *s = b + off_struct, *end = s + size_struct;
    for (;;) {
        if (end - s < 4) {
            *why = "structure block ends without FDT_END";
            return -3;
        }
        uint32_t tok = be32(s);
        s += 4;
        if (tok == FDT_BEGIN_NODE) {
            const char *name = (const char *)s;
            while (s < end && *s)
                s++;
            if (s == end || depth + 1 == MAX_DEPTH) {
                *why = s == end ? "unterminated node name" : "nodes nested too deeply";
                return -4;
            }
            s = b + ((size_t)(s + 1 - b + 3) & ~(size_t)3);
            struct node *nd = &stack[++depth];
            *nd = (struct node){name, 2, 1, {0, 0}, {0, 0}, {0, 0}, {0, 0}};
        } else if (tok == FDT_END_NODE) {
            if (depth == 0) {
                *why = "unbalanced FDT_END_NODE";
                return -5;
            }
            if (depth >= 2)
                judge(out, stack, depth);
            depth--;
        } else if (tok == FDT_PROP) {
            if (end - s < 8 || depth == 0) {
                *why = "truncated property";
                return -6;
            }
            uint32_t len = be32(s), nameoff = be32(s + 4);
            s += 8;
            if ((size_t)(end - s) < len || nameoff >= size_strings) {
                *why = "property out of bounds";
                return -7;
            }
            const char *pname = (const char *)b + off_strings + nameoff;
            struct prop pr = {s, len};
            struct node *nd = &stack[depth];
            if (str_eq(pname, "#address-cells") && len == 4)
                nd->addr_cells = be32(s);
            else if (str_eq(pname, "#size-cells") && len == 4)
                nd->size_cells = be32(s);
            else if (str_eq(pname, "reg"))
                nd->reg = pr;
            else if (str_eq(pname, "device_type"))
                nd->device_type = pr;
            else if (str_eq(pname, "status"))
                nd->status = pr;
            else if (str_eq(pname, "compatible"))
                nd->compatible = pr;
            else if (str_eq(pname, "timebase-frequency") && len == 4 &&
                     ((depth == 2 && name_is(nd->name, "cpus")) ||
                      (depth == 3 && name_is(stack[2].name, "cpus") && !out->timebase)))
                out->timebase = be32(s); /* in /cpus, or else in a cpu node */
            s = b + ((size_t)(s + len - b + 3) & ~(size_t)3);
        } else if (tok == FDT_NOP) {
            continue;
        } else if (tok == FDT_END) {
            break;
        } else {
            *why = "unknown token";
            return -8;
        }
    }
    if (depth != 0) {
        *why = "unclosed nodes";
        return -9;
    }
    return 0;
}
