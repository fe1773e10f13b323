//! The patch-in-place protocol and recovery, generic over the [`Fs`] seam.
//!
//! Order of operations (see `docs/GUARANTEES.md` for the crash analysis):
//!
//! 1. open the directory; `fstatat(NOFOLLOW)` the target and refuse a symbolic
//!    link or a non-regular file; open it `O_NOFOLLOW` read-only and check it is
//!    the inode just examined;
//! 2. `flock` it (wait, or fail with [`Error::Locked`]); re-examine the name and
//!    start over if another patcher replaced the file meanwhile;
//! 3. `fstatvfs`: refuse a read-only file system or too little free space;
//!    examine the rollback path (refused if it is a directory or the file
//!    itself); refuse extra hard links (a rollback path that already names the
//!    file does not count);
//! 4. hash the target and compare size and SHA-256 with the patch header; a
//!    target that already is the new version is reported as such, made durable,
//!    and left alone;
//! 5. stream the new version into `.deltaswap-tmp.*` (created `O_EXCL`, locked),
//!    checking its size and SHA-256;
//! 6. carry over owner, mode and extended attributes; `fsync` the new file;
//! 7. check the name still holds the locked inode; with a rollback path, give
//!    the old inode that name first (`link` beside the target, check it is the
//!    locked inode, `rename` to the rollback path, `fsync` its directory), so
//!    that no crash after the swap can leave the new version without its
//!    rollback copy, and check the name again; then swap:
//!    `renameat2(RENAME_EXCHANGE)` (the commit point), or `rename` where the
//!    file system refuses exchange;
//! 8. remove the old inode's temporary name (after an exchange), then `fsync`
//!    the directory.
//!
//! Any failure before the swap removes the temporary file and leaves the
//! target untouched (the rollback path may by then be a second name of it);
//! any failure after it is [`Error::DurabilityUnknown`].
//!
//! Why a named `O_EXCL` temporary file rather than `O_TMPFILE` + `linkat`: the
//! new version needs a name anyway before `RENAME_EXCHANGE`; linking an
//! `O_TMPFILE` by descriptor needs `CAP_DAC_READ_SEARCH` or `/proc`; not every
//! file system supports `O_TMPFILE`; and a named file can be locked so that a
//! concurrent [`recover`](crate::recover) recognizes it as in use. The price —
//! a crash can leave the name behind — is what `recover` is for.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::fs::{FileKind, Fs, FsSource, Stat};
use super::{PatchOptions, PatchOutcome, RecoveryReport, SwapMethod};
use crate::apply::PatchReader;
use crate::error::{Error, Subject};
use crate::format::PatchHeader;
use crate::hash::{Hasher, Sha256Digest};
use crate::source::Source;

/// Prefix of every name the patcher creates beside a target. [`recover`] removes
/// unlocked regular files with this prefix.
///
/// [`recover`]: crate::recover
pub(crate) const TEMP_PREFIX: &str = ".deltaswap-tmp.";

/// Longest part of the target's name copied into a temporary name, so that the
/// temporary name stays under `NAME_MAX` (255) whatever the target is called.
const NAME_PART_MAX: usize = 96;

/// Attempts at a fresh temporary name before giving up (names collide only if
/// another process reuses this PID and counter, or someone plants files).
const TEMP_ATTEMPTS: u32 = 16;

/// Times the target is reopened when it is replaced between examination and
/// locking (each time means another patcher committed meanwhile).
const REOPEN_ATTEMPTS: u32 = 8;

/// Write buffer between apply and the temporary file: one `write` per 256 KiB.
const WRITE_BUF: usize = 256 << 10;

/// Blocks kept free beyond the new file's own size for the file system's
/// metadata (indirect blocks, extent tree, directory entry).
const SLACK_BLOCKS: u64 = 16;

