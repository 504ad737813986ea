//! Layout-driven tests of Heap, LockedHeap and LockedHeapWithRescue: the
//! original crate's own test cases, every alignment, zero-sized and huge
//! layouts, exact statistics after every step, every bad free refused with
//! nothing changed, the out-of-memory and rescue hooks.

use core::alloc::{GlobalAlloc, Layout};
use core::mem::size_of;
use core::ptr::NonNull;
use kbuddy::{
    Block, Error, Heap, LockedHeap, LockedHeapWithRescue, OnBadFree, Placement, Stats, MIN_BLOCK,
};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A region of `bytes` bytes starting `offset` bytes into an 8-aligned
/// buffer (kept alive by the caller).
fn region(bytes: usize, offset: usize) -> (Vec<u64>, usize, usize) {
    let buf = vec![0u64; (bytes + offset + 7) / 8 + 1];
    let start = buf.as_ptr() as usize + offset;
    (buf, start, start + bytes)
}

/// Static memory for handlers (which are plain fns), without `static mut`.
struct Space<const N: usize>(core::cell::UnsafeCell<[u64; N]>);
unsafe impl<const N: usize> Sync for Space<N> {}
impl<const N: usize> Space<N> {
    const fn new() -> Self {
        Space(core::cell::UnsafeCell::new([0; N]))
    }
    fn start(&self) -> usize {
        self.0.get() as usize
    }
}

