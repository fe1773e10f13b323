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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::{Parser, Subcommand};

use deltaswap::{DiffOptions, Error, MappedFile, PatchReader};

/// The exit statuses, at the end of every `--help`.
macro_rules! exit_status_help {
    () => {
        "\
Exit status:
  0  success
  1  usage error: a missing or extra argument, arguments in the wrong order,
     or a file of the wrong kind (a directory where a file is expected, a
     bundle where a patch is expected, a patch where a bundle is expected)
  2  rejected input: the old file does not match the patch, the patch or
     bundle is malformed, corrupt, signed by an untrusted key or over a limit
  3  I/O failure (missing file, permission denied, disk full) or internal error

Every error is one line: what failed, on which file, and what to do next.
--verbose adds the chain of causes; --quiet hides progress and notes."
    };
}

mod bundle;
mod check;
mod demo;
mod patch;
mod progress;

const EXIT_OK: i32 = 0;
const EXIT_USAGE: i32 = 1;
const EXIT_REJECTED: i32 = 2;
const EXIT_IO: i32 = 3;

const MAIN_HELP: &str = concat!(
    "\
Examples:
  deltaswap demo                              a one-minute tour in a temporary directory
  deltaswap diff libfoo.so.1 libfoo.so.2 foo.patch
  deltaswap apply libfoo.so.1 foo.patch libfoo.so.2.out
  deltaswap patch /usr/lib/libfoo.so foo.patch    (in place, atomic, crash-safe)
  deltaswap info foo.patch
  deltaswap keygen release.key release.pub
  deltaswap bundle create --from v1/ --to v2/ --label 2.0 --baseline 1.0 \\
      --seq 1 --key release.key -o update.dsb
  deltaswap install --root / --trust release.pub update.dsb

Run 'deltaswap help COMMAND' for a command's arguments and examples.

",
    exit_status_help!()
);

const DIFF_HELP: &str = concat!(
    "\
Examples:
  deltaswap diff libfoo.so.1 libfoo.so.2 foo.patch
  deltaswap diff --level 22 --threads 2 old.bin new.bin update.patch

The patch records the size and SHA-256 of OLD and NEW: 'apply' and 'patch'
refuse any other old file and check the result. An existing PATCH is replaced
atomically. Inputs over 4 MiB show a progress spinner on a terminal.

",
    exit_status_help!()
);

const APPLY_HELP: &str = concat!(
    "\
Examples:
  deltaswap apply libfoo.so.1 foo.patch libfoo.so.2
  deltaswap apply --quiet old.bin update.patch new.bin

To update an installed file where it is, use 'deltaswap patch TARGET PATCH'.

",
    exit_status_help!()
);

const INFO_HELP: &str = concat!(
    "\
Examples:
  deltaswap info foo.patch
  deltaswap info --json foo.patch | jq .new_sha256

For a bundle, use 'deltaswap bundle inspect'.

",
    exit_status_help!()
);