/// Switches that break the protocol on purpose, to prove the crash tests can fail.
#[cfg(test)]
#[cfg_attr(not(feature = "diff"), allow(dead_code))] // the tests need `diff`
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Mutant {
    /// The correct protocol.
    #[default]
    None,
    /// Skip the `fsync` of the new file before the swap.
    SkipFileSync,
    /// Skip the `fsync` of the directory after the swap.
    SkipDirSync,
}

/// Crate-internal knobs of the protocol (only the test mutants today).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Knobs {
    #[cfg(test)]
    pub(crate) mutant: Mutant,
}

impl Knobs {
    fn skip_file_sync(&self) -> bool {
        #[cfg(test)]
        {
            self.mutant == Mutant::SkipFileSync
        }
        #[cfg(not(test))]
        {
            false
        }
    }

    fn skip_dir_sync(&self) -> bool {
        #[cfg(test)]
        {
            self.mutant == Mutant::SkipDirSync
        }
        #[cfg(not(test))]
        {
            false
        }
    }
}

/// The target's path and the new version's size, for error messages.
struct Ctx {
    path: PathBuf,
    needed: u64,
}

impl Ctx {
    /// Maps an I/O error of `operation` to a typed error naming the target.
    fn fail(&self, operation: &'static str, e: io::Error) -> Error {
        classify(&self.path, self.needed, operation, e)
    }
}

fn errno(e: rustix::io::Errno) -> Option<i32> {
    Some(e.raw_os_error())
}

/// Read-only and out-of-space conditions get their own variants wherever they
/// appear; everything else is [`Error::File`] with the path and the operation.
fn classify(path: &Path, needed: u64, operation: &'static str, e: io::Error) -> Error {
    let code = e.raw_os_error();
    if code == errno(rustix::io::Errno::ROFS) {
        Error::ReadOnly {
            path: path.to_path_buf(),
        }
    } else if code == errno(rustix::io::Errno::NOSPC) || code == errno(rustix::io::Errno::DQUOT) {
        Error::NoSpace {
            path: path.to_path_buf(),
            needed,
            available: None,
        }
    } else {
        Error::File {
            path: path.to_path_buf(),
            context: operation,
            source: e,
        }
    }
}

/// Splits `path` into its directory (`.` for a bare name) and last component.
fn split(path: &Path) -> Result<(PathBuf, OsString), Error> {
    let name = path.file_name().ok_or_else(|| Error::File {
        path: path.to_path_buf(),
        context: "splitting the path into directory and file name",
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_os_string()))
}

/// A fresh temporary name for a file beside `target`.
fn fresh_temp_name(target: &OsStr) -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut bytes = format!("{TEMP_PREFIX}{}.{n}.", std::process::id()).into_bytes();
    let name = target.as_bytes();
    bytes.extend_from_slice(name.get(..NAME_PART_MAX).unwrap_or(name));
    OsString::from_vec(bytes)
}

fn check_kind(st: &Stat, path: &Path) -> Result<(), Error> {
    match st.kind {
        FileKind::Regular => Ok(()),
        FileKind::Symlink => Err(Error::Symlink {
            path: path.to_path_buf(),
        }),
        FileKind::Directory => Err(Error::NotRegularFile {
            path: path.to_path_buf(),
            kind: "a directory",
        }),
        FileKind::Other(kind) => Err(Error::NotRegularFile {
            path: path.to_path_buf(),
            kind,
        }),
    }
}