fn heap_of(bytes: usize) -> (Vec<u64>, Heap<32>) {
    let (buf, start, end) = region(bytes, 0);
    let mut heap = Heap::<32>::new();
    unsafe { heap.add_to_heap(start, end) };
    (buf, heap)
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn rounded(size: usize) -> usize {
    (size.max(1) + MIN_BLOCK - 1) / MIN_BLOCK * MIN_BLOCK
}

fn blocks(heap: &Heap<32>) -> Vec<Block> {
    let mut v = Vec::new();
    heap.walk(|b| v.push(b));
    v
}

// ---- the original crate's tests (src/test.rs), unchanged but for names ----

#[test]
fn test_empty_heap() {
    let mut heap = Heap::<32>::new();
    assert!(heap.alloc(Layout::from_size_align(1, 1).unwrap()).is_err());
}

#[test]
fn test_heap_add() {
    let mut heap = Heap::<32>::new();
    assert!(heap.alloc(Layout::from_size_align(1, 1).unwrap()).is_err());

    let space: [usize; 100] = [0; 100];
    unsafe {
        heap.add_to_heap(space.as_ptr() as usize, space.as_ptr().add(100) as usize);
    }
    let addr = heap.alloc(Layout::from_size_align(1, 1).unwrap());
    assert!(addr.is_ok());
}

#[test]
fn test_heap_oom() {
    let mut heap = Heap::<32>::new();
    let space: [usize; 100] = [0; 100];
    unsafe {
        heap.add_to_heap(space.as_ptr() as usize, space.as_ptr().add(100) as usize);
    }

    assert!(heap.alloc(Layout::from_size_align(100 * size_of::<usize>(), 1).unwrap()).is_err());
    assert!(heap.alloc(Layout::from_size_align(1, 1).unwrap()).is_ok());
}

#[test]
fn test_heap_oom_rescue() {
    static mut SPACE: [usize; 100] = [0; 100];
    let heap = LockedHeapWithRescue::new(|heap: &mut Heap<32>, _layout: &Layout| unsafe {
        let start = core::ptr::addr_of_mut!(SPACE) as usize;
        heap.add_to_heap(start, start + 100 * size_of::<usize>());
    });

    unsafe {
        assert!(heap.alloc(Layout::from_size_align(1, 1).unwrap()) as usize != 0);
    }
}

#[test]
fn test_heap_alloc_and_free() {
    let mut heap = Heap::<32>::new();
    assert!(heap.alloc(Layout::from_size_align(1, 1).unwrap()).is_err());

    let space: [usize; 100] = [0; 100];
    unsafe {
        heap.add_to_heap(space.as_ptr() as usize, space.as_ptr().add(100) as usize);
    }
    for _ in 0..100 {
        let addr = heap.alloc(Layout::from_size_align(1, 1).unwrap()).unwrap();
        heap.dealloc(addr, Layout::from_size_align(1, 1).unwrap());
    }
}

// ---- beyond the original ----

#[test]
fn empty_heap_answers_every_call() {
    let mut heap = Heap::<32>::empty();
    assert_eq!(heap.stats(), Stats::default());
    assert_eq!(heap.check(), Ok(()));
    assert!(blocks(&heap).is_empty());
    let x = 0u64;
    let p = NonNull::from(&x).cast::<u8>();
    assert_eq!(heap.try_dealloc(p, layout(8, 8)), Err(Error::Foreign));
    assert_eq!(heap.usable_size(p.as_ptr()), 0);
    assert_eq!((heap.stats_alloc_user(), heap.stats_alloc_actual(), heap.stats_total_bytes()), (0, 0, 0));
    heap.set_on_bad_free(OnBadFree::Ignore);
    heap.dealloc(p, layout(8, 8));
    assert_eq!(heap.bad_frees(), 1);
}

#[test]
fn init_and_add_to_heap_take_any_alignment_and_count_every_byte() {
    let mut heap = Heap::<32>::new();
    let mut bufs = Vec::new();
    let mut given = 0;
    for (i, (bytes, offset)) in [(4096, 1), (10000, 3), (777, 5), (65536, 7)].into_iter().enumerate() {
        let (buf, start, end) = region(bytes, offset);
        if i % 2 == 0 {
            unsafe { heap.init(start, bytes) };
        } else {
            unsafe { heap.add_to_heap(start, end) };
        }
        bufs.push(buf);
        given += bytes;
        let s = heap.stats();
        assert_eq!(s.regions, i + 1);
        assert_eq!(s.total + s.overhead, given, "every byte is total or overhead");
        assert_eq!(s.total % MIN_BLOCK, 0);
        assert_eq!(heap.check(), Ok(()));
    }
    // The walk covers exactly the total, all free.
    let b = blocks(&heap);
    assert!(b.iter().all(|b| !b.used));
    assert_eq!(b.iter().map(|b| b.size).sum::<usize>(), heap.stats_total_bytes());
    // Empty range: nothing; start > end: panics like the original.
    let before = heap.stats();
    unsafe { heap.add_to_heap(bufs[0].as_ptr() as usize, bufs[0].as_ptr() as usize) };
    assert_eq!(heap.stats(), before);
}

#[test]
#[should_panic(expected = "start")]
fn add_to_heap_with_start_after_end_panics() {
    let mut heap = Heap::<32>::new();
    unsafe { heap.add_to_heap(0x2000, 0x1000) };
}

#[test]
fn try_add_to_heap_reports_each_refusal_and_changes_nothing() {
    let (buf, start, end) = region(8192, 0);
    let mut heap = Heap::<32>::new();
    assert_eq!(unsafe { heap.try_add_to_heap(start, end) }, Ok(()));
    let s = heap.stats();
    let mem: Vec<u64> = buf.clone();
    assert_eq!(unsafe { heap.try_add_to_heap(start + 100, end + 100) }, Err(Error::Overlap));
    assert_eq!(unsafe { heap.try_add_to_heap(end, end) }, Err(Error::Invalid));
    assert_eq!(unsafe { heap.try_add_to_heap(end, start) }, Err(Error::Invalid));
    assert_eq!(unsafe { heap.try_add_to_heap(0, 4096) }, Err(Error::Invalid));
    let (_tiny, ts, _) = region(64, 0);
    assert_eq!(unsafe { heap.try_add_to_heap(ts, ts + 64) }, Err(Error::NoMemory));
    // add_to_heap ignores a range too small to use (as the original
    // ignores what it cannot align), and panics on an overlap.
    unsafe { heap.add_to_heap(ts, ts + 64) };
    assert_eq!(heap.stats(), s);
    assert_eq!(buf, mem, "the region's bytes are untouched");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
        heap.add_to_heap(start, end)
    }));
    assert!(r.is_err());
    assert_eq!(heap.stats(), s);
    assert_eq!(heap.check(), Ok(()));
}

