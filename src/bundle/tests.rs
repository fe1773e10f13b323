//! Bundle tests: crash-point enumeration over the in-memory live/durable
//! model (C1, C2, C8), I/O errors at every operation (E1), tampering (S1),
//! refusals (S2, S4), and a proptest model test of random
//! install/remove/crash/recover sequences.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;

use crate::atomic::tests::faulty::{Faulty, Plan};
use crate::atomic::tests::model::{Content, MemFs, Model};
use crate::error::Error;
use crate::limits::Limits;

use super::install::{recover_with, run_with, status_with, Config, Mutant, STAGE_PREFIX};
use super::keys::SecretKey;
use super::path::BundlePath;
use super::wire::{assemble, Bundle, Component, ComponentKind, FileVersion, Manifest, Payload};
use super::{BundleBuilder, Recovery};

mod powercut;

type Tree = BTreeMap<&'static str, Vec<u8>>;

const PATHS: [&str; 7] = [
    "lib/c0", "lib/c1", "lib/c2", "bin/c3", "bin/c4", "lib/n5", "bin/n6",
];

fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32 * 31 + u32::from(seed) * 97) % 251) as u8 ^ seed)
        .collect()
}

fn edit(base: &[u8], seed: u8) -> Vec<u8> {
    let mut v = base.to_vec();
    for i in (usize::from(seed)..v.len()).step_by(400) {
        v[i] ^= seed | 1;
    }
    v.extend_from_slice(&[seed; 7]);
    v
}

struct Fixture {
    key: SecretKey,
    other_key: SecretKey,
    baseline: Tree,
    /// (tree, bundle bytes) for a (seq 1), b (seq 2), c (seq 3), u (seq 4: back to the baseline).
    bundles: Vec<(Tree, Vec<u8>)>,
}

fn write_tree(dir: &std::path::Path, t: &Tree) {
    for (p, d) in t {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, d).unwrap();
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = SecretKey::from_bytes(&[7; 32]);
        let other_key = SecretKey::from_bytes(&[8; 32]);
        let mut baseline = Tree::new();
        for (i, p) in PATHS.iter().take(5).enumerate() {
            baseline.insert(p, blob(i as u8 + 1, 3000 + i * 100));
        }
        // a: patch c0, c1, c3; remove c2; add n5 (5 components).
        let mut a = baseline.clone();
        a.insert("lib/c0", edit(&baseline["lib/c0"], 3));
        a.insert("lib/c1", edit(&baseline["lib/c1"], 5));
        a.insert("bin/c3", edit(&baseline["bin/c3"], 9));
        a.remove("lib/c2");
        a.insert("lib/n5", blob(50, 1500));
        // b: c0 again (delta from baseline and from a), c1 back to baseline,
        // c2 removed, c3 changed differently, c4 patched, n5 gone, n6 added.
        let mut b = baseline.clone();
        b.insert("lib/c0", edit(&a["lib/c0"], 11));
        b.insert("bin/c3", edit(&baseline["bin/c3"], 13));
        b.insert("bin/c4", edit(&baseline["bin/c4"], 17));
        b.remove("lib/c2");
        b.insert("bin/n6", blob(60, 900));
        // c: only c4.
        let mut c = baseline.clone();
        c.insert("bin/c4", edit(&baseline["bin/c4"], 19));
        let u = baseline.clone();
        let tmp = tempfile::tempdir().unwrap();
        let base_dir = tmp.path().join("base");
        write_tree(&base_dir, &baseline);
        let mut bundles = Vec::new();
        let mut prev: Option<PathBuf> = None;
        for (i, t) in [a, b, c, u].into_iter().enumerate() {
            let d = tmp.path().join(format!("t{i}"));
            write_tree(&d, &t);
            std::fs::create_dir_all(&d).unwrap();
            let mut builder = BundleBuilder::new(
                format!("26.3 ({})", (b'a' + i as u8) as char),
                "26.3",
                i as u64 + 1,
            );
            if let Some(p) = &prev {
                builder = builder.also_from(p);
            }
            let bytes = builder.build(&base_dir, &d, &key).unwrap();
            bundles.push((t, bytes));
            prev = Some(d);
        }
        Fixture {
            key,
            other_key,
            baseline,
            bundles,
        }
    })
}

fn open(i: usize) -> Bundle<Vec<u8>> {
    let f = fixture();
    Bundle::open(f.bundles[i].1.clone(), &[f.key.public_key()]).unwrap()
}

fn model_with(t: &Tree) -> Model {
    let mut m = Model::new(&["/r", "/r/lib", "/r/bin"]);
    for (p, d) in t {
        let (dir, name) = p.split_once('/').unwrap();
        m.put_file(&format!("/r/{dir}"), name, Content::new(d, 0o644, 0, 0));
    }
    m
}

thread_local! {
    /// The protocol mutant `cfg()` installs with (tests run one per thread).
    static MUTANT: Cell<Mutant> = const { Cell::new(Mutant::None) };
}

fn cfg() -> Config {
    Config {
        root: PathBuf::from("/r"),
        state_dir: None,
        limits: Limits::default(),
        expect_baseline: None,
        mutant: MUTANT.with(|m| m.get()),
    }
}

/// The live content of every component path.
fn snapshot(m: &Model) -> BTreeMap<&'static str, Option<Vec<u8>>> {
    PATHS
        .iter()
        .map(|p| {
            let (dir, name) = p.split_once('/').unwrap();
            (
                *p,
                m.file(&format!("/r/{dir}"), name).map(|c| c.data.clone()),
            )
        })
        .collect()
}

