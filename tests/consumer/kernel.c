/* A kernel's use of kbuddy, for run.sh's bare-metal cross build: a heap on a
 * .bss array and the malloc family on another, with nothing but the
 * compiler (no libc, no threads library, no -fPIC). */
#include "kbuddy.h"
#include "kbuddy_malloc.h"

static unsigned char heap_space[1 << 16];
static unsigned char malloc_space[1 << 18];
static kbuddy_heap heap = KBUDDY_HEAP_INIT;

int kernel_heap_init(void);
void *kmalloc(size_t size);
void kfree(void *p);

int kernel_heap_init(void) {
    if (kbuddy_add_region(&heap, heap_space, sizeof heap_space) != KBUDDY_OK)
        return -1;
    return kbuddy_malloc_add_region(malloc_space, sizeof malloc_space) == KBUDDY_OK ? 0 : -1;
}

void *kmalloc(size_t size) { return kbm_malloc(size); }
void kfree(void *p) { kbm_free(p); }