#[test]
fn every_alignment_up_to_4096_with_exact_statistics() {
    let (_buf, mut heap) = heap_of(1 << 20);
    let total = heap.stats_total_bytes();
    let mut live: Vec<(NonNull<u8>, Layout)> = Vec::new();
    let (mut user, mut actual) = (0, 0);
    for shift in 0..=12 {
        let align = 1usize << shift;
        for size in [0, 1, align.saturating_sub(1), align, align + 1, 100, 4096, 5000] {
            let l = layout(size, align);
            let p = heap.alloc(l).unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0, "size {size} align {align}");
            assert_eq!(p.as_ptr() as usize % MIN_BLOCK, 0);
            user += size;
            actual += rounded(size);
            assert_eq!(heap.usable_size(p.as_ptr()), rounded(size));
            unsafe { p.as_ptr().write_bytes(0xA5, size) };
            let s = heap.stats();
            assert_eq!((s.user, s.allocated, s.total), (user, actual, total));
            assert_eq!((heap.stats_alloc_user(), heap.stats_alloc_actual()), (user, actual));
            assert_eq!(s.allocations, live.len() + 1);
            live.push((p, l));
        }
    }
    assert_eq!(heap.check(), Ok(()));
    // Used blocks of the walk are exactly the live allocations.
    let used: Vec<(usize, usize)> = blocks(&heap).iter().filter(|b| b.used).map(|b| (b.start, b.size)).collect();
    let mut want: Vec<(usize, usize)> = live.iter().map(|(p, l)| (p.as_ptr() as usize, rounded(l.size()))).collect();
    want.sort();
    assert_eq!(used, want);
    // Free in an order unlike allocation's, statistics exact at each step.
    let n = live.len();
    for i in 0..n {
        let (p, l) = live.swap_remove((i * 7) % live.len());
        assert!(unsafe { std::slice::from_raw_parts(p.as_ptr(), l.size()) }.iter().all(|&b| b == 0xA5));
        heap.dealloc(p, l);
        user -= l.size();
        actual -= rounded(l.size());
        let s = heap.stats();
        assert_eq!((s.user, s.allocated, s.allocations), (user, actual, live.len()));
    }
    assert_eq!(heap.stats().largest_free, heap.stats().largest_free.next_power_of_two());
    assert_eq!(heap.check(), Ok(()));
}

#[test]
fn zero_sized_layouts_get_distinct_minimum_blocks() {
    let (_buf, mut heap) = heap_of(8192);
    let a = heap.alloc(layout(0, 1)).unwrap();
    let b = heap.alloc(layout(0, 1)).unwrap();
    let c = heap.alloc(layout(0, 256)).unwrap();
    assert_ne!(a, b);
    assert_eq!(c.as_ptr() as usize % 256, 0);
    let s = heap.stats();
    assert_eq!((s.user, s.allocated, s.allocations), (0, 3 * MIN_BLOCK, 3));
    assert_eq!(heap.try_dealloc(a, layout(1, 1)), Err(Error::Size));
    heap.dealloc(a, layout(0, 1));
    heap.dealloc(b, layout(0, 1));
    heap.dealloc(c, layout(0, 256));
    assert_eq!(heap.stats().allocated, 0);
}

#[test]
fn huge_layouts_fail_and_change_nothing() {
    let (_buf, mut heap) = heap_of(1 << 16);
    let s = heap.stats();
    for l in [
        layout(isize::MAX as usize, 1),
        layout(isize::MAX as usize - 4095, 4096),
        layout(1 << 40, 8),
        layout(s.total + 1, 1),
        layout(s.largest_free + 1, 1),
        layout(8, 1 << 30),
        layout(0, 1 << 62),
    ] {
        assert_eq!(heap.alloc(l), Err(()), "{l:?}");
        assert_eq!(heap.stats(), s);
    }
    // The largest free size is exact: it fits, and then nothing larger.
    let p = heap.alloc(layout(s.largest_free, 1)).unwrap();
    assert_eq!(heap.stats().allocated, s.largest_free);
    heap.dealloc(p, layout(s.largest_free, 1));
    assert_eq!(heap.stats(), s);
}

