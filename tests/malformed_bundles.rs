//! The malformed-input catalogue of RELIABILITY.md §5.2, classes 18
//! (signature / manifest attacks) and 19 (bundle path and identity attacks),
//! as committed bundle files.
//!
//! `tests/fixtures/malformed-bundles/<class>/<vector>.bundle`, and
//! `manifest.tsv` listing for each vector the stage that must refuse it and
//! the exact error:
//!
//! * `open`: `Bundle::open` trusting only the test key
//!   (`trusted.pub`) refuses it;
//! * `install`: it opens (it is well signed and well formed) and
//!   `Installer::install` on the test tree refuses it;
//! * `unverified`: `Bundle::open_unverified` reads it and `install` refuses
//!   the unverified bundle.
//!
//! On refusal the test tree under the root, and the `outside/` directory next
//! to it (reachable from the root through the symbolic link `link`), must be
//! exactly as before. `valid.bundle` is the control: it opens and installs.
//!
//! The bundles are written by the reference writer `fuzz/src/bundle.rs`
//! (from docs/FORMAT.md, not by the crate's builder) with the fuzzing-only key.
//! `cargo test --test malformed_bundles -- --ignored write_bundle_catalogue`
//! regenerates them; `committed_files_match_the_generator` checks they are up
//! to date.

#[path = "../fuzz/src/bundle.rs"]
#[allow(dead_code)]
mod bundle;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bundle::{Comp, Manifest, PayloadEntry, Version};
use deltaswap::{Bundle, Error, Installer, PublicKey};

const CLASSES: [&str; 2] = ["18-signature-manifest", "19-path-identity"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/malformed-bundles")
}

/// `lib/libfoo.so` at the baseline, its fixed version, a file a bundle adds,
/// and what `outside/sentinel` holds.
fn files() -> [Vec<u8>; 4] {
    let a: Vec<u8> = (0..4000u32).map(|i| (i * 13 % 251) as u8).collect();
    let mut b = a.clone();
    b[1000..1040].copy_from_slice(&[0xC3; 40]);
    let c = b"added by the bundle\n".repeat(10);
    [a, b, c, b"outside the root\n".to_vec()]
}

fn patch(old: &[u8], new: &[u8]) -> Vec<u8> {
    deltaswap::DiffOptions::new()
        .level(3)
        .threads(1)
        .diff(old, new)
        .unwrap()
}

