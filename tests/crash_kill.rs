//! SIGKILL loop (RELIABILITY C7): a child process patches a real file with
//! `deltaswap::patch_in_place` and the parent kills it with SIGKILL after a
//! delay, at least 1,000 times. After every kill the file must be byte-exact
//! the old or the new version, `recover` must leave no `.deltaswap-tmp.*`
//! litter, and patching again must converge.
//!
//! The delay is tuned online: part of the kills aim at the window between the
//! swap and the end of the child (their delay follows a stochastic
//! approximation that balances "killed before the swap" against "finished"),
//! the others are spread uniformly over the time before the swap (itself
//! estimated by probes, half of which should land after it), and the
//! share of aimed kills is adjusted so that about a third of all kills land in
//! the window.
//!
//! Run with `cargo test --test crash_kill`; `DELTASWAP_KILL_ITERS` overrides the
//! number of kills. Prints one summary line.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deltaswap::{PatchOptions, Sha256Digest};

const CHILD_ENV: &str = "DELTASWAP_CRASH_KILL_CHILD";
const TEMP_PREFIX: &str = ".deltaswap-tmp.";

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
    }
    parent();
}

/// Child: load the patch, say "ready", patch, exit 0 (or 1 on error).
fn child() -> ! {
    let args: Vec<String> = std::env::args().collect();
    let (target, patch) = match (args.get(1), args.get(2)) {
        (Some(t), Some(p)) => (PathBuf::from(t), PathBuf::from(p)),
        _ => std::process::exit(2),
    };
    let Ok(patch) = fs::read(&patch) else {
        std::process::exit(2)
    };
    let mut out = std::io::stdout();
    let _ = out.write_all(b"R");
    let _ = out.flush();
    match deltaswap::patch_in_place(&target, &patch[..], &PatchOptions::new()) {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            eprintln!("child: {e}");
            std::process::exit(1)
        }
    }
}

/// A real shared library if one is installed, else this test executable.
fn real_file() -> Vec<u8> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
        "/usr/lib/libz.so.1",
    ];
    for c in candidates {
        if let Ok(b) = fs::read(c) {
            if b.len() > 50_000 {
                return b;
            }
        }
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut b = fs::read(exe).expect("read self");
    b.truncate(400_000);
    b
}

/// A "security fix": a few bytes changed in the middle, a section appended.
fn fixed(old: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    let mid = new.len() / 2;
    for (i, b) in new.iter_mut().skip(mid).take(64).enumerate() {
        *b ^= (i as u8).wrapping_mul(31) | 1;
    }
    new.extend_from_slice(b"\0deltaswap crash-kill security fix (a)\0");
    new
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Landed {
    BeforeTemp,
    Writing,
    AfterSwap,
    Completed,
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(TEMP_PREFIX))
        .collect()
}

