//! Side-by-side comparison of deltaswap with peer delta tools on real pairs.
//!
//! ```text
//! cargo run --release --features cli --example compare -- DIR... \
//!     [--peers a,b,...] [--runs N] [--pairs SUBSTRING[,SUBSTRING...]] \
//!     [--work DIR] [--timeout SECONDS] [--tsv FILE] [--deltaswap PATH] [--keep] [--list]
//! ```
//!
//! Every DIR is either a pair folder (holding `old` and `new`) or a folder of
//! pair folders. For each pair, deltaswap (through its CLI binary) and every
//! selected peer diff and apply as separate child processes. For each child the
//! wall time and the peak RSS (`ru_maxrss` from `wait4`) are recorded, and its
//! anonymous resident memory (`RssAnon` in `/proc/PID/status`) is sampled every
//! 2 ms while it runs. Every applied output is compared byte for byte with
//! `new`; only verified peers count as "best".
//!
//! Times are medians: a command whose first run takes under 2 s is run 3 times
//! in all (or `--runs N` times in all for every command when `--runs` is given).
//! Peak RSS is the maximum over runs.
//!
//! The peers and their exact parameters follow `../shared/peers/peers.py`
//! (`PEERS`). The `bsdiff` crate peer runs in a child process made by
//! re-executing this example with the hidden `__peer` subcommand.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{exit, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MIB: f64 = 1024.0 * 1024.0;
/// Commands whose first run is shorter than this are repeated.
const REPEAT_BELOW_S: f64 = 2.0;
const DEFAULT_RUNS: usize = 3;
const POLL: Duration = Duration::from_millis(2);

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

struct Config {
    dirs: Vec<PathBuf>,
    peers: Option<Vec<String>>,
    runs: Option<usize>,
    pairs: Option<Vec<String>>,
    work: PathBuf,
    timeout: Duration,
    tsv: Option<PathBuf>,
    deltaswap: Option<PathBuf>,
    keep: bool,
    list: bool,
}

const USAGE: &str = "\
usage: compare DIR... [--peers a,b,...] [--runs N] [--pairs SUBSTR[,SUBSTR...]]
                      [--work DIR] [--timeout SECONDS] [--tsv FILE]
                      [--deltaswap PATH] [--keep] [--list]

DIR is a pair folder (old + new) or a folder of pair folders.
  --peers      peers to run besides deltaswap (default: the default set; see --list)
  --runs N     run every command N times and keep the median time
               (default: 3 runs for commands under 2 s, 1 otherwise)
  --pairs      only pairs whose name contains one of these substrings
  --work       scratch folder for patches and outputs (default /tmp/deltaswap-compare)
  --timeout    seconds before a command is killed (default 1800)
  --tsv        also write one row per (pair, tool) to FILE
  --deltaswap  the deltaswap CLI binary (default: built with cargo next to this example)
  --keep       keep patches in the work folder
  --list       list the peers and whether they are available, then exit";

fn usage_exit(msg: &str) -> ! {
    eprintln!("compare: {msg}\n{USAGE}");
    exit(1)
}

fn parse_args(args: Vec<String>) -> Config {
    let mut cfg = Config {
        dirs: Vec::new(),
        peers: None,
        runs: None,
        pairs: None,
        work: std::env::temp_dir().join("deltaswap-compare"),
        timeout: Duration::from_secs(1800),
        tsv: None,
        deltaswap: None,
        keep: false,
        list: false,
    };
    let mut it = args.into_iter();
    let list = |s: String| -> Vec<String> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> String {
            it.next()
                .unwrap_or_else(|| usage_exit(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "--peers" => cfg.peers = Some(list(value("--peers"))),
            "--pairs" => cfg.pairs = Some(list(value("--pairs"))),
            "--runs" => {
                let n: usize = value("--runs")
                    .parse()
                    .unwrap_or_else(|_| usage_exit("--runs needs a positive integer"));
                if n == 0 {
                    usage_exit("--runs needs a positive integer");
                }
                cfg.runs = Some(n);
            }
            "--work" => cfg.work = PathBuf::from(value("--work")),
            "--timeout" => {
                let s: u64 = value("--timeout")
                    .parse()
                    .unwrap_or_else(|_| usage_exit("--timeout needs seconds"));
                cfg.timeout = Duration::from_secs(s);
            }
            "--tsv" => cfg.tsv = Some(PathBuf::from(value("--tsv"))),
            "--deltaswap" => cfg.deltaswap = Some(PathBuf::from(value("--deltaswap"))),
            "--keep" => cfg.keep = true,
            "--list" => cfg.list = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                exit(0)
            }
            s if s.starts_with("--") => usage_exit(&format!("unknown option {s}")),
            _ => cfg.dirs.push(PathBuf::from(a)),
        }
    }
    if cfg.dirs.is_empty() && !cfg.list {
        usage_exit("no corpus folder given");
    }
    cfg
}

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

/// Paths handed to a peer's command builders.
struct Ctx {
    old: PathBuf,
    new: PathBuf,
    patch: PathBuf,
    out: PathBuf,
    /// For derived peers: the base peer's patch, input of the extra diff step.
    raw: PathBuf,
}

type Argv = Vec<OsString>;
type Builder = Box<dyn Fn(&Ctx) -> Argv>;

struct Peer {
    name: &'static str,
    note: String,
    /// Run when `--peers` is not given.
    default: bool,
    /// A derived peer reuses the patch of `base` as `raw` and adds `diff`;
    /// its diff time is the base's plus its own step.
    base: Option<&'static str>,
    diff: Builder,
    apply: Builder,
    /// Why the peer cannot run here, if it cannot.
    missing: Option<String>,
}

