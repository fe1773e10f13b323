//! `deltaswap keygen`, `bundle create|inspect`, `install`, `remove`,
//! `status` and `recover --root`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use deltaswap::{Bundle, BundleBuilder, Installer, MappedFile, PublicKey, SecretKey};

use super::{check, note, progress, Command, Failure};

const KEYGEN_HELP: &str = concat!(
    "\
Example:
  deltaswap keygen release.key release.pub

Sign bundles with the secret key (--key release.key) and keep it private;
give devices the public key (--trust release.pub). Existing files are never
overwritten.

",
    exit_status_help!()
);

const CREATE_HELP: &str = concat!(
    "\
Example:
  deltaswap bundle create --from rootfs-26.3/ --to rootfs-26.3a/ \\
      --label \"26.3 (a)\" --baseline 26.3 --seq 1 --key release.key -o 26.3a.dsb

--from and --to are directory trees with the same layout as the installed
system; only the files that differ go into the bundle. Inputs over 4 MiB
show a progress spinner on a terminal.

",
    exit_status_help!()
);

const INSPECT_HELP: &str = concat!(
    "\
Examples:
  deltaswap bundle inspect --trust release.pub 26.3a.dsb
  deltaswap bundle inspect --json 26.3a.dsb

",
    exit_status_help!()
);

const INSTALL_HELP: &str = concat!(
    "\
Example:
  deltaswap install --root / --trust release.pub 26.3a.dsb

The signature is checked against the --trust keys before anything is read.
Every component is replaced or none is; after a crash run
'deltaswap recover --root ROOT'. 'deltaswap remove --root ROOT' goes back to
the baseline.

",
    exit_status_help!()
);

const ROOT_HELP: &str = concat!(
    "\
Examples:
  deltaswap status --root /
  deltaswap status --root / --json
  deltaswap remove --root /

",
    exit_status_help!()
);

/// Arguments of `deltaswap keygen`.
#[derive(Args, Debug)]
#[command(after_help = KEYGEN_HELP)]
pub(super) struct KeygenArgs {
    /// Where to write the secret key (hex, mode 0600).
    secret_key: PathBuf,
    /// Where to write the public key (hex).
    public_key: PathBuf,
}