/// Compact binary deltas for system components, applied with verification.
///
/// deltaswap makes a small patch from two versions of a file (diff), turns the
/// old version into the new one with the patch, checking both (apply, or patch
/// in place), and ships signed multi-file bundles that install all or nothing.
#[derive(Parser, Debug)]
#[command(name = "deltaswap", version, about, long_about, after_help = MAIN_HELP)]
struct Cli {
    /// Print the chain of causes with every error.
    #[arg(long, global = true)]
    verbose: bool,
    /// No progress display and no informational messages on stderr (errors
    /// are still printed).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compute a patch that turns OLD into NEW.
    #[command(after_help = DIFF_HELP)]
    Diff {
        /// The old version of the file (what the patch will be applied to).
        old: PathBuf,
        /// The new version of the file (what applying the patch produces).
        new: PathBuf,
        /// Where to write the patch (created or replaced).
        patch: PathBuf,
        /// Level 1..22 (default 19): 1-18 code every stream at that zstd
        /// level; 19 codes control at level 19, literals at 16 (long literal
        /// streams also with LZMA) and the run streams at level 9: patches
        /// 0.25-0.89x the best peer's on libraries, in 0.2-0.5x qbsdiff's
        /// diff time; 20-22 also try the delta model, for files of up
        /// to 32 MiB copied (64 MiB from 21): library patches 29-39% smaller
        /// than 19's, about 0.1 s per MiB copied more to make and to apply.
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: Option<i32>,
        /// Worker threads (default: all cores). The patch does not depend on it.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Apply PATCH to OLD and write the verified result to OUT.
    ///
    /// OUT appears only once the result's size and SHA-256 match the patch
    /// (written to a temporary file beside OUT, synced, then renamed; a pipe
    /// or a device such as /dev/stdout gets the result copied from a
    /// temporary file in $TMPDIR once verified). OLD is checked first: a
    /// patch made for another file is refused.
    #[command(after_help = APPLY_HELP)]
    Apply {
        /// The old version of the file, the one the patch was made from.
        old: PathBuf,
        /// The patch (made by 'deltaswap diff').
        patch: PathBuf,
        /// Where to write the new version (created or replaced).
        out: PathBuf,
    },
    /// Show a patch's format version, sizes, hashes, and each stream's sizes and codecs.
    #[command(after_help = INFO_HELP)]
    Info {
        /// The patch.
        patch: PathBuf,
        /// Print one JSON object instead of text.
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

static QUIET: AtomicBool = AtomicBool::new(false);

/// True with `--quiet`.
fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Prints an informational line on stderr unless `--quiet`.
fn note(msg: std::fmt::Arguments<'_>) {
    if !quiet() {
        eprintln!("deltaswap: {msg}");
    }
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
        let mut causes = Vec::new();
        let mut src = std::error::Error::source(err);
        while let Some(s) = src {
            causes.push(s.to_string());
            src = s.source();
        }
        let io_source =
            std::error::Error::source(err).and_then(|s| s.downcast_ref::<std::io::Error>());
        let brief = match (err, io_source) {
            (Error::Io { .. } | Error::File { .. }, Some(e)) => {
                format!("{err}: {} ({})", check::reason(e), check::advice(e))
            }
            _ => err.to_string(),
        };
        let hint = lib_hint(err);
        Failure {
            code,
            message: if hint.is_empty() {
                format!("{context}: {brief}")
            } else {
                format!("{context}: {brief} ({hint})")
            },
            causes,
        }
    }

    fn io(context: String, err: std::io::Error) -> Failure {
        check::io_failure(context, err)
    }
}

/// What to do about a library error, in a few words.
fn lib_hint(err: &Error) -> &'static str {
    use deltaswap::Subject;
    match err {
        Error::HashMismatch {
            subject: Subject::Source,
            ..
        }
        | Error::SizeMismatch {
            subject: Subject::Source,
            ..
        } => "this patch was made for a different old file: check the file and the argument order",
        Error::HashMismatch { .. } | Error::SizeMismatch { .. } => {
            "the patch is corrupt: fetch it again; nothing was written"
        }
        Error::Format(_) => "the patch is damaged or not a deltaswap patch: fetch it again",
        Error::LimitExceeded { .. } | Error::Unsupported { .. } => {
            "the patch is too large for this build's limits, or damaged"
        }
        Error::Bug(_) => "",
        Error::Symlink { .. } => "pass --follow-symlinks to patch the file it points to",
        Error::NotRegularFile { .. } => "give the path of a regular file",
        Error::HardLinks { .. } => "pass --allow-hard-links to patch this name only",
        Error::NoSpace { .. } => "free some space and try again; nothing was replaced",
        Error::ReadOnly { .. } => "remount it read-write and try again",
        Error::Locked { .. } => "wait for the other process, or drop --no-wait to wait for it",
        Error::Changed { .. } => "try again once nothing else is writing the file",
        Error::DurabilityUnknown { .. } => {
            "run 'sync', then 'deltaswap recover' on its directory"
        }
        Error::BundleFormat(_) => "the bundle is damaged or not a deltaswap bundle: fetch it again",
        Error::UntrustedKey { .. } => {
            "pass --trust with the public key file that matches the key the bundle was signed with"
        }
        Error::BadSignature { .. } | Error::PayloadMismatch { .. } => {
            "the bundle was changed or damaged after signing: fetch it again"
        }
        Error::UnsafePath { .. } | Error::DuplicatePath { .. } => {
            "the bundle is unsafe to install: do not use it"
        }
        Error::WrongBaseline { .. } => {
            "use a bundle built for this system's baseline; 'deltaswap status --root ROOT' shows it"
        }
        Error::Downgrade { .. } => {
            "this bundle or a newer one was installed before; build the bundle with a higher --seq"
        }
        Error::ComponentModified { .. } => {
            "restore the file to the version the bundle expects, or build a bundle from this system's files"
        }
        Error::ForeignJournal { .. } => "run 'deltaswap recover --root ROOT' first",
        Error::StateCorrupt { .. } => {
            "restore the state directory from a backup; see docs/GUARANTEES.md"
        }
        _ => "",
    }
}

/// Runs the CLI and returns the exit status.
pub(crate) fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    return EXIT_OK;
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    return EXIT_USAGE;
                }
                _ => {
                    eprintln!("deltaswap: error: {}", one_line_usage_error(&e));
                    return EXIT_USAGE;
                }
            }
        }
    };
    let verbose = cli.verbose;
    QUIET.store(cli.quiet, Ordering::Relaxed);
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

