//! The byte heap (`kbuddy_heap`) behind buddy_system_allocator's names:
//! [`Heap`], [`LockedHeap`], [`LockedHeapWithRescue`].

use crate::error::{Error, OnBadFree, Stats};
use crate::ffi;
use crate::lock::Mutex;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, UnsafeCell};
use core::ffi::c_void;
use core::fmt;
use core::ops::Deref;
use core::ptr::{self, NonNull};

/// An out-of-memory handler: called by [`Heap::alloc`] when no free block
/// fits `layout`, with the heap (it may add regions). Return `true` to have
/// the allocation retried, `false` to make it fail.
pub type OomHandler<const ORDER: usize> = fn(&mut Heap<ORDER>, &Layout) -> bool;

/// Where a [`Heap`] places allocations; see [`Heap::set_placement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Placement {
    /// `KBUDDY_PLACE_DENSE`, the default.
    Dense = 0,
    /// `KBUDDY_PLACE_FAST`.
    Fast = 1,
}

/// One block reported by [`Heap::walk`]: used blocks with their usable size,
/// free blocks one buddy block at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// The block's address.
    pub start: usize,
    /// Its size in bytes.
    pub size: usize,
    /// An allocation (`true`) or free memory.
    pub used: bool,
}

/// A heap fed with any number of memory regions, serving `alloc(layout)` /
/// `dealloc(ptr, layout)`: buddy_system_allocator's `Heap` on kbuddy.
///
/// Differences from the original, all in the caller's favour:
/// - a request takes its size rounded up to 32 bytes ([`MIN_BLOCK`](crate::MIN_BLOCK)), not
///   to a power of two; the rest of the block goes back to the free lists;
/// - `dealloc` is O(log n) whatever is free, and checks what it frees: a
///   foreign, interior, double or mis-sized free is refused with nothing
///   changed (see [`Heap::try_dealloc`] and [`OnBadFree`]);
/// - regions may have any alignment and size, and are kept apart (each
///   carries its own bookkeeping, about 4% of it, at its head), so
///   [`stats_total_bytes`](Heap::stats_total_bytes) is the region size less
///   that bookkeeping;
/// - `ORDER` is accepted for compatibility and ignored: kbuddy has no
///   limit on block sizes.
///
/// The heap's bookkeeping lives in its regions; the struct itself is about
/// 650 bytes and may be moved at any time (it re-points its regions at its
/// new address on the next call, see `kbuddy_rebind`). It is `Send` but not
/// `Sync`: share it through [`LockedHeap`].
///
/// ```
/// use core::alloc::Layout;
/// use kbuddy::Heap;
///
/// let mut space = vec![0u64; 1024];          // 8 KiB, any alignment works
/// let begin = space.as_mut_ptr() as usize;
/// let mut heap = Heap::<32>::empty();
/// unsafe { heap.init(begin, 8192) };           // or add_to_heap(begin, end)
///
/// let layout = Layout::from_size_align(100, 8).unwrap();
/// let p = heap.alloc(layout).unwrap();
/// assert_eq!(heap.stats_alloc_user(), 100);
/// // 100 rounded up to whole minimum blocks: 128 with 32-byte blocks
/// let min = kbuddy::MIN_BLOCK;
/// assert_eq!(heap.stats_alloc_actual(), (100 + min - 1) / min * min);
/// heap.dealloc(p, layout);
/// assert_eq!(heap.try_dealloc(p, layout), Err(kbuddy::Error::DoubleFree));
/// assert_eq!(heap.stats_alloc_actual(), 0);
/// ```
pub struct Heap<const ORDER: usize = 32> {
    raw: UnsafeCell<ffi::kbuddy_heap>,
    /// The address the regions point back at (null: none yet).
    home: Cell<*const ffi::kbuddy_heap>,
    on_bad_free: OnBadFree,
    bad_frees: usize,
    /// The `OomHandler<ORDER>`, type-erased: before Rust 1.83 a const fn may
    /// not mention a type with `&mut` in it, and new() must stay const.
    oom: *const (),
}

