//! Fuzz checks of the bundle installer. **Not part of the API**: compiled only
//! with the `fuzzing` feature, hidden from the documentation, no semver promise;
//! never enable it in a product.
//!
//! Two checkers, driven by the fuzz targets `bundle_model` and `bundle_recover`
//! (`fuzz/fuzz_targets/`, which decode the fuzzer's bytes into the input types
//! here with `fuzz/src/bundle_inputs.rs`) and replayed by
//! `tests/fuzz_regressions_bundle.rs`:
//!
//! * `bundle_model`: a sequence of installs, removes, recoveries, power cuts
//!   and I/O errors on the in-memory live/durable file-system model, checked
//!   after every step against an abstract model (installed bundle, highest
//!   sequence number);
//! * `bundle_recover`: hostile contents of the state directory's `state`,
//!   `journal` and `journal.tmp` files next to a small installed tree, then
//!   `recover`, `status`, `install` and `remove`.
//!
//! Both run every file-system call through `Strict`, which panics when the
//! installer hands the file system a name that is not one path component.
//!
//! Every function here **panics when a property is violated**: that is how a
//! fuzzer reports a finding, and it is the only reason these functions panic.
//! The installer itself must never panic, whatever the input.
//!
//! Also `always_piped`, for the apply fuzz checks: it sends small results
//! down the path that large ones take.
#![allow(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::atomic::fs::{Fs, Space, Stat};
use crate::atomic::tests::faulty::{Faulty, Plan};
use crate::atomic::tests::model::{Content, MemFs, Model};
use crate::bundle::install::{
    base_name, recover_with, run_with, status_with, Config, Mutant, BASE_DIR, JOURNAL, JOURNAL_TMP,
    LOCK, STAGE_PREFIX, STATE_FILE, STATE_TMP,
};
use crate::bundle::state::Journal;
use crate::bundle::wire::{
    assemble, put_version, Bundle, Component, ComponentKind, FileVersion, Manifest, Payload,
};
use crate::bundle::{BundlePath, InstallReport, Recovery, SecretKey, Status};
use crate::error::Error;
use crate::hash::Sha256Digest;
use crate::limits::Limits;

// ---------------------------------------------------------------------------
// The fixture: a small baseline tree and six signed bundles, built in memory.

type Tree = BTreeMap<&'static str, Vec<u8>>;

/// Every path any fixture tree has.
const PATHS: [&str; 7] = [
    "lib/c0",
    "lib/c1",
    "lib/c2",
    "bin/c3",
    "lib/n5",
    "bin/n6",
    "opt/new/tool",
];
const ROOT: &str = "/r";
const BASELINE_ID: &str = "26.3";

/// One fixture bundle.
struct FixBundle {
    tree: Tree,
    bundle: Bundle<Vec<u8>>,
    sequence: u64,
    for_baseline: bool,
}

struct Fixture {
    baseline: Tree,
    /// 0 (a) seq 1: patches c0, removes c2, adds n5;
    /// 1 (b) seq 2: c0 again, c1, removes c2, adds n6 (also from a);
    /// 2 (c) seq 3: c3, adds opt/new/tool in new directories (also from a, b);
    /// 3 (u) seq 4: back to the baseline (also from a, b, c);
    /// 4 (b') seq 2: c1 otherwise (also from a): a replay of b's number;
    /// 5 (x) seq 10: for another baseline ("26.4", another c0).
    bundles: Vec<FixBundle>,
    /// The model at the baseline, nothing installed (bundle_model).
    start: Model,
    /// Every file version of the fixture, for the hostile encodings.
    versions: Vec<FileVersion>,
}

fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i.wrapping_mul(31) + usize::from(seed) * 97) % 251) as u8 ^ seed)
        .collect()
}

fn edit(base: &[u8], seed: u8) -> Vec<u8> {
    let mut v = base.to_vec();
    for b in v.iter_mut().skip(usize::from(seed % 16)).step_by(40) {
        *b ^= seed | 1;
    }
    v.extend_from_slice(&[seed; 5]);
    v
}

/// Adds a payload `from` → `to` to `payloads` / `blobs`.
fn add_payload(
    payloads: &mut Vec<Payload>,
    blobs: &mut Vec<Vec<u8>>,
    offset: &mut u64,
    from: &[u8],
    to: &[u8],
) -> Result<(), Error> {
    let b = crate::diff::diff(from, to)?;
    let len = b.len() as u64;
    payloads.push(Payload {
        from: FileVersion::of(from),
        offset: *offset,
        len,
        sha256: Sha256Digest::of(&b),
    });
    *offset = offset.saturating_add(len);
    blobs.push(b);
    Ok(())
}

/// A bundle from `old` to `new` with deltas from the `earlier` levels, by the
/// rules of `BundleBuilder` (which works on directories, not in memory).
fn build(
    label: &str,
    baseline: &str,
    sequence: u64,
    old: &Tree,
    new: &Tree,
    earlier: &[&Tree],
    key: &SecretKey,
) -> Result<Vec<u8>, Error> {
    let paths: BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
    let mut components = Vec::new();
    let mut blobs = Vec::new();
    let mut offset = 0u64;
    for p in paths {
        let path = BundlePath::new(p.as_bytes())?;
        let mut payloads = Vec::new();
        let c = match (old.get(p), new.get(p)) {
            (Some(o), Some(n)) => {
                if o != n {
                    add_payload(&mut payloads, &mut blobs, &mut offset, o, n)?;
                }
                for t in earlier {
                    let e = t.get(p).map_or(&[][..], |v| &v[..]);
                    let v = FileVersion::of(e);
                    if e != &n[..] && e != &o[..] && payloads.iter().all(|pl| pl.from != v) {
                        add_payload(&mut payloads, &mut blobs, &mut offset, e, n)?;
                    }
                }
                if payloads.is_empty() {
                    continue;
                }
                Component {
                    path,
                    kind: ComponentKind::Patch,
                    mode: 0o644,
                    baseline: Some(FileVersion::of(o)),
                    target: Some(FileVersion::of(n)),
                    payloads,
                }
            }
            (None, Some(n)) => {
                add_payload(&mut payloads, &mut blobs, &mut offset, b"", n)?;
                Component {
                    path,
                    kind: ComponentKind::Add,
                    mode: 0o644,
                    baseline: None,
                    target: Some(FileVersion::of(n)),
                    payloads,
                }
            }
            (Some(o), None) => Component {
                path,
                kind: ComponentKind::Remove,
                mode: 0,
                baseline: Some(FileVersion::of(o)),
                target: None,
                payloads,
            },
            (None, None) => continue,
        };
        components.push(c);
    }
    let m = Manifest {
        label: label.to_string(),
        baseline: baseline.to_string(),
        sequence,
        created: 0,
        components,
    };
    let refs: Vec<&[u8]> = blobs.iter().map(|b| b.as_slice()).collect();
    assemble(&m, &refs, key)
}

