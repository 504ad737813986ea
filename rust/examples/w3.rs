//! Workload W3 of bench-workloads.md through the crate's types, for
//! callgrind: `valgrind --tool=callgrind --toggle-collect='*bench_loop_<name>*'
//! target/release/examples/w3 <name> [ops]`, with <name> one of heap (a
//! `Heap` used directly), locked (`LockedHeap` through `GlobalAlloc`),
//! percpu (`PerCpuHeap` through `GlobalAlloc`) and noop (the same loop
//! without an allocator, to subtract). Seed 42, 10,000 slots: slot = r %
//! 10000; an occupied slot is freed, an empty one gets 1 + r2 % 4096 bytes
//! aligned to 8.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use kbuddy::{Heap, LockedHeap, PerCpuHeap};

const SLOTS: usize = 10_000;
const REGION: usize = 64 << 20;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn layout_for(r: u64) -> Layout {
    Layout::from_size_align(1 + (r % 4096) as usize, 8).unwrap()
}

#[inline(never)]
fn bench_loop_heap(heap: &mut Heap<32>, ops: usize, slots: &mut [Option<(NonNull<u8>, Layout)>]) {
    let mut rng = Rng(42);
    for _ in 0..ops {
        let r = rng.next();
        let s = (r % SLOTS as u64) as usize;
        match slots[s].take() {
            Some((p, l)) => heap.dealloc(p, l),
            None => {
                let l = layout_for(rng.next());
                slots[s] = heap.alloc(l).ok().map(|p| (p, l));
            }
        }
    }
}

#[inline(never)]
fn bench_loop_global(a: &dyn GlobalAlloc, ops: usize, slots: &mut [Option<(NonNull<u8>, Layout)>]) {
    let mut rng = Rng(42);
    for _ in 0..ops {
        let r = rng.next();
        let s = (r % SLOTS as u64) as usize;
        match slots[s].take() {
            Some((p, l)) => unsafe { a.dealloc(p.as_ptr(), l) },
            None => {
                let l = layout_for(rng.next());
                slots[s] = NonNull::new(unsafe { a.alloc(l) }).map(|p| (p, l));
            }
        }
    }
}

struct Noop;
unsafe impl GlobalAlloc for Noop {
    // Called through `dyn GlobalAlloc`, so nothing is optimised away.
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        NonNull::<u64>::dangling().as_ptr().cast()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

#[inline(never)]
fn bench_loop_locked(a: &dyn GlobalAlloc, ops: usize, slots: &mut [Option<(NonNull<u8>, Layout)>]) {
    bench_loop_global(a, ops, slots)
}
#[inline(never)]
fn bench_loop_percpu(a: &dyn GlobalAlloc, ops: usize, slots: &mut [Option<(NonNull<u8>, Layout)>]) {
    bench_loop_global(a, ops, slots)
}
#[inline(never)]
fn bench_loop_noop(a: &dyn GlobalAlloc, ops: usize, slots: &mut [Option<(NonNull<u8>, Layout)>]) {
    bench_loop_global(a, ops, slots)
}

static LOCKED: LockedHeap<32> = LockedHeap::empty();
static PERCPU: PerCpuHeap = PerCpuHeap::new();

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("heap");
    let ops: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let region: &'static mut [u8] = Box::leak(vec![0u8; REGION].into_boxed_slice());
    let (start, end) = (region.as_mut_ptr() as usize, region.as_mut_ptr() as usize + REGION);
    let mut slots = vec![None; SLOTS];
    match which {
        "heap" => {
            let mut heap = Heap::<32>::new();
            unsafe { heap.add_to_heap(start, end) };
            bench_loop_heap(&mut heap, ops, &mut slots);
            assert_eq!(heap.check(), Ok(()));
        }
        "locked" => {
            unsafe { LOCKED.lock().add_to_heap(start, end) };
            bench_loop_locked(&LOCKED, ops, &mut slots);
            assert_eq!(LOCKED.lock().check(), Ok(()));
        }
        "percpu" => {
            unsafe { PERCPU.transfer(region) };
            bench_loop_percpu(&PERCPU, ops, &mut slots);
            assert_eq!(PERCPU.check(), Ok(()));
        }
        _ => bench_loop_noop(&Noop, ops, &mut slots),
    }
    let live = slots.iter().filter(|s| s.is_some()).count();
    println!("{which}: {ops} operations, {live} blocks live at the end");
}
