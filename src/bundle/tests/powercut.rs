//! Real power cuts during bundle install and remove (RELIABILITY C4), on an
//! xfs image and an ext4 image mounted `noauto_da_alloc`, by the method of
//! the single-file test (`atomic::tests::powercut`): before operation k of
//! the operation — every call through the [`Fs`](crate::atomic::fs::Fs) seam
//! that changes something, and once after the call returned — the file
//! system is shut down without flushing its log (`xfs_io -x -c shutdown`),
//! then unmounted and mounted again (log replay). After `recover`, the five
//! components must all be at the old version or all at the new one, at the
//! new one whenever the call had returned `Ok`, with no staged file, journal
//! or unaccounted baseline copy left. The staged-file fsync mutant must be
//! caught (C5); the directory-fsync mutants are caught by the model
//! enumeration (`crash_enum_catches_mutants`) but not necessarily here: both
//! file systems journal directory operations in order, so any later fsync
//! makes the earlier ones durable.
//!
//! Needs root, loop devices, `mkfs.xfs`, `mkfs.ext4` and `xfs_io` (package
//! xfsprogs); skips with a message otherwise.

use std::path::Path;
use std::time::Instant;

use crate::atomic::fs::RealFs;
use crate::atomic::tests::faulty::{Faulty, Plan};
use crate::atomic::tests::powercut::{tool_missing, LoopFs};

use super::{
    fixture, open, recover_with, run_with, status_with, write_tree, Config, Limits, Mutant, Tree,
    PATHS, STAGE_PREFIX,
};

/// Operations after which the durable state can differ from before them.
const MUTATING: [&str; 13] = [
    "create_new",
    "write_all",
    "set_owner",
    "set_mode",
    "set_xattr",
    "remove_xattr",
    "sync",
    "exchange",
    "rename",
    "link",
    "unlink",
    "sync_dir",
    "create_dir",
];

fn cfg_at(root: &Path, mutant: Mutant) -> Config {
    Config {
        root: root.to_path_buf(),
        state_dir: None,
        limits: Limits::default(),
        expect_baseline: None,
        mutant,
    }
}

/// The baseline tree with bundles `pre` installed, all of it durable.
fn seed(root: &Path, pre: &[usize]) {
    if root.exists() {
        std::fs::remove_dir_all(root).expect("clean");
    }
    write_tree(root, &fixture().baseline);
    for &i in pre {
        run_with(&RealFs, &cfg_at(root, Mutant::None), Some(&open(i))).expect("seed install");
    }
    let d = std::fs::File::open(root).expect("open root");
    rustix::fs::syncfs(&d).expect("syncfs");
}

fn read_tree(root: &Path) -> Vec<Option<Vec<u8>>> {
    PATHS
        .iter()
        .map(|p| std::fs::read(root.join(p)).ok())
        .collect()
}

fn want(t: &Tree) -> Vec<Option<Vec<u8>>> {
    PATHS.iter().map(|p| t.get(p).cloned()).collect()
}

/// Staged files, journal or temporary files, unaccounted baseline copies.
fn strays(root: &Path) -> Vec<String> {
    let names = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for d in ["", "lib", "bin"] {
        for n in names(&root.join(d)) {
            if n.as_bytes().starts_with(STAGE_PREFIX) {
                out.push(format!("{d}/{n}"));
            }
        }
    }
    for n in names(&root.join(".deltaswap")) {
        if !["lock", "state", "base"].contains(&n.as_str()) {
            out.push(format!("state/{n}"));
        }
    }
    match status_with(&RealFs, &cfg_at(root, Mutant::None)) {
        Ok(st) => {
            let want = st.components().iter().filter(|c| c.1.is_some()).count();
            let have = names(&root.join(".deltaswap/base")).len();
            if want != have {
                out.push(format!("base: {have} copies for {want} components"));
            }
        }
        Err(e) => out.push(format!("status: {e}")),
    }
    out
}

#[derive(Default)]
struct Counts {
    points: usize,
    mixed: usize,
    durability: usize,
    stray: usize,
    ok_after_cut: usize,
    examples: Vec<String>,
}