// SAFETY: the heap owns its regions' bookkeeping; nothing in it is tied to
// a thread. It is not Sync (UnsafeCell, Cell): shared use goes through a
// lock.
unsafe impl<const ORDER: usize> Send for Heap<ORDER> {}

impl<const ORDER: usize> Heap<ORDER> {
    /// An empty heap, with no regions. O(1).
    pub const fn new() -> Self {
        Heap {
            raw: UnsafeCell::new(ffi::kbuddy_heap::INIT),
            home: Cell::new(ptr::null()),
            on_bad_free: OnBadFree::Panic,
            bad_frees: 0,
            oom: ptr::null(),
        }
    }

    /// An empty heap, with no regions (the same as [`new`](Self::new)). O(1).
    pub const fn empty() -> Self {
        Self::new()
    }

    /// The C heap, its regions pointing at its current address. Every call
    /// into C goes through here, so a heap that moved since its last call is
    /// re-bound first (O(R), once per move).
    fn raw(&self) -> *mut ffi::kbuddy_heap {
        let p = self.raw.get();
        if !ptr::eq(self.home.get(), p) {
            // SAFETY: p is this heap's own struct; the heap is not Sync, so
            // no other thread uses it, and no C call is in progress.
            unsafe { ffi::kbuddy_rebind(p) };
            self.home.set(p);
        }
        p
    }

    /// Add the memory `[start, start + size)` to the heap, as
    /// [`add_to_heap`](Self::add_to_heap) does.
    ///
    /// # Safety
    /// As for `add_to_heap`.
    pub unsafe fn init(&mut self, start: usize, size: usize) {
        let end = start.checked_add(size).expect("kbuddy: init: start + size overflows");
        self.add_to_heap(start, end);
    }

    /// Add the memory `[start, end)` to the heap ("transfer"): any
    /// alignment and size, any number of regions, at any time (also from an
    /// out-of-memory handler). Its first bytes hold the region's bookkeeping.
    /// A range too small to hold its bookkeeping and one block (a few hundred
    /// bytes) is ignored, as the original ignores what it cannot align;
    /// [`try_add_to_heap`](Self::try_add_to_heap) reports it. O(R + L +
    /// size / 2 KiB).
    ///
    /// # Panics
    /// If `start > end` (as the original), or the range overlaps a region
    /// already added, starts at address 0 or wraps: these are bugs.
    ///
    /// # Safety
    /// The memory must be valid for reads and writes, unused by anything
    /// else, and outlive every use of the heap and of its allocations.
    pub unsafe fn add_to_heap(&mut self, start: usize, end: usize) {
        assert!(start <= end, "kbuddy: add_to_heap: start {start:#x} > end {end:#x}");
        if start == end {
            return;
        }
        match self.try_add_to_heap(start, end) {
            Ok(()) | Err(Error::NoMemory) => {}
            Err(e) => panic!("kbuddy: add_to_heap({start:#x}, {end:#x}) refused: {e}"),
        }
    }

    /// [`add_to_heap`](Self::add_to_heap), reporting refusals instead:
    /// `Invalid` (`start >= end`, `start == 0`), `NoMemory` (too small to
    /// be of use), `Overlap` (overlaps a region already added). A refused
    /// call changes nothing.
    ///
    /// # Safety
    /// As for `add_to_heap`.
    pub unsafe fn try_add_to_heap(&mut self, start: usize, end: usize) -> Result<(), Error> {
        if start >= end {
            return Err(Error::Invalid);
        }
        Error::check(ffi::kbuddy_add_region(self.raw(), start as *mut c_void, end - start))
    }