fn argv<I, S>(items: I) -> Argv
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    items.into_iter().map(Into::into).collect()
}

fn os(p: &Path) -> OsString {
    p.as_os_str().to_owned()
}

fn cat(prefix: &str, p: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(p.as_os_str());
    s
}

/// xdelta3 -B: a source window covering the whole old file (at least 64 MiB), as peers.py.
fn xd_window(old: &Path) -> OsString {
    let size = fs::metadata(old).map(|m| m.len()).unwrap_or(0);
    let mut b: u64 = 1 << 26;
    while b < size {
        b <<= 1;
    }
    OsString::from(b.to_string())
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn need_programs(progs: &[&str]) -> Option<String> {
    let missing: Vec<&str> = progs
        .iter()
        .copied()
        .filter(|p| find_in_path(p).is_none())
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!("not installed: {}", missing.join(", ")))
    }
}

fn python_module_missing(python: &Path, module: &str) -> Option<String> {
    let ok = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        None
    } else {
        Some(format!("python module {module} not importable"))
    }
}

/// ../shared/peers relative to the crate, or $PEERS_DIR.
fn peers_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PEERS_DIR") {
        return PathBuf::from(d);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(|p| p.join("shared").join("peers"))
        .unwrap_or_else(|| PathBuf::from("../shared/peers"))
}

fn harness_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PEER_HARNESS") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("PEER_HARNESS_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/deltaswap-peer-harness"));
    target.join("release").join("peer-harness")
}