/// Cuts the power before every mutating operation of installing bundle
/// `op` (`None`: remove) over `pre`, and after its return.
fn enumerate(
    l: &mut LoopFs,
    pre: &[usize],
    op: Option<usize>,
    old: &Tree,
    new: &Tree,
    mutant: Mutant,
) -> Counts {
    let root = l.dir();
    let cfg = cfg_at(&root, mutant);
    let bundle = op.map(open);
    seed(&root, pre);
    let counter = Faulty::new(&RealFs, Plan::Pass);
    run_with(&counter, &cfg, bundle.as_ref()).expect("clean run");
    let n = counter.count();
    let log = counter.log();
    assert_eq!(read_tree(&root), want(new), "{} clean run", l.name);
    let mut c = Counts::default();
    let points = (0..n).filter(|&k| log.get(k).is_some_and(|o| MUTATING.contains(o)));
    for k in points.chain([n]) {
        c.points += 1;
        seed(&root, pre);
        let lref = &*l;
        let hook = Faulty::with_hook(&RealFs, |i, _| {
            if i == k {
                lref.shutdown();
            }
        });
        let result_ok = run_with(&hook, &cfg, bundle.as_ref()).is_ok();
        // As in the single-file test: only a call that returned before the
        // cut counts as "returned Ok" (XFS still answers some calls with
        // success after a shutdown).
        let returned_ok = result_ok && k >= n;
        if result_ok && k < n {
            c.ok_after_cut += 1;
        }
        if k >= n {
            lref.shutdown();
        }
        drop(hook);
        l.umount();
        assert!(l.mount(), "remount {}", l.name);
        let at = format!(
            "{} cut before op {k} ({})",
            l.name,
            log.get(k).copied().unwrap_or("after return")
        );
        if let Err(e) = recover_with(&RealFs, &cfg_at(&root, Mutant::None)) {
            c.mixed += 1;
            c.examples.push(format!("{at}: recover: {e}"));
            continue;
        }
        let got = read_tree(&root);
        if got == want(new) {
        } else if got == want(old) {
            if returned_ok {
                c.durability += 1;
                c.examples.push(format!("{at}: old after Ok"));
            }
        } else {
            c.mixed += 1;
            c.examples
                .push(format!("{at}: neither all old nor all new"));
        }
        let s = strays(&root);
        if !s.is_empty() {
            c.stray += 1;
            c.examples.push(format!("{at}: leftovers {s:?}"));
        }
    }
    c
}

#[test]
fn power_cut_bundle_on_xfs_and_ext4_noauto_da_alloc() {
    let _guard = crate::atomic::tests::spawning();
    if let Some(why) = tool_missing() {
        println!("crash-real bundle: skipped: {why}");
        return;
    }
    let f = fixture();
    let (base, a) = (&f.baseline, &f.bundles[0].0);
    let mut failures = Vec::new();
    for name in ["xfs", "ext4-noauto_da_alloc"] {
        let mut l = match LoopFs::create(name) {
            Ok(l) => l,
            Err(why) => {
                println!("crash-real {name}: skipped: {why}");
                continue;
            }
        };
        for (label, pre, op, old, new, mutant) in [
            ("install W5", &[][..], Some(0), base, a, Mutant::None),
            ("remove W5", &[0], None, a, base, Mutant::None),
            (
                "install W5 mutant=no-staged-file-fsync",
                &[],
                Some(0),
                base,
                a,
                Mutant::SkipFileSync,
            ),
        ] {
            let t = Instant::now();
            let c = enumerate(&mut l, pre, op, old, new, mutant);
            println!(
                "crash-real {name} {label}: points={} mixed={} durability={} stray={} ok_after_cut={} ({:.1}s)",
                c.points,
                c.mixed,
                c.durability,
                c.stray,
                c.ok_after_cut,
                t.elapsed().as_secs_f64()
            );
            let ok = match mutant {
                Mutant::None => c.mixed + c.durability + c.stray == 0,
                _ => c.mixed + c.durability + c.stray > 0,
            };
            if !ok {
                failures.push(format!("{name} {label}: {:#?}", c.examples));
            }
        }
        l.umount();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
