//! The page-frame allocator (`kbuddy_frames`) behind buddy_system_allocator's
//! `FrameAllocator` names.

use crate::error::{Error, OnBadFree};
use crate::ffi;
use core::alloc::Layout;
use core::ffi::c_void;
use core::fmt;
use core::ops::Range;

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
///   of the block stays free. `dealloc(start, count)` frees exactly `count`
///   frames, and may free part of an allocation.
/// - **Merging.** Adjacent ranges added separately merge, and so do the two
///   halves of a top-order block; frame 0 is an ordinary frame.
/// - **Bad frees.** [`try_dealloc`](Self::try_dealloc) refuses runs that
///   leave the window, were never added (`Foreign`) or are already free
///   (`DoubleFree`), with nothing changed; `dealloc` applies an
///   [`OnBadFree`] policy. The frame allocator keeps one used bit per
///   frame, not allocation records, so freeing part of an allocation, or
///   a run spanning two allocations, is accepted.
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
    /// Bytes of metadata a window of `frames` frames needs (at most 4 bits
    /// per frame plus a few hundred bytes). O(log frames).
    pub fn meta_size(frames: usize) -> usize {
        // SAFETY: a pure function.
        unsafe { ffi::kbuddy_frames_meta_size(frames) }
    }

    /// An allocator without a window: nothing can be allocated until
    /// `add_frame`, which sizes the window and its metadata (from the global
    /// allocator) to cover what is added. O(1).
    #[cfg(feature = "alloc")]
    pub const fn new() -> Self {
        FrameAllocator {
            raw: ffi::kbuddy_frames::ZERO,
            ready: false,
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
    /// bytes (8-byte alignment wastes nothing). `Invalid` for `count == 0`
    /// or a wrapping window; `NoMemory` if `meta` is too small.
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
            #[cfg(feature = "alloc")]
            owned: None,
            on_bad_free: OnBadFree::Panic,
            bad_frees: 0,
        };
        Error::check(ffi::kbuddy_frames_init(&mut fa.raw, base, count, meta.cast(), meta_size))?;
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
        Error::check(unsafe {
            ffi::kbuddy_frames_init(&mut raw, start, end - start, meta.as_mut_ptr().cast(), bytes)
        })?;
        for (first, count) in old_runs {
            // SAFETY: raw was set up above; the runs lie in the new window.
            Error::check(unsafe { ffi::kbuddy_frames_add(&mut raw, first, count) })?;
        }
        self.raw = raw;
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
        (st == ffi::KBUDDY_OK).then_some(first)
    }

    /// Free frames `[start, start + count)` (0 is taken as 1). A run
    /// [`try_dealloc`](Self::try_dealloc) refuses changes nothing, is
    /// counted, and panics or is ignored as
    /// [`set_on_bad_free`](Self::set_on_bad_free) chose (default: panic).
    /// O(L + count / 64).
    pub fn dealloc(&mut self, start: usize, count: usize) {
        if let Err(e) = self.try_dealloc(start, count.max(1)) {
            self.bad_frees += 1;
            if self.on_bad_free == OnBadFree::Panic {
                panic!("kbuddy: dealloc of frames {start}..+{count} refused: {e}");
            }
        }
    }

    /// Free the frames an `alloc_aligned(layout)` returned.
    pub fn dealloc_aligned(&mut self, start: usize, layout: Layout) {
        self.dealloc(start, layout.size().max(1));
    }

    /// Free frames `[start, start + count)`, or say why not: `Invalid`
    /// (`count == 0`), `Foreign` (a frame outside the window or never
    /// added), `DoubleFree` (a frame already free). A refused call changes
    /// nothing. Any run of allocated frames is accepted, including part of
    /// an allocation. O(L + count / 64).
    pub fn try_dealloc(&mut self, start: usize, count: usize) -> Result<(), Error> {
        if !self.ready {
            return Err(if count == 0 { Error::Invalid } else { Error::Foreign });
        }
        // SAFETY: raw is set up; kbuddy checks the run.
        Error::check(unsafe { ffi::kbuddy_frames_free(&mut self.raw, start, count) })
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
        Error::check(unsafe { ffi::kbuddy_frames_check(&self.raw) })
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