    /// Allocate memory for `layout`: `layout.size()` bytes (0 gives a unique
    /// minimum block) at an address aligned to `layout.align()` (any power
    /// of two up to the largest block a region holds). On failure the
    /// out-of-memory handler (if any) is called, and the allocation retried
    /// each time it returns true. `Err(())` when no region has a free block
    /// as large as both the size rounded up to 32 bytes and the alignment.
    /// O(R + L) without the handler.
    #[allow(clippy::result_unit_err)] // the original's signature
    pub fn alloc(&mut self, layout: Layout) -> Result<NonNull<u8>, ()> {
        loop {
            // SAFETY: raw() is a valid heap.
            let p = unsafe { ffi::kbuddy_alloc(self.raw(), layout.size(), layout.align()) };
            if let Some(p) = NonNull::new(p.cast::<u8>()) {
                return Ok(p);
            }
            if self.oom.is_null() {
                return Err(());
            }
            // SAFETY: only set_oom_handler stores here, an OomHandler<ORDER>.
            let handler: OomHandler<ORDER> = unsafe { core::mem::transmute(self.oom) };
            if !handler(self, &layout) {
                return Err(());
            }
        }
    }

    /// Free `ptr`, allocated by this heap with `layout`. A free kbuddy
    /// refuses (see [`try_dealloc`](Self::try_dealloc)) changes nothing, is
    /// counted ([`bad_frees`](Self::bad_frees)), and then panics or is
    /// ignored, as [`set_on_bad_free`](Self::set_on_bad_free) chose
    /// (default: panic). O(R + L).
    pub fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        if let Err(e) = self.try_dealloc(ptr, layout) {
            self.bad_frees += 1;
            if self.on_bad_free == OnBadFree::Panic {
                bad_free_panic(ptr.as_ptr() as usize, layout, e);
            }
        }
    }

    /// Free `ptr`, allocated by this heap with `layout`, or say why not:
    /// `Foreign` (outside every region), `BadPointer` (not the start of an
    /// allocation), `DoubleFree` (already free), `Size` (`layout`'s size is
    /// not the one allocated, or its alignment does not hold for `ptr`),
    /// `Corrupt` (the allocation's record is damaged). A refused call
    /// changes nothing. O(R + L).
    pub fn try_dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) -> Result<(), Error> {
        // SAFETY: kbuddy checks the pointer before it touches anything.
        Error::check(unsafe {
            ffi::kbuddy_free_sized(self.raw(), ptr.as_ptr().cast(), layout.size(), layout.align())
        })
    }

    /// Resize the allocation at `ptr` (made with `layout`) to `new_size`
    /// bytes, keeping `layout.align()`: in place when the block already
    /// fits or the memory after it is free, else by allocating (the
    /// out-of-memory handler may run), copying and freeing the old block.
    /// `Err(())` when memory runs out (the old allocation is untouched), or
    /// when `ptr` is not a live allocation made with `layout` (a bad free:
    /// nothing changes; counted, then panics or not as
    /// [`set_on_bad_free`](Self::set_on_bad_free) chose). O(R + L), plus
    /// the copy when it moves.
    ///
    /// # Safety
    /// If the call succeeds, the memory at `ptr` must not be used again
    /// (unless the same pointer was returned).
    #[allow(clippy::result_unit_err)]
    pub unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, ()> {
        match self.realloc_inner(ptr, layout, new_size) {
            Ok(p) => Ok(p),
            Err(None) => Err(()),
            Err(Some(e)) => {
                self.bad_frees += 1;
                if self.on_bad_free == OnBadFree::Panic {
                    bad_free_panic(ptr.as_ptr() as usize, layout, e);
                }
                Err(())
            }
        }
    }

    /// realloc without the bad-free policy: Err(None) when memory runs out,
    /// Err(Some(e)) when the old block is refused; nothing changed either way.
    fn realloc_inner(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, Option<Error>> {
        // SAFETY: kbuddy checks the pointer before it changes anything.
        let st = unsafe {
            ffi::kbuddy_resize_in_place(self.raw(), ptr.as_ptr().cast(), new_size, layout.align())
        };
        match Error::from_status(st) {
            None => return Ok(ptr),
            Some(Error::NoMemory) => {}
            Some(e) => return Err(Some(e)),
        }
        let new_layout = Layout::from_size_align(new_size, layout.align()).map_err(|_| None)?;
        let new = self.alloc(new_layout).map_err(|()| None)?;
        let old_size = self.usable_size(ptr.as_ptr()).min(layout.size()).min(new_size);
        // SAFETY: both blocks are live and distinct, each at least old_size.
        unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old_size) };
        if let Err(e) = self.try_dealloc(ptr, layout) {
            // The old block was not allocated with `layout`: undo.
            let _ = self.try_dealloc(new, new_layout);
            return Err(Some(e));
        }
        Ok(new)
    }

    /// Bytes usable at `ptr`: its requested size rounded up to 32 bytes; 0
    /// when `ptr` is not a live allocation of this heap. O(R + log L).
    pub fn usable_size(&self, ptr: *const u8) -> usize {
        // SAFETY: kbuddy resolves the pointer before reading anything.
        unsafe { ffi::kbuddy_usable_size(self.raw(), ptr.cast()) }
    }

    /// Bytes requested by live allocations. O(1).
    pub fn stats_alloc_user(&self) -> usize {
        self.stats().user
    }

    /// Bytes reserved by live allocations (each request rounded up to 32
    /// bytes). O(1).
    pub fn stats_alloc_actual(&self) -> usize {
        self.stats().allocated
    }

    /// Bytes the heap can hand out: its regions less their bookkeeping.
    /// O(1).
    pub fn stats_total_bytes(&self) -> usize {
        self.stats().total
    }

    /// All seven statistics, exact at the moment of the call. O(1).
    pub fn stats(&self) -> Stats {
        let mut s = ffi::kbuddy_stats::default();
        // SAFETY: raw() is a valid heap, s a valid output.
        unsafe { ffi::kbuddy_get_stats(self.raw(), &mut s) };
        s.into()
    }

    /// Verify every invariant of the heap's bookkeeping (`kbuddy_check`):
    /// `Err(Corrupt)` if something is damaged. Read-only. O(heap size / 32):
    /// for tests and debug builds.
    pub fn check(&self) -> Result<(), Error> {
        // SAFETY: raw() is a valid heap.
        Error::check(unsafe { ffi::kbuddy_check(self.raw()) })
    }

    /// Choose where allocations go (`kbuddy_set_placement`): dense (the
    /// default) fills about 90% of a heap with random sizes; fast takes the
    /// lowest smallest sufficient block, about 40% fewer instructions per
    /// operation at about 74%. Every other promise is the same. O(1).
    pub fn set_placement(&mut self, placement: Placement) {
        // SAFETY: raw() is a valid heap; both values are known to C.
        let st = unsafe { ffi::kbuddy_set_placement(self.raw(), placement as ffi::c_uint) };
        debug_assert_eq!(st, 0);
    }

    /// Call `f` for every block, free or used, in address order
    /// (`kbuddy_walk`). `f` must not panic (it is called from C: a panic
    /// aborts). O(heap size / 32).
    pub fn walk<F: FnMut(Block)>(&self, mut f: F) {
        unsafe extern "C" fn trampoline<F: FnMut(Block)>(
            ctx: *mut c_void,
            start: *mut c_void,
            size: usize,
            used: bool,
        ) {
            // SAFETY: ctx is the &mut F passed below, alive for the call.
            let f = &mut *ctx.cast::<F>();
            f(Block { start: start as usize, size, used });
        }
        // SAFETY: the callback does not call into the heap (it cannot: the
        // heap is borrowed here).
        unsafe {
            ffi::kbuddy_walk(self.raw(), trampoline::<F>, (&mut f as *mut F).cast());
        }
    }

    /// Install (or, with `None`, remove) the out-of-memory handler that
    /// [`alloc`](Self::alloc) calls when no block fits. O(1).
    pub fn set_oom_handler(&mut self, handler: Option<OomHandler<ORDER>>) {
        self.oom = handler.map_or(ptr::null(), |f| f as *const ());
    }

    /// Choose what [`dealloc`](Self::dealloc) does with a refused free.
    /// O(1).
    pub fn set_on_bad_free(&mut self, policy: OnBadFree) {
        self.on_bad_free = policy;
    }

    /// Frees refused by `dealloc` and `realloc` so far.
    pub fn bad_frees(&self) -> usize {
        self.bad_frees
    }
}