fn expect(t: &Tree) -> BTreeMap<&'static str, Option<Vec<u8>>> {
    PATHS.iter().map(|p| (*p, t.get(p).cloned())).collect()
}

/// Leftovers: staged files, journal or temporary files, or baseline copies
/// the state does not account for.
fn strays(m: &Model) -> Vec<String> {
    let mut out = Vec::new();
    for d in ["/r", "/r/lib", "/r/bin"] {
        for n in m.names(d) {
            if n.as_encoded_bytes().starts_with(STAGE_PREFIX) {
                out.push(format!("{d}/{}", n.to_string_lossy()));
            }
        }
    }
    for n in m.names("/r/.deltaswap") {
        if !["lock", "state", "base"].contains(&n.to_str().unwrap_or("")) {
            out.push(format!("state/{}", n.to_string_lossy()));
        }
    }
    let fs = MemFs::new(m.clone());
    if let Ok(st) = status_with(&fs, &cfg()) {
        let want = st.components().iter().filter(|c| c.1.is_some()).count();
        let have = m.names("/r/.deltaswap/base").len();
        if want != have {
            out.push(format!("base: {have} copies for {want} components"));
        }
    }
    out
}

/// What an operation under test does.
#[derive(Clone, Copy)]
enum Op {
    Install(usize),
    Remove,
}

fn run_op<F: crate::atomic::fs::Fs>(fs: &F, op: Op) -> Result<super::InstallReport, Error> {
    match op {
        Op::Install(i) => run_with(fs, &cfg(), Some(&open(i))),
        Op::Remove => run_with::<_, Vec<u8>>(fs, &cfg(), None),
    }
}

/// A model at the baseline with bundles `pre` installed (no faults).
fn setup(pre: &[usize]) -> Model {
    let fs = MemFs::new(model_with(&fixture().baseline));
    for &i in pre {
        run_op(&fs, Op::Install(i)).unwrap();
    }
    fs.m.into_inner()
}

#[derive(Default)]
struct Tally {
    prefixes: usize,
    states: usize,
    mixed: usize,
    durability: usize,
    stray: usize,
    unrecoverable: usize,
}

impl Tally {
    fn line(&self, name: &str) -> String {
        format!(
            "crash-enum {name}: prefixes={} states={} mixed={} durability={} stray={} unrecoverable={}",
            self.prefixes, self.states, self.mixed, self.durability, self.stray, self.unrecoverable
        )
    }
    fn clean(&self) -> bool {
        self.mixed == 0 && self.durability == 0 && self.stray == 0 && self.unrecoverable == 0
    }
}

/// Recovers `img` and checks it: all old or all new, new if the operation
/// had returned Ok, no leftovers, recovery idempotent.
fn check_image(img: Model, old: &Tree, new: &Tree, was_ok: bool, t: &mut Tally) {
    t.states += 1;
    let fs = MemFs::new(img);
    if recover_with(&fs, &cfg()).is_err() {
        t.unrecoverable += 1;
        return;
    }
    let snap = snapshot(&fs.m.borrow());
    let is_new = snap == expect(new);
    if !is_new && snap != expect(old) {
        t.mixed += 1;
    }
    if was_ok && !is_new {
        t.durability += 1;
    }
    if !strays(&fs.m.borrow()).is_empty() {
        t.stray += 1;
    }
    if !matches!(recover_with(&fs, &cfg()), Ok(Recovery::Nothing))
        || snapshot(&fs.m.borrow()) != snap
    {
        t.unrecoverable += 1;
    }
}

fn crash_enum(
    name: &str,
    pre: &[usize],
    op: Op,
    old: &Tree,
    new: &Tree,
    random: usize,
    compound: bool,
) -> Tally {
    crash_enum_from(name, setup(pre), op, old, new, random, compound)
}

/// [`crash_enum`] from any starting model.
fn crash_enum_from(
    name: &str,
    base: Model,
    op: Op,
    old: &Tree,
    new: &Tree,
    random: usize,
    compound: bool,
) -> Tally {
    let rec = MemFs::new(base.clone());
    let counter = Faulty::new(&rec, Plan::Pass);
    run_op(&counter, op).unwrap();
    let n = counter.count();
    assert_eq!(
        snapshot(&rec.m.borrow()),
        expect(new),
        "{name}: fault-free run"
    );
    let mut t = Tally::default();
    let mut c2 = Tally::default();
    for k in 0..=n {
        t.prefixes += 1;
        let fs = MemFs::new(base.clone());
        let was_ok = run_op(&Faulty::new(&fs, Plan::PowerCutAfter(k)), op).is_ok();
        let images = fs.m.borrow().crash_images_bounded(random, k as u64 + 1);
        if compound {
            // A second power cut at every operation of recovery, and an I/O
            // error at every operation of recovery.
            for img in [images[3].clone(), images[images.len() - 1].clone()] {
                let probe = MemFs::new(img.clone());
                let fc = Faulty::new(&probe, Plan::Pass);
                let _ = recover_with(&fc, &cfg());
                let m = fc.count();
                for j in 0..m {
                    c2.prefixes += 1;
                    let fs2 = MemFs::new(img.clone());
                    let _ = recover_with(&Faulty::new(&fs2, Plan::PowerCutAfter(j)), &cfg());
                    let imgs2 = fs2.m.borrow().crash_images_bounded(1, j as u64 + 7);
                    for i2 in [&imgs2[0], &imgs2[3], &imgs2[imgs2.len() - 1]] {
                        check_image(i2.clone(), old, new, was_ok, &mut c2);
                    }
                    let fs3 = MemFs::new(img.clone());
                    let _ = recover_with(
                        &Faulty::new(
                            &fs3,
                            Plan::FailAt {
                                k: j,
                                errno: 5,
                                persistent: false,
                            },
                        ),
                        &cfg(),
                    );
                    check_image(fs3.m.into_inner(), old, new, was_ok, &mut c2);
                }
            }
        }
        for img in images {
            check_image(img, old, new, was_ok, &mut t);
        }
    }
    println!("{}", t.line(name));
    if compound {
        println!("{}", c2.line(&format!("{name} crash-in-recovery")));
        assert!(c2.clean(), "{}", c2.line(name));
    }
    t
}