fn peers(self_exe: &Path, deltaswap: &Path) -> Vec<Peer> {
    let mut v = Vec::new();
    let me = self_exe.to_path_buf();
    let ds = deltaswap.to_path_buf();
    let ds_missing = if ds.is_file() {
        None
    } else {
        Some(format!("{} not found", ds.display()))
    };
    {
        let (d1, d2) = (ds.clone(), ds.clone());
        v.push(Peer {
            name: "deltaswap",
            note: "this crate's CLI, default settings (`deltaswap diff`/`deltaswap apply`)".into(),
            default: true,
            base: None,
            diff: Box::new(move |c| {
                argv([os(&d1), "diff".into(), os(&c.old), os(&c.new), os(&c.patch)])
            }),
            apply: Box::new(move |c| {
                argv([
                    os(&d2),
                    "apply".into(),
                    os(&c.old),
                    os(&c.patch),
                    os(&c.out),
                ])
            }),
            missing: ds_missing,
        });
    }
    {
        let (m1, m2, m3, m4) = (me.clone(), me.clone(), me.clone(), me.clone());
        v.push(Peer {
            name: "bsdiff-rs-raw",
            note: "crate bsdiff 0.2 (qsufsort port), raw patch; in a child process of this example"
                .into(),
            default: true,
            base: None,
            diff: Box::new(move |c| {
                argv([
                    os(&m1),
                    "__peer".into(),
                    "bsdiff-diff".into(),
                    os(&c.old),
                    os(&c.new),
                    os(&c.patch),
                ])
            }),
            apply: Box::new(move |c| {
                argv([
                    os(&m2),
                    "__peer".into(),
                    "bsdiff-apply".into(),
                    os(&c.old),
                    os(&c.patch),
                    os(&c.out),
                ])
            }),
            missing: None,
        });
        v.push(Peer {
            name: "bsdiff-rs+zstd19",
            note: "bsdiff-rs-raw patch compressed with zstd level 19 (zstd crate); apply streams \
                   the zstd decoder into bsdiff::patch"
                .into(),
            default: true,
            base: Some("bsdiff-rs-raw"),
            diff: Box::new(move |c| {
                argv([
                    os(&m3),
                    "__peer".into(),
                    "zstd19".into(),
                    os(&c.raw),
                    os(&c.patch),
                ])
            }),
            apply: Box::new(move |c| {
                argv([
                    os(&m4),
                    "__peer".into(),
                    "bsdiff-apply".into(),
                    os(&c.old),
                    os(&c.patch),
                    os(&c.out),
                    "--zstd".into(),
                ])
            }),
            missing: None,
        });
    }
    for (name, level_args, default) in [
        ("zstd-19-long31", vec!["-19"], true),
        ("zstd-22-long31", vec!["--ultra", "-22"], false),
    ] {
        v.push(Peer {
            name,
            note: format!(
                "zstd CLI --patch-from, {} --long=31; apply zstd -d --long=31 --patch-from",
                level_args.join(" ")
            ),
            default,
            base: None,
            diff: Box::new(move |c| {
                let mut a = argv(["zstd", "-q", "-f"]);
                a.extend(level_args.iter().map(OsString::from));
                a.extend(argv(["--long=31"]));
                a.push(cat("--patch-from=", &c.old));
                a.extend([os(&c.new), "-o".into(), os(&c.patch)]);
                a
            }),
            apply: Box::new(|c| {
                let mut a = argv(["zstd", "-q", "-f", "-d", "--long=31"]);
                a.push(cat("--patch-from=", &c.old));
                a.extend([os(&c.patch), "-o".into(), os(&c.out)]);
                a
            }),
            missing: need_programs(&["zstd"]),
        });
    }
    v.push(Peer {
        name: "bsdiff-4.3",
        note: "bsdiff/bspatch 4.3 (Debian; qsufsort, bzip2)".into(),
        default: true,
        base: None,
        diff: Box::new(|c| argv(["bsdiff".into(), os(&c.old), os(&c.new), os(&c.patch)])),
        apply: Box::new(|c| argv(["bspatch".into(), os(&c.old), os(&c.out), os(&c.patch)])),
        missing: need_programs(&["bsdiff", "bspatch"]),
    });
    v.push(Peer {
        name: "xdelta3-9",
        note: "xdelta3 -9, default secondary compression, -B >= old size".into(),
        default: true,
        base: None,
        diff: Box::new(|c| {
            let mut a = argv(["xdelta3", "-e", "-9", "-f", "-B"]);
            a.extend([
                xd_window(&c.old),
                "-s".into(),
                os(&c.old),
                os(&c.new),
                os(&c.patch),
            ]);
            a
        }),
        apply: Box::new(|c| {
            let mut a = argv(["xdelta3", "-d", "-f", "-B"]);
            a.extend([
                xd_window(&c.old),
                "-s".into(),
                os(&c.old),
                os(&c.patch),
                os(&c.out),
            ]);
            a
        }),
        missing: need_programs(&["xdelta3"]),
    });

    // PyPI peers through ../shared/peers/py_peers.py.
    let python = find_in_path("python3").unwrap_or_else(|| PathBuf::from("python3"));
    let pyp = peers_dir().join("py_peers.py");
    let py_missing = |module: &str| -> Option<String> {
        if !pyp.is_file() {
            return Some(format!("{} not found", pyp.display()));
        }
        python_module_missing(&python, module)
    };
    let hdp_missing = py_missing("hdiffpatch");
    for (name, comp, note) in [
        (
            "hdiffpatch-py-lzma2",
            "lzma2",
            "PyPI hdiffpatch (HDiffPatch lib), in-memory diff, lzma2 level 9 dict 8 MiB",
        ),
        (
            "hdiffpatch-py-zstd19",
            "zstd19",
            "PyPI hdiffpatch (HDiffPatch lib), in-memory diff, zstd level 19",
        ),
    ] {
        let (py1, py2, s1, s2) = (python.clone(), python.clone(), pyp.clone(), pyp.clone());
        v.push(Peer {
            name,
            note: note.into(),
            default: true,
            base: None,
            diff: Box::new(move |c| {
                argv([
                    os(&py1),
                    os(&s1),
                    "hdiffpatch-diff".into(),
                    comp.into(),
                    os(&c.old),
                    os(&c.new),
                    os(&c.patch),
                ])
            }),
            apply: Box::new(move |c| {
                argv([
                    os(&py2),
                    os(&s2),
                    "hdiffpatch-apply".into(),
                    os(&c.old),
                    os(&c.patch),
                    os(&c.out),
                ])
            }),
            missing: hdp_missing.clone(),
        });
    }
    let detools_missing = need_programs(&["detools"]);
    for (name, extra, note) in [
        (
            "detools-hdiffpatch-lzma",
            vec!["-t", "hdiffpatch", "-a", "hdiffpatch"],
            "PyPI detools, hdiffpatch patch type + algorithm, lzma",
        ),
        (
            "detools-bsdiff-lzma",
            vec![],
            "PyPI detools, sequential patch, bsdiff algorithm (divsufsort), lzma",
        ),
    ] {
        v.push(Peer {
            name,
            note: note.into(),
            default: true,
            base: None,
            diff: Box::new(move |c| {
                let mut a = argv(["detools", "create_patch", "-c", "lzma"]);
                a.extend(extra.iter().map(OsString::from));
                a.extend([os(&c.old), os(&c.new), os(&c.patch)]);
                a
            }),
            apply: Box::new(|c| {
                argv([
                    "detools".into(),
                    "apply_patch".into(),
                    os(&c.old),
                    os(&c.patch),
                    os(&c.out),
                ])
            }),
            missing: detools_missing.clone(),
        });
    }
    {
        let (py1, py2, s1, s2) = (python.clone(), python.clone(), pyp.clone(), pyp.clone());
        v.push(Peer {
            name: "bsdiff4-py",
            note: "PyPI bsdiff4 (BSDIFF40, bzip2)".into(),
            default: false,
            base: None,
            diff: Box::new(move |c| {
                argv([
                    os(&py1),
                    os(&s1),
                    "bsdiff4-diff".into(),
                    os(&c.old),
                    os(&c.new),
                    os(&c.patch),
                ])
            }),
            apply: Box::new(move |c| {
                argv([
                    os(&py2),
                    os(&s2),
                    "bsdiff4-apply".into(),
                    os(&c.old),
                    os(&c.patch),
                    os(&c.out),
                ])
            }),
            missing: py_missing("bsdiff4"),
        });
    }

    // Rust crates through the peer harness built by ../shared/peers/install.
    let harness = harness_path();
    let harness_missing = if harness.is_file() {
        None
    } else {
        Some(format!(
            "peer harness {} not built (run ../shared/peers/install)",
            harness.display()
        ))
    };
    for (name, algo, base, zst, default, note) in [
        (
            "qbsdiff-rs",
            "qbsdiff",
            None,
            false,
            true,
            "crate qbsdiff defaults (ParallelScheme::Auto, bzip2), via the peer harness",
        ),
        (
            "bidiff-rs-raw",
            "bidiff",
            None,
            false,
            false,
            "crate bidiff simple_diff + bipatch, raw patch, via the peer harness",
        ),
        (
            "bidiff-rs+zstd19",
            "bidiff",
            Some("bidiff-rs-raw"),
            true,
            false,
            "bidiff-rs-raw patch compressed by `zstd -19`; apply streams zstd into bipatch",
        ),
    ] {
        let (h1, h2) = (harness.clone(), harness.clone());
        let diff: Builder = if base.is_some() {
            Box::new(|c| {
                argv([
                    "zstd".into(),
                    "-q".into(),
                    "-f".into(),
                    "-19".into(),
                    os(&c.raw),
                    "-o".into(),
                    os(&c.patch),
                ])
            })
        } else {
            Box::new(move |c| {
                argv([
                    os(&h1),
                    algo.into(),
                    "diff".into(),
                    os(&c.old),
                    os(&c.new),
                    os(&c.patch),
                ])
            })
        };
        let missing =
            harness_missing
                .clone()
                .or_else(|| if zst { need_programs(&["zstd"]) } else { None });
        v.push(Peer {
            name,
            note: note.into(),
            default,
            base,
            diff,
            apply: Box::new(move |c| {
                let mut a = argv([
                    os(&h2),
                    algo.into(),
                    "apply".into(),
                    os(&c.old),
                    os(&c.patch),
                    os(&c.out),
                ]);
                if zst {
                    a.push("--zstd".into());
                }
                a
            }),
            missing,
        });
    }

    // The HDiffPatch CLI, only when HDIFFPATCH_BIN names a folder with hdiffz and hpatchz.
    let hdp_bin = std::env::var_os("HDIFFPATCH_BIN").map(PathBuf::from);
    for (name, mode) in [("hdiffz-m-zstd", "-m"), ("hdiffz-s-zstd", "-s")] {
        let dir = hdp_bin.clone().unwrap_or_default();
        let missing = match &hdp_bin {
            Some(d) if d.join("hdiffz").is_file() && d.join("hpatchz").is_file() => None,
            _ => Some("HDIFFPATCH_BIN does not name a folder with hdiffz and hpatchz".into()),
        };
        let (d1, d2) = (dir.clone(), dir);
        v.push(Peer {
            name,
            note: format!("HDiffPatch CLI hdiffz {mode} -p-2 -c-zstd; hpatchz default"),
            default: true,
            base: None,
            diff: Box::new(move |c| {
                argv([
                    os(&d1.join("hdiffz")),
                    mode.into(),
                    "-p-2".into(),
                    "-d".into(),
                    "-f".into(),
                    "-c-zstd".into(),
                    os(&c.old),
                    os(&c.new),
                    os(&c.patch),
                ])
            }),
            apply: Box::new(move |c| {
                argv([
                    os(&d2.join("hpatchz")),
                    "-f".into(),
                    os(&c.old),
                    os(&c.patch),
                    os(&c.out),
                ])
            }),
            missing,
        });
    }
    v
}