impl<const ORDER: usize> Default for Heap<ORDER> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const ORDER: usize> fmt::Debug for Heap<ORDER> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        f.debug_struct("Heap")
            .field("user", &s.user)
            .field("allocated", &s.allocated)
            .field("total", &s.total)
            .field("largest_free", &s.largest_free)
            .field("regions", &s.regions)
            .finish()
    }
}

#[cold]
#[track_caller]
fn bad_free_panic(ptr: usize, layout: Layout, e: Error) -> ! {
    panic!(
        "kbuddy: dealloc({ptr:#x}, size {}, align {}) refused: {e}",
        layout.size(),
        layout.align()
    )
}

/// The same panic from a function that cannot unwind, for `GlobalAlloc`
/// methods (which must not unwind): the panic handler runs, then the
/// program aborts.
#[cold]
extern "C" fn bad_free_abort(ptr: usize, size: usize, align: usize, status: i32) -> ! {
    let e = Error::from_status(status).unwrap_or(Error::Corrupt);
    panic!("kbuddy: dealloc({ptr:#x}, size {size}, align {align}) refused: {e}")
}

/// `GlobalAlloc::dealloc` for a locked heap: the refusal policy applied
/// without unwinding.
fn global_dealloc<const ORDER: usize>(heap: &Mutex<Heap<ORDER>>, ptr: *mut u8, layout: Layout) {
    let p = match NonNull::new(ptr) {
        Some(p) => p,
        None => return,
    };
    let mut h = heap.lock();
    if let Err(e) = h.try_dealloc(p, layout) {
        h.bad_frees += 1;
        if h.on_bad_free == OnBadFree::Panic {
            drop(h);
            bad_free_abort(ptr as usize, layout.size(), layout.align(), e.status());
        }
    }
}

