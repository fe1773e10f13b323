//! `deltaswap demo`: a self-contained tour in a temporary directory.
//!
//! It builds a small "system" of generated components that behave like real
//! libraries under a security fix (mostly unchanged machine code, a few small
//! edits that shift every later address), then diffs, applies, patches in place,
//! shows a refusal and recovers from an interrupted patch, printing what
//! happened and what it cost at each step.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use deltaswap::{
    Bundle, BundleBuilder, DiffOptions, Error, Installer, PatchOptions, SecretKey, Sha256Digest,
};

use super::Failure;

/// Arguments of `deltaswap demo`.
#[derive(Args, Debug)]
pub(super) struct DemoArgs {
    /// Keep the demo directory instead of deleting it at the end.
    #[arg(long)]
    keep: bool,
}

/// A tiny deterministic generator (xorshift), so the demo is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One instruction of a toy machine: opcode, and for calls/jumps a 32-bit
/// relative target, like x86 `call rel32`.
#[derive(Clone)]
enum Ins {
    Plain(Vec<u8>),
    Call { target: usize },
}

/// Generates a "library": functions of plain instructions with calls between them.
fn generate_code(rng: &mut Rng, functions: usize) -> Vec<Vec<Ins>> {
    let mut code = Vec::with_capacity(functions);
    for _ in 0..functions {
        let n = 8 + rng.below(40) as usize;
        let mut f = Vec::with_capacity(n);
        for _ in 0..n {
            if rng.below(6) == 0 {
                f.push(Ins::Call {
                    target: rng.below(functions as u64) as usize,
                });
            } else {
                let len = 1 + rng.below(7) as usize;
                // A skewed opcode alphabet, as real code has.
                let bytes = (0..len)
                    .map(|_| (rng.below(64) * rng.below(4)) as u8)
                    .collect();
                f.push(Ins::Plain(bytes));
            }
        }
        code.push(f);
    }
    code
}

/// Lays the functions out and resolves calls to relative offsets.
fn render(code: &[Vec<Ins>]) -> Vec<u8> {
    let size = |i: &Ins| match i {
        Ins::Plain(b) => b.len(),
        Ins::Call { .. } => 5,
    };
    let mut starts = Vec::with_capacity(code.len());
    let mut at = 0usize;
    for f in code {
        starts.push(at);
        at += f.iter().map(size).sum::<usize>();
    }
    let mut out = Vec::with_capacity(at);
    for f in code {
        for ins in f {
            match ins {
                Ins::Plain(b) => out.extend_from_slice(b),
                Ins::Call { target } => {
                    let next = out.len() + 5;
                    let rel = starts.get(*target).copied().unwrap_or(0) as i64 - next as i64;
                    out.push(0xe8);
                    out.extend_from_slice(&(rel as i32).to_le_bytes());
                }
            }
        }
    }
    out
}

/// A security fix: a few functions gain a bounds check, which shifts every
/// function after them and so changes many call offsets across the file.
fn security_fix(rng: &mut Rng, code: &[Vec<Ins>], fixes: usize) -> Vec<Vec<Ins>> {
    let mut fixed = code.to_vec();
    for _ in 0..fixes {
        let f = rng.below(fixed.len() as u64) as usize;
        if let Some(func) = fixed.get_mut(f) {
            let at = rng.below(func.len() as u64) as usize;
            func.insert(at, Ins::Plain(vec![0x48, 0x39, 0xc8, 0x73, 0x10]));
        }
    }
    fixed
}

