//! An in-memory file system with a live and a durable state, for power-cut tests.
//!
//! Persistence model (conservative POSIX, in the spirit of ALICE's abstract
//! persistence model and redb's crash tests):
//!
//! * a file's data, mode, owner and extended attributes become durable only at
//!   an `fsync` of that file; until then a crash may keep the durable version,
//!   the live version, or a torn one (the first half of the live data);
//! * a directory entry change (create, link, unlink, rename, exchange) becomes
//!   durable only at an `fsync` of that directory; until then a crash may keep
//!   any subset of the pending changes, applied in order (a rename or exchange
//!   itself is atomic: all or nothing);
//! * a rename between two directories is two changes, one in each directory;
//! * an `fsync` of a file does not make its name durable.
//!
//! Also compiled (without the test suites) under the `fuzzing` feature, for
//! the bundle fuzz checks in `crate::fuzzing`; some helpers are test-only.
#![cfg_attr(not(test), allow(dead_code))]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::fs::{FileKind, Fs, Space, Stat};

pub(crate) type Ino = usize;

/// What a crash can preserve of a file: data and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Content {
    pub(crate) data: Vec<u8>,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) xattrs: BTreeMap<OsString, Vec<u8>>,
}

impl Content {
    pub(crate) fn new(data: &[u8], mode: u32, uid: u32, gid: u32) -> Content {
        Content {
            data: data.to_vec(),
            mode,
            uid,
            gid,
            xattrs: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug)]
enum Node {
    File { live: Content, durable: Content },
    Symlink(PathBuf),
    Fifo,
    Dir,
}

#[derive(Clone, Debug)]
enum NsOp {
    Set(OsString, Option<Ino>),
    Rename(OsString, OsString),
    Exchange(OsString, OsString),
}

impl NsOp {
    fn apply(&self, entries: &mut BTreeMap<OsString, Ino>) {
        match self {
            NsOp::Set(name, Some(ino)) => {
                entries.insert(name.clone(), *ino);
            }
            NsOp::Set(name, None) => {
                entries.remove(name);
            }
            NsOp::Rename(from, to) => {
                if let Some(ino) = entries.remove(from) {
                    entries.insert(to.clone(), ino);
                }
            }
            NsOp::Exchange(a, b) => {
                if let (Some(&x), Some(&y)) = (entries.get(a), entries.get(b)) {
                    entries.insert(a.clone(), y);
                    entries.insert(b.clone(), x);
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct DirState {
    ino: Ino,
    live: BTreeMap<OsString, Ino>,
    durable: BTreeMap<OsString, Ino>,
    pending: Vec<NsOp>,
}

/// The whole modelled file system.
#[derive(Clone, Debug)]
pub(crate) struct Model {
    nodes: Vec<Node>,
    dirs: BTreeMap<PathBuf, DirState>,
    /// `renameat2(RENAME_EXCHANGE)` fails with `EINVAL` (vfat, older NFS).
    pub(crate) no_exchange: bool,
    /// Mounted read-only.
    pub(crate) read_only: bool,
    /// Free bytes.
    pub(crate) available: u64,
    /// Inodes whose `flock` another process holds.
    pub(crate) locked_by_other: BTreeSet<Ino>,
    /// Owner of files this process creates.
    pub(crate) creator: (u32, u32),
    /// Inodes from here on were not given to `Model::new`.
    first_created_dir: Option<Ino>,
}

/// A regular file handle: the inode it refers to.
#[derive(Debug)]
pub(crate) struct MemFile {
    ino: Ino,
}

fn err(code: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(code.raw_os_error())
}

impl Model {
    /// An empty model with the given directories.
    pub(crate) fn new(dirs: &[&str]) -> Model {
        let mut m = Model {
            nodes: Vec::new(),
            dirs: BTreeMap::new(),
            no_exchange: false,
            read_only: false,
            available: 1 << 30,
            locked_by_other: BTreeSet::new(),
            creator: (0, 0),
            first_created_dir: None,
        };
        for d in dirs {
            let ino = m.nodes.len();
            m.nodes.push(Node::Dir);
            m.dirs.insert(
                PathBuf::from(d),
                DirState {
                    ino,
                    live: BTreeMap::new(),
                    durable: BTreeMap::new(),
                    pending: Vec::new(),
                },
            );
        }
        m.first_created_dir = Some(m.nodes.len());
        m
    }

    fn add_node(&mut self, dir: &str, name: &str, node: Node) -> Ino {
        let ino = self.nodes.len();
        self.nodes.push(node);
        if let Some(d) = self.dirs.get_mut(Path::new(dir)) {
            d.live.insert(name.into(), ino);
            d.durable.insert(name.into(), ino);
        }
        ino
    }

    /// Adds a durable regular file.
    pub(crate) fn put_file(&mut self, dir: &str, name: &str, content: Content) -> Ino {
        self.add_node(
            dir,
            name,
            Node::File {
                live: content.clone(),
                durable: content,
            },
        )
    }

    /// Adds a durable symbolic link.
    pub(crate) fn put_symlink(&mut self, dir: &str, name: &str, target: &str) -> Ino {
        self.add_node(dir, name, Node::Symlink(PathBuf::from(target)))
    }

    /// Adds a durable FIFO.
    pub(crate) fn put_fifo(&mut self, dir: &str, name: &str) -> Ino {
        self.add_node(dir, name, Node::Fifo)
    }

    /// Adds a durable second name for an inode.
    pub(crate) fn put_link(&mut self, dir: &str, name: &str, ino: Ino) {
        if let Some(d) = self.dirs.get_mut(Path::new(dir)) {
            d.live.insert(name.into(), ino);
            d.durable.insert(name.into(), ino);
        }
    }

    /// The live content of `dir/name`, if it is a regular file.
    pub(crate) fn file(&self, dir: &str, name: &str) -> Option<&Content> {
        let ino = *self.dirs.get(Path::new(dir))?.live.get(OsStr::new(name))?;
        self.content(ino)
    }

    /// The live content of an inode, if it is a regular file.
    pub(crate) fn content(&self, ino: Ino) -> Option<&Content> {
        match self.nodes.get(ino)? {
            Node::File { live, .. } => Some(live),
            _ => None,
        }
    }

    /// The inode `dir/name` refers to.
    pub(crate) fn ino(&self, dir: &str, name: &str) -> Option<Ino> {
        self.dirs
            .get(Path::new(dir))?
            .live
            .get(OsStr::new(name))
            .copied()
    }

    /// All live names of a directory.
    pub(crate) fn names(&self, dir: &str) -> Vec<OsString> {
        self.dirs
            .get(Path::new(dir))
            .map(|d| d.live.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every state a power cut now could leave, each as a fresh model whose
    /// live and durable states are equal.
    pub(crate) fn crash_images(&self) -> Vec<Model> {
        // Namespace choices: per directory, a subset of its pending changes.
        let mut ns_choices: Vec<BTreeMap<PathBuf, BTreeMap<OsString, Ino>>> = vec![BTreeMap::new()];
        for (path, d) in &self.dirs {
            let n = d.pending.len();
            let masks: Vec<u64> = if n <= 10 {
                (0..(1u64 << n)).collect()
            } else {
                // Too many to enumerate: prefixes only (ordered journal).
                (0..=n).map(|k| (1u64 << k) - 1).collect()
            };
            let mut next = Vec::new();
            for base in &ns_choices {
                for &mask in &masks {
                    let mut entries = d.durable.clone();
                    for (i, op) in d.pending.iter().enumerate() {
                        if mask & (1 << i) != 0 {
                            op.apply(&mut entries);
                        }
                    }
                    let mut b = base.clone();
                    b.insert(path.clone(), entries);
                    next.push(b);
                }
            }
            ns_choices = next;
        }
        let mut images = Vec::new();
        for ns in ns_choices {
            // Data choices for every reachable file whose live state is not durable.
            let reachable: BTreeSet<Ino> = ns.values().flat_map(|e| e.values().copied()).collect();
            let dirty: Vec<Ino> = reachable
                .into_iter()
                .filter(|&i| matches!(self.nodes.get(i), Some(Node::File { live, durable }) if live != durable))
                .collect();
            let combos = 3usize.pow(dirty.len() as u32);
            for mut c in 0..combos {
                let mut nodes = self.nodes.clone();
                for &ino in &dirty {
                    let choice = c % 3;
                    c /= 3;
                    if let Some(Node::File { live, durable }) = nodes.get_mut(ino) {
                        let kept = match choice {
                            0 => durable.clone(),
                            1 => live.clone(),
                            _ => {
                                let mut torn = durable.clone();
                                torn.data = live
                                    .data
                                    .get(..live.data.len() / 2)
                                    .unwrap_or_default()
                                    .to_vec();
                                torn
                            }
                        };
                        *live = kept.clone();
                        *durable = kept;
                    }
                }
                let mut dirs = self.dirs.clone();
                for (path, entries) in &ns {
                    if let Some(d) = dirs.get_mut(path) {
                        d.live = entries.clone();
                        d.durable = entries.clone();
                        d.pending.clear();
                    }
                }
                images.push(Model {
                    nodes,
                    dirs,
                    no_exchange: self.no_exchange,
                    read_only: self.read_only,
                    available: self.available,
                    locked_by_other: BTreeSet::new(),
                    creator: self.creator,
                    first_created_dir: self.first_created_dir,
                });
            }
        }
        images
    }

    /// A bounded sample of the states a power cut now could leave (for
    /// workloads with too many pending changes to enumerate): over the
    /// pending namespace changes of all directories, none, all, each one
    /// alone, all but each one, and `random` seeded subsets; file data durable,
    /// live or torn (all three for "none" and "all", random otherwise).
    /// Directories made with `create_dir` whose entry did not survive vanish.
    pub(crate) fn crash_images_bounded(&self, random: usize, seed: u64) -> Vec<Model> {
        let ops: Vec<(PathBuf, usize)> = self
            .dirs
            .iter()
            .flat_map(|(p, d)| (0..d.pending.len()).map(move |i| (p.clone(), i)))
            .collect();
        let n = ops.len();
        let mut masks: Vec<Vec<bool>> = vec![vec![false; n], vec![true; n]];
        for i in 0..n {
            let mut one = vec![false; n];
            one[i] = true;
            masks.push(one);
            let mut but = vec![true; n];
            but[i] = false;
            masks.push(but);
        }
        let mut rng = seed | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..random {
            masks.push((0..n).map(|_| next() % 2 == 0).collect());
        }
        let mut images = Vec::new();
        for (mi, mask) in masks.iter().enumerate() {
            let data_modes: &[u64] = if mi < 2 { &[0, 1, 2] } else { &[3] };
            for &dm in data_modes {
                let mut img = self.clone();
                img.locked_by_other.clear();
                for (path, d) in img.dirs.iter_mut() {
                    let mut entries = d.durable.clone();
                    for (i, op) in d.pending.iter().enumerate() {
                        let pos = ops.iter().position(|(p, j)| p == path && *j == i);
                        if pos.map(|k| mask[k]).unwrap_or(false) {
                            op.apply(&mut entries);
                        }
                    }
                    d.live = entries.clone();
                    d.durable = entries;
                    d.pending.clear();
                }
                for node in img.nodes.iter_mut() {
                    if let Node::File { live, durable } = node {
                        if live == durable {
                            continue;
                        }
                        let choice = if dm == 3 { next() % 3 } else { dm };
                        let kept = match choice {
                            0 => durable.clone(),
                            1 => live.clone(),
                            _ => {
                                let mut torn = durable.clone();
                                torn.data = live
                                    .data
                                    .get(..live.data.len() / 2)
                                    .unwrap_or_default()
                                    .to_vec();
                                torn
                            }
                        };
                        *live = kept.clone();
                        *durable = kept;
                    }
                }
                img.drop_lost_dirs();
                images.push(img);
            }
        }
        images
    }

    /// One state a power cut now could leave, chosen by `pick`: its low two
    /// bits say none of the pending namespace changes (file data durable), all
    /// of them (file data live), or (2, 3) a pseudo-random subset seeded by
    /// the rest, with each unsynced file durable, live or torn at random.
    /// Cheaper than [`Model::crash_images_bounded`] when one image is wanted.
    pub(crate) fn crash_image(&self, pick: u64) -> Model {
        let mode = pick % 4;
        let mut rng = (pick >> 2).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut img = self.clone();
        img.locked_by_other.clear();
        for d in img.dirs.values_mut() {
            let mut entries = d.durable.clone();
            for op in &d.pending {
                let keep = match mode {
                    0 => false,
                    1 => true,
                    _ => next() % 2 == 0,
                };
                if keep {
                    op.apply(&mut entries);
                }
            }
            d.live = entries.clone();
            d.durable = entries;
            d.pending.clear();
        }
        for node in img.nodes.iter_mut() {
            if let Node::File { live, durable } = node {
                if live == durable {
                    continue;
                }
                let choice = match mode {
                    0 => 0,
                    1 => 1,
                    _ => next() % 3,
                };
                let kept = match choice {
                    0 => durable.clone(),
                    1 => live.clone(),
                    _ => {
                        let mut torn = durable.clone();
                        torn.data = live
                            .data
                            .get(..live.data.len() / 2)
                            .unwrap_or_default()
                            .to_vec();
                        torn
                    }
                };
                *live = kept.clone();
                *durable = kept;
            }
        }
        img.drop_lost_dirs();
        img
    }

    /// Every directory's path (but those removed with `remove_dir`).
    pub(crate) fn dir_paths(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .filter(|(p, d)| {
                !self.created(d.ino)
                    || match (p.parent().and_then(|pp| self.dirs.get(pp)), p.file_name()) {
                        (Some(pd), Some(name)) => pd.live.get(name) == Some(&d.ino),
                        _ => false,
                    }
            })
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Removes directories made with `create_dir` whose entry in the parent
    /// is gone (after a crash image was taken), and their descendants.
    fn drop_lost_dirs(&mut self) {
        loop {
            let lost: Vec<PathBuf> = self
                .dirs
                .iter()
                .filter(|(p, d)| {
                    if !self.created(d.ino) {
                        return false;
                    }
                    let parent = p.parent().and_then(|pp| self.dirs.get(pp));
                    match (parent, p.file_name()) {
                        (Some(pd), Some(name)) => pd.live.get(name) != Some(&d.ino),
                        _ => true,
                    }
                })
                .map(|(p, _)| p.clone())
                .collect();
            if lost.is_empty() {
                return;
            }
            for p in lost {
                self.dirs.remove(&p);
            }
        }
    }

    /// True for directory inodes made with `create_dir` (they follow the
    /// inodes of the directories given to `Model::new`).
    fn created(&self, ino: Ino) -> bool {
        ino >= self.first_created_dir.unwrap_or(usize::MAX)
            && matches!(self.nodes.get(ino), Some(Node::Dir))
    }

    fn dir(&self, path: &Path) -> io::Result<&DirState> {
        self.dirs
            .get(path)
            .ok_or_else(|| err(rustix::io::Errno::NOENT))
    }

    fn dir_mut(&mut self, path: &Path) -> io::Result<&mut DirState> {
        self.dirs
            .get_mut(path)
            .ok_or_else(|| err(rustix::io::Errno::NOENT))
    }

    fn lookup(&self, dir: &Path, name: &OsStr) -> io::Result<Ino> {
        self.dir(dir)?
            .live
            .get(name)
            .copied()
            .ok_or_else(|| err(rustix::io::Errno::NOENT))
    }

    fn nlink(&self, ino: Ino) -> u64 {
        self.dirs
            .values()
            .map(|d| d.live.values().filter(|&&i| i == ino).count() as u64)
            .sum()
    }

    fn stat_ino(&self, ino: Ino) -> io::Result<Stat> {
        let node = self
            .nodes
            .get(ino)
            .ok_or_else(|| err(rustix::io::Errno::NOENT))?;
        let (kind, size, mode, uid, gid) = match node {
            Node::File { live, .. } => (
                FileKind::Regular,
                live.data.len() as u64,
                live.mode,
                live.uid,
                live.gid,
            ),
            Node::Symlink(t) => (FileKind::Symlink, t.as_os_str().len() as u64, 0o777, 0, 0),
            Node::Fifo => (FileKind::Other("a FIFO"), 0, 0o644, 0, 0),
            Node::Dir => (FileKind::Directory, 0, 0o755, 0, 0),
        };
        Ok(Stat {
            kind,
            dev: 1,
            ino: ino as u64,
            nlink: self.nlink(ino).max(1),
            size,
            mode,
            uid,
            gid,
        })
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(err(rustix::io::Errno::ROFS))
        } else {
            Ok(())
        }
    }

    fn live_mut(&mut self, ino: Ino) -> io::Result<&mut Content> {
        match self.nodes.get_mut(ino) {
            Some(Node::File { live, .. }) => Ok(live),
            _ => Err(err(rustix::io::Errno::BADF)),
        }
    }

    fn record(&mut self, dir: &Path, op: NsOp) -> io::Result<()> {
        let d = self.dir_mut(dir)?;
        op.apply(&mut d.live);
        d.pending.push(op);
        Ok(())
    }
}

/// [`Fs`] over a [`Model`].
#[derive(Debug)]
pub(crate) struct MemFs {
    pub(crate) m: RefCell<Model>,
}

impl MemFs {
    pub(crate) fn new(m: Model) -> MemFs {
        MemFs { m: RefCell::new(m) }
    }
}

impl Fs for MemFs {
    type Dir = PathBuf;
    type File = MemFile;

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        let m = self.m.borrow();
        let (dir, name) = match (path.parent(), path.file_name()) {
            (Some(d), Some(n)) => (d, n),
            _ => return Ok(path.to_path_buf()),
        };
        let ino = m.lookup(dir, name)?;
        match m.nodes.get(ino) {
            Some(Node::Symlink(t)) => Ok(t.clone()),
            _ => Ok(path.to_path_buf()),
        }
    }

    fn open_dir(&self, path: &Path) -> io::Result<PathBuf> {
        self.m.borrow().dir(path)?;
        Ok(path.to_path_buf())
    }

    fn stat_at(&self, dir: &PathBuf, name: &OsStr) -> io::Result<Stat> {
        let m = self.m.borrow();
        if name == "." {
            let ino = m.dir(dir)?.ino;
            return m.stat_ino(ino);
        }
        let ino = m.lookup(dir, name)?;
        m.stat_ino(ino)
    }

    fn open_read(&self, dir: &PathBuf, name: &OsStr) -> io::Result<MemFile> {
        let m = self.m.borrow();
        let ino = m.lookup(dir, name)?;
        match m.nodes.get(ino) {
            Some(Node::Symlink(_)) => Err(err(rustix::io::Errno::LOOP)),
            Some(Node::Dir) => Err(err(rustix::io::Errno::ISDIR)),
            _ => Ok(MemFile { ino }),
        }
    }

    fn stat(&self, file: &MemFile) -> io::Result<Stat> {
        self.m.borrow().stat_ino(file.ino)
    }

    fn lock(&self, file: &MemFile, wait: bool) -> io::Result<()> {
        if self.m.borrow().locked_by_other.contains(&file.ino) {
            if wait {
                // A single-threaded model cannot wait for another process.
                return Err(err(rustix::io::Errno::DEADLK));
            }
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        Ok(())
    }

    fn space(&self, _dir: &PathBuf) -> io::Result<Space> {
        let m = self.m.borrow();
        Ok(Space {
            available: m.available,
            block: 4096,
            read_only: m.read_only,
        })
    }

    fn read_at(&self, file: &MemFile, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let m = self.m.borrow();
        let c = m
            .content(file.ino)
            .ok_or_else(|| err(rustix::io::Errno::BADF))?;
        let start = usize::try_from(offset).map_err(|_| err(rustix::io::Errno::INVAL))?;
        let src = c
            .data
            .get(start..start + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn create_new(&self, dir: &PathBuf, name: &OsStr) -> io::Result<MemFile> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        if m.dir(dir)?.live.contains_key(name) {
            return Err(err(rustix::io::Errno::EXIST));
        }
        let (uid, gid) = m.creator;
        let c = Content::new(b"", 0o600, uid, gid);
        let ino = m.nodes.len();
        m.nodes.push(Node::File {
            live: c.clone(),
            durable: c,
        });
        m.record(dir, NsOp::Set(name.to_os_string(), Some(ino)))?;
        Ok(MemFile { ino })
    }

    fn write_all(&self, file: &MemFile, data: &[u8]) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        let n = data.len() as u64;
        if m.available < n {
            return Err(err(rustix::io::Errno::NOSPC));
        }
        m.available -= n;
        m.live_mut(file.ino)?.data.extend_from_slice(data);
        Ok(())
    }

    fn set_owner(&self, file: &MemFile, uid: u32, gid: u32) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        let c = m.live_mut(file.ino)?;
        c.uid = uid;
        c.gid = gid;
        // Like Linux: changing the owner clears set-ID bits and capabilities.
        c.mode &= !0o6000;
        c.xattrs.remove(OsStr::new("security.capability"));
        Ok(())
    }

    fn set_mode(&self, file: &MemFile, mode: u32) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        m.live_mut(file.ino)?.mode = mode & 0o7777;
        Ok(())
    }

    fn xattr_names(&self, file: &MemFile) -> io::Result<Vec<OsString>> {
        let m = self.m.borrow();
        let c = m
            .content(file.ino)
            .ok_or_else(|| err(rustix::io::Errno::BADF))?;
        Ok(c.xattrs.keys().cloned().collect())
    }

    fn get_xattr(&self, file: &MemFile, name: &OsStr) -> io::Result<Vec<u8>> {
        let m = self.m.borrow();
        let c = m
            .content(file.ino)
            .ok_or_else(|| err(rustix::io::Errno::BADF))?;
        c.xattrs
            .get(name)
            .cloned()
            .ok_or_else(|| err(rustix::io::Errno::NODATA))
    }

    fn set_xattr(&self, file: &MemFile, name: &OsStr, value: &[u8]) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        m.live_mut(file.ino)?
            .xattrs
            .insert(name.to_os_string(), value.to_vec());
        Ok(())
    }

    fn remove_xattr(&self, file: &MemFile, name: &OsStr) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        m.live_mut(file.ino)?
            .xattrs
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| err(rustix::io::Errno::NODATA))
    }

    fn sync(&self, file: &MemFile) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        if let Some(Node::File { live, durable }) = m.nodes.get_mut(file.ino) {
            *durable = live.clone();
        }
        Ok(())
    }

    fn exchange(&self, dir: &PathBuf, a: &OsStr, b: &OsStr) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        if m.no_exchange {
            return Err(err(rustix::io::Errno::INVAL));
        }
        m.lookup(dir, a)?;
        m.lookup(dir, b)?;
        m.record(dir, NsOp::Exchange(a.to_os_string(), b.to_os_string()))
    }

