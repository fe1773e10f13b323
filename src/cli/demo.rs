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

use deltaswap::{DiffOptions, Error, PatchOptions};

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
        "Diff each library against its fixed build (suffix array + zstd streams)",
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

    println!(
        "\nDone in {:.1}s. Try it on your own files:",
        start.elapsed().as_secs_f64()
    );
    println!("    deltaswap diff OLD NEW PATCH && deltaswap apply OLD PATCH OUT && deltaswap patch TARGET PATCH");
    Ok(())
}
