//! The one place that memory-maps files.
//!
//! # Contract
//!
//! A memory map is only sound while no one truncates or rewrites the mapped file.
//! deltaswap maps only files it treats as read-only inputs (the old version of a
//! component, a patch being inspected), and never writes through or to them: the
//! atomic patcher writes the new version to a *new* inode and renames it into
//! place, so the mapped inode is never modified by deltaswap. If another process
//! truncates the file while it is mapped, reads of the lost pages raise SIGBUS;
//! that is the documented risk of [`MappedFile::open`], and callers that cannot
//! rule it out should use the [`File`] source (`pread`) instead.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::Path;

use crate::source::Source;

/// A read-only memory map of a whole file (or an empty buffer for an empty file).
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("old");
/// std::fs::write(&path, b"contents")?;
/// let map = deltaswap::MappedFile::open(&path)?;
/// assert_eq!(map.as_bytes(), b"contents");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MappedFile {
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    /// Maps the file at `path` read-only.
    ///
    /// See the module contract: the file must not be truncated or modified by
    /// anyone while the map is alive.
    pub fn open(path: impl AsRef<Path>) -> io::Result<MappedFile> {
        let file = File::open(path)?;
        MappedFile::from_file(&file)
    }

    /// Maps an open file read-only (same contract as [`MappedFile::open`]).
    pub fn from_file(file: &File) -> io::Result<MappedFile> {
        let len = file.metadata()?.len();
        if len == 0 {
            return Ok(MappedFile { map: None });
        }
        // SAFETY: the map is read-only and deltaswap never writes to the mapped
        // inode; concurrent modification by another process is the caller's
        // documented responsibility (module contract above).
        let map = unsafe { memmap2::Mmap::map(file)? };
        Ok(MappedFile { map: Some(map) })
    }

    /// The mapped bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.map {
            Some(m) => m,
            None => &[],
        }
    }
}

impl Source for MappedFile {
    fn len(&self) -> u64 {
        self.as_bytes().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_bytes().read_at(offset, buf)
    }
    fn as_slice(&self) -> Option<&[u8]> {
        Some(self.as_bytes())
    }
}
