//! PerCpuHeap (kbuddy's global allocator with per-CPU caches) as this
//! program's `#[global_allocator]`, fed by `transfer` in a C `main` before
//! anything allocates; threads get CPU numbers through the CPU-id hook.
#![no_main]

use core::alloc::{GlobalAlloc, Layout};
use std::os::raw::{c_char, c_int};
use kbuddy::{Error, Hooks, PerCpuHeap};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[global_allocator]
static HEAP: PerCpuHeap = PerCpuHeap::new();

// Large enough for a panic's backtrace to be symbolised from it.
const HEAP_SIZE: usize = 64 << 20;
static mut HEAP_SPACE: [u8; HEAP_SIZE] = [0; HEAP_SIZE];

static NEXT_CPU: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static CPU: Cell<usize> = const { Cell::new(usize::MAX) };
}
/// A thread's "CPU": a number handed out on its first call. A CPU-id hook
/// must give each concurrently running thread its own number.
fn this_cpu() -> usize {
    CPU.with(|c| {
        if c.get() == usize::MAX {
            c.set(NEXT_CPU.fetch_add(1, Ordering::Relaxed));
        }
        c.get()
    })
}

static BAD: Mutex<Vec<(usize, Error, &'static str)>> = Mutex::new(Vec::new());
fn bad_free(p: *mut u8, e: Error, func: &'static str) {
    BAD.lock().unwrap().push((p as usize, e, func));
}

#[allow(unused_unsafe)] // needed before Rust 1.82, redundant after
fn in_heap(p: *const u8) -> bool {
    let start = unsafe { core::ptr::addr_of!(HEAP_SPACE) } as usize;
    (start..start + HEAP_SIZE).contains(&(p as usize))
}

#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    assert_eq!(HEAP.stats().regions, 0, "nothing before the heap");
    unsafe {
        HEAP.set_hooks(Hooks { cpu_id: Some(this_cpu), bad_free: Some(bad_free), ..Hooks::default() });
        HEAP.transfer(&mut *core::ptr::addr_of_mut!(HEAP_SPACE));
    }
    // The hook records into BAD: give it room now, so that reporting does
    // not allocate while the test compares statistics.
    BAD.lock().unwrap().reserve(16);
    // A failure's message without a backtrace: symbolising one allocates
    // more than this heap holds, and std's allocation-error report would
    // then wait for the backtrace lock the panicking thread holds.
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    let s0 = HEAP.stats();
    assert_eq!((s0.regions, s0.region_bytes, s0.live_blocks), (1, HEAP_SIZE, 1));
    assert_eq!(s0.heap.total + s0.heap.overhead + s0.tag_bytes, HEAP_SIZE);

    // heap_test, on the global allocator.
    let a = Box::new(5);
    assert_eq!(*a, 5);
    assert!(in_heap(&*a));
    drop(a);
    let v: Vec<usize> = (0..500).collect();
    assert!(v.iter().enumerate().all(|(i, x)| i == *x));
    assert!(in_heap(v.as_ptr().cast()));
    drop(v);

    // Every alignment up to 4096, zeroed and reallocated blocks.
    unsafe {
        let mut live = Vec::new();
        for shift in 0..=12 {
            let l = Layout::from_size_align(100 + shift * 300, 1 << shift).unwrap();
            let p = HEAP.alloc_zeroed(l);
            assert!(!p.is_null() && p as usize & (l.align() - 1) == 0 && in_heap(p));
            assert!(std::slice::from_raw_parts(p, l.size()).iter().all(|&b| b == 0));
            assert!(HEAP.usable_size(p) >= l.size());
            p.write_bytes(shift as u8, l.size());
            let q = HEAP.realloc(p, l, l.size() * 2);
            assert!(!q.is_null() && q as usize & (l.align() - 1) == 0);
            assert!(std::slice::from_raw_parts(q, l.size()).iter().all(|&b| b == shift as u8));
            live.push((q, Layout::from_size_align(l.size() * 2, l.align()).unwrap()));
        }
        let s = HEAP.stats();
        assert!(s.live_blocks >= live.len());
        for (p, l) in live {
            HEAP.dealloc(p, l);
        }

        // Bad frees: refused, reported through the hook, nothing changed.
        let l = Layout::from_size_align(48, 8).unwrap();
        let p = HEAP.alloc(l);
        let big = Layout::from_size_align(10000, 8).unwrap();
        let q = HEAP.alloc(big);
        let before = HEAP.stats();
        let local = 0u64;
        HEAP.dealloc(&local as *const u64 as *mut u8, Layout::new::<u64>());
        HEAP.dealloc(q.add(64), big);
        HEAP.dealloc(q, Layout::from_size_align(9999, 8).unwrap());
        let after = HEAP.stats();
        assert_eq!(after.bad_frees, before.bad_frees + 3);
        assert_eq!((after.live_blocks, after.live_bytes), (before.live_blocks, before.live_bytes));
        {
            let bad = BAD.lock().unwrap();
            let got: Vec<(Error, &str)> = bad.iter().map(|b| (b.1, b.2)).collect();
            assert_eq!(
                got,
                [
                    (Error::Foreign, "free_aligned_sized"),
                    (Error::BadPointer, "free_aligned_sized"),
                    (Error::Size, "free_aligned_sized"),
                ]
            );
            assert_eq!(bad[0].0, &local as *const u64 as usize);
        }
        HEAP.dealloc(p, l);
        HEAP.dealloc(q, big);
        HEAP.dealloc(p, l); // a double free of a block sitting in a cache
        assert_eq!(BAD.lock().unwrap().last().map(|b| b.1), Some(Error::DoubleFree));
        BAD.lock().unwrap().clear();
        assert_eq!(HEAP.stats().bad_frees, 4);
    }

    // Threads, each its own CPU through the hook, freeing each other's blocks.
    let handed: Vec<usize> = (0..1000).map(|i| Box::into_raw(Box::new([i as u8; 40])) as usize).collect();
    let handed = std::sync::Arc::new(Mutex::new(handed));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let handed = handed.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..5000usize {
                    let v = vec![t as u8; 1 + (i * 31) % 3000];
                    mine.push(v);
                    if i % 2 == 0 {
                        let v = mine.swap_remove(i % mine.len());
                        assert!(v.iter().all(|&b| b == t as u8));
                    }
                    if i % 10 == 0 {
                        if let Some(p) = handed.lock().unwrap().pop() {
                            drop(unsafe { Box::from_raw(p as *mut [u8; 40]) });
                        }
                    }
                }
                this_cpu()
            })
        })
        .collect();
    let cpus: Vec<usize> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    for p in handed.lock().unwrap().drain(..) {
        drop(unsafe { Box::from_raw(p as *mut [u8; 40]) });
    }
    let mut sorted = cpus.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "each thread had its own CPU number: {cpus:?}");
    assert!(HEAP.stats().caches >= 3);
    assert!(BAD.lock().unwrap().is_empty(), "no bad free in correct code");
    assert_eq!(HEAP.check(), Ok(()));

    // Flushing gives this CPU's cache and the depot back to the core heap.
    let before = HEAP.stats();
    HEAP.flush_caches();
    let s = HEAP.stats();
    assert_eq!(s.depot_blocks, 0);
    assert!(s.cached_blocks <= before.cached_blocks - before.depot_blocks);
    assert_eq!(before.heap.allocated - s.heap.allocated, before.cached_bytes - s.cached_bytes + before.internal_bytes - s.internal_bytes);
    assert_eq!((s.live_blocks, s.live_bytes), (before.live_blocks, before.live_bytes));
    assert_eq!(HEAP.check(), Ok(()));
    println!(
        "percpu_global passed: {} live blocks, {} cached, {} caches, {} bad frees refused",
        s.live_blocks, s.cached_blocks, s.caches, s.bad_frees
    );
    0
}