    fn rename(
        &self,
        from_dir: &PathBuf,
        from: &OsStr,
        to_dir: &PathBuf,
        to: &OsStr,
    ) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        let ino = m.lookup(from_dir, from)?;
        m.dir(to_dir)?;
        if from_dir == to_dir {
            m.record(
                from_dir,
                NsOp::Rename(from.to_os_string(), to.to_os_string()),
            )
        } else {
            m.record(from_dir, NsOp::Set(from.to_os_string(), None))?;
            m.record(to_dir, NsOp::Set(to.to_os_string(), Some(ino)))
        }
    }

    fn link(
        &self,
        from_dir: &PathBuf,
        from: &OsStr,
        to_dir: &PathBuf,
        to: &OsStr,
    ) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        let ino = m.lookup(from_dir, from)?;
        if m.dir(to_dir)?.live.contains_key(to) {
            return Err(err(rustix::io::Errno::EXIST));
        }
        m.record(to_dir, NsOp::Set(to.to_os_string(), Some(ino)))
    }

    fn unlink(&self, dir: &PathBuf, name: &OsStr) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        m.lookup(dir, name)?;
        m.record(dir, NsOp::Set(name.to_os_string(), None))
    }

    fn sync_dir(&self, dir: &PathBuf) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        let d = m.dir_mut(dir)?;
        for op in std::mem::take(&mut d.pending) {
            op.apply(&mut d.durable);
        }
        Ok(())
    }

    fn list_dir(&self, dir: &PathBuf) -> io::Result<Vec<OsString>> {
        Ok(self.m.borrow().dir(dir)?.live.keys().cloned().collect())
    }

    fn open_dir_at(&self, dir: &PathBuf, name: &OsStr) -> io::Result<PathBuf> {
        let m = self.m.borrow();
        let path = dir.join(name);
        match m.dir(dir)?.live.get(name).map(|&i| m.nodes.get(i)) {
            Some(Some(Node::Symlink(_))) => Err(err(rustix::io::Errno::LOOP)),
            Some(Some(Node::Dir)) if m.dirs.contains_key(&path) => Ok(path),
            Some(_) => Err(err(rustix::io::Errno::NOTDIR)),
            // Directories made by `Model::new` have no entry in their parent;
            // one made by `create_dir` without an entry was removed.
            None if m.dirs.get(&path).is_some_and(|d| !m.created(d.ino)) => Ok(path),
            None => Err(err(rustix::io::Errno::NOENT)),
        }
    }

    fn create_dir(&self, dir: &PathBuf, name: &OsStr) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        let path = dir.join(name);
        let given = m.dirs.get(&path).is_some_and(|d| !m.created(d.ino));
        if m.dir(dir)?.live.contains_key(name) || given {
            return Err(err(rustix::io::Errno::EXIST));
        }
        let ino = m.nodes.len();
        m.nodes.push(Node::Dir);
        m.record(dir, NsOp::Set(name.to_os_string(), Some(ino)))?;
        m.dirs.insert(
            path,
            DirState {
                ino,
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
                pending: Vec::new(),
            },
        );
        Ok(())
    }
    fn remove_dir(&self, dir: &PathBuf, name: &OsStr) -> io::Result<()> {
        let mut m = self.m.borrow_mut();
        m.writable()?;
        let ino = m.lookup(dir, name)?;
        if !matches!(m.nodes.get(ino), Some(Node::Dir)) {
            return Err(err(rustix::io::Errno::NOTDIR));
        }
        if m.dirs
            .get(&dir.join(name))
            .is_some_and(|d| !d.live.is_empty())
        {
            return Err(err(rustix::io::Errno::NOTEMPTY));
        }
        // The directory's state stays: a crash image in which the removal
        // did not reach the disk still has it (empty).
        m.record(dir, NsOp::Set(name.to_os_string(), None))
    }
}