// ---------------------------------------------------------------------------
// Running and measuring one child process
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    wall_s: f64,
    maxrss_kb: u64,
    anon_kb: u64,
}

/// The result of measuring one command (all its runs).
#[derive(Clone, Debug, Default)]
struct Measured {
    /// Median wall time.
    wall_s: f64,
    /// Maximum over runs.
    maxrss_kb: u64,
    /// Highest `RssAnon` sampled over runs (0 if never sampled).
    anon_kb: u64,
    runs: usize,
}

fn rss_anon_kb(status_path: &Path) -> Option<u64> {
    let s = fs::read_to_string(status_path).ok()?;
    let line = s.lines().find(|l| l.starts_with("RssAnon:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn tail(path: &Path, n: usize) -> String {
    let s = fs::read(path).unwrap_or_default();
    let s = String::from_utf8_lossy(&s[s.len().saturating_sub(n)..]).into_owned();
    s.trim().to_string()
}

/// Runs `argv` once as a child in its own process group. stdout is discarded,
/// stderr goes to `errlog`. While it runs, a thread samples its `RssAnon` and
/// kills its process group after `timeout`. The child is waited for without
/// being reaped first (`waitid(WNOWAIT)`) so that the pid stays ours while
/// the sampler may still look at it; `wait4` then reaps it and gives
/// `ru_maxrss`.
fn run_once(argv: &[OsString], timeout: Duration, errlog: &Path) -> Result<Sample, String> {
    let err = File::create(errlog).map_err(|e| format!("{}: {e}", errlog.display()))?;
    let start = Instant::now();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0].to_string_lossy()))?;
    let pid = child.id() as libc::pid_t;
    // `child` is reaped by wait4 below, never by std: dropping it does not wait.
    drop(child);

    let stop = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        let timed_out = Arc::clone(&timed_out);
        let status_path = PathBuf::from(format!("/proc/{pid}/status"));
        thread::spawn(move || {
            let mut peak = 0u64;
            while !stop.load(Ordering::Acquire) {
                if let Some(kb) = rss_anon_kb(&status_path) {
                    peak = peak.max(kb);
                }
                if start.elapsed() > timeout && !timed_out.swap(true, Ordering::AcqRel) {
                    // SAFETY: kill(2) on the process group of our own unreaped child.
                    unsafe {
                        libc::kill(-pid, libc::SIGKILL);
                    }
                }
                thread::sleep(POLL);
            }
            peak
        })
    };

    // Wait for the exit without reaping.
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it for our own child.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            stop.store(true, Ordering::Release);
            let _ = sampler.join();
            return Err(format!("waitid: {e}"));
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    let anon_kb = sampler.join().unwrap_or(0);

    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data filled by wait4 for our own exited child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r != pid {
        return Err(format!("wait4: {}", io::Error::last_os_error()));
    }
    if timed_out.load(Ordering::Acquire) {
        return Err(format!("timed out after {} s", timeout.as_secs()));
    }
    if libc::WIFSIGNALED(status) {
        return Err(format!(
            "killed by signal {}: {}",
            libc::WTERMSIG(status),
            tail(errlog, 600)
        ));
    }
    let code = libc::WEXITSTATUS(status);
    if code != 0 {
        return Err(format!("exit status {code}: {}", tail(errlog, 600)));
    }
    Ok(Sample {
        wall_s,
        // Linux reports ru_maxrss in KiB.
        maxrss_kb: ru.ru_maxrss as u64,
        anon_kb,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs a command once, then again until `runs` runs in all when `--runs` was
/// given or the first run was short; `before` runs before every run.
fn measure(
    argv: &[OsString],
    cfg: &Config,
    errlog: &Path,
    before: &dyn Fn(),
) -> Result<Measured, String> {
    before();
    let first = run_once(argv, cfg.timeout, errlog)?;
    let runs = match cfg.runs {
        Some(n) => n,
        None if first.wall_s < REPEAT_BELOW_S => DEFAULT_RUNS,
        None => 1,
    };
    let mut samples = vec![first];
    while samples.len() < runs {
        before();
        samples.push(run_once(argv, cfg.timeout, errlog)?);
    }
    Ok(Measured {
        wall_s: median(samples.iter().map(|s| s.wall_s).collect()),
        maxrss_kb: samples.iter().map(|s| s.maxrss_kb).max().unwrap_or(0),
        anon_kb: samples.iter().map(|s| s.anon_kb).max().unwrap_or(0),
        runs: samples.len(),
    })
}

fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    let (fa, fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ra, mut rb) = (BufReader::new(fa), BufReader::new(fb));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut ra, &mut ba)?;
        let m = read_full(&mut rb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------
// One pair
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Row {
    pair: String,
    tool: String,
    old_bytes: u64,
    new_bytes: u64,
    patch_bytes: Option<u64>,
    diff: Option<Measured>,
    apply: Option<Measured>,
    verified: bool,
    status: String,
}

fn find_pairs(cfg: &Config) -> Vec<(String, PathBuf)> {
    let is_pair = |d: &Path| d.join("old").is_file() && d.join("new").is_file();
    let mut found = Vec::new();
    for dir in &cfg.dirs {
        if is_pair(dir) {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string());
            found.push((name, dir.clone()));
            continue;
        }
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("compare: skipping {}: {e}", dir.display());
                continue;
            }
        };
        for e in entries.flatten() {
            let p = e.path();
            if is_pair(&p) {
                found.push((e.file_name().to_string_lossy().into_owned(), p));
            }
        }
    }
    if let Some(subs) = &cfg.pairs {
        found.retain(|(n, _)| subs.iter().any(|s| n.contains(s.as_str())));
    }
    let size = |p: &Path| fs::metadata(p.join("new")).map(|m| m.len()).unwrap_or(0);
    found.sort_by(|a, b| size(&a.1).cmp(&size(&b.1)).then(a.0.cmp(&b.0)));
    found.dedup_by(|a, b| a.1 == b.1);
    found
}

