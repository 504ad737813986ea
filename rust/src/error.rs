//! kbuddy's statuses as a Rust error, and the statistics.

use crate::ffi;
use core::fmt;

/// Why kbuddy refused a call: the C library's `kbuddy_status` values other
/// than `KBUDDY_OK`. A refused call changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// `KBUDDY_ENOMEM`: not enough free memory, or a region too small to be
    /// of use.
    NoMemory,
    /// `KBUDDY_EINVAL`: a malformed argument (an empty or wrapping range, a
    /// null start, frames outside the window).
    Invalid,
    /// `KBUDDY_EOVERLAP`: the range overlaps memory already managed.
    Overlap,
    /// `KBUDDY_EFOREIGN`: the pointer or frame lies outside everything the
    /// allocator manages.
    Foreign,
    /// `KBUDDY_EBADPTR`: inside managed memory but not the start of a live
    /// allocation (an interior pointer).
    BadPointer,
    /// `KBUDDY_EDOUBLEFREE`: the memory or frames are already free.
    DoubleFree,
    /// `KBUDDY_ESIZE`: the layout given to a free does not match the
    /// allocation's size or alignment.
    Size,
    /// `KBUDDY_ECORRUPT`: the integrity check found damaged bookkeeping.
    Corrupt,
}

impl Error {
    /// The error for a C status; `None` for `KBUDDY_OK`. Unknown values
    /// (a newer C library) map to `Corrupt`, the most cautious reading.
    pub(crate) fn from_status(status: ffi::kbuddy_status) -> Option<Error> {
        Some(match status {
            ffi::KBUDDY_OK => return None,
            ffi::KBUDDY_ENOMEM => Error::NoMemory,
            ffi::KBUDDY_EINVAL => Error::Invalid,
            ffi::KBUDDY_EOVERLAP => Error::Overlap,
            ffi::KBUDDY_EFOREIGN => Error::Foreign,
            ffi::KBUDDY_EBADPTR => Error::BadPointer,
            ffi::KBUDDY_EDOUBLEFREE => Error::DoubleFree,
            ffi::KBUDDY_ESIZE => Error::Size,
            _ => Error::Corrupt,
        })
    }

    pub(crate) fn check(status: ffi::kbuddy_status) -> Result<(), Error> {
        match Error::from_status(status) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// The C library's `kbuddy_status` value for this error.
    pub fn status(self) -> i32 {
        match self {
            Error::NoMemory => ffi::KBUDDY_ENOMEM,
            Error::Invalid => ffi::KBUDDY_EINVAL,
            Error::Overlap => ffi::KBUDDY_EOVERLAP,
            Error::Foreign => ffi::KBUDDY_EFOREIGN,
            Error::BadPointer => ffi::KBUDDY_EBADPTR,
            Error::DoubleFree => ffi::KBUDDY_EDOUBLEFREE,
            Error::Size => ffi::KBUDDY_ESIZE,
            Error::Corrupt => ffi::KBUDDY_ECORRUPT,
        }
    }

    /// `kbuddy_strerror`'s description ("double free", ...).
    pub fn description(self) -> &'static str {
        // SAFETY: kbuddy_strerror returns a static, NUL-terminated ASCII
        // string for every value.
        unsafe { ffi::static_str(ffi::kbuddy_strerror(self.status())) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// `core::error::Error` exists from Rust 1.81 (build.rs sets the cfg).
#[cfg(kbuddy_core_error)]
impl core::error::Error for Error {}

/// A heap's statistics (`kbuddy_stats`), exact at the moment they are
/// taken. `total - allocated` bytes are free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes that can be handed out: the regions minus bookkeeping and
    /// unusable edges.
    pub total: usize,
    /// Bytes reserved by live allocations (each rounded up to whole
    /// [`MIN_BLOCK`](crate::MIN_BLOCK)s, nothing more).
    pub allocated: usize,
    /// Bytes requested by live allocations.
    pub user: usize,
    /// Bytes of the regions spent on bookkeeping or lost to alignment:
    /// `total + overhead` is every byte handed to the heap.
    pub overhead: usize,
    /// The largest size `alloc` with alignment 1 can satisfy right now.
    pub largest_free: usize,
    /// Live allocations.
    pub allocations: usize,
    /// Regions added.
    pub regions: usize,
}

impl From<ffi::kbuddy_stats> for Stats {
    fn from(s: ffi::kbuddy_stats) -> Self {
        Stats {
            total: s.total,
            allocated: s.allocated,
            user: s.user,
            overhead: s.overhead,
            largest_free: s.largest_free,
            allocations: s.allocations,
            regions: s.regions,
        }
    }
}

/// What `dealloc`, which cannot return an error, does with a free that
/// kbuddy refuses (a foreign, interior, double or mis-sized free). Either
/// way nothing in the allocator changes and the refusal is counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnBadFree {
    /// Panic with the pointer, the layout and the reason (the default: a
    /// bad free is a bug to be found). From a `GlobalAlloc` method, which
    /// must not unwind, the panic aborts (it is raised in a function that
    /// cannot unwind), after the panic handler has run.
    #[default]
    Panic,
    /// Count it and go on, as kbuddy's C global allocator does.
    Ignore,
}
