//! Tests on the real file system: fault injection through [`RealFs`], metadata
//! preservation, refusals, free space, read-only mounts, locking, recovery.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::faulty::{Faulty, Plan};
use crate::atomic::fs::RealFs;
use crate::atomic::protocol::{patch_with, recover_with, Knobs, TEMP_PREFIX};
use crate::atomic::{patch_in_place, recover, PatchOptions, SwapMethod};
use crate::error::{Error, Subject};

/// A valid version-2 `security.capability` value granting CAP_NET_RAW.
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn versions() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let old: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut new = old.clone();
    new.splice(5000..5100, b"patched section".iter().copied());
    new.extend_from_slice(&[0xAB; 3000]);
    let patch = crate::diff(&old, &new).expect("diff");
    (old, new, patch)
}

fn is_root(dir: &Path) -> bool {
    fs::metadata(dir).map(|m| m.uid() == 0).unwrap_or(false)
}

fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(Result::ok)
        .map(|e| {
            let ino = e.metadata().map(|m| m.ino()).unwrap_or(0);
            (e.file_name().to_string_lossy().into_owned(), ino)
        })
        .collect();
    v.sort();
    v
}

fn strays(dir: &Path) -> Vec<String> {
    listing(dir)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with(TEMP_PREFIX))
        .collect()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    let n = rustix::fs::getxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    rustix::fs::setxattr(path, name, value, rustix::fs::XattrFlags::empty()).is_ok()
}

