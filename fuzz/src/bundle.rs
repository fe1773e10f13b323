//! Bundles for the `bundle_open` target and the bundle catalogue tests: an
//! independent writer and reader of "Bundle format v1", written from
//! docs/FORMAT.md alone (not from `src/bundle/`), and the check that
//! `Bundle::open` / `open_unverified` agree with that reader.
//!
//! Shared (through `#[path]`) by the main crate's `tests/malformed_catalogue.rs`,
//! which builds the catalogue's bundle vectors with [`encode`] and [`sign`].

use std::sync::OnceLock;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Seed of the fuzzing-only signing key. Its public key is trusted by the
/// `bundle_open` target and by the catalogue tests, and by nothing else.
pub const FUZZ_KEY_SEED: [u8; 32] = *b"deltaswap fuzzing key, test only";
/// Seed of a second key that is never trusted.
pub const OTHER_KEY_SEED: [u8; 32] = *b"deltaswap untrusted key, test on";

const MAGIC: &[u8; 8] = b"DSBUNDLE";
const CONTEXT: &[u8] = b"deltaswap bundle v1\0";

/// The fuzzing key.
pub fn fuzz_key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::from_bytes(&FUZZ_KEY_SEED))
}

/// The never-trusted key.
pub fn other_key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::from_bytes(&OTHER_KEY_SEED))
}

/// The fuzzing key's public half, as the library takes it.
pub fn trusted() -> &'static deltaswap::PublicKey {
    static K: OnceLock<deltaswap::PublicKey> = OnceLock::new();
    K.get_or_init(|| {
        deltaswap::PublicKey::from_bytes(fuzz_key().verifying_key().as_bytes())
            .expect("a valid ed25519 point")
    })
}

/// First 8 bytes of SHA-256 of a public key.
pub fn key_id(vk: &VerifyingKey) -> [u8; 8] {
    let d = Sha256::digest(vk.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    id
}

/// Length and SHA-256 of a file version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub len: u64,
    pub sha256: [u8; 32],
}

impl Version {
    pub fn of(data: &[u8]) -> Version {
        Version {
            len: data.len() as u64,
            sha256: Sha256::digest(data).into(),
        }
    }
}

/// One payload entry of a component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadEntry {
    pub from: Version,
    pub len: u64,
    pub sha256: [u8; 32],
}

/// One component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comp {
    pub path: Vec<u8>,
    /// 1 patch, 2 add, 3 remove (anything else is written as is).
    pub kind: u8,
    pub mode: u32,
    /// Written for kinds 1 and 3 (and for any unknown kind, so that the
    /// reader meets a well-formed tail after the kind byte).
    pub baseline: Version,
    /// Written for kinds 1 and 2 (and unknown kinds).
    pub target: Version,
    pub payloads: Vec<PayloadEntry>,
}

/// A manifest, plus the fields a writer could get wrong on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub label: Vec<u8>,
    pub baseline: Vec<u8>,
    pub sequence: u64,
    pub created: u64,
    pub components: Vec<Comp>,
}

fn put_text(out: &mut Vec<u8>, s: &[u8]) {
    // A length over 255 is written truncated to its low byte: the reader must
    // then find the fields misaligned, which is a refusal like any other.
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

fn put_version(out: &mut Vec<u8>, v: &Version) {
    out.extend_from_slice(&v.len.to_le_bytes());
    out.extend_from_slice(&v.sha256);
}

/// Encodes a manifest (component count `components.len() + count_skew`).
pub fn encode_manifest(m: &Manifest, count_skew: i64) -> Vec<u8> {
    let mut out = Vec::new();
    put_text(&mut out, &m.label);
    put_text(&mut out, &m.baseline);
    out.extend_from_slice(&m.sequence.to_le_bytes());
    out.extend_from_slice(&m.created.to_le_bytes());
    let count = (m.components.len() as i64).wrapping_add(count_skew) as u32;
    out.extend_from_slice(&count.to_le_bytes());
    for c in &m.components {
        out.extend_from_slice(&(c.path.len() as u16).to_le_bytes());
        out.extend_from_slice(&c.path);
        out.push(c.kind);
        out.extend_from_slice(&c.mode.to_le_bytes());
        if c.kind != 2 {
            put_version(&mut out, &c.baseline);
        }
        if c.kind != 3 {
            put_version(&mut out, &c.target);
        }
        out.push(c.payloads.len() as u8);
        for p in &c.payloads {
            put_version(&mut out, &p.from);
            out.extend_from_slice(&p.len.to_le_bytes());
            out.extend_from_slice(&p.sha256);
        }
    }
    out
}

/// The 32-byte header for a manifest of `manifest_len` bytes.
pub fn header(manifest_len: u32, payloads_len: u64, key_id: [u8; 8]) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(MAGIC);
    h[8] = 1;
    h[12..16].copy_from_slice(&manifest_len.to_le_bytes());
    h[16..24].copy_from_slice(&payloads_len.to_le_bytes());
    h[24..32].copy_from_slice(&key_id);
    h
}