fn split(p: &str) -> (String, &str) {
    match p.rsplit_once('/') {
        Some((d, n)) => (format!("{ROOT}/{d}"), n),
        None => (ROOT.to_string(), p),
    }
}

/// Puts the files of `t` under the root of `m`.
fn put_tree(m: &mut Model, t: &Tree) {
    for (p, d) in t {
        let (dir, name) = split(p);
        m.put_file(&dir, name, Content::new(d, 0o644, 0, 0));
    }
}

fn make_fixture() -> Result<Fixture, Error> {
    let key = SecretKey::from_bytes(&[7; 32]);
    let mut base = Tree::new();
    base.insert("lib/c0", blob(1, 160));
    base.insert("lib/c1", blob(2, 120));
    base.insert("lib/c2", blob(3, 90));
    base.insert("bin/c3", blob(4, 200));
    let get = |t: &Tree, p: &str| t.get(p).cloned().unwrap_or_default();
    let mut a = base.clone();
    a.insert("lib/c0", edit(&get(&base, "lib/c0"), 3));
    a.remove("lib/c2");
    a.insert("lib/n5", blob(50, 70));
    let mut b = base.clone();
    b.insert("lib/c0", edit(&get(&a, "lib/c0"), 11));
    b.insert("lib/c1", edit(&get(&base, "lib/c1"), 5));
    b.remove("lib/c2");
    b.insert("bin/n6", blob(60, 50));
    let mut c = base.clone();
    c.insert("bin/c3", edit(&get(&base, "bin/c3"), 9));
    c.insert("opt/new/tool", blob(70, 40));
    let u = base.clone();
    let mut b2 = base.clone();
    b2.insert("lib/c1", edit(&get(&base, "lib/c1"), 13));
    let mut other_base = base.clone();
    other_base.insert("lib/c0", blob(9, 160));
    let mut x = other_base.clone();
    x.insert("lib/c0", edit(&get(&other_base, "lib/c0"), 2));

    type Spec<'t> = (
        &'static str,
        &'static str,
        u64,
        &'t Tree,
        &'t Tree,
        Vec<&'t Tree>,
    );
    let specs: [Spec<'_>; 6] = [
        ("26.3 (a)", BASELINE_ID, 1, &base, &a, vec![]),
        ("26.3 (b)", BASELINE_ID, 2, &base, &b, vec![&a]),
        ("26.3 (c)", BASELINE_ID, 3, &base, &c, vec![&a, &b]),
        ("26.3 (u)", BASELINE_ID, 4, &base, &u, vec![&a, &b, &c]),
        ("26.3 (b')", BASELINE_ID, 2, &base, &b2, vec![&a]),
        ("26.4 (x)", "26.4", 10, &other_base, &x, vec![]),
    ];
    let mut bundles = Vec::new();
    let mut versions = vec![
        FileVersion::of(b""),
        FileVersion {
            len: u64::MAX,
            sha256: Sha256Digest([0; 32]),
        },
        FileVersion::of(SECRET),
    ];
    for (label, bid, seq, old, new, earlier) in specs {
        let bytes = build(label, bid, seq, old, new, &earlier, &key)?;
        let bundle = Bundle::open(bytes, &[key.public_key()])?;
        versions.extend(new.values().map(|d| FileVersion::of(d)));
        bundles.push(FixBundle {
            tree: new.clone(),
            bundle,
            sequence: seq,
            for_baseline: bid == BASELINE_ID,
        });
    }
    versions.extend(base.values().map(|d| FileVersion::of(d)));
    versions.sort_by_key(|v| (v.len, v.sha256.0));
    versions.dedup();
    let mut start = Model::new(&[ROOT, "/r/lib", "/r/bin"]);
    put_tree(&mut start, &base);
    Ok(Fixture {
        baseline: base,
        bundles,
        start,
        versions,
    })
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| match make_fixture() {
        Ok(f) => f,
        Err(e) => panic!("fuzz fixture: {e}"),
    })
}

/// Builds the fixtures (so that a heap measurement of the first input does
/// not count them).
pub fn warm_up() {
    let _ = fixture();
    let _ = recover_starts();
}

fn config(state_dir: Option<&str>) -> Config {
    Config {
        root: PathBuf::from(ROOT),
        state_dir: state_dir.map(PathBuf::from),
        limits: Limits::default(),
        expect_baseline: None,
        mutant: mutant(),
    }
}

/// The protocol mutant the checks run with: `DELTASWAP_FUZZ_MUTANT=file`,
/// `dir` or `commit` leaves out a durability step of the install protocol
/// (see `install::Mutant`), to show that the checks notice (the seed corpus
/// of `bundle_model` fails for each). Unset: the real protocol.
fn mutant() -> Mutant {
    static M: OnceLock<Mutant> = OnceLock::new();
    *M.get_or_init(|| match std::env::var("DELTASWAP_FUZZ_MUTANT").as_deref() {
        Ok("file") => Mutant::SkipFileSync,
        Ok("dir") => Mutant::SkipStageDirSync,
        Ok("commit") => Mutant::SkipCommitSync,
        _ => Mutant::None,
    })
}

// ---------------------------------------------------------------------------
// Strict: every name handed to the file system is one path component.

/// An [`Fs`] wrapper that panics when a name argument is not a single path
/// component (empty, `..`, containing `/` or NUL; `.` only for `stat_at`):
/// on a real file system such a name would reach outside the directory the
/// installer opened (and checked for symbolic links).
pub(crate) struct Strict<'a, F>(pub(crate) &'a F);

fn one_component(op: &str, name: &OsStr, dot_ok: bool) {
    let b = name.as_bytes();
    let bad =
        b.is_empty() || b == b".." || (b == b"." && !dot_ok) || b.contains(&b'/') || b.contains(&0);
    assert!(
        !bad,
        "the installer called {op} with the name {name:?}, which is not one path component"
    );
}

