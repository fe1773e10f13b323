//! Up-front checks of the CLI's file arguments, so that the mistakes a new
//! user makes (a missing file, a directory, arguments in the wrong order, a
//! bundle where a patch is expected, an output directory that cannot be
//! written) end in one line that names the argument, the file and the fix,
//! before any long work starts.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{Failure, EXIT_IO, EXIT_REJECTED, EXIT_USAGE};

/// What a file argument turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A deltaswap patch (starts with `DSWP`).
    Patch,
    /// A deltaswap bundle (starts with `DSBUNDLE`).
    Bundle,
    /// Any other regular file (or something that is not a directory).
    Other,
}

/// Looks at the first bytes of `path`, an existing file.
fn kind_of(path: &Path) -> io::Result<Kind> {
    let mut f = std::fs::File::open(path)?;
    let mut head = [0u8; 8];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(if head[..n].starts_with(b"DSBUNDLE") {
        Kind::Bundle
    } else if head[..n].starts_with(b"DSWP") {
        Kind::Patch
    } else {
        Kind::Other
    })
}

/// A short, lower-case reason for an I/O error, without "(os error N)".
pub(super) fn reason(e: &io::Error) -> String {
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "it does not exist".into(),
        K::PermissionDenied => "permission denied".into(),
        K::ReadOnlyFilesystem => "the file system is read-only".into(),
        K::StorageFull => "the disk is full".into(),
        K::IsADirectory => "it is a directory".into(),
        K::NotADirectory => "a component of the path is not a directory".into(),
        K::AlreadyExists => "it already exists".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

/// What to do about an I/O error on `path`.
pub(super) fn advice(e: &io::Error) -> &'static str {
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "check the path",
        K::PermissionDenied => "check its permissions, or run as a user who may access it",
        K::ReadOnlyFilesystem => "remount it read-write or choose another location",
        K::StorageFull => "free some space and try again",
        K::NotADirectory => "check the path",
        _ => "check the file and try again",
    }
}

/// A failure to read `role` at `path`: exit status 3 with the reason and the fix.
pub(super) fn read_failure(role: &str, path: &Path, e: io::Error) -> Failure {
    io_failure(format!("cannot read {role} '{}'", path.display()), e)
}

/// A failure to write `role` at `path`: exit status 3 with the reason and the fix.
pub(super) fn write_failure(role: &str, path: &Path, e: io::Error) -> Failure {
    io_failure(format!("cannot write {role} '{}'", path.display()), e)
}

/// `{context}: {reason} ({advice})`, exit status 3, the OS message as the cause.
pub(super) fn io_failure(context: String, e: io::Error) -> Failure {
    Failure {
        code: EXIT_IO,
        message: format!("{context}: {} ({})", reason(&e), advice(&e)),
        causes: vec![e.to_string()],
    }
}

/// A usage error (exit status 1).
pub(super) fn usage(message: String) -> Failure {
    Failure {
        code: EXIT_USAGE,
        message,
        causes: Vec::new(),
    }
}

/// A rejected input (exit status 2).
pub(super) fn rejected(message: String) -> Failure {
    Failure {
        code: EXIT_REJECTED,
        message,
        causes: Vec::new(),
    }
}

/// Checks that the file argument `role` exists, is not a directory and can
/// be opened; returns what it is.
pub(super) fn input_file(role: &str, path: &Path) -> Result<Kind, Failure> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let mut f = read_failure(role, path, e);
        if f.message.ends_with("(check the path)") && !path.exists() {
            f.message = format!(
                "cannot read {role} '{}': it does not exist (check the path and the argument order; see --help)",
                path.display()
            );
        }
        f
    })?;
    if meta.is_dir() {
        return Err(usage(format!(
            "{role} '{}' is a directory, not a file (give the path of a file; see --help)",
            path.display()
        )));
    }
    kind_of(path).map_err(|e| read_failure(role, path, e))
}

/// Checks that the directory argument `role` exists and is a directory.
pub(super) fn input_dir(role: &str, path: &Path, what: &str) -> Result<(), Failure> {
    let meta = std::fs::metadata(path).map_err(|e| read_failure(role, path, e))?;
    if !meta.is_dir() {
        return Err(usage(format!(
            "{role} '{}' is a file, not a directory (give {what})",
            path.display()
        )));
    }
    Ok(())
}

