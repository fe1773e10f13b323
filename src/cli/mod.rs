//! Command-line front end. Every subcommand maps library errors to the
//! documented exit statuses:
//!
//! * 0 success
//! * 1 usage error (bad arguments)
//! * 2 rejected input (wrong source file, malformed or corrupt patch, over a limit)
//! * 3 I/O failure (missing file, permission, disk full) or internal error

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};

use deltaswap::{DiffOptions, Error, MappedFile, PatchReader};

mod bundle;
mod demo;
mod patch;

const EXIT_OK: i32 = 0;
const EXIT_USAGE: i32 = 1;
const EXIT_REJECTED: i32 = 2;
const EXIT_IO: i32 = 3;

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  usage error (wrong arguments)
  2  rejected input: the old file does not match the patch, the patch is
     malformed or corrupt, or it exceeds a limit
  3  I/O failure (missing file, permission denied, disk full) or internal error";

/// Compact binary deltas for system components, applied with verification.
#[derive(Parser, Debug)]
#[command(name = "deltaswap", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Print the chain of causes with every error.
    #[arg(long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compute a patch that turns OLD into NEW.
    #[command(after_help = AFTER_HELP)]
    Diff {
        /// The old version of the file.
        old: PathBuf,
        /// The new version of the file.
        new: PathBuf,
        /// Where to write the patch.
        patch: PathBuf,
        /// zstd level 1..22 for the patch streams (default 19).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: Option<i32>,
        /// Worker threads (default: all cores). The patch does not depend on it.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Apply PATCH to OLD and write the verified result to OUT.
    ///
    /// OUT appears only once the result's size and SHA-256 match the patch
    /// (written to a temporary file beside OUT, synced, then renamed).
    #[command(after_help = AFTER_HELP)]
    Apply {
        /// The old version of the file.
        old: PathBuf,
        /// The patch.
        patch: PathBuf,
        /// Where to write the new version.
        out: PathBuf,
    },
    /// Show a patch's format version, sizes, hashes and stream sizes.
    #[command(after_help = AFTER_HELP)]
    Info {
        /// The patch.
        patch: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Patch TARGET in place with PATCH, atomically and crash-safely: TARGET is
    /// the old or the new version at every instant.
    Patch(patch::PatchArgs),
    /// Run a self-contained demonstration in a temporary directory.
    Demo(demo::DemoArgs),
    /// Remove what interrupted patches left in DIR (files named .deltaswap-tmp.*),
    /// or with --root finish or undo an interrupted bundle install or remove.
    Recover(patch::RecoverArgs),
    /// Make an ed25519 key pair for signing bundles (hex text files).
    Keygen(bundle::KeygenArgs),
    /// Create or inspect signed bundles.
    #[command(subcommand)]
    Bundle(bundle::BundleCmd),
    /// Install a signed bundle under ROOT, all or nothing.
    Install(bundle::InstallArgs),
    /// Return every component of the installed bundle to the baseline.
    Remove(bundle::RootArgs),
    /// Show the installed bundle and the install state.
    Status(bundle::StatusArgs),
}

/// A CLI failure: exit status and message.
struct Failure {
    code: i32,
    message: String,
    causes: Vec<String>,
}

impl Failure {
    fn from_lib(context: String, err: &Error) -> Failure {
        let code = if err.is_rejected_input() {
            EXIT_REJECTED
        } else {
            EXIT_IO
        };
        let hint = match err {
            Error::HashMismatch { subject: deltaswap::Subject::Source, .. }
            | Error::SizeMismatch { subject: deltaswap::Subject::Source, .. } => {
                " (this patch was made for a different old file: check the file and the argument order)"
            }
            Error::Format(_) => " (the patch is damaged or not a deltaswap patch: fetch it again)",
            _ => "",
        };
        let mut causes = Vec::new();
        let mut src = std::error::Error::source(err);
        while let Some(s) = src {
            causes.push(s.to_string());
            src = s.source();
        }
        let brief = match (err, causes.first()) {
            (Error::Io { .. } | Error::File { .. }, Some(c)) => format!("{err}: {c}"),
            _ => err.to_string(),
        };
        Failure {
            code,
            message: format!("{context}: {brief}{hint}"),
            causes,
        }
    }

    fn io(context: String, err: std::io::Error) -> Failure {
        Failure {
            code: EXIT_IO,
            message: format!("{context}: {err}"),
            causes: Vec::new(),
        }
    }
}

/// Runs the CLI and returns the exit status.
pub(crate) fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => EXIT_OK,
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => EXIT_USAGE,
                _ => EXIT_USAGE,
            };
            let _ = e.print();
            return code;
        }
    };
    let verbose = cli.verbose;
    match dispatch(cli.command) {
        Ok(()) => EXIT_OK,
        Err(f) => {
            eprintln!("deltaswap: error: {}", f.message);
            if verbose {
                for c in &f.causes {
                    eprintln!("  caused by: {c}");
                }
            }
            f.code
        }
    }
}

