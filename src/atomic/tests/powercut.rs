//! Power cuts on real file systems (RELIABILITY C3/C4): an xfs image and an
//! ext4 image mounted `noauto_da_alloc` (default ext4 hides a missing fsync
//! before rename), loop-mounted. Before operation k of the patch — every
//! system-call boundary of the protocol — the file system is shut down
//! without flushing its log (`xfs_io -x -c shutdown`), which loses everything
//! not yet made durable, like a power cut. After unmount and mount (log
//! replay) the file must be the old or the new version, the new one whenever
//! the call had returned `Ok`, and recovery must leave no litter. The two
//! protocol mutants must be caught (C5).
//!
//! Needs root, loop devices, `mkfs.xfs`, `mkfs.ext4` and `xfs_io` (package
//! xfsprogs); skips with a message otherwise.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::faulty::Faulty;
use crate::atomic::fs::RealFs;
use crate::atomic::protocol::{patch_with, recover_with, Knobs, Mutant, TEMP_PREFIX};
use crate::atomic::PatchOptions;

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub(crate) fn tool_missing() -> Option<String> {
    for (tool, arg) in [("xfs_io", "-V"), ("mkfs.xfs", "-V"), ("mkfs.ext4", "-V")] {
        if !run(tool, &[arg]) {
            return Some(format!("{tool} not found (install xfsprogs / e2fsprogs)"));
        }
    }
    None
}

pub(crate) struct LoopFs {
    pub(crate) name: &'static str,
    img: PathBuf,
    mnt: PathBuf,
    options: &'static str,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    pub(crate) fn create(name: &'static str) -> Result<LoopFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        let (size, mkfs, mkfs_args, options): (u64, &str, &[&str], &str) = match name {
            "xfs" => (320 << 20, "mkfs.xfs", &["-q", "-f"], "loop"),
            _ => (64 << 20, "mkfs.ext4", &["-q", "-F"], "loop,noauto_da_alloc"),
        };
        fs::File::create(&img)
            .and_then(|f| f.set_len(size))
            .map_err(|e| e.to_string())?;
        let img_str = img.to_string_lossy().into_owned();
        let mut args: Vec<&str> = mkfs_args.to_vec();
        args.push(&img_str);
        if !run(mkfs, &args) {
            return Err(format!("{mkfs} failed"));
        }
        let mut l = LoopFs {
            name,
            img,
            mnt,
            options,
            mounted: false,
            _dir: dir,
        };
        if !l.mount() {
            return Err(format!(
                "cannot mount the {name} image (needs root and loop devices)"
            ));
        }
        Ok(l)
    }

    pub(crate) fn mount(&mut self) -> bool {
        let ok = Command::new("mount")
            .args(["-o", self.options])
            .arg(&self.img)
            .arg(&self.mnt)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        self.mounted = ok;
        ok
    }

    pub(crate) fn umount(&mut self) {
        if self.mounted {
            let ok = run("umount", &[&self.mnt.to_string_lossy()]);
            assert!(ok, "umount {}", self.mnt.display());
            self.mounted = false;
        }
    }

    /// A power cut: shut the file system down without flushing its log.
    pub(crate) fn shutdown(&self) {
        let ok = run(
            "xfs_io",
            &["-x", "-c", "shutdown", &self.mnt.to_string_lossy()],
        );
        assert!(ok, "xfs_io shutdown {}", self.mnt.display());
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.mnt.join("d")
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run("umount", &[&self.mnt.to_string_lossy()]);
        }
    }
}