impl<F: Fs> Fs for Strict<'_, F> {
    type Dir = F::Dir;
    type File = F::File;

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        self.0.canonicalize(path)
    }
    fn open_dir(&self, path: &Path) -> io::Result<F::Dir> {
        self.0.open_dir(path)
    }
    fn stat_at(&self, dir: &F::Dir, name: &OsStr) -> io::Result<Stat> {
        one_component("stat_at", name, true);
        self.0.stat_at(dir, name)
    }
    fn open_read(&self, dir: &F::Dir, name: &OsStr) -> io::Result<F::File> {
        one_component("open_read", name, false);
        self.0.open_read(dir, name)
    }
    fn stat(&self, file: &F::File) -> io::Result<Stat> {
        self.0.stat(file)
    }
    fn lock(&self, file: &F::File, wait: bool) -> io::Result<()> {
        self.0.lock(file, wait)
    }
    fn space(&self, dir: &F::Dir) -> io::Result<Space> {
        self.0.space(dir)
    }
    fn read_at(&self, file: &F::File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_at(file, offset, buf)
    }
    fn create_new(&self, dir: &F::Dir, name: &OsStr) -> io::Result<F::File> {
        one_component("create_new", name, false);
        self.0.create_new(dir, name)
    }
    fn write_all(&self, file: &F::File, data: &[u8]) -> io::Result<()> {
        self.0.write_all(file, data)
    }
    fn set_owner(&self, file: &F::File, uid: u32, gid: u32) -> io::Result<()> {
        self.0.set_owner(file, uid, gid)
    }
    fn set_mode(&self, file: &F::File, mode: u32) -> io::Result<()> {
        self.0.set_mode(file, mode)
    }
    fn xattr_names(&self, file: &F::File) -> io::Result<Vec<OsString>> {
        self.0.xattr_names(file)
    }
    fn get_xattr(&self, file: &F::File, name: &OsStr) -> io::Result<Vec<u8>> {
        self.0.get_xattr(file, name)
    }
    fn set_xattr(&self, file: &F::File, name: &OsStr, value: &[u8]) -> io::Result<()> {
        self.0.set_xattr(file, name, value)
    }
    fn remove_xattr(&self, file: &F::File, name: &OsStr) -> io::Result<()> {
        self.0.remove_xattr(file, name)
    }
    fn sync(&self, file: &F::File) -> io::Result<()> {
        self.0.sync(file)
    }
    fn exchange(&self, dir: &F::Dir, a: &OsStr, b: &OsStr) -> io::Result<()> {
        one_component("exchange", a, false);
        one_component("exchange", b, false);
        self.0.exchange(dir, a, b)
    }
    fn rename(
        &self,
        from_dir: &F::Dir,
        from: &OsStr,
        to_dir: &F::Dir,
        to: &OsStr,
    ) -> io::Result<()> {
        one_component("rename", from, false);
        one_component("rename", to, false);
        self.0.rename(from_dir, from, to_dir, to)
    }
    fn link(&self, from_dir: &F::Dir, from: &OsStr, to_dir: &F::Dir, to: &OsStr) -> io::Result<()> {
        one_component("link", from, false);
        one_component("link", to, false);
        self.0.link(from_dir, from, to_dir, to)
    }
    fn unlink(&self, dir: &F::Dir, name: &OsStr) -> io::Result<()> {
        one_component("unlink", name, false);
        self.0.unlink(dir, name)
    }
    fn sync_dir(&self, dir: &F::Dir) -> io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn list_dir(&self, dir: &F::Dir) -> io::Result<Vec<OsString>> {
        self.0.list_dir(dir)
    }
    fn open_dir_at(&self, dir: &F::Dir, name: &OsStr) -> io::Result<F::Dir> {
        one_component("open_dir_at", name, false);
        self.0.open_dir_at(dir, name)
    }
    fn create_dir(&self, dir: &F::Dir, name: &OsStr) -> io::Result<()> {
        one_component("create_dir", name, false);
        self.0.create_dir(dir, name)
    }
    fn remove_dir(&self, dir: &F::Dir, name: &OsStr) -> io::Result<()> {
        one_component("remove_dir", name, false);
        self.0.remove_dir(dir, name)
    }
}

// ---------------------------------------------------------------------------
// bundle_model

/// An installer operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Install fixture bundle `i % 6` (see the fixture above).
    Install(u8),
    /// Remove the installed bundle.
    Remove,
    /// Recover.
    Recover,
}

/// One step of `bundle_model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run the operation without faults.
    Run(Act),
    /// Read the status.
    Status,
    /// Cut the power after `after` file-system operations of `act`; the
    /// machine comes back with the crash image chosen by `pick`
    /// (`Model::crash_image`), not yet recovered.
    Crash { act: Act, after: u16, pick: u64 },
    /// File-system operation `at` of `act` fails with errno number
    /// `ERRNOS[errno % 4]` (and every later one with `persistent`); then the
    /// machine syncs everything (no power cut).
    Fail {
        act: Act,
        at: u16,
        errno: u8,
        persistent: bool,
    },
}

/// The errors an I/O fault injects: EIO, ENOSPC, EROFS, EACCES.
pub const ERRNOS: [i32; 4] = [5, 28, 30, 13];

/// Steps after which `bundle_model` stops.
pub const MAX_STEPS: usize = 32;

