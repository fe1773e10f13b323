//! Building a bundle from a baseline tree and a new tree.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::diff::DiffOptions;
use crate::error::Error;

use super::keys::SecretKey;
use super::path::{BundlePath, RESERVED_PREFIX};
use super::wire::{
    assemble, Component, ComponentKind, FileVersion, Manifest, Payload, MAX_SOURCES,
};

/// Builds a signed bundle from two directory trees: files that changed get a
/// delta, added files their full (compressed) content, removed files a
/// removal; unchanged files are left out. Work is spread over threads, and the
/// bytes depend only on the inputs (trees, label, baseline, sequence, creation
/// time, key), never on the thread count.
///
/// # Examples
///
/// ```
/// # let old = tempfile::tempdir()?; let new = tempfile::tempdir()?;
/// std::fs::write(old.path().join("libwebkit.so"), b"webkit 26.3")?;
/// std::fs::write(new.path().join("libwebkit.so"), b"webkit 26.3 + fix")?;
/// let key = deltaswap::SecretKey::generate()?;
/// let builder = deltaswap::BundleBuilder::new("26.3 (a)", "26.3", 1).created(0);
/// let a = builder.build(old.path(), new.path(), &key)?;
/// assert_eq!(a, builder.build(old.path(), new.path(), &key)?); // deterministic
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct BundleBuilder {
    label: String,
    baseline: String,
    sequence: u64,
    created: u64,
    also_from: Vec<PathBuf>,
}

/// A component and its payload blobs.
type Built = (Component, Vec<Vec<u8>>);

/// One regular file found in a tree.
struct Entry {
    data: Vec<u8>,
    mode: u32,
}

impl BundleBuilder {
    /// A builder for bundle `label` (e.g. "26.3 (a)") against baseline id
    /// `baseline` (e.g. "26.3") with sequence number `sequence`. The creation
    /// time defaults to 0; set it with [`BundleBuilder::created`].
    pub fn new(
        label: impl Into<String>,
        baseline: impl Into<String>,
        sequence: u64,
    ) -> BundleBuilder {
        BundleBuilder {
            label: label.into(),
            baseline: baseline.into(),
            sequence,
            created: 0,
            also_from: Vec::new(),
        }
    }

    /// Sets the creation time recorded in the manifest (seconds since the epoch).
    pub fn created(mut self, secs: u64) -> BundleBuilder {
        self.created = secs;
        self
    }