#[test]
fn crash_enum_install_w5() {
    let f = fixture();
    let t = crash_enum(
        "install W5",
        &[],
        Op::Install(0),
        &f.baseline,
        &f.bundles[0].0,
        8,
        true,
    );
    assert!(t.clean(), "{}", t.line("install W5"));
}

#[test]
fn crash_enum_install_over_installed() {
    let f = fixture();
    let t = crash_enum(
        "install-over W5",
        &[0],
        Op::Install(1),
        &f.bundles[0].0,
        &f.bundles[1].0,
        8,
        true,
    );
    assert!(t.clean(), "{}", t.line("install-over W5"));
}

#[test]
fn crash_enum_remove() {
    let f = fixture();
    let t = crash_enum(
        "remove W5",
        &[1],
        Op::Remove,
        &f.bundles[1].0,
        &f.baseline,
        8,
        true,
    );
    assert!(t.clean(), "{}", t.line("remove W5"));
}

/// E1: an I/O error at operation k: before the commit point the root is
/// unchanged and nothing is left over; after it, recovery completes.
#[test]
fn io_error_at_every_operation() {
    let f = fixture();
    for (name, pre, op, old, new) in [
        (
            "install",
            vec![],
            Op::Install(0),
            &f.baseline,
            &f.bundles[0].0,
        ),
        (
            "install-over",
            vec![0],
            Op::Install(1),
            &f.bundles[0].0,
            &f.bundles[1].0,
        ),
        ("remove", vec![1], Op::Remove, &f.bundles[1].0, &f.baseline),
    ] {
        let base = setup(&pre);
        let probe = MemFs::new(base.clone());
        let fc = Faulty::new(&probe, Plan::Pass);
        run_op(&fc, op).unwrap();
        let n = fc.count();
        let (mut unchanged, mut committed) = (0, 0);
        for errno in [5, 28] {
            for k in 0..n {
                let fs = MemFs::new(base.clone());
                let r = run_op(
                    &Faulty::new(
                        &fs,
                        Plan::FailAt {
                            k,
                            errno,
                            persistent: false,
                        },
                    ),
                    op,
                );
                match r {
                    Err(e) if !e.is_committed() => {
                        assert_eq!(
                            snapshot(&fs.m.borrow()),
                            expect(old),
                            "{name}: error at {k}: {e}"
                        );
                        assert!(
                            strays(&fs.m.borrow()).is_empty(),
                            "{name} at {k} ({:?}): {:?}",
                            fc.log().get(k),
                            strays(&fs.m.borrow())
                        );
                        unchanged += 1;
                    }
                    _ => {
                        recover_with(&fs, &cfg()).unwrap();
                        assert_eq!(
                            snapshot(&fs.m.borrow()),
                            expect(new),
                            "{name}: error at {k}"
                        );
                        committed += 1;
                    }
                }
            }
        }
        println!(
            "io-error {name} W5: ops={n} unchanged={unchanged} committed={committed} violations=0"
        );
    }
}

/// S1: every single-bit flip in header, manifest and signature, and a
/// sample in the payloads, is refused by `Bundle::open`.
#[test]
fn flipped_bits_are_refused() {
    let f = fixture();
    let bytes = &f.bundles[1].1;
    let manifest_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let signed_end = 32 + manifest_len + 64;
    let keys = [f.key.public_key()];
    let mut flips = 0;
    let bits: Vec<usize> = (0..signed_end * 8)
        .chain((signed_end * 8..bytes.len() * 8).step_by(13))
        .collect();
    for bit in bits {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let e = Bundle::open(b, &keys).unwrap_err();
        assert!(e.is_rejected_input(), "bit {bit}: {e}");
        flips += 1;
    }
    // Every truncation too.
    for len in (0..bytes.len()).step_by(7) {
        assert!(Bundle::open(bytes[..len].to_vec(), &keys).is_err());
    }
    println!("bit-flips: flips={flips} accepted=0");
}

fn signed(components: Vec<Component>, payloads: &[&[u8]], seq: u64) -> Vec<u8> {
    let m = Manifest {
        label: "x".into(),
        baseline: "26.3".into(),
        sequence: seq,
        created: 0,
        components,
    };
    assemble(&m, payloads, &fixture().key).unwrap()
}

fn raw_path(p: &[u8]) -> BundlePath {
    BundlePath(p.to_vec())
}