/// What the installer must hold: the installed bundle and the highest
/// sequence number seen. The root's tree is the installed bundle's tree, or
/// the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Abs {
    installed: Option<usize>,
    highest: u64,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// No journal: the root is exactly the tree of this state.
    Clean(Abs),
    /// A journal for `jid` awaits recovery: recovery must lead to `new` if
    /// it is committed, to `old` if not.
    Pending {
        old: Abs,
        new: Abs,
        jid: Sha256Digest,
        committed: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Downgrade,
    WrongBaseline,
    Modified,
    Foreign,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pred {
    Already,
    Refused(Refusal),
    Change(Abs),
}

fn refusal(e: &Error) -> Option<Refusal> {
    match e {
        Error::Downgrade { .. } => Some(Refusal::Downgrade),
        Error::WrongBaseline { .. } => Some(Refusal::WrongBaseline),
        Error::ComponentModified { .. } => Some(Refusal::Modified),
        Error::ForeignJournal { .. } => Some(Refusal::Foreign),
        _ => None,
    }
}

/// An error a fault may cause (besides the expected refusal).
fn machine_error(e: &Error) -> bool {
    matches!(
        e,
        Error::File { .. }
            | Error::Io { .. }
            | Error::NoSpace { .. }
            | Error::DurabilityUnknown { .. }
    )
}

enum Done {
    Report(InstallReport),
    Recovered(Recovery),
}

struct Checker {
    fx: &'static Fixture,
    cfg: Config,
    /// The step being checked, for the messages.
    at: String,
}

fn bundle_index(i: u8) -> usize {
    usize::from(i) % 6
}

impl Checker {
    fn id(&self, act: Act) -> Option<Sha256Digest> {
        match act {
            Act::Install(i) => self.fx.bundles.get(bundle_index(i)).map(|b| b.bundle.id()),
            Act::Remove => Some(Sha256Digest([0; 32])),
            Act::Recover => None,
        }
    }

    fn act<F: Fs>(&self, fs: &F, act: Act) -> Result<Done, Error> {
        let fs = Strict(fs);
        match act {
            Act::Install(i) => {
                let b = self
                    .fx
                    .bundles
                    .get(bundle_index(i))
                    .map(|b| &b.bundle)
                    .unwrap_or_else(|| panic!("no fixture bundle {i}"));
                run_with(&fs, &self.cfg, Some(b)).map(Done::Report)
            }
            Act::Remove => run_with::<_, Vec<u8>>(&fs, &self.cfg, None).map(Done::Report),
            Act::Recover => recover_with(&fs, &self.cfg).map(Done::Recovered),
        }
    }

    fn predict(&self, a: Abs, act: Act) -> Pred {
        match act {
            Act::Recover => Pred::Already,
            Act::Remove => match a.installed {
                None => Pred::Already,
                Some(_) => Pred::Change(Abs {
                    installed: None,
                    highest: a.highest,
                }),
            },
            Act::Install(i) => {
                let i = bundle_index(i);
                let Some(b) = self.fx.bundles.get(i) else {
                    panic!("no fixture bundle {i}")
                };
                if a.installed == Some(i) {
                    Pred::Already
                } else if !b.for_baseline {
                    // The baseline id is learnt at the first install.
                    Pred::Refused(if a.highest > 0 {
                        Refusal::WrongBaseline
                    } else {
                        Refusal::Modified
                    })
                } else if b.sequence <= a.highest {
                    Pred::Refused(Refusal::Downgrade)
                } else {
                    Pred::Change(Abs {
                        installed: Some(i),
                        highest: b.sequence,
                    })
                }
            }
        }
    }

    fn tree(&self, a: Abs) -> &'static Tree {
        match a.installed.and_then(|i| self.fx.bundles.get(i)) {
            Some(b) => &b.tree,
            None => &self.fx.baseline,
        }
    }

    fn status(&self, m: &Model) -> Status {
        let fs = MemFs::new(m.clone());
        match status_with(&Strict(&fs), &self.cfg) {
            Ok(s) => s,
            Err(e) => panic!("{}: status failed: {e}", self.at),
        }
    }

    fn matches(&self, st: &Status, a: Abs) -> bool {
        st.highest_sequence() == a.highest
            && st.installed_id()
                == a.installed
                    .and_then(|i| self.fx.bundles.get(i))
                    .map(|b| b.bundle.id())
    }

    /// The root holds exactly the tree of `a`.
    fn check_tree(&self, m: &Model, a: Abs, what: &str) {
        let want = self.tree(a);
        for p in PATHS {
            let (dir, name) = split(p);
            let have = m.file(&dir, name).map(|c| &c.data[..]);
            if have != want.get(p).map(|v| &v[..]) {
                panic!(
                    "{}: {what}: {p} is not the version of {a:?} (mixed or wrong tree)",
                    self.at
                );
            }
        }
    }

    /// No staged files, no unexpected state files, baseline copies exactly
    /// those the state accounts for, each the recorded version.
    fn check_strays(&self, m: &Model, allow_tmp: bool) {
        for d in m.dir_paths() {
            if d.starts_with(ROOT) && !d.starts_with("/r/.deltaswap") {
                for n in m.names(&d.to_string_lossy()) {
                    if n.as_bytes().starts_with(STAGE_PREFIX) {
                        panic!("{}: staged file left: {}/{n:?}", self.at, d.display());
                    }
                }
            }
        }
        let sd = "/r/.deltaswap";
        for n in m.names(sd) {
            let ok = [LOCK, STATE_FILE, BASE_DIR].iter().any(|x| n == *x)
                || (allow_tmp && [JOURNAL_TMP, STATE_TMP].iter().any(|x| n == *x));
            if !ok {
                panic!(
                    "{}: unexpected entry in the state directory: {n:?}",
                    self.at
                );
            }
        }
        let st = self.status(m);
        let mut want = BTreeMap::new();
        for (path, base, _) in st.components() {
            if let Some(b) = base {
                match BundlePath::new(path.as_bytes()) {
                    Ok(p) => want.insert(base_name(&p), b),
                    Err(e) => panic!("{}: state names {path:?}: {e}", self.at),
                };
            }
        }
        let bd = format!("{sd}/{BASE_DIR}");
        let have = m.names(&bd);
        if have.len() != want.len() || have.iter().any(|n| !want.contains_key(n)) {
            panic!(
                "{}: baseline copies {have:?}, the state accounts for {:?}",
                self.at,
                want.keys().collect::<Vec<_>>()
            );
        }
        for (n, v) in want {
            let c = m
                .file(&bd, &n.to_string_lossy())
                .map(|c| FileVersion::of(&c.data));
            if c != Some(v) {
                panic!(
                    "{}: baseline copy {n:?} is not the recorded version",
                    self.at
                );
            }
        }
    }

    fn journal(&self, m: &Model) -> Option<Journal> {
        let c = m.file("/r/.deltaswap", JOURNAL)?;
        match Journal::decode(&c.data) {
            Some(j) => Some(j),
            None => panic!("{}: an undecodable journal was left", self.at),
        }
    }

    /// After a fault or a crash: the machine holds `old` or `new` (only `new`
    /// when `!allow_old`, or when the operation returned Ok), or a journal
    /// for `jid` awaits recovery.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        m: &Model,
        old: Abs,
        new: Abs,
        allow_old: bool,
        was_ok: bool,
        jid: Option<Sha256Digest>,
        was_committed: bool,
    ) -> Phase {
        if let Some(j) = self.journal(m) {
            assert!(!was_ok, "{}: Ok, but a journal is left", self.at);
            match jid {
                Some(id) => assert!(
                    j.bundle == id,
                    "{}: journal for {}, expected {id}",
                    self.at,
                    j.bundle
                ),
                None => panic!("{}: a journal appeared", self.at),
            }
            assert!(
                j.committed || !was_committed,
                "{}: a committed journal became uncommitted",
                self.at
            );
            return Phase::Pending {
                old,
                new,
                jid: j.bundle,
                committed: j.committed,
            };
        }
        let st = self.status(m);
        let which = if self.matches(&st, new) {
            new
        } else if allow_old && self.matches(&st, old) {
            old
        } else {
            panic!(
                "{}: install state (installed {:?}, highest {}) is neither {old:?} nor {new:?} (old allowed: {allow_old})",
                self.at,
                st.installed_label(),
                st.highest_sequence()
            )
        };
        assert!(
            !was_ok || which == new,
            "{}: the operation returned Ok but the machine is at {old:?} (durability)",
            self.at
        );
        self.check_tree(m, which, "after the fault");
        self.check_strays(m, true);
        Phase::Clean(which)
    }

    /// The error of a faulty run: a machine error or the refusal expected.
    fn check_fault_error(&self, r: &Result<Done, Error>, expected: Option<Refusal>) {
        if let Err(e) = r {
            assert!(
                machine_error(e) || (expected.is_some() && refusal(e) == expected),
                "{}: unexpected error under a fault: {e:?}",
                self.at
            );
        }
    }

    fn step(&mut self, m: Model, phase: Phase, step: Step) -> (Model, Phase) {
        match (phase, step) {
            (Phase::Clean(a), Step::Status) | (Phase::Pending { old: a, .. }, Step::Status) => {
                let st = self.status(&m);
                let pending = matches!(phase, Phase::Pending { .. });
                assert!(
                    st.recovery_pending() == pending,
                    "{}: status says recovery pending = {}",
                    self.at,
                    st.recovery_pending()
                );
                if !pending {
                    assert!(self.matches(&st, a), "{}: status is not {a:?}", self.at);
                }
                (m, phase)
            }
            (Phase::Clean(a), Step::Run(act)) => {
                let fs = MemFs::new(m);
                let r = self.act(&fs, act);
                let m = fs.m.into_inner();
                match (self.predict(a, act), r) {
                    (Pred::Already, Ok(Done::Recovered(Recovery::Nothing))) => {
                        self.check_strays(&m, false);
                    }
                    (Pred::Already, Ok(Done::Report(rep))) if rep.already_done() => {
                        self.check_strays(&m, true);
                    }
                    (Pred::Refused(k), Err(e)) if refusal(&e) == Some(k) => {
                        self.check_strays(&m, true);
                    }
                    (Pred::Change(new), Ok(Done::Report(rep))) if !rep.already_done() => {
                        let st = self.status(&m);
                        assert!(self.matches(&st, new), "{}: state is not {new:?}", self.at);
                        self.check_tree(&m, new, "after Ok");
                        self.check_strays(&m, false);
                        assert!(self.journal(&m).is_none(), "{}: journal after Ok", self.at);
                        return (m, Phase::Clean(new));
                    }
                    (p, Ok(Done::Report(rep))) => {
                        panic!("{}: expected {p:?}, got {rep:?}", self.at)
                    }
                    (p, Ok(Done::Recovered(r))) => {
                        panic!("{}: expected {p:?}, got recovery {r:?}", self.at)
                    }
                    (p, Err(e)) => panic!("{}: expected {p:?}, got {e:?}", self.at),
                }
                let st = self.status(&m);
                assert!(
                    self.matches(&st, a),
                    "{}: state changed from {a:?}",
                    self.at
                );
                self.check_tree(&m, a, "after a no-op");
                (m, phase)
            }
            (
                Phase::Pending {
                    old,
                    new,
                    jid,
                    committed,
                },
                Step::Run(act),
            ) => {
                let fs = MemFs::new(m);
                let r = self.act(&fs, act);
                let m = fs.m.into_inner();
                let same = self.id(act).is_none_or(|id| id == jid);
                if !same {
                    match r {
                        Err(Error::ForeignJournal { journal }) if journal == jid => {}
                        other => panic!(
                            "{}: expected ForeignJournal, got {:?}",
                            self.at,
                            other.map(|_| ())
                        ),
                    }
                    assert!(self.journal(&m).is_some(), "{}: journal gone", self.at);
                    return (m, phase);
                }
                let end = match (act, r) {
                    (Act::Recover, Ok(Done::Recovered(rec))) => {
                        let want = if committed {
                            Recovery::Completed
                        } else {
                            Recovery::RolledBack
                        };
                        assert!(
                            rec == want,
                            "{}: recovery {rec:?}, expected {want:?}",
                            self.at
                        );
                        if committed {
                            new
                        } else {
                            old
                        }
                    }
                    (Act::Recover, r) => {
                        panic!("{}: recovery failed: {:?}", self.at, r.map(|_| ()))
                    }
                    (_, Ok(Done::Report(_))) => new,
                    (_, r) => panic!(
                        "{}: resuming the interrupted operation failed: {:?}",
                        self.at,
                        r.map(|_| ())
                    ),
                };
                let st = self.status(&m);
                assert!(self.matches(&st, end), "{}: state is not {end:?}", self.at);
                assert!(!st.recovery_pending(), "{}: journal left", self.at);
                self.check_tree(&m, end, "after recovery");
                self.check_strays(&m, false);
                (m, Phase::Clean(end))
            }
            (phase, Step::Crash { act, after, pick }) => {
                let fs = MemFs::new(m);
                let r = self.act(
                    &Faulty::new(&fs, Plan::PowerCutAfter(usize::from(after))),
                    act,
                );
                let img = fs.m.borrow().crash_image(pick);
                self.after_fault(img, phase, act, r)
            }
            (
                phase,
                Step::Fail {
                    act,
                    at,
                    errno,
                    persistent,
                },
            ) => {
                let fs = MemFs::new(m);
                let errno = ERRNOS
                    .get(usize::from(errno) % ERRNOS.len())
                    .copied()
                    .unwrap_or(5);
                let plan = Plan::FailAt {
                    k: usize::from(at),
                    errno,
                    persistent,
                };
                let r = self.act(&Faulty::new(&fs, plan), act);
                // Then everything reaches the disk (a sync, no power cut).
                let img = fs.m.borrow().crash_image(1);
                self.after_fault(img, phase, act, r)
            }
        }
    }

    fn after_fault(
        &self,
        img: Model,
        phase: Phase,
        act: Act,
        r: Result<Done, Error>,
    ) -> (Model, Phase) {
        let was_ok = r.is_ok();
        let next = match phase {
            Phase::Clean(a) => {
                let pred = self.predict(a, act);
                let expected = match pred {
                    Pred::Refused(k) => Some(k),
                    _ => None,
                };
                self.check_fault_error(&r, expected);
                match pred {
                    Pred::Change(new) => {
                        self.settle(&img, a, new, true, was_ok, self.id(act), false)
                    }
                    _ => self.settle(&img, a, a, true, false, None, false),
                }
            }
            Phase::Pending {
                old,
                new,
                jid,
                committed,
            } => {
                let same = self.id(act).is_none_or(|id| id == jid);
                assert!(same || !was_ok, "{}: Ok despite a foreign journal", self.at);
                self.check_fault_error(&r, (!same).then_some(Refusal::Foreign));
                if act == Act::Recover && was_ok {
                    // A recovery that returned Ok reached its end state.
                    let end = if committed { new } else { old };
                    let ph = self.settle(&img, end, end, true, true, Some(jid), committed);
                    return (img, ph);
                }
                self.settle(
                    &img,
                    old,
                    new,
                    !committed,
                    was_ok && same,
                    Some(jid),
                    committed,
                )
            }
        };
        (img, next)
    }
}