fn run_pair(name: &str, dir: &Path, selected: &[&Peer], cfg: &Config) -> Vec<Row> {
    let old = dir.join("old");
    let new = dir.join("new");
    let old_bytes = fs::metadata(&old).map(|m| m.len()).unwrap_or(0);
    let new_bytes = fs::metadata(&new).map(|m| m.len()).unwrap_or(0);
    let work = cfg.work.join(name);
    if let Err(e) = fs::create_dir_all(&work) {
        eprintln!("compare: cannot create {}: {e}", work.display());
        exit(3);
    }
    let ctx_for = |p: &Peer| Ctx {
        old: old.clone(),
        new: new.clone(),
        patch: work.join(format!("{}.patch", p.name)),
        out: work.join(format!("{}.out", p.name)),
        raw: work.join(format!("{}.patch", p.base.unwrap_or(p.name))),
    };
    let errlog = work.join("stderr.log");
    let mut rows: Vec<Row> = Vec::new();
    // Diff measurements of base peers, for derived peers.
    let mut diffs: BTreeMap<&str, Result<Measured, String>> = BTreeMap::new();
    for peer in selected {
        let c = ctx_for(peer);
        let mut row = Row {
            pair: name.to_string(),
            tool: peer.name.to_string(),
            old_bytes,
            new_bytes,
            ..Row::default()
        };
        eprint!("  {name} {:<24}", peer.name);
        let _ = io::stderr().flush();
        let diff = match peer.base {
            None => measure(&(peer.diff)(&c), cfg, &errlog, &|| {}),
            Some(base) => match diffs.get(base) {
                Some(Ok(b)) => measure(&(peer.diff)(&c), cfg, &errlog, &|| {}).map(|m| Measured {
                    wall_s: b.wall_s + m.wall_s,
                    maxrss_kb: b.maxrss_kb.max(m.maxrss_kb),
                    anon_kb: b.anon_kb.max(m.anon_kb),
                    runs: b.runs.min(m.runs),
                }),
                Some(Err(e)) => Err(format!("base {base} failed: {e}")),
                None => Err(format!("base peer {base} was not run")),
            },
        };
        diffs.insert(peer.name, diff.clone());
        match diff {
            Err(e) => {
                row.status = format!("diff failed: {e}");
            }
            Ok(d) => {
                row.patch_bytes = fs::metadata(&c.patch).map(|m| m.len()).ok();
                row.diff = Some(d);
                let remove_out = || {
                    let _ = fs::remove_file(&c.out);
                };
                match measure(&(peer.apply)(&c), cfg, &errlog, &remove_out) {
                    Err(e) => row.status = format!("apply failed: {e}"),
                    Ok(a) => {
                        row.apply = Some(a);
                        match same_contents(&c.out, &new) {
                            Ok(true) => {
                                row.verified = true;
                                row.status = "ok".into();
                            }
                            Ok(false) => row.status = "MISMATCH: output differs from new".into(),
                            Err(e) => row.status = format!("cannot verify output: {e}"),
                        }
                    }
                }
                remove_out();
            }
        }
        eprintln!(
            " {:>12} diff {:>8} apply {:>8}  {}",
            row.patch_bytes.map(group).unwrap_or_default(),
            row.diff
                .as_ref()
                .map(|d| secs(d.wall_s))
                .unwrap_or_default(),
            row.apply
                .as_ref()
                .map(|a| secs(a.wall_s))
                .unwrap_or_default(),
            row.status
        );
        rows.push(row);
    }
    let _ = fs::remove_file(&errlog);
    if !cfg.keep {
        let _ = fs::remove_dir_all(&work);
    }
    rows
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn secs(s: f64) -> String {
    if s >= 10.0 {
        format!("{s:.1}")
    } else {
        format!("{s:.3}")
    }
}

fn mib_kb(kb: u64) -> String {
    let m = kb as f64 / 1024.0;
    if m >= 100.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

fn size_label(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        Some(a / b)
    } else {
        None
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.3}")).unwrap_or_else(|| "–".into())
}

fn geomean(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        None
    } else {
        Some((v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
    }
}

fn print_tool_table(rows: &[Row]) {
    println!("### Every tool, every pair\n");
    println!(
        "| pair | tool | patch bytes | diff s | apply s | diff peak RSS | apply peak RSS | apply RssAnon | runs d/a | verified |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|---|");
    for r in rows {
        let d = r.diff.as_ref();
        let a = r.apply.as_ref();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} |",
            r.pair,
            r.tool,
            r.patch_bytes.map(group).unwrap_or_default(),
            d.map(|d| secs(d.wall_s)).unwrap_or_default(),
            a.map(|a| secs(a.wall_s)).unwrap_or_default(),
            d.map(|d| mib_kb(d.maxrss_kb)).unwrap_or_default(),
            a.map(|a| mib_kb(a.maxrss_kb)).unwrap_or_default(),
            a.map(|a| mib_kb(a.anon_kb)).unwrap_or_default(),
            d.map(|d| d.runs).unwrap_or(0),
            a.map(|a| a.runs).unwrap_or(0),
            if r.verified {
                "yes".to_string()
            } else {
                r.status.replace('|', "/").replace('\n', " ")
            }
        );
    }
    println!();
}