fn remove_comp(p: &[u8]) -> Component {
    Component {
        path: raw_path(p),
        kind: ComponentKind::Remove,
        mode: 0,
        baseline: Some(FileVersion::of(b"x")),
        target: None,
        payloads: Vec::new(),
    }
}

/// Runs `op` on `m` and checks that nothing under the root changed.
fn refused(m: Model, bundle: &Bundle<Vec<u8>>) -> Error {
    let before = snapshot(&m);
    let fs = MemFs::new(m);
    let e = run_with(&fs, &cfg(), Some(bundle)).unwrap_err();
    assert_eq!(snapshot(&fs.m.borrow()), before, "{e}");
    assert!(strays(&fs.m.borrow()).is_empty());
    e
}

/// S2, S4: refusals with distinct typed errors; nothing touched.
#[test]
fn refusals_are_typed_and_touch_nothing() {
    let f = fixture();
    let keys = [f.key.public_key()];
    // Wrong key.
    let e = Bundle::open(f.bundles[0].1.clone(), &[f.other_key.public_key()]).unwrap_err();
    assert!(matches!(e, Error::UntrustedKey { .. }), "{e}");
    // Spliced component: another bundle's payload bytes in place of one payload.
    let mut spliced = f.bundles[0].1.clone();
    let n = spliced.len();
    let other = &f.bundles[1].1;
    spliced[n - 40..].copy_from_slice(&other[other.len() - 40..]);
    let e = Bundle::open(spliced, &keys).unwrap_err();
    assert!(matches!(e, Error::PayloadMismatch { .. }), "{e}");
    // Path escapes and reserved names, signed by the trusted key.
    for p in [
        &b"../etc/passwd"[..],
        b"/etc/passwd",
        b"lib/\0x",
        b"",
        b"lib//x",
        b"./x",
        b".deltaswap/state",
        b"lib/.deltaswap-stage.0.c0",
    ] {
        let e = Bundle::open(signed(vec![remove_comp(p)], &[], 9), &keys).unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{p:?}: {e}");
    }
    // Duplicates, exact and case-folded.
    for (a, b) in [(&b"lib/c0"[..], &b"lib/c0"[..]), (b"lib/C0", b"lib/c0")] {
        let e =
            Bundle::open(signed(vec![remove_comp(a), remove_comp(b)], &[], 9), &keys).unwrap_err();
        assert!(matches!(e, Error::DuplicatePath { .. }), "{e}");
    }
    // A component that is another's parent directory (a file become a
    // directory): refused when read, and never built.
    for (a, b) in [(&b"lib/c0"[..], &b"lib/c0/x"[..]), (b"Lib", b"lib/c0")] {
        let e =
            Bundle::open(signed(vec![remove_comp(a), remove_comp(b)], &[], 9), &keys).unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{a:?} {b:?}: {e}");
    }
    let trees = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(trees.path().join("old")).unwrap();
    std::fs::create_dir_all(trees.path().join("new/tool")).unwrap();
    std::fs::write(trees.path().join("old/tool"), b"a file").unwrap();
    std::fs::write(trees.path().join("new/tool/bin"), b"now a directory").unwrap();
    let e = BundleBuilder::new("x", "26.3", 2)
        .build(&trees.path().join("old"), &trees.path().join("new"), &f.key)
        .unwrap_err();
    assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
    // Replayed and older sequence numbers.
    let installed_b = setup(&[1]);
    let e = refused(installed_b.clone(), &open(0));
    assert!(
        matches!(
            e,
            Error::Downgrade {
                sequence: 1,
                highest: 2
            }
        ),
        "{e}"
    );
    let fs = MemFs::new(installed_b);
    run_with::<_, Vec<u8>>(&fs, &cfg(), None).unwrap();
    let e = refused(fs.m.into_inner(), &open(1));
    assert!(
        matches!(
            e,
            Error::Downgrade {
                sequence: 2,
                highest: 2
            }
        ),
        "{e}"
    );
    // Wrong baseline.
    let mut c = cfg();
    c.expect_baseline = Some("26.4".into());
    let fs = MemFs::new(model_with(&f.baseline));
    let e = run_with(&fs, &c, Some(&open(0))).unwrap_err();
    assert!(matches!(e, Error::WrongBaseline { .. }), "{e}");
    assert_eq!(snapshot(&fs.m.borrow()), expect(&f.baseline));
    // A component changed locally since the baseline.
    let mut t = f.baseline.clone();
    t.insert("lib/c1", b"locally changed".to_vec());
    let e = refused(model_with(&t), &open(0));
    assert!(
        matches!(e, Error::ComponentModified { ref path, .. } if path == "lib/c1"),
        "{e}"
    );
    // A symbolic link in place of a component, and in place of its directory.
    let mut m = model_with(&f.baseline);
    let mut t2 = f.baseline.clone();
    t2.remove("lib/c1");
    m = {
        let mut mm = model_with(&t2);
        mm.put_symlink("/r/lib", "c1", "/etc/passwd");
        let _ = m;
        mm
    };
    let e = refused(m, &open(0));
    assert!(matches!(e, Error::Symlink { .. }), "{e}");
    let mut m = Model::new(&["/r", "/r/bin", "/r/elsewhere"]);
    m.put_symlink("/r", "lib", "/r/elsewhere");
    for (p, d) in &f.baseline {
        if let Some(name) = p.strip_prefix("bin/") {
            m.put_file("/r/bin", name, Content::new(d, 0o644, 0, 0));
        }
    }
    let e = refused(m, &open(0));
    assert!(matches!(e, Error::Symlink { .. }), "{e}");
    // A journal left by another bundle.
    let fs = MemFs::new(model_with(&f.baseline));
    let probe = MemFs::new(model_with(&f.baseline));
    let fc = Faulty::new(&probe, Plan::Pass);
    run_op(&fc, Op::Install(0)).unwrap();
    let log = fc.log();
    let first_rename = log.iter().position(|o| *o == "rename").unwrap();
    let _ = run_op(
        &Faulty::new(&fs, Plan::PowerCutAfter(first_rename + 3)),
        Op::Install(0),
    );
    let e = run_with(&fs, &cfg(), Some(&open(1))).unwrap_err();
    assert!(matches!(e, Error::ForeignJournal { .. }), "{e}");
    // The same bundle resumes instead.
    run_with(&fs, &cfg(), Some(&open(0))).unwrap();
    assert_eq!(snapshot(&fs.m.borrow()), expect(&f.bundles[0].0));
    // Payload whose patch header does not match the manifest binding is
    // caught by the signature; an unsigned (inspect-only) bundle never installs.
    let b = Bundle::open_unverified(f.bundles[0].1.clone()).unwrap();
    let e = refused(model_with(&f.baseline), &b);
    assert!(matches!(e, Error::BadSignature { .. }), "{e}");
    let _ = Payload {
        from: FileVersion::of(b""),
        offset: 0,
        len: 0,
        sha256: FileVersion::of(b"").sha256,
    };
}

