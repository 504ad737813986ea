/*
 * A heap engine driven directly by a white-box test, over units [0, units)
 * of address space reserved with mmap and never touched but where the
 * operations write (MAP_NORESERVE: the zero pages the bookkeeping starts
 * from), so that even an engine of 2^31 units costs only what it uses.
 * The including file defines _DEFAULT_SOURCE (MAP_ANONYMOUS,
 * MAP_NORESERVE) before its first include.
 */
#ifndef KBTEST_ENGINE_H
#define KBTEST_ENGINE_H

#include "kbuddy_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>

typedef struct {
    kb_engine e;
    kb_order order[KBUDDY_MAX_ORDERS];
    void *words, *ctrl;
    size_t words_bytes, ctrl_bytes;
} engine_map;

static inline void *engine_reserve(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* A heap engine over units [0, units): all of it free, or (all_free
 * false) nothing free, for the test to release what it wants. Its control
 * bytes have a zero guard byte on each side, as a heap region's do. */
static inline bool engine_open(engine_map *m, uintptr_t units, bool all_free) {
    m->words_bytes = kb_engine_words(0, units) * sizeof(kb_word);
    m->ctrl_bytes = (size_t)units + KB_CTRL_GUARDS;
    m->words = engine_reserve(m->words_bytes);
    m->ctrl = engine_reserve(m->ctrl_bytes);
    if (!m->words || !m->ctrl)
        return false;
    (void)kb_engine_layout(&m->e, 0, units, m->order, m->words); /* mmap gave zeros */
    m->e.ctrl = (uint8_t *)m->ctrl + 1;
    if (all_free)
        kb_engine_release(&m->e, 0, units);
    return true;
}

static inline void engine_close(engine_map *m) {
    if (m->words)
        munmap(m->words, m->words_bytes);
    if (m->ctrl)
        munmap(m->ctrl, m->ctrl_bytes);
}

#endif