/// Runs `steps` (at most [`MAX_STEPS`]) on a model at the baseline and
/// checks every step against the abstract model.
///
/// # Panics
///
/// On any violated property (that is its purpose), or when the installer
/// panics.
pub fn bundle_model(steps: &[Step]) {
    let fx = fixture();
    let mut c = Checker {
        fx,
        cfg: config(None),
        at: String::new(),
    };
    let mut m = fx.start.clone();
    let mut phase = Phase::Clean(Abs {
        installed: None,
        highest: 0,
    });
    for (n, &s) in steps.iter().take(MAX_STEPS).enumerate() {
        c.at = format!("step {n} {s:?} from {phase:?}");
        let before = match phase {
            Phase::Clean(a) | Phase::Pending { old: a, .. } => a.highest,
        };
        (m, phase) = c.step(m, phase, s);
        let after = match phase {
            Phase::Clean(a) | Phase::Pending { old: a, .. } => a.highest,
        };
        assert!(after >= before, "{}: highest sequence went down", c.at);
    }
}

// ---------------------------------------------------------------------------
// bundle_recover

/// A name in a hostile encoding: one of [`PATH_PICKS`] / [`STAGE_PICKS`] or
/// raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    Pick(u8),
    Raw(Vec<u8>),
}

/// Paths a hostile state or journal may name.
pub const PATH_PICKS: [&str; 18] = [
    "lib/c0",
    "lib/c1",
    "lib/c2",
    "bin/c3",
    "lib/n5",
    "bin/n6",
    "opt/new/tool",
    "link/secret",
    "lib/evil",
    "../outside/secret",
    "/outside/secret",
    "lib/../../outside/secret",
    "",
    ".deltaswap/state",
    "lib/.deltaswap-stage.0.c0",
    "lib",
    "lib/c0/x",
    "link",
];