/// Multi-source deltas: a device freshly imaged at "26.3 (a)" (its files are
/// at the (a) level, no install state, no baseline copies) installs (b),
/// built with `also_from(tree_a)`, by the deltas from (a): in the model and
/// on the real file system; remove then returns it to (a), the version it had
/// before; a component changed locally is still refused.
#[test]
fn device_at_previous_level_installs_by_delta_from_it() {
    let _guard = crate::atomic::tests::locking();
    let f = fixture();
    let (tree_a, tree_b) = (&f.bundles[0].0, &f.bundles[1].0);
    let b = open(1);
    let comp = |p: &[u8]| {
        b.manifest()
            .components()
            .iter()
            .find(|c| c.path().as_bytes() == p)
            .unwrap()
            .clone()
    };
    let va = |p: &str| FileVersion::of(&tree_a[p]);
    assert_eq!(comp(b"lib/c0").sources().len(), 2);
    assert!(comp(b"lib/c0").sources().contains(&va("lib/c0")));
    // c1: changed by (a), pulled by (b): carried as a delta from (a) only.
    assert_eq!(comp(b"lib/c1").sources(), vec![va("lib/c1")]);
    assert_eq!(comp(b"lib/c1").target(), comp(b"lib/c1").baseline());
    // (b) as seen by a device imaged at (a). (a)'s added file n5 is absent
    // from both the baseline and (b), so (b) cannot name it: it stays.
    let mut want = tree_b.clone();
    want.insert("lib/n5", tree_a["lib/n5"].clone());

    // In the model.
    let fs = MemFs::new(model_with(tree_a));
    let r = run_with(&fs, &cfg(), Some(&b)).unwrap();
    assert_eq!(snapshot(&fs.m.borrow()), expect(&want));
    assert!(strays(&fs.m.borrow()).is_empty());
    // c0 (a delta from (a)), c1 (back), c3 (from (a)), c4 (from the
    // baseline), n6 (added).
    assert_eq!(r.changed(), 5);
    run_with::<_, Vec<u8>>(&fs, &cfg(), None).unwrap();
    assert_eq!(snapshot(&fs.m.borrow()), expect(tree_a));
    assert!(strays(&fs.m.borrow()).is_empty());

    // A power cut at every operation of that install, and in recovery.
    let t = crash_enum_from(
        "install W5 at previous level",
        model_with(tree_a),
        Op::Install(1),
        tree_a,
        &want,
        4,
        true,
    );
    assert!(t.clean(), "{}", t.line("install W5 at previous level"));

    // The same device with c0 changed locally: no carried source matches.
    let mut t = tree_a.clone();
    t.insert("lib/c0", edit(&tree_a["lib/c0"], 1));
    let e = refused(model_with(&t), &b);
    assert!(
        matches!(e, Error::ComponentModified { ref path, .. } if path == "lib/c0"),
        "{e}"
    );

    // On the real file system, through the public installer, with (c)
    // (built also_from (b)) over it and remove.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    write_tree(&root, tree_a);
    let read = |t: &Tree| {
        for p in PATHS {
            assert_eq!(std::fs::read(root.join(p)).ok().as_ref(), t.get(p), "{p}");
        }
    };
    let inst = super::Installer::new(&root);
    inst.install(&b).unwrap();
    read(&want);
    // (c), built with every earlier level (a) and (b): c2 (removed by (a)
    // and (b), back in (c)) comes from the empty file; n6 ((b) only) goes
    // back to what the device had before its first install: absent.
    let tree_c = &f.bundles[2].0;
    for (i, t) in [&f.baseline, tree_a, tree_b, tree_c]
        .into_iter()
        .enumerate()
    {
        write_tree(&tmp.path().join(format!("t{i}")), t);
    }
    let bytes = BundleBuilder::new("26.3 (c)", "26.3", 3)
        .also_from(tmp.path().join("t1"))
        .also_from(tmp.path().join("t2"))
        .build(&tmp.path().join("t0"), &tmp.path().join("t3"), &f.key)
        .unwrap();
    let c = Bundle::open(bytes, &[f.key.public_key()]).unwrap();
    let mut want_c = tree_c.clone();
    want_c.insert("lib/n5", tree_a["lib/n5"].clone());
    inst.install(&c).unwrap();
    read(&want_c);
    inst.remove().unwrap();
    read(tree_a);
    assert!(inst.recover().unwrap() == Recovery::Nothing);
}