#[test]
fn real_fs_error_at_every_operation() {
    let _guard = super::locking();
    let (old, new, patch) = versions();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("lib.so");
    let keep = dir.path().join("lib.so.rollback");
    let setup = || {
        let _ = fs::remove_file(&keep);
        fs::write(&target, &old).expect("write");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    let opts = PatchOptions::new().keep_old(&keep);
    setup();
    let counter = Faulty::new(&RealFs, Plan::Pass);
    patch_with(&counter, &target, &patch[..], &opts, Knobs::default()).expect("clean run");
    assert_eq!(fs::read(&target).expect("read"), new);
    let n = counter.count();
    let log = counter.log();
    let (mut points, mut committed, mut violations) = (0, 0, Vec::new());
    for k in 0..n {
        for persistent in [false, true] {
            points += 1;
            setup();
            let ino = fs::metadata(&target).expect("stat").ino();
            let f = Faulty::new(
                &RealFs,
                Plan::FailAt {
                    k,
                    errno: 5,
                    persistent,
                },
            );
            let r = patch_with(&f, &target, &patch[..], &opts, Knobs::default());
            let at = format!(
                "op {k} ({}) persistent {persistent}",
                log.get(k).copied().unwrap_or("?")
            );
            let now = fs::read(&target).expect("read");
            let meta = fs::metadata(&target).expect("stat");
            match &r {
                Ok(_) => violations.push(format!("{at}: Ok after a fault")),
                Err(e) if e.is_committed() => {
                    committed += 1;
                    if now != new || meta.mode() & 0o7777 != 0o755 {
                        violations
                            .push(format!("{at}: committed but not the complete new version"));
                    }
                }
                Err(_) => {
                    if now != old || meta.ino() != ino || meta.mode() & 0o7777 != 0o755 {
                        violations.push(format!("{at}: original not byte-identical"));
                    }
                }
            }
            recover(dir.path()).expect("recover");
            if !strays(dir.path()).is_empty() {
                violations.push(format!("{at}: leftovers after recovery"));
            }
            // Whatever the failed run left (the rollback path may already
            // name the old inode), running the patch again must work.
            if r.as_ref().is_err_and(|e| !e.is_committed()) {
                let again = patch_with(&RealFs, &target, &patch[..], &opts, Knobs::default());
                let kept = fs::read(&keep).unwrap_or_default();
                if again.is_err() || fs::read(&target).ok().as_ref() != Some(&new) || kept != old {
                    violations.push(format!("{at}: re-run after the failure: {again:?}"));
                }
            }
        }
    }
    println!(
        "fault-inject real-fs: points={points} committed={committed} violations={}",
        violations.len()
    );
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(committed > 0);
}

#[test]
fn preserves_mode_owner_and_xattrs() {
    let _guard = super::locking();
    let (old, new, patch) = versions();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("ping");
    fs::write(&target, &old).expect("write");
    let root = is_root(dir.path());
    if root {
        std::os::unix::fs::chown(&target, Some(1234), Some(5678)).expect("chown");
    }
    let mode = if root { 0o6755 } else { 0o755 };
    fs::set_permissions(&target, fs::Permissions::from_mode(mode)).expect("chmod");
    let user_xattr = set_xattr(&target, "user.origin", b"vendor");
    let cap = root && set_xattr(&target, "security.capability", &CAP_NET_RAW);
    let before = fs::metadata(&target).expect("stat");

    let out = patch_in_place(&target, &patch[..], &PatchOptions::new()).expect("patch");
    assert_eq!(out.method(), SwapMethod::Exchanged);
    assert_eq!(fs::read(&target).expect("read"), new);
    let after = fs::metadata(&target).expect("stat");
    assert_ne!(after.ino(), before.ino(), "a new inode is swapped in");
    assert_eq!(after.mode() & 0o7777, mode);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    if user_xattr {
        assert_eq!(
            xattr(&target, "user.origin").as_deref(),
            Some(&b"vendor"[..])
        );
    }
    if cap {
        assert_eq!(
            xattr(&target, "security.capability").as_deref(),
            Some(&CAP_NET_RAW[..])
        );
    }
    println!(
        "metadata: mode={mode:o} owner={}:{} user-xattr={user_xattr} capability={cap}",
        after.uid(),
        after.gid()
    );
    assert!(strays(dir.path()).is_empty());
}

#[test]
fn open_and_mapped_old_version_is_untouched() {
    let _guard = super::locking();
    let (old, new, patch) = versions();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("libfoo.so");
    fs::write(&target, &old).expect("write");
    let map = crate::MappedFile::open(&target).expect("map");
    patch_in_place(&target, &patch[..], &PatchOptions::new()).expect("patch");
    assert_eq!(
        map.as_bytes(),
        &old[..],
        "a running process keeps its mapping"
    );
    assert_eq!(fs::read(&target).expect("read"), new);
}

#[test]
fn refusals_touch_nothing() {
    let _guard = super::locking();
    let (old, new, patch) = versions();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let real = d.join("real.so");
    fs::write(&real, &old).expect("write");
    std::os::unix::fs::symlink("real.so", d.join("link.so")).expect("symlink");
    fs::create_dir(d.join("subdir")).expect("mkdir");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        d.join("fifo"),
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .expect("mkfifo");
    fs::write(d.join("linked.so"), &old).expect("write");
    fs::hard_link(d.join("linked.so"), d.join("alias.so")).expect("link");
    fs::write(d.join("wrong.so"), b"some other file").expect("write");
    let mut same_len = old.clone();
    same_len[100] ^= 1;
    fs::write(d.join("corrupt.so"), &same_len).expect("write");

    let before = listing(d);
    let opts = PatchOptions::new();
    let e = patch_in_place(d.join("link.so"), &patch[..], &opts).unwrap_err();
    assert!(matches!(e, Error::Symlink { .. }), "{e}");
    let e = patch_in_place(d.join("subdir"), &patch[..], &opts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotRegularFile {
                kind: "a directory",
                ..
            }
        ),
        "{e}"
    );
    let e = patch_in_place(d.join("fifo"), &patch[..], &opts).unwrap_err();
    assert!(
        matches!(e, Error::NotRegularFile { kind: "a FIFO", .. }),
        "{e}"
    );
    let e = patch_in_place(d.join("linked.so"), &patch[..], &opts).unwrap_err();
    assert!(matches!(e, Error::HardLinks { links: 2, .. }), "{e}");
    // A rollback path that is the file itself (through another spelling).
    let e = patch_in_place(
        d.join("real.so"),
        &patch[..],
        &PatchOptions::new().keep_old(d.join("subdir/../real.so")),
    )
    .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::File {
                context: "checking the rollback path",
                ..
            }
        ),
        "{e}"
    );

    let e = patch_in_place(d.join("wrong.so"), &patch[..], &opts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::SizeMismatch {
                subject: Subject::Source,
                ..
            }
        ),
        "{e}"
    );
    let e = patch_in_place(d.join("corrupt.so"), &patch[..], &opts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::HashMismatch {
                subject: Subject::Source,
                ..
            }
        ),
        "{e}"
    );
    let e = patch_in_place(d.join("missing.so"), &patch[..], &opts).unwrap_err();
    assert!(matches!(e, Error::File { .. }), "{e}");
    assert!(e.to_string().contains("missing.so"), "{e}");
    let e = patch_in_place(d.join("real.so"), &b"garbage"[..], &opts).unwrap_err();
    assert!(matches!(e, Error::Format(_)), "{e}");
    assert_eq!(listing(d), before, "a refusal touched the directory");
    assert_eq!(fs::read(&real).expect("read"), old);

    // Opting in.
    let follow = PatchOptions::new().follow_symlinks(true);
    patch_in_place(d.join("link.so"), &patch[..], &follow).expect("follow");
    assert_eq!(fs::read(&real).expect("read"), new);
    assert!(fs::symlink_metadata(d.join("link.so"))
        .expect("lstat")
        .file_type()
        .is_symlink());
    let links = PatchOptions::new().allow_hard_links(true);
    patch_in_place(d.join("linked.so"), &patch[..], &links).expect("hard links");
    assert_eq!(fs::read(d.join("linked.so")).expect("read"), new);
    assert_eq!(fs::read(d.join("alias.so")).expect("read"), old);
    assert!(strays(d).is_empty());
}