/// Staging names a hostile journal may give.
pub const STAGE_PICKS: [&str; 12] = [
    "",
    ".deltaswap-stage.0.c0",
    ".deltaswap-stage.1.c1",
    ".deltaswap-stage.2.c2",
    ".deltaswap-stage.0.tool",
    ".deltaswap-stage./../../outside/secret",
    ".deltaswap-stage.x/../c1",
    ".deltaswap-stage.",
    ".deltaswap-stage.0.evil",
    "c1",
    "../c1",
    ".deltaswap-stage.0.c0\0x",
];

/// A version field: `flag` 0 absent, 1 present (the fixture version `pick`
/// modulo their count), anything else written as is (invalid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ver {
    pub flag: u8,
    pub pick: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostileEntry {
    pub path: Name,
    pub base: Ver,
    pub cur: Ver,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostileInstalled {
    /// 0: all zeros; 1-6: a fixture bundle's id; else the digest of the byte.
    pub id: u8,
    pub sequence: u64,
    pub label: Vec<u8>,
    /// The declared entry count when `Some` (else the true one).
    pub count: Option<u32>,
    pub entries: Vec<HostileEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostileState {
    pub highest: u64,
    pub baseline: Vec<u8>,
    /// Written as is when `Some(flag)` with no `installed` (an invalid flag
    /// unless 0).
    pub installed_flag: Option<u8>,
    pub installed: Option<HostileInstalled>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostileOp {
    pub path: Name,
    pub stage: Name,
    /// 0 keep, 1 replace, 2 delete, else invalid.
    pub action: u8,
    pub base_created: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostileJournal {
    /// 0 staging, 1 committed, else invalid.
    pub phase: u8,
    /// As [`HostileInstalled::id`].
    pub bundle: u8,
    pub state: HostileState,
    pub count: Option<u32>,
    pub ops: Vec<HostileOp>,
}

/// How the body is sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seal {
    /// Bytes added to the body before the seal (trailing garbage).
    pub trailing: Vec<u8>,
    /// 0: a valid SHA-256 trailer; 1: one bit of it flipped; else none.
    pub how: u8,
    /// Write the other file's magic.
    pub wrong_magic: bool,
    /// Cut the encoded file (magic included) to this many bytes before the
    /// trailing bytes and the seal are added, so that a correctly sealed file
    /// ends inside a field.
    pub cut: Option<u16>,
}

/// What to put in a state-directory file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plant {
    /// Leave it as the starting state has it.
    Keep,
    /// Remove it.
    Absent,
    /// These bytes.
    Raw(Vec<u8>),
    /// A state encoding.
    State(HostileState, Seal),
    /// A journal encoding.
    Journal(HostileJournal, Seal),
}

/// A call on the installer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Recover,
    Status,
    /// Fixture bundle `i % 6`.
    Install(u8),
    Remove,
}

/// The input of `bundle_recover`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoverInput {
    /// 0: the baseline, nothing installed; 1: (a) installed; 2: (b) over
    /// (a); 3: a power cut in the middle of installing (b) over (a).
    pub start: u8,
    /// The state directory is `/var/ds`, outside the root, instead of
    /// `/r/.deltaswap`.
    pub state_outside: bool,
    /// The baseline copy of `lib/c0` is a hard link to `/outside/secret`.
    pub base_link_secret: bool,
    pub state: Plant,
    pub journal: Plant,
    pub journal_tmp: Option<Vec<u8>>,
    pub calls: Vec<Call>,
}