#[derive(Clone, Debug)]
enum Step {
    Install(usize),
    Remove,
    Recover,
    Crash(usize, bool, u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..4usize).prop_map(Step::Install),
        Just(Step::Remove),
        Just(Step::Recover),
        (0..4usize, any::<bool>(), 0..400u64).prop_map(|(i, r, k)| Step::Crash(i, r, k)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random install/remove/crash/recover sequences against a reference:
    /// (installed bundle, highest sequence).
    #[test]
    fn model_random_sequences(steps in proptest::collection::vec(step(), 1..8)) {
        let f = fixture();
        let mut m = model_with(&f.baseline);
        let mut installed: Option<usize> = None;
        let mut highest = 0u64;
        let tree = |i: Option<usize>| i.map(|i| f.bundles[i].0.clone()).unwrap_or_else(|| f.baseline.clone());
        for s in steps {
            let fs = MemFs::new(m.clone());
            match s {
                Step::Install(i) => {
                    let seq = i as u64 + 1;
                    let r = run_with(&fs, &cfg(), Some(&open(i)));
                    if installed == Some(i) {
                        prop_assert!(r.unwrap().already_done());
                    } else if seq <= highest {
                        let is_downgrade = matches!(r, Err(Error::Downgrade { .. }));
                        prop_assert!(is_downgrade, "expected a downgrade refusal");
                    } else {
                        r.unwrap();
                        installed = Some(i);
                        highest = seq;
                    }
                }
                Step::Remove => {
                    run_with::<_, Vec<u8>>(&fs, &cfg(), None).unwrap();
                    installed = None;
                }
                Step::Recover => {
                    let nothing = matches!(recover_with(&fs, &cfg()), Ok(Recovery::Nothing));
                    prop_assert!(nothing, "recover found work");
                }
                Step::Crash(i, remove, k) => {
                    let op = if remove { Op::Remove } else { Op::Install(i) };
                    let ok = run_op(&Faulty::new(&fs, Plan::PowerCutAfter(k as usize)), op).is_ok();
                    let imgs = fs.m.borrow().crash_images_bounded(1, k);
                    let img = imgs[(k as usize) % imgs.len()].clone();
                    let fs2 = MemFs::new(img);
                    recover_with(&fs2, &cfg()).unwrap();
                    let snap = snapshot(&fs2.m.borrow());
                    let (new_inst, new_high) = match op {
                        Op::Install(i) if installed != Some(i) && (i as u64 + 1) > highest => (Some(i), i as u64 + 1),
                        Op::Install(_) => (installed, highest),
                        Op::Remove => (None, highest),
                    };
                    // New or old by the install state (two trees may be
                    // equal: (u) is the baseline), then by the files.
                    let st = status_with(&fs2, &cfg()).unwrap();
                    let is_new = st.highest_sequence() == new_high
                        && st.installed_sequence() == new_inst.map(|i| i as u64 + 1);
                    if is_new {
                        prop_assert_eq!(snap, expect(&tree(new_inst)));
                        installed = new_inst;
                        highest = new_high;
                    } else {
                        prop_assert!(!ok, "durability");
                        prop_assert_eq!(snap, expect(&tree(installed)));
                    }
                    prop_assert!(strays(&fs2.m.borrow()).is_empty());
                    m = fs2.m.into_inner();
                    continue;
                }
            }
            prop_assert_eq!(snapshot(&fs.m.borrow()), expect(&tree(installed)));
            prop_assert!(strays(&fs.m.borrow()).is_empty());
            m = fs.m.into_inner();
        }
    }
}

/// S4 on the real file system: a symbolic link in place of a component's
/// directory is refused and nothing outside the root is written; (a), (b) over
/// (a), and remove round-trip through the real `Installer`.
#[test]
fn real_fs_symlinked_parent_and_cycle() {
    let _guard = crate::atomic::tests::locking();
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    write_tree(&root, &f.baseline);
    std::fs::rename(root.join("lib"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("lib")).unwrap();
    let inst = super::Installer::new(&root);
    let e = inst.install(&open(0)).unwrap_err();
    assert!(matches!(e, Error::Symlink { .. }), "{e}");
    for (p, d) in &f.baseline {
        if let Some(n) = p.strip_prefix("lib/") {
            assert_eq!(&std::fs::read(outside.join(n)).unwrap(), d);
        }
    }
    std::fs::remove_file(root.join("lib")).unwrap();
    std::fs::rename(&outside, root.join("lib")).unwrap();
    let read = |t: &Tree| {
        for p in PATHS {
            assert_eq!(std::fs::read(root.join(p)).ok().as_ref(), t.get(p), "{p}");
        }
    };
    inst.install(&open(0)).unwrap();
    read(&f.bundles[0].0);
    inst.install(&open(1)).unwrap();
    read(&f.bundles[1].0);
    inst.remove().unwrap();
    read(&f.baseline);
    assert_eq!(inst.status().unwrap().highest_sequence(), 2);
}

/// Extended attributes and owner of a replaced component carry over to its
/// new version (as `patch_in_place` does), on the real file system: install
/// (a), (b) over (a), then remove, which brings back the baseline inode with
/// its own attributes. Attributes the file system or privileges do not allow
/// are skipped, and the summary line says which were checked.
#[test]
fn real_fs_owner_and_xattrs_carry_over() {
    let _guard = crate::atomic::tests::locking();
    use std::os::unix::fs::MetadataExt;
    const CAP_NET_RAW: [u8; 20] = [
        0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    const LABEL: &[u8] = b"system_u:object_r:lib_t:s0\0";
    let get = |p: &std::path::Path, n: &str| {
        let mut buf = vec![0u8; 1024];
        let k = rustix::fs::getxattr(p, n, &mut buf[..]).ok()?;
        buf.truncate(k);
        Some(buf)
    };
    let set = |p: &std::path::Path, n: &str, v: &[u8]| {
        rustix::fs::setxattr(p, n, v, rustix::fs::XattrFlags::empty()).is_ok()
    };
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    write_tree(&root, &f.baseline);
    let c0 = root.join("lib/c0");
    let c3 = root.join("bin/c3");
    let is_root = std::fs::metadata(tmp.path()).unwrap().uid() == 0;
    if is_root {
        std::os::unix::fs::chown(&c0, Some(1234), Some(5678)).unwrap();
    }
    let user = set(&c0, "user.origin", b"vendor");
    let label = set(&c0, "security.selinux", LABEL);
    let cap = is_root && set(&c3, "security.capability", &CAP_NET_RAW);
    let ino0 = std::fs::metadata(&c0).unwrap().ino();
    let check = |stage: &str| {
        let md = std::fs::metadata(&c0).unwrap();
        if is_root {
            assert_eq!((md.uid(), md.gid()), (1234, 5678), "{stage}");
        }
        if user {
            assert_eq!(
                get(&c0, "user.origin").as_deref(),
                Some(&b"vendor"[..]),
                "{stage}"
            );
        }
        if label {
            assert_eq!(
                get(&c0, "security.selinux").as_deref(),
                Some(LABEL),
                "{stage}"
            );
        }
        if cap {
            assert_eq!(
                get(&c3, "security.capability").as_deref(),
                Some(&CAP_NET_RAW[..]),
                "{stage}"
            );
        }
    };
    let inst = super::Installer::new(&root);
    inst.install(&open(0)).unwrap();
    assert_eq!(std::fs::read(&c0).unwrap(), f.bundles[0].0["lib/c0"]);
    assert_ne!(std::fs::metadata(&c0).unwrap().ino(), ino0);
    check("(a)");
    // An attribute set on the installed version after the install carries on.
    let extra = user && set(&c0, "user.note", b"local");
    inst.install(&open(1)).unwrap();
    assert_eq!(std::fs::read(&c0).unwrap(), f.bundles[1].0["lib/c0"]);
    check("(b) over (a)");
    if extra {
        assert_eq!(get(&c0, "user.note").as_deref(), Some(&b"local"[..]));
    }
    inst.remove().unwrap();
    assert_eq!(std::fs::metadata(&c0).unwrap().ino(), ino0);
    check("remove");
    println!(
        "bundle metadata: owner={is_root} user-xattr={user} selinux-label={label} capability={cap}"
    );
}

/// Harness sensitivity [C5]: with a durability step of the protocol left
/// out, the crash enumeration must find violations; otherwise it proves
/// nothing.
#[test]
fn crash_enum_catches_mutants() {
    let f = fixture();
    let mut missed = Vec::new();
    for (name, m, op, pre, old, new) in [
        (
            "no-staged-file-fsync",
            Mutant::SkipFileSync,
            Op::Install(0),
            &[][..],
            &f.baseline,
            &f.bundles[0].0,
        ),
        (
            "no-staged-dir-fsync",
            Mutant::SkipStageDirSync,
            Op::Install(0),
            &[],
            &f.baseline,
            &f.bundles[0].0,
        ),
        (
            "no-commit-fsync",
            Mutant::SkipCommitSync,
            Op::Install(0),
            &[],
            &f.baseline,
            &f.bundles[0].0,
        ),
        (
            "no-commit-fsync",
            Mutant::SkipCommitSync,
            Op::Remove,
            &[0],
            &f.bundles[0].0,
            &f.baseline,
        ),
    ] {
        let what = match op {
            Op::Install(_) => "install",
            Op::Remove => "remove",
        };
        MUTANT.with(|c| c.set(m));
        let t = crash_enum(
            &format!("{what} W5 mutant={name}"),
            pre,
            op,
            old,
            new,
            4,
            false,
        );
        MUTANT.with(|c| c.set(Mutant::None));
        if t.mixed + t.durability + t.stray + t.unrecoverable == 0 {
            missed.push(format!("{what} {name}"));
        }
    }
    assert!(missed.is_empty(), "mutants not caught: {missed:?}");
}

/// Added files whose parent directories do not exist: the directories are
/// created inside the root during prepare (never through a symbolic link),
/// and a power cut at any point, then recovery, leaves the set all old or all
/// new (in the model, with every crash image).
#[test]
fn added_files_get_their_directories() {
    let _guard = crate::atomic::tests::locking();
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let mut new = f.baseline.clone();
    new.insert("lib/c0", edit(&f.baseline["lib/c0"], 21));
    new.insert("opt/new/tool", blob(70, 1200));
    new.insert("opt/new/deeper/data", blob(71, 800));
    write_tree(&tmp.path().join("old"), &f.baseline);
    write_tree(&tmp.path().join("new"), &new);
    let bytes = BundleBuilder::new("26.3 (d)", "26.3", 9)
        .build(&tmp.path().join("old"), &tmp.path().join("new"), &f.key)
        .unwrap();
    let b = Bundle::open(bytes, &[f.key.public_key()]).unwrap();
    let look = |m: &Model| {
        (
            m.file("/r/lib", "c0").map(|c| c.data.clone()),
            m.file("/r/opt/new", "tool").map(|c| c.data.clone()),
            m.file("/r/opt/new/deeper", "data").map(|c| c.data.clone()),
        )
    };
    let old_v = (Some(f.baseline["lib/c0"].clone()), None, None);
    let new_v = (
        Some(new["lib/c0"].clone()),
        Some(new["opt/new/tool"].clone()),
        Some(new["opt/new/deeper/data"].clone()),
    );
    let base = model_with(&f.baseline);
    let rec = MemFs::new(base.clone());
    let counter = Faulty::new(&rec, Plan::Pass);
    run_with(&counter, &cfg(), Some(&b)).unwrap();
    let n = counter.count();
    assert_eq!(look(&rec.m.borrow()), new_v);

    // An install that fails before its commit point after creating
    // directories (an I/O error at any operation from the first directory
    // made on) removes them again: the tree is the baseline's, directories
    // included.
    let log = counter.log();
    let first_mkdir = log.iter().position(|op| *op == "create_dir").unwrap();
    let mut failed_after_mkdir = 0;
    for (k, op) in log.iter().enumerate().skip(first_mkdir) {
        let fs = MemFs::new(base.clone());
        let plan = Plan::FailAt {
            k,
            errno: 5,
            persistent: false,
        };
        // Some operations' failures are tolerated (the install succeeds).
        let Err(e) = run_with(&Faulty::new(&fs, plan), &cfg(), Some(&b)) else {
            continue;
        };
        if e.is_committed() {
            continue;
        }
        failed_after_mkdir += 1;
        let m = fs.m.borrow();
        assert_eq!(look(&m), old_v, "op {k}");
        let left: Vec<_> = m
            .dir_paths()
            .into_iter()
            .filter(|d| d.starts_with("/r/opt"))
            .collect();
        assert!(left.is_empty(), "op {k} ({op}): {left:?} left behind");
    }
    assert!(
        failed_after_mkdir > 0,
        "no fault landed after a directory was made"
    );

    let mut t = Tally::default();
    for k in 0..=n {
        t.prefixes += 1;
        let fs = MemFs::new(base.clone());
        let ok = run_with(&Faulty::new(&fs, Plan::PowerCutAfter(k)), &cfg(), Some(&b)).is_ok();
        for img in fs.m.borrow().crash_images_bounded(4, k as u64 + 1) {
            t.states += 1;
            let fs2 = MemFs::new(img);
            if recover_with(&fs2, &cfg()).is_err() {
                t.unrecoverable += 1;
                continue;
            }
            let m = fs2.m.borrow();
            let got = look(&m);
            if got != new_v && got != old_v {
                t.mixed += 1;
            }
            if ok && got != new_v {
                t.durability += 1;
            }
            let staged = ["/r/opt/new", "/r/opt/new/deeper"]
                .iter()
                .flat_map(|d| m.names(d))
                .any(|n| n.as_encoded_bytes().starts_with(STAGE_PREFIX));
            if staged || !strays(&m).is_empty() {
                t.stray += 1;
            }
        }
    }
    println!("{}", t.line("install W3 with new directories"));
    assert!(t.clean(), "{}", t.line("install W3 with new directories"));
    // Remove deletes the added files (the created directories stay).
    drop(counter);
    let fs = MemFs::new(rec.m.into_inner());
    run_with::<_, Vec<u8>>(&fs, &cfg(), None).unwrap();
    assert_eq!(look(&fs.m.borrow()), old_v);

    // A symbolic link on the way is refused and nothing is created where it
    // points.
    let mut m2 = Model::new(&["/r", "/r/lib", "/r/bin", "/elsewhere"]);
    for (p, d) in &f.baseline {
        let (dir, name) = p.split_once('/').unwrap();
        m2.put_file(&format!("/r/{dir}"), name, Content::new(d, 0o644, 0, 0));
    }
    m2.put_symlink("/r", "opt", "/elsewhere");
    let fs = MemFs::new(m2);
    let e = run_with(&fs, &cfg(), Some(&b)).unwrap_err();
    assert!(matches!(e, Error::Symlink { .. }), "{e}");
    assert!(fs.m.borrow().names("/elsewhere").is_empty());
    assert_eq!(look(&fs.m.borrow()).0, old_v.0);

    // The real file system, through the public installer.
    let root = tmp.path().join("root");
    write_tree(&root, &f.baseline);
    let inst = super::Installer::new(&root);
    inst.install(&b).unwrap();
    assert_eq!(
        std::fs::read(root.join("opt/new/deeper/data")).unwrap(),
        new["opt/new/deeper/data"]
    );
    inst.remove().unwrap();
    assert!(!root.join("opt/new/tool").exists());
    assert_eq!(
        std::fs::read(root.join("lib/c0")).unwrap(),
        f.baseline["lib/c0"]
    );
}