fn global_realloc<const ORDER: usize>(
    heap: &Mutex<Heap<ORDER>>,
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
) -> *mut u8 {
    let p = match NonNull::new(ptr) {
        Some(p) => p,
        None => return ptr::null_mut(),
    };
    let mut h = heap.lock();
    match h.realloc_inner(p, layout, new_size) {
        Ok(p) => p.as_ptr(),
        Err(None) => ptr::null_mut(),
        Err(Some(e)) => {
            h.bad_frees += 1;
            if h.on_bad_free == OnBadFree::Panic {
                drop(h);
                bad_free_abort(ptr as usize, layout.size(), layout.align(), e.status());
            }
            ptr::null_mut()
        }
    }
}

/// A [`Heap`] behind a spin lock, usable as the `#[global_allocator]`:
///
/// ```no_run
/// use kbuddy::LockedHeap;
///
/// #[global_allocator]
/// static HEAP_ALLOCATOR: LockedHeap<32> = LockedHeap::empty();
///
/// const KERNEL_HEAP_SIZE: usize = 0x30_0000;
/// static mut HEAP_SPACE: [u8; KERNEL_HEAP_SIZE] = [0; KERNEL_HEAP_SIZE];
///
/// pub fn init_heap() {
///     unsafe {
///         HEAP_ALLOCATOR
///             .lock()
///             .init(core::ptr::addr_of_mut!(HEAP_SPACE) as usize, KERNEL_HEAP_SIZE);
///     }
/// }
/// # fn main() { init_heap(); }
/// ```
///
/// `lock()` (through `Deref` to the [`Mutex`]) gives the `Heap`. As the
/// original, allocation failure returns null. A free the heap refuses
/// is handled by the heap's [`OnBadFree`] policy; `Panic` aborts here,
/// since a global allocator must not unwind.
pub struct LockedHeap<const ORDER: usize = 32>(Mutex<Heap<ORDER>>);

impl<const ORDER: usize> LockedHeap<ORDER> {
    /// An empty heap. O(1).
    pub const fn new() -> Self {
        LockedHeap(Mutex::new(Heap::new()))
    }

    /// An empty heap. O(1).
    pub const fn empty() -> Self {
        LockedHeap(Mutex::new(Heap::new()))
    }
}