fn print_summary(rows: &[Row], pairs: &[(String, PathBuf)]) {
    println!("### deltaswap against the peers, per pair\n");
    println!(
        "Size ratio = deltaswap patch / smallest verified peer patch. Time ratios = deltaswap / peer \
         wall time (below 1 = deltaswap faster).\n"
    );
    println!(
        "| pair | new | deltaswap bytes | best peer bytes (who) | size ratio | diff s | × qbsdiff-rs | × bsdiff-4.3 | apply s | × zstd-19-long31 | diff RSS | apply RSS | apply RssAnon |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut size_ratios: Vec<(String, f64)> = Vec::new();
    let mut target_notes: Vec<String> = Vec::new();
    for (pair, _) in pairs {
        let of = |tool: &str| -> Option<&Row> {
            rows.iter()
                .find(|r| &r.pair == pair && r.tool == tool && r.verified)
        };
        let Some(ds) = of("deltaswap") else {
            let why = rows
                .iter()
                .find(|r| &r.pair == pair && r.tool == "deltaswap")
                .map(|r| r.status.clone())
                .unwrap_or_else(|| "not run".into());
            println!(
                "| {pair} | | deltaswap: {} | | | | | | | | | | |",
                why.replace('|', "/")
            );
            continue;
        };
        let (Some(dsd), Some(dsa), Some(dsb)) = (&ds.diff, &ds.apply, ds.patch_bytes) else {
            continue;
        };
        let best = rows
            .iter()
            .filter(|r| &r.pair == pair && r.tool != "deltaswap" && r.verified)
            .filter_map(|r| r.patch_bytes.map(|b| (b, r.tool.as_str())))
            .min();
        let sr = best.and_then(|(b, _)| ratio(dsb as f64, b as f64));
        if let Some(sr) = sr {
            size_ratios.push((pair.clone(), sr));
        }
        let dt = |tool: &str| {
            of(tool)
                .and_then(|r| r.diff.as_ref())
                .and_then(|d| ratio(dsd.wall_s, d.wall_s))
        };
        let at = of("zstd-19-long31")
            .and_then(|r| r.apply.as_ref())
            .and_then(|a| ratio(dsa.wall_s, a.wall_s));
        println!(
            "| {pair} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            size_label(ds.new_bytes),
            group(dsb),
            best.map(|(b, w)| format!("{} ({w})", group(b)))
                .unwrap_or_else(|| "–".into()),
            fmt_ratio(sr),
            secs(dsd.wall_s),
            fmt_ratio(dt("qbsdiff-rs")),
            fmt_ratio(dt("bsdiff-4.3")),
            secs(dsa.wall_s),
            fmt_ratio(at),
            mib_kb(dsd.maxrss_kb),
            mib_kb(dsa.maxrss_kb),
            mib_kb(dsa.anon_kb),
        );

        // The issue's targets, checked where they apply.
        let big = ds.new_bytes >= 1_000_000;
        if big {
            if let Some(r) = dt("qbsdiff-rs").filter(|r| *r > 0.5) {
                target_notes.push(format!(
                    "{pair}: diff time {r:.2} × qbsdiff-rs (target ≤ 0.5)"
                ));
            }
            if let Some(r) = dt("bsdiff-4.3").filter(|r| *r > 0.2) {
                target_notes.push(format!(
                    "{pair}: diff time {r:.2} × bsdiff-4.3 (target ≤ 0.2)"
                ));
            }
        }
        let mib64 = 64 * 1024;
        let diff_cap_kb = (6 * ds.old_bytes + ds.new_bytes) / 1024 + mib64;
        if dsd.maxrss_kb > diff_cap_kb {
            target_notes.push(format!(
                "{pair}: diff peak RSS {} > 6 × old + new + 64 MiB = {}",
                mib_kb(dsd.maxrss_kb),
                mib_kb(diff_cap_kb)
            ));
        }
        if dsa.anon_kb > mib64 {
            target_notes.push(format!(
                "{pair}: apply RssAnon {} > 64 MiB",
                mib_kb(dsa.anon_kb)
            ));
        }
        let apply_cap_kb = ds.old_bytes / 1024 + mib64;
        if dsa.maxrss_kb > apply_cap_kb {
            target_notes.push(format!(
                "{pair}: apply peak RSS {} > old + 64 MiB = {}",
                mib_kb(dsa.maxrss_kb),
                mib_kb(apply_cap_kb)
            ));
        }
        if let Some(sr) = sr.filter(|r| *r > 1.05) {
            target_notes.push(format!(
                "{pair}: size ratio {sr:.3} (target ≤ 1.05 per pair)"
            ));
        }
    }
    println!();
    let values: Vec<f64> = size_ratios.iter().map(|(_, r)| *r).collect();
    match geomean(&values) {
        Some(g) => {
            let (max_pair, max) = size_ratios
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(p, r)| (p.as_str(), *r))
                .unwrap_or(("", 0.0));
            println!(
                "Size ratio over {} pairs: geometric mean **{g:.3}** (target ≤ 1.00), max **{max:.3}** ({max_pair}; target ≤ 1.05).\n",
                values.len()
            );
        }
        None => println!("Size ratio: no pair with both deltaswap and a peer verified.\n"),
    }
    if target_notes.is_empty() {
        println!("Targets of issue 2 missed on these pairs: none.\n");
    } else {
        println!("Targets of issue 2 missed on these pairs:\n");
        for n in target_notes {
            println!("- {n}");
        }
        println!();
    }
}

