//! kbuddy for Rust kernels: a drop-in replacement for
//! [buddy_system_allocator](https://github.com/rcore-os/buddy_system_allocator)
//! on kbuddy, the freestanding C11 buddy allocator of this repository
//! (`../include`, `../src`, `../malloc`, compiled by `build.rs`).
//!
//! The names are the original's, so switching is a change of the crate
//! name: [`Heap`], [`LockedHeap`], [`LockedHeapWithRescue`],
//! [`FrameAllocator`]. What kbuddy changes underneath:
//!
//! - requests are rounded up to 32 bytes, not to a power of two (the rest of
//!   the block goes straight back): about 90% peak utilisation where
//!   power-of-two buddies reach 75%;
//! - a free is O(log n) whatever is free (the original walks a free list);
//! - every bad free (foreign, interior, double, wrong layout) is refused with
//!   nothing changed: [`Heap::try_dealloc`] returns the reason, `dealloc`
//!   applies an [`OnBadFree`] policy;
//! - regions of any alignment, added at any time (also from an out-of-memory
//!   handler); exact [`Stats`], [`Heap::check`], [`Heap::walk`];
//! - frames: exact counts, bookkeeping outside the frames (so frames need no
//!   mapping), adjacent ranges and top-order blocks merge.
//!
//! Beyond the original: [`PerCpuHeap`], kbuddy's global allocator with
//! per-CPU caches, fed with `transfer(region)` as the rCore tutorial's
//! `kernel-alloc` is.
//!
//! In an rCore-style kernel, three lines change:
//!
//! ```toml
//! kbuddy = { path = "../kbuddy/rust" }   # was: buddy_system_allocator = "0.6"
//! ```
//! ```no_run
//! use kbuddy::LockedHeap;                // was: use buddy_system_allocator::LockedHeap;
//! #[global_allocator]
//! static HEAP_ALLOCATOR: LockedHeap<32> = LockedHeap::empty();
//! // 0.6's spelling compiles as well: ORDER defaults to 32.
//! static OLD_STYLE: LockedHeap = LockedHeap::empty();
//! # fn main() {}
//! ```
//!
//! The C is compiled with `$CC` (`CC_<target>`, `TARGET_CC` for cross builds,
//! as the `cc` crate spells them; default `cc`, or `riscv64-unknown-elf-gcc`
//! for bare-metal RISC-V), freestanding; `CFLAGS` and `AR` likewise.
#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

mod error;
mod ffi;
mod frame;
mod heap;
mod lock;
mod malloc;

pub use error::{Error, OnBadFree, Stats};
pub use frame::{FrameAllocator, FrameRun, FrameStats};
pub use heap::{Block, Heap, LockedHeap, LockedHeapWithRescue, OomHandler, Placement};
pub use lock::{Mutex, MutexGuard};
pub use malloc::{Hooks, MallocStats, PerCpuHeap};

/// The heap's minimum block, in bytes (`KBUDDY_MIN_BLOCK`): every request is
/// rounded up to a multiple of it, and every block is aligned to it. 32, or
/// 16 when the C is built with `CFLAGS=-DKBUDDY_MIN_BLOCK_SHIFT=4`.
#[cfg(not(kbuddy_min_block_16))]
pub const MIN_BLOCK: usize = 32;
/// The heap's minimum block, in bytes (`KBUDDY_MIN_BLOCK`): every request is
/// rounded up to a multiple of it, and every block is aligned to it. 16:
/// the C is built with `-DKBUDDY_MIN_BLOCK_SHIFT=4`.
#[cfg(kbuddy_min_block_16)]
pub const MIN_BLOCK: usize = 16;