/// `deltaswap bundle ...`.
#[derive(Subcommand, Debug)]
pub(super) enum BundleCmd {
    /// Build a signed bundle from a baseline tree and a new tree.
    #[command(after_help = CREATE_HELP)]
    Create {
        /// The baseline tree: the files as installed before any bundle.
        #[arg(long = "from")]
        from: PathBuf,
        /// The new tree: the same layout with the fixed files.
        #[arg(long = "to")]
        to: PathBuf,
        /// Label, for example "26.3 (a)".
        #[arg(long)]
        label: String,
        /// Baseline id, for example "26.3".
        #[arg(long)]
        baseline: String,
        /// Sequence number (must grow with every bundle).
        #[arg(long)]
        seq: u64,
        /// The secret key file (the first file written by 'deltaswap keygen').
        #[arg(long)]
        key: PathBuf,
        /// Also carry deltas from this tree's versions (repeatable).
        #[arg(long = "also-from")]
        also_from: Vec<PathBuf>,
        /// Creation time in Unix seconds (default: $SOURCE_DATE_EPOCH, else now).
        #[arg(long)]
        created: Option<u64>,
        /// Where to write the bundle (created or replaced).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Show a bundle's manifest. With --trust the signature is verified;
    /// without it the manifest is shown UNVERIFIED.
    #[command(after_help = INSPECT_HELP)]
    Inspect {
        /// The bundle.
        bundle: PathBuf,
        /// Trusted public key file (repeatable).
        #[arg(long)]
        trust: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `deltaswap install`.
#[derive(Args, Debug)]
#[command(after_help = INSTALL_HELP)]
pub(super) struct InstallArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Trusted public key file, the second file written by 'deltaswap keygen'
    /// (repeatable).
    #[arg(long, required = true)]
    trust: Vec<PathBuf>,
    /// Refuse bundles for any other baseline id.
    #[arg(long)]
    baseline: Option<String>,
    /// The bundle (made by 'deltaswap bundle create').
    bundle: PathBuf,
}

/// `--root` and `--state-dir`.
#[derive(Args, Debug)]
#[command(after_help = ROOT_HELP)]
pub(super) struct RootArgs {
    /// The root directory the bundle's paths are relative to.
    #[arg(long)]
    root: PathBuf,
    /// The state directory (default ROOT/.deltaswap).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

/// Arguments of `deltaswap status`.
#[derive(Args, Debug)]
#[command(after_help = ROOT_HELP)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn dispatch(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Keygen(a) => keygen(a),
        Command::Bundle(BundleCmd::Create {
            from,
            to,
            label,
            baseline,
            seq,
            key,
            also_from,
            created,
            output,
        }) => create(
            &from, &to, label, baseline, seq, &key, also_from, created, &output,
        ),
        Command::Bundle(BundleCmd::Inspect {
            bundle,
            trust,
            json,
        }) => inspect(&bundle, &trust, json),
        Command::Install(a) => install(a),
        Command::Remove(a) => remove(a),
        Command::Status(a) => status(a),
        _ => Err(Failure::io(
            "dispatch".into(),
            std::io::Error::other("unreachable command"),
        )),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads a 32-byte key written by `deltaswap keygen` (64 hex digits).
/// `what` is "secret key" or "public key", `flag` the option that named it.
fn read_key32(path: &Path, what: &str, flag: &str) -> Result<[u8; 32], Failure> {
    let kind = check::input_file(&format!("{what} file ({flag})"), path)?;
    let wrong = match kind {
        check::Kind::Bundle => Some("a bundle"),
        check::Kind::Patch => Some("a patch"),
        check::Kind::Other => None,
    };
    if let Some(w) = wrong {
        return Err(check::usage(format!(
            "{flag} '{}' is {w}, not a {what} file (give the {what} file written by 'deltaswap keygen'; see --help for the argument order)",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| check::read_failure(what, path, e))?;
    let t = String::from_utf8_lossy(&bytes);
    let t = t.trim().as_bytes();
    let mut out = [0u8; 32];
    let ok = t.len() == 64
        && out.iter_mut().zip(t.chunks_exact(2)).all(|(o, p)| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .map(|v| *o = v)
                .is_some()
        });
    if !ok {
        return Err(check::rejected(format!(
            "{flag} '{}' is not a {what}: a key file holds 64 hex digits (give the {what} file written by 'deltaswap keygen')",
            path.display()
        )));
    }
    Ok(out)
}

/// A `--trust` file: its path, its 32 bytes and the public key they encode
/// (`None` when they are not a valid ed25519 public key, as a secret key
/// usually is not).
struct Trusted {
    path: PathBuf,
    bytes: [u8; 32],
    key: Option<PublicKey>,
}

/// The trusted keys named by `--trust`.
fn trusted(paths: &[PathBuf]) -> Result<Vec<Trusted>, Failure> {
    paths
        .iter()
        .map(|p| {
            let bytes = read_key32(p, "public key", "--trust")?;
            Ok(Trusted {
                path: p.clone(),
                bytes,
                key: PublicKey::from_bytes(&bytes).ok(),
            })
        })
        .collect()
}

/// Explains a bundle signed by a key that is not trusted: a secret key given
/// to `--trust`, a bundle signed with a public key file given to `--key`, or
/// simply another key.
fn untrusted_key(bundle: &Path, key_id: &str, trusted: &[Trusted]) -> Failure {
    use std::os::unix::fs::PermissionsExt;
    for t in trusted {
        if SecretKey::from_bytes(&t.bytes).public_key().key_id_hex() != key_id {
            continue;
        }
        // The bundle was signed with this file's bytes as the secret key.
        let private = std::fs::metadata(&t.path)
            .map(|m| m.permissions().mode() & 0o077 == 0)
            .unwrap_or(false);
        return if t.key.is_none() || private {
            check::usage(format!(
                "--trust '{}' is the SECRET key that signed bundle '{}', not its public key (pass the public key file, the second file written by 'deltaswap keygen', and keep the secret key private)",
                t.path.display(),
                bundle.display()
            ))
        } else {
            check::rejected(format!(
                "bundle '{}' was signed with the public key file '{}' given as --key, so it cannot be verified (rebuild it with 'deltaswap bundle create --key SECRET_KEY', the first file written by 'deltaswap keygen')",
                bundle.display(),
                t.path.display()
            ))
        };
    }
    if let Some(t) = trusted.iter().find(|t| t.key.is_none()) {
        return check::rejected(format!(
            "--trust '{}' is not a valid public key; it may be a secret key (pass the public key file, the second file written by 'deltaswap keygen')",
            t.path.display()
        ));
    }
    let ids: Vec<String> = trusted
        .iter()
        .filter_map(|t| {
            t.key
                .as_ref()
                .map(|k| format!("'{}' is key {}", t.path.display(), k.key_id_hex()))
        })
        .collect();
    check::rejected(format!(
        "bundle '{}' is signed by key {key_id}, which is not trusted ({}): pass --trust with the public key that matches the secret key the bundle was signed with ('deltaswap keygen' prints the key id)",
        bundle.display(),
        ids.join(", ")
    ))
}

/// ROOT must be an existing directory.
fn check_root(r: &RootArgs) -> Result<(), Failure> {
    check::input_dir(
        "ROOT",
        &r.root,
        "the root directory the bundle's paths are relative to",
    )?;
    if let Some(s) = &r.state_dir {
        if s.exists() {
            check::input_dir("--state-dir", s, "a directory")?;
        }
    }
    Ok(())
}

fn installer(r: &RootArgs) -> Installer {
    let mut i = Installer::new(&r.root);
    if let Some(s) = &r.state_dir {
        i = i.state_dir(s);
    }
    i
}

fn keygen(a: KeygenArgs) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if a.secret_key == a.public_key {
        return Err(check::usage(format!(
            "SECRET_KEY and PUBLIC_KEY are the same file '{}' (give two file names, for example 'release.key release.pub')",
            a.secret_key.display()
        )));
    }
    for (role, p) in [("SECRET_KEY", &a.secret_key), ("PUBLIC_KEY", &a.public_key)] {
        if p.exists() && !p.is_dir() {
            return Err(check::usage(format!(
                "{role} '{}' already exists; keygen never overwrites a key (choose another file name, or delete the old key if it is no longer needed)",
                p.display()
            )));
        }
        check::output_file(role, p)?;
    }
    let key =
        SecretKey::generate().map_err(|e| Failure::from_lib("generating a key".into(), &e))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&a.secret_key)
        .map_err(|e| check::write_failure("SECRET_KEY", &a.secret_key, e))?;
    writeln!(f, "{}", hex(&key.to_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(|e| check::write_failure("SECRET_KEY", &a.secret_key, e))?;
    std::fs::write(
        &a.public_key,
        format!("{}\n", hex(&key.public_key().to_bytes())),
    )
    .map_err(|e| check::write_failure("PUBLIC_KEY", &a.public_key, e))?;
    note(format_args!(
        "key id {}: sign with --key {}, verify with --trust {}",
        key.public_key().key_id_hex(),
        a.secret_key.display(),
        a.public_key.display()
    ));
    Ok(())
}

/// Total size of the regular files under `dir` (for the progress display).
fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Warns when the secret key file is readable by others: a hint that it may
/// be the public key given by mistake.
fn warn_key_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            note(format_args!(
                "warning: --key '{}' is readable by other users (mode {mode:03o}); if it is the public key, pass the secret key instead ('deltaswap keygen SECRET PUBLIC' writes the secret one with mode 600)",
                path.display()
            ));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn create(
    from: &Path,
    to: &Path,
    label: String,
    baseline: String,
    seq: u64,
    key: &Path,
    also_from: Vec<PathBuf>,
    created: Option<u64>,
    output: &Path,
) -> Result<(), Failure> {
    check::input_dir("--from", from, "the baseline directory tree")?;
    check::input_dir("--to", to, "the directory tree of the new version")?;
    for t in &also_from {
        check::input_dir("--also-from", t, "a directory tree of an earlier version")?;
    }
    if from == to {
        return Err(check::usage(format!(
            "--from and --to are the same directory '{}' (--from is the baseline tree, --to the new tree)",
            from.display()
        )));
    }
    let secret = read_key32(key, "secret key", "--key")?;
    warn_key_mode(key);
    let key = SecretKey::from_bytes(&secret);
    check::output_file("--output", output)?;
    let created = created
        .or_else(|| {
            std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|s| s.parse().ok())
        })
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    let mut b = BundleBuilder::new(label, baseline, seq).created(created);
    for t in also_from {
        b = b.also_from(t);
    }
    let t = std::time::Instant::now();
    let total = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        tree_size(from) + tree_size(to)
    } else {
        0
    };
    let bar = progress::spinner(
        total,
        format!(
            "building bundle from {} and {} ({})",
            from.display(),
            to.display(),
            progress::size(total)
        ),
    );
    let result = b.build(from, to, &key);
    bar.finish_and_clear();
    let bytes = result.map_err(|e| Failure::from_lib("building the bundle".into(), &e))?;
    super::write_atomically(output, |w| std::io::Write::write_all(w, &bytes))
        .map_err(|e| check::write_failure("--output", output, e))?;
    note(format_args!(
        "wrote {} ({} bytes) in {:.2}s, signed by key {}",
        output.display(),
        bytes.len(),
        t.elapsed().as_secs_f64(),
        key.public_key().key_id_hex()
    ));
    Ok(())
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn ver(v: Option<deltaswap::FileVersion>) -> (String, String) {
    match v {
        Some(v) => (v.len().to_string(), json_str(&v.sha256().to_string())),
        None => ("null".into(), "null".into()),
    }
}

/// BUNDLE must be a deltaswap bundle.
fn check_bundle(path: &Path) -> Result<(), Failure> {
    match check::input_file("BUNDLE", path)? {
        check::Kind::Bundle => Ok(()),
        check::Kind::Patch => Err(check::usage(format!(
            "BUNDLE '{}' is a patch, not a bundle (apply a patch with 'deltaswap patch TARGET PATCH' or 'deltaswap apply OLD PATCH OUT'; show it with 'deltaswap info')",
            path.display()
        ))),
        check::Kind::Other => Err(check::rejected(format!(
            "BUNDLE '{}' is not a deltaswap bundle: it does not start with \"DSBUNDLE\" (check the path, or fetch the bundle again)",
            path.display()
        ))),
    }
}

fn open_verified<'a>(
    path: &Path,
    map: &'a MappedFile,
    trusted: &[Trusted],
) -> Result<Bundle<&'a MappedFile>, Failure> {
    let keys: Vec<PublicKey> = trusted.iter().filter_map(|t| t.key).collect();
    if keys.is_empty() {
        // No valid public key: find out why from the bundle's key id.
        let key_id = Bundle::open_unverified(map)
            .map(|b| hex(&b.key_id()))
            .unwrap_or_default();
        return Err(untrusted_key(path, &key_id, trusted));
    }
    Bundle::open(map, &keys).map_err(|e| match &e {
        deltaswap::Error::UntrustedKey { key_id } => untrusted_key(path, key_id, trusted),
        _ => Failure::from_lib(format!("verifying bundle '{}'", path.display()), &e),
    })
}

fn inspect(path: &Path, trust: &[PathBuf], json: bool) -> Result<(), Failure> {
    check_bundle(path)?;
    let keys = trusted(trust)?;
    let map = MappedFile::open(path).map_err(|e| check::read_failure("BUNDLE", path, e))?;
    let verified = !trust.is_empty();
    let bundle = if verified {
        open_verified(path, &map, &keys)?
    } else {
        Bundle::open_unverified(&map)
            .map_err(|e| Failure::from_lib(format!("reading bundle '{}'", path.display()), &e))?
    };
    let m = bundle.manifest();
    if json {
        let comps: Vec<String> = m
            .components()
            .iter()
            .map(|c| {
                let (bl, bs) = ver(c.baseline());
                let (tl, ts) = ver(c.target());
                let srcs: Vec<String> = c.sources().iter().map(|v| json_str(&v.sha256().to_string())).collect();
                format!(
                    "{{\"path\":{},\"kind\":\"{}\",\"mode\":{},\"baseline_len\":{bl},\"baseline_sha256\":{bs},\"target_len\":{tl},\"target_sha256\":{ts},\"delta_sources\":[{}],\"payload_len\":{}}}",
                    json_str(&c.path().to_string()),
                    c.kind(),
                    c.mode(),
                    srcs.join(","),
                    c.payload_len()
                )
            })
            .collect();
        println!(
            "{{\"label\":{},\"baseline\":{},\"sequence\":{},\"created\":{},\"id\":\"{}\",\"key_id\":\"{}\",\"signature_verified\":{verified},\"components\":[{}]}}",
            json_str(m.label()),
            json_str(m.baseline()),
            m.sequence(),
            m.created(),
            bundle.id(),
            hex(&bundle.key_id()),
            comps.join(",")
        );
    } else {
        println!("label:     {}", m.label());
        println!("baseline:  {}", m.baseline());
        println!("sequence:  {}", m.sequence());
        println!("created:   {}", m.created());
        println!("id:        {}", bundle.id());
        println!(
            "key id:    {}{}",
            hex(&bundle.key_id()),
            if verified {
                " (signature verified)"
            } else {
                " (NOT verified: pass --trust KEY)"
            }
        );
        for c in m.components() {
            let t = c
                .target()
                .map(|v| format!("{} bytes {}", v.len(), v.sha256()))
                .unwrap_or_else(|| "-".into());
            println!(
                "  {:<7} {:o} {} -> {} ({} payload bytes, {} source(s))",
                c.kind(),
                c.mode(),
                c.path(),
                t,
                c.payload_len(),
                c.sources().len()
            );
        }
    }
    Ok(())
}

fn install(a: InstallArgs) -> Result<(), Failure> {
    check_bundle(&a.bundle)?;
    let keys = trusted(&a.trust)?;
    check_root(&a.root)?;
    let map =
        MappedFile::open(&a.bundle).map_err(|e| check::read_failure("BUNDLE", &a.bundle, e))?;
    let bundle = open_verified(&a.bundle, &map, &keys)?;
    let mut inst = installer(&a.root);
    if let Some(b) = a.baseline {
        inst = inst.expect_baseline(b);
    }
    let r = inst.install(&bundle).map_err(|e| {
        Failure::from_lib(
            format!(
                "installing '{}' under '{}'",
                a.bundle.display(),
                a.root.root.display()
            ),
            &e,
        )
    })?;
    if r.already_done() {
        note(format_args!(
            "{} (sequence {}) is already installed",
            r.label(),
            r.sequence()
        ));
    } else {
        note(format_args!(
            "installed {} (sequence {}): {} file(s) changed",
            r.label(),
            r.sequence(),
            r.changed()
        ));
    }
    Ok(())
}

fn remove(a: RootArgs) -> Result<(), Failure> {
    check_root(&a)?;
    let r = installer(&a).remove().map_err(|e| {
        Failure::from_lib(
            format!("removing the bundle under '{}'", a.root.display()),
            &e,
        )
    })?;
    if r.already_done() {
        note(format_args!("nothing installed under {}", a.root.display()));
    } else {
        note(format_args!(
            "removed {} (sequence {}): {} file(s) back to the baseline",
            r.label(),
            r.sequence(),
            r.changed()
        ));
    }
    Ok(())
}

fn status(a: StatusArgs) -> Result<(), Failure> {
    check_root(&a.root)?;
    let s = installer(&a.root).status().map_err(|e| {
        Failure::from_lib(
            format!("reading the state under '{}'", a.root.root.display()),
            &e,
        )
    })?;
    if a.json {
        let comps: Vec<String> = s
            .components()
            .iter()
            .map(|(p, b, c)| {
                let (bl, bs) = ver(*b);
                let (cl, cs) = ver(*c);
                format!("{{\"path\":{},\"baseline_len\":{bl},\"baseline_sha256\":{bs},\"installed_len\":{cl},\"installed_sha256\":{cs}}}", json_str(p))
            })
            .collect();
        println!(
            "{{\"installed\":{},\"sequence\":{},\"id\":{},\"baseline\":{},\"highest_sequence\":{},\"recovery_pending\":{},\"components\":[{}]}}",
            s.installed_label().map(json_str).unwrap_or_else(|| "null".into()),
            s.installed_sequence().map(|v| v.to_string()).unwrap_or_else(|| "null".into()),
            s.installed_id().map(|d| json_str(&d.to_string())).unwrap_or_else(|| "null".into()),
            s.baseline().map(json_str).unwrap_or_else(|| "null".into()),
            s.highest_sequence(),
            s.recovery_pending(),
            comps.join(",")
        );
    } else {
        match s.installed_label() {
            Some(l) => println!(
                "installed: {l} (sequence {})",
                s.installed_sequence().unwrap_or(0)
            ),
            None => println!("installed: none (baseline)"),
        }
        println!("baseline:  {}", s.baseline().unwrap_or("unknown"));
        println!("highest sequence seen: {}", s.highest_sequence());
        if s.recovery_pending() {
            println!("an interrupted operation is pending: run 'deltaswap recover --root ROOT'");
        }
        for (p, _, c) in s.components() {
            println!(
                "  {p}: {}",
                c.map(|v| v.sha256().to_string())
                    .unwrap_or_else(|| "removed".into())
            );
        }
    }
    Ok(())
}

pub(super) fn cmd_recover_root(root: PathBuf, state_dir: Option<PathBuf>) -> Result<(), Failure> {
    let args = RootArgs {
        root: root.clone(),
        state_dir,
    };
    check_root(&args)?;
    let inst = installer(&args);
    let r = inst
        .recover()
        .map_err(|e| Failure::from_lib(format!("recovering '{}'", root.display()), &e))?;
    let what = match r {
        deltaswap::Recovery::Nothing => "nothing to recover",
        deltaswap::Recovery::RolledBack => {
            "interrupted operation undone: every component is at its old version"
        }
        deltaswap::Recovery::Completed => {
            "interrupted operation finished: every component is at its new version"
        }
        _ => "done",
    };
    note(format_args!("{}: {what}", root.display()));
    Ok(())
}
