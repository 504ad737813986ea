//! The rCore tutorial's `heap_test`, with `LockedHeap<32>` as this
//! program's `#[global_allocator]`. `#![no_main]` with a C `main`: as in a
//! kernel, nothing allocates before the heap is initialised (an allocation
//! before `init_heap` would find the heap empty and abort the program).
#![no_main]

use std::os::raw::{c_char, c_int};
use kbuddy::LockedHeap;

#[global_allocator]
static HEAP_ALLOCATOR: LockedHeap<32> = LockedHeap::empty();

const KERNEL_HEAP_SIZE: usize = 0x30_0000;
static mut HEAP_SPACE: [u8; KERNEL_HEAP_SIZE] = [0; KERNEL_HEAP_SIZE];

#[allow(unused_unsafe)] // needed before Rust 1.82, redundant after
fn heap_range() -> core::ops::Range<usize> {
    let start = unsafe { core::ptr::addr_of!(HEAP_SPACE) } as usize;
    start..start + KERNEL_HEAP_SIZE
}

pub fn init_heap() {
    unsafe {
        HEAP_ALLOCATOR
            .lock()
            .init(core::ptr::addr_of_mut!(HEAP_SPACE) as usize, KERNEL_HEAP_SIZE);
    }
}

pub fn heap_test() {
    let bss_range = heap_range();
    let a = Box::new(5);
    assert_eq!(*a, 5);
    assert!(bss_range.contains(&(a.as_ref() as *const _ as usize)));
    drop(a);
    let mut v: Vec<usize> = Vec::new();
    for i in 0..500 {
        v.push(i);
    }
    for (i, x) in v.iter().enumerate() {
        assert_eq!(*x, i);
    }
    assert!(bss_range.contains(&(v.as_ptr() as usize)));
    drop(v);
}

#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    // Nothing was allocated before the heap existed: it is empty.
    let before = HEAP_ALLOCATOR.lock().stats();
    assert_eq!(before, kbuddy::Stats::default());
    init_heap();
    // A failure's message without a backtrace: symbolising one allocates
    // more than this heap holds, and std's allocation-error report would
    // then wait for the backtrace lock the panicking thread holds.
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    let s = HEAP_ALLOCATOR.lock().stats();
    assert_eq!((s.regions, s.allocations, s.allocated, s.user), (1, 0, 0, 0));
    assert_eq!(s.total + s.overhead, KERNEL_HEAP_SIZE);
    // Bookkeeping: 3.9% of a region with 32-byte blocks, 7.8% with 16.
    let most = if kbuddy::MIN_BLOCK == 32 { 5 } else { 9 };
    assert!(s.total > KERNEL_HEAP_SIZE / 100 * (100 - most), "bookkeeping under {most}%");

    heap_test();
    // Every allocation of heap_test was given back exactly.
    let after = HEAP_ALLOCATOR.lock().stats();
    assert_eq!(after, s);
    assert_eq!(HEAP_ALLOCATOR.lock().check(), Ok(()));

    // Vec grows and shrinks through the heap's realloc: contents kept,
    // statistics exact, and in place when the memory after the block is
    // free (shrinking gives the tail back, so growing again reuses it).
    let mut v: Vec<u64> = Vec::with_capacity(4);
    for i in 0..1000 {
        v.push(i);
    }
    assert!(v.iter().enumerate().all(|(i, x)| *x == i as u64));
    assert!(heap_range().contains(&(v.as_ptr() as usize)));
    let s2 = HEAP_ALLOCATOR.lock().stats();
    assert_eq!((s2.allocations, s2.user), (1, v.capacity() * 8));
    let block = v.as_ptr();
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v.as_ptr(), block, "shrinks in place");
    assert_eq!(HEAP_ALLOCATOR.lock().stats().user, 80);
    v.reserve_exact(990);
    assert_eq!(v.as_ptr(), block, "grows back in place");
    assert_eq!(HEAP_ALLOCATOR.lock().stats().user, 8000);
    assert!(v.iter().enumerate().all(|(i, x)| *x == i as u64));
    drop(v);
    assert_eq!(HEAP_ALLOCATOR.lock().stats(), s);

    println!("heap_test passed!");
    0
}
