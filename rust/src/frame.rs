//! The page-frame allocator (`kbuddy_frames`) behind buddy_system_allocator's
//! `FrameAllocator` names.

use crate::error::{Error, OnBadFree};
use crate::ffi;
use core::alloc::Layout;
use core::ffi::c_void;
use core::fmt;
use core::ops::Range;
use core::ptr;

#[cfg(feature = "alloc")]
use alloc::{boxed::Box, vec::Vec};

/// Frame-allocator statistics (`kbuddy_frame_stats`), in frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames added.
    pub total: usize,
    /// Frames allocated.
    pub allocated: usize,
    /// The largest count `alloc_run(count, 1)` can satisfy right now.
    pub largest_free: usize,
}

/// A run of frames reported by [`FrameAllocator::walk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRun {
    /// The first frame number.
    pub first: usize,
    /// How many frames.
    pub count: usize,
    /// Allocated (`true`) or free.
    pub used: bool,
}

/// A buddy allocator of frame numbers: buddy_system_allocator's
/// `FrameAllocator` on kbuddy. Frame numbers are plain `usize`s; the frames'
/// memory is never touched, so it need not be mapped.
///
/// What differs from the original:
/// - **Metadata and a window.** Bookkeeping (about 3 bits per frame) lives
///   in a buffer outside the frames, covering a fixed window of frame
///   numbers `[base, base + count)` chosen when the allocator is made:
///   [`with_meta`](Self::with_meta) or
///   [`from_raw_parts`](Self::from_raw_parts) take both;
///   [`for_range`](Self::for_range) (feature `alloc`) takes the buffer from
///   the global allocator, sized for a range. [`new`](Self::new) (feature
///   `alloc`) makes one without a window that sizes its own at each
///   `add_frame` while no frame is allocated (the boot-time pattern of the
///   original's users); adding frames outside the window once frames are
///   allocated is refused. The original needs no window but a global
///   allocator for its B-trees.
/// - **Exact counts.** `alloc(count)` takes exactly `count` frames (aligned
///   to `count.next_power_of_two()`, as the original's blocks are); the rest
///   of the block stays free, and `dealloc(start, count)` frees exactly
///   those `count` frames. [`dealloc_part`](Self::dealloc_part) gives back
///   any part of an allocation (half of a huge page).
/// - **Merging.** Adjacent ranges added separately merge, and so do the two
///   halves of a top-order block; frame 0 is an ordinary frame.
/// - **Bad frees.** [`try_dealloc`](Self::try_dealloc) refuses frames
///   outside the window or never added (`Foreign`), already free
///   (`DoubleFree`), a start inside an allocation (`BadPointer`) and a
///   count that is not the allocation's (`Size`), with nothing changed;
///   `dealloc` applies an [`OnBadFree`] policy.
/// - `ORDER` is accepted for compatibility and ignored (no block limit).
///
/// ```
/// use kbuddy::FrameAllocator;
///
/// let mut frame = FrameAllocator::<33>::new();
/// assert!(frame.alloc(1).is_none());
///
/// frame.add_frame(0, 3);
/// let num = frame.alloc(1);
/// assert_eq!(num, Some(2));
/// let num = frame.alloc(2);
/// assert_eq!(num, Some(0));
/// ```
pub struct FrameAllocator<const ORDER: usize = 32> {
    raw: ffi::kbuddy_frames,
    /// Whether raw has been set up by kbuddy_frames_init.
    ready: bool,
    /// One bit per frame of the window, set on the first frame of each live
    /// allocation, after the C bookkeeping in the same buffer: what lets
    /// try_dealloc tell an interior or mis-sized free from a partial one
    /// (the C allocator keeps used bits, not allocations).
    starts: *mut u64,
    #[cfg(feature = "alloc")]
    owned: Option<Box<[u64]>>,
    on_bad_free: OnBadFree,
    bad_frees: usize,
}

// SAFETY: the allocator owns (or exclusively borrows, for 'static) its
// metadata; nothing is tied to a thread. No interior mutability: &self
// methods only read.
unsafe impl<const ORDER: usize> Send for FrameAllocator<ORDER> {}
unsafe impl<const ORDER: usize> Sync for FrameAllocator<ORDER> {}

impl<const ORDER: usize> FrameAllocator<ORDER> {
    /// Bytes of metadata a window of `frames` frames needs: kbuddy's
    /// (about 3 bits per frame) plus one bit per frame marking where
    /// allocations start: at most 5 bits per frame from 1024 frames up
    /// (about 4.1 for large windows), and about 100 bytes for a 64-frame
    /// window. O(log frames).
    pub fn meta_size(frames: usize) -> usize {
        // SAFETY: a pure function.
        let c = unsafe { ffi::kbuddy_frames_meta_size(frames) };
        c.saturating_add(7).saturating_add(Self::start_words(frames) * 8)
    }