/// clap's multi-line usage error as one line: the error, the usage line and
/// where to read more.
fn one_line_usage_error(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut what = String::new();
    let mut usage = None;
    let mut tip = None;
    let mut in_error = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("error: ") {
            what.push_str(rest.trim());
            in_error = true;
        } else if let Some(rest) = line.strip_prefix("Usage: ") {
            usage = Some(rest.trim().to_string());
            in_error = false;
        } else if let Some(rest) = line.trim_start().strip_prefix("tip: ") {
            tip = Some(rest.trim().to_string());
            in_error = false;
        } else if line.trim().is_empty() {
            in_error = false;
        } else if in_error {
            if !what.ends_with(':') {
                what.push(',');
            }
            what.push(' ');
            what.push_str(line.trim());
        }
    }
    let what = what.trim_end_matches(':').to_string();
    let help = match usage.as_deref().and_then(|u| u.split(" <").next()) {
        Some(cmd) => {
            let cmd: Vec<&str> = cmd
                .split_whitespace()
                .take_while(|w| !w.starts_with('[') && !w.starts_with('-'))
                .collect();
            format!("'{} --help'", cmd.join(" "))
        }
        None => {
            // No usage line (a bad value): name the subcommand from argv.
            let cmd = <Cli as clap::CommandFactory>::command();
            let args: Vec<String> = std::env::args().skip(1).collect();
            let mut words = vec!["deltaswap".to_string()];
            let mut level = &cmd;
            for a in &args {
                if let Some(sub) = level.find_subcommand(a) {
                    words.push(a.clone());
                    level = sub;
                }
            }
            format!("'{} --help'", words.join(" "))
        }
    };
    let mut out = what;
    match (tip, usage) {
        (Some(t), Some(u)) => out.push_str(&format!(" ({t}; usage: {u}; see {help})")),
        (Some(t), None) => out.push_str(&format!(" ({t}; see {help})")),
        (None, Some(u)) => out.push_str(&format!(" (usage: {u}; see {help})")),
        (None, None) => out.push_str(&format!(" (see {help})")),
    }
    out
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
    MappedFile::open(path).map_err(|e| check::read_failure(what, path, e))
}

