//! The file-system seam of the atomic patcher.
//!
//! Every operation that [`patch_in_place`](crate::patch_in_place) and
//! [`recover`](crate::recover) perform on the file system goes through the
//! [`Fs`] trait, one method per system call. The real implementation,
//! [`RealFs`], works on directory file descriptors with `rustix`; the tests wrap
//! it (or an in-memory model of live and durable state) to fail the k-th
//! operation or to cut the power after it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags, StatVfsMountFlags};

/// What kind of directory entry a [`Stat`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Regular,
    Directory,
    Symlink,
    /// A FIFO, socket or device; the string names it for error messages.
    Other(&'static str),
}

/// The subset of `struct stat` the patcher needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) kind: FileKind,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) nlink: u64,
    pub(crate) size: u64,
    /// Permission bits including set-user-ID, set-group-ID and sticky (`0o7777`).
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Stat {
    /// True when both describe the same inode.
    pub(crate) fn same_inode(&self, other: &Stat) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// The subset of `struct statvfs` the patcher needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Space {
    /// Bytes an unprivileged writer may still allocate (`f_bavail * f_frsize`).
    pub(crate) available: u64,
    /// Allocation unit (`f_frsize`), at least 1.
    pub(crate) block: u64,
    /// Mounted read-only (`ST_RDONLY`).
    pub(crate) read_only: bool,
}

/// One method per file-system operation of the patch path.
///
/// Names are single path components relative to a directory handle; the
/// implementation never follows a symbolic link in the last component.
pub(crate) trait Fs {
    /// An open directory (a directory file descriptor).
    type Dir;
    /// An open regular file.
    type File;