fn write_tsv(path: &Path, rows: &[Row]) -> io::Result<()> {
    let mut f = BufWriter::new(File::create(path)?);
    writeln!(
        f,
        "pair\ttool\told_bytes\tnew_bytes\tpatch_bytes\tdiff_wall_s\tdiff_maxrss_kb\tdiff_anon_kb\tdiff_runs\tapply_wall_s\tapply_maxrss_kb\tapply_anon_kb\tapply_runs\tverified\tstatus"
    )?;
    for r in rows {
        let d = r.diff.as_ref();
        let a = r.apply.as_ref();
        let o = |x: Option<String>| x.unwrap_or_default();
        writeln!(
            f,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.pair,
            r.tool,
            r.old_bytes,
            r.new_bytes,
            o(r.patch_bytes.map(|b| b.to_string())),
            o(d.map(|d| format!("{:.4}", d.wall_s))),
            o(d.map(|d| d.maxrss_kb.to_string())),
            o(d.map(|d| d.anon_kb.to_string())),
            o(d.map(|d| d.runs.to_string())),
            o(a.map(|a| format!("{:.4}", a.wall_s))),
            o(a.map(|a| a.maxrss_kb.to_string())),
            o(a.map(|a| a.anon_kb.to_string())),
            o(a.map(|a| a.runs.to_string())),
            if r.verified { "yes" } else { "no" },
            r.status.replace(['\t', '\n'], " ")
        )?;
    }
    f.flush()
}

// ---------------------------------------------------------------------------
// The deltaswap binary
// ---------------------------------------------------------------------------

/// The CLI binary: `--deltaswap`, else $DELTASWAP_BIN, else built with cargo
/// (same profile and target folder as this example) when run under cargo, else
/// the binary beside this example's folder.
fn deltaswap_binary(cfg: &Config, self_exe: &Path) -> PathBuf {
    if let Some(p) = &cfg.deltaswap {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("DELTASWAP_BIN") {
        return PathBuf::from(p);
    }
    // <target>/<profile>/examples/compare -> <target>/<profile>/deltaswap
    let sibling = self_exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("deltaswap"))
        .unwrap_or_else(|| PathBuf::from("deltaswap"));
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "--features",
            "cli",
            "--bin",
            "deltaswap",
        ])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        if let Some(target) = sibling.parent().and_then(Path::parent) {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        eprintln!(
            "compare: building the deltaswap CLI (cargo build --features cli --bin deltaswap)"
        );
        match cmd.status() {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("compare: building the deltaswap CLI failed ({s})"),
            Err(e) => eprintln!("compare: cannot run cargo: {e}"),
        }
    }
    sibling
}

// ---------------------------------------------------------------------------
// Hidden subcommand: the bsdiff crate peer, run in its own process
// ---------------------------------------------------------------------------

