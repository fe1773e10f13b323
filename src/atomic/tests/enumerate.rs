//! Deterministic enumeration over the in-memory model: an I/O error at every
//! operation (RELIABILITY E1/E3), a power cut after every operation (C1), a
//! crash during recovery, and the protocol mutants that these must catch (C5).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::faulty::{Faulty, Plan};
use super::model::{Content, MemFs, Model};
use crate::atomic::fs::Fs;
use crate::atomic::protocol::{patch_with, recover_with, Knobs, Mutant, TEMP_PREFIX};
use crate::atomic::{PatchOptions, PatchOutcome};
use crate::error::Error;

const TARGET: &str = "/d/lib";
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// A valid version-2 `security.capability` value granting CAP_NET_RAW.
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

#[derive(Clone, Copy, Debug)]
struct Scenario {
    name: &'static str,
    no_exchange: bool,
    keep: Option<&'static str>,
    /// Owner differs from the patcher's, mode has set-ID bits, xattrs present.
    rich_metadata: bool,
    new_empty: bool,
    /// The rollback path already holds an earlier rollback copy.
    keep_exists: bool,
}

/// What an earlier patch left at the rollback path, in `keep_exists` scenarios.
const EARLIER_ROLLBACK: &[u8] = b"an earlier rollback copy";

fn scenarios() -> Vec<Scenario> {
    let base = Scenario {
        name: "exchange",
        no_exchange: false,
        keep: None,
        rich_metadata: false,
        new_empty: false,
        keep_exists: false,
    };
    vec![
        base,
        Scenario {
            name: "exchange+metadata",
            rich_metadata: true,
            ..base
        },
        Scenario {
            name: "exchange+keep-same-dir",
            keep: Some("/d/lib.rollback"),
            ..base
        },
        Scenario {
            name: "exchange+keep-other-dir",
            keep: Some("/k/lib.rollback"),
            rich_metadata: true,
            ..base
        },
        Scenario {
            name: "exchange+keep-replaces-earlier",
            keep: Some("/k/lib.rollback"),
            keep_exists: true,
            ..base
        },
        Scenario {
            name: "rename",
            no_exchange: true,
            ..base
        },
        Scenario {
            name: "rename+keep",
            no_exchange: true,
            keep: Some("/d/lib.rollback"),
            rich_metadata: true,
            ..base
        },
        Scenario {
            name: "rename+keep-other-dir-replaces-earlier",
            no_exchange: true,
            keep: Some("/k/lib.rollback"),
            keep_exists: true,
            ..base
        },
        Scenario {
            name: "empty-new",
            new_empty: true,
            ..base
        },
    ]
}

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Case {
    s: Scenario,
    old: Content,
    new: Content,
    patch: Vec<u8>,
}

impl Case {
    fn new(s: Scenario) -> Case {
        let old_data = bytes(1, 3000);
        let new_data = if s.new_empty {
            Vec::new()
        } else {
            let mut v = old_data.clone();
            v.splice(1000..1010, bytes(2, 600));
            v.extend_from_slice(b"version 1.1");
            v
        };
        let (mode, uid, gid) = if s.rich_metadata {
            (0o4755, 1000, 100)
        } else {
            (0o644, 0, 0)
        };
        let mut old = Content::new(&old_data, mode, uid, gid);
        if s.rich_metadata {
            old.xattrs.insert("user.origin".into(), b"vendor".to_vec());
            old.xattrs
                .insert("security.capability".into(), CAP_NET_RAW.to_vec());
        }
        let mut new = old.clone();
        new.data = new_data;
        let patch = crate::diff(&old.data, &new.data).expect("diff");
        Case { s, old, new, patch }
    }

    fn model(&self) -> Model {
        let mut m = Model::new(&["/d", "/k"]);
        m.no_exchange = self.s.no_exchange;
        m.put_file("/d", "lib", self.old.clone());
        m.put_file("/d", "other", Content::new(b"unrelated", 0o644, 0, 0));
        if let (true, Some((dir, name))) = (self.s.keep_exists, self.keep_path()) {
            m.put_file(dir, name, Content::new(EARLIER_ROLLBACK, 0o600, 0, 0));
        }
        m
    }

    /// The rollback path's directory and name.
    fn keep_path(&self) -> Option<(&'static str, &'static str)> {
        let p = Path::new(self.s.keep?);
        Some((p.parent()?.to_str()?, p.file_name()?.to_str()?))
    }