/// Opens, checks and locks the target. Returns the locked file and its status
/// as seen after the lock was taken.
fn open_locked<F: Fs>(
    fs: &F,
    dir: &F::Dir,
    name: &OsStr,
    ctx: &Ctx,
    opts: &PatchOptions,
) -> Result<(F::File, Stat), Error> {
    for _ in 0..REOPEN_ATTEMPTS {
        let st = fs
            .stat_at(dir, name)
            .map_err(|e| ctx.fail("examining the file", e))?;
        check_kind(&st, &ctx.path)?;
        let file = match fs.open_read(dir, name) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == errno(rustix::io::Errno::LOOP) => {
                return Err(Error::Symlink {
                    path: ctx.path.clone(),
                })
            }
            Err(e) => return Err(ctx.fail("opening the file", e)),
        };
        let opened = fs
            .stat(&file)
            .map_err(|e| ctx.fail("examining the opened file", e))?;
        if !opened.same_inode(&st) {
            continue; // replaced between fstatat and open
        }
        match fs.lock(&file, opts.wait_for_lock) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(Error::Locked {
                    path: ctx.path.clone(),
                })
            }
            Err(e) => return Err(ctx.fail("locking the file", e)),
        }
        let now = fs
            .stat_at(dir, name)
            .map_err(|e| ctx.fail("examining the file after locking it", e))?;
        if !now.same_inode(&opened) {
            continue; // another patcher swapped it while we waited for the lock
        }
        return Ok((file, now));
    }
    Err(Error::Changed {
        path: ctx.path.clone(),
    })
}

/// SHA-256 of a whole source, read in 256 KiB pieces.
fn digest_of<S: Source>(src: &S) -> io::Result<Sha256Digest> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; WRITE_BUF];
    let mut pos = 0u64;
    while pos < src.len() {
        let n = usize::try_from(src.len().saturating_sub(pos))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or_default();
        src.read_at(pos, chunk)?;
        hasher.update(chunk);
        pos = pos.saturating_add(n as u64);
    }
    Ok(hasher.finish())
}

/// The temporary file, created on the first write (so that nothing is created
/// unless the target matched the patch). I/O errors are kept typed in `error`
/// because apply sees them only as `io::Error`.
struct TempSink<'a, F: Fs> {
    fs: &'a F,
    dir: &'a F::Dir,
    target: &'a OsStr,
    ctx: &'a Ctx,
    temp: Option<(OsString, F::File)>,
    error: Option<Error>,
}

impl<F: Fs> TempSink<'_, F> {
    fn create(&mut self) -> Result<(), Error> {
        if self.temp.is_some() {
            return Ok(());
        }
        for _ in 0..TEMP_ATTEMPTS {
            let name = fresh_temp_name(self.target);
            match self.fs.create_new(self.dir, &name) {
                Ok(file) => {
                    // Recorded before locking so that a failure below still
                    // removes the name.
                    let file = &self.temp.insert((name, file)).1;
                    // Locked so that a concurrent `recover` leaves it alone.
                    return self
                        .fs
                        .lock(file, false)
                        .map_err(|e| self.ctx.fail("locking the temporary file", e));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.ctx.fail("creating the temporary file", e)),
            }
        }
        Err(self.ctx.fail(
            "creating the temporary file",
            io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name"),
        ))
    }

    fn stash(&mut self, e: Error) -> io::Error {
        self.error = Some(e);
        io::Error::other("deltaswap: temporary file failure (see the typed error)")
    }

    /// Removes the temporary file, if one was created. Best effort: a name
    /// left behind is litter that [`recover`](crate::recover) removes.
    fn discard(&mut self) {
        if let Some((name, file)) = self.temp.take() {
            drop(file);
            let _ = self.fs.unlink(self.dir, &name);
        }
    }
}