#[test]
fn try_dealloc_refuses_each_bad_free_with_nothing_changed() {
    let (buf, mut heap) = heap_of(1 << 16);
    let lp = layout(100, 8);
    let lq = layout(300, 64);
    let p = heap.alloc(lp).unwrap();
    let q = heap.alloc(lq).unwrap();
    let freed = heap.alloc(layout(40, 8)).unwrap();
    heap.dealloc(freed, layout(40, 8));
    let local = 0u64;
    let cases: [(NonNull<u8>, Layout, Error); 7] = [
        (NonNull::from(&local).cast(), layout(8, 8), Error::Foreign),
        (unsafe { NonNull::new_unchecked(q.as_ptr().add(64)) }, lq, Error::BadPointer),
        (unsafe { NonNull::new_unchecked(p.as_ptr().add(1)) }, lp, Error::BadPointer),
        (NonNull::new(buf.as_ptr() as *mut u8).unwrap(), lp, Error::BadPointer),
        (freed, layout(40, 8), Error::DoubleFree),
        (q, layout(299, 64), Error::Size),
        (p, layout(100, 1 << 20), Error::Size),
    ];
    for (ptr, l, want) in cases {
        let s = heap.stats();
        let walk = blocks(&heap);
        let mem = buf.clone();
        assert_eq!(heap.try_dealloc(ptr, l), Err(want), "{ptr:?} {l:?}");
        assert_eq!(heap.stats(), s);
        assert_eq!(blocks(&heap), walk);
        assert!(buf == mem, "no byte of the region changed");
        assert_eq!(heap.check(), Ok(()));
    }
    // Error texts are kbuddy_strerror's.
    assert_eq!(Error::DoubleFree.to_string(), "double free");
    assert_eq!(Error::Foreign.to_string(), "pointer or frame not managed by this allocator");
    assert_eq!(Error::DoubleFree.status(), 6);
    assert_eq!(format!("{:?}", Error::Size), "Size");
    heap.dealloc(p, lp);
    heap.dealloc(q, lq);
    assert_eq!(heap.try_dealloc(p, lp), Err(Error::DoubleFree));
    assert_eq!(heap.stats().allocations, 0);
}

#[test]
fn dealloc_panics_on_a_bad_free_by_default_and_changes_nothing() {
    let (_buf, mut heap) = heap_of(1 << 14);
    let p = heap.alloc(layout(64, 8)).unwrap();
    let s = heap.stats();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        heap.dealloc(p, layout(65, 8));
    }));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    let want = format!(
        "kbuddy: dealloc({:#x}, size 65, align 8) refused: size or alignment does not match the allocation",
        p.as_ptr() as usize
    );
    assert_eq!(msg, want);
    assert_eq!(heap.stats(), s);
    assert_eq!(heap.bad_frees(), 1);
    heap.dealloc(p, layout(64, 8));
    assert_eq!(heap.stats().allocations, 0);
}

#[test]
fn dealloc_can_count_and_ignore_bad_frees() {
    let (_buf, mut heap) = heap_of(1 << 14);
    heap.set_on_bad_free(OnBadFree::Ignore);
    let p = heap.alloc(layout(64, 8)).unwrap();
    heap.dealloc(p, layout(64, 8));
    let s = heap.stats();
    heap.dealloc(p, layout(64, 8)); // double
    heap.dealloc(NonNull::from(&s).cast(), layout(8, 8)); // foreign
    assert_eq!(heap.bad_frees(), 2);
    assert_eq!(heap.stats(), s);
    assert_eq!(heap.check(), Ok(()));
}

#[test]
fn a_moved_heap_keeps_working() {
    fn make(buf: &mut [u64]) -> Heap<32> {
        let mut heap = Heap::<32>::new();
        let start = buf.as_mut_ptr() as usize;
        unsafe { heap.init(start, buf.len() * 8) };
        heap
    }
    let mut buf = vec![0u64; 4096];
    let mut heap = make(&mut buf); // moved out of make()
    let p = heap.alloc(layout(1000, 8)).unwrap();
    let mut boxed = Box::new(heap); // moved again
    assert_eq!(boxed.check(), Ok(()));
    let q = boxed.alloc(layout(3000, 8)).unwrap();
    boxed.dealloc(p, layout(1000, 8));
    let heap = *boxed; // and again
    let mut heap2 = heap;
    assert_eq!(heap2.check(), Ok(()));
    heap2.dealloc(q, layout(3000, 8));
    let s = heap2.stats();
    assert_eq!((s.allocated, s.allocations), (0, 0));
    assert_eq!(s.largest_free, s.largest_free.next_power_of_two());
    assert_eq!(heap2.check(), Ok(()));
}