/// A tmpfs mounted for one test; unmounted on drop.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(options: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        ok.then_some(Mount { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, options: &str) -> bool {
        Command::new("mount")
            .args(["-o", options])
            .arg(self.dir.path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

#[test]
fn no_space_on_small_tmpfs() {
    let _guard = super::spawning();
    let Some(mnt) = Mount::tmpfs("size=1m") else {
        println!("no-space: skipped (cannot mount tmpfs: needs root)");
        return;
    };
    let old = vec![1u8; 100_000];
    let new: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let patch = crate::diff(&old, &new).expect("diff");
    let target = mnt.path().join("big.so");
    fs::write(&target, &old).expect("write");
    let before = listing(mnt.path());
    let e = patch_in_place(&target, &patch[..], &PatchOptions::new()).unwrap_err();
    assert!(
        matches!(e, Error::NoSpace { available: Some(a), needed, .. } if a < needed),
        "{e}"
    );
    assert_eq!(listing(mnt.path()), before);
    assert_eq!(fs::read(&target).expect("read"), old);
    println!("no-space: {e}");
}

#[test]
fn read_only_mount_is_refused() {
    let _guard = super::spawning();
    let Some(mnt) = Mount::tmpfs("size=4m") else {
        println!("read-only: skipped (cannot mount tmpfs: needs root)");
        return;
    };
    let (old, _, patch) = versions();
    let target = mnt.path().join("lib.so");
    fs::write(&target, &old).expect("write");
    assert!(mnt.remount("remount,ro"), "remount read-only");
    let e = patch_in_place(&target, &patch[..], &PatchOptions::new()).unwrap_err();
    assert!(matches!(e, Error::ReadOnly { .. }), "{e}");
    assert_eq!(fs::read(&target).expect("read"), old);
}

#[test]
fn lock_fails_fast_or_waits() {
    let _guard = super::locking();
    let (old, new, patch) = versions();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("lib.so");
    fs::write(&target, &old).expect("write");
    let holder = fs::File::open(&target).expect("open");
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).expect("flock");

    let fail_fast = PatchOptions::new().wait_for_lock(false);
    let e = patch_in_place(&target, &patch[..], &fail_fast).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    assert_eq!(fs::read(&target).expect("read"), old);

    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(150));
        drop(holder);
    });
    let t = std::time::Instant::now();
    patch_in_place(&target, &patch[..], &PatchOptions::new()).expect("waits, then patches");
    assert!(t.elapsed().as_millis() >= 100, "did not wait for the lock");
    release.join().expect("join");
    assert_eq!(fs::read(&target).expect("read"), new);
}

#[test]
fn concurrent_patchers_serialize() {
    let _guard = super::locking();
    let (old, new, patch) = versions();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("lib.so");
    for _ in 0..10 {
        fs::write(&target, &old).expect("write");
        let methods: Vec<SwapMethod> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| s.spawn(|| patch_in_place(&target, &patch[..], &PatchOptions::new())))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("join").expect("patch").method())
                .collect()
        });
        let swapped = methods
            .iter()
            .filter(|m| **m == SwapMethod::Exchanged)
            .count();
        assert_eq!(swapped, 1, "{methods:?}");
        assert_eq!(fs::read(&target).expect("read"), new);
        assert!(strays(dir.path()).is_empty());
    }
}

#[test]
fn recover_removes_leftovers_but_not_busy_or_foreign_files() {
    let _guard = super::locking();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let leftover = d.join(format!("{TEMP_PREFIX}1.0.lib.so"));
    let busy = d.join(format!("{TEMP_PREFIX}2.0.lib.so"));
    let foreign_dir = d.join(format!("{TEMP_PREFIX}dir"));
    fs::write(&leftover, b"partial").expect("write");
    fs::write(&busy, b"in progress").expect("write");
    fs::create_dir(&foreign_dir).expect("mkdir");
    fs::write(d.join("lib.so"), b"lib").expect("write");
    fs::write(
        d.join(".deltaswap-kept"),
        b"rollback copy named by the caller",
    )
    .expect("write");
    let holder = fs::File::open(&busy).expect("open");
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).expect("flock");

    let report = recover(d).expect("recover");
    assert_eq!(report.removed(), &[leftover.clone()][..]);
    assert_eq!(report.busy(), &[busy.clone()][..]);
    assert_eq!(report.skipped(), &[foreign_dir.clone()][..]);
    assert!(!leftover.exists() && busy.exists() && foreign_dir.exists());
    assert!(d.join("lib.so").exists() && d.join(".deltaswap-kept").exists());
    drop(holder);
    let report = recover(d).expect("recover");
    assert_eq!(report.removed(), &[busy][..]);

    let e = recover(d.join("missing")).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn long_names_and_empty_versions() {
    let _guard = super::locking();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "n".repeat(250);
    let target: PathBuf = dir.path().join(&name);
    fs::write(&target, b"").expect("write");
    let patch = crate::diff(b"", b"now something").expect("diff");
    patch_in_place(&target, &patch[..], &PatchOptions::new()).expect("patch long name");
    assert_eq!(fs::read(&target).expect("read"), b"now something");
    let back = crate::diff(b"now something", b"").expect("diff");
    patch_in_place(&target, &back[..], &PatchOptions::new()).expect("patch to empty");
    assert_eq!(fs::read(&target).expect("read"), b"");
    let _ = OsStr::new(&name);
    assert!(strays(dir.path()).is_empty());
    let relative = recover_with(&RealFs, dir.path()).expect("recover");
    assert!(relative.removed().is_empty());
}
