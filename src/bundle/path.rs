//! Root-relative component paths that cannot escape the root.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use crate::error::Error;

/// Longest path a bundle may carry, in bytes (Linux `PATH_MAX` is 4096).
pub(crate) const MAX_PATH_LEN: usize = 4096;
/// Longest single component (Linux `NAME_MAX`).
const MAX_NAME_LEN: usize = 255;
/// Names starting with this are the installer's own (state directory,
/// staging files) and may not be bundle components.
pub(crate) const RESERVED_PREFIX: &[u8] = b".deltaswap";

/// A path inside the install root, as a bundle names a component: relative,
/// `/`-separated, with no empty, `.` or `..` component, no NUL byte, no
/// leading `/`, no component starting with `.deltaswap` (reserved for the
/// installer), at most 4096 bytes. It therefore cannot name anything outside
/// the root; symbolic links met while resolving it at install time are
/// refused, not followed.
///
/// # Examples
///
/// ```
/// use deltaswap::BundlePath;
/// let p = BundlePath::new(b"usr/lib/libwebkit.so.1")?;
/// assert_eq!(p.to_string(), "usr/lib/libwebkit.so.1");
/// assert!(BundlePath::new(b"../etc/passwd").is_err());
/// assert!(BundlePath::new(b"/etc/passwd").is_err());
/// assert!(BundlePath::new(b"a//b").is_err());
/// # Ok::<(), deltaswap::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundlePath(pub(crate) Vec<u8>);

impl BundlePath {
    /// Parses and checks a path.
    ///
    /// # Errors
    ///
    /// [`Error::UnsafePath`] naming the reason.
    pub fn new(bytes: &[u8]) -> Result<BundlePath, Error> {
        let unsafe_path = |reason| Error::UnsafePath {
            path: String::from_utf8_lossy(bytes).into_owned(),
            reason,
        };
        if bytes.is_empty() {
            return Err(unsafe_path("empty path"));
        }
        if bytes.len() > MAX_PATH_LEN {
            return Err(unsafe_path("longer than 4096 bytes"));
        }
        if bytes.contains(&0) {
            return Err(unsafe_path("contains a NUL byte"));
        }
        if bytes.starts_with(b"/") {
            return Err(unsafe_path("absolute path"));
        }
        for c in bytes.split(|&b| b == b'/') {
            match c {
                b"" => return Err(unsafe_path("empty component")),
                b"." => return Err(unsafe_path("`.` component")),
                b".." => return Err(unsafe_path("`..` component")),
                _ if c.len() > MAX_NAME_LEN => {
                    return Err(unsafe_path("component longer than 255 bytes"))
                }
                _ if c.starts_with(RESERVED_PREFIX) => {
                    return Err(unsafe_path("names an entry reserved for the installer"))
                }
                _ => {}
            }
        }
        Ok(BundlePath(bytes.to_vec()))
    }

    /// The path's bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = deltaswap::BundlePath::new(b"lib/a.so")?;
    /// assert_eq!(p.as_bytes(), b"lib/a.so");
    /// # Ok::<(), deltaswap::Error>(())
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The directory components (all but the last).
    pub(crate) fn parents(&self) -> impl Iterator<Item = &OsStr> {
        let mut parts: Vec<&[u8]> = self.0.split(|&b| b == b'/').collect();
        parts.pop();
        parts.into_iter().map(OsStr::from_bytes)
    }

    /// The last component.
    pub(crate) fn file_name(&self) -> &OsStr {
        OsStr::from_bytes(self.0.rsplit(|&b| b == b'/').next().unwrap_or_default())
    }

    /// The path lowercased in ASCII, to detect names that collide on
    /// case-insensitive file systems.
    pub(crate) fn folded(&self) -> Vec<u8> {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundlePath({:?})", String::from_utf8_lossy(&self.0))
    }
}