impl<F: Fs> Write for TempSink<'_, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.create() {
            return Err(self.stash(e));
        }
        let res = match &self.temp {
            Some((_, file)) => self.fs.write_all(file, buf),
            None => return Err(self.stash(Error::Bug("temporary file missing after creation"))),
        };
        match res {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                let e = self.ctx.fail("writing the new version", e);
                Err(self.stash(e))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the old version goes when the caller asked to keep it.
struct Keep<F: Fs> {
    path: PathBuf,
    dir: F::Dir,
    name: OsString,
    /// The rollback path already names the target's inode (left by an
    /// earlier run that stopped before its swap).
    already: bool,
}

fn prepare_keep<F: Fs>(
    fs: &F,
    keep: &Path,
    target_dir: &F::Dir,
    target_name: &OsStr,
    target: &Stat,
    ctx: &Ctx,
) -> Result<Keep<F>, Error> {
    let refuse = |kind, why: &str| Error::File {
        path: keep.to_path_buf(),
        context: "checking the rollback path",
        source: io::Error::new(kind, why),
    };
    let (dir_path, name) = split(keep)?;
    let dir = fs.open_dir(&dir_path).map_err(Error::file(
        &dir_path,
        "opening the rollback copy's directory",
    ))?;
    let here = fs.stat_at(&dir, OsStr::new(".")).map_err(Error::file(
        &dir_path,
        "examining the rollback copy's directory",
    ))?;
    if here.dev != target.dev {
        return Err(refuse(
            io::ErrorKind::CrossesDevices,
            "the rollback path must be on the same file system as the file",
        ));
    }
    let target_here = fs
        .stat_at(target_dir, OsStr::new("."))
        .map_err(|e| ctx.fail("examining its directory", e))?;
    if target_here.same_inode(&here) && name == target_name {
        return Err(refuse(
            io::ErrorKind::InvalidInput,
            "the rollback path is the file being patched",
        ));
    }
    let already = match fs.stat_at(&dir, &name) {
        Ok(st) if st.kind == FileKind::Directory => {
            return Err(Error::NotRegularFile {
                path: keep.to_path_buf(),
                kind: "a directory",
            })
        }
        Ok(st) => st.same_inode(target),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::file(keep, "examining the rollback path")(e)),
    };
    Ok(Keep {
        path: keep.to_path_buf(),
        dir,
        name,
        already,
    })
}

/// Patches the file at `path` in place through `fs`. See the module docs.
pub(crate) fn patch_with<F: Fs, R: Read>(
    fs: &F,
    path: &Path,
    patch: R,
    opts: &PatchOptions,
    knobs: Knobs,
) -> Result<PatchOutcome, Error> {
    let reader = PatchReader::with_limits(patch, opts.limits.clone())?;
    let header = reader.header().clone();
    let path = if opts.follow_symlinks {
        fs.canonicalize(path)
            .map_err(Error::file(path, "resolving symbolic links"))?
    } else {
        path.to_path_buf()
    };
    let (dir_path, name) = split(&path)?;
    let ctx = Ctx {
        path: path.clone(),
        needed: header.new_len(),
    };
    let dir = fs
        .open_dir(&dir_path)
        .map_err(|e| ctx.fail("opening its directory", e))?;
    let (target, st) = open_locked(fs, &dir, &name, &ctx, opts)?;

    let space = fs
        .space(&dir)
        .map_err(|e| ctx.fail("checking free space", e))?;
    if space.read_only {
        return Err(Error::ReadOnly { path });
    }
    let needed = header
        .new_len()
        .div_ceil(space.block)
        .saturating_add(SLACK_BLOCKS)
        .saturating_mul(space.block);
    if space.available < needed {
        return Err(Error::NoSpace {
            path,
            needed,
            available: Some(space.available),
        });
    }
    let keep = match &opts.keep_old {
        Some(k) => Some(prepare_keep::<F>(fs, k, &dir, &name, &st, &ctx)?),
        None => None,
    };
    // The rollback path may already be a second name of this inode: an
    // earlier run with the same rollback path stopped after naming the copy
    // and before the swap. That link is ours, not one the caller must know of.
    let ours = u64::from(keep.as_ref().is_some_and(|k| k.already));
    if st.nlink > 1 + ours && !opts.allow_hard_links {
        return Err(Error::HardLinks {
            path: ctx.path.clone(),
            links: st.nlink,
        });
    }

    let source = FsSource {
        fs,
        file: &target,
        len: st.size,
    };
    let mut sink = TempSink {
        fs,
        dir: &dir,
        target: &name,
        ctx: &ctx,
        temp: None,
        error: None,
    };
    let applied = {
        let mut w = BufWriter::with_capacity(WRITE_BUF, &mut sink);
        let r = reader.apply_to(&source, &mut w);
        // Drop the buffer without flushing: on success apply has flushed it,
        // on failure its contents are discarded with the temporary file.
        let _ = w.into_parts();
        r
    };
    let verified = match applied {
        Ok(v) => v,
        Err(e) => {
            let err = sink.error.take().unwrap_or(e);
            sink.discard();
            if is_new_version(&err, &source, &header, &ctx)? {
                return finish_already_applied(fs, &dir, &target, &header, &ctx);
            }
            return Err(err);
        }
    };
    if sink.temp.is_none() {
        // An empty new version: apply wrote nothing, so nothing was created yet.
        if let Err(e) = sink.create() {
            sink.discard();
            return Err(e);
        }
    }
    let (temp_name, temp) = match sink.temp.take() {
        Some(t) => t,
        None => return Err(Error::Bug("temporary file missing after apply")),
    };
    drop(sink);

    let pre = prepare_and_swap(
        fs,
        &dir,
        &name,
        &target,
        &st,
        &temp_name,
        &temp,
        verified.len(),
        keep.as_ref(),
        &ctx,
        knobs,
    );
    drop(temp);
    let (method, old_name) = match pre {
        Ok(m) => m,
        Err(e) => {
            let _ = fs.unlink(&dir, &temp_name);
            return Err(e);
        }
    };

    // ---- commit point: the name now refers to the new version ----
    let mut failure: Option<(&'static str, io::Error)> = None;
    let mut note = |op: &'static str, r: io::Result<()>| {
        if let Err(e) = r {
            failure.get_or_insert((op, e));
        }
    };
    if let Some(old) = &old_name {
        note(
            "removing the old version's temporary name",
            fs.unlink(&dir, old),
        );
    }
    if !knobs.skip_dir_sync() {
        note("fsync of the directory", fs.sync_dir(&dir));
    }
    drop(target); // releases the lock
    if let Some((operation, source)) = failure {
        return Err(Error::DurabilityUnknown {
            path,
            operation,
            source,
        });
    }
    Ok(PatchOutcome {
        len: verified.len(),
        sha256: verified.sha256(),
        method,
        kept_old: keep.map(|k| k.path),
    })
}