/// The test tree: `root/lib/libfoo.so`, `root/lib/alias.so -> libfoo.so`,
/// `root/dir/`, `root/fifo`, `root/link -> ../outside`, `outside/sentinel`.
fn make_tree(dir: &Path) -> (PathBuf, PathBuf) {
    let [a, _, _, s] = files();
    let root = dir.join("root");
    let outside = dir.join("outside");
    fs::create_dir_all(root.join("lib")).unwrap();
    fs::create_dir_all(root.join("dir")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(root.join("lib/libfoo.so"), a).unwrap();
    fs::write(outside.join("sentinel"), s).unwrap();
    std::os::unix::fs::symlink("libfoo.so", root.join("lib/alias.so")).unwrap();
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

/// Every entry under `dir` except the installer's state directory.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new(".deltaswap") {
                continue;
            }
            let md = fs::symlink_metadata(&p).unwrap();
            let v = if md.file_type().is_symlink() {
                format!("link {:?}", fs::read_link(&p).unwrap())
            } else if md.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else if md.is_file() {
                format!(
                    "file {:o} {:?}",
                    md.permissions().mode(),
                    Version::of(&fs::read(&p).unwrap())
                )
            } else {
                "special".to_string()
            };
            out.insert(rel, v);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn describe(e: &Error) -> String {
    match e {
        Error::BundleFormat(f) => format!("BundleFormat:{:?}", f.kind()),
        Error::LimitExceeded { what, .. } => format!("LimitExceeded:{what}"),
        Error::UntrustedKey { .. } => "UntrustedKey".into(),
        Error::BadSignature { .. } => "BadSignature".into(),
        Error::PayloadMismatch { .. } => "PayloadMismatch".into(),
        Error::UnsafePath { .. } => "UnsafePath".into(),
        Error::DuplicatePath { .. } => "DuplicatePath".into(),
        Error::Symlink { .. } => "Symlink".into(),
        Error::NotRegularFile { .. } => "NotRegularFile".into(),
        Error::ComponentModified { .. } => "ComponentModified".into(),
        other => format!("Other:{other:?}"),
    }
}

struct Vector {
    class: &'static str,
    name: &'static str,
    bytes: Vec<u8>,
    stage: &'static str,
    expect: &'static str,
}

fn patch_comp(path: &[u8], from: &[u8], to: &[u8]) -> (Comp, Vec<u8>) {
    let body = patch(from, to);
    let c = Comp {
        path: path.to_vec(),
        kind: 1,
        mode: 0o644,
        baseline: Version::of(from),
        target: Version::of(to),
        payloads: vec![PayloadEntry {
            from: Version::of(from),
            len: body.len() as u64,
            sha256: Version::of(&body).sha256,
        }],
    };
    (c, body)
}

fn add_comp(path: &[u8], to: &[u8]) -> (Comp, Vec<u8>) {
    let (mut c, body) = patch_comp(path, b"", to);
    c.kind = 2;
    (c, body)
}

fn remove_comp(path: &[u8], from: &[u8]) -> (Comp, Vec<u8>) {
    let c = Comp {
        path: path.to_vec(),
        kind: 3,
        mode: 0,
        baseline: Version::of(from),
        target: Version::of(b""),
        payloads: vec![],
    };
    (c, Vec::new())
}

fn manifest(comps: Vec<(Comp, Vec<u8>)>) -> (Manifest, Vec<Vec<u8>>) {
    let (components, payloads) = comps.into_iter().unzip();
    let m = Manifest {
        label: b"26.3 (a)".to_vec(),
        baseline: b"26.3".to_vec(),
        sequence: 7,
        created: 1_790_000_000,
        components,
    };
    (m, payloads)
}

fn signed(comps: Vec<(Comp, Vec<u8>)>) -> Vec<u8> {
    let (m, p) = manifest(comps);
    bundle::encode(&m, &p, bundle::fuzz_key())
}

/// Header + manifest + signature + payloads with the parts given.
fn assemble(header: &[u8; 32], manifest: &[u8], sig: &[u8], payloads: &[u8]) -> Vec<u8> {
    [&header[..], manifest, sig, payloads].concat()
}

fn catalogue() -> Vec<Vector> {
    let [a, b, c, s] = files();
    let fix = || patch_comp(b"lib/libfoo.so", &a, &b);
    let valid = signed(vec![fix(), add_comp(b"lib/new.so", &c)]);
    let (m, payloads) = manifest(vec![fix(), add_comp(b"lib/new.so", &c)]);
    let mbytes = bundle::encode_manifest(&m, 0);
    let pbytes = payloads.concat();
    let key = bundle::fuzz_key();
    let other = bundle::other_key();
    let id = bundle::key_id(&key.verifying_key());
    let other_id = bundle::key_id(&other.verifying_key());
    let h = bundle::header(mbytes.len() as u32, pbytes.len() as u64, id);
    let sig = bundle::sign(key, &h, &mbytes);
    let mlen = mbytes.len();

    let mut v = Vec::new();
    let mut add = |class, name, bytes, stage, expect| {
        v.push(Vector {
            class,
            name,
            bytes,
            stage,
            expect,
        })
    };
    let c18 = CLASSES[0];
    add(c18, "valid-control", valid.clone(), "ok", "Ok");
    add(
        c18,
        "missing-signature",
        assemble(&h, &mbytes, &[], &[]),
        "open",
        "BundleFormat:Truncated",
    );
    add(
        c18,
        "truncated-signature",
        assemble(&h, &mbytes, &sig[..40], &[]),
        "open",
        "BundleFormat:Truncated",
    );
    add(
        c18,
        "signature-zeroed",
        assemble(&h, &mbytes, &[0; 64], &pbytes),
        "open",
        "BadSignature",
    );
    let mut flipped = sig;
    flipped[17] ^= 0x10;
    add(
        c18,
        "signature-bit-flipped",
        assemble(&h, &mbytes, &flipped, &pbytes),
        "open",
        "BadSignature",
    );
    let oh = bundle::header(mlen as u32, pbytes.len() as u64, other_id);
    add(
        c18,
        "signed-by-untrusted-key",
        assemble(&oh, &mbytes, &bundle::sign(other, &oh, &mbytes), &pbytes),
        "open",
        "UntrustedKey",
    );
    add(
        c18,
        "trusted-key-id-other-signer",
        assemble(&h, &mbytes, &bundle::sign(other, &h, &mbytes), &pbytes),
        "open",
        "BadSignature",
    );
    // The signed length shorter than the manifest: the last 8 manifest bytes
    // moved into the payload section, lengths adjusted so the file adds up;
    // the signature over the original header no longer verifies.
    let short = bundle::header((mlen - 8) as u32, pbytes.len() as u64 + 8, id);
    add(
        c18,
        "signed-length-shorter",
        [
            &short[..],
            &mbytes[..mlen - 8],
            &sig,
            &mbytes[mlen - 8..],
            &pbytes,
        ]
        .concat(),
        "open",
        "BadSignature",
    );
    // ... and re-signed by the trusted key over the shorter manifest: the
    // signature is good, the manifest is cut and must not parse.
    let short_sig = bundle::sign(key, &short, &mbytes[..mlen - 8]);
    add(
        c18,
        "signed-length-shorter-resigned",
        [
            &short[..],
            &mbytes[..mlen - 8],
            &short_sig,
            &mbytes[mlen - 8..],
            &pbytes,
        ]
        .concat(),
        "open",
        "BundleFormat:Truncated",
    );
    // A valid signature of another manifest (sequence 8) grafted on.
    let mut m8 = m.clone();
    m8.sequence = 8;
    let m8bytes = bundle::encode_manifest(&m8, 0);
    add(
        c18,
        "signature-over-other-manifest",
        assemble(&h, &mbytes, &bundle::sign(key, &h, &m8bytes), &pbytes),
        "open",
        "BadSignature",
    );
    let mut seq = mbytes.clone();
    seq[20] ^= 1; // a byte of the sequence number ("26.3 (a)", "26.3", then it)
    add(
        c18,
        "manifest-byte-changed-after-signing",
        assemble(&h, &seq, &sig, &pbytes),
        "open",
        "BadSignature",
    );
    let mut hdr = h;
    hdr[9] = 1; // reserved byte
    add(
        c18,
        "header-reserved-byte",
        assemble(&hdr, &mbytes, &sig, &pbytes),
        "open",
        "BundleFormat:Reserved",
    );
    let mut pay = pbytes.clone();
    let last = pay.len() - 3;
    pay[last] ^= 0x40;
    add(
        c18,
        "payload-byte-flipped",
        assemble(&h, &mbytes, &sig, &pay),
        "open",
        "PayloadMismatch",
    );
    // The payloads of a differently built bundle with the same lengths.
    let mut swapped = pbytes.clone();
    swapped.reverse();
    add(
        c18,
        "payloads-swapped",
        assemble(&h, &mbytes, &sig, &swapped),
        "open",
        "PayloadMismatch",
    );
    add(
        c18,
        "trailing-bytes",
        [&valid[..], b"extra"].concat(),
        "open",
        "BundleFormat:TrailingBytes",
    );
    let huge = bundle::header(u32::MAX, 0, id);
    add(
        c18,
        "manifest-length-above-limit",
        assemble(&huge, &mbytes, &sig, &pbytes),
        "open",
        "LimitExceeded:bundle manifest length",
    );
    add(
        c18,
        "unsigned-installed",
        assemble(&oh, &mbytes, &[0; 64], &pbytes),
        "unverified",
        "BadSignature",
    );

    let c19 = CLASSES[1];
    let bad = |p: &[u8]| signed(vec![patch_comp(p, &a, &b)]);
    add(
        c19,
        "dotdot",
        bad(b"../outside/sentinel"),
        "open",
        "UnsafePath",
    );
    add(
        c19,
        "dotdot-inside",
        bad(b"lib/../../outside/sentinel"),
        "open",
        "UnsafePath",
    );
    add(c19, "absolute", bad(b"/etc/passwd"), "open", "UnsafePath");
    add(
        c19,
        "nul-byte",
        bad(b"lib/libfoo.so\0.txt"),
        "open",
        "UnsafePath",
    );
    add(
        c19,
        "empty-component",
        bad(b"lib//libfoo.so"),
        "open",
        "UnsafePath",
    );
    add(
        c19,
        "dot-component",
        bad(b"./lib/libfoo.so"),
        "open",
        "UnsafePath",
    );
    add(c19, "empty-path", bad(b""), "open", "UnsafePath");
    add(
        c19,
        "installer-state",
        bad(b".deltaswap/state"),
        "open",
        "UnsafePath",
    );
    add(
        c19,
        "duplicate-entry",
        signed(vec![fix(), fix()]),
        "open",
        "DuplicatePath",
    );
    add(
        c19,
        "case-colliding",
        signed(vec![fix(), patch_comp(b"LIB/LibFoo.so", &a, &b)]),
        "open",
        "DuplicatePath",
    );
    add(
        c19,
        "component-is-anothers-directory",
        signed(vec![
            add_comp(b"lib/new", &c),
            add_comp(b"Lib/New/inner.so", &c),
        ]),
        "open",
        "UnsafePath",
    );
    add(
        c19,
        "symlinked-parent",
        signed(vec![patch_comp(b"link/sentinel", &s, &b)]),
        "install",
        "Symlink",
    );
    add(
        c19,
        "add-through-symlinked-parent",
        signed(vec![add_comp(b"link/planted", &c)]),
        "install",
        "Symlink",
    );
    add(
        c19,
        "remove-through-symlinked-parent",
        signed(vec![remove_comp(b"link/sentinel", &s)]),
        "install",
        "Symlink",
    );
    add(
        c19,
        "symlinked-component",
        signed(vec![patch_comp(b"lib/alias.so", &a, &b)]),
        "install",
        "Symlink",
    );
    add(
        c19,
        "directory-component",
        signed(vec![patch_comp(b"dir", &a, &b)]),
        "install",
        "NotRegularFile",
    );
    add(
        c19,
        "fifo-component",
        signed(vec![patch_comp(b"fifo", &a, &b)]),
        "install",
        "NotRegularFile",
    );
    add(
        c19,
        "second-target-through-link",
        signed(vec![fix(), add_comp(b"link/planted", &c)]),
        "install",
        "Symlink",
    );
    v
}

fn manifest_text(vectors: &[Vector]) -> String {
    let mut s = String::from("# vector\tstage\texpected\n");
    for v in vectors {
        s.push_str(&format!(
            "{}/{}.bundle\t{}\t{}\n",
            v.class, v.name, v.stage, v.expect
        ));
    }
    s
}

fn trusted() -> PublicKey {
    let k = fs::read(fixtures().join("trusted.pub")).unwrap();
    PublicKey::from_bytes(&k.try_into().unwrap()).unwrap()
}

/// Runs one vector; returns what happened (`Ok` or the described error).
fn run(bytes: &[u8], stage: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let (root, outside) = make_tree(dir.path());
    let (root_before, outside_before) = (snapshot(&root), snapshot(&outside));
    let opened = if stage == "unverified" {
        Bundle::open_unverified(bytes)
    } else {
        Bundle::open(bytes, &[trusted()])
    };
    let result = match opened {
        Err(e) => Err(format!("open:{}", describe(&e))),
        Ok(b) => match Installer::new(&root).install(&b) {
            Ok(_) => Ok("Ok".to_string()),
            Err(e) => Err(format!("install:{}", describe(&e))),
        },
    };
    if snapshot(&outside) != outside_before {
        return Err(format!("{result:?} and changed files outside the root"));
    }
    if result.is_err() && snapshot(&root) != root_before {
        return Err(format!("{result:?} and changed the tree"));
    }
    result
}

struct Row {
    path: String,
    stage: String,
    expect: String,
}

fn read_manifest() -> Vec<Row> {
    fs::read_to_string(fixtures().join("manifest.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                path: f[0].to_string(),
                stage: f[1].to_string(),
                expect: f[2].to_string(),
            }
        })
        .collect()
}