    fn start_words(frames: usize) -> usize {
        frames / 64 + usize::from(frames % 64 != 0)
    }

    /// Set up raw over [base, base + count) in meta, the start bits after
    /// C's part; the pointer to the start bits.
    unsafe fn init_raw(
        raw: &mut ffi::kbuddy_frames,
        base: usize,
        count: usize,
        meta: *mut u8,
        meta_size: usize,
    ) -> Result<*mut u64, Error> {
        if count == 0 || base.checked_add(count).is_none() {
            return Err(Error::Invalid);
        }
        if meta_size < Self::meta_size(count) {
            return Err(Error::NoMemory);
        }
        let c = ffi::kbuddy_frames_meta_size(count);
        Error::check(ffi::kbuddy_frames_init(raw, base, count, meta.cast(), c))?;
        let at = meta.add(c);
        let starts = at.add(at.align_offset(8)).cast::<u64>();
        ptr::write_bytes(starts, 0, Self::start_words(count));
        Ok(starts)
    }

    /// An allocator without a window: nothing can be allocated until
    /// `add_frame`, which sizes the window and its metadata (from the global
    /// allocator) to cover what is added. O(1).
    #[cfg(feature = "alloc")]
    pub const fn new() -> Self {
        FrameAllocator {
            raw: ffi::kbuddy_frames::ZERO,
            ready: false,
            starts: core::ptr::null_mut(),
            owned: None,
            on_bad_free: OnBadFree::Panic,
            bad_frees: 0,
        }
    }

    /// An allocator over the window `range` of frame numbers, its metadata
    /// ([`meta_size`](Self::meta_size) bytes) from the global allocator and
    /// freed with it. Nothing is free until frames are added. `Invalid` for
    /// an empty range; `NoMemory` if the metadata cannot be allocated.
    /// O(range length / 64).
    #[cfg(feature = "alloc")]
    pub fn for_range(range: Range<usize>) -> Result<Self, Error> {
        let mut fa = Self::new();
        fa.make_window(range.start, range.end)?;
        Ok(fa)
    }

    /// An allocator over frames `[base, base + count)`, its bookkeeping in
    /// `meta`, which must hold at least [`meta_size`](Self::meta_size)`(count)`
    /// bytes (any alignment). `Invalid` for `count == 0` or a wrapping
    /// window; `NoMemory` if `meta` is too small.
    /// O(meta.len() / 8).
    pub fn with_meta(base: usize, count: usize, meta: &'static mut [u8]) -> Result<Self, Error> {
        // SAFETY: a 'static exclusive borrow outlives the allocator.
        unsafe { Self::from_raw_parts(base, count, meta.as_mut_ptr(), meta.len()) }
    }

    /// As [`with_meta`](Self::with_meta), with the metadata as a raw buffer.
    ///
    /// # Safety
    /// `[meta, meta + meta_size)` must be valid for reads and writes, used
    /// by nothing else, and outlive the allocator.
    pub unsafe fn from_raw_parts(
        base: usize,
        count: usize,
        meta: *mut u8,
        meta_size: usize,
    ) -> Result<Self, Error> {
        let mut fa = FrameAllocator {
            raw: ffi::kbuddy_frames::ZERO,
            ready: false,
            starts: core::ptr::null_mut(),
            #[cfg(feature = "alloc")]
            owned: None,
            on_bad_free: OnBadFree::Panic,
            bad_frees: 0,
        };
        fa.starts = Self::init_raw(&mut fa.raw, base, count, meta, meta_size)?;
        fa.ready = true;
        Ok(fa)
    }

    /// The window of frame numbers this allocator can manage (empty before
    /// an allocator made by `new` gets its first frames).
    pub fn window(&self) -> Range<usize> {
        if self.ready {
            self.raw.engine.lo..self.raw.engine.hi
        } else {
            0..0
        }
    }

