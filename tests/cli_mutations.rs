//! A mutation fuzzer against the command line, as an outside reviewer would
//! run one: valid patches and bundles are mutated (bit flips, byte sets,
//! truncations, insertions, block copies, splices of two inputs) with a fixed
//! seed, and every mutant goes through `deltaswap info`, `apply`, `patch`,
//! `bundle inspect` and `install`. Each run must end with exit status 0 or 2
//! (rejected input) — never a panic (101), a signal or 3 for an input fault —
//! and with nothing left behind: no OUT unless status 0, the patched file
//! unchanged unless status 0, and the installed tree unchanged unless
//! status 0. `DELTASWAP_CLI_MUTANTS=N` sets the number of mutants per input
//! (default 60).

use std::fs;
use std::path::Path;
use std::process::Command;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = v.len();
        match rng.below(7) {
            0 if n > 0 => {
                let i = rng.below(n);
                v[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                v[i] = [0, 0xff, 0x7f, 0x80, 1][rng.below(5)];
            }
            2 => v.truncate(rng.below(n + 1)),
            3 => {
                let i = rng.below(n + 1);
                let len = 1 + rng.below(16);
                let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                v.splice(i..i, junk);
            }
            4 if n > 8 => {
                let (a, b) = (rng.below(n), rng.below(n));
                let len = rng.below(n - a.max(b)).min(64);
                let chunk = v[a..a + len].to_vec();
                v[b..b + len].copy_from_slice(&chunk);
            }
            5 if !other.is_empty() => {
                let cut = rng.below(n + 1).min(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[cut..]);
            }
            _ if n > 0 => {
                // Overwrite 8 bytes with a large little-endian number.
                let i = rng.below(n);
                let big = [u64::MAX, 1 << 63, 1 << 40, u32::MAX as u64][rng.below(4)];
                for (k, b) in big.to_le_bytes().iter().enumerate() {
                    if let Some(x) = v.get_mut(i + k) {
                        *x = *b;
                    }
                }
            }
            _ => {}
        }
    }
    v
}

fn deltaswap(dir: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_deltaswap"))
        .current_dir(dir)
        .arg("-q")
        .args(args)
        .output()
        .expect("run deltaswap");
    let code = o.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[track_caller]
fn acceptable(what: &str, code: i32, stderr: &str) {
    assert!(
        (code == 0 || code == 2) && !stderr.contains("panicked"),
        "{what}: exit {code}: {stderr}"
    );
}

fn file_data(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    (0..len).map(|_| b"ELF\0abcdefgh"[r.below(12)]).collect()
}

fn mutants() -> usize {
    std::env::var("DELTASWAP_CLI_MUTANTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

#[test]
fn mutated_patches_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = file_data(1, 30_000);
    let mut new = old.clone();
    new[1000..1100].copy_from_slice(&file_data(2, 100));
    new.extend_from_slice(&file_data(3, 2000));
    let p1 = deltaswap::diff(&old, &new).unwrap();
    let p2 = deltaswap::DiffOptions::new()
        .level(1)
        .diff(&old, &old[..20_000])
        .unwrap();
    fs::write(d.join("old"), &old).unwrap();
    // The unmutated patch is the control: it must be accepted.
    fs::write(d.join("p1"), &p1).unwrap();
    let (c, e) = deltaswap(d, &["apply", "old", "p1", "out"]);
    assert_eq!(
        (c, fs::read(d.join("out")).unwrap()),
        (0, new.clone()),
        "{e}"
    );
    let mut rng = Rng(0x5EED_CAFE);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..mutants() {
        let (base, other) = if i % 2 == 0 { (&p1, &p2) } else { (&p2, &p1) };
        let m = mutate(&mut rng, base, other);
        fs::write(d.join("m.patch"), &m).unwrap();
        let (c, e) = deltaswap(d, &["info", "m.patch"]);
        acceptable("info", c, &e);
        let _ = fs::remove_file(d.join("out"));
        let (c, e) = deltaswap(d, &["apply", "old", "m.patch", "out"]);
        acceptable("apply", c, &e);
        assert_eq!(d.join("out").exists(), c == 0, "apply exit {c}: OUT");
        fs::write(d.join("target"), &old).unwrap();
        let (c2, e) = deltaswap(d, &["patch", "target", "m.patch"]);
        acceptable("patch", c2, &e);
        let now = fs::read(d.join("target")).unwrap();
        if c2 == 0 {
            assert_eq!(
                Some(&now),
                fs::read(d.join("out")).ok().as_ref(),
                "patch vs apply"
            );
            ok += 1;
        } else {
            assert_eq!(now, old, "patch exit {c2} changed the target");
            refused += 1;
        }
        let left: Vec<_> = fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".deltaswap"))
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "leftovers {left:?}");
    }
    println!("cli mutations (patches): accepted={ok} refused={refused}");
    assert!(refused > 0);
}