fn cmd_diff(
    old: &Path,
    new: &Path,
    patch: &Path,
    level: Option<i32>,
    threads: Option<usize>,
) -> Result<(), Failure> {
    let old_kind = check::input_file("OLD", old)?;
    let new_kind = check::input_file("NEW", new)?;
    for (role, path, kind) in [("OLD", old, old_kind), ("NEW", new, new_kind)] {
        match kind {
            check::Kind::Patch => {
                return Err(check::usage(format!(
                    "{role} '{}' is a deltaswap patch, not a version of a file (to apply a patch run 'deltaswap apply OLD PATCH OUT'; 'diff' takes OLD NEW PATCH)",
                    path.display()
                )))
            }
            check::Kind::Bundle => {
                return Err(check::usage(format!(
                    "{role} '{}' is a deltaswap bundle, not a version of a file (bundles are made with 'deltaswap bundle create' and installed with 'deltaswap install')",
                    path.display()
                )))
            }
            check::Kind::Other => {}
        }
    }
    check::output_file("PATCH", patch)?;
    if let Some(0) = threads {
        return Err(check::usage(
            "--threads 0 is not a number of threads (give 1 or more, or leave it out to use all cores)".into(),
        ));
    }
    let old_map = map_input(old, "OLD")?;
    let new_map = map_input(new, "NEW")?;
    let (old_len, new_len) = (
        old_map.as_bytes().len() as u64,
        new_map.as_bytes().len() as u64,
    );
    let mut opts = DiffOptions::new();
    if let Some(l) = level {
        opts = opts.level(l);
    }
    if let Some(t) = threads {
        opts = opts.threads(t);
    }
    let t = Instant::now();
    let bar = progress::spinner(
        old_len.max(new_len),
        format!(
            "diffing {} ({}) -> {} ({})",
            old.display(),
            progress::size(old_len),
            new.display(),
            progress::size(new_len)
        ),
    );
    let result = opts.diff(old_map.as_bytes(), new_map.as_bytes());
    bar.finish_and_clear();
    let bytes = result.map_err(|e| {
        Failure::from_lib(
            format!("diff of '{}' and '{}'", old.display(), new.display()),
            &e,
        )
    })?;
    write_atomically(patch, |w| w.write_all(&bytes))
        .map_err(|e| check::write_failure("PATCH", patch, e))?;
    let secs = t.elapsed().as_secs_f64();
    note(format_args!(
        "wrote {} ({} bytes, {:.2}% of NEW) in {:.2}s ({} of NEW)",
        patch.display(),
        bytes.len(),
        percent(bytes.len() as u64, new_len),
        secs,
        progress::rate(new_len, secs)
    ));
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
    let old_kind = check::input_file("OLD", old)?;
    let patch_kind = check::input_file("PATCH", patch)?;
    check::expect_patch(
        "apply OLD PATCH OUT",
        patch,
        patch_kind,
        Some(("OLD", old, old_kind)),
    )?;
    check::output_file("OUT", out)?;
    let old_map = map_input(old, "OLD")?;
    let patch_file = File::open(patch).map_err(|e| check::read_failure("PATCH", patch, e))?;
    let reader = PatchReader::new(BufReader::with_capacity(1 << 16, patch_file))
        .map_err(|e| Failure::from_lib(format!("cannot read PATCH '{}'", patch.display()), &e))?;
    let header = reader.header().clone();
    let new_len = header.new_len();
    let t = Instant::now();
    let bar = progress::bytes(new_len, format!("writing {}", out.display()));
    let mut lib_err = None;
    let res = write_atomically(out, |w| {
        let counted = progress::Counting {
            inner: w,
            bar: &bar,
        };
        match reader.apply_to(&old_map, counted) {
            Ok(_verified) => Ok(()),
            Err(e) => {
                lib_err = Some(e);
                Err(std::io::Error::other("apply failed"))
            }
        }
    });
    bar.finish_and_clear();
    match (res, lib_err) {
        (Ok(()), _) => {
            let secs = t.elapsed().as_secs_f64();
            note(format_args!(
                "wrote {} ({} bytes, verified) in {:.2}s ({})",
                out.display(),
                new_len,
                secs,
                progress::rate(new_len, secs)
            ));
            Ok(())
        }
        (
            Err(_),
            Some(Error::Io {
                context: "writing the new file",
                source,
            }),
        ) => Err(check::write_failure("OUT", out, source)),
        (Err(_), Some(e)) => {
            let (e, sizes) = by_source_digest(e, &header, old_map.as_bytes());
            let context = format!(
                "applying '{}' to '{}'{sizes}",
                patch.display(),
                old.display()
            );
            Err(Failure::from_lib(context, &e))
        }
        (Err(e), None) => Err(check::write_failure("OUT", out, e)),
    }
}

/// A wrong OLD of another length is refused by its length, before any
/// hashing. The command still reports it by its SHA-256, as it does a wrong
/// OLD of the right length, so that every wrong OLD names the digest the patch
/// was made for and the one found. The lengths go into the second value, to
/// be added to the message's context.
pub(super) fn by_source_digest(
    e: Error,
    header: &deltaswap::PatchHeader,
    old: &[u8],
) -> (Error, String) {
    match e {
        Error::SizeMismatch {
            subject: deltaswap::Subject::Source,
            expected,
            found,
        } => (
            Error::HashMismatch {
                subject: deltaswap::Subject::Source,
                expected: header.old_sha256(),
                found: deltaswap::Sha256Digest::of(old),
            },
            format!(" ({found} bytes; the patch was made for {expected})"),
        ),
        e => (e, String::new()),
    }
}

/// Writes `dest` through a temporary file in the same directory, syncs it and
/// renames it into place; on any error the temporary file is removed and `dest`
/// is untouched. A link to a file is followed (the file is replaced, the
/// link stays). A pipe or a device (`/dev/stdout`) cannot be renamed over:
/// its bytes are made in a temporary file in the system's temporary
/// directory and copied to it only once `fill` has succeeded, so that it
/// too receives nothing unless the whole output was made and checked.
fn write_atomically(
    dest: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match check::output_target(dest) {
        check::Output::File(path) => write_replacing(&path, fill),
        check::Output::Stream => write_streamed(dest, fill),
    }
}

/// [`write_atomically`] to a pipe or a device.
fn write_streamed(
    dest: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let (tmp_path, file) = create_temp(&std::env::temp_dir(), "stream")?;
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 16, &file);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        // Read back through the handle made with the file, not its name.
        let mut made = &file;
        std::io::Seek::seek(&mut made, std::io::SeekFrom::Start(0))?;
        let mut out = std::fs::OpenOptions::new().write(true).open(dest)?;
        std::io::copy(&mut made, &mut out)?;
        out.flush()
    })();
    let _ = std::fs::remove_file(&tmp_path);
    result
}

