//! `deltaswap keygen`, `bundle create|inspect`, `install`, `remove`,
//! `status` and `recover --root`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use deltaswap::{Bundle, BundleBuilder, Installer, MappedFile, PublicKey, SecretKey};

use super::{Command, Failure, AFTER_HELP};

/// Arguments of `deltaswap keygen`.
#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
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
    #[command(after_help = AFTER_HELP)]
    Create {
        /// The baseline tree.
        #[arg(long = "from")]
        from: PathBuf,
        /// The new tree.
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
        /// The secret key file.
        #[arg(long)]
        key: PathBuf,
        /// Also carry deltas from this tree's versions (repeatable).
        #[arg(long = "also-from")]
        also_from: Vec<PathBuf>,
        /// Creation time (default: $SOURCE_DATE_EPOCH, else now).
        #[arg(long)]
        created: Option<u64>,
        /// Output bundle.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Show a bundle's manifest. With --trust the signature is verified;
    /// without it the manifest is shown UNVERIFIED.
    #[command(after_help = AFTER_HELP)]
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
#[command(after_help = AFTER_HELP)]
pub(super) struct InstallArgs {
    #[command(flatten)]
    root: RootArgs,
    /// Trusted public key file (repeatable).
    #[arg(long, required = true)]
    trust: Vec<PathBuf>,
    /// Refuse bundles for any other baseline id.
    #[arg(long)]
    baseline: Option<String>,
    /// The bundle.
    bundle: PathBuf,
}

/// `--root` and `--state-dir`.
#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
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
#[command(after_help = AFTER_HELP)]
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

fn read_key32(path: &Path, what: &str) -> Result<[u8; 32], Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::io(format!("cannot read {what} '{}'", path.display()), e))?;
    let t = text.trim().as_bytes();
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
        return Err(Failure {
            code: super::EXIT_REJECTED,
            message: format!("{what} '{}' is not 64 hex digits", path.display()),
            causes: Vec::new(),
        });
    }
    Ok(out)
}

fn trusted(paths: &[PathBuf]) -> Result<Vec<PublicKey>, Failure> {
    paths
        .iter()
        .map(|p| {
            let b = read_key32(p, "public key")?;
            PublicKey::from_bytes(&b)
                .map_err(|e| Failure::from_lib(format!("public key '{}'", p.display()), &e))
        })
        .collect()
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
    let key =
        SecretKey::generate().map_err(|e| Failure::from_lib("generating a key".into(), &e))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&a.secret_key)
        .map_err(|e| Failure::io(format!("cannot create '{}'", a.secret_key.display()), e))?;
    writeln!(f, "{}", hex(&key.to_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(|e| Failure::io(format!("cannot write '{}'", a.secret_key.display()), e))?;
    std::fs::write(
        &a.public_key,
        format!("{}\n", hex(&key.public_key().to_bytes())),
    )
    .map_err(|e| Failure::io(format!("cannot write '{}'", a.public_key.display()), e))?;
    eprintln!("deltaswap: key id {}", key.public_key().key_id_hex());
    Ok(())
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
    let key = SecretKey::from_bytes(&read_key32(key, "secret key")?);
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
    let bytes = b
        .build(from, to, &key)
        .map_err(|e| Failure::from_lib("building the bundle".into(), &e))?;
    let tmp = output.with_extension("tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, output))
        .map_err(|e| Failure::io(format!("cannot write '{}'", output.display()), e))?;
    eprintln!(
        "deltaswap: wrote {} ({} bytes)",
        output.display(),
        bytes.len()
    );
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

fn inspect(path: &Path, trust: &[PathBuf], json: bool) -> Result<(), Failure> {
    let map = MappedFile::open(path)
        .map_err(|e| Failure::io(format!("cannot read BUNDLE '{}'", path.display()), e))?;
    let (keys, verified) = if trust.is_empty() {
        (Vec::new(), false)
    } else {
        (trusted(trust)?, true)
    };
    let bundle = if verified {
        Bundle::open(&map, &keys)
    } else {
        Bundle::open_unverified(&map)
    }
    .map_err(|e| Failure::from_lib(format!("reading bundle '{}'", path.display()), &e))?;
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
    let keys = trusted(&a.trust)?;
    let map = MappedFile::open(&a.bundle)
        .map_err(|e| Failure::io(format!("cannot read BUNDLE '{}'", a.bundle.display()), e))?;
    let bundle = Bundle::open(&map, &keys)
        .map_err(|e| Failure::from_lib(format!("verifying bundle '{}'", a.bundle.display()), &e))?;
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
        eprintln!(
            "deltaswap: {} (sequence {}) is already installed",
            r.label(),
            r.sequence()
        );
    } else {
        eprintln!(
            "deltaswap: installed {} (sequence {}): {} file(s) changed",
            r.label(),
            r.sequence(),
            r.changed()
        );
    }
    Ok(())
}

fn remove(a: RootArgs) -> Result<(), Failure> {
    let r = installer(&a).remove().map_err(|e| {
        Failure::from_lib(
            format!("removing the bundle under '{}'", a.root.display()),
            &e,
        )
    })?;
    if r.already_done() {
        eprintln!("deltaswap: nothing installed under {}", a.root.display());
    } else {
        eprintln!(
            "deltaswap: removed {} (sequence {}): {} file(s) back to the baseline",
            r.label(),
            r.sequence(),
            r.changed()
        );
    }
    Ok(())
}

fn status(a: StatusArgs) -> Result<(), Failure> {
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
    let inst = installer(&RootArgs {
        root: root.clone(),
        state_dir,
    });
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
    eprintln!("deltaswap: {}: {what}", root.display());
    Ok(())
}