#[test]
fn mutated_bundles_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (file_data(4, 20_000), file_data(5, 3000));
    let mut a2 = a.clone();
    a2[500..600].copy_from_slice(&file_data(6, 100));
    for (tree, files) in [
        ("from", vec![("lib/a.so", &a), ("bin/b", &b)]),
        (
            "to",
            vec![("lib/a.so", &a2), ("bin/b", &b), ("lib/new.so", &b)],
        ),
    ] {
        for (p, data) in files {
            let p = d.join(tree).join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }
    }
    let (c, e) = deltaswap(d, &["keygen", "k.key", "k.pub"]);
    assert_eq!(c, 0, "{e}");
    let (c, e) = deltaswap(
        d,
        &[
            "bundle",
            "create",
            "--from",
            "from",
            "--to",
            "to",
            "--label",
            "26.3 (a)",
            "--baseline",
            "26.3",
            "--seq",
            "1",
            "--key",
            "k.key",
            "--output",
            "b1.dsb",
            "--created",
            "1",
        ],
    );
    assert_eq!(c, 0, "{e}");
    let valid = fs::read(d.join("b1.dsb")).unwrap();
    // The unmutated bundle is the control: it must install.
    let control = d.join("control");
    fs::create_dir_all(control.join("lib")).unwrap();
    fs::create_dir_all(control.join("bin")).unwrap();
    fs::write(control.join("lib/a.so"), &a).unwrap();
    fs::write(control.join("bin/b"), &b).unwrap();
    let (c, e) = deltaswap(
        d,
        &["install", "--root", "control", "--trust", "k.pub", "b1.dsb"],
    );
    assert_eq!(c, 0, "{e}");
    assert_eq!(fs::read(control.join("lib/a.so")).unwrap(), a2);
    let mut rng = Rng(0xB0B_D1E5);
    let tree = |root: &Path| -> Vec<Option<Vec<u8>>> {
        ["lib/a.so", "bin/b", "lib/new.so"]
            .iter()
            .map(|p| fs::read(root.join(p)).ok())
            .collect()
    };
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..mutants() {
        let m = mutate(&mut rng, &valid, &[]);
        fs::write(d.join("m.dsb"), &m).unwrap();
        let (c, e) = deltaswap(d, &["bundle", "inspect", "m.dsb"]);
        acceptable("bundle inspect", c, &e);
        let (c, e) = deltaswap(d, &["bundle", "inspect", "--trust", "k.pub", "m.dsb"]);
        acceptable("bundle inspect --trust", c, &e);
        let root = d.join("root");
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("lib")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("lib/a.so"), &a).unwrap();
        fs::write(root.join("bin/b"), &b).unwrap();
        let before = tree(&root);
        let (c, e) = deltaswap(
            d,
            &["install", "--root", "root", "--trust", "k.pub", "m.dsb"],
        );
        acceptable("install", c, &e);
        if c == 0 {
            ok += 1;
            assert_eq!(
                tree(&root),
                vec![Some(a2.clone()), Some(b.clone()), Some(b.clone())]
            );
        } else {
            refused += 1;
            assert_eq!(tree(&root), before, "install exit {c} changed the tree");
        }
    }
    println!("cli mutations (bundles): accepted={ok} refused={refused}");
    assert!(refused > 0);
}