fn parent() {
    let iters: usize = std::env::var("DELTASWAP_KILL_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let old = real_file();
    let new = fixed(&old);
    let (old_sha, new_sha) = (Sha256Digest::of(&old), Sha256Digest::of(&new));
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("libtarget.so");
    let forward = dir.path().join("forward.patch");
    let backward = dir.path().join("backward.patch");
    // Patches live outside the target directory's namespace checks.
    fs::write(&forward, deltaswap::diff(&old, &new).expect("diff")).expect("write");
    fs::write(&backward, deltaswap::diff(&new, &old).expect("diff")).expect("write");
    fs::write(&target, &old).expect("write");
    let exe = std::env::current_exe().expect("current_exe");

    // Calibrate: how long a whole patch takes after "ready".
    let mut runs = Vec::new();
    let mut state_is_new = false;
    for _ in 0..6 {
        let patch = if state_is_new { &backward } else { &forward };
        let mut child = spawn(&exe, &target, patch);
        wait_ready(&mut child);
        let t = Instant::now();
        let status = child.wait().expect("wait");
        runs.push(t.elapsed());
        assert!(status.success(), "calibration run failed: {status}");
        state_is_new = !state_is_new;
    }
    runs.sort();
    let total = runs[runs.len() / 2]; // the median

    let mut counts = [0usize; 4];
    let mut bad = Vec::new();
    let mut stray = 0usize;
    // Aimed delay (seconds) and share of aimed kills.
    let mut aim = total.as_secs_f64() * 0.8;
    let mut aimed_share = 0.5f64;
    // Estimated delay of the swap (probed: half the probes land after it).
    let mut swap_at = total.as_secs_f64() * 0.5;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut uniform = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let started = Instant::now();
    for i in 0..iters {
        let patch = if state_is_new { &backward } else { &forward };
        let (from, to) = if state_is_new {
            (new_sha, old_sha)
        } else {
            (old_sha, new_sha)
        };
        let aimed = uniform() < aimed_share;
        let probe = !aimed && uniform() < 0.3;
        let delay = if aimed {
            (aim * (0.9 + 0.3 * uniform())).max(0.0)
        } else if probe {
            swap_at
        } else {
            // Spread the others over the time before the window.
            swap_at * uniform()
        };
        let mut child = spawn(&exe, &target, patch);
        wait_ready(&mut child);
        std::thread::sleep(Duration::from_secs_f64(delay));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().expect("wait");
        let killed = status.signal() == Some(9);
        if !killed && !status.success() {
            bad.push(format!("iteration {i}: child failed with {status}"));
        }
        let now = Sha256Digest::of(&fs::read(&target).expect("read target"));
        let temp_present = !leftovers(dir.path()).is_empty();
        let landed = if !killed {
            Landed::Completed
        } else if now == to {
            Landed::AfterSwap
        } else if temp_present {
            Landed::Writing
        } else {
            Landed::BeforeTemp
        };
        if now != from && now != to {
            bad.push(format!(
                "iteration {i}: target is neither version ({landed:?})"
            ));
        }
        counts[landed as usize] += 1;
        if let Err(e) = deltaswap::recover(dir.path()) {
            bad.push(format!("iteration {i}: recover failed: {e}"));
        }
        if !leftovers(dir.path()).is_empty() {
            stray += 1;
        }
        state_is_new = now == new_sha;
        // Tune: aimed kills should land after the swap, before the end.
        if aimed {
            let step = total.as_secs_f64() * 0.02;
            match landed {
                Landed::BeforeTemp | Landed::Writing => aim += step,
                Landed::Completed => aim -= step,
                Landed::AfterSwap => {}
            }
            aim = aim.clamp(0.0, total.as_secs_f64() * 3.0);
        }
        if probe {
            let step = total.as_secs_f64() * 0.02;
            match landed {
                Landed::BeforeTemp | Landed::Writing => swap_at += step,
                Landed::AfterSwap | Landed::Completed => swap_at -= step,
            }
            swap_at = swap_at.clamp(0.0, total.as_secs_f64() * 3.0);
        }
        let share = counts[Landed::AfterSwap as usize] as f64 / (i + 1) as f64;
        aimed_share = (aimed_share + if share < 1.0 / 3.0 { 0.01 } else { -0.01 }).clamp(0.0, 0.95);
    }
    let after = counts[Landed::AfterSwap as usize];
    let killed_total = iters - counts[Landed::Completed as usize];
    println!(
        "crash-kill patch: kills={iters} file={}B before-temp={} writing={} after-swap={} ({:.0}% of all) completed={} bad={} stray={stray} ({:.1}s, calibrated patch time {:.1}ms)",
        old.len(),
        counts[Landed::BeforeTemp as usize],
        counts[Landed::Writing as usize],
        after,
        100.0 * after as f64 / iters.max(1) as f64,
        counts[Landed::Completed as usize],
        bad.len(),
        started.elapsed().as_secs_f64(),
        total.as_secs_f64() * 1e3,
    );
    if !bad.is_empty() || stray > 0 {
        eprintln!("violations: {bad:#?}");
        std::process::exit(1);
    }
    if killed_total == 0 || after * 10 < iters {
        eprintln!("the kills did not exercise the window after the swap (after-swap={after})");
        std::process::exit(1);
    }
}

fn spawn(exe: &Path, target: &Path, patch: &Path) -> std::process::Child {
    Command::new(exe)
        .env(CHILD_ENV, "1")
        .arg(target)
        .arg(patch)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

fn wait_ready(child: &mut std::process::Child) {
    let mut b = [0u8; 1];
    if let Some(out) = child.stdout.as_mut() {
        let _ = out.read_exact(&mut b);
    }
}
