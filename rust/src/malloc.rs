//! The global allocator with per-CPU caches (`kbm_*`, `kbuddy_malloc.h`) as
//! a `GlobalAlloc` type.

use crate::error::{Error, Stats};
use crate::ffi;
use core::alloc::{GlobalAlloc, Layout};
use crate::ffi::{c_char, c_uint, c_ulong, c_void};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

/// What the environment supplies to [`PerCpuHeap`]; every member may be
/// `None` (the default described with each).
#[derive(Clone, Copy, Debug, Default)]
pub struct Hooks {
    /// The calling CPU's number, below [`PerCpuHeap::MAX_CPUS`] (a CPU with a
    /// larger number goes to the shared heap, without a cache). Called with
    /// interrupts masked. `None`: always CPU 0, i.e. one CPU.
    pub cpu_id: Option<fn() -> usize>,
    /// Mask interrupts on this CPU and return the previous state; every call
    /// runs between `irq_save` and `irq_restore`, so that an interrupt
    /// handler that allocates cannot find its CPU's cache half-updated.
    /// `None`: nothing is masked (no handler allocates).
    pub irq_save: Option<fn() -> usize>,
    /// Restore a state `irq_save` returned.
    pub irq_restore: Option<fn(usize)>,
    /// A refused free (foreign, interior, double, wrong size) of the
    /// pointer, for the reason given; the `&str` names the call ("free",
    /// "free_aligned_sized", "realloc"). Runs after the refusal, with no
    /// lock held; nothing was changed. It may panic to stop the system (the
    /// panic aborts: it cannot unwind through C). `None`: refusals are only
    /// counted ([`MallocStats::bad_frees`]).
    pub bad_free: Option<fn(*mut u8, Error, &'static str)>,
    /// `true`: `cpu_id` may be called with interrupts on and preemption
    /// allowed (a number stale by the time it is used is fine), and no call
    /// need run masked. The cached allocations and frees then call `cpu_id`
    /// unmasked and claim that CPU's cache with one atomic swap instead of
    /// masking; a call that finds it claimed (an interrupt handler on that
    /// CPU, or a thread preempted and moved) masks interrupts and works
    /// through the lock, as every path that takes the lock does; a CPU
    /// numbered beyond [`PerCpuHeap::MAX_CPUS`] borrows, claimed the same
    /// way, the cache of its number modulo that, if one exists. Two
    /// indirect calls fewer per operation. `false` (the default): as
    /// `cpu_id` and `irq_save` say.
    pub cpu_id_unmasked: bool,
}

static CPU_ID: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());
static IRQ_SAVE: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());
static IRQ_RESTORE: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());
static BAD_FREE: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

unsafe extern "C" fn cpu_id_trampoline() -> c_uint {
    // SAFETY: only set_hooks stores here, and it stores a fn() -> usize.
    let f: fn() -> usize = core::mem::transmute(CPU_ID.load(Ordering::Relaxed));
    c_uint::try_from(f()).unwrap_or(c_uint::MAX)
}

unsafe extern "C" fn irq_save_trampoline() -> c_ulong {
    // SAFETY: only set_hooks stores here, and it stores a fn() -> usize.
    let f: fn() -> usize = core::mem::transmute(IRQ_SAVE.load(Ordering::Relaxed));
    f() as c_ulong
}

unsafe extern "C" fn irq_restore_trampoline(state: c_ulong) {
    // SAFETY: only set_hooks stores here, and it stores a fn(usize).
    let f: fn(usize) = core::mem::transmute(IRQ_RESTORE.load(Ordering::Relaxed));
    f(state as usize)
}

unsafe extern "C" fn bad_free_trampoline(p: *mut c_void, status: ffi::kbuddy_status, func: *const c_char) {
    // SAFETY: only set_hooks stores here, and it stores this fn type.
    let f: fn(*mut u8, Error, &'static str) =
        core::mem::transmute(BAD_FREE.load(Ordering::Relaxed));
    // SAFETY: func is one of the C layer's static names.
    let name = ffi::static_str(func);
    f(p.cast(), Error::from_status(status).unwrap_or(Error::Corrupt), name);
}

/// The global allocator's statistics (`kbuddy_malloc_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MallocStats {
    /// The core heap's own statistics (cached blocks count as allocated).
    pub heap: Stats,
    /// Blocks the program holds.
    pub live_blocks: usize,
    /// Their usable bytes.
    pub live_bytes: usize,
    /// Free blocks in per-CPU caches and the depot.
    pub cached_blocks: usize,
    /// Their bytes.
    pub cached_bytes: usize,
    /// Of the cached blocks, those in the depot.
    pub depot_blocks: usize,
    /// The layer's own blocks (magazines, cache structures).
    pub internal_blocks: usize,
    /// Their bytes.
    pub internal_bytes: usize,
    /// Per-CPU caches in existence.
    pub caches: usize,
    /// Regions added.
    pub regions: usize,
    /// Their bytes.
    pub region_bytes: usize,
    /// Of those, the bytes of the layer's tag tables.
    pub tag_bytes: usize,
    /// Frees refused so far.
    pub bad_frees: usize,
    /// Magazines swapped with the depot so far.
    pub depot_trades: usize,
    /// Blocks taken from the core heap into caches so far.
    pub core_fills: usize,
    /// Cached blocks given back to the core heap so far.
    pub core_drains: usize,
    /// Calls that went straight to the core heap (large or over-aligned).
    pub large_calls: usize,
}