#[test]
fn oom_handler_adds_a_region_and_the_allocation_is_retried() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    // 128 KiB: whatever its address, it holds an aligned 32 KiB block
    // for the 20000-byte request after its bookkeeping.
    static SPACE: Space<16384> = Space::new();
    static LAST: AtomicUsize = AtomicUsize::new(0);
    fn grow(heap: &mut Heap<32>, layout: &Layout) -> bool {
        LAST.store(layout.size(), Ordering::Relaxed);
        if CALLS.fetch_add(1, Ordering::Relaxed) > 0 {
            return false;
        }
        let start = SPACE.start();
        unsafe { heap.add_to_heap(start, start + 131072) };
        true
    }
    let (_buf, mut heap) = heap_of(8192);
    heap.set_oom_handler(Some(grow));
    let p = heap.alloc(layout(20000, 8)).unwrap();
    assert_eq!(CALLS.load(Ordering::Relaxed), 1);
    assert_eq!(LAST.load(Ordering::Relaxed), 20000);
    assert_eq!(heap.stats().regions, 2);
    let start = SPACE.start();
    assert!((start..start + 131072).contains(&(p.as_ptr() as usize)));
    // A request larger than every region: the handler declines, it fails.
    assert!(heap.alloc(layout(200000, 8)).is_err());
    assert_eq!(CALLS.load(Ordering::Relaxed), 2);
    assert_eq!(LAST.load(Ordering::Relaxed), 200000);
    heap.set_oom_handler(None);
    assert!(heap.alloc(layout(200000, 8)).is_err());
    assert_eq!(CALLS.load(Ordering::Relaxed), 2);
    heap.dealloc(p, layout(20000, 8));
}

#[test]
fn rescue_runs_once_with_the_lock_held_then_the_allocation_is_retried() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static SPACE: Space<1024> = Space::new();
    static LAST: AtomicUsize = AtomicUsize::new(0);
    static HEAP_AT: AtomicUsize = AtomicUsize::new(0);
    fn rescue(heap: &mut Heap<32>, layout: &Layout) {
        // With the lock held: the heap is locked while the rescue runs.
        let locked = unsafe { &*(HEAP_AT.load(Ordering::Relaxed) as *const LockedHeapWithRescue<32>) };
        assert!(locked.is_locked());
        LAST.store(layout.size(), Ordering::Relaxed);
        if CALLS.fetch_add(1, Ordering::Relaxed) == 0 {
            let start = SPACE.start();
            unsafe { heap.add_to_heap(start, start + 8192) };
        }
    }
    let heap = LockedHeapWithRescue::<32>::new(rescue);
    HEAP_AT.store(&heap as *const _ as usize, Ordering::Relaxed);
    #[allow(non_snake_case)]
    let HEAP = &heap;
    let l = layout(500, 16);
    let p = unsafe { HEAP.alloc(l) };
    assert!(!p.is_null());
    assert_eq!(CALLS.load(Ordering::Relaxed), 1);
    assert_eq!(LAST.load(Ordering::Relaxed), 500);
    assert_eq!(HEAP.lock().stats().regions, 1);
    assert_eq!(HEAP.lock().stats_alloc_user(), 500);
    // Memory left: no rescue.
    let p2 = unsafe { HEAP.alloc(l) };
    assert!(!p2.is_null());
    assert_eq!(CALLS.load(Ordering::Relaxed), 1);
    // Too large for the region: the rescue runs once more, adds nothing,
    // the retry fails and null comes back (no panic, as the original).
    let big = layout(1 << 20, 8);
    assert!(unsafe { HEAP.alloc(big) }.is_null());
    assert_eq!(CALLS.load(Ordering::Relaxed), 2);
    assert_eq!(LAST.load(Ordering::Relaxed), 1 << 20);
    unsafe {
        HEAP.dealloc(p, l);
        HEAP.dealloc(p2, l);
    }
    assert_eq!(HEAP.lock().stats().allocations, 0);
}