/// Signature over `context || header || manifest`.
pub fn sign(key: &SigningKey, header: &[u8], manifest: &[u8]) -> [u8; 64] {
    let mut msg = CONTEXT.to_vec();
    msg.extend_from_slice(header);
    msg.extend_from_slice(manifest);
    key.sign(&msg).to_bytes()
}

/// A whole bundle: header, manifest, signature by `key`, payloads.
pub fn encode(m: &Manifest, payloads: &[Vec<u8>], key: &SigningKey) -> Vec<u8> {
    let manifest = encode_manifest(m, 0);
    let total: u64 = payloads.iter().map(|p| p.len() as u64).sum();
    let h = header(manifest.len() as u32, total, key_id(&key.verifying_key()));
    let sig = sign(key, &h, &manifest);
    let mut out = h.to_vec();
    out.extend_from_slice(&manifest);
    out.extend_from_slice(&sig);
    for p in payloads {
        out.extend_from_slice(p);
    }
    out
}

/// Why the reference reader refused a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed header, lengths, manifest fields or payload section.
    Format,
    /// A declared length over the default `BundleLimits`.
    Limit,
    UntrustedKey,
    BadSignature,
    UnsafePath,
    DuplicatePath,
    PayloadMismatch,
}

struct Rd<'a> {
    d: &'a [u8],
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        if self.d.len() < n {
            return Err(Refusal::Format);
        }
        let (a, b) = self.d.split_at(n);
        self.d = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Refusal> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Refusal> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, Refusal> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, Refusal> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn version(&mut self) -> Result<Version, Refusal> {
        let len = self.u64()?;
        let sha256 = self.take(32)?.try_into().unwrap();
        Ok(Version { len, sha256 })
    }
    fn text(&mut self) -> Result<Vec<u8>, Refusal> {
        let n = self.u8()? as usize;
        let s = self.take(n)?;
        if n == 0 || std::str::from_utf8(s).is_err() {
            return Err(Refusal::Format);
        }
        Ok(s.to_vec())
    }
}

/// The path rules of docs/FORMAT.md.
pub fn path_ok(p: &[u8]) -> bool {
    !p.is_empty()
        && p.len() <= 4096
        && !p.contains(&0)
        && p[0] != b'/'
        && p.split(|&b| b == b'/').all(|c| {
            !c.is_empty()
                && c != b"."
                && c != b".."
                && c.len() <= 255
                && !c.starts_with(b".deltaswap")
        })
}

fn parse_manifest(d: &[u8]) -> Result<Manifest, Refusal> {
    let mut r = Rd { d };
    let label = r.text()?;
    let baseline = r.text()?;
    let sequence = r.u64()?;
    let created = r.u64()?;
    let count = r.u32()?;
    if count > 100_000 {
        return Err(Refusal::Limit);
    }
    let empty = Version::of(b"");
    let mut components = Vec::new();
    let mut folded = std::collections::BTreeSet::new();
    for _ in 0..count {
        let n = r.u16()? as usize;
        if n > 4096 {
            return Err(Refusal::Format);
        }
        let path = r.take(n)?.to_vec();
        if !path_ok(&path) {
            return Err(Refusal::UnsafePath);
        }
        if !folded.insert(path.to_ascii_lowercase()) {
            return Err(Refusal::DuplicatePath);
        }
        let kind = r.u8()?;
        if !(1..=3).contains(&kind) {
            return Err(Refusal::Format);
        }
        let mode = r.u32()?;
        if mode & !0o7777 != 0 || (kind == 3 && mode != 0) {
            return Err(Refusal::Format);
        }
        let base = if kind != 2 { r.version()? } else { empty };
        let target = if kind != 3 { r.version()? } else { empty };
        let np = r.u8()?;
        let count_ok = match kind {
            1 => (1..=8).contains(&np),
            2 => np == 1,
            _ => np == 0,
        };
        if !count_ok {
            return Err(Refusal::Format);
        }
        let mut payloads: Vec<PayloadEntry> = Vec::new();
        for _ in 0..np {
            let from = r.version()?;
            let len = r.u64()?;
            let sha256 = r.take(32)?.try_into().unwrap();
            if payloads.iter().any(|p| p.from == from) || (kind == 2 && from != empty) {
                return Err(Refusal::Format);
            }
            payloads.push(PayloadEntry { from, len, sha256 });
        }
        components.push(Comp {
            path,
            kind,
            mode,
            baseline: base,
            target,
            payloads,
        });
    }
    if !r.d.is_empty() {
        return Err(Refusal::Format);
    }
    // No component may be a parent directory of another (compared without
    // ASCII case, like duplicates).
    for c in &components {
        let p = c.path.to_ascii_lowercase();
        for (i, &b) in p.iter().enumerate() {
            if b == b'/' && folded.contains(&p[..i]) {
                return Err(Refusal::UnsafePath);
            }
        }
    }
    Ok(Manifest {
        label,
        baseline,
        sequence,
        created,
        components,
    })
}

