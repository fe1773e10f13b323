//! `deltaswap patch` and `deltaswap recover`: the atomic in-place patcher.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use clap::Args;

use deltaswap::{Error, PatchOptions, SwapMethod};

use super::{check, note, Failure};

const PATCH_HELP: &str = concat!(
    "\
Examples:
  deltaswap patch /usr/lib/libfoo.so foo.patch
  deltaswap patch --keep-old /var/lib/rollback/libfoo.so /usr/lib/libfoo.so foo.patch

TARGET is the old version (the file the patch was made from) or already the
new one (then nothing is done). Any other file is refused untouched. After a
crash, run 'deltaswap recover DIR' on TARGET's directory.

",
    exit_status_help!()
);

const RECOVER_HELP: &str = concat!(
    "\
Examples:
  deltaswap recover /usr/lib                  after a crash during 'deltaswap patch'
  deltaswap recover --root /                  after a crash during install or remove

",
    exit_status_help!()
);

/// Arguments of `deltaswap patch`.
#[derive(Args, Debug)]
#[command(after_help = PATCH_HELP)]
pub(super) struct PatchArgs {
    /// The installed file to patch in place (the old version).
    target: PathBuf,
    /// The patch (made by 'deltaswap diff OLD NEW PATCH').
    patch: PathBuf,
    /// Keep the old version (same inode) at PATH after the swap: the rollback
    /// copy. PATH must be on the same file system; an existing file is replaced.
    #[arg(long, value_name = "PATH")]
    keep_old: Option<PathBuf>,
    /// If TARGET is a symbolic link, patch the file it points to (default: refuse).
    #[arg(long)]
    follow_symlinks: bool,
    /// Patch TARGET even if it has other hard links; they keep the old version.
    #[arg(long)]
    allow_hard_links: bool,
    /// Fail at once if another process is patching TARGET (default: wait).
    #[arg(long)]
    no_wait: bool,
}

/// Arguments of `deltaswap recover`.
#[derive(Args, Debug)]
#[command(after_help = RECOVER_HELP)]
pub(super) struct RecoverArgs {
    /// The directory holding files that were being patched.
    #[arg(required_unless_present = "root", conflicts_with = "root")]
    dir: Option<PathBuf>,
    /// Instead: finish or undo an interrupted bundle install or remove under ROOT.
    #[arg(long)]
    pub(super) root: Option<PathBuf>,
    /// With --root: the state directory (default ROOT/.deltaswap).
    #[arg(long, requires = "root")]
    pub(super) state_dir: Option<PathBuf>,
}

struct RecoverDir {
    dir: PathBuf,
}