fn peer_main(args: &[String]) -> io::Result<()> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "bad __peer arguments");
    match args.first().map(String::as_str) {
        Some("bsdiff-diff") if args.len() == 4 => {
            let old = fs::read(&args[1])?;
            let new = fs::read(&args[2])?;
            let mut w = BufWriter::new(File::create(&args[3])?);
            bsdiff::diff(&old, &new, &mut w)?;
            w.flush()
        }
        Some("zstd19") if args.len() == 3 => {
            // Like `zstd -19 FILE`: the size is pledged so that the
            // parameters adapt to it, and recorded in the frame.
            let file = File::open(&args[1])?;
            let len = file.metadata()?.len();
            let mut input = BufReader::new(file);
            let out = BufWriter::new(File::create(&args[2])?);
            let mut enc = zstd::stream::write::Encoder::new(out, 19)?;
            enc.set_pledged_src_size(Some(len))?;
            io::copy(&mut input, &mut enc)?;
            enc.finish()?.flush()
        }
        Some("bsdiff-apply") if args.len() == 4 || args.len() == 5 => {
            let old = fs::read(&args[1])?;
            let patch = BufReader::new(File::open(&args[2])?);
            let mut out = Vec::with_capacity(old.len());
            if args.get(4).map(String::as_str) == Some("--zstd") {
                let mut dec = zstd::stream::read::Decoder::new(patch)?;
                bsdiff::patch(&old, &mut dec, &mut out)?;
            } else if args.len() == 4 {
                let mut patch = patch;
                bsdiff::patch(&old, &mut patch, &mut out)?;
            } else {
                return Err(bad());
            }
            let mut w = BufWriter::new(File::create(&args[3])?);
            w.write_all(&out)?;
            w.flush()
        }
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__peer") {
        if let Err(e) = peer_main(&args[1..]) {
            eprintln!("compare __peer: {e}");
            exit(2);
        }
        return;
    }
    let cfg = parse_args(args);
    let self_exe = std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("compare: cannot find my own executable: {e}");
        exit(3)
    });
    let ds_bin = deltaswap_binary(&cfg, &self_exe);
    let all = peers(&self_exe, &ds_bin);

    if cfg.list {
        for p in &all {
            let state = match &p.missing {
                None => "available".to_string(),
                Some(why) => format!("unavailable: {why}"),
            };
            let d = if p.default { "default" } else { "opt-in" };
            println!("{:<24} {d:<8} {state}\n{:<24} {}", p.name, "", p.note);
        }
        return;
    }

    // Select peers: deltaswap always, then the requested (or default) ones,
    // with the base of every derived peer.
    if let Some(names) = &cfg.peers {
        for n in names {
            if !all.iter().any(|p| p.name == n) {
                usage_exit(&format!("unknown peer {n} (see --list)"));
            }
        }
    }
    let wanted = |p: &Peer| -> bool {
        p.name == "deltaswap"
            || match &cfg.peers {
                Some(names) => names.iter().any(|n| n == p.name),
                None => p.default,
            }
    };
    let mut chosen: Vec<&Peer> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for p in &all {
        let needed_as_base = all
            .iter()
            .any(|q| wanted(q) && q.base == Some(p.name) && q.missing.is_none());
        if !(wanted(p) || needed_as_base) {
            continue;
        }
        match &p.missing {
            Some(why) => {
                // Quietly leave out opt-in peers that are not installed unless asked for.
                if cfg.peers.is_some() || p.default {
                    notes.push(format!("{} skipped: {why}", p.name));
                }
            }
            None => chosen.push(p),
        }
    }
    if !chosen.iter().any(|p| p.name == "deltaswap") {
        eprintln!("compare: the deltaswap CLI is missing ({}); pass --deltaswap PATH or build with --features cli", ds_bin.display());
        exit(3);
    }

    let pairs = find_pairs(&cfg);
    if pairs.is_empty() {
        eprintln!("compare: no pairs found");
        exit(1);
    }
    for n in &notes {
        eprintln!("compare: {n}");
    }
    eprintln!(
        "compare: {} pairs x {} tools; runs: {}; work folder {}",
        pairs.len(),
        chosen.len(),
        match cfg.runs {
            Some(n) => format!("{n} per command"),
            None => format!("{DEFAULT_RUNS} for commands under {REPEAT_BELOW_S} s, else 1"),
        },
        cfg.work.display()
    );

    let mut rows = Vec::new();
    for (name, dir) in &pairs {
        eprintln!("{name}:");
        rows.extend(run_pair(name, dir, &chosen, &cfg));
        if let Some(t) = &cfg.tsv {
            if let Err(e) = write_tsv(t, &rows) {
                eprintln!("compare: cannot write {}: {e}", t.display());
            }
        }
    }

    println!("## deltaswap compare\n");
    println!(
        "Tools: {}.",
        chosen.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
    );
    if !notes.is_empty() {
        println!("Skipped: {}.", notes.join("; "));
    }
    println!(
        "Times: wall seconds of the child process, median of {}. Peak RSS: ru_maxrss from wait4 (max over runs). \
         RssAnon: highest /proc/PID/status RssAnon sampled every {} ms (anonymous memory: heap, buffers; not mapped files).\n",
        match cfg.runs {
            Some(n) => format!("{n} runs"),
            None => format!("{DEFAULT_RUNS} runs when the first took < {REPEAT_BELOW_S} s, else 1 run"),
        },
        POLL.as_millis()
    );
    print_summary(&rows, &pairs);
    print_tool_table(&rows);
    println!("### Peers\n");
    for p in &chosen {
        println!("- **{}**: {}", p.name, p.note);
    }
    println!();
}