/// kbuddy's global allocator (`kbm_malloc` and friends): one kernel-wide
/// kbuddy heap with per-CPU caches of small blocks (up to
/// [`CACHE_MAX`](Self::CACHE_MAX) bytes, alignment up to [`MIN_BLOCK`](crate::MIN_BLOCK))
/// in front, so that the common allocation and free take no shared lock.
/// There is one such heap per program: every `PerCpuHeap` value is a handle
/// to it. Fed like the rCore tutorial's `kernel-alloc`, with
/// [`transfer`](Self::transfer):
///
/// ```no_run
/// use kbuddy::PerCpuHeap;
///
/// #[global_allocator]
/// static HEAP: PerCpuHeap = PerCpuHeap::new();
/// static mut HEAP_SPACE: [u8; 2 << 20] = [0; 2 << 20];
///
/// fn this_cpu() -> usize { 0 /* read tp, mhartid, the APIC id... */ }
///
/// fn init_heap() {
///     unsafe {
///         HEAP.set_cpu_id(this_cpu);      // before the other CPUs start
///         HEAP.transfer(&mut *core::ptr::addr_of_mut!(HEAP_SPACE));
///     }
/// }
/// # fn main() { init_heap(); }
/// ```
///
/// A free it refuses (foreign, interior, double, wrong size) changes
/// nothing and is counted, and reported through the
/// [`bad_free`](Hooks::bad_free) hook if one is installed.
#[derive(Clone, Copy, Debug, Default)]
pub struct PerCpuHeap {
    _private: (),
}

impl PerCpuHeap {
    /// CPUs that can have a cache (`KBUDDY_MALLOC_MAX_CPUS`).
    pub const MAX_CPUS: usize = 64;
    /// The largest request served from the per-CPU caches
    /// (`KBUDDY_MALLOC_CACHE_MAX`).
    pub const CACHE_MAX: usize = 4096;

    /// A handle to the global heap. O(1).
    pub const fn new() -> Self {
        PerCpuHeap { _private: () }
    }

    /// Hand `region` over to the heap ("transfer"): any alignment and size,
    /// any number of regions, at any time. A region too small to hold its
    /// bookkeeping and a block is ignored. O(R + size / 32).
    ///
    /// # Panics
    /// If the region overlaps one added before, or more than 64 regions
    /// were added.
    ///
    /// # Safety
    /// Nothing else may use the memory afterwards (the `'static` exclusive
    /// borrow says so; it is `unsafe` as in `kernel-alloc`).
    pub unsafe fn transfer(&self, region: &'static mut [u8]) {
        let (start, len) = (region.as_mut_ptr() as usize, region.len());
        match self.add_region(start, len) {
            Ok(()) => {}
            Err(Error::NoMemory) if len < 4096 => {}
            Err(e) => panic!("kbuddy: transfer of {len} bytes at {start:#x} refused: {e}"),
        }
    }

    /// Hand `[start, start + size)` over, or say why not: `Invalid` (null,
    /// empty or wrapping), `NoMemory` (too small, or 64 regions already),
    /// `Overlap`. A refused call changes nothing. Thread-safe.
    ///
    /// # Safety
    /// The memory must be valid for reads and writes, unused by anything
    /// else, and outlive every allocation.
    pub unsafe fn add_region(&self, start: usize, size: usize) -> Result<(), Error> {
        Error::check(ffi::kbuddy_malloc_add_region(start as *mut c_void, size))
    }