/// True when a source mismatch is explained by the target already being the
/// new version (an earlier run completed, or crashed after the swap).
fn is_new_version<F: Fs>(
    err: &Error,
    source: &FsSource<'_, F>,
    header: &PatchHeader,
    ctx: &Ctx,
) -> Result<bool, Error> {
    match err {
        Error::HashMismatch {
            subject: Subject::Source,
            found,
            ..
        } => Ok(source.len == header.new_len() && *found == header.new_sha256()),
        Error::SizeMismatch {
            subject: Subject::Source,
            found,
            ..
        } if *found == header.new_len() => {
            let digest = digest_of(source).map_err(|e| ctx.fail("reading the file", e))?;
            Ok(digest == header.new_sha256())
        }
        _ => Ok(false),
    }
}

/// The target already is the new version: make that durable and report it.
fn finish_already_applied<F: Fs>(
    fs: &F,
    dir: &F::Dir,
    target: &F::File,
    header: &PatchHeader,
    ctx: &Ctx,
) -> Result<PatchOutcome, Error> {
    let durable = fs
        .sync(target)
        .map(|()| "fsync of the directory")
        .map_err(|e| ("fsync of the file", e))
        .and_then(|op| fs.sync_dir(dir).map_err(|e| (op, e)));
    if let Err((operation, source)) = durable {
        return Err(Error::DurabilityUnknown {
            path: ctx.path.clone(),
            operation,
            source,
        });
    }
    Ok(PatchOutcome {
        len: header.new_len(),
        sha256: header.new_sha256(),
        method: SwapMethod::AlreadyApplied,
        kept_old: None,
    })
}