/// Every committed vector is refused at its stage with its error, and
/// touches nothing; the control installs.
#[test]
fn every_bundle_vector_gives_its_error() {
    let mut failures = Vec::new();
    for r in read_manifest() {
        let bytes = fs::read(fixtures().join(&r.path)).unwrap();
        let got = run(&bytes, &r.stage);
        let want = match r.stage.as_str() {
            "ok" => Ok("Ok".to_string()),
            "open" => Err(format!("open:{}", r.expect)),
            _ => Err(format!("install:{}", r.expect)),
        };
        if got != want {
            failures.push(format!("{}: expected {want:?}, got {got:?}", r.path));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Classes 18 and 19 each have at least three refused vectors.
#[test]
fn every_bundle_class_has_three_vectors() {
    let rows = read_manifest();
    for c in CLASSES {
        let n = rows
            .iter()
            .filter(|r| r.path.starts_with(c) && r.stage != "ok")
            .count();
        assert!(n >= 3, "class {c} has {n} vectors");
    }
}

/// The reference reader (from docs/FORMAT.md) agrees on every open-stage
/// refusal class, so the vectors test what the format says.
#[test]
fn reference_reader_agrees() {
    let vk = bundle::fuzz_key().verifying_key();
    for v in catalogue() {
        let r = bundle::read(&v.bytes, Some(&vk));
        match v.stage {
            "open" => assert!(r.is_err(), "{}: reference accepts", v.name),
            "unverified" => assert!(bundle::read(&v.bytes, None).is_ok(), "{}", v.name),
            _ => assert!(r.is_ok(), "{}: reference refuses: {r:?}", v.name),
        }
    }
}

fn write_all(vectors: &[Vector], root: &Path) {
    fs::create_dir_all(root).unwrap();
    let vk = bundle::fuzz_key().verifying_key();
    fs::write(root.join("trusted.pub"), vk.as_bytes()).unwrap();
    for v in vectors {
        let dir = root.join(v.class);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{}.bundle", v.name)), &v.bytes).unwrap();
    }
    fs::write(root.join("manifest.tsv"), manifest_text(vectors)).unwrap();
}

/// The committed files are what the generator writes.
#[test]
fn committed_files_match_the_generator() {
    let vectors = catalogue();
    assert_eq!(
        fs::read_to_string(fixtures().join("manifest.tsv")).unwrap(),
        manifest_text(&vectors),
        "manifest.tsv is stale: run the ignored write_bundle_catalogue test"
    );
    for v in &vectors {
        let p = fixtures().join(v.class).join(format!("{}.bundle", v.name));
        assert!(
            fs::read(&p).unwrap() == v.bytes,
            "{} is stale: run the ignored write_bundle_catalogue test",
            p.display()
        );
    }
}

#[test]
#[ignore = "writes tests/fixtures/malformed-bundles; run explicitly to regenerate"]
fn write_bundle_catalogue() {
    write_all(&catalogue(), &fixtures());
}

/// Writes the seed corpus of the `bundle_open` fuzz target: the catalogue's
/// bundles as raw inputs (first byte 0), and a few pseudo-random built
/// inputs (first byte 1, decoded by `arbitrary`).
#[test]
#[ignore = "writes fuzz/corpus/bundle_open; run explicitly to regenerate"]
fn write_bundle_open_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/bundle_open");
    fs::create_dir_all(&dir).unwrap();
    for v in catalogue() {
        fs::write(
            dir.join(format!("seed-{}", v.name)),
            [&[0u8][..], &v.bytes].concat(),
        )
        .unwrap();
    }
    // A three-component manifest cut at every byte (header lengths adjusted,
    // signature left as is): reaches every field's truncation in the
    // manifest parser through `open_unverified`.
    let [a, b, c, _] = files();
    let (m, _) = manifest(vec![
        patch_comp(b"lib/libfoo.so", &a, &b),
        add_comp(b"lib/new.so", &c),
        remove_comp(b"lib/old.so", &a),
    ]);
    let full = bundle::encode_manifest(&m, 0);
    let id = bundle::key_id(&bundle::fuzz_key().verifying_key());
    for cut in 0..full.len() {
        let h = bundle::header(cut as u32, 0, id);
        let bytes = [&h[..], &full[..cut], &[0u8; 64]].concat();
        fs::write(
            dir.join(format!("seed-cut-manifest-{cut}")),
            [&[0u8][..], &bytes].concat(),
        )
        .unwrap();
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..8 {
        let bytes: Vec<u8> = std::iter::once(1)
            .chain((0..300).map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (x >> 56) as u8
            }))
            .collect();
        fs::write(dir.join(format!("seed-built-{i}")), bytes).unwrap();
    }
}