#[test]
fn locked_heap_as_global_alloc_allocs_reallocs_and_refuses() {
    static HEAP: LockedHeap<32> = LockedHeap::empty();
    let (_buf, start, end) = region(1 << 16, 0);
    unsafe { HEAP.lock().add_to_heap(start, end) };
    unsafe {
        let l = layout(1000, 8);
        let p = HEAP.alloc(l);
        assert!(!p.is_null());
        p.write_bytes(7, 100);
        // Shrinks in place, giving the tail back; grows back into it.
        let small = HEAP.realloc(p, l, 100);
        assert_eq!(small, p);
        assert_eq!(HEAP.lock().stats_alloc_user(), 100);
        assert_eq!(HEAP.lock().stats_alloc_actual(), rounded(100));
        let q = HEAP.realloc(p, layout(100, 8), 1000);
        assert_eq!(q, p);
        assert_eq!(HEAP.lock().stats_alloc_user(), 1000);
        let r = HEAP.alloc(layout(10, 1));
        // Must move now that r follows it; the contents come along.
        let q2 = HEAP.realloc(q, layout(1000, 8), 3000);
        assert!(!q2.is_null());
        assert!(std::slice::from_raw_parts(q2, 100).iter().all(|&b| b == 7));
        assert_eq!(HEAP.lock().stats().allocations, 2);
        HEAP.dealloc(q2, layout(3000, 8));
        HEAP.dealloc(r, layout(10, 1));
        // With the Ignore policy, bad frees and reallocs are counted.
        HEAP.lock().set_on_bad_free(OnBadFree::Ignore);
        let s = HEAP.lock().stats();
        HEAP.dealloc(r, layout(10, 1));
        assert!(HEAP.realloc(r, layout(10, 1), 20).is_null());
        assert_eq!(HEAP.lock().bad_frees(), 2);
        assert_eq!(HEAP.lock().stats(), s);
        assert_eq!(s.allocations, 0);
        assert_eq!(HEAP.lock().check(), Ok(()));
    }
}

#[test]
fn locked_heap_is_shared_by_threads() {
    static HEAP: LockedHeap<32> = LockedHeap::new();
    // Room for every thread's live blocks at once (about 0.5 MiB each).
    let (_buf, start, end) = region(8 << 20, 0);
    unsafe { HEAP.lock().add_to_heap(start, end) };
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut live = Vec::new();
                for i in 0..2000usize {
                    let l = layout(1 + (i * 37 + t) % 700, 1 << (i % 7));
                    let p = unsafe { HEAP.alloc(l) };
                    assert!(!p.is_null());
                    unsafe { p.write_bytes(t as u8, l.size()) };
                    live.push((p as usize, l));
                    if i % 3 == 0 {
                        let (p, l) = live.swap_remove(i % live.len());
                        let p = p as *mut u8;
                        assert!(unsafe { std::slice::from_raw_parts(p, l.size()) }.iter().all(|&b| b == t as u8));
                        unsafe { HEAP.dealloc(p, l) };
                    }
                }
                for (p, l) in live {
                    unsafe { HEAP.dealloc(p as *mut u8, l) };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = HEAP.lock().stats();
    assert_eq!((s.allocated, s.user, s.allocations), (0, 0, 0));
    assert_eq!(HEAP.lock().check(), Ok(()));
}

#[test]
fn stats_has_all_seven_fields_and_debug_shows_them() {
    let (_buf, mut heap) = heap_of(1 << 16);
    let p = heap.alloc(layout(33, 1)).unwrap();
    let s = heap.stats();
    assert_eq!(s.user, 33);
    assert_eq!(s.allocated, rounded(33));
    assert_eq!(s.allocations, 1);
    assert_eq!(s.regions, 1);
    assert_eq!(s.total + s.overhead, 1 << 16);
    assert!(s.largest_free >= s.total / 4 && s.largest_free < s.total);
    let text = format!("{heap:?}");
    let want = format!("Heap {{ user: 33, allocated: {}, total: {}, largest_free: {}, regions: 1 }}", s.allocated, s.total, s.largest_free);
    assert_eq!(text, want);
    heap.dealloc(p, layout(33, 1));
}

#[test]
fn fast_placement_takes_the_lowest_block_and_keeps_exact_stats() {
    // Two 100-byte blocks, the first freed: dense placement may start a
    // 200-byte request in the free run before a block; fast placement takes
    // the lowest free block of the smallest sufficient order. Either way the
    // statistics are exact and everything merges back.
    for placement in [Placement::Dense, Placement::Fast] {
        let (_buf, mut heap) = heap_of(1 << 20);
        heap.set_placement(placement);
        let fresh = heap.stats();
        let mut live = Vec::new();
        for i in 1..200usize {
            let l = layout(i * 37 % 3000 + 1, 1 << (i % 8));
            let p = heap.alloc(l).unwrap();
            assert_eq!(p.as_ptr() as usize % l.align(), 0);
            live.push((p, l));
        }
        let st = heap.stats();
        assert_eq!(st.allocations, 199);
        assert_eq!(st.allocated, live.iter().map(|(_, l)| rounded(l.size())).sum::<usize>());
        heap.check().unwrap();
        for (p, l) in live {
            heap.try_dealloc(p, l).unwrap();
        }
        heap.check().unwrap();
        assert_eq!(heap.stats(), fresh);
    }
}
