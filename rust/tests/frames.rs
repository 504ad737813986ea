//! FrameAllocator: the original crate's own test cases, and the
//! regressions the C tests cover (top-order merge, frame 0, adjacent adds,
//! exact counts), bad frees, the constructors with metadata and windows.

use core::alloc::Layout;
use kbuddy::{Error, FrameAllocator, FrameRun, FrameStats, OnBadFree};

fn stats(total: usize, allocated: usize, largest_free: usize) -> FrameStats {
    FrameStats { total, allocated, largest_free }
}

// ---- the original crate's tests (src/test.rs and the doc example) ----

#[test]
fn test_empty_frame_allocator() {
    let mut frame = FrameAllocator::<32>::new();
    assert!(frame.alloc(1).is_none());
}

#[test]
fn test_frame_allocator_add() {
    let mut frame = FrameAllocator::<32>::new();
    assert!(frame.alloc(1).is_none());

    frame.insert(0..3);
    let num = frame.alloc(1);
    assert_eq!(num, Some(2));
    let num = frame.alloc(2);
    assert_eq!(num, Some(0));
    assert!(frame.alloc(1).is_none());
    assert!(frame.alloc(2).is_none());
}

#[test]
fn test_frame_allocator_alloc_and_free() {
    let mut frame = FrameAllocator::<32>::new();
    assert!(frame.alloc(1).is_none());

    frame.add_frame(0, 1024);
    for _ in 0..100 {
        let addr = frame.alloc(512).unwrap();
        frame.dealloc(addr, 512);
    }
}

#[test]
fn test_frame_allocator_alloc_and_free_complex() {
    let mut frame = FrameAllocator::<32>::new();
    frame.add_frame(100, 1024);
    for _ in 0..10 {
        let addr = frame.alloc(1).unwrap();
        frame.dealloc(addr, 1);
    }
    let addr1 = frame.alloc(1).unwrap();
    let addr2 = frame.alloc(1).unwrap();
    assert_ne!(addr1, addr2);
}

#[test]
fn doc_example_with_order_33() {
    let mut frame = FrameAllocator::<33>::new();
    assert!(frame.alloc(1).is_none());
    frame.add_frame(0, 3);
    assert_eq!(frame.alloc(1), Some(2));
    assert_eq!(frame.alloc(2), Some(0));
}

// ---- regressions the C tests cover ----

#[test]
fn exact_counts_are_allocated_and_freed() {
    let mut fa = FrameAllocator::<32>::for_range(0..1024).unwrap();
    fa.add_frame(0, 1024);
    let a = fa.alloc(3).unwrap();
    assert_eq!(a % 4, 0, "aligned as the original's block of 4");
    assert_eq!(fa.stats(), stats(1024, 3, 512));
    let b = fa.alloc(5).unwrap();
    assert_eq!(b % 8, 0);
    assert_eq!(fa.stats().allocated, 8);
    // The frame after a 3-frame run is free (the original would have taken 4).
    let runs = walk(&fa);
    assert!(runs.contains(&FrameRun { first: a, count: 3, used: true }), "{runs:?}");
    assert!(runs.iter().any(|r| !r.used && r.first == a + 3));
    // Part of an allocation can be given back, the rest freed as its own.
    fa.dealloc_part(b + 4, 1);
    assert_eq!(fa.stats().allocated, 7);
    assert_eq!(fa.try_dealloc(b, 5), Err(Error::DoubleFree));
    fa.dealloc_part(b, 1); // its head: b + 1 starts what is left
    assert_eq!(fa.try_dealloc(b + 2, 2), Err(Error::BadPointer));
    fa.dealloc(b + 1, 3);
    fa.dealloc(a, 3);
    assert_eq!(fa.stats(), stats(1024, 0, 1024));
    assert_eq!(fa.check(), Ok(()));
}

#[test]
fn top_order_blocks_merge_back() {
    // Two halves of the largest block, freed one frame at a time, merge
    // into it again (the original loses both halves at its top order).
    let mut fa = FrameAllocator::<32>::for_range(0..4096).unwrap();
    fa.add_frame(0, 4096);
    let all: Vec<usize> = (0..4096).map(|_| fa.alloc(1).unwrap()).collect();
    assert!(fa.alloc(1).is_none());
    assert_eq!(fa.stats(), stats(4096, 4096, 0));
    for f in all.iter().rev() {
        fa.dealloc(*f, 1);
    }
    assert_eq!(fa.stats(), stats(4096, 0, 4096));
    assert_eq!(fa.alloc(4096), Some(0));
    fa.dealloc(0, 4096);
    assert_eq!(fa.check(), Ok(()));
}

#[test]
fn frame_zero_is_an_ordinary_frame() {
    let mut fa = FrameAllocator::<32>::new();
    fa.add_frame(0, 1);
    assert_eq!(fa.stats(), stats(1, 0, 1));
    assert_eq!(fa.alloc(1), Some(0));
    assert!(fa.alloc(1).is_none());
    fa.dealloc(0, 1);
    assert_eq!(fa.alloc(1), Some(0));
    assert_eq!(fa.try_dealloc(0, 1), Ok(()));
    assert_eq!(fa.try_dealloc(0, 1), Err(Error::DoubleFree));
}

