//! The installer: stage, verify, commit under an intent journal; remove;
//! recover. Generic over the [`Fs`] seam so that the tests can cut the power
//! after any operation.
//!
//! Layout of the state directory (default `ROOT/.deltaswap/`):
//!
//! * `lock` — `flock`ed for the duration of every operation;
//! * `state` — the install state (highest sequence seen, baseline id,
//!   installed bundle and the components it touched), replaced by rename;
//! * `journal` — present only while an install or remove is under way;
//! * `base/` — the baseline copy of every component the installed bundle
//!   changed, named by the SHA-256 of its path (a hard link to the baseline
//!   inode, so the state directory must be on the root's file system).
//!
//! Install (and remove) runs in two phases:
//!
//! 1. *prepare*: plan (read-only: every live file and baseline copy is
//!    hashed and checked), write the journal with `committed = false`, link
//!    missing baseline copies, write each new version to
//!    `.deltaswap-stage.<i>.<name>` beside its target and verify it, `fsync`
//!    every staged file and every touched directory;
//! 2. *commit*: replace the journal by one with `committed = true` and `fsync`
//!    the state directory — the commit point — then rename every staged file
//!    over its target (or unlink removed targets), `fsync` the directories,
//!    write the new state, drop obsolete baseline copies, unlink the journal.
//!
//! Recovery reads the journal: before the commit point it removes the staged
//! files and new baseline copies (every target still has its old version);
//! after it, it finishes the commit (every step is idempotent).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::apply::PatchReader;
use crate::atomic::fs::{FileKind, Fs, FsSource, Stat};
use crate::atomic::protocol::copy_xattrs;
use crate::error::{Error, Subject};
use crate::hash::{Hasher, Sha256Digest};
use crate::limits::Limits;
use crate::source::Source;

use super::keys::hex;
use super::path::BundlePath;
use super::state::{Action, Entry, Installed, Journal, Op, State};
use super::wire::{Bundle, Component, ComponentKind, FileVersion, Payload};
use super::{InstallReport, Recovery, Status};

/// Prefix of staged new versions beside their targets.
pub(crate) const STAGE_PREFIX: &[u8] = b".deltaswap-stage.";
/// Default state directory name under the root.
pub(crate) const STATE_DIR: &str = ".deltaswap";
pub(crate) const BASE_DIR: &str = "base";
pub(crate) const STATE_FILE: &str = "state";
pub(crate) const STATE_TMP: &str = "state.tmp";
pub(crate) const JOURNAL: &str = "journal";
pub(crate) const JOURNAL_TMP: &str = "journal.tmp";
pub(crate) const LOCK: &str = "lock";
/// Largest state or journal file read back (both hold one line per component).
const MAX_STATE_LEN: u64 = 64 << 20;
/// Longest part of a target's name copied into its staging name.
const NAME_PART_MAX: usize = 96;
/// Attempts to take the state directory's lock before [`Error::Locked`], and
/// the pause between them (about 100 ms in all).
const LOCK_TRIES: u32 = 20;
const LOCK_PAUSE_MS: u64 = 5;
/// Read and write buffer.
const BUF: usize = 256 << 10;

/// Where the installer works.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) root: PathBuf,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) limits: Limits,
    pub(crate) expect_baseline: Option<String>,
    /// Protocol mutant for the tests' sensitivity checks (always `None`
    /// outside them).
    pub(crate) mutant: Mutant,
}

/// A deliberately broken protocol step, to show that the crash tests would
/// notice its absence (RELIABILITY C5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Mutant {
    /// The real protocol.
    #[default]
    None,
    /// No `fsync` of each staged file's data.
    SkipFileSync,
    /// No `fsync` of the directories holding staged files and new baseline
    /// copies before the commit point.
    SkipStageDirSync,
    /// No `fsync` of the state directory after the committed journal is
    /// renamed into place (the commit point).
    SkipCommitSync,
}

/// Open handles for one operation.
struct Ctx<'a, F: Fs> {
    fs: &'a F,
    root: PathBuf,
    state_path: PathBuf,
    state: F::Dir,
    base: F::Dir,
    /// Parent directories of components, by parent path ("" = root).
    dirs: BTreeMap<Vec<u8>, F::Dir>,
    /// Directories this run created, as root-relative components and the
    /// inode made, in the order of creation (removed again if the install
    /// fails before its commit point).
    created: Vec<(Vec<OsString>, Stat)>,
    _lock: F::File,
    mutant: Mutant,
}

fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

pub(crate) fn base_name(path: &BundlePath) -> OsString {
    OsString::from(hex(Sha256Digest::of(path.as_bytes()).as_bytes()))
}

pub(crate) fn stage_name(i: usize, name: &OsStr) -> OsString {
    let mut b = STAGE_PREFIX.to_vec();
    b.extend_from_slice(format!("{i}.").as_bytes());
    let n = name.as_bytes();
    b.extend_from_slice(n.get(..NAME_PART_MAX).unwrap_or(n));
    OsString::from_vec(b)
}

fn parent_key(path: &BundlePath) -> Vec<u8> {
    let b = path.as_bytes();
    match b.iter().rposition(|&c| c == b'/') {
        Some(i) => b.get(..i).unwrap_or_default().to_vec(),
        None => Vec::new(),
    }
}