/// Steps 6 and 7: metadata, fsync, checks, swap. Returns how the swap was done
/// and the name under which the old inode is now reachable.
#[allow(clippy::too_many_arguments)]
fn prepare_and_swap<F: Fs>(
    fs: &F,
    dir: &F::Dir,
    name: &OsStr,
    target: &F::File,
    st: &Stat,
    temp_name: &OsStr,
    temp: &F::File,
    len: u64,
    keep: Option<&Keep<F>>,
    ctx: &Ctx,
    knobs: Knobs,
) -> Result<(SwapMethod, Option<OsString>), Error> {
    let tst = fs
        .stat(temp)
        .map_err(|e| ctx.fail("examining the new version", e))?;
    if tst.size != len {
        return Err(Error::File {
            path: ctx.path.clone(),
            context: "checking the new version's size",
            source: io::Error::other(format!(
                "the temporary file holds {} bytes, {len} were written",
                tst.size
            )),
        });
    }
    copy_metadata(fs, target, st, temp, &tst, ctx)?;
    if !knobs.skip_file_sync() {
        fs.sync(temp)
            .map_err(|e| ctx.fail("fsync of the new version", e))?;
    }
    let unchanged = || {
        let now = fs
            .stat_at(dir, name)
            .map_err(|e| ctx.fail("examining the file before the swap", e))?;
        if !now.same_inode(st) || now.size != st.size {
            return Err(Error::Changed {
                path: ctx.path.clone(),
            });
        }
        Ok(())
    };
    unchanged()?;
    if let Some(k) = keep {
        name_rollback_copy(fs, dir, name, st, k, ctx, knobs)?;
        // Naming the copy took time (an fsync): check the name again.
        unchanged()?;
    }
    match fs.exchange(dir, temp_name, name) {
        // The old inode is now under the temporary name (and the rollback
        // name, if any); the caller removes the temporary one.
        Ok(()) => return Ok((SwapMethod::Exchanged, Some(temp_name.to_os_string()))),
        Err(e) if exchange_unsupported(&e) => {}
        Err(e) => return Err(ctx.fail("swapping in the new version", e)),
    }
    // Fallback: plain rename. The old inode loses the target's name; it keeps
    // the rollback name if it was given one.
    fs.rename(dir, temp_name, dir, name)
        .map_err(|e| ctx.fail("renaming the new version into place", e))?;
    Ok((SwapMethod::Renamed, None))
}

/// Gives the old inode (still at `name`, locked) its rollback name before the
/// swap: a hard link under a temporary name beside it (which `recover`
/// removes if a crash leaves it), checked to be the locked inode, renamed
/// over the rollback path, whose directory is then made durable. From here on
/// a crash leaves the rollback copy in place whichever version the target is.
fn name_rollback_copy<F: Fs>(
    fs: &F,
    dir: &F::Dir,
    name: &OsStr,
    st: &Stat,
    keep: &Keep<F>,
    ctx: &Ctx,
    knobs: Knobs,
) -> Result<(), Error> {
    if !keep.already {
        let mut attempt = 0;
        let link_name = loop {
            let candidate = fresh_temp_name(name);
            match fs.link(dir, name, dir, &candidate) {
                Ok(()) => break candidate,
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists && attempt + 1 < TEMP_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(ctx.fail("linking the old version for the rollback copy", e)),
            }
        };
        let moved = match fs.stat_at(dir, &link_name) {
            Ok(l) if l.same_inode(st) => fs
                .rename(dir, &link_name, &keep.dir, &keep.name)
                .map_err(|e| ctx.fail("moving the old version to the rollback path", e)),
            Ok(_) => Err(Error::Changed {
                path: ctx.path.clone(),
            }),
            Err(e) => Err(ctx.fail("examining the rollback copy's link", e)),
        };
        if let Err(e) = moved {
            let _ = fs.unlink(dir, &link_name);
            return Err(e);
        }
    }
    if !knobs.skip_dir_sync() {
        fs.sync_dir(&keep.dir)
            .map_err(|e| ctx.fail("fsync of the rollback copy's directory", e))?;
    }
    Ok(())
}

