//! Verify-then-use [S3]: the bytes applied are the bytes verified.
//!
//! A patch or bundle file that changes after it was checked, or while it is
//! being applied, must give a typed error (and leave the installed files as
//! they were) or a verified result; never unverified content.
//!
//! * Patches: the patch file is rewritten in place (another valid patch for
//!   the same old file, or a corrupted copy) by a second handle after the
//!   applier has read `k` bytes, for many `k` through the header, the
//!   segment descriptors and the streams, through `apply_to` (streaming) and
//!   `patch_in_place`.
//! * Bundles: a bundle opened (signature and payload hashes checked) from a
//!   file is changed on disk before `install`, and changed after the
//!   installer's `n`-th read of it, for every `n`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use deltaswap::{
    Bundle, BundleBuilder, DiffOptions, Error, Installer, PatchOptions, PatchReader, SecretKey,
    Source,
};

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Compressible: a small alphabet.
            b"abcdefgh"[(x % 8) as usize]
        })
        .collect()
}

fn edited(base: &[u8], seed: u64) -> Vec<u8> {
    let mut v = base.to_vec();
    let e = data(seed, 64);
    for (i, b) in e.iter().enumerate() {
        let at = (i * 997 + seed as usize * 31) % v.len();
        v[at] = *b;
    }
    v.extend_from_slice(&e);
    v
}

fn diff(old: &[u8], new: &[u8]) -> Vec<u8> {
    DiffOptions::new()
        .level(3)
        .threads(1)
        .diff(old, new)
        .unwrap()
}

/// Reads the patch file through `file`; after `switch_at` bytes have been
/// handed out, overwrites the file in place with `replacement` (through
/// another handle, as a concurrent writer would).
struct Rewriting {
    file: File,
    path: PathBuf,
    read: usize,
    switch_at: usize,
    replacement: Vec<u8>,
    done: bool,
}

impl Read for Rewriting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.done && self.read >= self.switch_at {
            let mut w = OpenOptions::new().write(true).open(&self.path)?;
            w.write_all(&self.replacement)?;
            w.set_len(self.replacement.len() as u64)?;
            self.done = true;
        }
        // Small reads, so that the switch lands inside every structure.
        let room = if self.done {
            buf.len()
        } else {
            buf.len().min(self.switch_at - self.read).max(1)
        };
        let room = room.min(buf.len());
        let n = self.file.read(&mut buf[..room])?;
        self.read += n;
        Ok(n)
    }
}

fn switch_points(len: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..len.min(200)).collect();
    v.extend((200..len).step_by(7));
    v.push(len);
    v
}

#[test]
fn patch_rewritten_while_applied() {
    let old = data(1, 20_000);
    let new1 = edited(&old, 2);
    let new2 = edited(&old, 3);
    let p1 = diff(&old, &new1);
    let p2 = diff(&old, &new2);
    let mut corrupt = p1.clone();
    for i in (90..corrupt.len()).step_by(13) {
        corrupt[i] ^= 0x5A;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut ok, mut refused) = (0, 0);
    for replacement in [&p2, &corrupt] {
        for k in switch_points(p1.len()) {
            let path = dir.path().join("p");
            fs::write(&path, &p1).unwrap();
            let reader = Rewriting {
                file: File::open(&path).unwrap(),
                path: path.clone(),
                read: 0,
                switch_at: k,
                replacement: replacement.clone(),
                done: false,
            };
            let mut out = Vec::new();
            let r = PatchReader::new(reader).and_then(|p| p.apply_to(&old[..], &mut out));
            match r {
                Ok(v) => {
                    ok += 1;
                    assert!(
                        out == new1 || out == new2,
                        "k={k}: Ok with bytes that are neither version"
                    );
                    assert_eq!(v.sha256(), deltaswap::Sha256Digest::of(&out), "k={k}");
                }
                Err(e) => {
                    refused += 1;
                    assert!(e.is_rejected_input(), "k={k}: {e:?}");
                }
            }
        }
    }
    println!("verify-then-use patch (apply_to): ok={ok} refused={refused}");
    assert!(
        refused > 0 && ok > 0,
        "the switch points must cover both outcomes"
    );
}