fn step(n: &mut u32, title: &str) {
    *n += 1;
    println!("\n[{n}] {title}");
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

pub(super) fn cmd_demo(args: DemoArgs) -> Result<(), Failure> {
    let dir = demo_dir().map_err(|e| Failure::io("cannot create the demo directory".into(), e))?;
    let result = run_demo(&dir);
    if args.keep {
        println!("\nThe demo files are in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn demo_dir() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let d = base.join(format!("deltaswap-demo-{}-{attempt}", std::process::id()));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free demo directory name"))
}

fn io_fail(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Failure {
    let msg = format!("{what} '{}'", path.display());
    move |e| Failure::io(msg, e)
}

fn lib_fail(what: &str) -> impl FnOnce(Error) -> Failure {
    let msg = what.to_string();
    move |e| Failure::from_lib(msg, &e)
}

fn run_demo(dir: &Path) -> Result<(), Failure> {
    let start = Instant::now();
    let mut n = 0;
    println!("deltaswap demo: everything happens in {}", dir.display());

    step(
        &mut n,
        "Generate a small system: three libraries, and a security fix for each",
    );
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let specs = [
        ("libweb.so", 60_000usize, 6),
        ("libtls.so", 20_000, 3),
        ("libz.so", 4_000, 1),
    ];
    let root = dir.join("system");
    let fixed_dir = dir.join("build-fixed");
    for d in [&root, &fixed_dir] {
        std::fs::create_dir_all(d).map_err(io_fail("cannot create", d))?;
    }
    let mut components = Vec::new();
    for (name, functions, fixes) in specs {
        let code = generate_code(&mut rng, functions);
        let old = render(&code);
        let new = render(&security_fix(&mut rng, &code, fixes));
        let installed = root.join(name);
        std::fs::write(&installed, &old).map_err(io_fail("cannot write", &installed))?;
        let built = fixed_dir.join(name);
        std::fs::write(&built, &new).map_err(io_fail("cannot write", &built))?;
        let changed = old.iter().zip(&new).filter(|(a, b)| a != b).count();
        println!(
            "    {name:<10} {:>6.2} MiB installed, fixed build {:>6.2} MiB ({fixes} small edit(s); {:.1}% of the bytes at the same offsets now differ)",
            mib(old.len()),
            mib(new.len()),
            changed as f64 * 100.0 / old.len().max(1) as f64
        );
        components.push((name, old, new));
    }

    step(
        &mut n,
        "Diff each library against its fixed build (suffix-array matching, zstd)",
    );
    let mut patches = Vec::new();
    let (mut full, mut delta) = (0usize, 0usize);
    for (name, old, new) in &components {
        let t = Instant::now();
        let patch = DiffOptions::new()
            .diff(old, new)
            .map_err(lib_fail("diff"))?;
        let secs = t.elapsed().as_secs_f64();
        let zstd_only = zstd::bulk::compress(new, 19)
            .map(|v| v.len())
            .unwrap_or(new.len());
        println!(
            "    {name:<10} patch {:>8} bytes = {:>5.2}% of the new file (zstd -19 of the whole file: {:>8} bytes), {:.2}s",
            patch.len(),
            patch.len() as f64 * 100.0 / new.len().max(1) as f64,
            zstd_only,
            secs
        );
        full += new.len();
        delta += patch.len();
        let p = dir.join(format!("{name}.dsw"));
        std::fs::write(&p, &patch).map_err(io_fail("cannot write", &p))?;
        patches.push(p);
    }
    println!(
        "    shipping the fix: {:.2} MiB of full files, or {:.1} KiB of patches ({:.1}x smaller)",
        mib(full),
        delta as f64 / 1024.0,
        full as f64 / delta.max(1) as f64
    );

    step(
        &mut n,
        "Patch each installed library in place: verify, write beside, fsync, swap atomically",
    );
    for ((name, old, new), patch) in components.iter().zip(&patches) {
        let target = root.join(name);
        let keep = dir.join(format!("{name}.rollback"));
        let t = Instant::now();
        let file = std::fs::File::open(patch).map_err(io_fail("cannot open", patch))?;
        let outcome = deltaswap::patch_in_place(
            &target,
            std::io::BufReader::new(file),
            &PatchOptions::new().keep_old(&keep),
        )
        .map_err(lib_fail("patch in place"))?;
        let now = std::fs::read(&target).map_err(io_fail("cannot read", &target))?;
        let kept = std::fs::read(&keep).map_err(io_fail("cannot read", &keep))?;
        println!(
            "    {name:<10} {:?} in {:.3}s; SHA-256 {}…; result identical to the fixed build: {}; rollback copy identical to the old version: {}",
            outcome.method(),
            t.elapsed().as_secs_f64(),
            &outcome.sha256().to_string()[..16],
            now == *new,
            kept == *old
        );
    }

    step(
        &mut n,
        "Try to apply a patch to the wrong file: it is refused before anything is written",
    );
    if let (Some((name, _, new)), Some(patch)) = (components.first(), patches.first()) {
        let bytes = std::fs::read(patch).map_err(io_fail("cannot read", patch))?;
        match deltaswap::apply(new, &bytes) {
            Ok(_) => println!("    unexpected: the patch applied to the already-patched {name}"),
            Err(e) => println!("    refused: {e}"),
        }
        let mut damaged = bytes.clone();
        if let Some(b) = damaged.get_mut(bytes.len() / 2) {
            *b ^= 0x40;
        }
        let old = &components[0].1;
        match deltaswap::apply(old, &damaged) {
            Ok(_) => println!("    unexpected: a damaged patch applied"),
            Err(e) => println!("    a patch with one flipped bit is refused too: {e}"),
        }
    }

    step(
        &mut n,
        "Recover after an interrupted patch (a crash left a half-written temporary file)",
    );
    let leftover = root.join(".deltaswap-tmp.99999.0.libtls.so");
    {
        let mut f =
            std::fs::File::create(&leftover).map_err(io_fail("cannot create", &leftover))?;
        f.write_all(&[0u8; 4096])
            .map_err(io_fail("cannot write", &leftover))?;
    }
    let report = deltaswap::recover(&root).map_err(lib_fail("recover"))?;
    for p in report.removed() {
        println!("    removed {}", p.display());
    }
    let intact = components.iter().all(|(name, _, new)| {
        std::fs::read(root.join(name))
            .map(|b| b == *new)
            .unwrap_or(false)
    });
    println!("    every library is whole and at the fixed version: {intact}");

    bundle_tour(dir, &components, &mut n)?;

    println!(
        "\nDone in {:.1}s. Try it on your own files:",
        start.elapsed().as_secs_f64()
    );
    println!("    deltaswap diff OLD NEW PATCH && deltaswap apply OLD PATCH OUT && deltaswap patch TARGET PATCH");
    println!("    deltaswap keygen sk pk && deltaswap bundle create --from OLD_ROOT --to NEW_ROOT --label L --baseline B --seq N --key sk -o BUNDLE");
    println!("    deltaswap install --root ROOT --trust pk BUNDLE; deltaswap status --root ROOT; deltaswap remove --root ROOT");
    Ok(())
}

fn write_tree(root: &Path, files: &[(&str, &[u8])]) -> Result<(), Failure> {
    std::fs::create_dir_all(root).map_err(io_fail("cannot create", root))?;
    for (name, data) in files {
        let p = root.join(name);
        std::fs::write(&p, data).map_err(io_fail("cannot write", &p))?;
    }
    Ok(())
}

fn status_line(installer: &Installer) -> Result<String, Failure> {
    let st = installer.status().map_err(lib_fail("status"))?;
    Ok(match (st.installed_label(), st.installed_sequence()) {
        (Some(l), Some(q)) => format!("installed: \"{l}\" (sequence {q})"),
        _ => "installed: nothing, the system is at its baseline".to_string(),
    })
}

/// Hashes of the named files in `root`, to compare whole-system states.
fn snapshot(root: &Path, names: &[&str]) -> Vec<Option<Sha256Digest>> {
    names
        .iter()
        .map(|n| {
            std::fs::read(root.join(n))
                .ok()
                .map(|b| Sha256Digest::of(&b))
        })
        .collect()
}

type Component = (&'static str, Vec<u8>, Vec<u8>);

/// Signed bundles: (a) and (b) against the baseline, remove, replay refused,
/// an install killed part-way and recovered.
fn bundle_tour(dir: &Path, components: &[Component], n: &mut u32) -> Result<(), Failure> {
    let names: Vec<&str> = components.iter().map(|c| c.0).collect();
    let baseline: Vec<(&str, &[u8])> = components
        .iter()
        .map(|(nm, old, _)| (*nm, old.as_slice()))
        .collect();

    step(
        n,
        "Security responses as signed bundles: the baseline \"26.3\" and a signing key",
    );
    let base_tree = dir.join("release-26.3");
    write_tree(&base_tree, &baseline)?;
    let root = dir.join("device");
    write_tree(&root, &baseline)?;
    let key = SecretKey::generate().map_err(lib_fail("keygen"))?;
    let trusted = [key.public_key()];
    println!(
        "    a device root at {} holds release 26.3; signing key id {}",
        root.display(),
        key.public_key().key_id_hex()
    );

    // (a) fixes libweb and libtls; (b) is cumulative: it also fixes libz and adds a file.
    let helper = render(&generate_code(&mut Rng(7), 3_000));
    let files_a: Vec<(&str, &[u8])> = components
        .iter()
        .map(|(nm, old, new)| {
            (
                *nm,
                if *nm == "libz.so" {
                    old.as_slice()
                } else {
                    new.as_slice()
                },
            )
        })
        .collect();
    let files_b: Vec<(&str, &[u8])> = components
        .iter()
        .map(|(nm, _, new)| (*nm, new.as_slice()))
        .chain(std::iter::once(("libwebhelper.so", helper.as_slice())))
        .collect();
    let tree_a = dir.join("release-26.3a");
    let tree_b = dir.join("release-26.3b");
    write_tree(&tree_a, &files_a)?;
    write_tree(&tree_b, &files_b)?;
    let changed = |files: &[(&str, &[u8])]| -> usize {
        files
            .iter()
            .filter(|f| !baseline.iter().any(|b| b.0 == f.0 && b.1 == f.1))
            .map(|f| f.1.len())
            .sum()
    };

    let t = Instant::now();
    let build = |label: &str, seq: u64, tree: &Path| {
        BundleBuilder::new(label, "26.3", seq)
            .created(1_800_000_000 + seq)
            .build(&base_tree, tree, &key)
            .map_err(lib_fail("bundle create"))
    };
    let bundle_a = build("26.3 (a)", 1, &tree_a)?;
    let bundle_b = build("26.3 (b)", 2, &tree_b)?;
    println!(
        "    \"26.3 (a)\": 2 changed components: {:.1} KiB signed bundle instead of {:.2} MiB of files",
        bundle_a.len() as f64 / 1024.0,
        mib(changed(&files_a))
    );
    println!(
        "    \"26.3 (b)\": 3 changed + 1 new component: {:.1} KiB instead of {:.2} MiB ({:.2}s to build both)",
        bundle_b.len() as f64 / 1024.0,
        mib(changed(&files_b)),
        t.elapsed().as_secs_f64()
    );

    step(
        n,
        "Install \"26.3 (a)\": signature, baseline and sequence checked; all components or none",
    );
    let installer = Installer::new(&root);
    let a = Bundle::open(bundle_a.clone(), &trusted).map_err(lib_fail("open bundle (a)"))?;
    let t = Instant::now();
    let rep = installer.install(&a).map_err(lib_fail("install (a)"))?;
    println!(
        "    {} component(s) changed in {:.3}s; {}",
        rep.changed(),
        t.elapsed().as_secs_f64(),
        status_line(&installer)?
    );

    step(
        n,
        "Install \"26.3 (b)\" over (a): components are patched from the retained baseline copies",
    );
    let b = Bundle::open(bundle_b.clone(), &trusted).map_err(lib_fail("open bundle (b)"))?;
    let t = Instant::now();
    let rep = installer.install(&b).map_err(lib_fail("install (b)"))?;
    let mut all_names = names.clone();
    all_names.push("libwebhelper.so");
    let expect_b: Vec<_> = files_b
        .iter()
        .map(|f| Some(Sha256Digest::of(f.1)))
        .collect();
    println!(
        "    {} component(s) changed in {:.3}s; {}; every file matches release 26.3 (b): {}",
        rep.changed(),
        t.elapsed().as_secs_f64(),
        status_line(&installer)?,
        snapshot(&root, &all_names) == expect_b
    );

    step(
        n,
        "Remove it: every component returns to the baseline in one atomic step",
    );
    installer.remove().map_err(lib_fail("remove"))?;
    let expect_base: Vec<_> = baseline
        .iter()
        .map(|f| Some(Sha256Digest::of(f.1)))
        .collect();
    println!(
        "    {}; files identical to release 26.3: {}; the added file is gone: {}",
        status_line(&installer)?,
        snapshot(&root, &names) == expect_base,
        !root.join("libwebhelper.so").exists()
    );

    step(
        n,
        "Replay the older, validly signed \"26.3 (a)\": refused (anti-downgrade)",
    );
    match installer.install(&a) {
        Ok(_) => println!("    unexpected: the replayed bundle was installed"),
        Err(e) => println!("    refused: {e}"),
    }

    step(
        n,
        "Kill an install part-way (SIGKILL), then recover: all old or all new, never a mix",
    );
    let bundle_c = build("26.3 (c)", 3, &tree_b)?;
    let c_path = dir.join("26.3c.bundle");
    std::fs::write(&c_path, &bundle_c).map_err(io_fail("cannot write", &c_path))?;
    let pk_path = dir.join("demo.pub");
    let pk_hex: String = key
        .public_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(&pk_path, format!("{pk_hex}\n")).map_err(io_fail("cannot write", &pk_path))?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::io("cannot find the deltaswap binary".into(), e))?;
    let mut child = std::process::Command::new(&exe)
        .arg("install")
        .arg("--root")
        .arg(&root)
        .arg("--trust")
        .arg(&pk_path)
        .arg(&c_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| Failure::io("cannot start deltaswap install".into(), e))?;
    let t = Instant::now();
    // Kill it once it has started staging files (or after 2 s at most).
    while t.elapsed().as_millis() < 2000 {
        let staged = std::fs::read_dir(&root)
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".deltaswap-stage")
                })
            })
            .unwrap_or(false);
        if staged || matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill();
    let _ = child.wait();
    if finished {
        println!("    (the install finished before the kill)");
    } else {
        println!(
            "    killed `deltaswap install` after {:.0} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    let rec = installer.recover().map_err(lib_fail("recover"))?;
    let snap = snapshot(&root, &names);
    let state = if snap == expect_base {
        "every component is at the baseline"
    } else if snap.as_slice() == expect_b.get(..names.len()).unwrap_or_default() {
        "every component is at 26.3 (c)"
    } else {
        "MIXED (this is a bug: please report it)"
    };
    println!(
        "    recover: {rec:?}; {state}; {}",
        status_line(&installer)?
    );
    Ok(())
}
