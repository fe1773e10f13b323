//! The `bundle_open` target: bundles from raw bytes or built from an
//! `arbitrary` description and signed with the fuzzing key (so that inputs get
//! past the signature and reach the manifest parser and the installer).
//!
//! Properties, for every input:
//! * `Bundle::open` (trusting only the fuzzing key) and `open_unverified`
//!   accept exactly what the reference reader (`bundle.rs`, from
//!   docs/FORMAT.md) accepts, with the same manifest; refusals are typed
//!   bundle errors, of the same class whenever the reference refused for the
//!   key, the signature or a payload; a bundle not signed by the fuzzing key
//!   is never accepted by `open`; the heap stays within a few times the input.
//! * Built bundles that open are installed (when the input asks) on a small
//!   tree in a scratch directory, whose neighbour `outside/` (also reachable
//!   through a symbolic link inside the root) must never change. `Ok` means
//!   every component is at its target version; an error means nothing under
//!   the root changed; after `Ok`, `remove` restores the tree exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use std::os::unix::ffi::OsStrExt;

use arbitrary::{Arbitrary, Unstructured};

use crate::bundle::{self, Comp, Manifest, PayloadEntry, Refusal, Version};
use crate::heap::peak_during;

/// Entry point: the first byte chooses raw (even) or built (odd).
pub fn check(data: &[u8]) {
    match data.split_first() {
        Some((m, rest)) if m & 1 == 1 => {
            if let Ok(spec) = Spec::arbitrary_take_rest(Unstructured::new(rest)) {
                check_built(&spec);
            }
        }
        Some((_, rest)) => {
            check_bytes(rest);
        }
        None => {}
    }
}

/// Opens `b` both ways and compares with the reference reader. Returns the
/// verified bundle, if any.
pub fn check_bytes(b: &[u8]) -> Option<deltaswap::Bundle<&[u8]>> {
    let vk = bundle::fuzz_key().verifying_key();
    let want = bundle::read(b, Some(&vk));
    let (got, peak) = peak_during(|| deltaswap::Bundle::open(b, &[*bundle::trusted()]));
    // The manifest is read into memory once, plus the parsed form.
    let budget = 4 * b.len() + (256 << 10);
    assert!(peak <= budget, "open: heap peak {peak} > {budget}");
    let opened = compare("open", want, got);
    let want = bundle::read(b, None);
    let got = deltaswap::Bundle::open_unverified(b);
    compare("open_unverified", want, got);
    opened
}

fn compare<'a>(
    what: &str,
    want: Result<Manifest, Refusal>,
    got: Result<deltaswap::Bundle<&'a [u8]>, deltaswap::Error>,
) -> Option<deltaswap::Bundle<&'a [u8]>> {
    match (want, got) {
        (Ok(m), Ok(b)) => {
            assert!(
                bundle::same(b.manifest(), &m),
                "{what}: manifest differs: library {:?}, reference {m:?}",
                b.manifest()
            );
            Some(b)
        }
        (Err(w), Err(e)) => {
            let c = bundle::class_of(&e)
                .unwrap_or_else(|| panic!("{what}: not a bundle refusal: {e:?}"));
            let exact = [
                Refusal::UntrustedKey,
                Refusal::BadSignature,
                Refusal::PayloadMismatch,
            ];
            if exact.contains(&w) || exact.contains(&c) {
                assert_eq!(c, w, "{what}: library {e:?}");
            }
            None
        }
        (Ok(m), Err(e)) => panic!("{what}: library refused ({e:?}), reference accepted {m:?}"),
        (Err(w), Ok(b)) => panic!(
            "{what}: library accepted {:?}, reference refused ({w:?})",
            b.manifest()
        ),
    }
}

// ---------------------------------------------------------------------------
// Built bundles.