pub(super) fn cmd_patch(args: PatchArgs) -> Result<(), Failure> {
    let PatchArgs {
        target,
        patch,
        keep_old,
        follow_symlinks,
        allow_hard_links,
        no_wait,
    } = args;
    let target_kind = match std::fs::symlink_metadata(&target) {
        Ok(m) if m.file_type().is_symlink() && !follow_symlinks => None,
        _ => Some(check::input_file("TARGET", &target)?),
    };
    let patch_kind = check::input_file("PATCH", &patch)?;
    check::expect_patch(
        "patch TARGET PATCH",
        &patch,
        patch_kind,
        target_kind.map(|k| ("TARGET", target.as_path(), k)),
    )?;
    if target_kind == Some(check::Kind::Patch) {
        return Err(check::usage(format!(
            "TARGET '{}' is itself a deltaswap patch (the usage is 'deltaswap patch TARGET PATCH', TARGET being the installed file to update)",
            target.display()
        )));
    }
    if let Some(k) = &keep_old {
        check::output_file("--keep-old", k)?;
        if same_path(&target, k) {
            return Err(check::usage(format!(
                "--keep-old '{}' names TARGET itself; give another path for the old version (for example '{}.rollback')",
                k.display(),
                target.display()
            )));
        }
    }
    let patch_file = File::open(&patch).map_err(|e| check::read_failure("PATCH", &patch, e))?;
    let mut opts = PatchOptions::new()
        .follow_symlinks(follow_symlinks)
        .allow_hard_links(allow_hard_links)
        .wait_for_lock(!no_wait);
    if let Some(k) = keep_old {
        opts = opts.keep_old(k);
    }
    let reader = BufReader::with_capacity(1 << 16, patch_file);
    match deltaswap::patch_in_place(&target, reader, &opts) {
        Ok(outcome) => {
            let how = match outcome.method() {
                SwapMethod::Exchanged => "swapped in with RENAME_EXCHANGE",
                SwapMethod::Renamed => "renamed into place",
                SwapMethod::AlreadyApplied => "already the new version; left as it is",
                _ => "done",
            };
            note(format_args!(
                "patched {} ({} bytes, sha256 {}): {how}",
                target.display(),
                outcome.len(),
                outcome.sha256()
            ));
            if let Some(k) = outcome.kept_old() {
                note(format_args!("old version kept at {}", k.display()));
            }
            Ok(())
        }
        Err(e) => {
            let (e, sizes) = by_target_digest(e, &target, &patch);
            let f = Failure::from_lib(
                format!(
                    "patching '{}'{sizes} with '{}'",
                    target.display(),
                    patch.display()
                ),
                &e,
            );
            Err(f)
        }
    }
}

/// True when `a` and `b` name the same directory entry (their directories
/// resolve to the same place and the names are equal).
fn same_path(a: &Path, b: &Path) -> bool {
    let dir = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.canonicalize(),
        _ => Path::new(".").canonicalize(),
    };
    match (dir(a), dir(b)) {
        (Ok(x), Ok(y)) => x == y && a.file_name() == b.file_name(),
        _ => false,
    }
}

/// A TARGET of another length than the patch's old file is refused by its
/// length; report it by its SHA-256 too, as `apply` does (see
/// `super::by_source_digest`). If either file cannot be read again, the length
/// error stands.
fn by_target_digest(e: Error, target: &Path, patch: &Path) -> (Error, String) {
    if !matches!(
        e,
        Error::SizeMismatch {
            subject: deltaswap::Subject::Source,
            ..
        }
    ) {
        return (e, String::new());
    }
    let header = File::open(patch)
        .ok()
        .and_then(|f| deltaswap::PatchReader::new(BufReader::new(f)).ok())
        .map(|r| r.header().clone());
    match (header, deltaswap::MappedFile::open(target)) {
        (Some(h), Ok(map)) => super::by_source_digest(e, &h, map.as_bytes()),
        _ => (e, String::new()),
    }
}

pub(super) fn cmd_recover(args: RecoverArgs) -> Result<(), Failure> {
    if let Some(root) = args.root {
        return super::bundle::cmd_recover_root(root, args.state_dir);
    }
    let Some(dir) = args.dir else {
        return Err(check::usage(
            "recover needs DIR or --root ROOT (see 'deltaswap recover --help')".into(),
        ));
    };
    check::input_dir(
        "DIR",
        &dir,
        "the directory that holds the patched file, for example the output of 'dirname FILE'",
    )?;
    let args = RecoverDir { dir };
    let report = deltaswap::recover(&args.dir)
        .map_err(|e| Failure::from_lib(format!("recovering '{}'", args.dir.display()), &e))?;
    for p in report.removed() {
        note(format_args!("removed leftover {}", p.display()));
    }
    for p in report.busy() {
        note(format_args!(
            "left {} alone: a running patch holds it",
            p.display()
        ));
    }
    for p in report.skipped() {
        note(format_args!(
            "left {} alone: not created by deltaswap",
            p.display()
        ));
    }
    note(format_args!(
        "recovered {}: {} leftover(s) removed",
        args.dir.display(),
        report.removed().len()
    ));
    Ok(())
}