    /// Resolves every symbolic link in `path` (`realpath`).
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;
    /// Opens a directory for `*at` calls and `fsync`.
    fn open_dir(&self, path: &Path) -> io::Result<Self::Dir>;
    /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
    fn stat_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Stat>;
    /// Opens `name` read-only with `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`.
    fn open_read(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::File>;
    /// `fstat`.
    fn stat(&self, file: &Self::File) -> io::Result<Stat>;
    /// `flock(LOCK_EX)`, or `LOCK_EX | LOCK_NB` when `wait` is false (then a
    /// held lock is [`io::ErrorKind::WouldBlock`]).
    fn lock(&self, file: &Self::File, wait: bool) -> io::Result<()>;
    /// `fstatvfs` of the directory's file system.
    fn space(&self, dir: &Self::Dir) -> io::Result<Space>;
    /// `pread` of exactly `buf.len()` bytes.
    fn read_at(&self, file: &Self::File, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Creates `name` with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode `0600`, open for writing.
    fn create_new(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::File>;
    /// Appends all of `data` at the file's current position.
    fn write_all(&self, file: &Self::File, data: &[u8]) -> io::Result<()>;
    /// `fchown`.
    fn set_owner(&self, file: &Self::File, uid: u32, gid: u32) -> io::Result<()>;
    /// `fchmod` with the permission bits `mode & 0o7777`.
    fn set_mode(&self, file: &Self::File, mode: u32) -> io::Result<()>;
    /// `flistxattr`.
    fn xattr_names(&self, file: &Self::File) -> io::Result<Vec<OsString>>;
    /// `fgetxattr`.
    fn get_xattr(&self, file: &Self::File, name: &OsStr) -> io::Result<Vec<u8>>;
    /// `fsetxattr`.
    fn set_xattr(&self, file: &Self::File, name: &OsStr, value: &[u8]) -> io::Result<()>;
    /// `fremovexattr`.
    fn remove_xattr(&self, file: &Self::File, name: &OsStr) -> io::Result<()>;
    /// `fsync` of a file.
    fn sync(&self, file: &Self::File) -> io::Result<()>;
    /// `renameat2(RENAME_EXCHANGE)` of two names in one directory. A file
    /// system without it fails with `EINVAL`, `ENOSYS` or `EOPNOTSUPP`.
    fn exchange(&self, dir: &Self::Dir, a: &OsStr, b: &OsStr) -> io::Result<()>;
    /// `renameat`, replacing `to` if it exists.
    fn rename(
        &self,
        from_dir: &Self::Dir,
        from: &OsStr,
        to_dir: &Self::Dir,
        to: &OsStr,
    ) -> io::Result<()>;
    /// `linkat` without following symbolic links.
    fn link(
        &self,
        from_dir: &Self::Dir,
        from: &OsStr,
        to_dir: &Self::Dir,
        to: &OsStr,
    ) -> io::Result<()>;
    /// `unlinkat` of a non-directory.
    fn unlink(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<()>;
    /// `fsync` of a directory, making its entries durable.
    fn sync_dir(&self, dir: &Self::Dir) -> io::Result<()>;
    /// The names in a directory, without `.` and `..`.
    fn list_dir(&self, dir: &Self::Dir) -> io::Result<Vec<OsString>>;
    /// Opens the subdirectory `name` of `dir` with `O_DIRECTORY | O_NOFOLLOW`:
    /// a symbolic link fails with `ELOOP`, anything else but a directory with
    /// `ENOTDIR`. (Bundle installer: walks root-relative paths without
    /// following links.)
    fn open_dir_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Self::Dir>;
    /// `mkdirat(dir, name, 0o700)`.
    fn create_dir(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<()>;
    /// `unlinkat(dir, name, AT_REMOVEDIR)`: removes an empty directory.
    /// (Bundle installer: directories it created for a failed install.)
    fn remove_dir(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<()>;
}

/// The real file system, through `rustix` on directory file descriptors.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RealFs;

/// Retries a call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

fn kind_of(mode: u32) -> FileKind {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => FileKind::Regular,
        FileType::Directory => FileKind::Directory,
        FileType::Symlink => FileKind::Symlink,
        FileType::Fifo => FileKind::Other("a FIFO"),
        FileType::Socket => FileKind::Other("a socket"),
        FileType::CharacterDevice => FileKind::Other("a character device"),
        FileType::BlockDevice => FileKind::Other("a block device"),
        _ => FileKind::Other("not a regular file"),
    }
}

fn convert(st: &rustix::fs::Stat) -> Stat {
    Stat {
        kind: kind_of(st.st_mode),
        dev: st.st_dev,
        ino: st.st_ino,
        nlink: st.st_nlink,
        size: u64::try_from(st.st_size).unwrap_or(0),
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
    }
}

/// Largest extended-attribute value Linux allows (`XATTR_SIZE_MAX`).
const XATTR_MAX: usize = 64 << 10;
/// Largest attribute-name list Linux allows (`XATTR_LIST_MAX`).
const XATTR_LIST_MAX: usize = 64 << 10;

impl Fs for RealFs {
    type Dir = OwnedFd;
    type File = File;

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        retry(|| {
            rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
    }

    fn stat_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<Stat> {
        retry(|| rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)).map(|s| convert(&s))
    }

    fn open_read(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<File> {
        retry(|| {
            rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
        .map(File::from)
    }

    fn stat(&self, file: &File) -> io::Result<Stat> {
        retry(|| rustix::fs::fstat(file)).map(|s| convert(&s))
    }

    fn lock(&self, file: &File, wait: bool) -> io::Result<()> {
        let op = if wait {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        retry(|| rustix::fs::flock(file, op))
    }

    fn space(&self, dir: &OwnedFd) -> io::Result<Space> {
        let s = retry(|| rustix::fs::fstatvfs(dir))?;
        let block = s.f_frsize.max(1);
        Ok(Space {
            available: s.f_bavail.saturating_mul(block),
            block,
            read_only: s.f_flag.contains(StatVfsMountFlags::RDONLY),
        })
    }

    fn read_at(&self, file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        file.read_exact_at(buf, offset)
    }

    fn create_new(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<File> {
        retry(|| {
            rustix::fs::openat(
                dir,
                name,
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })
        .map(File::from)
    }

    fn write_all(&self, file: &File, data: &[u8]) -> io::Result<()> {
        let mut f = file;
        f.write_all(data)
    }

    fn set_owner(&self, file: &File, uid: u32, gid: u32) -> io::Result<()> {
        retry(|| {
            rustix::fs::fchown(
                file,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
        })
    }

    fn set_mode(&self, file: &File, mode: u32) -> io::Result<()> {
        retry(|| rustix::fs::fchmod(file, Mode::from_raw_mode(mode & 0o7777)))
    }

    fn xattr_names(&self, file: &File) -> io::Result<Vec<OsString>> {
        let mut buf = vec![0u8; XATTR_LIST_MAX];
        let n = match retry(|| rustix::fs::flistxattr(file, &mut buf[..])) {
            Ok(n) => n,
            // No xattr support on this file system: nothing to carry over.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => 0,
            Err(e) => return Err(e),
        };
        let list = buf.get(..n).unwrap_or_default();
        Ok(list
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| OsStr::from_bytes(s).to_os_string())
            .collect())
    }

    fn get_xattr(&self, file: &File, name: &OsStr) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; XATTR_MAX];
        let n = retry(|| rustix::fs::fgetxattr(file, name, &mut buf[..]))?;
        buf.truncate(n);
        Ok(buf)
    }

    fn set_xattr(&self, file: &File, name: &OsStr, value: &[u8]) -> io::Result<()> {
        retry(|| rustix::fs::fsetxattr(file, name, value, rustix::fs::XattrFlags::empty()))
    }

    fn remove_xattr(&self, file: &File, name: &OsStr) -> io::Result<()> {
        retry(|| rustix::fs::fremovexattr(file, name))
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        retry(|| rustix::fs::fsync(file))
    }

    fn exchange(&self, dir: &OwnedFd, a: &OsStr, b: &OsStr) -> io::Result<()> {
        retry(|| rustix::fs::renameat_with(dir, a, dir, b, RenameFlags::EXCHANGE))
    }

    fn rename(
        &self,
        from_dir: &OwnedFd,
        from: &OsStr,
        to_dir: &OwnedFd,
        to: &OsStr,
    ) -> io::Result<()> {
        retry(|| rustix::fs::renameat(from_dir, from, to_dir, to))
    }

    fn link(
        &self,
        from_dir: &OwnedFd,
        from: &OsStr,
        to_dir: &OwnedFd,
        to: &OsStr,
    ) -> io::Result<()> {
        retry(|| rustix::fs::linkat(from_dir, from, to_dir, to, AtFlags::empty()))
    }

    fn unlink(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        retry(|| rustix::fs::unlinkat(dir, name, AtFlags::empty()))
    }

    fn sync_dir(&self, dir: &OwnedFd) -> io::Result<()> {
        retry(|| rustix::fs::fsync(dir))
    }

    fn list_dir(&self, dir: &OwnedFd) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        let entries = retry(|| rustix::fs::Dir::read_from(dir))?;
        for entry in entries {
            let entry = entry.map_err(io::Error::from)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(names)
    }

    fn open_dir_at(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
        retry(|| {
            rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
    }

    fn create_dir(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        retry(|| rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)))
    }

    fn remove_dir(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        retry(|| rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR))
    }
}

/// A file read through the seam, as apply's old-file [`Source`](crate::Source):
/// reads outside `0..len` are refused before they reach the file system.
pub(crate) struct FsSource<'a, F: Fs> {
    pub(crate) fs: &'a F,
    pub(crate) file: &'a F::File,
    pub(crate) len: u64,
}

impl<F: Fs> crate::source::Source for FsSource<'_, F> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read outside the file"))?;
        self.fs.read_at(self.file, offset, buf)
    }
}
