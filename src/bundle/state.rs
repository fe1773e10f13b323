//! The install state and the intent journal, as stored in the state directory.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::hash::Sha256Digest;

use super::path::BundlePath;
use super::wire::{put_version, Cursor, FileVersion};

const STATE_MAGIC: [u8; 8] = *b"DSSTATE1";
const JOURNAL_MAGIC: [u8; 8] = *b"DSJRNL01";

/// One component touched by the installed bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) path: BundlePath,
    /// The baseline version (`None`: absent at the baseline). When present,
    /// a copy is kept in the state directory's `base/`.
    pub(crate) base: Option<FileVersion>,
    /// The installed version (`None`: removed by the bundle).
    pub(crate) cur: Option<FileVersion>,
}

/// The installed bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Installed {
    pub(crate) id: Sha256Digest,
    pub(crate) sequence: u64,
    pub(crate) label: String,
    pub(crate) entries: Vec<Entry>,
}

/// Everything the installer remembers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct State {
    /// Highest bundle sequence number ever installed.
    pub(crate) highest: u64,
    /// The system's baseline id, once known (empty: unknown).
    pub(crate) baseline: String,
    pub(crate) installed: Option<Installed>,
}

/// What to do to one target at commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing changes at the target.
    Keep,
    /// Rename the staged file over the target.
    Replace,
    /// Unlink the target.
    Delete,
}

/// One target of a journalled operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Op {
    pub(crate) path: BundlePath,
    pub(crate) stage: OsString,
    pub(crate) action: Action,
    /// The baseline copy was made by this operation (undo removes it).
    pub(crate) base_created: bool,
}

/// The intent journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Journal {
    /// false: staging (undo on recovery); true: committed (finish on recovery).
    pub(crate) committed: bool,
    /// The bundle being installed (all zeros for a removal).
    pub(crate) bundle: Sha256Digest,
    pub(crate) new_state: State,
    pub(crate) ops: Vec<Op>,
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u16::try_from(b.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(b.get(..usize::from(u16::MAX)).unwrap_or(b));
}

fn put_opt(out: &mut Vec<u8>, v: &Option<FileVersion>) {
    match v {
        Some(v) => {
            out.push(1);
            put_version(out, v);
        }
        None => out.push(0),
    }
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let d = Sha256Digest::of(&out);
    out.extend_from_slice(d.as_bytes());
    out
}

/// Checks and strips the SHA-256 trailer.
fn unseal(data: &[u8]) -> Option<&[u8]> {
    let body_len = data.len().checked_sub(32)?;
    let (body, trailer) = data.split_at_checked(body_len)?;
    (Sha256Digest::of(body).as_bytes() == trailer).then_some(body)
}

impl State {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = STATE_MAGIC.to_vec();
        self.encode_body(&mut out);
        seal(out)
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.highest.to_le_bytes());
        put_bytes16(out, self.baseline.as_bytes());
        match &self.installed {
            None => out.push(0),
            Some(i) => {
                out.push(1);
                out.extend_from_slice(i.id.as_bytes());
                out.extend_from_slice(&i.sequence.to_le_bytes());
                put_bytes16(out, i.label.as_bytes());
                out.extend_from_slice(
                    &u32::try_from(i.entries.len())
                        .unwrap_or(u32::MAX)
                        .to_le_bytes(),
                );
                for e in &i.entries {
                    put_bytes16(out, e.path.as_bytes());
                    put_opt(out, &e.base);
                    put_opt(out, &e.cur);
                }
            }
        }
    }

    pub(crate) fn decode(data: &[u8]) -> Option<State> {
        let body = unseal(data)?;
        let mut r = Cursor::new(body, 0);
        if r.bytes::<8>("magic").ok()? != STATE_MAGIC {
            return None;
        }
        let s = State::decode_body(&mut r)?;
        r.finish("state").ok()?;
        Some(s)
    }

    fn decode_body(r: &mut Cursor<'_>) -> Option<State> {
        let highest = r.u64("highest").ok()?;
        let baseline = text16(r)?;
        let installed = match r.u8("installed").ok()? {
            0 => None,
            1 => {
                let id = Sha256Digest(r.bytes::<32>("id").ok()?);
                let sequence = r.u64("sequence").ok()?;
                let label = text16(r)?;
                let n = r.u32("count").ok()?;
                let mut entries = Vec::new();
                for _ in 0..n {
                    let path = BundlePath::new(bytes16(r)?).ok()?;
                    let base = opt(r)?;
                    let cur = opt(r)?;
                    entries.push(Entry { path, base, cur });
                }
                Some(Installed {
                    id,
                    sequence,
                    label,
                    entries,
                })
            }
            _ => return None,
        };
        Some(State {
            highest,
            baseline,
            installed,
        })
    }
}

fn bytes16<'a>(r: &mut Cursor<'a>) -> Option<&'a [u8]> {
    let n = usize::from(r.u16("length").ok()?);
    r.take(n, "bytes").ok()
}

fn text16(r: &mut Cursor<'_>) -> Option<String> {
    String::from_utf8(bytes16(r)?.to_vec()).ok()
}

fn opt(r: &mut Cursor<'_>) -> Option<Option<FileVersion>> {
    match r.u8("flag").ok()? {
        0 => Some(None),
        1 => Some(Some(r.version("version").ok()?)),
        _ => None,
    }
}

impl Journal {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = JOURNAL_MAGIC.to_vec();
        out.push(u8::from(self.committed));
        out.extend_from_slice(self.bundle.as_bytes());
        self.new_state.encode_body(&mut out);
        out.extend_from_slice(
            &u32::try_from(self.ops.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for op in &self.ops {
            put_bytes16(&mut out, op.path.as_bytes());
            put_bytes16(&mut out, op.stage.as_bytes());
            out.push(match op.action {
                Action::Keep => 0,
                Action::Replace => 1,
                Action::Delete => 2,
            });
            out.push(u8::from(op.base_created));
        }
        seal(out)
    }

    pub(crate) fn decode(data: &[u8]) -> Option<Journal> {
        let body = unseal(data)?;
        let mut r = Cursor::new(body, 0);
        if r.bytes::<8>("magic").ok()? != JOURNAL_MAGIC {
            return None;
        }
        let committed = match r.u8("phase").ok()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let bundle = Sha256Digest(r.bytes::<32>("bundle").ok()?);
        let new_state = State::decode_body(&mut r)?;
        let n = r.u32("ops").ok()?;
        let mut ops = Vec::new();
        for i in 0..n {
            let path = BundlePath::new(bytes16(&mut r)?).ok()?;
            let stage = OsString::from_vec(bytes16(&mut r)?.to_vec());
            // Only the name the installer gives op `i` (one path component
            // beside the target): any other name, such as one with a `/`,
            // would reach outside the target's directory.
            let index = usize::try_from(i).ok()?;
            if !stage.is_empty() && stage != super::install::stage_name(index, path.file_name()) {
                return None;
            }
            let action = match r.u8("action").ok()? {
                0 => Action::Keep,
                1 => Action::Replace,
                2 => Action::Delete,
                _ => return None,
            };
            // The installer stages a file exactly for a replacement.
            if (action == Action::Replace) == stage.is_empty() {
                return None;
            }
            let base_created = r.u8("base").ok()? == 1;
            ops.push(Op {
                path,
                stage,
                action,
                base_created,
            });
        }
        r.finish("journal").ok()?;
        Some(Journal {
            committed,
            bundle,
            new_state,
            ops,
        })
    }
}