impl<const ORDER: usize> Default for LockedHeap<ORDER> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const ORDER: usize> Deref for LockedHeap<ORDER> {
    type Target = Mutex<Heap<ORDER>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

// SAFETY: every method locks the heap; kbuddy returns blocks of at least
// the layout's size and alignment, and refuses frees of anything else.
unsafe impl<const ORDER: usize> GlobalAlloc for LockedHeap<ORDER> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.lock().alloc(layout).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        global_dealloc(&self.0, ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        global_realloc(&self.0, ptr, layout, new_size)
    }
}

/// A [`LockedHeap`] with a rescue function: when an allocation fails, the
/// rescue runs with the lock held (it may add memory with
/// `add_to_heap`), then the allocation is tried once more, as in the
/// original.
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use kbuddy::{Heap, LockedHeapWithRescue};
///
/// static mut SPACE: [u64; 512] = [0; 512];
/// fn rescue(heap: &mut Heap<32>, _layout: &Layout) {
///     unsafe {
///         let start = core::ptr::addr_of_mut!(SPACE) as usize;
///         heap.add_to_heap(start, start + 4096);
///     }
/// }
/// let heap = LockedHeapWithRescue::<32>::new(rescue);
///
/// let layout = Layout::from_size_align(100, 8).unwrap();
/// let p = unsafe { heap.alloc(layout) };      // empty heap: rescue, retry
/// assert!(!p.is_null());
/// unsafe { heap.dealloc(p, layout) };
/// ```
///
/// `new` is a `const fn` from Rust 1.83 on (so that the heap can be a
/// `static`, the `#[global_allocator]`); before that a `const fn` cannot
/// take a `fn(&mut ...)`, and `new` is an ordinary function, as the
/// original's is without its `const_fn` feature.
pub struct LockedHeapWithRescue<const ORDER: usize = 32> {
    inner: Mutex<Heap<ORDER>>,
    /// The `fn(&mut Heap<ORDER>, &Layout)`, type-erased for the same reason
    /// as Heap's OOM handler.
    rescue: *const (),
}

// SAFETY: rescue is a plain function pointer; the heap is behind the lock.
unsafe impl<const ORDER: usize> Sync for LockedHeapWithRescue<ORDER> {}
unsafe impl<const ORDER: usize> Send for LockedHeapWithRescue<ORDER> {}

impl<const ORDER: usize> LockedHeapWithRescue<ORDER> {
    /// An empty heap that calls `rescue` when an allocation fails. O(1).
    #[cfg(kbuddy_const_mut_refs)]
    pub const fn new(rescue: fn(&mut Heap<ORDER>, &Layout)) -> Self {
        LockedHeapWithRescue { inner: Mutex::new(Heap::new()), rescue: rescue as *const () }
    }

    /// An empty heap that calls `rescue` when an allocation fails. O(1).
    #[cfg(not(kbuddy_const_mut_refs))]
    pub fn new(rescue: fn(&mut Heap<ORDER>, &Layout)) -> Self {
        LockedHeapWithRescue { inner: Mutex::new(Heap::new()), rescue: rescue as *const () }
    }

    fn rescue(&self) -> fn(&mut Heap<ORDER>, &Layout) {
        // SAFETY: new() stores a fn(&mut Heap<ORDER>, &Layout) here.
        unsafe { core::mem::transmute(self.rescue) }
    }
}

impl<const ORDER: usize> Deref for LockedHeapWithRescue<ORDER> {
    type Target = Mutex<Heap<ORDER>>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

// SAFETY: as for LockedHeap.
unsafe impl<const ORDER: usize> GlobalAlloc for LockedHeapWithRescue<ORDER> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut inner = self.inner.lock();
        match inner.alloc(layout) {
            Ok(p) => p.as_ptr(),
            Err(()) => {
                (self.rescue())(&mut inner, &layout);
                inner.alloc(layout).map_or(ptr::null_mut(), NonNull::as_ptr)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        global_dealloc(&self.inner, ptr, layout)
    }
}