/// The directory an output file will be created in.
pub(super) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks that the output `role` can be created at `path`: not a directory,
/// in an existing directory that this process may write. Runs before any long
/// work so that a mistake costs nothing.
pub(super) fn output_file(role: &str, path: &Path) -> Result<(), Failure> {
    let resolved;
    let path = match output_target(path) {
        Output::Stream => return Ok(()),
        Output::File(p) => {
            resolved = p;
            resolved.as_path()
        }
    };
    if path.is_dir() {
        return Err(usage(format!(
            "{role} '{}' is a directory (give a file name, for example '{}')",
            path.display(),
            path.join("NAME").display()
        )));
    }
    if path.file_name().is_none() {
        return Err(usage(format!(
            "{role} '{}' has no file name (give a file name; see --help)",
            path.display()
        )));
    }
    let dir = parent_dir(path);
    match std::fs::metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Failure {
                code: EXIT_IO,
                message: format!(
                    "cannot write {role} '{}': the directory '{}' does not exist (create it first, or choose another path)",
                    path.display(),
                    dir.display()
                ),
                causes: vec![e.to_string()],
            })
        }
        Err(e) => return Err(write_failure(role, path, e)),
        Ok(m) if !m.is_dir() => {
            return Err(usage(format!(
                "cannot write {role} '{}': '{}' is a file, not a directory (choose another path)",
                path.display(),
                dir.display()
            )))
        }
        Ok(_) => {}
    }
    if let Err(e) = rustix::fs::access(&dir, rustix::fs::Access::WRITE_OK) {
        let e = io::Error::from(e);
        return Err(io_failure(
            format!(
                "cannot write {role} '{}': the directory '{}' is not writable",
                path.display(),
                dir.display()
            ),
            e,
        ));
    }
    Ok(())
}

/// Where an output argument's bytes go.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Output {
    /// A file written through a temporary file beside it and renamed into
    /// place: the path itself, or the file a symbolic link names (so that
    /// the link stays a link).
    File(PathBuf),
    /// Something that is not a file and cannot be renamed over: a pipe, a
    /// terminal, a device (`/dev/stdout`, `/dev/null`), reached directly or
    /// through links. Its bytes are written to it once complete and checked.
    Stream,
}

/// Resolves an output argument (see [`Output`]). A path that does not
/// exist yet, or a link to nothing, is a file at that path.
pub(super) fn output_target(path: &Path) -> Output {
    let Ok(own) = std::fs::symlink_metadata(path) else {
        return Output::File(path.to_path_buf());
    };
    let Ok(followed) = std::fs::metadata(path) else {
        return Output::File(path.to_path_buf());
    };
    if !followed.is_file() && !followed.is_dir() {
        return Output::Stream;
    }
    if own.file_type().is_symlink() && followed.is_file() {
        if let Ok(real) = std::fs::canonicalize(path) {
            return Output::File(real);
        }
    }
    Output::File(path.to_path_buf())
}

/// `apply`/`patch`/`info`: PATCH must be a deltaswap patch. `first` is the
/// argument before it (OLD or TARGET) and its kind, used to spot a swapped order.
pub(super) fn expect_patch(
    cmd: &str,
    patch: &Path,
    kind: Kind,
    first: Option<(&str, &Path, Kind)>,
) -> Result<(), Failure> {
    match kind {
        Kind::Patch => Ok(()),
        Kind::Bundle => Err(usage(format!(
            "PATCH '{}' is a bundle, not a patch (install it with 'deltaswap install --root ROOT --trust PUBLIC_KEY {}', or look inside with 'deltaswap bundle inspect')",
            patch.display(),
            patch.display()
        ))),
        Kind::Other => {
            if let Some((role, first_path, Kind::Patch)) = first {
                return Err(usage(format!(
                    "{role} '{}' is a deltaswap patch and PATCH '{}' is not: the arguments are in the wrong order (the usage is 'deltaswap {cmd}')",
                    first_path.display(),
                    patch.display()
                )));
            }
            let also = if cmd.starts_with("apply") {
                "; to make a patch from two files run 'deltaswap diff OLD NEW PATCH'"
            } else {
                ""
            };
            Err(rejected(format!(
                "PATCH '{}' is not a deltaswap patch: it does not start with \"DSWP\" (check the argument order, 'deltaswap {cmd}', or fetch the patch again{also})",
                patch.display()
            )))
        }
    }
}
