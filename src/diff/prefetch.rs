//! A cache prefetch hint, for loops that write or read at random places in
//! tables larger than the caches (the old file's window filters).
//!
//! This module holds the diff engine's only unsafe block besides the suffix
//! sort's two foreign calls (`src/diff/sa.rs`). A prefetch is a hint to the
//! processor: it has no effect a program can observe except timing, it
//! cannot fault, and it reads nothing into the program. The pointer handed
//! to it is still kept inside its slice, so the call would be sound even if
//! it did read.
#![allow(unsafe_code)]

/// Asks the processor to bring `slice[index]` into the cache, so that a
/// later access finds it there. Does nothing when `index` is out of bounds,
/// and nothing on targets other than x86-64.
#[inline(always)]
pub(crate) fn prefetch<T>(slice: &[T], index: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(item) = slice.get(index) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: the pointer comes from a reference into `slice`, so it is
        // valid, aligned and in bounds; a prefetch neither reads nor writes
        // memory as far as the program can see, and never faults. SSE, which
        // `_mm_prefetch` needs, is part of the x86-64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(item).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slice, index);
}