impl<'a, F: Fs> Ctx<'a, F> {
    fn open(fs: &'a F, cfg: &Config) -> Result<Ctx<'a, F>, Error> {
        let (state_path, state) = match &cfg.state_dir {
            Some(p) => {
                let parent = p.parent().unwrap_or(Path::new("/"));
                let name = p.file_name().unwrap_or(OsStr::new(STATE_DIR));
                let pd = fs
                    .open_dir(parent)
                    .map_err(Error::file(parent, "opening the state directory's parent"))?;
                (p.clone(), open_or_create_dir(fs, &pd, name, p)?)
            }
            None => {
                let p = cfg.root.join(STATE_DIR);
                let root = fs
                    .open_dir(&cfg.root)
                    .map_err(Error::file(&cfg.root, "opening the root"))?;
                (
                    p.clone(),
                    open_or_create_dir(fs, &root, OsStr::new(STATE_DIR), &p)?,
                )
            }
        };
        let base_path = state_path.join(BASE_DIR);
        let base = open_or_create_dir(fs, &state, OsStr::new(BASE_DIR), &base_path)?;
        let lock_path = state_path.join(LOCK);
        let lock = match fs.open_read(&state, OsStr::new(LOCK)) {
            Ok(f) => f,
            Err(e) if not_found(&e) => {
                drop(
                    fs.create_new(&state, OsStr::new(LOCK))
                        .map_err(Error::file(&lock_path, "creating the lock file"))?,
                );
                fs.open_read(&state, OsStr::new(LOCK))
                    .map_err(Error::file(&lock_path, "opening the lock file"))?
            }
            Err(e) => return Err(Error::file(&lock_path, "opening the lock file")(e)),
        };
        // A lock held for a moment is waited for: a child process forked by
        // another thread keeps a copy of the previous operation's lock
        // descriptor until it execs (close-on-exec), and that must not be
        // reported as a concurrent installer.
        let mut tries = 0u32;
        loop {
            match fs.lock(&lock, false) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tries = tries.saturating_add(1);
                    if tries >= LOCK_TRIES {
                        return Err(Error::Locked { path: state_path });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(LOCK_PAUSE_MS));
                }
                Err(e) => return Err(Error::file(&lock_path, "locking the state directory")(e)),
            }
        }
        Ok(Ctx {
            fs,
            root: cfg.root.clone(),
            state_path,
            state,
            base,
            dirs: BTreeMap::new(),
            created: Vec::new(),
            _lock: lock,
            mutant: cfg.mutant,
        })
    }

    fn at(&self, path: &BundlePath) -> PathBuf {
        self.root.join(OsStr::from_bytes(path.as_bytes()))
    }

    /// Opens (and caches) the parent directory of `path`, walking from the
    /// root without following symbolic links.
    fn parent(&mut self, path: &BundlePath) -> Result<&F::Dir, Error> {
        if !self.open_parent(path, false)? {
            let mut p = self.at(path);
            p.pop();
            return Err(Error::file(p, "opening a component's directory")(
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        self.dir_of(path)
    }

    /// Opens (and caches) the parent directory of `path`, walking from the
    /// root without following symbolic links. A missing directory is created
    /// (and its parent `fsync`ed) when `create` is set; otherwise the answer
    /// is `false`.
    fn open_parent(&mut self, path: &BundlePath, create: bool) -> Result<bool, Error> {
        let key = parent_key(path);
        if self.dirs.contains_key(&key) {
            return Ok(true);
        }
        let mut cur = self
            .fs
            .open_dir(&self.root)
            .map_err(Error::file(&self.root, "opening the root"))?;
        let mut so_far = self.root.clone();
        let mut comps = Vec::new();
        for comp in path.parents() {
            so_far.push(comp);
            comps.push(comp.to_os_string());
            let opened = match self.fs.open_dir_at(&cur, comp) {
                Err(e) if not_found(&e) && create => {
                    self.fs
                        .create_dir(&cur, comp)
                        .map_err(Error::file(&so_far, "creating a component's directory"))?;
                    let made = match self.fs.stat_at(&cur, comp) {
                        Ok(st) => st,
                        Err(e) => {
                            // Unrecorded, it would stay after the failure.
                            let _ = self.fs.remove_dir(&cur, comp);
                            return Err(Error::file(&so_far, "examining a created directory")(e));
                        }
                    };
                    self.created.push((comps.clone(), made));
                    self.fs
                        .sync_dir(&cur)
                        .map_err(Error::file(&so_far, "syncing a created directory's parent"))?;
                    self.fs.open_dir_at(&cur, comp)
                }
                r => r,
            };
            cur = match opened {
                Ok(d) => d,
                Err(e) => {
                    let link = e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
                        || matches!(self.fs.stat_at(&cur, comp), Ok(st) if st.kind == FileKind::Symlink);
                    if link {
                        return Err(Error::Symlink { path: so_far });
                    }
                    if not_found(&e) && !create {
                        return Ok(false);
                    }
                    return Err(Error::file(so_far, "opening a component's directory")(e));
                }
            };
        }
        self.dirs.insert(key, cur);
        Ok(true)
    }

    /// After a failed install (before its commit point, once the staged
    /// files are gone): removes the directories this run created, deepest
    /// first, each only if it is empty, and syncs its parent. Best effort: a
    /// directory that cannot be removed stays, as it would have before. A
    /// crash before this point leaves them (recovery does not know them).
    fn remove_created_dirs(&mut self) {
        self.dirs.clear();
        for (comps, made) in std::mem::take(&mut self.created).iter().rev() {
            let Some((name, parents)) = comps.split_last() else {
                continue;
            };
            let parent = self.fs.open_dir(&self.root).and_then(|root| {
                parents
                    .iter()
                    .try_fold(root, |d, c| self.fs.open_dir_at(&d, c))
            });
            // Only the directory made, not one put in its place since.
            let ours = |p: &F::Dir| self.fs.stat_at(p, name).is_ok_and(|st| st.same_inode(made));
            if let Ok(parent) = parent {
                if ours(&parent) && self.fs.remove_dir(&parent, name).is_ok() {
                    let _ = self.fs.sync_dir(&parent);
                }
            }
        }
    }

    fn read_small(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let path = self.state_path.join(name);
        let f = match self.fs.open_read(&self.state, OsStr::new(name)) {
            Ok(f) => f,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(Error::file(path, "opening")(e)),
        };
        let st = self.fs.stat(&f).map_err(Error::file(&path, "examining"))?;
        if st.size > MAX_STATE_LEN {
            return Err(Error::StateCorrupt {
                path,
                reason: "larger than 64 MiB",
            });
        }
        let mut buf = vec![0u8; usize::try_from(st.size).unwrap_or(0)];
        self.fs
            .read_at(&f, 0, &mut buf)
            .map_err(Error::file(&path, "reading"))?;
        Ok(Some(buf))
    }

    /// Writes `data` to `name` in the state directory by temp file, fsync,
    /// rename and directory fsync.
    fn write_replace(&self, name: &str, tmp: &str, data: &[u8]) -> Result<(), Error> {
        let path = self.state_path.join(name);
        self.unlink_quiet(&self.state, OsStr::new(tmp), &self.state_path.join(tmp))?;
        let f = self
            .fs
            .create_new(&self.state, OsStr::new(tmp))
            .map_err(Error::file(&path, "creating"))?;
        let written = self
            .fs
            .write_all(&f, data)
            .map_err(Error::file(&path, "writing"))
            .and_then(|()| self.fs.sync(&f).map_err(Error::file(&path, "syncing")));
        drop(f);
        if let Err(e) = written {
            let _ = self.fs.unlink(&self.state, OsStr::new(tmp));
            return Err(e);
        }
        self.fs
            .rename(&self.state, OsStr::new(tmp), &self.state, OsStr::new(name))
            .map_err(Error::file(&path, "renaming into place"))?;
        self.sync_state()
    }

    fn sync_state(&self) -> Result<(), Error> {
        self.fs
            .sync_dir(&self.state)
            .map_err(Error::file(&self.state_path, "syncing the state directory"))
    }

    fn unlink_quiet(&self, dir: &F::Dir, name: &OsStr, path: &Path) -> Result<(), Error> {
        match self.fs.unlink(dir, name) {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(Error::file(path, "removing")(e)),
        }
    }

    fn load_state(&self) -> Result<State, Error> {
        match self.read_small(STATE_FILE)? {
            None => Ok(State::default()),
            Some(b) => State::decode(&b).ok_or_else(|| Error::StateCorrupt {
                path: self.state_path.join(STATE_FILE),
                reason: "bad magic, checksum or encoding",
            }),
        }
    }

    fn load_journal(&self) -> Result<Option<Journal>, Error> {
        match self.read_small(JOURNAL)? {
            None => Ok(None),
            Some(b) => Journal::decode(&b)
                .map(Some)
                .ok_or_else(|| Error::StateCorrupt {
                    path: self.state_path.join(JOURNAL),
                    reason: "bad magic, checksum or encoding",
                }),
        }
    }

    /// The version of `name` in `dir` (`None`: absent). Refuses a symbolic
    /// link or a non-regular file.
    fn version_at(
        &self,
        dir: &F::Dir,
        name: &OsStr,
        path: &Path,
    ) -> Result<Option<FileVersion>, Error> {
        let st = match self.fs.stat_at(dir, name) {
            Ok(st) => st,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(Error::file(path, "examining")(e)),
        };
        match st.kind {
            FileKind::Regular => {}
            FileKind::Symlink => {
                return Err(Error::Symlink {
                    path: path.to_path_buf(),
                })
            }
            FileKind::Directory => {
                return Err(Error::NotRegularFile {
                    path: path.to_path_buf(),
                    kind: "a directory",
                })
            }
            FileKind::Other(kind) => {
                return Err(Error::NotRegularFile {
                    path: path.to_path_buf(),
                    kind,
                })
            }
        }
        let f = match self.fs.open_read(dir, name) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(Error::Symlink {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(Error::file(path, "opening")(e)),
        };
        let len = self
            .fs
            .stat(&f)
            .map_err(Error::file(path, "examining"))?
            .size;
        let src = FsSource {
            fs: self.fs,
            file: &f,
            len,
        };
        let mut h = Hasher::new();
        // Small components (most of a security response) need small buffers.
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(BUF).clamp(1, BUF)];
        let mut pos = 0u64;
        while pos < len {
            let n = usize::try_from(len.saturating_sub(pos))
                .unwrap_or(BUF)
                .min(buf.len());
            let chunk = buf.get_mut(..n).unwrap_or_default();
            src.read_at(pos, chunk)
                .map_err(Error::file(path, "reading"))?;
            h.update(chunk);
            pos = pos.saturating_add(n as u64);
        }
        Ok(Some(FileVersion {
            len,
            sha256: h.finish(),
        }))
    }

    fn dir_of(&self, path: &BundlePath) -> Result<&F::Dir, Error> {
        self.dirs
            .get(&parent_key(path))
            .ok_or(Error::Bug("component directory not opened"))
    }

    fn sync_dirs(&self, ops: &[Op]) -> Result<(), Error> {
        let keys: BTreeSet<Vec<u8>> = ops.iter().map(|o| parent_key(&o.path)).collect();
        for k in keys {
            let d = self
                .dirs
                .get(&k)
                .ok_or(Error::Bug("component directory not opened"))?;
            self.fs.sync_dir(d).map_err(Error::file(
                self.root.join(OsStr::from_bytes(&k)),
                "syncing the directory",
            ))?;
        }
        self.fs.sync_dir(&self.base).map_err(Error::file(
            self.state_path.join(BASE_DIR),
            "syncing the directory",
        ))
    }
}

fn open_or_create_dir<F: Fs>(
    fs: &F,
    parent: &F::Dir,
    name: &OsStr,
    path: &Path,
) -> Result<F::Dir, Error> {
    match fs.open_dir_at(parent, name) {
        Ok(d) => return Ok(d),
        Err(e) if not_found(&e) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(Error::Symlink {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(Error::file(path, "opening the state directory")(e)),
    }
    fs.create_dir(parent, name)
        .map_err(Error::file(path, "creating the state directory"))?;
    fs.sync_dir(parent)
        .map_err(Error::file(path, "syncing the state directory's parent"))?;
    fs.open_dir_at(parent, name)
        .map_err(Error::file(path, "opening the state directory"))
}

/// Writes through the seam.
struct FsWriter<'a, F: Fs> {
    fs: &'a F,
    file: &'a F::File,
}

impl<F: Fs> Write for FsWriter<'_, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.fs.write_all(self.file, buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a component's new version comes from.
enum How<'m> {
    /// The target already is the wanted version.
    Nothing,
    /// Unlink the target.
    Delete,
    /// Hard-link the baseline copy as the staged file.
    LinkBase,
    /// Apply a payload to the live file, the baseline copy, or the empty file.
    Apply {
        payload: &'m Payload,
        from: From,
        mode: u32,
        target: FileVersion,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    Live,
    BaseCopy,
    Empty,
}

struct Step<'m> {
    path: BundlePath,
    how: How<'m>,
    /// Link the live file as the baseline copy during prepare.
    link_base: bool,
    /// The parent directory is missing: create it during prepare.
    mkdirs: bool,
}

fn version_text(v: Option<FileVersion>) -> String {
    match v {
        Some(v) => format!("{} ({} bytes)", v.sha256, v.len),
        None => "absent".to_string(),
    }
}

fn modified(path: &BundlePath, expected: Option<FileVersion>, found: Option<FileVersion>) -> Error {
    Error::ComponentModified {
        path: path.to_string(),
        expected: version_text(expected),
        found: version_text(found),
    }
}

/// Plans the move from `state` to the bundle (or to the baseline when
/// `bundle` is `None`). Read-only.
fn plan<'m, F: Fs>(
    ctx: &mut Ctx<'_, F>,
    state: &State,
    bundle: Option<&'m [Component]>,
) -> Result<(Vec<Step<'m>>, Vec<Entry>), Error> {
    let old: BTreeMap<&BundlePath, &Entry> = state
        .installed
        .iter()
        .flat_map(|i| i.entries.iter())
        .map(|e| (&e.path, e))
        .collect();
    let new: BTreeMap<&BundlePath, &Component> = bundle
        .unwrap_or_default()
        .iter()
        .map(|c| (&c.path, c))
        .collect();
    let paths: BTreeSet<&BundlePath> = old.keys().chain(new.keys()).copied().collect();
    let mut steps = Vec::new();
    let mut entries = Vec::new();
    for path in paths {
        let full = ctx.at(path);
        let name = path.file_name().to_os_string();
        // A missing parent directory: the file is absent; the directory is
        // created during prepare if a new version is staged there.
        let present = ctx.open_parent(path, false)?;
        let live = if present {
            let dir = ctx.dir_of(path)?;
            ctx.version_at(dir, &name, &full)?
        } else {
            None
        };
        let prev = old.get(path).copied();
        // What is there now must be what the state says was installed, or
        // (untouched component) the bundle's baseline.
        let baseline = match prev {
            Some(e) => {
                if live != e.cur {
                    return Err(modified(path, e.cur, live));
                }
                if let Some(b) = e.base {
                    let copy = ctx.version_at(
                        &ctx.base,
                        &base_name(path),
                        &ctx.state_path.join(BASE_DIR).join(base_name(path)),
                    )?;
                    if copy != Some(b) {
                        return Err(Error::StateCorrupt {
                            path: ctx.state_path.join(BASE_DIR).join(base_name(path)),
                            reason: "baseline copy missing or changed",
                        });
                    }
                }
                e.base
            }
            None => live,
        };
        let comp = new.get(path).copied();
        let how = match comp {
            None => {
                // Back to the baseline.
                match baseline {
                    Some(_) if live == baseline => How::Nothing,
                    Some(_) => How::LinkBase,
                    None if live.is_none() => How::Nothing,
                    None => How::Delete,
                }
            }
            Some(c) => {
                // The delta carried from `v`, if any (patch components only:
                // an added file's single payload is from the empty file).
                let pick = |v: Option<FileVersion>| {
                    v.and_then(|v| {
                        c.payloads
                            .iter()
                            .find(|p| c.kind == ComponentKind::Patch && p.from == v)
                    })
                };
                // The component is accepted when the version the installer
                // starts from (the retained copy, else the live file) is
                // the bundle's baseline or a version it carries a delta
                // from, or when the live file already is the new version.
                // Anything else is a local modification.
                // An absent live file is patched by a delta from the empty
                // file (an earlier level removed a file the new one has).
                let pick_live = || match live {
                    Some(_) => pick(live).map(|p| (p, From::Live)),
                    None => pick(Some(FileVersion::of(b""))).map(|p| (p, From::Empty)),
                };
                let accepted = baseline == c.baseline
                    || pick(baseline).is_some()
                    || pick_live().is_some()
                    || live == c.target;
                if !accepted {
                    return Err(modified(path, c.baseline, baseline));
                }
                match c.kind {
                    ComponentKind::Remove if live.is_none() => How::Nothing,
                    ComponentKind::Remove => How::Delete,
                    ComponentKind::Add | ComponentKind::Patch => {
                        let target = c.target.ok_or(Error::Bug("component without target"))?;
                        // (A delta from the live file that is already the
                        // target only changes the mode: apply it once.)
                        if live == Some(target) && (prev.is_some() || pick_live().is_none()) {
                            How::Nothing
                        } else if prev.is_some()
                            && baseline == Some(target)
                            && pick(baseline).is_none()
                        {
                            // Back to the retained copy (a delta from it, if
                            // carried, also sets the bundle's mode).
                            How::LinkBase
                        } else {
                            let (payload, from) = if c.kind == ComponentKind::Add {
                                (c.payloads.first(), From::Empty)
                            } else if let Some(p) = pick(baseline).filter(|_| prev.is_some()) {
                                (Some(p), From::BaseCopy)
                            } else if let Some((p, from)) = pick_live() {
                                (Some(p), from)
                            } else {
                                (None, From::Live)
                            };
                            let payload =
                                payload.ok_or_else(|| modified(path, c.baseline, live))?;
                            How::Apply {
                                payload,
                                from,
                                mode: c.mode,
                                target,
                            }
                        }
                    }
                }
            }
        };
        let link_base = comp.is_some() && prev.is_none() && baseline.is_some();
        if comp.is_some() {
            entries.push(Entry {
                path: path.clone(),
                base: baseline,
                cur: comp.and_then(|c| c.target),
            });
        }
        let staged = matches!(how, How::LinkBase | How::Apply { .. });
        if !present && !staged {
            // Nothing to do in a directory that does not exist.
            continue;
        }
        steps.push(Step {
            path: path.clone(),
            how,
            link_base,
            mkdirs: !present,
        });
    }
    Ok((steps, entries))
}

/// Stages one step; returns the op to journal.
fn stage_step<F: Fs, S: Source>(
    ctx: &Ctx<'_, F>,
    bundle: Option<&Bundle<S>>,
    limits: &Limits,
    step: &Step<'_>,
    op: &Op,
) -> Result<(), Error> {
    let path = &step.path;
    let full = ctx.at(path);
    let name = path.file_name();
    let dir = ctx.dir_of(path)?;
    let bname = base_name(path);
    let bpath = ctx.state_path.join(BASE_DIR).join(&bname);
    if step.link_base {
        ctx.unlink_quiet(&ctx.base, &bname, &bpath)?;
        ctx.fs
            .link(dir, name, &ctx.base, &bname)
            .map_err(Error::file(&bpath, "keeping the baseline copy"))?;
    }
    match &step.how {
        How::Nothing | How::Delete => Ok(()),
        How::LinkBase => {
            ctx.unlink_quiet(dir, &op.stage, &full)?;
            ctx.fs
                .link(&ctx.base, &bname, dir, &op.stage)
                .map_err(Error::file(&full, "staging the baseline copy"))
        }
        How::Apply {
            payload,
            from,
            mode,
            target,
        } => {
            let bundle = bundle.ok_or(Error::Bug("apply step without a bundle"))?;
            ctx.unlink_quiet(dir, &op.stage, &full)?;
            // The file being replaced (absent for an added file): its owner
            // and extended attributes carry over to the staged file.
            let live = match ctx.fs.open_read(dir, name) {
                Ok(f) => {
                    let st = ctx.fs.stat(&f).map_err(Error::file(&full, "examining"))?;
                    Some((f, st))
                }
                Err(e) if not_found(&e) => None,
                Err(e) => return Err(Error::file(&full, "opening")(e)),
            };
            let base_copy;
            let src_file = match from {
                From::Empty => None,
                From::Live => {
                    let (f, st) = live
                        .as_ref()
                        .ok_or_else(|| Error::Changed { path: full.clone() })?;
                    Some((f, st.size))
                }
                From::BaseCopy => {
                    let f = ctx
                        .fs
                        .open_read(&ctx.base, &bname)
                        .map_err(Error::file(&bpath, "opening"))?;
                    let st = ctx.fs.stat(&f).map_err(Error::file(&bpath, "examining"))?;
                    base_copy = f;
                    Some((&base_copy, st.size))
                }
            };
            let staged = ctx
                .fs
                .create_new(dir, &op.stage)
                .map_err(Error::file(&full, "creating the staged file"))?;
            let mut pr = bundle.payload_reader(payload);
            let reader = PatchReader::with_limits(&mut pr, limits.clone())?;
            let h = reader.header();
            if h.old_sha256() != payload.from.sha256
                || h.old_len() != payload.from.len
                || h.new_sha256() != target.sha256
                || h.new_len() != target.len
            {
                return Err(Error::PayloadMismatch {
                    component: path.to_string(),
                });
            }
            let verified = {
                let mut w = BufWriter::with_capacity(
                    usize::try_from(target.len).unwrap_or(BUF).clamp(1, BUF),
                    FsWriter {
                        fs: ctx.fs,
                        file: &staged,
                    },
                );
                let r = match &src_file {
                    Some((f, len)) => reader.apply_to(
                        &FsSource {
                            fs: ctx.fs,
                            file: f,
                            len: *len,
                        },
                        &mut w,
                    ),
                    None => reader.apply_to(&[][..], &mut w),
                };
                // The payload's bytes were checked when the bundle was opened;
                // if applying them fails, read the rest of the payload: bytes
                // that no longer match (the bundle file changed since) are
                // reported as such, not as whatever the changed bytes did.
                if let Err(
                    e @ (Error::Format(_)
                    | Error::LimitExceeded { .. }
                    | Error::HashMismatch {
                        subject: Subject::Target,
                        ..
                    }
                    | Error::SizeMismatch {
                        subject: Subject::Target,
                        ..
                    }),
                ) = r
                {
                    let _ = io::copy(&mut pr, &mut io::sink());
                    return Err(pr.check(path).err().unwrap_or(e));
                }
                let v = r.map_err(|e| match e {
                    Error::Io { source, .. } => {
                        Error::file(&full, "writing the staged file")(source)
                    }
                    Error::HashMismatch {
                        subject: Subject::Source,
                        ..
                    }
                    | Error::SizeMismatch {
                        subject: Subject::Source,
                        ..
                    } => Error::Changed { path: full.clone() },
                    e => e,
                })?;
                w.flush()
                    .map_err(Error::file(&full, "writing the staged file"))?;
                v
            };
            pr.check(path)?;
            if verified.sha256() != target.sha256 || verified.len() != target.len {
                return Err(Error::HashMismatch {
                    subject: Subject::Target,
                    expected: target.sha256,
                    found: verified.sha256(),
                });
            }
            // Owner first (changing it clears set-ID bits and capabilities),
            // then the bundle's mode, then the extended attributes.
            if let Some((_, st)) = &live {
                let sst = ctx
                    .fs
                    .stat(&staged)
                    .map_err(Error::file(&full, "examining the staged file"))?;
                if (sst.uid, sst.gid) != (st.uid, st.gid) {
                    ctx.fs
                        .set_owner(&staged, st.uid, st.gid)
                        .map_err(Error::file(&full, "setting the staged file's owner"))?;
                }
            }
            ctx.fs
                .set_mode(&staged, *mode)
                .map_err(Error::file(&full, "setting the staged file's mode"))?;
            if let Some((f, _)) = &live {
                copy_xattrs(ctx.fs, f, &staged).map_err(|(what, e)| Error::file(&full, what)(e))?;
            }
            if ctx.mutant == Mutant::SkipFileSync {
                return Ok(());
            }
            ctx.fs
                .sync(&staged)
                .map_err(Error::file(&full, "syncing the staged file"))
        }
    }
}

/// A run that failed before its commit point: undo it and, if that worked,
/// remove the directories it created (best effort; the caller reports the
/// original error).
fn abandon<F: Fs>(ctx: &mut Ctx<'_, F>, j: &Journal) {
    if undo(ctx, j).is_ok() {
        ctx.remove_created_dirs();
    }
}

/// Undoes a prepared (uncommitted) operation: removes staged files and the
/// baseline copies it made, then the journal.
fn undo<F: Fs>(ctx: &mut Ctx<'_, F>, j: &Journal) -> Result<(), Error> {
    // A directory the operation was to create may not exist: nothing was
    // staged in it.
    let mut ops = Vec::new();
    for op in &j.ops {
        if ctx.open_parent(&op.path, false)? {
            ops.push(op.clone());
        }
    }
    for op in &ops {
        let full = ctx.at(&op.path);
        let dir = ctx.dir_of(&op.path)?;
        if !op.stage.is_empty() {
            ctx.unlink_quiet(dir, &op.stage, &full)?;
        }
        if op.base_created {
            let b = base_name(&op.path);
            ctx.unlink_quiet(&ctx.base, &b, &ctx.state_path.join(BASE_DIR).join(&b))?;
        }
    }
    ctx.sync_dirs(&ops)?;
    ctx.unlink_quiet(
        &ctx.state,
        OsStr::new(JOURNAL_TMP),
        &ctx.state_path.join(JOURNAL_TMP),
    )?;
    ctx.unlink_quiet(
        &ctx.state,
        OsStr::new(JOURNAL),
        &ctx.state_path.join(JOURNAL),
    )?;
    ctx.sync_state()
}

/// Finishes a committed operation. Every step is idempotent.
fn roll_forward<F: Fs>(ctx: &mut Ctx<'_, F>, j: &Journal) -> Result<(), Error> {
    for op in &j.ops {
        ctx.parent(&op.path)?;
    }
    for op in &j.ops {
        let full = ctx.at(&op.path);
        let dir = ctx.dir_of(&op.path)?;
        let name = op.path.file_name();
        match op.action {
            Action::Keep => {}
            Action::Replace => match ctx.fs.stat_at(dir, &op.stage) {
                Ok(_) => ctx
                    .fs
                    .rename(dir, &op.stage, dir, name)
                    .map_err(Error::file(&full, "renaming the staged file into place"))?,
                Err(e) if not_found(&e) => {} // done before the crash
                Err(e) => return Err(Error::file(&full, "examining the staged file")(e)),
            },
            Action::Delete => ctx.unlink_quiet(dir, name, &full)?,
        }
    }
    ctx.sync_dirs(&j.ops)?;
    ctx.write_replace(STATE_FILE, STATE_TMP, &j.new_state.encode())?;
    let keep: BTreeSet<OsString> = j
        .new_state
        .installed
        .iter()
        .flat_map(|i| i.entries.iter())
        .filter(|e| e.base.is_some())
        .map(|e| base_name(&e.path))
        .collect();
    let names = ctx
        .fs
        .list_dir(&ctx.base)
        .map_err(Error::file(ctx.state_path.join(BASE_DIR), "listing"))?;
    let base_path = ctx.state_path.join(BASE_DIR);
    for n in names {
        if !keep.contains(&n) {
            ctx.unlink_quiet(&ctx.base, &n, &base_path.join(&n))?;
        }
    }
    ctx.fs
        .sync_dir(&ctx.base)
        .map_err(Error::file(&base_path, "syncing the directory"))?;
    ctx.unlink_quiet(
        &ctx.state,
        OsStr::new(JOURNAL),
        &ctx.state_path.join(JOURNAL),
    )?;
    ctx.sync_state()
}

/// Removes temporary files of the state directory and finishes or undoes an
/// interrupted operation.
fn recover_locked<F: Fs>(ctx: &mut Ctx<'_, F>) -> Result<Recovery, Error> {
    for tmp in [JOURNAL_TMP, STATE_TMP] {
        ctx.unlink_quiet(&ctx.state, OsStr::new(tmp), &ctx.state_path.join(tmp))?;
    }
    match ctx.load_journal()? {
        None => Ok(Recovery::Nothing),
        Some(j) if j.committed => {
            roll_forward(ctx, &j)?;
            Ok(Recovery::Completed)
        }
        Some(j) => {
            undo(ctx, &j)?;
            Ok(Recovery::RolledBack)
        }
    }
}

pub(crate) fn recover_with<F: Fs>(fs: &F, cfg: &Config) -> Result<Recovery, Error> {
    let mut ctx = Ctx::open(fs, cfg)?;
    recover_locked(&mut ctx)
}

/// Installs `bundle` (or removes the installed bundle when `None`).
pub(crate) fn run_with<F: Fs, S: Source>(
    fs: &F,
    cfg: &Config,
    bundle: Option<&Bundle<S>>,
) -> Result<InstallReport, Error> {
    if bundle.is_some_and(|b| !b.verified) {
        return Err(Error::BadSignature {
            key_id: bundle.map(|b| hex(&b.key_id())).unwrap_or_default(),
        });
    }
    let mut ctx = Ctx::open(fs, cfg)?;
    let id = bundle.map(|b| b.id()).unwrap_or(Sha256Digest([0; 32]));
    if let Some(j) = ctx.load_journal()? {
        if j.bundle != id {
            return Err(Error::ForeignJournal { journal: j.bundle });
        }
        recover_locked(&mut ctx)?;
    }
    let state = ctx.load_state()?;
    let new_state = match bundle {
        Some(b) => {
            let m = b.manifest();
            if let Some(i) = &state.installed {
                if i.id == id {
                    return Ok(InstallReport {
                        label: i.label.clone(),
                        sequence: i.sequence,
                        changed: 0,
                        already: true,
                    });
                }
            }
            let system = cfg
                .expect_baseline
                .clone()
                .unwrap_or_else(|| state.baseline.clone());
            if (!system.is_empty() && system != m.baseline)
                || (!state.baseline.is_empty() && state.baseline != m.baseline)
            {
                return Err(Error::WrongBaseline {
                    bundle: m.baseline.clone(),
                    system: if system.is_empty() {
                        state.baseline.clone()
                    } else {
                        system
                    },
                });
            }
            if m.sequence <= state.highest {
                return Err(Error::Downgrade {
                    sequence: m.sequence,
                    highest: state.highest,
                });
            }
            State {
                highest: m.sequence,
                baseline: m.baseline.clone(),
                installed: None,
            }
        }
        None => match &state.installed {
            None => {
                return Ok(InstallReport {
                    label: String::new(),
                    sequence: 0,
                    changed: 0,
                    already: true,
                })
            }
            Some(_) => State {
                highest: state.highest,
                baseline: state.baseline.clone(),
                installed: None,
            },
        },
    };
    let comps = bundle.map(|b| b.manifest().components());
    let (steps, entries) = plan(&mut ctx, &state, comps)?;
    let mut new_state = new_state;
    if let Some(b) = bundle {
        new_state.installed = Some(Installed {
            id,
            sequence: b.manifest().sequence,
            label: b.manifest().label.clone(),
            entries,
        });
    }
    let ops: Vec<Op> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (action, staged) = match s.how {
                How::Nothing => (Action::Keep, false),
                How::Delete => (Action::Delete, false),
                How::LinkBase | How::Apply { .. } => (Action::Replace, true),
            };
            Op {
                path: s.path.clone(),
                stage: if staged {
                    stage_name(i, s.path.file_name())
                } else {
                    OsString::new()
                },
                action,
                base_created: s.link_base,
            }
        })
        .collect();
    let mut journal = Journal {
        committed: false,
        bundle: id,
        new_state,
        ops,
    };
    let changed = journal
        .ops
        .iter()
        .filter(|o| o.action != Action::Keep)
        .count();
    // Prepare.
    if let Err(e) = ctx.write_replace(JOURNAL, JOURNAL_TMP, &journal.encode()) {
        abandon(&mut ctx, &journal);
        return Err(e);
    }
    let staged = (|ctx: &mut Ctx<'_, F>| {
        for (step, op) in steps.iter().zip(&journal.ops) {
            if step.mkdirs {
                ctx.open_parent(&step.path, true)?;
            }
            stage_step(ctx, bundle, &cfg.limits, step, op)?;
        }
        if ctx.mutant == Mutant::SkipStageDirSync {
            return Ok(());
        }
        ctx.sync_dirs(&journal.ops)
    })(&mut ctx);
    if let Err(e) = staged {
        abandon(&mut ctx, &journal);
        return Err(e);
    }
    // Commit point: the journal says "committed" durably.
    journal.committed = true;
    let data = journal.encode();
    let jpath = ctx.state_path.join(JOURNAL);
    let before = (|| {
        ctx.unlink_quiet(
            &ctx.state,
            OsStr::new(JOURNAL_TMP),
            &ctx.state_path.join(JOURNAL_TMP),
        )?;
        let f = ctx
            .fs
            .create_new(&ctx.state, OsStr::new(JOURNAL_TMP))
            .map_err(Error::file(&jpath, "creating"))?;
        ctx.fs
            .write_all(&f, &data)
            .map_err(Error::file(&jpath, "writing"))?;
        ctx.fs.sync(&f).map_err(Error::file(&jpath, "syncing"))?;
        Ok::<(), Error>(())
    })();
    if let Err(e) = before {
        journal.committed = false;
        abandon(&mut ctx, &journal);
        return Err(e);
    }
    if let Err(e) = ctx.fs.rename(
        &ctx.state,
        OsStr::new(JOURNAL_TMP),
        &ctx.state,
        OsStr::new(JOURNAL),
    ) {
        journal.committed = false;
        abandon(&mut ctx, &journal);
        return Err(Error::file(jpath, "committing the journal")(e));
    }
    let commit_sync = match ctx.mutant {
        Mutant::SkipCommitSync => Ok(()),
        _ => ctx.sync_state(),
    };
    let after = commit_sync.and_then(|()| roll_forward(&mut ctx, &journal));
    if let Err(e) = after {
        return Err(Error::DurabilityUnknown {
            path: ctx.state_path.clone(),
            operation: "finishing the commit (run recovery)",
            source: io::Error::other(e.to_string()),
        });
    }
    let (label, sequence) = match bundle {
        Some(b) => (b.manifest().label.clone(), b.manifest().sequence),
        None => state
            .installed
            .as_ref()
            .map(|i| (i.label.clone(), i.sequence))
            .unwrap_or_default(),
    };
    Ok(InstallReport {
        label,
        sequence,
        changed,
        already: false,
    })
}

pub(crate) fn status_with<F: Fs>(fs: &F, cfg: &Config) -> Result<Status, Error> {
    let ctx = Ctx::open(fs, cfg)?;
    let state = ctx.load_state()?;
    let journal = ctx.read_small(JOURNAL)?.is_some();
    Ok(Status { state, journal })
}