#[test]
fn adjacent_adds_merge_into_one_block() {
    let mut fa = FrameAllocator::<32>::for_range(0..2048).unwrap();
    fa.add_frame(512, 1024);
    fa.add_frame(0, 512);
    fa.insert(1024..2048);
    assert_eq!(fa.stats(), stats(2048, 0, 2048));
    assert_eq!(fa.alloc(2048), Some(0));
    assert_eq!(fa.check(), Ok(()));
}

#[test]
fn alloc_aligned_takes_the_layouts_alignment() {
    let mut fa = FrameAllocator::<32>::new();
    fa.add_frame(1, 1000);
    let l = Layout::from_size_align(3, 64).unwrap();
    let a = fa.alloc_aligned(l).unwrap();
    assert_eq!(a % 64, 0);
    assert_eq!(fa.stats().allocated, 3);
    let l2 = Layout::from_size_align(5, 1).unwrap();
    let b = fa.alloc_aligned(l2).unwrap();
    assert_eq!(b % 8, 0);
    fa.dealloc_aligned(a, l);
    fa.dealloc_aligned(b, l2);
    assert_eq!(fa.stats().allocated, 0);
    // alloc(0) takes one frame, as the original does.
    let z = fa.alloc(0).unwrap();
    assert_eq!(fa.stats().allocated, 1);
    fa.dealloc(z, 0);
    assert_eq!(fa.stats().allocated, 0);
    assert_eq!(fa.alloc_run(3, 3), None, "align must be a power of two");
    assert_eq!(fa.alloc_run(0, 1), None);
}

// ---- bad frees, constructors, windows ----

fn walk(fa: &FrameAllocator<32>) -> Vec<FrameRun> {
    let mut v = Vec::new();
    fa.walk(|r| v.push(r));
    v
}

#[test]
fn try_dealloc_refuses_foreign_and_double_frees_with_nothing_changed() {
    let mut fa = FrameAllocator::<32>::for_range(100..300).unwrap();
    fa.add_frame(100, 200);
    let a = fa.alloc(4).unwrap();
    let b = fa.alloc(1).unwrap();
    let c = fa.alloc_run(3, 8).unwrap(); // c + 3 is free
    let d = fa.alloc_run(8, 8).unwrap();
    let e = fa.alloc_run(8, 8).unwrap();
    fa.dealloc(b, 1);
    assert_eq!((a % 4, c % 8, d % 8, e % 8), (0, 0, 0, 0));
    let (d, e) = if d < e { (d, e) } else { (e, d) };
    let cases = [
        (50, 1, Error::Foreign),     // below the window
        (299, 2, Error::Foreign),    // leaves the window
        (250, 1, Error::Foreign),    // in the window, never added
        (199, 2, Error::Foreign),    // runs into never-added frames
        (b, 1, Error::DoubleFree),   // already free
        (c, 4, Error::DoubleFree),   // the allocation and a free frame after it
        (a + 1, 3, Error::BadPointer), // interior
        (a + 3, 1, Error::BadPointer),
        (a, 3, Error::Size),         // shorter than the allocation
        (a, 1, Error::Size),
        (a, 0, Error::Invalid),
    ];
    let mut cases = cases.to_vec();
    assert_eq!(e, d + 8, "frame numbers do not depend on addresses");
    cases.push((d, 16, Error::Size)); // two allocations as one
    cases.push((d, 9, Error::Size)); // into the next allocation
    cases.push((d + 4, 8, Error::BadPointer));
    for (start, count, want) in cases {
        let s = fa.stats();
        let w = walk(&fa);
        assert_eq!(fa.try_dealloc(start, count), Err(want), "{start} {count}");
        assert_eq!(fa.stats(), s);
        assert_eq!(walk(&fa), w);
        assert_eq!(fa.check(), Ok(()));
    }
    fa.dealloc(c, 3);
    fa.dealloc(d, 8);
    fa.dealloc(e, 8);
    assert_eq!(Error::Foreign.to_string(), "pointer or frame not managed by this allocator");
    // dealloc: panics by default, or counts and ignores.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fa.dealloc(b, 1)));
    assert!(r.is_err());
    assert_eq!(fa.bad_frees(), 1);
    fa.set_on_bad_free(OnBadFree::Ignore);
    fa.dealloc(b, 1);
    fa.dealloc(5000, 3);
    assert_eq!(fa.bad_frees(), 3);
    assert_eq!(fa.stats().allocated, 4);
    fa.dealloc(a, 4);
    assert_eq!(fa.stats(), stats(100, 0, 64));
}