    /// Replace the window by [start, end) with fresh owned metadata, adding
    /// back every frame the old window had (all free: the caller checked).
    #[cfg(feature = "alloc")]
    fn make_window(&mut self, start: usize, end: usize) -> Result<(), Error> {
        if start >= end {
            return Err(Error::Invalid);
        }
        let mut old_runs: Vec<(usize, usize)> = Vec::new();
        self.walk(|r| {
            if let Some(last) = old_runs.last_mut() {
                if last.0 + last.1 == r.first {
                    last.1 += r.count;
                    return;
                }
            }
            old_runs.push((r.first, r.count));
        });
        let bytes = Self::meta_size(end - start);
        let words = (bytes + 7) / 8;
        let mut meta: Vec<u64> = Vec::new();
        meta.try_reserve_exact(words).map_err(|_| Error::NoMemory)?;
        meta.resize(words, 0);
        let mut meta = meta.into_boxed_slice();
        let mut raw = ffi::kbuddy_frames::ZERO;
        // SAFETY: meta is owned by self from here on; moving the Box does
        // not move its buffer.
        let starts = unsafe {
            Self::init_raw(&mut raw, start, end - start, meta.as_mut_ptr().cast(), bytes)
        }?;
        for (first, count) in old_runs {
            // SAFETY: raw was set up above; the runs lie in the new window.
            Error::check(unsafe { ffi::kbuddy_frames_add(&mut raw, first, count) })?;
        }
        self.raw = raw;
        self.starts = starts;
        self.owned = Some(meta);
        self.ready = true;
        Ok(())
    }

    /// Add frames `[start, end)` (as the original). Ranges may be added in
    /// any order and merge with free frames next to them. O(L + count / 64).
    ///
    /// # Panics
    /// If `start > end` (as the original), or
    /// [`try_add_frame`](Self::try_add_frame) refuses the range.
    pub fn add_frame(&mut self, start: usize, end: usize) {
        assert!(start <= end, "kbuddy: add_frame: start {start} > end {end}");
        if start == end {
            return;
        }
        if let Err(e) = self.try_add_frame(start, end) {
            panic!("kbuddy: add_frame({start}, {end}) refused: {e}");
        }
    }

    /// Add frames `[start, end)`, or say why not: `Invalid` (`start >= end`,
    /// or the range leaves the window and the window cannot grow: frames
    /// are allocated, or the allocator was given its metadata), `Overlap`
    /// (some frame was added before), `NoMemory` (no memory for a larger
    /// window's metadata). A refused call changes nothing.
    pub fn try_add_frame(&mut self, start: usize, end: usize) -> Result<(), Error> {
        if start >= end {
            return Err(Error::Invalid);
        }
        let w = self.window();
        if start < w.start || end > w.end {
            #[cfg(feature = "alloc")]
            if (!self.ready || self.owned.is_some()) && self.raw.allocated == 0 {
                let (lo, hi) = if self.ready {
                    (start.min(w.start), end.max(w.end))
                } else {
                    (start, end)
                };
                self.make_window(lo, hi)?;
            }
            if !self.ready {
                return Err(Error::Invalid);
            }
        }
        // SAFETY: raw is set up (ready); kbuddy checks the range.
        Error::check(unsafe { ffi::kbuddy_frames_add(&mut self.raw, start, end - start) })
    }

    /// Add the frames of `range` (as the original).
    pub fn insert(&mut self, range: Range<usize>) {
        self.add_frame(range.start, range.end);
    }

    /// Allocate `count` frames (0 is taken as 1, as the original does),
    /// aligned to `count.next_power_of_two()`, and return the first. Exactly
    /// `count` frames are taken. `None` when no free block of that size is
    /// left (never while one exists). O(L + count / 64).
    pub fn alloc(&mut self, count: usize) -> Option<usize> {
        let count = count.max(1);
        self.alloc_run(count, count.checked_next_power_of_two()?)
    }

    /// Allocate `layout.size()` frames (at least 1) starting at a multiple
    /// of the larger of `layout.align()` and the size's next power of two
    /// (the original's block), and return the first. O(L + count / 64).
    pub fn alloc_aligned(&mut self, layout: Layout) -> Option<usize> {
        let count = layout.size().max(1);
        self.alloc_run(count, count.checked_next_power_of_two()?.max(layout.align()))
    }

    /// Allocate exactly `count` frames starting at a multiple of `align` (a
    /// power of two), and return the first; `None` for `count == 0`, an
    /// invalid `align`, or when no free naturally aligned block holds both.
    /// O(L + count / 64).
    pub fn alloc_run(&mut self, count: usize, align: usize) -> Option<usize> {
        if !self.ready {
            return None;
        }
        let mut first = 0;
        // SAFETY: raw is set up; first is a valid output.
        let st = unsafe { ffi::kbuddy_frames_alloc(&mut self.raw, count, align, &mut first) };
        if st != ffi::KBUDDY_OK {
            return None;
        }
        let i = first - self.raw.engine.lo;
        // SAFETY: i is inside the window.
        unsafe { bits::set(self.starts, i) };
        Some(first)
    }

