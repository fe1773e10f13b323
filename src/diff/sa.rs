//! Suffix array construction with libsais (linear-time SA-IS, C library).
//!
//! This module holds the crate's only foreign calls. libsais was chosen over
//! divsufsort and qsufsort because it is linear-time, 2-3x faster than divsufsort
//! on binaries, and needs only the output array (see README, "Dependencies").
#![allow(unsafe_code)]

use crate::error::Error;

/// Free space given to libsais after the suffix array of a text of `len`
/// bytes: half its length up to [`FREE_SPACE_MAX_TEXT`], none above. libsais
/// uses it for its bucket tables when it sorts the reduced problem; half the
/// length took the median sort of a half of libxml2 from 19.5 to 15.8 ms,
/// of libc 31.7 to 27.0 ms, of libnss3 14.8 to 12.8 ms (15 runs each,
/// 2026-12-02), and gained nothing on libgs's 10.6 MB halves. The suffix
/// array itself does not depend on it.
fn free_space(len: usize) -> usize {
    if len <= FREE_SPACE_MAX_TEXT {
        len / 2
    } else {
        0
    }
}

/// The longest text sorted with free space: 8 MiB (16 MiB of free space at
/// most, given back once the array is sorted).
const FREE_SPACE_MAX_TEXT: usize = 8 << 20;

/// `len` zeros, written rather than allocated zeroed. A zeroed allocation
/// of this size is fresh pages that the kernel maps to its shared zero page
/// when first read; libsais reads much of its array before writing it, and
/// each later write then replaces that mapping, which means a TLB flush on
/// every other core running the process. On libgs's 10.6 MB halves that
/// was a sixth of the diff's CPU time, most of it in the interrupts between
/// cores (`perf`: `do_wp_page` → `flush_tlb_mm_range`). Written zeros fault
/// each page in once, writable. (Used for arrays sorted without free space:
/// on the smaller parts that get it, written zeros cost 4-6% more wall time
/// and 4-9% more CPU time than the zeroed allocation, libxml2 and libc, 15
/// interleaved rounds.)
fn written_zeros<T: Copy + Default>(len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    v.resize(len, T::default());
    v
}

/// A suffix array of the old file, 32-bit entries below 2^31 bytes, 64-bit above.
pub(crate) enum SuffixArray {
    Small(Vec<i32>),
    Large(Vec<i64>),
}

impl SuffixArray {
    /// Builds the suffix array of `text` (all suffixes, no sentinel).
    pub(crate) fn build(text: &[u8]) -> Result<SuffixArray, Error> {
        if text.is_empty() {
            return Ok(SuffixArray::Small(Vec::new()));
        }
        if let Ok(n) = i32::try_from(text.len()) {
            let fs = free_space(text.len());
            let fs_i32 = i32::try_from(fs).map_err(|_| Error::Bug("free space"))?;
            // With free space, libsais's access pattern was measured
            // not to suffer from the zero page (and the untouched free
            // space never costs a page): a zeroed allocation there.
            let mut sa = if fs == 0 {
                written_zeros::<i32>(text.len())
            } else {
                vec![0i32; text.len() + fs]
            };
            // SAFETY: `text` has `n` readable bytes and `sa` has `n + fs`
            // writable i32 slots, `fs` of them the free space libsais is told
            // of; freq may be null.
            let rc = unsafe {
                libsais_sys::libsais::libsais(
                    text.as_ptr(),
                    sa.as_mut_ptr(),
                    n,
                    fs_i32,
                    std::ptr::null_mut(),
                )
            };
            if rc != 0 {
                return Err(Error::Bug("libsais failed"));
            }
            // Give the free space back (for a mapped allocation, glibc's
            // realloc shrinks it in place).
            sa.truncate(text.len());
            sa.shrink_to_fit();
            Ok(SuffixArray::Small(sa))
        } else {
            let n = i64::try_from(text.len()).map_err(|_| Error::Bug("old file length"))?;
            let mut sa = written_zeros::<i64>(text.len());
            // SAFETY: as above with 64-bit entries.
            let rc = unsafe {
                libsais_sys::libsais64::libsais64(
                    text.as_ptr(),
                    sa.as_mut_ptr(),
                    n,
                    0,
                    std::ptr::null_mut(),
                )
            };
            if rc != 0 {
                return Err(Error::Bug("libsais64 failed"));
            }
            Ok(SuffixArray::Large(sa))
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            SuffixArray::Small(v) => v.len(),
            SuffixArray::Large(v) => v.len(),
        }
    }

    /// The suffix at rank `i` (its start offset in the text).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> usize {
        match self {
            SuffixArray::Small(v) => v.get(i).map_or(0, |&x| x as usize),
            SuffixArray::Large(v) => v.get(i).map_or(0, |&x| x as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banana() {
        let sa = SuffixArray::build(b"banana").unwrap();
        let got: Vec<usize> = (0..sa.len()).map(|i| sa.get(i)).collect();
        assert_eq!(got, vec![5, 3, 1, 0, 4, 2]);
    }

    #[test]
    fn sorted_on_random() {
        let text: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 29) as u8)
            .collect();
        let sa = SuffixArray::build(&text).unwrap();
        for i in 1..sa.len() {
            assert!(text[sa.get(i - 1)..] < text[sa.get(i)..]);
        }
    }
}