/// Known file contents: 0 the baseline of `lib/libfoo.so`, 1 its fixed
/// version, 2 a new file, 3 the baseline of `bin/tool`, 4 empty.
fn files() -> &'static [Vec<u8>; 5] {
    static F: OnceLock<[Vec<u8>; 5]> = OnceLock::new();
    F.get_or_init(|| {
        let a: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut b = a.clone();
        b[100..140].copy_from_slice(&[0xAB; 40]);
        b.extend_from_slice(b"fixed");
        let c = b"a file the bundle adds\n".repeat(20);
        let t = b"#!/bin/sh\necho tool 26.3\n".to_vec();
        [a, b, c, t, Vec::new()]
    })
}

/// Known payloads: deltaswap patches between known files, and junk.
fn patches() -> &'static Vec<Vec<u8>> {
    static P: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    P.get_or_init(|| {
        let f = files();
        let d = |o: usize, n: usize| {
            deltaswap::DiffOptions::new()
                .level(1)
                .threads(1)
                .diff(&f[o], &f[n])
                .expect("diff of fixture files")
        };
        vec![
            d(0, 1), // libfoo baseline -> fixed
            d(1, 0), // fixed -> baseline
            d(4, 2), // add the new file
            d(3, 1), // tool -> libfoo fixed (a wrong-target patch for most specs)
            d(4, 1),
            d(0, 2),
            b"DSWP junk".to_vec(),
        ]
    })
}

const PATHS: [&[u8]; 18] = [
    b"lib/libfoo.so",
    b"bin/tool",
    b"lib/new.so",
    b"LIB/libfoo.so",
    b"lib/LIBFOO.so",
    b"link/sentinel",
    b"link/new",
    b"dir",
    b"lib/libfoo.so/x",
    b"lib",
    b"../outside/sentinel",
    b"/etc/passwd",
    b"lib/./x",
    b".deltaswap/state",
    b"lib/.deltaswap-stage.0.x",
    b"lib//x",
    b"new/deep/dir/file",
    b"fifo",
];

#[derive(Arbitrary, Debug)]
pub enum Text {
    Known(u8),
    Raw(Vec<u8>),
}