/// Writes the old version durably and makes the whole file system clean.
fn seed(dir: &Path, old: &[u8]) {
    if dir.exists() {
        fs::remove_dir_all(dir).expect("clean");
    }
    fs::create_dir(dir).expect("mkdir");
    let mut f = fs::File::create(dir.join("lib.so")).expect("create");
    f.write_all(old).expect("write");
    f.sync_all().expect("fsync");
    let d = fs::File::open(dir).expect("open dir");
    d.sync_all().expect("fsync dir");
    rustix::fs::syncfs(&d).expect("syncfs");
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

fn enumerate(l: &mut LoopFs, mutant: Mutant, old: &[u8], new: &[u8], patch: &[u8]) -> Counts {
    let knobs = Knobs { mutant };
    let target_of = |l: &LoopFs| l.dir().join("lib.so");
    // One clean run to count the operations.
    seed(&l.dir(), old);
    let counter = Faulty::new(&RealFs, super::faulty::Plan::Pass);
    patch_with(&counter, &target_of(l), patch, &PatchOptions::new(), knobs).expect("clean run");
    let n = counter.count();
    let log = counter.log();
    let mut c = Counts::default();
    for k in 0..=n {
        c.points += 1;
        seed(&l.dir(), old);
        let target = target_of(l);
        let lref = &*l;
        let hook = Faulty::with_hook(&RealFs, |i, _| {
            if i == k {
                lref.shutdown();
            }
        });
        let result_ok = patch_with(&hook, &target, patch, &PatchOptions::new(), knobs).is_ok();
        // Only a call that returned before the cut counts as "returned Ok": in a
        // real power cut nothing runs after it. (After a shutdown, XFS still
        // answers fsync of a directory with success: xfs_dir_fsync does not
        // check for shutdown. Counted as ok_after_cut.)
        let returned_ok = result_ok && k >= n;
        if result_ok && k < n {
            c.ok_after_cut += 1;
        }
        if k >= n {
            lref.shutdown(); // the cut comes after the call returned
        }
        drop(hook);
        l.umount();
        assert!(l.mount(), "remount {}", l.name);
        let at = format!(
            "{} cut before op {k} ({})",
            l.name,
            log.get(k).copied().unwrap_or("after return")
        );
        match fs::read(&target) {
            Ok(b) if b == new => {}
            Ok(b) if b == old => {
                if returned_ok {
                    c.durability += 1;
                    c.examples.push(format!("{at}: old after Ok"));
                }
            }
            Ok(b) => {
                c.mixed += 1;
                c.examples
                    .push(format!("{at}: {} bytes, neither old nor new", b.len()));
            }
            Err(e) => {
                c.mixed += 1;
                c.examples.push(format!("{at}: {e}"));
            }
        }
        match recover_with(&RealFs, &l.dir()) {
            Ok(_) => {}
            Err(e) => c.examples.push(format!("{at}: recover: {e}")),
        }
        let left: Vec<_> = fs::read_dir(l.dir())
            .expect("read_dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
            .collect();
        if !left.is_empty() {
            c.stray += 1;
            c.examples.push(format!("{at}: leftovers after recovery"));
        }
    }
    c
}

#[test]
fn power_cut_on_xfs_and_ext4_noauto_da_alloc() {
    let _guard = super::spawning();
    if let Some(why) = tool_missing() {
        println!("crash-real: skipped: {why}");
        return;
    }
    let old: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut new = old.clone();
    new.splice(100_000..100_500, std::iter::repeat_n(7u8, 2000));
    let patch = crate::diff(&old, &new).expect("diff");
    let mut failures = Vec::new();
    for name in ["xfs", "ext4-noauto_da_alloc"] {
        let mut l = match LoopFs::create(name) {
            Ok(l) => l,
            Err(why) => {
                println!("crash-real {name}: skipped: {why}");
                continue;
            }
        };
        for (label, mutant) in [
            ("patch", Mutant::None),
            ("mutant=no-file-fsync", Mutant::SkipFileSync),
            ("mutant=no-dir-fsync", Mutant::SkipDirSync),
        ] {
            let t = Instant::now();
            let c = enumerate(&mut l, mutant, &old, &new, &patch);
            println!(
                "crash-real {name} {label}: points={} mixed={} durability={} stray={} ok_after_cut={} ({:.1}s)",
                c.points,
                c.mixed,
                c.durability,
                c.stray,
                c.ok_after_cut,
                t.elapsed().as_secs_f64()
            );
            let caught = match mutant {
                Mutant::None => c.mixed + c.durability + c.stray == 0,
                Mutant::SkipFileSync => c.mixed > 0,
                Mutant::SkipDirSync => c.durability > 0,
            };
            if !caught {
                failures.push(format!("{name} {label}: {:#?}", c.examples));
            }
        }
        l.umount();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
