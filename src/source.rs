//! Random access to the old file.

use std::fs::File;
use std::io;

/// Random read access to the old version of a file: a byte slice, a memory map,
/// or a [`File`] read with `pread`.
///
/// Apply reads the old file only through this trait and never outside
/// `0..len()`, so an implementation may rely on that.
///
/// # Examples
///
/// ```
/// use deltaswap::Source;
/// let old: &[u8] = b"hello";
/// let mut buf = [0u8; 3];
/// old.read_at(1, &mut buf)?;
/// assert_eq!(&buf, b"ell");
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Source {
    /// The length in bytes.
    fn len(&self) -> u64;

    /// True when the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`. Fails if the range is not entirely inside the source.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// The whole source as a slice, when it is in memory (slices and memory maps).
    /// Lets apply skip a copy.
    fn as_slice(&self) -> Option<&[u8]> {
        None
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "read outside the source")
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(buf.len()).ok_or_else(out_of_range)?;
        let src = self.get(start..end).ok_or_else(out_of_range)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl Source for File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.read_exact_at(buf, offset)
    }
}

impl<S: Source + ?Sized> Source for &S {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn as_slice(&self) -> Option<&[u8]> {
        (**self).as_slice()
    }
}