/// Calls after which `bundle_recover` stops.
pub const MAX_CALLS: usize = 8;

const SECRET: &[u8] = b"outside the root: never touched";
const OUTSIDE_STATE: &str = "/var/ds";

fn digest_pick(i: u8) -> Sha256Digest {
    let fx = fixture();
    match i {
        0 => Sha256Digest([0; 32]),
        _ => match fx.bundles.get(usize::from(i) - 1) {
            Some(b) => b.bundle.id(),
            None => Sha256Digest::of(&[i]),
        },
    }
}

fn name_bytes(n: &Name, picks: &[&str]) -> Vec<u8> {
    match n {
        Name::Pick(i) => picks
            .get(usize::from(*i) % picks.len())
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default(),
        Name::Raw(b) => b.clone(),
    }
}

fn put16(out: &mut Vec<u8>, b: &[u8]) {
    let b = b.get(..usize::from(u16::MAX)).unwrap_or(b);
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_ver(out: &mut Vec<u8>, v: Ver) {
    out.push(v.flag);
    if v.flag == 1 {
        let vs = &fixture().versions;
        if let Some(fv) = vs.get(usize::from(v.pick) % vs.len().max(1)) {
            put_version(out, fv);
        }
    }
}

fn put_state_body(out: &mut Vec<u8>, s: &HostileState) {
    out.extend_from_slice(&s.highest.to_le_bytes());
    put16(out, &s.baseline);
    match (&s.installed, s.installed_flag) {
        (None, f) => out.push(f.unwrap_or(0)),
        (Some(i), _) => {
            out.push(1);
            out.extend_from_slice(digest_pick(i.id).as_bytes());
            out.extend_from_slice(&i.sequence.to_le_bytes());
            put16(out, &i.label);
            let n = i.count.unwrap_or(i.entries.len() as u32);
            out.extend_from_slice(&n.to_le_bytes());
            for e in &i.entries {
                put16(out, &name_bytes(&e.path, &PATH_PICKS));
                put_ver(out, e.base);
                put_ver(out, e.cur);
            }
        }
    }
}

fn sealed(mut body: Vec<u8>, seal: &Seal) -> Vec<u8> {
    if let Some(cut) = seal.cut {
        body.truncate(usize::from(cut));
    }
    body.extend_from_slice(&seal.trailing);
    let d = Sha256Digest::of(&body);
    match seal.how {
        0 => body.extend_from_slice(d.as_bytes()),
        1 => {
            let mut t = d.0;
            t[0] ^= 1;
            body.extend_from_slice(&t);
        }
        _ => {}
    }
    body
}

/// The bytes of a planted file (`None` for [`Plant::Keep`] and [`Plant::Absent`]).
pub fn plant_bytes(p: &Plant) -> Option<Vec<u8>> {
    const STATE_MAGIC: &[u8; 8] = b"DSSTATE1";
    const JOURNAL_MAGIC: &[u8; 8] = b"DSJRNL01";
    match p {
        Plant::Keep | Plant::Absent => None,
        Plant::Raw(b) => Some(b.clone()),
        Plant::State(s, seal) => {
            let mut out = if seal.wrong_magic {
                JOURNAL_MAGIC
            } else {
                STATE_MAGIC
            }
            .to_vec();
            put_state_body(&mut out, s);
            Some(sealed(out, seal))
        }
        Plant::Journal(j, seal) => {
            let mut out = if seal.wrong_magic {
                STATE_MAGIC
            } else {
                JOURNAL_MAGIC
            }
            .to_vec();
            out.push(j.phase);
            out.extend_from_slice(digest_pick(j.bundle).as_bytes());
            put_state_body(&mut out, &j.state);
            let n = j.count.unwrap_or(j.ops.len() as u32);
            out.extend_from_slice(&n.to_le_bytes());
            for op in &j.ops {
                put16(&mut out, &name_bytes(&op.path, &PATH_PICKS));
                put16(&mut out, &name_bytes(&op.stage, &STAGE_PICKS));
                out.push(op.action);
                out.push(op.base_created);
            }
            Some(sealed(out, seal))
        }
    }
}

/// The sentinel layout: the root `/r` with the baseline, a symbolic link
/// `/r/link` to `/outside` and `/r/lib/evil` to `/outside/secret`; beside
/// the root `/top`, `/outside/secret` and `/var`.
fn sentinel_model() -> Model {
    let fx = fixture();
    let mut m = Model::new(&["/", ROOT, "/r/lib", "/r/bin", "/outside", "/var"]);
    put_tree(&mut m, &fx.baseline);
    m.put_file("/", "top", Content::new(b"top", 0o644, 0, 0));
    m.put_file("/outside", "secret", Content::new(SECRET, 0o600, 0, 0));
    m.put_symlink(ROOT, "link", "/outside");
    m.put_symlink("/r/lib", "evil", "/outside/secret");
    m
}

/// Starting models for [`RecoverInput::start`], state directory inside
/// (index 0..4) and outside (4..8) the root.
fn recover_starts() -> &'static Vec<Model> {
    static S: OnceLock<Vec<Model>> = OnceLock::new();
    S.get_or_init(|| {
        let fx = fixture();
        let mut out = Vec::new();
        for sd in [None, Some(OUTSIDE_STATE)] {
            let cfg = config(sd);
            let install = |m: Model, i: usize| -> Model {
                let fs = MemFs::new(m);
                if let Some(b) = fx.bundles.get(i) {
                    if let Err(e) = run_with(&fs, &cfg, Some(&b.bundle)) {
                        panic!("fuzz fixture: installing {i}: {e}");
                    }
                }
                fs.m.into_inner()
            };
            let base = sentinel_model();
            let a = install(base.clone(), 0);
            let b = install(a.clone(), 1);
            // A power cut half way through installing (b) over (a).
            let probe = MemFs::new(a.clone());
            let counter = Faulty::new(&probe, Plan::Pass);
            let _ = run_with(&counter, &cfg, fx.bundles.get(1).map(|b| &b.bundle));
            let n = counter.count();
            let fs = MemFs::new(a.clone());
            let _ = run_with(
                &Faulty::new(&fs, Plan::PowerCutAfter(n / 2)),
                &cfg,
                fx.bundles.get(1).map(|b| &b.bundle),
            );
            let mid = fs.m.borrow().crash_image(1);
            out.extend([base, a, b, mid]);
        }
        out
    })
}