fn exchange_unsupported(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == errno(rustix::io::Errno::INVAL)
        || code == errno(rustix::io::Errno::NOSYS)
        || code == errno(rustix::io::Errno::OPNOTSUPP)
}

/// Owner first (changing it clears set-ID bits and file capabilities), then
/// mode, then extended attributes (`security.capability` last of all).
fn copy_metadata<F: Fs>(
    fs: &F,
    target: &F::File,
    st: &Stat,
    temp: &F::File,
    tst: &Stat,
    ctx: &Ctx,
) -> Result<(), Error> {
    if (tst.uid, tst.gid) != (st.uid, st.gid) {
        fs.set_owner(temp, st.uid, st.gid)
            .map_err(|e| ctx.fail("setting the new version's owner", e))?;
    }
    fs.set_mode(temp, st.mode)
        .map_err(|e| ctx.fail("setting the new version's mode", e))?;
    copy_xattrs(fs, target, temp).map_err(|(what, e)| ctx.fail(what, e))
}

/// Makes `to`'s extended attributes those of `from`: removes the ones `to`
/// inherited that `from` lacks, then copies every one of `from`'s, with
/// `security.capability` last (nothing after it may clear it). Call it after
/// the owner and mode are set. On failure, says what it was doing.
pub(crate) fn copy_xattrs<F: Fs>(
    fs: &F,
    from: &F::File,
    to: &F::File,
) -> Result<(), (&'static str, io::Error)> {
    let mut names = fs
        .xattr_names(from)
        .map_err(|e| ("listing extended attributes", e))?;
    // Capabilities last: nothing after them may clear them.
    names.sort_by_key(|n| n.as_bytes() == b"security.capability");
    let inherited = fs
        .xattr_names(to)
        .map_err(|e| ("listing the new version's extended attributes", e))?;
    for extra in inherited.iter().filter(|n| !names.contains(n)) {
        fs.remove_xattr(to, extra)
            .map_err(|e| ("removing an inherited extended attribute", e))?;
    }
    for n in &names {
        let value = match fs.get_xattr(from, n) {
            Ok(v) => v,
            // Removed between listing and reading: nothing to carry over.
            Err(e) if e.raw_os_error() == errno(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(("reading an extended attribute", e)),
        };
        fs.set_xattr(to, n, &value)
            .map_err(|e| ("copying an extended attribute", e))?;
    }
    Ok(())
}

/// Removes what interrupted patches left in `dir_path`.
pub(crate) fn recover_with<F: Fs>(fs: &F, dir_path: &Path) -> Result<RecoveryReport, Error> {
    let dir = fs
        .open_dir(dir_path)
        .map_err(Error::file(dir_path, "opening the directory"))?;
    let mut names = fs
        .list_dir(&dir)
        .map_err(Error::file(dir_path, "listing the directory"))?;
    names.retain(|n| n.as_bytes().starts_with(TEMP_PREFIX.as_bytes()));
    names.sort();
    let mut report = RecoveryReport::default();
    for name in names {
        let path = dir_path.join(&name);
        let st = match fs.stat_at(&dir, &name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::file(&path, "examining a leftover")(e)),
        };
        if st.kind != FileKind::Regular {
            report.skipped.push(path);
            continue;
        }
        let file = match fs.open_read(&dir, &name) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::file(&path, "opening a leftover")(e)),
        };
        let opened = fs
            .stat(&file)
            .map_err(Error::file(&path, "examining a leftover"))?;
        if !opened.same_inode(&st) {
            report.skipped.push(path);
            continue;
        }
        match fs.lock(&file, false) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                report.busy.push(path);
                continue;
            }
            Err(e) => return Err(Error::file(&path, "locking a leftover")(e)),
        }
        fs.unlink(&dir, &name)
            .map_err(Error::file(&path, "removing a leftover"))?;
        report.removed.push(path);
    }
    if !report.removed.is_empty() {
        fs.sync_dir(&dir)
            .map_err(Error::file(dir_path, "fsync of the directory"))?;
    }
    Ok(report)
}