    /// Also carries, for every file of the baseline that `tree` (for example
    /// the previous patch level's tree) has at another version than the new
    /// tree, a delta from that version, so that devices whose installed file
    /// is that version can patch it directly, with or without the installer's
    /// baseline copies (a device freshly imaged at the earlier level). This
    /// includes files the new tree has at their baseline version (an earlier
    /// change that is pulled): such a component's baseline and target are
    /// equal and it carries only deltas from earlier versions. A file `tree`
    /// lacks gets a delta from the empty file, applied where the file is
    /// absent. The installer picks the delta by the installed file's hash.
    /// Give every earlier level devices may be at (not only the last one):
    /// a level not given is only reachable through the installer's baseline
    /// copies.
    ///
    /// # Examples
    ///
    /// ```
    /// # let base = tempfile::tempdir()?; let a = tempfile::tempdir()?; let b = tempfile::tempdir()?;
    /// std::fs::write(base.path().join("libjsc.so"), b"jsc 26.3")?;
    /// std::fs::write(a.path().join("libjsc.so"), b"jsc 26.3 (a)")?;
    /// std::fs::write(b.path().join("libjsc.so"), b"jsc 26.3 (b)")?;
    /// let key = deltaswap::SecretKey::generate()?;
    /// let bytes = deltaswap::BundleBuilder::new("26.3 (b)", "26.3", 2)
    ///     .also_from(a.path())
    ///     .build(base.path(), b.path(), &key)?;
    /// let bundle = deltaswap::Bundle::open(bytes, &[key.public_key()])?;
    /// assert_eq!(bundle.manifest().components()[0].sources().len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn also_from(mut self, tree: impl Into<PathBuf>) -> BundleBuilder {
        self.also_from.push(tree.into());
        self
    }

    /// Builds and signs the bundle.
    ///
    /// # Errors
    ///
    /// [`Error::File`] for unreadable trees, [`Error::Symlink`] for symbolic
    /// links in a tree, [`Error::UnsafePath`] for names a bundle cannot carry,
    /// [`Error::LimitExceeded`] for an empty or over-long label or baseline id.
    pub fn build(
        &self,
        old_root: &Path,
        new_root: &Path,
        key: &SecretKey,
    ) -> Result<Vec<u8>, Error> {
        let old = scan(old_root)?;
        let new = scan(new_root)?;
        let extra = self
            .also_from
            .iter()
            .map(|t| scan(t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut paths: Vec<&Vec<u8>> = old.keys().chain(new.keys()).collect();
        paths.sort();
        paths.dedup();
        let built: Vec<Option<Built>> = paths
            .par_iter()
            .map(|p| self.component(p, old.get(*p), new.get(*p), &extra))
            .collect::<Result<_, Error>>()?;
        let mut components = Vec::new();
        let mut blobs = Vec::new();
        let mut offset = 0u64;
        for (mut c, bs) in built.into_iter().flatten() {
            for (pl, b) in c.payloads.iter_mut().zip(&bs) {
                pl.offset = offset;
                offset = offset.saturating_add(b.len() as u64);
            }
            components.push(c);
            blobs.extend(bs);
        }
        super::wire::check_component_paths(&components)?;
        let m = Manifest {
            label: self.label.clone(),
            baseline: self.baseline.clone(),
            sequence: self.sequence,
            created: self.created,
            components,
        };
        let refs: Vec<&[u8]> = blobs.iter().map(|b| b.as_slice()).collect();
        assemble(&m, &refs, key)
    }

    fn component(
        &self,
        path: &[u8],
        old: Option<&Entry>,
        new: Option<&Entry>,
        extra: &[BTreeMap<Vec<u8>, Entry>],
    ) -> Result<Option<Built>, Error> {
        let path = BundlePath::new(path)?;
        let opts = DiffOptions::new();
        let payload = |from: &[u8], blob: &[u8]| Payload {
            from: FileVersion::of(from),
            offset: 0,
            len: blob.len() as u64,
            sha256: crate::hash::Sha256Digest::of(blob),
        };
        Ok(match (old, new) {
            (Some(o), Some(n)) => {
                let mut blobs = Vec::new();
                let mut payloads = Vec::new();
                if o.data != n.data || o.mode != n.mode {
                    let b = opts.diff(&o.data, &n.data)?;
                    payloads.push(payload(&o.data, &b));
                    blobs.push(b);
                }
                for tree in extra {
                    // A file the earlier tree lacks gets a delta from the
                    // empty file (the installer applies it to an absent one).
                    let e = tree.get(path.as_bytes()).map_or(&[][..], |e| &e.data[..]);
                    let v = FileVersion::of(e);
                    if e != n.data
                        && e != o.data
                        && payloads.iter().all(|p| p.from != v)
                        && payloads.len() < usize::from(MAX_SOURCES)
                    {
                        let b = opts.diff(e, &n.data)?;
                        payloads.push(payload(e, &b));
                        blobs.push(b);
                    }
                }
                if payloads.is_empty() {
                    // Unchanged since the baseline, and at the baseline in
                    // every earlier tree: nothing to carry.
                    return Ok(None);
                }
                Some((
                    Component {
                        path,
                        kind: ComponentKind::Patch,
                        mode: n.mode,
                        baseline: Some(FileVersion::of(&o.data)),
                        target: Some(FileVersion::of(&n.data)),
                        payloads,
                    },
                    blobs,
                ))
            }
            (None, Some(n)) => {
                let blob = opts.diff(b"", &n.data)?;
                Some((
                    Component {
                        path,
                        kind: ComponentKind::Add,
                        mode: n.mode,
                        baseline: None,
                        target: Some(FileVersion::of(&n.data)),
                        payloads: vec![payload(b"", &blob)],
                    },
                    vec![blob],
                ))
            }
            (Some(o), None) => Some((
                Component {
                    path,
                    kind: ComponentKind::Remove,
                    mode: 0,
                    baseline: Some(FileVersion::of(&o.data)),
                    target: None,
                    payloads: Vec::new(),
                },
                Vec::new(),
            )),
            (None, None) => None,
        })
    }
}

/// Every regular file under `root`, by root-relative path. The installer's
/// own state directory (`.deltaswap*`) is skipped.
fn scan(root: &Path) -> Result<BTreeMap<Vec<u8>, Entry>, Error> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(Error::file(&dir, "listing the directory"))?;
        for ent in rd {
            let ent = ent.map_err(Error::file(&dir, "listing the directory"))?;
            let name = ent.file_name();
            if name.as_bytes().starts_with(RESERVED_PREFIX) {
                continue;
            }
            let path = ent.path();
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(name.as_bytes());
            let md = std::fs::symlink_metadata(&path)
                .map_err(Error::file(&path, "examining the file"))?;
            let ft = md.file_type();
            if ft.is_symlink() {
                return Err(Error::Symlink { path });
            } else if ft.is_dir() {
                stack.push((path, r));
            } else if ft.is_file() {
                let data = std::fs::read(&path).map_err(Error::file(&path, "reading the file"))?;
                out.insert(
                    r,
                    Entry {
                        data,
                        mode: md.permissions().mode() & 0o7777,
                    },
                );
            } else {
                return Err(Error::NotRegularFile {
                    path,
                    kind: "not a regular file",
                });
            }
        }
    }
    Ok(out)
}