/// A new file `.deltaswap-tmp-NAME-PID-N` in `dir`, created exclusively.
fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, File)> {
    let mut attempt = 0u32;
    loop {
        let tmp = dir.join(format!(
            ".deltaswap-tmp-{name}-{}-{attempt}",
            std::process::id(),
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1
            }
            Err(e) => return Err(e),
        }
    }
}

/// [`write_atomically`] to a file: temporary file beside it, sync, rename.
fn write_replacing(
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
    let (tmp_path, file) = create_temp(&dir, &name.to_string_lossy())?;
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
    let kind = check::input_file("PATCH", patch)?;
    if kind == check::Kind::Bundle {
        return Err(check::usage(format!(
            "'{}' is a bundle, not a patch (show it with 'deltaswap bundle inspect {}')",
            patch.display(),
            patch.display()
        )));
    }
    check::expect_patch("info PATCH", patch, kind, None)?;
    let f = File::open(patch).map_err(|e| check::read_failure("PATCH", patch, e))?;
    let info = deltaswap::inspect(BufReader::new(f))
        .map_err(|e| Failure::from_lib(format!("cannot read PATCH '{}'", patch.display()), &e))?;
    let h = info.header();
    let mut o = std::io::stdout().lock();
    let r = if json {
        let streams: Vec<String> = info
            .streams()
            .iter()
            .zip(info.stream_codecs())
            .map(|((n, r, s), codecs)| {
                let codecs: Vec<String> = codecs.iter().map(|c| format!("\"{c}\"")).collect();
                format!(
                    "{{\"name\":\"{n}\",\"decoded\":{r},\"stored\":{s},\"codecs\":[{}]}}",
                    codecs.join(",")
                )
            })
            .collect();
        writeln!(
            o,
            "{{\"format_version\":{},\"transform\":{},\"reference_map\":{},\"old_len\":{},\"old_sha256\":\"{}\",\"new_len\":{},\"new_sha256\":\"{}\",\"patch_len\":{},\"segments\":{},\"edits\":{},\"streams\":[{}]}}",
            h.version(),
            h.transform(),
            match info.reference_map() {
                Some((breaks, stored)) => format!("{{\"breaks\":{breaks},\"stored\":{stored}}}"),
                None => "null".to_string(),
            },
            h.old_len(),
            h.old_sha256(),
            h.new_len(),
            h.new_sha256(),
            info.patch_len(),
            info.segments(),
            info.edits().map_or("null".to_string(), |n| n.to_string()),
            streams.join(",")
        )
    } else {
        let transforms: Vec<&str> = [
            (1, "x86 branch targets in literals"),
            (2, "x86 displacements in copies"),
            (4, "pointers in copies"),
            (8, "AArch64 branches and page addresses in copies"),
            (16, "AArch64 branch targets and pages in literals"),
        ]
        .iter()
        .filter(|(bit, _)| h.transform() & bit != 0)
        .map(|&(_, name)| name)
        .collect();
        let layout = match info.edits() {
            Some(n) => format!("edit layout, {n} edit(s)"),
            None => format!("{} segment(s)", info.segments()),
        };
        let mut s = format!(
            "format version: {}\ntransform: {}\nold: {} bytes, sha256 {}\nnew: {} bytes, sha256 {}\npatch: {} bytes ({:.2}% of new), {}\n",
            h.version(),
            if transforms.is_empty() {
                "none".to_string()
            } else {
                transforms.join(", ")
            },
            h.old_len(),
            h.old_sha256(),
            h.new_len(),
            h.new_sha256(),
            info.patch_len(),
            percent(info.patch_len(), h.new_len()),
            layout
        );
        if let Some((breaks, stored)) = info.reference_map() {
            s.push_str(&format!(
                "reference map: {breaks} breaks, {stored} bytes stored\n"
            ));
        }
        // An edit list has no streams.
        let streams = match info.edits() {
            Some(_) => Vec::new(),
            None => info
                .streams()
                .into_iter()
                .zip(info.stream_codecs())
                .collect(),
        };
        for ((n, r, st), codecs) in streams {
            let with = if codecs.is_empty() {
                String::new()
            } else {
                format!(" ({})", codecs.join(", "))
            };
            s.push_str(&format!(
                "stream {n:<12} {r:>12} bytes decoded, {st:>10} stored{with}\n"
            ));
        }
        o.write_all(s.as_bytes())
    };
    r.map_err(|e| Failure::io("cannot write to standard output".to_string(), e))
}
