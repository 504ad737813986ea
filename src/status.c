/* Human-readable names of kbuddy_status values. */
#include "kbuddy_internal.h"

const char *kbuddy_strerror(kbuddy_status status) {
    switch (status) {
    case KBUDDY_OK:
        return "success";
    case KBUDDY_ENOMEM:
        return "out of memory";
    case KBUDDY_EINVAL:
        return "invalid argument";
    case KBUDDY_EOVERLAP:
        return "range overlaps managed memory";
    case KBUDDY_EFOREIGN:
        return "pointer or frame not managed by this allocator";
    case KBUDDY_EBADPTR:
        return "not the start of a live allocation";
    case KBUDDY_EDOUBLEFREE:
        return "double free";
    case KBUDDY_ESIZE:
        return "size or alignment does not match the allocation";
    case KBUDDY_ECORRUPT:
        return "allocator bookkeeping is corrupt";
    case KBUDDY_EBUSY:
        return "the region still holds allocations";
    }
    return "unknown status";
}