type Snapshot = BTreeMap<PathBuf, Vec<(OsString, usize, Option<Content>)>>;

/// Everything outside the root and the state directory (but the state
/// directory's own entry in its parent, which the installer creates).
fn outside(m: &Model, state_dir: &str) -> Snapshot {
    let mut out = Snapshot::new();
    let sd = Path::new(state_dir);
    for d in m.dir_paths() {
        if d.starts_with(ROOT) || d.starts_with(sd) {
            continue;
        }
        let ds = d.to_string_lossy().into_owned();
        let mut entries = Vec::new();
        for n in m.names(&ds) {
            if Some(d.as_path()) == sd.parent() && Some(n.as_os_str()) == sd.file_name() {
                continue;
            }
            let ns = n.to_string_lossy();
            let ino = m.ino(&ds, &ns).unwrap_or(usize::MAX);
            entries.push((n.clone(), ino, m.content(ino).cloned()));
        }
        out.insert(d, entries);
    }
    out
}

/// Plants `input`'s state files next to a small installed tree, then runs
/// its calls: no panic, no [`Error::Bug`], nothing outside the root and the
/// state directory created, changed or removed; a recovery that succeeds
/// leaves nothing to recover; an install or remove that succeeds is what the
/// status reports.
///
/// # Panics
///
/// On any violated property (that is its purpose), or when the installer
/// panics.
pub fn bundle_recover(input: &RecoverInput) {
    let starts = recover_starts();
    let sd = if input.state_outside {
        OUTSIDE_STATE.to_string()
    } else {
        format!("{ROOT}/.deltaswap")
    };
    let idx = usize::from(input.start % 4) + if input.state_outside { 4 } else { 0 };
    let Some(start) = starts.get(idx) else {
        panic!("no start model {idx}")
    };
    let mut m = start.clone();
    let cfg = config(input.state_outside.then_some(OUTSIDE_STATE));
    if input.base_link_secret {
        if let (Some(ino), Ok(p)) = (m.ino("/outside", "secret"), BundlePath::new(b"lib/c0")) {
            let n = base_name(&p);
            m.put_link(&format!("{sd}/{BASE_DIR}"), &n.to_string_lossy(), ino);
        }
    }
    for (name, plant) in [(STATE_FILE, &input.state), (JOURNAL, &input.journal)] {
        if let Some(b) = plant_bytes(plant) {
            m.put_file(&sd, name, Content::new(&b, 0o600, 0, 0));
        } else if *plant == Plant::Absent {
            let fs = MemFs::new(m);
            let dir = PathBuf::from(&sd);
            let _ = fs.unlink(&dir, OsStr::new(name));
            let _ = fs.sync_dir(&dir);
            m = fs.m.into_inner();
        }
    }
    if let Some(b) = &input.journal_tmp {
        m.put_file(&sd, JOURNAL_TMP, Content::new(b, 0o600, 0, 0));
    }
    let before = outside(&m, &sd);
    let fx = fixture();
    let fs = MemFs::new(m);
    let strict = Strict(&fs);
    for (n, &call) in input.calls.iter().take(MAX_CALLS).enumerate() {
        let at = format!("call {n} {call:?}");
        let r: Result<(), Error> = match call {
            Call::Recover => {
                recover_with(&strict, &cfg).map(|_| match recover_with(&strict, &cfg) {
                    Ok(Recovery::Nothing) => {}
                    other => panic!("{at}: recovery succeeded, then found work: {other:?}"),
                })
            }
            Call::Status => status_with(&strict, &cfg).map(|_| ()),
            Call::Install(i) => {
                let b = fx.bundles.get(bundle_index(i)).map(|b| &b.bundle);
                run_with(&strict, &cfg, b).map(|rep| {
                    let st = status_with(&strict, &cfg);
                    let ok = matches!(&st, Ok(s) if !s.recovery_pending()
                        && s.installed_id() == b.map(|b| b.id()));
                    assert!(ok, "{at}: Ok ({rep:?}) but the status is {st:?}");
                })
            }
            Call::Remove => run_with::<_, Vec<u8>>(&strict, &cfg, None).map(|rep| {
                let st = status_with(&strict, &cfg);
                let ok =
                    matches!(&st, Ok(s) if !s.recovery_pending() && s.installed_id().is_none());
                assert!(ok, "{at}: Ok ({rep:?}) but the status is {st:?}");
            }),
        };
        if let Err(Error::Bug(what)) = r {
            panic!("{at}: Error::Bug({what})");
        }
        let after = outside(&fs.m.borrow(), &sd);
        assert!(
            after == before,
            "{at}: something outside the root and the state directory changed"
        );
    }
}

std::thread_local! {
    static ALWAYS_PIPED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static PIPED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many applies on this thread have hashed their result on a second
/// thread: for tests that mean to reach that path with a large result.
pub fn piped_applies() -> u64 {
    PIPED.with(std::cell::Cell::get)
}

/// Counts an apply that hashes on a second thread.
pub(crate) fn count_piped() {
    PIPED.with(|c| c.set(c.get().saturating_add(1)));
}

/// Runs `f` with every apply on this thread hashing its result on a second
/// thread, as results of 4 MiB and more do (`PipedHashingWriter`): the
/// fuzz checks' results are at most 1 MiB, and would otherwise never reach
/// that path.
pub fn always_piped<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ALWAYS_PIPED.with(|c| c.set(false));
        }
    }
    ALWAYS_PIPED.with(|c| c.set(true));
    let _reset = Reset;
    f()
}

/// Whether [`always_piped`] is in force on this thread.
pub(crate) fn piped_always() -> bool {
    ALWAYS_PIPED.with(std::cell::Cell::get)
}