/// Reads a bundle as docs/FORMAT.md describes it. `trusted: None` skips the
/// key and signature checks (as `Bundle::open_unverified`).
pub fn read(b: &[u8], trusted: Option<&VerifyingKey>) -> Result<Manifest, Refusal> {
    let mut r = Rd { d: b };
    let h = r.take(32)?;
    if &h[..8] != MAGIC || h[8] != 1 || h[9..12] != [0, 0, 0] {
        return Err(Refusal::Format);
    }
    let manifest_len = u32::from_le_bytes(h[12..16].try_into().unwrap()) as u64;
    let payloads_len = u64::from_le_bytes(h[16..24].try_into().unwrap());
    if manifest_len > 16 << 20 || payloads_len > 16 << 30 {
        return Err(Refusal::Limit);
    }
    if (b.len() as u128) != 96 + manifest_len as u128 + payloads_len as u128 {
        return Err(Refusal::Format);
    }
    let manifest = &b[32..32 + manifest_len as usize];
    let sig = &b[32 + manifest_len as usize..96 + manifest_len as usize];
    if let Some(vk) = trusted {
        if h[24..32] != key_id(vk) {
            return Err(Refusal::UntrustedKey);
        }
        let mut msg = CONTEXT.to_vec();
        msg.extend_from_slice(h);
        msg.extend_from_slice(manifest);
        let sig = ed25519_dalek::Signature::from_bytes(sig.try_into().unwrap());
        if vk.verify_strict(&msg, &sig).is_err() {
            return Err(Refusal::BadSignature);
        }
    }
    let m = parse_manifest(manifest)?;
    let sum = m
        .components
        .iter()
        .flat_map(|c| &c.payloads)
        .try_fold(0u64, |a, p| a.checked_add(p.len))
        .ok_or(Refusal::Format)?;
    if sum != payloads_len {
        return Err(Refusal::Format);
    }
    let mut at = 96 + manifest_len as usize;
    for p in m.components.iter().flat_map(|c| &c.payloads) {
        let body = &b[at..at + p.len as usize];
        if <[u8; 32]>::from(Sha256::digest(body)) != p.sha256 {
            return Err(Refusal::PayloadMismatch);
        }
        at += p.len as usize;
    }
    Ok(m)
}

/// The refusal class of a library error, if it is a bundle refusal at all.
pub fn class_of(e: &deltaswap::Error) -> Option<Refusal> {
    use deltaswap::Error as E;
    Some(match e {
        E::BundleFormat(_) => Refusal::Format,
        E::LimitExceeded { .. } => Refusal::Limit,
        E::UntrustedKey { .. } => Refusal::UntrustedKey,
        E::BadSignature { .. } => Refusal::BadSignature,
        E::UnsafePath { .. } => Refusal::UnsafePath,
        E::DuplicatePath { .. } => Refusal::DuplicatePath,
        E::PayloadMismatch { .. } => Refusal::PayloadMismatch,
        _ => return None,
    })
}

/// Whether the library's manifest says what the reference reader read:
/// every field the public API exposes (payload lengths only as a sum per
/// component; the payload hashes were checked by both readers).
pub fn same(lib: &deltaswap::Manifest, m: &Manifest) -> bool {
    let v = |v: Option<deltaswap::FileVersion>| {
        v.map(|v| Version {
            len: v.len(),
            sha256: *v.sha256().as_bytes(),
        })
    };
    lib.label().as_bytes() == m.label.as_slice()
        && lib.baseline().as_bytes() == m.baseline.as_slice()
        && lib.sequence() == m.sequence
        && lib.created() == m.created
        && lib.components().len() == m.components.len()
        && lib.components().iter().zip(&m.components).all(|(l, c)| {
            let kind = match l.kind() {
                deltaswap::ComponentKind::Patch => 1,
                deltaswap::ComponentKind::Add => 2,
                _ => 3,
            };
            let sources: Vec<Version> = match c.kind {
                1 => c.payloads.iter().map(|p| p.from).collect(),
                _ => Vec::new(),
            };
            l.path().as_bytes() == c.path.as_slice()
                && kind == c.kind
                && l.mode() == c.mode
                && v(l.baseline()) == (c.kind != 2).then_some(c.baseline)
                && v(l.target()) == (c.kind != 3).then_some(c.target)
                && l.sources()
                    .into_iter()
                    .map(|s| v(Some(s)).unwrap())
                    .collect::<Vec<_>>()
                    == sources
                && l.payload_len() == c.payloads.iter().map(|p| p.len).sum::<u64>()
        })
}