#[test]
fn with_meta_takes_a_caller_buffer_of_the_stated_size() {
    let need = FrameAllocator::<32>::meta_size(1 << 16);
    // kbuddy's ~3.05 bits per frame and the crate's start bit.
    assert!(need * 8 <= (1 << 16) * 42 / 10 + 4096, "about 4.1 bits per frame: {need}");
    let small: &'static mut [u8] = Box::leak(vec![0u8; need - 1].into_boxed_slice());
    assert!(matches!(FrameAllocator::<32>::with_meta(0x80000, 1 << 16, small), Err(Error::NoMemory)));
    let meta: &'static mut [u8] = Box::leak(vec![0u8; need].into_boxed_slice());
    let mut fa = FrameAllocator::<32>::with_meta(0x80000, 1 << 16, meta).unwrap();
    assert_eq!(fa.window(), 0x80000..0x90000);
    assert_eq!(fa.try_add_frame(0x7ffff, 0x80001), Err(Error::Invalid), "outside a given window");
    fa.add_frame(0x80746, 0x87e00);
    fa.add_frame(0x87e02, 0x88000);
    assert_eq!(fa.stats().total, 30394 + 510);
    let huge = fa.alloc(512).unwrap();
    assert_eq!(huge % 512, 0);
    fa.dealloc_part(huge + 256, 256); // give half of the 2 MiB page back
    assert_eq!(fa.stats().allocated, 256);
    assert_eq!(fa.try_dealloc(huge, 512), Err(Error::DoubleFree));
    fa.dealloc(huge, 256);
    assert_eq!(fa.stats().allocated, 0);
    assert_eq!(fa.check(), Ok(()));
    assert_eq!(fa.try_add_frame(0x80700, 0x80747), Err(Error::Overlap));
    assert!(matches!(FrameAllocator::<32>::for_range(5..5), Err(Error::Invalid)));
}

#[test]
fn new_sizes_its_window_while_nothing_is_allocated() {
    let mut fa = FrameAllocator::<32>::new();
    assert_eq!(fa.window(), 0..0);
    assert_eq!(fa.try_dealloc(3, 1), Err(Error::Foreign));
    fa.add_frame(100, 200);
    assert_eq!(fa.window(), 100..200);
    fa.add_frame(0, 50); // below: the window grows, frames kept
    fa.add_frame(300, 364); // above
    assert_eq!(fa.window(), 0..364);
    assert_eq!(fa.stats(), stats(214, 0, 64));
    assert_eq!(fa.check(), Ok(()));
    let a = fa.alloc(64).unwrap();
    assert_eq!(a, 128, "the only free block of 64 frames");
    // Frames allocated: the window cannot be rebuilt any more.
    assert_eq!(fa.try_add_frame(1000, 1001), Err(Error::Invalid));
    fa.add_frame(200, 300); // inside the window: fine, and it merges
    assert_eq!(fa.stats().total, 314);
    fa.dealloc(a, 64);
    assert_eq!(fa.stats(), stats(314, 0, 128));
    assert_eq!(fa.check(), Ok(()));
    let text = format!("{fa:?}");
    assert_eq!(text, "FrameAllocator { window: 0..364, total: 314, allocated: 0, largest_free: 128 }");
}

#[test]
fn dealloc_part_splits_allocations_and_each_rest_frees_as_its_own() {
    let mut fa = FrameAllocator::<32>::for_range(0..256).unwrap();
    fa.add_frame(0, 256);
    let s = fa.alloc(16).unwrap();
    // The middle of one allocation: two pieces are left.
    fa.dealloc_part(s + 4, 4);
    assert_eq!(fa.stats().allocated, 12);
    assert_eq!(fa.try_dealloc(s, 16), Err(Error::DoubleFree));
    assert_eq!(fa.try_dealloc(s, 8), Err(Error::DoubleFree));
    assert_eq!(fa.try_dealloc(s + 8, 4), Err(Error::Size));
    assert_eq!(fa.check(), Ok(()));
    fa.dealloc(s, 4);
    fa.dealloc(s + 8, 8);
    assert_eq!(fa.stats(), stats(256, 0, 256));
    // Across two allocations: the tail of one and the head of the next.
    let x = fa.alloc(8).unwrap();
    let y = fa.alloc(8).unwrap();
    let (x, y) = if x < y { (x, y) } else { (y, x) };
    assert_eq!(y, x + 8);
    assert_eq!(fa.try_dealloc_part(x + 4, 8), Ok(()));
    assert_eq!(fa.try_dealloc_part(x + 4, 1), Err(Error::DoubleFree));
    assert_eq!(fa.try_dealloc_part(x, 0), Err(Error::Invalid));
    assert_eq!(fa.try_dealloc_part(300, 1), Err(Error::Foreign));
    assert_eq!(fa.try_dealloc(x, 4), Ok(()));
    assert_eq!(fa.try_dealloc(y + 4, 4), Ok(()));
    assert_eq!(fa.stats(), stats(256, 0, 256));
    assert_eq!(fa.check(), Ok(()));
    // A refused part changes nothing and follows the policy.
    fa.set_on_bad_free(OnBadFree::Ignore);
    fa.dealloc_part(0, 1);
    assert_eq!(fa.bad_frees(), 1);
    assert_eq!(fa.stats(), stats(256, 0, 256));
}
