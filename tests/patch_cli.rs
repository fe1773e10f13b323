//! `deltaswap patch` and `deltaswap recover`: results and exit statuses
//! (0 ok, 1 usage, 2 rejected input, 3 I/O).
#![cfg(feature = "cli")]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn deltaswap(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deltaswap"))
        .args(args)
        .output()
        .expect("run deltaswap")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn patch_and_recover_exit_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let old: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
    let mut new = old.clone();
    new.extend_from_slice(b"fix");
    fs::write(d.join("old"), &old).expect("write");
    fs::write(d.join("new"), &new).expect("write");
    fs::write(d.join("lib.so"), &old).expect("write");
    let (p, target, keep) = (d.join("p"), d.join("lib.so"), d.join("lib.so.old"));
    let o = deltaswap(&[Path::new("diff"), &d.join("old"), &d.join("new"), &p]);
    assert_eq!(code(&o), 0, "{o:?}");

    let o = deltaswap(&[
        Path::new("patch"),
        &target,
        &p,
        Path::new("--keep-old"),
        &keep,
    ]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(fs::read(&target).expect("read"), new);
    assert_eq!(fs::read(&keep).expect("read"), old);

    // Again: already the new version.
    let o = deltaswap(&[Path::new("patch"), &target, &p]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already"),
        "{o:?}"
    );

    // Wrong file: rejected input, nothing touched.
    fs::write(d.join("other.so"), b"other").expect("write");
    let o = deltaswap(&[Path::new("patch"), &d.join("other.so"), &p]);
    assert_eq!(code(&o), 2, "{o:?}");
    assert_eq!(fs::read(d.join("other.so")).expect("read"), b"other");

    // A symbolic link: rejected input unless --follow-symlinks.
    std::os::unix::fs::symlink("lib.so.old", d.join("link.so")).expect("symlink");
    let o = deltaswap(&[Path::new("patch"), &d.join("link.so"), &p]);
    assert_eq!(code(&o), 2, "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--follow-symlinks"),
        "{o:?}"
    );
    let o = deltaswap(&[
        Path::new("patch"),
        &d.join("link.so"),
        &p,
        Path::new("--follow-symlinks"),
    ]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert_eq!(fs::read(&keep).expect("read"), new);

    // Missing target: I/O.
    let o = deltaswap(&[Path::new("patch"), &d.join("missing.so"), &p]);
    assert_eq!(code(&o), 3, "{o:?}");

    // Usage.
    let o = deltaswap(&[Path::new("patch"), &target]);
    assert_eq!(code(&o), 1, "{o:?}");

    // Recover removes leftovers and reports them.
    fs::write(d.join(".deltaswap-tmp.1.0.lib.so"), b"partial").expect("write");
    let o = deltaswap(&[Path::new("recover"), d]);
    assert_eq!(code(&o), 0, "{o:?}");
    assert!(!d.join(".deltaswap-tmp.1.0.lib.so").exists());
    let o = deltaswap(&[Path::new("recover"), &d.join("missing")]);
    assert_eq!(code(&o), 3, "{o:?}");
}