fn dispatch(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Diff {
            old,
            new,
            patch,
            level,
            threads,
        } => cmd_diff(&old, &new, &patch, level, threads),
        Command::Apply { old, patch, out } => cmd_apply(&old, &patch, &out),
        Command::Info { patch, json } => cmd_info(&patch, json),
        Command::Patch(args) => patch::cmd_patch(args),
        Command::Demo(args) => demo::cmd_demo(args),
        Command::Recover(args) => patch::cmd_recover(args),
        cmd => bundle::dispatch(cmd),
    }
}

fn map_input(path: &Path, what: &str) -> Result<MappedFile, Failure> {
    MappedFile::open(path)
        .map_err(|e| Failure::io(format!("cannot read {what} '{}'", path.display()), e))
}

fn cmd_diff(
    old: &Path,
    new: &Path,
    patch: &Path,
    level: Option<i32>,
    threads: Option<usize>,
) -> Result<(), Failure> {
    let old_map = map_input(old, "OLD")?;
    let new_map = map_input(new, "NEW")?;
    let mut opts = DiffOptions::new();
    if let Some(l) = level {
        opts = opts.level(l);
    }
    if let Some(t) = threads {
        opts = opts.threads(t);
    }
    let t = Instant::now();
    let bytes = opts
        .diff(old_map.as_bytes(), new_map.as_bytes())
        .map_err(|e| {
            Failure::from_lib(
                format!("diff of '{}' and '{}'", old.display(), new.display()),
                &e,
            )
        })?;
    write_atomically(patch, |w| w.write_all(&bytes))
        .map_err(|e| Failure::io(format!("cannot write PATCH '{}'", patch.display()), e))?;
    eprintln!(
        "deltaswap: wrote {} ({} bytes, {:.2}% of NEW) in {:.2}s",
        patch.display(),
        bytes.len(),
        percent(bytes.len() as u64, new_map.as_bytes().len() as u64),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn percent(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

fn cmd_apply(old: &Path, patch: &Path, out: &Path) -> Result<(), Failure> {
    let old_map = map_input(old, "OLD")?;
    let patch_file = File::open(patch)
        .map_err(|e| Failure::io(format!("cannot read PATCH '{}'", patch.display()), e))?;
    let reader = PatchReader::new(BufReader::with_capacity(1 << 16, patch_file))
        .map_err(|e| Failure::from_lib(format!("cannot read PATCH '{}'", patch.display()), &e))?;
    let mut lib_err = None;
    let res = write_atomically(out, |w| match reader.apply_to(&old_map, w) {
        Ok(_verified) => Ok(()),
        Err(e) => {
            lib_err = Some(e);
            Err(std::io::Error::other("apply failed"))
        }
    });
    match (res, lib_err) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(e)) => Err(Failure::from_lib(
            format!("applying '{}' to '{}'", patch.display(), old.display()),
            &e,
        )),
        (Err(e), None) => Err(Failure::io(
            format!("cannot write OUT '{}'", out.display()),
            e,
        )),
    }
}

/// Writes `dest` through a temporary file in the same directory, syncs it and
/// renames it into place; on any error the temporary file is removed and `dest`
/// is untouched.
fn write_atomically(
    dest: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| std::io::Error::other("OUT has no file name"))?;
    let mut attempt = 0u32;
    let (tmp_path, file) = loop {
        let tmp = dir.join(format!(
            ".deltaswap-tmp-{}-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            attempt
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1
            }
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 16, &file);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        std::fs::rename(&tmp_path, dest)?;
        if let Ok(d) = File::open(&dir) {
            d.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    result
}

fn cmd_info(patch: &Path, json: bool) -> Result<(), Failure> {
    let f = File::open(patch)
        .map_err(|e| Failure::io(format!("cannot read PATCH '{}'", patch.display()), e))?;
    let info = deltaswap::inspect(BufReader::new(f))
        .map_err(|e| Failure::from_lib(format!("cannot read PATCH '{}'", patch.display()), &e))?;
    let h = info.header();
    let mut o = std::io::stdout().lock();
    let r = if json {
        let streams: Vec<String> = info
            .streams()
            .iter()
            .map(|(n, r, s)| format!("{{\"name\":\"{n}\",\"decoded\":{r},\"stored\":{s}}}"))
            .collect();
        writeln!(
            o,
            "{{\"format_version\":{},\"old_len\":{},\"old_sha256\":\"{}\",\"new_len\":{},\"new_sha256\":\"{}\",\"patch_len\":{},\"segments\":{},\"streams\":[{}]}}",
            h.version(),
            h.old_len(),
            h.old_sha256(),
            h.new_len(),
            h.new_sha256(),
            info.patch_len(),
            info.segments(),
            streams.join(",")
        )
    } else {
        let mut s = format!(
            "format version: {}\nold: {} bytes, sha256 {}\nnew: {} bytes, sha256 {}\npatch: {} bytes ({:.2}% of new), {} segment(s)\n",
            h.version(),
            h.old_len(),
            h.old_sha256(),
            h.new_len(),
            h.new_sha256(),
            info.patch_len(),
            percent(info.patch_len(), h.new_len()),
            info.segments()
        );
        for (n, r, st) in info.streams() {
            s.push_str(&format!(
                "stream {n:<12} {r:>12} bytes decoded, {st:>10} stored\n"
            ));
        }
        o.write_all(s.as_bytes())
    };
    r.map_err(|e| Failure::io("cannot write to stdout".to_string(), e))
}