    /// Install the hooks (replacing all of them). Call it once, at boot,
    /// before any other CPU uses the allocator; regions may have been added
    /// before. O(1).
    ///
    /// # Safety
    /// No other CPU may be using the allocator.
    pub unsafe fn set_hooks(&self, hooks: Hooks) {
        fn store(slot: &AtomicPtr<()>, f: Option<*const ()>) -> bool {
            slot.store(f.map_or(ptr::null_mut(), |f| f as *mut ()), Ordering::Relaxed);
            f.is_some()
        }
        let c = ffi::kbuddy_malloc_hooks {
            cpu_id: store(&CPU_ID, hooks.cpu_id.map(|f| f as *const ()))
                .then_some(cpu_id_trampoline as unsafe extern "C" fn() -> c_uint),
            irq_save: store(&IRQ_SAVE, hooks.irq_save.map(|f| f as *const ()))
                .then_some(irq_save_trampoline as unsafe extern "C" fn() -> c_ulong),
            irq_restore: store(&IRQ_RESTORE, hooks.irq_restore.map(|f| f as *const ()))
                .then_some(irq_restore_trampoline as unsafe extern "C" fn(c_ulong)),
            lock: ffi::kbuddy_lock::NONE,
            grow: None,
            grow_ctx: ptr::null_mut(),
            grow_zeroed: false,
            bad_free: store(&BAD_FREE, hooks.bad_free.map(|f| f as *const ())).then_some(
                bad_free_trampoline
                    as unsafe extern "C" fn(*mut c_void, ffi::kbuddy_status, *const c_char),
            ),
            thread_cache_created: None,
            map: None,
            unmap: None,
            remap: None,
            map_ctx: ptr::null_mut(),
            map_threshold: 0,
            map_zeroed: false,
            release: None,
            release_ctx: ptr::null_mut(),
            release_page: 0,
            ungrow: None,
            cpu_id_unmasked: hooks.cpu_id_unmasked,
        };
        ffi::kbuddy_malloc_set_hooks(&c);
    }

    /// Install only the CPU-id hook (the others off): the common case of a
    /// kernel whose interrupt handlers do not allocate.
    ///
    /// # Safety
    /// As for [`set_hooks`](Self::set_hooks).
    pub unsafe fn set_cpu_id(&self, cpu_id: fn() -> usize) {
        self.set_hooks(Hooks { cpu_id: Some(cpu_id), ..Hooks::default() });
    }

    /// Bytes usable at `ptr` (at least what was requested); 0 when `ptr` is
    /// not a live block. O(1) for the region used last.
    pub fn usable_size(&self, ptr: *const u8) -> usize {
        // SAFETY: the layer resolves the pointer before reading anything.
        unsafe { ffi::kbm_malloc_usable_size(ptr.cast()) }
    }

    /// The allocator's statistics, exact (taken under its lock).
    pub fn stats(&self) -> MallocStats {
        let mut s = ffi::kbuddy_malloc_stats::default();
        // SAFETY: s is a valid output.
        unsafe { ffi::kbuddy_malloc_get_stats(&mut s) };
        MallocStats {
            heap: s.heap.into(),
            live_blocks: s.live_blocks,
            live_bytes: s.live_bytes,
            cached_blocks: s.cached_blocks,
            cached_bytes: s.cached_bytes,
            depot_blocks: s.depot_blocks,
            internal_blocks: s.internal_blocks,
            internal_bytes: s.internal_bytes,
            caches: s.caches,
            regions: s.regions,
            region_bytes: s.region_bytes,
            tag_bytes: s.tag_bytes,
            bad_frees: s.bad_frees,
            depot_trades: s.depot_trades,
            core_fills: s.core_fills,
            core_drains: s.core_drains,
            large_calls: s.large_calls,
        }
    }

    /// Give the calling CPU's cached blocks and every block in the depot
    /// back to the core heap, with the magazines that held them; run it on
    /// every CPU to empty all caches. O(cached blocks) under the lock.
    pub fn flush_caches(&self) {
        // SAFETY: thread-safe C call.
        unsafe { ffi::kbuddy_malloc_flush_caches() }
    }

    /// Verify the layer and the core heap (`kbuddy_malloc_check`):
    /// `Err(Corrupt)` if something is damaged. O(heap size / 32).
    pub fn check(&self) -> Result<(), Error> {
        // SAFETY: thread-safe C call.
        Error::check(unsafe { ffi::kbuddy_malloc_check() })
    }
}

// SAFETY: kbm_* return blocks aligned to at least MIN_BLOCK (32), and
// kbm_aligned_alloc any larger power of two; sizes are at least those asked.
unsafe impl GlobalAlloc for PerCpuHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= crate::MIN_BLOCK {
            ffi::kbm_malloc(layout.size()).cast()
        } else {
            ffi::kbm_aligned_alloc(layout.align(), layout.size()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= crate::MIN_BLOCK {
            ffi::kbm_calloc(1, layout.size()).cast()
        } else {
            let p = self.alloc(layout);
            if !p.is_null() {
                ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Sized: a free whose layout is not the block's is refused.
        ffi::kbm_free_aligned_sized(ptr.cast(), layout.align(), layout.size())
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= crate::MIN_BLOCK && new_size != 0 {
            ffi::kbm_realloc(ptr.cast(), new_size).cast()
        } else {
            let new_layout = match Layout::from_size_align(new_size, layout.align()) {
                Ok(l) => l,
                Err(_) => return ptr::null_mut(),
            };
            let new = self.alloc(new_layout);
            if !new.is_null() {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