    /// Free the allocation of `count` frames at `start` (0 is taken as 1),
    /// as `alloc` returned it. A free [`try_dealloc`](Self::try_dealloc)
    /// refuses changes nothing, is counted, and panics or is ignored as
    /// [`set_on_bad_free`](Self::set_on_bad_free) chose (default: panic).
    /// O(L + count / 64).
    pub fn dealloc(&mut self, start: usize, count: usize) {
        let count = count.max(1);
        if let Err(e) = self.try_dealloc(start, count) {
            self.refused(start, count, e);
        }
    }

    /// Free the frames an `alloc_aligned(layout)` returned.
    pub fn dealloc_aligned(&mut self, start: usize, layout: Layout) {
        self.dealloc(start, layout.size().max(1));
    }

    /// Free the allocation of `count` frames at `start`, or say why not:
    /// `Invalid` (`count == 0`), `Foreign` (a frame outside the window or
    /// never added), `DoubleFree` (a frame already free), `BadPointer`
    /// (`start` is inside an allocation, not its first frame), `Size`
    /// (`count` is not the allocation's: shorter, or running into the next
    /// allocation). A refused call changes nothing. To give back part of an
    /// allocation, use [`try_dealloc_part`](Self::try_dealloc_part).
    /// O(L + count / 64).
    pub fn try_dealloc(&mut self, start: usize, count: usize) -> Result<(), Error> {
        let (a, b) = self.run_in_window(start, count)?;
        let (used, starts) = (self.raw.used as *const u64, self.starts as *const u64);
        // SAFETY: [a, b) lies in the window, which both bitmaps cover.
        let exact = unsafe {
            if !bits::all_set(used, a, b) {
                // Some frame is free or was never added: kbuddy refuses the
                // run, changing nothing, and says which.
                return Error::check(ffi::kbuddy_frames_free(&mut self.raw, start, count));
            }
            if !bits::get(starts, a) {
                return Err(Error::BadPointer);
            }
            let n = self.raw.engine.hi - self.raw.engine.lo;
            // No other allocation starts inside the run, and the frame after
            // it does not continue this one.
            let spans_two = bits::any_set(starts, a + 1, b);
            let continues = b < n && bits::get(used, b) && !bits::get(starts, b);
            !spans_two && !continues
        };
        if !exact {
            return Err(Error::Size);
        }
        // SAFETY: raw is set up; the run is one whole allocation.
        Error::check(unsafe { ffi::kbuddy_frames_free(&mut self.raw, start, count) })?;
        // SAFETY: a is in the window.
        unsafe { bits::clear(self.starts, a) };
        Ok(())
    }

    /// Free frames `[start, start + count)`: any run of allocated frames,
    /// also part of an allocation (half of a huge page) or several whole
    /// ones. What is left of a split allocation is freed later by its own
    /// first frame and count. A refused run (see
    /// [`try_dealloc_part`](Self::try_dealloc_part)) is handled as `dealloc`
    /// handles one. O(L + count / 64).
    pub fn dealloc_part(&mut self, start: usize, count: usize) {
        if let Err(e) = self.try_dealloc_part(start, count) {
            self.refused(start, count, e);
        }
    }

    /// Free frames `[start, start + count)`, any run of allocated frames, or
    /// say why not: `Invalid` (`count == 0`), `Foreign` (a frame outside the
    /// window or never added), `DoubleFree` (a frame already free). A
    /// refused call changes nothing. O(L + count / 64).
    pub fn try_dealloc_part(&mut self, start: usize, count: usize) -> Result<(), Error> {
        let (a, b) = self.run_in_window(start, count)?;
        // SAFETY: raw is set up; kbuddy checks the run.
        Error::check(unsafe { ffi::kbuddy_frames_free(&mut self.raw, start, count) })?;
        let n = self.raw.engine.hi - self.raw.engine.lo;
        // SAFETY: [a, b) lies in the window.
        unsafe {
            // A frame right after the run that is still allocated now starts
            // the rest of its allocation.
            if b < n && bits::get(self.raw.used, b) {
                bits::set(self.starts, b);
            }
            bits::clear_range(self.starts, a, b);
        }
        Ok(())
    }

    /// The run [start, start + count) as window offsets [a, b), or why not.
    fn run_in_window(&self, start: usize, count: usize) -> Result<(usize, usize), Error> {
        if count == 0 {
            return Err(Error::Invalid);
        }
        let w = self.window();
        if start < w.start || start >= w.end || count > w.end - start {
            return Err(Error::Foreign);
        }
        Ok((start - w.start, start - w.start + count))
    }

    fn refused(&mut self, start: usize, count: usize, e: Error) {
        self.bad_frees += 1;
        if self.on_bad_free == OnBadFree::Panic {
            panic!("kbuddy: dealloc of frames {start}..+{count} refused: {e}");
        }
    }