#[test]
fn patch_rewritten_during_patch_in_place() {
    let old = data(4, 20_000);
    let new1 = edited(&old, 5);
    let new2 = edited(&old, 6);
    let p1 = diff(&old, &new1);
    let p2 = diff(&old, &new2);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("lib.so");
    let patch = dir.path().join("p");
    let (mut ok, mut refused) = (0, 0);
    for k in switch_points(p1.len()).into_iter().step_by(3) {
        fs::write(&target, &old).unwrap();
        fs::write(&patch, &p1).unwrap();
        let reader = Rewriting {
            file: File::open(&patch).unwrap(),
            path: patch.clone(),
            read: 0,
            switch_at: k,
            replacement: p2.clone(),
            done: false,
        };
        let r = deltaswap::patch_in_place(&target, reader, &PatchOptions::default());
        let now = fs::read(&target).unwrap();
        match r {
            Ok(_) => {
                ok += 1;
                assert!(now == new1 || now == new2, "k={k}: Ok, target is neither");
            }
            Err(e) => {
                refused += 1;
                assert!(e.is_rejected_input(), "k={k}: {e:?}");
                assert!(now == old, "k={k}: refused but the target changed");
            }
        }
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "k={k}: leftovers {names:?}");
    }
    println!("verify-then-use patch_in_place: ok={ok} refused={refused}");
    assert!(refused > 0 && ok > 0);
}

/// A bundle file read through `read_at`. Once armed, the `flip_after`-th
/// read (counted from arming) first changes the file on disk: one byte at
/// `at` flipped, as a concurrent writer would.
struct ChangingFile {
    file: File,
    reads: Arc<AtomicUsize>,
    flip_after: Arc<AtomicUsize>,
    at: u64,
}

impl Source for ChangingFile {
    fn len(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        if n == self.flip_after.load(Ordering::SeqCst) {
            let mut b = [0u8; 1];
            self.file.read_exact_at(&mut b, self.at)?;
            b[0] ^= 0x20;
            self.file.write_all_at(&b, self.at)?;
        }
        self.file.read_exact_at(buf, offset)
    }
}

fn tree(dir: &Path, files: &[(&str, &[u8])]) {
    for (p, d) in files {
        let p = dir.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, d).unwrap();
    }
}

fn read_tree(root: &Path) -> Vec<Option<Vec<u8>>> {
    ["lib/a.so", "lib/b.so", "bin/tool"]
        .iter()
        .map(|p| fs::read(root.join(p)).ok())
        .collect()
}

#[test]
fn bundle_changed_after_open_and_during_install() {
    let (a, b, t) = (data(7, 30_000), data(8, 10_000), data(9, 5_000));
    let (a2, b2, t2) = (edited(&a, 10), edited(&b, 11), edited(&t, 12));
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    tree(
        &old,
        &[("lib/a.so", &a), ("lib/b.so", &b), ("bin/tool", &t)],
    );
    tree(
        &new,
        &[("lib/a.so", &a2), ("lib/b.so", &b2), ("bin/tool", &t2)],
    );
    let key = SecretKey::generate().unwrap();
    let bytes = BundleBuilder::new("26.3 (a)", "26.3", 1)
        .build(&old, &new, &key)
        .unwrap();
    let before = vec![Some(a.clone()), Some(b.clone()), Some(t.clone())];
    let after = vec![Some(a2), Some(b2), Some(t2)];
    let file = dir.path().join("bundle");
    let root = dir.path().join("root");
    let (mut ok, mut refused) = (0, 0);
    // Change one payload byte (the payloads end the file: the last byte, the
    // one 200 before the end, the one three quarters in) at every read of the
    // install, from the first (0: changed between open and install) to past
    // the last one.
    let total = bytes.len() as u64;
    for at in [total - 1, total - 200, total * 3 / 4] {
        let mut n = 0;
        loop {
            let _ = fs::remove_dir_all(&root);
            tree(
                &root,
                &[("lib/a.so", &a), ("lib/b.so", &b), ("bin/tool", &t)],
            );
            fs::write(&file, &bytes).unwrap();
            let reads = Arc::new(AtomicUsize::new(0));
            let flip_after = Arc::new(AtomicUsize::new(usize::MAX));
            let src = ChangingFile {
                file: OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&file)
                    .unwrap(),
                reads: reads.clone(),
                flip_after: flip_after.clone(),
                at,
            };
            let bundle = Bundle::open(src, &[key.public_key()]).unwrap();
            reads.store(0, Ordering::SeqCst);
            flip_after.store(n, Ordering::SeqCst);
            let r = Installer::new(&root).install(&bundle);
            let flipped = reads.load(Ordering::SeqCst) > n;
            let now = read_tree(&root);
            match r {
                Ok(_) => {
                    ok += 1;
                    assert_eq!(now, after, "at={at} n={n}: Ok but not the new tree");
                }
                Err(e) => {
                    refused += 1;
                    assert!(
                        matches!(e, Error::PayloadMismatch { .. }),
                        "at={at} n={n}: {e:?}"
                    );
                    assert_eq!(now, before, "at={at} n={n}: refused but the tree changed");
                }
            }
            if !flipped {
                break; // the install made fewer than n reads: every point done
            }
            n += 1;
        }
    }
    println!("verify-then-use bundle: ok={ok} refused={refused}");
    assert!(refused > 0, "a change of the bundle file was never noticed");
}
