//! The mistakes a new user makes with the `deltaswap` command line: each ends
//! in exactly one line on stderr that names what failed, the file and the fix,
//! with the documented exit status (1 usage, 2 rejected input, 3 I/O).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_in(dir: &Path, args: &[&str]) -> Run {
    run_with_env(dir, args, &[])
}

fn run_with_env(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Run {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_deltaswap"))
        .current_dir(dir)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run deltaswap");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Asserts the exit status, that stderr is one error line, and that it
/// contains every word in `words`.
#[track_caller]
fn expect_error(r: &Run, code: i32, words: &[&str]) {
    assert_eq!(r.code, code, "exit status; stderr: {}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {:?}", r.stderr);
    assert!(
        lines[0].starts_with("deltaswap: error: "),
        "prefix: {:?}",
        lines[0]
    );
    for w in words {
        assert!(lines[0].contains(w), "{w:?} missing from {:?}", lines[0]);
    }
}

/// A working directory with old/new files, a patch `p`, a key pair and a
/// bundle `b.dsb` built from `base/` to `next/`, and an install root `root/`.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let old: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        new[1000] ^= 0x55;
        new.extend_from_slice(b"security fix");
        fs::write(dir.join("old"), &old).expect("write");
        fs::write(dir.join("new"), &new).expect("write");
        for (tree, data) in [("base", &old), ("next", &new), ("root", &old)] {
            fs::create_dir_all(dir.join(tree).join("lib")).expect("mkdir");
            fs::write(dir.join(tree).join("lib/libfoo.so"), data).expect("write");
        }
        let f = Fixture { _tmp: tmp, dir };
        let r = f.run(&["diff", "old", "new", "p"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let r = f.run(&["keygen", "release.key", "release.pub"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let r = f.run(&[
            "bundle",
            "create",
            "--from",
            "base",
            "--to",
            "next",
            "--label",
            "1.1",
            "--baseline",
            "1.0",
            "--seq",
            "1",
            "--key",
            "release.key",
            "-o",
            "b.dsb",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        f
    }

    fn run(&self, args: &[&str]) -> Run {
        run_in(&self.dir, args)
    }
}

#[test]
fn apply_mistakes() {
    let f = Fixture::new();
    // Patch and old file swapped.
    let r = f.run(&["apply", "p", "old", "out"]);
    expect_error(
        &r,
        1,
        &["OLD 'p'", "patch", "wrong order", "apply OLD PATCH OUT"],
    );
    // Missing patch.
    let r = f.run(&["apply", "old", "nope.patch", "out"]);
    expect_error(
        &r,
        3,
        &["PATCH 'nope.patch'", "does not exist", "check the path"],
    );
    // A directory where a file is expected.
    let r = f.run(&["apply", "base", "p", "out"]);
    expect_error(&r, 1, &["OLD 'base'", "directory"]);
    // A bundle given to apply.
    let r = f.run(&["apply", "old", "b.dsb", "out"]);
    expect_error(&r, 1, &["PATCH 'b.dsb'", "bundle", "deltaswap install"]);
    // Two plain files: probably meant diff.
    let r = f.run(&["apply", "old", "new", "out"]);
    expect_error(
        &r,
        2,
        &["PATCH 'new'", "not a deltaswap patch", "deltaswap diff"],
    );
    // The wrong old file, of another length: named by its SHA-256 all the
    // same (issue 2: "a message naming the SHA-256 mismatch").
    let r = f.run(&["apply", "new", "p", "out"]);
    expect_error(
        &r,
        2,
        &[
            "'new' (60012 bytes; the patch was made for 60000)",
            "source SHA-256 mismatch",
            "different old file",
            "argument order",
        ],
    );
    assert!(!f.dir.join("out").exists());
    // The wrong old file, of the right length.
    let mut other = fs::read(f.dir.join("old")).expect("read");
    other[30_000] ^= 1;
    fs::write(f.dir.join("other-old"), &other).expect("write");
    let r = f.run(&["apply", "other-old", "p", "out"]);
    expect_error(
        &r,
        2,
        &[
            "'other-old'",
            "source SHA-256 mismatch",
            "different old file",
        ],
    );
    assert!(!f.dir.join("out").exists());
    // Output in a directory that does not exist, or where a file is.
    let r = f.run(&["apply", "old", "p", "no/such/dir/out"]);
    expect_error(
        &r,
        3,
        &["OUT 'no/such/dir/out'", "does not exist", "create it"],
    );
    let r = f.run(&["apply", "old", "p", "old/out"]);
    expect_error(&r, 1, &["OUT 'old/out'", "not a directory"]);
    let r = f.run(&["apply", "old", "p", "base"]);
    expect_error(&r, 1, &["OUT 'base'", "is a directory", "file name"]);
    // Missing argument: clap's error, on one line, with the usage.
    let r = f.run(&["apply", "old", "p"]);
    expect_error(&r, 1, &["<OUT>", "usage: deltaswap apply", "--help"]);
    // And the right order works.
    let r = f.run(&["apply", "old", "p", "out"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        fs::read(f.dir.join("out")).expect("read"),
        fs::read(f.dir.join("new")).expect("read")
    );
}

#[test]
fn diff_info_and_patch_mistakes() {
    let f = Fixture::new();
    // `diff OLD PATCH OUT` (apply's order) would overwrite NEW: refused.
    let r = f.run(&["diff", "old", "p", "new"]);
    expect_error(&r, 1, &["NEW 'p'", "patch", "deltaswap apply"]);
    let r = f.run(&["diff", "missing", "new", "p2"]);
    expect_error(&r, 3, &["OLD 'missing'", "does not exist"]);
    let r = f.run(&["diff", "old", "new", "nodir/p2"]);
    expect_error(&r, 3, &["PATCH 'nodir/p2'", "does not exist"]);
    let r = f.run(&["diff", "--level", "40", "old", "new", "p2"]);
    expect_error(&r, 1, &["40", "--level", "deltaswap diff --help"]);
    // info on a bundle or on a plain file.
    let r = f.run(&["info", "b.dsb"]);
    expect_error(&r, 1, &["'b.dsb'", "bundle", "bundle inspect"]);
    let r = f.run(&["info", "old"]);
    expect_error(&r, 2, &["PATCH 'old'", "not a deltaswap patch"]);
    // patch in place: swapped arguments, a directory, a bundle.
    let r = f.run(&["patch", "p", "old"]);
    expect_error(&r, 1, &["TARGET 'p'", "wrong order", "patch TARGET PATCH"]);
    let r = f.run(&["patch", "base", "p"]);
    expect_error(&r, 1, &["TARGET 'base'", "directory"]);
    let r = f.run(&["patch", "old", "b.dsb"]);
    expect_error(&r, 1, &["PATCH 'b.dsb'", "bundle"]);
    // The rollback path is the target itself.
    let r = f.run(&["patch", "--keep-old", "./old", "old", "p"]);
    expect_error(&r, 1, &["--keep-old './old' names TARGET itself"]);
    assert_eq!(
        fs::read(f.dir.join("old")).expect("read"),
        fs::read(f.dir.join("base/lib/libfoo.so")).expect("read")
    );
    fs::write(f.dir.join("other"), b"some other library").expect("write");
    let r = f.run(&["patch", "other", "p"]);
    expect_error(
        &r,
        2,
        &[
            "patching 'other'",
            "source SHA-256 mismatch",
            "different old file",
        ],
    );
    assert_eq!(
        fs::read(f.dir.join("other")).expect("read"),
        b"some other library"
    );
    assert_eq!(
        fs::read(f.dir.join("other")).expect("read"),
        b"some other library"
    );
    // recover takes a directory.
    let r = f.run(&["recover", "old"]);
    expect_error(&r, 1, &["DIR 'old'", "not a directory"]);
}

/// `info` on a good patch: exit status 0, every stream with its sizes and
/// its codec, in text and in JSON.
#[test]
fn info_names_each_stream_and_its_codec() {
    let f = Fixture::new();
    let r = f.run(&["info", "p"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("format version: 1\n"), "{}", r.stdout);
    let line = |name: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(&format!("stream {name} ")))
            .unwrap_or_else(|| panic!("no {name} line in {}", r.stdout))
            .to_string()
    };
    // The new file's 12 new bytes are too few to compress: stored raw.
    let literals = line("literals");
    assert!(literals.contains(" 12 bytes decoded,"), "{literals}");
    assert!(literals.ends_with(" 12 stored (raw)"), "{literals}");
    assert!(
        line("delta-bytes").ends_with(" 1 stored (raw)"),
        "{}",
        r.stdout
    );
    let r = f.run(&["info", "--json", "p"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for part in [
        r#"{"name":"literals","decoded":12,"stored":12,"codecs":["raw"]}"#,
        r#"{"name":"delta-bytes","decoded":1,"stored":1,"codecs":["raw"]}"#,
    ] {
        assert!(r.stdout.contains(part), "{part} missing from {}", r.stdout);
    }
}

/// `info` on a patch in the edit layout (a file of the same length with
/// one changed byte): the edit count instead of streams, in text and JSON;
/// the patch applies.
#[test]
fn info_names_the_edit_layout() {
    let f = Fixture::new();
    let old = fs::read(f.dir.join("old")).expect("read");
    let mut same_len = old.clone();
    same_len[30_000] ^= 0x80;
    fs::write(f.dir.join("same"), &same_len).expect("write");
    let r = f.run(&["diff", "old", "same", "e"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = f.run(&["info", "e"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("edit layout, 1 edit(s)\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("stream "), "{}", r.stdout);
    let r = f.run(&["info", "--json", "e"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(r#""segments":0,"edits":1,"#),
        "{}",
        r.stdout
    );
    let r = f.run(&["info", "--json", "p"]);
    assert!(r.stdout.contains(r#""edits":null,"#), "{}", r.stdout);
    let r = f.run(&["apply", "old", "e", "out"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(fs::read(f.dir.join("out")).expect("read"), same_len);
}

#[test]
fn bundle_mistakes() {
    let f = Fixture::new();
    // A patch given to install or inspect.
    let r = f.run(&["install", "--root", "root", "--trust", "release.pub", "p"]);
    expect_error(
        &r,
        1,
        &["BUNDLE 'p'", "patch, not a bundle", "deltaswap patch"],
    );
    let r = f.run(&["bundle", "inspect", "p"]);
    expect_error(&r, 1, &["BUNDLE 'p'", "patch, not a bundle"]);
    // The secret key given to --trust.
    let r = f.run(&[
        "install",
        "--root",
        "root",
        "--trust",
        "release.key",
        "b.dsb",
    ]);
    expect_error(&r, 1, &["--trust 'release.key'", "SECRET", "public key"]);
    // Some other key.
    assert_eq!(f.run(&["keygen", "other.key", "other.pub"]).code, 0);
    let r = f.run(&["install", "--root", "root", "--trust", "other.pub", "b.dsb"]);
    expect_error(
        &r,
        2,
        &["'b.dsb'", "not trusted", "'other.pub' is key", "--trust"],
    );
    // Not a key at all.
    let r = f.run(&["install", "--root", "root", "--trust", "old", "b.dsb"]);
    expect_error(&r, 2, &["--trust 'old'", "64 hex digits", "keygen"]);
    let r = f.run(&["install", "--root", "root", "--trust", "b.dsb", "b.dsb"]);
    expect_error(&r, 1, &["--trust 'b.dsb'", "bundle, not a public key"]);
    // Missing root, root that is a file, missing bundle.
    let r = f.run(&[
        "install",
        "--root",
        "nope",
        "--trust",
        "release.pub",
        "b.dsb",
    ]);
    expect_error(&r, 3, &["ROOT 'nope'", "does not exist"]);
    let r = f.run(&["status", "--root", "old"]);
    expect_error(&r, 1, &["ROOT 'old'", "not a directory"]);
    let r = f.run(&[
        "install",
        "--root",
        "root",
        "--trust",
        "release.pub",
        "x.dsb",
    ]);
    expect_error(&r, 3, &["BUNDLE 'x.dsb'", "does not exist"]);
    // bundle create: a file for --from, the public key as --key is warned
    // about, an existing key is never overwritten.
    let r = f.run(&[
        "bundle",
        "create",
        "--from",
        "old",
        "--to",
        "next",
        "--label",
        "x",
        "--baseline",
        "1.0",
        "--seq",
        "2",
        "--key",
        "release.key",
        "-o",
        "c.dsb",
    ]);
    expect_error(&r, 1, &["--from 'old'", "not a directory", "baseline"]);
    let r = f.run(&[
        "bundle",
        "create",
        "--from",
        "base",
        "--to",
        "next",
        "--label",
        "x",
        "--baseline",
        "1.0",
        "--seq",
        "2",
        "--key",
        "p",
        "-o",
        "c.dsb",
    ]);
    expect_error(&r, 1, &["--key 'p'", "patch, not a secret key"]);
    let r = f.run(&["keygen", "release.key", "again.pub"]);
    expect_error(&r, 1, &["'release.key' already exists", "never overwrites"]);
    // Install, then a replay is refused with the way out.
    let r = f.run(&[
        "install",
        "--root",
        "root",
        "--trust",
        "release.pub",
        "b.dsb",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = f.run(&["remove", "--root", "root"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = f.run(&[
        "install",
        "--root",
        "root",
        "--trust",
        "release.pub",
        "b.dsb",
    ]);
    expect_error(&r, 2, &["sequence", "--seq"]);
}

#[test]
fn quiet_and_verbose() {
    let f = Fixture::new();
    let r = f.run(&["--quiet", "apply", "old", "p", "out"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr, "", "--quiet prints nothing on success");
    let r = f.run(&["apply", "old", "p", "out2"]);
    assert!(r.stderr.contains("wrote out2"), "{}", r.stderr);
    // --verbose adds the cause under the one-line error.
    let r = f.run(&["--verbose", "apply", "old", "missing", "out"]);
    assert_eq!(r.code, 3);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(lines.len() >= 2, "{}", r.stderr);
    assert!(lines[1].contains("caused by"), "{}", r.stderr);
    // Errors still print with --quiet.
    let r = f.run(&["-q", "apply", "p", "old", "out"]);
    expect_error(&r, 1, &["wrong order"]);
    // --help exits 0 and documents the exit statuses.
    let r = f.run(&["apply", "--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Exit status"), "{}", r.stdout);
}

/// Results of 4 MiB and more are hashed on a second thread while they are
/// written: through the command line they succeed, fail and clean up as
/// small ones do. A patch whose recorded new SHA-256 is wrong is refused
/// with status 2 and leaves no OUT and no temporary file; `patch` in place
/// leaves the target as it was.
#[test]
fn large_results_fail_and_clean_up_like_small_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut s = 0x2545_f491_u32;
    let old: Vec<u8> = (0..(5 << 20) + 777)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 24) as u8
        })
        .collect();
    let mut new = old.clone();
    for i in (1000..new.len()).step_by(300_000) {
        new[i] = new[i].wrapping_add(3);
    }
    fs::write(dir.join("old"), &old).expect("write");
    fs::write(dir.join("new"), &new).expect("write");
    let r = run_in(dir, &["diff", "--level", "3", "old", "new", "p"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run_in(dir, &["apply", "old", "p", "out"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(fs::read(dir.join("out")).expect("read") == new);
    fs::remove_file(dir.join("out")).expect("remove");

    // The recorded new SHA-256 is the 32 bytes after the old one.
    let mut patch = fs::read(dir.join("p")).expect("read");
    let at = patch
        .windows(32)
        .position(|w| w == sha256_of(&new))
        .expect("the new file's digest is in the header");
    patch[at + 5] ^= 1;
    fs::write(dir.join("bad"), &patch).expect("write");
    let r = run_in(dir, &["apply", "old", "bad", "out"]);
    expect_error(&r, 2, &["target SHA-256 mismatch"]);
    let left: Vec<_> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| !["old", "new", "p", "bad"].contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    fs::write(dir.join("target"), &old).expect("write");
    let r = run_in(dir, &["patch", "target", "bad"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(fs::read(dir.join("target")).expect("read") == old);
    let temps = fs::read_dir(dir)
        .expect("list")
        .filter(|e| {
            let name = e.as_ref().expect("entry").file_name();
            name.to_string_lossy().contains("deltaswap-tmp")
        })
        .count();
    assert_eq!(temps, 0, "patch left a temporary file");
    let r = run_in(dir, &["patch", "target", "p"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(fs::read(dir.join("target")).expect("read") == new);
}

/// SHA-256 of `data`, through the crate's public digest type.
fn sha256_of(data: &[u8]) -> [u8; 32] {
    *deltaswap::Sha256Digest::of(data).as_bytes()
}

/// Runs deltaswap in the fixture with its output argument a FIFO there,
/// read by a thread, and TMPDIR a folder of the fixture's; returns the run,
/// what the FIFO received, and what the run left in TMPDIR.
fn run_into_fifo(f: &Fixture, args: &[&str], fifo: &str) -> (Run, Vec<u8>, usize) {
    use std::os::unix::fs::OpenOptionsExt;
    let path = f.dir.join(fifo);
    let made = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
    assert!(made.success());
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut got = Vec::new();
        let mut fifo = fs::File::open(&path).expect("open fifo");
        fifo.read_to_end(&mut got).expect("read fifo");
        got
    });
    let tmp = f.dir.join(format!("tmp-{fifo}"));
    fs::create_dir_all(&tmp).expect("mkdir");
    let r = run_with_env(&f.dir, args, &[("TMPDIR", &tmp)]);
    // A FIFO renamed over cannot be opened again: fail before waiting for
    // a reader that would never finish.
    let kind = fs::symlink_metadata(f.dir.join(fifo))
        .expect("fifo")
        .file_type();
    assert!(
        !kind.is_file(),
        "{fifo} was replaced by a file; stderr: {}",
        r.stderr
    );
    // The reader waits in its open until a writer comes: a run that wrote
    // nothing never came, so open it once here, without waiting (if the
    // run did write, the reader is gone and this open just fails).
    let _ = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(f.dir.join(fifo));
    let got = reader.join().expect("reader");
    let left = fs::read_dir(&tmp).expect("tmp").count();
    (r, got, left)
}

/// A pipe or a device as PATCH or OUT (`/dev/stdout`, a FIFO) is written,
/// not renamed over, and only with bytes that were made and checked in
/// full; a link to a file stays a link, and the file it names is replaced.
/// (A FIFO stands for the devices: a test that renamed over `/dev/null` by
/// mistake would break the machine it runs on.)
#[test]
fn streams_and_links_as_outputs() {
    let f = Fixture::new();
    let patch = fs::read(f.dir.join("p")).expect("patch");
    let new = fs::read(f.dir.join("new")).expect("new");

    let (r, got, left) = run_into_fifo(&f, &["diff", "old", "new", "p.fifo"], "p.fifo");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!((got, left), (patch, 0));
    let (r, got, left) = run_into_fifo(&f, &["apply", "old", "p", "out.fifo"], "out.fifo");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!((got, left), (new.clone(), 0));
    // A wrong OLD: exit status 2, and the FIFO receives nothing.
    let (r, got, left) = run_into_fifo(&f, &["apply", "new", "p", "bad.fifo"], "bad.fifo");
    expect_error(&r, 2, &["SHA-256 mismatch"]);
    assert!(got.is_empty(), "{} bytes reached the FIFO", got.len());
    assert_eq!(left, 0);

    // A link to a file: the link stays, the file it names gets the result.
    fs::write(f.dir.join("target"), b"stale").expect("write");
    std::os::unix::fs::symlink("target", f.dir.join("link")).expect("symlink");
    let r = f.run(&["apply", "old", "p", "link"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let link = fs::symlink_metadata(f.dir.join("link")).expect("link");
    assert!(link.file_type().is_symlink(), "the link was replaced");
    assert_eq!(fs::read(f.dir.join("target")).expect("target"), new);
}