    /// Exact statistics. O(1).
    pub fn stats(&self) -> FrameStats {
        let mut s = ffi::kbuddy_frame_stats::default();
        if self.ready {
            // SAFETY: raw is set up.
            unsafe { ffi::kbuddy_frames_get_stats(&self.raw, &mut s) };
        }
        FrameStats { total: s.total, allocated: s.allocated, largest_free: s.largest_free }
    }

    /// Verify every invariant (`kbuddy_frames_check`). O(window).
    pub fn check(&self) -> Result<(), Error> {
        if !self.ready {
            return Ok(());
        }
        // SAFETY: raw is set up.
        Error::check(unsafe { ffi::kbuddy_frames_check(&self.raw) })?;
        // Every allocation start is an allocated frame.
        let n = self.raw.engine.hi - self.raw.engine.lo;
        for w in 0..Self::start_words(n) {
            // SAFETY: both bitmaps have start_words(n) words.
            let (s, u) = unsafe { (*self.starts.add(w), *self.raw.used.add(w)) };
            if s & !u != 0 {
                return Err(Error::Corrupt);
            }
        }
        Ok(())
    }

    /// Call `f` for every run of free or allocated frames in order (free
    /// runs block by block; never-added frames skipped). `f` must not
    /// panic (it is called from C: a panic aborts). O(window).
    pub fn walk<F: FnMut(FrameRun)>(&self, mut f: F) {
        unsafe extern "C" fn trampoline<F: FnMut(FrameRun)>(
            ctx: *mut c_void,
            first: usize,
            count: usize,
            used: bool,
        ) {
            // SAFETY: ctx is the &mut F passed below, alive for the call.
            let f = &mut *ctx.cast::<F>();
            f(FrameRun { first, count, used });
        }
        if self.ready {
            // SAFETY: raw is set up; f cannot call into the allocator.
            unsafe {
                ffi::kbuddy_frames_walk(&self.raw, trampoline::<F>, (&mut f as *mut F).cast())
            };
        }
    }

    /// Choose what [`dealloc`](Self::dealloc) does with a refused run.
    pub fn set_on_bad_free(&mut self, policy: OnBadFree) {
        self.on_bad_free = policy;
    }

    /// Runs refused by `dealloc` so far.
    pub fn bad_frees(&self) -> usize {
        self.bad_frees
    }
}

#[cfg(feature = "alloc")]
impl<const ORDER: usize> Default for FrameAllocator<ORDER> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const ORDER: usize> fmt::Debug for FrameAllocator<ORDER> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        f.debug_struct("FrameAllocator")
            .field("window", &self.window())
            .field("total", &s.total)
            .field("allocated", &s.allocated)
            .field("largest_free", &s.largest_free)
            .finish()
    }
}

/// Flat bitmaps of u64 words, bit i in word i / 64 at bit i % 64 (the
/// layout of kbuddy's used bits, which the allocator reads).
mod bits {
    pub unsafe fn get(w: *const u64, i: usize) -> bool {
        *w.add(i / 64) >> (i % 64) & 1 != 0
    }
    pub unsafe fn set(w: *mut u64, i: usize) {
        *w.add(i / 64) |= 1 << (i % 64);
    }
    pub unsafe fn clear(w: *mut u64, i: usize) {
        *w.add(i / 64) &= !(1 << (i % 64));
    }
    /// Mask of bits [a, b) within word a / 64, b at most that word's end.
    fn mask(a: usize, b: usize) -> u64 {
        let lo = a % 64;
        let n = b - a;
        (if n >= 64 { !0 } else { (1u64 << n) - 1 }) << lo
    }
    /// Calls f(word index, mask) for the words covering [a, b).
    fn spans(a: usize, b: usize, mut f: impl FnMut(usize, u64) -> bool) -> bool {
        let mut i = a;
        while i < b {
            let end = (i / 64 + 1) * 64;
            let e = if end < b { end } else { b };
            if !f(i / 64, mask(i, e)) {
                return false;
            }
            i = e;
        }
        true
    }
    pub unsafe fn all_set(w: *const u64, a: usize, b: usize) -> bool {
        spans(a, b, |k, m| *w.add(k) & m == m)
    }
    pub unsafe fn any_set(w: *const u64, a: usize, b: usize) -> bool {
        !spans(a, b, |k, m| *w.add(k) & m == 0)
    }
    pub unsafe fn clear_range(w: *mut u64, a: usize, b: usize) {
        spans(a, b, |k, m| {
            *w.add(k) &= !m;
            true
        });
    }
}