    fn run<F: Fs>(&self, fs: &F, mutant: Mutant) -> Result<PatchOutcome, Error> {
        let mut opts = PatchOptions::new();
        if let Some(k) = self.s.keep {
            opts = opts.keep_old(k);
        }
        patch_with(
            fs,
            Path::new(TARGET),
            &self.patch[..],
            &opts,
            Knobs { mutant },
        )
    }

    /// Old, new, or neither (with a description).
    fn state(&self, m: &Model) -> State {
        match m.file("/d", "lib") {
            Some(c) if *c == self.old => State::Old,
            Some(c) if *c == self.new => State::New,
            Some(c) => State::Other(format!(
                "{} bytes, mode {:o}, owner {}:{}, {} xattrs",
                c.data.len(),
                c.mode,
                c.uid,
                c.gid,
                c.xattrs.len()
            )),
            None => State::Other("missing".into()),
        }
    }

    /// Once the target is new, the rollback copy (if asked for) is the old version.
    fn rollback_ok(&self, m: &Model) -> bool {
        match self.keep_path() {
            None => true,
            Some((dir, name)) => m.file(dir, name) == Some(&self.old),
        }
    }

    /// While the target is old, the rollback path holds what it held before
    /// or the old version: never anything else.
    fn rollback_sane(&self, m: &Model) -> bool {
        match self.keep_path() {
            None => true,
            Some((dir, name)) => match m.file(dir, name) {
                None => !self.s.keep_exists,
                Some(c) => *c == self.old || (self.s.keep_exists && c.data == EARLIER_ROLLBACK),
            },
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Old,
    New,
    Other(String),
}

fn strays(m: &Model) -> Vec<OsString> {
    ["/d", "/k"]
        .iter()
        .flat_map(|d| m.names(d))
        .filter(|n| n.as_bytes().starts_with(TEMP_PREFIX.as_bytes()))
        .collect()
}

/// Recovery as a caller runs it: on the target's directory only (`strays`
/// still looks in the rollback directory too, so nothing may be left there).
fn recover_all<F: Fs>(fs: &F) -> Result<(), Error> {
    recover_with(fs, Path::new("/d"))?;
    Ok(())
}

/// After an interruption left the target old (and recovery ran), the same
/// patch must go through: nothing the interrupted run left may block it.
fn rerun_ok(case: &Case, mem: &MemFs) -> Result<(), String> {
    let out = case
        .run(&Faulty::new(mem, Plan::Pass), Mutant::None)
        .map_err(|e| format!("re-run refused: {e}"))?;
    let m = mem.m.borrow();
    if out.len() != case.new.data.len() as u64 || case.state(&m) != State::New {
        return Err("re-run did not install the new version".into());
    }
    if !case.rollback_ok(&m) {
        return Err("re-run left no rollback copy".into());
    }
    if !strays(&m).is_empty() {
        return Err("re-run left temporary names".into());
    }
    Ok(())
}

/// Operations of an uninterrupted run (and checks that it succeeds).
fn op_count(case: &Case, mutant: Mutant) -> (usize, Vec<&'static str>) {
    let mem = MemFs::new(case.model());
    let f = Faulty::new(&mem, Plan::Pass);
    let out = case.run(&f, mutant).expect("uninterrupted patch");
    assert_eq!(out.len(), case.new.data.len() as u64);
    assert_eq!(case.state(&mem.m.borrow()), State::New, "{}", case.s.name);
    assert!(case.rollback_ok(&mem.m.borrow()), "{}", case.s.name);
    assert!(strays(&mem.m.borrow()).is_empty(), "{}", case.s.name);
    (f.count(), f.log())
}

#[test]
fn error_at_every_operation() {
    let (mut points, mut committed) = (0, 0);
    let mut bad: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in scenarios() {
        let case = Case::new(s);
        let (n, log) = op_count(&case, Mutant::None);
        for k in 0..n {
            for persistent in [false, true] {
                for errno in [EIO, ENOSPC] {
                    points += 1;
                    let mem = MemFs::new(case.model());
                    let other_ino = mem.m.borrow().ino("/d", "other");
                    let old_ino = mem.m.borrow().ino("/d", "lib");
                    let f = Faulty::new(
                        &mem,
                        Plan::FailAt {
                            k,
                            errno,
                            persistent,
                        },
                    );
                    let r = case.run(&f, Mutant::None);
                    let at = format!(
                        "{} op {k} ({}) errno {errno} persistent {persistent}",
                        s.name,
                        log.get(k).copied().unwrap_or("?")
                    );
                    let m = mem.m.borrow().clone();
                    match &r {
                        Ok(_) => bad.entry("ok_after_fault").or_default().push(at.clone()),
                        Err(e) if e.is_committed() => {
                            committed += 1;
                            if case.state(&m) != State::New {
                                bad.entry("incomplete_new").or_default().push(at.clone());
                            }
                            if !case.rollback_ok(&m) {
                                bad.entry("rollback_lost").or_default().push(at.clone());
                            }
                        }
                        Err(_) => {
                            if case.state(&m) != State::Old || m.ino("/d", "lib") != old_ino {
                                bad.entry("not_identical").or_default().push(at.clone());
                            }
                            if !case.rollback_sane(&m) {
                                bad.entry("rollback_garbled").or_default().push(at.clone());
                            }
                        }
                    }
                    if m.content(old_ino.unwrap_or(usize::MAX)) != Some(&case.old) {
                        bad.entry("old_inode_written").or_default().push(at.clone());
                    }
                    if m.ino("/d", "other") != other_ino {
                        bad.entry("unrelated_touched").or_default().push(at.clone());
                    }
                    let before = case.state(&m);
                    if let Err(e) = recover_all(&mem) {
                        bad.entry("recover_failed")
                            .or_default()
                            .push(format!("{at}: {e}"));
                    }
                    let m = mem.m.borrow().clone();
                    if !strays(&m).is_empty() {
                        bad.entry("stray").or_default().push(at.clone());
                    }
                    if case.state(&m) != before {
                        bad.entry("recover_changed_target")
                            .or_default()
                            .push(at.clone());
                    }
                    if before == State::Old {
                        if let Err(why) = rerun_ok(&case, &mem) {
                            bad.entry("rerun_failed")
                                .or_default()
                                .push(format!("{at}: {why}"));
                        }
                    }
                }
            }
        }
    }
    let count = |k: &str| bad.get(k).map_or(0, Vec::len);
    println!(
        "fault-inject patch: points={points} committed={committed} ok_after_fault={} not_identical={} incomplete_new={} stray={}",
        count("ok_after_fault"),
        count("not_identical"),
        count("incomplete_new"),
        count("stray")
    );
    assert!(bad.is_empty(), "violations: {bad:#?}");
    assert!(committed > 0, "no fault landed after the commit point");
}

#[derive(Debug, Default)]
struct CrashCounts {
    points: usize,
    states: usize,
    mixed: usize,
    durability: usize,
    stray: usize,
    recovery_points: usize,
    examples: Vec<String>,
}

impl CrashCounts {
    fn violations(&self) -> usize {
        self.mixed + self.durability + self.stray
    }

    fn line(&self, label: &str) -> String {
        format!(
            "crash-enum {label}: points={} states={} mixed={} durability={} stray={} recovery-crash-points={}",
            self.points, self.states, self.mixed, self.durability, self.stray, self.recovery_points
        )
    }
}

/// Power cut after every operation k, every crash image, then recovery (and a
/// power cut during recovery).
fn crash_enumeration(mutant: Mutant) -> CrashCounts {
    let mut c = CrashCounts::default();
    for s in scenarios() {
        let case = Case::new(s);
        let (n, log) = op_count(&case, mutant);
        for k in 0..=n {
            c.points += 1;
            let mem = MemFs::new(case.model());
            let f = Faulty::new(&mem, Plan::PowerCutAfter(k));
            let returned_ok = case.run(&f, mutant).is_ok();
            assert_eq!(returned_ok, k >= n, "{} k={k}", s.name);
            let images = mem.m.borrow().crash_images();
            for img in images {
                c.states += 1;
                let at = format!(
                    "{} cut after op {k} (next: {})",
                    s.name,
                    log.get(k).copied().unwrap_or("returned")
                );
                let state = case.state(&img);
                match &state {
                    State::Other(what) => {
                        c.mixed += 1;
                        c.examples.push(format!("{at}: target is {what}"));
                    }
                    State::Old if returned_ok => {
                        c.durability += 1;
                        c.examples.push(format!("{at}: old after Ok"));
                    }
                    State::New if !case.rollback_ok(&img) => {
                        c.durability += 1;
                        c.examples
                            .push(format!("{at}: target new without its rollback copy"));
                    }
                    State::Old if !case.rollback_sane(&img) => {
                        c.mixed += 1;
                        c.examples
                            .push(format!("{at}: rollback path holds something else"));
                    }
                    _ => {}
                }
                // Recovery on the rebooted image.
                let rebooted = MemFs::new(img.clone());
                let counter = Faulty::new(&rebooted, Plan::Pass);
                if recover_all(&counter).is_err() || !strays(&rebooted.m.borrow()).is_empty() {
                    c.stray += 1;
                    c.examples.push(format!("{at}: leftovers after recovery"));
                }
                if case.state(&rebooted.m.borrow()) != state {
                    c.mixed += 1;
                    c.examples
                        .push(format!("{at}: recovery changed the target"));
                }
                if state == State::New && !case.rollback_ok(&rebooted.m.borrow()) {
                    c.durability += 1;
                    c.examples
                        .push(format!("{at}: rollback copy gone after recovery"));
                }
                if state == State::Old {
                    let again = MemFs::new(rebooted.m.borrow().clone());
                    if let Err(why) = rerun_ok(&case, &again) {
                        c.mixed += 1;
                        c.examples.push(format!("{at}: {why}"));
                    }
                }
                // A second power cut during recovery, then recovery again.
                let rn = counter.count();
                if strays(&img).is_empty() {
                    continue;
                }
                for j in 0..rn {
                    c.recovery_points += 1;
                    let again = MemFs::new(img.clone());
                    let _ = recover_all(&Faulty::new(&again, Plan::PowerCutAfter(j)));
                    for img2 in again.m.borrow().crash_images() {
                        let third = MemFs::new(img2);
                        if recover_all(&third).is_err() || !strays(&third.m.borrow()).is_empty() {
                            c.stray += 1;
                            c.examples
                                .push(format!("{at}, recovery cut after op {j}: leftovers"));
                        }
                        if case.state(&third.m.borrow()) != state {
                            c.mixed += 1;
                            c.examples
                                .push(format!("{at}, recovery cut after op {j}: target changed"));
                        }
                    }
                }
            }
        }
    }
    c
}

#[test]
fn power_cut_after_every_operation() {
    let c = crash_enumeration(Mutant::None);
    println!("{}", c.line("patch"));
    assert_eq!(c.violations(), 0, "{:#?}", c.examples);
    assert!(
        c.states > c.points,
        "the model produced no alternative crash states"
    );
}

#[test]
fn mutant_without_file_fsync_is_caught() {
    let c = crash_enumeration(Mutant::SkipFileSync);
    println!("{} (must be > 0: caught)", c.line("mutant=no-file-fsync"));
    assert!(
        c.mixed > 0,
        "the harness did not catch a missing fsync of the new file"
    );
}

#[test]
fn mutant_without_dir_fsync_is_caught() {
    let c = crash_enumeration(Mutant::SkipDirSync);
    println!("{} (must be > 0: caught)", c.line("mutant=no-dir-fsync"));
    assert!(
        c.durability > 0,
        "the harness did not catch a missing directory fsync"
    );
}

#[test]
fn model_refusals_touch_nothing() {
    let case = Case::new(scenarios()[0]);
    let check = |setup: &dyn Fn(&mut Model), opts: PatchOptions, want: &dyn Fn(&Error) -> bool| {
        let mut m = case.model();
        setup(&mut m);
        let before = m.clone();
        let mem = MemFs::new(m);
        let r = patch_with(
            &mem,
            Path::new(TARGET),
            &case.patch[..],
            &opts,
            Knobs::default(),
        );
        let e = r.expect_err("must be refused");
        assert!(want(&e), "unexpected error: {e}");
        let after = mem.m.borrow();
        assert_eq!(after.names("/d"), before.names("/d"), "{e}");
        assert_eq!(after.file("/d", "lib"), before.file("/d", "lib"), "{e}");
        e
    };
    let o = PatchOptions::new;
    check(
        &|m| {
            let ino = m.ino("/d", "lib").expect("lib");
            m.put_link("/d", "alias", ino);
        },
        o(),
        &|e| matches!(e, Error::HardLinks { links: 2, .. }),
    );
    check(&|m| m.read_only = true, o(), &|e| {
        matches!(e, Error::ReadOnly { .. })
    });
    check(&|m| m.available = 5000, o(), &|e| {
        matches!(
            e,
            Error::NoSpace {
                available: Some(5000),
                ..
            }
        )
    });
    check(
        &|m| {
            let ino = m.ino("/d", "lib").expect("lib");
            m.locked_by_other.insert(ino);
        },
        o().wait_for_lock(false),
        &|e| matches!(e, Error::Locked { .. }),
    );
    let sym = |m: &mut Model| {
        m.put_symlink("/d", "link", "/d/lib");
    };
    let sym_case = |opts: PatchOptions| {
        let mut m = case.model();
        sym(&mut m);
        let mem = MemFs::new(m);
        patch_with(
            &mem,
            Path::new("/d/link"),
            &case.patch[..],
            &opts,
            Knobs::default(),
        )
    };
    assert!(matches!(sym_case(o()), Err(Error::Symlink { .. })));
    assert!(sym_case(o().follow_symlinks(true)).is_ok());
    let mut m = case.model();
    m.put_fifo("/d", "fifo");
    let mem = MemFs::new(m);
    let r = patch_with(
        &mem,
        Path::new("/d/fifo"),
        &case.patch[..],
        &o(),
        Knobs::default(),
    );
    assert!(matches!(
        r,
        Err(Error::NotRegularFile { kind: "a FIFO", .. })
    ));

    // The file system fills up while the new version is written.
    let (_, log) = op_count(&case, Mutant::None);
    let k = log
        .iter()
        .position(|op| *op == "write_all")
        .expect("a write");
    let mem = MemFs::new(case.model());
    let f = Faulty::new(
        &mem,
        Plan::FailAt {
            k,
            errno: ENOSPC,
            persistent: false,
        },
    );
    let e = case.run(&f, Mutant::None).expect_err("ENOSPC");
    assert!(
        matches!(
            e,
            Error::NoSpace {
                available: None,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(case.state(&mem.m.borrow()), State::Old);
    assert!(
        strays(&mem.m.borrow()).is_empty(),
        "temporary file not removed"
    );
    println!(
        "model refusals: hard-links read-only no-space locked symlink fifo enospc-mid-write: ok"
    );
    println!("patch operations: {}", log.join(" "));
}

/// An I/O error at every operation of `recover` (a compound fault: recovery
/// after a crash fails too): the target never changes, and a second recovery
/// cleans up.
#[test]
fn recover_error_at_every_operation() {
    let (mut points, mut bad) = (0, Vec::new());
    for s in scenarios() {
        let case = Case::new(s);
        let (n, _) = op_count(&case, Mutant::None);
        // Crash images that hold leftovers, from power cuts before the end.
        for k in 0..n {
            let mem = MemFs::new(case.model());
            let _ = case.run(&Faulty::new(&mem, Plan::PowerCutAfter(k)), Mutant::None);
            for img in mem.m.borrow().crash_images() {
                if strays(&img).is_empty() {
                    continue;
                }
                let state = case.state(&img);
                let probe = MemFs::new(img.clone());
                let counter = Faulty::new(&probe, Plan::Pass);
                recover_all(&counter).expect("recover");
                for j in 0..counter.count() {
                    points += 1;
                    let again = MemFs::new(img.clone());
                    let f = Faulty::new(
                        &again,
                        Plan::FailAt {
                            k: j,
                            errno: EIO,
                            persistent: false,
                        },
                    );
                    if recover_all(&f).is_ok() {
                        bad.push(format!("{} k={k} j={j}: recover hid an I/O error", s.name));
                    }
                    if case.state(&again.m.borrow()) != state {
                        bad.push(format!("{} k={k} j={j}: target changed", s.name));
                    }
                    if recover_all(&again).is_err() || !strays(&again.m.borrow()).is_empty() {
                        bad.push(format!(
                            "{} k={k} j={j}: second recovery left litter",
                            s.name
                        ));
                    }
                }
            }
        }
    }
    println!(
        "fault-inject recover: points={points} violations={}",
        bad.len()
    );
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(points > 0);
}
