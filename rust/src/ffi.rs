//! Hand-written declarations of the C API (`include/kbuddy.h`,
//! `include/kbuddy_malloc.h`). The structs mirror the C ones field for
//! field, because the crate embeds them (a `Heap` holds a `kbuddy_heap`);
//! a test compares their sizes and offsets with what the C compiler says.
#![allow(non_camel_case_types, dead_code)]

pub use core::ffi::c_void;

// C's integer types, spelled out here because core::ffi has them only from
// Rust 1.64 and the crate builds with Debian's 1.63.
pub type c_int = i32;
pub type c_uint = u32;
#[cfg(all(target_pointer_width = "64", not(windows)))]
pub type c_ulong = u64;
#[cfg(not(all(target_pointer_width = "64", not(windows))))]
pub type c_ulong = u32;
/// Only ever behind a pointer (to a NUL-terminated string): the sign of
/// `char` does not matter.
pub type c_char = u8;

/// The NUL-terminated C string at `p` (ASCII, static), as a `&str`.
///
/// # Safety
/// `p` must point to a NUL-terminated string that lives for 'static.
pub unsafe fn static_str(p: *const c_char) -> &'static str {
    let mut n = 0;
    while *p.add(n) != 0 {
        n += 1;
    }
    core::str::from_utf8(core::slice::from_raw_parts(p, n)).unwrap_or("?")
}

pub type kbuddy_status = c_int;
pub const KBUDDY_OK: kbuddy_status = 0;
pub const KBUDDY_ENOMEM: kbuddy_status = 1;
pub const KBUDDY_EINVAL: kbuddy_status = 2;
pub const KBUDDY_EOVERLAP: kbuddy_status = 3;
pub const KBUDDY_EFOREIGN: kbuddy_status = 4;
pub const KBUDDY_EBADPTR: kbuddy_status = 5;
pub const KBUDDY_EDOUBLEFREE: kbuddy_status = 6;
pub const KBUDDY_ESIZE: kbuddy_status = 7;
pub const KBUDDY_ECORRUPT: kbuddy_status = 8;
pub const KBUDDY_EBUSY: kbuddy_status = 9;

pub const KBUDDY_MAX_ORDERS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kbuddy_lock {
    pub acquire: Option<unsafe extern "C" fn(*mut c_void)>,
    pub release: Option<unsafe extern "C" fn(*mut c_void)>,
    pub ctx: *mut c_void,
}

impl kbuddy_lock {
    pub const NONE: Self = Self { acquire: None, release: None, ctx: core::ptr::null_mut() };
}

#[repr(C)]
pub struct kbuddy_engine {
    pub words: *mut u64,
    pub order: *mut c_void,
    pub lo: usize,
    pub hi: usize,
    pub orders: c_uint,
    pub nonempty: u64,
    pub ctrl: *mut u8,
    pub used: *const u64,
    pub owner_mask: *mut u64,
    pub owner_count: *mut usize,
}

pub type kbuddy_oom_fn =
    Option<unsafe extern "C" fn(*mut kbuddy_heap, usize, usize, *mut c_void) -> bool>;

#[repr(C)]
pub struct kbuddy_heap {
    pub regions: *mut c_void,
    pub hint: *mut c_void,
    pub total: usize,
    pub allocated: usize,
    pub user: usize,
    pub overhead: usize,
    pub allocations: usize,
    pub region_count: usize,
    pub orders_free: u64,
    pub regions_with_order: [usize; KBUDDY_MAX_ORDERS],
    pub oom: kbuddy_oom_fn,
    pub oom_ctx: *mut c_void,
    pub lock: kbuddy_lock,
    pub placement: c_uint,
}