impl Text {
    fn bytes(&self, known: &[&[u8]]) -> Vec<u8> {
        match self {
            Text::Known(i) => known[*i as usize % known.len()].to_vec(),
            Text::Raw(v) => v.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Ver {
    Known(u8),
    Raw(u64, u8),
}

impl Ver {
    fn get(self) -> Version {
        match self {
            Ver::Known(i) => Version::of(&files()[i as usize % 5]),
            Ver::Raw(len, b) => Version {
                len,
                sha256: [b; 32],
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum Body {
    Known(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
pub struct PaySpec {
    pub from: Ver,
    pub body: Body,
    /// Nonzero: declare a length this much off the body's.
    pub len_skew: i8,
    /// Declare a hash of other bytes.
    pub bad_hash: bool,
}

#[derive(Arbitrary, Debug)]
pub struct CompSpec {
    pub path: Text,
    /// 0..=2 → kind 1..=3; otherwise the raw byte.
    pub kind: u8,
    /// 0o644 or 0o755 unless raw.
    pub mode: Option<u32>,
    pub base: Ver,
    pub target: Ver,
    pub payloads: Vec<PaySpec>,
}

#[derive(Arbitrary, Debug)]
pub enum Signer {
    Fuzz,
    Other,
    /// Signed by the fuzzing key, key id of the other key.
    WrongId,
    /// Signed by the fuzzing key, one signature bit flipped.
    FlipBit(u16),
}

#[derive(Arbitrary, Debug)]
pub struct Spec {
    pub label: Text,
    pub baseline: Text,
    pub sequence: u64,
    pub created: u64,
    pub comps: Vec<CompSpec>,
    pub count_skew: i8,
    pub signer: Signer,
    /// Xor one byte anywhere after signing.
    pub tamper: Option<(u16, u8)>,
    /// Bytes appended (positive) or removed (negative) at the end.
    pub trailing: i8,
    pub install: bool,
}

/// Encodes `spec`; returns the bundle bytes.
pub fn build(spec: &Spec) -> Vec<u8> {
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let comps = spec
        .comps
        .iter()
        .take(8)
        .map(|c| {
            let kind = if c.kind <= 2 { c.kind + 1 } else { c.kind };
            let mode = c.mode.unwrap_or(if kind == 3 { 0 } else { 0o644 });
            let ps = c
                .payloads
                .iter()
                .take(9)
                .map(|p| {
                    let body = match &p.body {
                        Body::Known(i) => patches()[*i as usize % patches().len()].clone(),
                        Body::Raw(v) => v.clone(),
                    };
                    let mut e = PayloadEntry {
                        from: p.from.get(),
                        len: (body.len() as u64).wrapping_add(p.len_skew as i64 as u64),
                        sha256: Version::of(&body).sha256,
                    };
                    if p.bad_hash {
                        e.sha256[0] ^= 1;
                    }
                    payloads.push(body);
                    e
                })
                .collect();
            Comp {
                path: c.path.bytes(&PATHS),
                kind,
                mode,
                baseline: c.base.get(),
                target: c.target.get(),
                payloads: ps,
            }
        })
        .collect();
    let m = Manifest {
        label: spec
            .label
            .bytes(&[b"26.3 (a)", b"26.3 (b)", "26.3 (ä)".as_bytes()]),
        baseline: spec.baseline.bytes(&[b"26.3", b"26.2"]),
        sequence: spec.sequence,
        created: spec.created,
        components: comps,
    };
    let manifest = bundle::encode_manifest(
        &m,
        if spec.count_skew % 8 == 0 {
            0
        } else {
            spec.count_skew as i64
        },
    );
    let fuzz = bundle::fuzz_key();
    let other = bundle::other_key();
    let (key, id) = match spec.signer {
        Signer::Fuzz | Signer::FlipBit(_) => (fuzz, bundle::key_id(&fuzz.verifying_key())),
        Signer::Other => (other, bundle::key_id(&other.verifying_key())),
        Signer::WrongId => (fuzz, bundle::key_id(&other.verifying_key())),
    };
    let total: u64 = payloads.iter().map(|p| p.len() as u64).sum();
    let h = bundle::header(manifest.len() as u32, total, id);
    let mut sig = bundle::sign(key, &h, &manifest);
    if let Signer::FlipBit(b) = spec.signer {
        sig[(b as usize / 8) % 64] ^= 1 << (b % 8);
    }
    let mut out = h.to_vec();
    out.extend_from_slice(&manifest);
    out.extend_from_slice(&sig);
    for p in &payloads {
        out.extend_from_slice(p);
    }
    if let Some((at, x)) = spec.tamper {
        let n = out.len();
        out[at as usize % n] ^= x;
    }
    if spec.trailing > 0 {
        out.extend(std::iter::repeat_n(0x5A, spec.trailing as usize));
    } else {
        let cut = (spec.trailing.unsigned_abs() as usize).min(out.len());
        out.truncate(out.len() - cut);
    }
    out
}

/// Builds, opens and (if asked and accepted) installs one spec.
pub fn check_built(spec: &Spec) {
    let bytes = build(spec);
    let opened = check_bytes(&bytes);
    let untouched_sig = spec.tamper.is_none();
    if !matches!(spec.signer, Signer::Fuzz) && untouched_sig {
        assert!(
            opened.is_none(),
            "a bundle not signed by the trusted key opened"
        );
    }
    if let (Some(b), true) = (opened, spec.install) {
        install(&b);
    }
}

// ---------------------------------------------------------------------------
// Installing on a scratch tree.

fn scratch() -> &'static PathBuf {
    static S: OnceLock<PathBuf> = OnceLock::new();
    S.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        base.join(format!("deltaswap-fuzz-bundle-{}", std::process::id()))
    })
}

/// Every entry under `dir` (not following links, skipping the installer's
/// state directory): path → file bytes, link target, or a directory marker.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new(".deltaswap") {
                continue;
            }
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap_or_default();
                out.insert(rel, [b"link:", t.as_os_str().as_encoded_bytes()].concat());
            } else if md.is_dir() {
                out.insert(rel, b"dir".to_vec());
                walk(root, &p, out);
            } else if !md.is_file() {
                out.insert(rel, b"special".to_vec());
            } else {
                use std::os::unix::fs::PermissionsExt;
                let mut v = std::fs::read(&p).unwrap_or_default();
                v.extend_from_slice(&(md.permissions().mode() & 0o7777).to_le_bytes());
                out.insert(rel, v);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn fresh_tree() -> (PathBuf, PathBuf) {
    let s = scratch();
    let _ = std::fs::remove_dir_all(s);
    let root = s.join("root");
    let outside = s.join("outside");
    let f = files();
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("lib/libfoo.so"), &f[0]).unwrap();
    std::fs::write(root.join("bin/tool"), &f[3]).unwrap();
    std::fs::write(outside.join("sentinel"), b"outside the root").unwrap();
    std::os::unix::fs::symlink("../outside", root.join("link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    (root, outside)
}

/// The entries that differ between two snapshots of the root, leaving out
/// new directories on the path to one of the bundle's components when
/// `parent_dirs_stay`: the installer creates those for added files and leaves
/// them after a removal (docs/FORMAT.md, commit protocol); a refused install
/// removes them again. Any other new directory, and any change to an entry
/// that existed, is reported.
fn changes_besides_parent_dirs(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
    b: &deltaswap::Bundle<&[u8]>,
    parent_dirs_stay: bool,
) -> Vec<PathBuf> {
    let parent_of_component = |dir: &Path| {
        b.manifest().components().iter().any(|c| {
            let p = Path::new(std::ffi::OsStr::from_bytes(c.path().as_bytes()));
            p != dir && p.starts_with(dir)
        })
    };
    let changed = before.keys().filter(|k| before.get(*k) != after.get(*k));
    let created = after
        .iter()
        .filter(|(k, v)| {
            !before.contains_key(*k)
                && (*v != b"dir" || !parent_dirs_stay || !parent_of_component(k))
        })
        .map(|(k, _)| k);
    changed.chain(created).cloned().collect()
}

fn install(b: &deltaswap::Bundle<&[u8]>) {
    let (root, outside) = fresh_tree();
    let before = snapshot(&root);
    let outside_before = snapshot(&outside);
    let inst = deltaswap::Installer::new(&root);
    let r = inst.install(b);
    assert_eq!(
        snapshot(&outside),
        outside_before,
        "install changed files outside the root: {r:?}"
    );
    match r {
        Ok(_) => {
            for c in b.manifest().components() {
                let p = root.join(std::ffi::OsStr::from_bytes(c.path().as_bytes()));
                match c.target() {
                    Some(t) => {
                        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
                        assert_eq!(
                            deltaswap::FileVersion::of(&data),
                            t,
                            "{p:?} is not at its target version"
                        );
                    }
                    None => assert!(std::fs::symlink_metadata(&p).is_err(), "{p:?} not removed"),
                }
            }
            let removed = inst.remove();
            assert_eq!(
                snapshot(&outside),
                outside_before,
                "remove changed files outside the root"
            );
            removed.unwrap_or_else(|e| panic!("remove after a successful install: {e:?}"));
            let changed = changes_besides_parent_dirs(&before, &snapshot(&root), b, true);
            assert!(
                changed.is_empty(),
                "remove did not restore the tree; changed entries: {changed:?}"
            );
        }
        Err(e) if e.is_committed() => {
            // Past the commit point (a component the commit cannot finish):
            // recovery must succeed (and stay inside the root).
            let rec = inst.recover();
            assert!(rec.is_ok(), "install: {e:?}; recovery after it: {rec:?}");
            assert_eq!(
                snapshot(&outside),
                outside_before,
                "recovery changed files outside the root"
            );
        }
        Err(e) => {
            assert!(!matches!(e, deltaswap::Error::Bug(_)), "install: {e:?}");
            let changed = changes_besides_parent_dirs(&before, &snapshot(&root), b, false);
            assert!(
                changed.is_empty(),
                "a refused install changed the tree: {e:?}; changed entries: {changed:?}"
            );
        }
    }
}