impl kbuddy_heap {
    /// KBUDDY_HEAP_INIT: all zeroes, an empty heap.
    pub const INIT: Self = Self {
        regions: core::ptr::null_mut(),
        hint: core::ptr::null_mut(),
        total: 0,
        allocated: 0,
        user: 0,
        overhead: 0,
        allocations: 0,
        region_count: 0,
        orders_free: 0,
        regions_with_order: [0; KBUDDY_MAX_ORDERS],
        oom: None,
        oom_ctx: core::ptr::null_mut(),
        lock: kbuddy_lock::NONE,
        placement: 0, // KBUDDY_PLACE_DENSE
    };
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct kbuddy_stats {
    pub total: usize,
    pub allocated: usize,
    pub user: usize,
    pub overhead: usize,
    pub largest_free: usize,
    pub allocations: usize,
    pub regions: usize,
}

#[repr(C)]
pub struct kbuddy_frames {
    pub engine: kbuddy_engine,
    pub used: *mut u64,
    pub added: usize,
    pub allocated: usize,
    pub lock: kbuddy_lock,
}

impl kbuddy_frames {
    /// Not a C initialiser: a placeholder until kbuddy_frames_init runs
    /// (the crate never passes it to C before that).
    pub const ZERO: Self = Self {
        engine: kbuddy_engine {
            words: core::ptr::null_mut(),
            order: core::ptr::null_mut(),
            lo: 0,
            hi: 0,
            orders: 0,
            nonempty: 0,
            ctrl: core::ptr::null_mut(),
            used: core::ptr::null(),
            owner_mask: core::ptr::null_mut(),
            owner_count: core::ptr::null_mut(),
        },
        used: core::ptr::null_mut(),
        added: 0,
        allocated: 0,
        lock: kbuddy_lock::NONE,
    };
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct kbuddy_frame_stats {
    pub total: usize,
    pub allocated: usize,
    pub largest_free: usize,
}

pub type kbuddy_walk_fn = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, bool);
pub type kbuddy_frames_walk_fn = unsafe extern "C" fn(*mut c_void, usize, usize, bool);

#[repr(C)]
pub struct kbuddy_malloc_hooks {
    pub cpu_id: Option<unsafe extern "C" fn() -> c_uint>,
    pub irq_save: Option<unsafe extern "C" fn() -> c_ulong>,
    pub irq_restore: Option<unsafe extern "C" fn(c_ulong)>,
    pub lock: kbuddy_lock,
    pub grow: Option<unsafe extern "C" fn(usize, *mut *mut c_void, *mut usize, *mut c_void) -> bool>,
    pub grow_ctx: *mut c_void,
    pub grow_zeroed: bool,
    pub bad_free: Option<unsafe extern "C" fn(*mut c_void, kbuddy_status, *const c_char)>,
    pub thread_cache_created: Option<unsafe extern "C" fn()>,
    pub map: Option<unsafe extern "C" fn(usize, usize, *mut c_void) -> *mut c_void>,
    pub unmap: Option<unsafe extern "C" fn(*mut c_void, usize, *mut c_void)>,
    pub remap: Option<unsafe extern "C" fn(*mut c_void, usize, usize, *mut c_void) -> *mut c_void>,
    pub map_ctx: *mut c_void,
    pub map_threshold: usize,
    pub map_zeroed: bool,
    pub release: Option<unsafe extern "C" fn(*mut c_void, usize, *mut c_void)>,
    pub release_ctx: *mut c_void,
    pub release_page: usize,
    pub ungrow: Option<unsafe extern "C" fn(*mut c_void, usize, *mut c_void)>,
    pub cpu_id_unmasked: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct kbuddy_malloc_stats {
    pub heap: kbuddy_stats,
    pub live_blocks: usize,
    pub live_bytes: usize,
    pub cached_blocks: usize,
    pub cached_bytes: usize,
    pub depot_blocks: usize,
    pub internal_blocks: usize,
    pub internal_bytes: usize,
    pub caches: usize,
    pub regions: usize,
    pub region_bytes: usize,
    pub tag_bytes: usize,
    pub bad_frees: usize,
    pub depot_trades: usize,
    pub core_fills: usize,
    pub core_drains: usize,
    pub large_calls: usize,
    pub mapped_blocks: usize,
    pub mapped_bytes: usize,
    pub released_bytes: usize,
    pub regions_returned: usize,
    pub slabs: usize,
    pub slab_bytes: usize,
    pub slab_objects: usize,
    pub map_cached_bytes: usize,
}

extern "C" {
    pub fn kbuddy_strerror(status: kbuddy_status) -> *const c_char;

    pub fn kbuddy_add_region(heap: *mut kbuddy_heap, start: *mut c_void, size: usize)
        -> kbuddy_status;
    pub fn kbuddy_alloc(heap: *mut kbuddy_heap, size: usize, align: usize) -> *mut c_void;
    pub fn kbuddy_free(heap: *mut kbuddy_heap, ptr: *mut c_void) -> kbuddy_status;
    pub fn kbuddy_free_sized(
        heap: *mut kbuddy_heap,
        ptr: *mut c_void,
        size: usize,
        align: usize,
    ) -> kbuddy_status;
    pub fn kbuddy_resize_in_place(
        heap: *mut kbuddy_heap,
        ptr: *mut c_void,
        size: usize,
        align: usize,
    ) -> kbuddy_status;
    pub fn kbuddy_usable_size(heap: *const kbuddy_heap, ptr: *const c_void) -> usize;
    pub fn kbuddy_get_stats(heap: *const kbuddy_heap, out: *mut kbuddy_stats);
    pub fn kbuddy_check(heap: *const kbuddy_heap) -> kbuddy_status;
    pub fn kbuddy_walk(heap: *const kbuddy_heap, f: kbuddy_walk_fn, ctx: *mut c_void);
    pub fn kbuddy_rebind(heap: *mut kbuddy_heap);
    pub fn kbuddy_set_placement(heap: *mut kbuddy_heap, placement: c_uint) -> kbuddy_status;

    pub fn kbuddy_frames_meta_size(nframes: usize) -> usize;
    pub fn kbuddy_frames_init(
        fa: *mut kbuddy_frames,
        base: usize,
        nframes: usize,
        meta: *mut c_void,
        meta_size: usize,
    ) -> kbuddy_status;
    pub fn kbuddy_frames_add(fa: *mut kbuddy_frames, first: usize, count: usize) -> kbuddy_status;
    pub fn kbuddy_frames_alloc(
        fa: *mut kbuddy_frames,
        count: usize,
        align: usize,
        first: *mut usize,
    ) -> kbuddy_status;
    pub fn kbuddy_frames_free(fa: *mut kbuddy_frames, first: usize, count: usize)
        -> kbuddy_status;
    pub fn kbuddy_frames_get_stats(fa: *const kbuddy_frames, out: *mut kbuddy_frame_stats);
    pub fn kbuddy_frames_check(fa: *const kbuddy_frames) -> kbuddy_status;
    pub fn kbuddy_frames_walk(fa: *const kbuddy_frames, f: kbuddy_frames_walk_fn, ctx: *mut c_void);

    pub fn kbuddy_malloc_set_hooks(hooks: *const kbuddy_malloc_hooks);
    pub fn kbuddy_malloc_add_region(start: *mut c_void, size: usize) -> kbuddy_status;
    pub fn kbm_malloc(size: usize) -> *mut c_void;
    pub fn kbm_calloc(n: usize, size: usize) -> *mut c_void;
    pub fn kbm_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    pub fn kbm_aligned_alloc(align: usize, size: usize) -> *mut c_void;
    pub fn kbm_free(ptr: *mut c_void);
    pub fn kbm_free_aligned_sized(ptr: *mut c_void, align: usize, size: usize);
    pub fn kbm_malloc_usable_size(ptr: *const c_void) -> usize;
    pub fn kbuddy_malloc_get_stats(out: *mut kbuddy_malloc_stats);
    pub fn kbuddy_malloc_flush_caches();
    pub fn kbuddy_malloc_check() -> kbuddy_status;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    /// core::mem::offset_of! arrived in Rust 1.77.
    macro_rules! offset_of {
        ($t:ty, $f:ident) => {{
            let u = core::mem::MaybeUninit::<$t>::uninit();
            let base = u.as_ptr();
            // SAFETY: only the field's address is taken, nothing is read.
            let field = unsafe { core::ptr::addr_of!((*base).$f) };
            field as usize - base as usize
        }};
    }

    extern "C" {
        static kbuddy_rs_layout: [usize; 22];
    }

    /// The hand-written structs match the C compiler's layout of the
    /// headers, field offsets included.
    #[test]
    fn declarations_match_the_c_headers() {
        let c = unsafe { kbuddy_rs_layout };
        let rust = [
            size_of::<kbuddy_heap>(),
            align_of::<kbuddy_heap>(),
            offset_of!(kbuddy_heap, orders_free),
            offset_of!(kbuddy_heap, oom),
            offset_of!(kbuddy_heap, lock),
            size_of::<kbuddy_frames>(),
            align_of::<kbuddy_frames>(),
            offset_of!(kbuddy_frames, used),
            offset_of!(kbuddy_frames, lock),
            size_of::<kbuddy_stats>(),
            size_of::<kbuddy_frame_stats>(),
            size_of::<kbuddy_malloc_hooks>(),
            offset_of!(kbuddy_malloc_hooks, lock),
            offset_of!(kbuddy_malloc_hooks, grow_zeroed),
            offset_of!(kbuddy_malloc_hooks, bad_free),
            offset_of!(kbuddy_malloc_hooks, cpu_id_unmasked),
            size_of::<kbuddy_malloc_stats>(),
            offset_of!(kbuddy_malloc_stats, bad_frees),
            crate::MIN_BLOCK,
            crate::PerCpuHeap::MAX_CPUS,
            crate::PerCpuHeap::CACHE_MAX,
            size_of::<kbuddy_status>(),
        ];
        assert_eq!(rust, c);
    }
}
