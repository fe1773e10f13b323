//! Ed25519 signing and verifying keys for bundles.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::error::Error;
use crate::hash::Sha256Digest;

/// A bundle signing key (ed25519 secret key). Keep it off the devices.
///
/// # Examples
///
/// ```
/// let key = deltaswap::SecretKey::generate()?;
/// let public = key.public_key();
/// let again = deltaswap::SecretKey::from_bytes(&key.to_bytes());
/// assert_eq!(again.public_key(), public);
/// # Ok::<(), deltaswap::Error>(())
/// ```
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the random source fails.
    pub fn generate() -> Result<SecretKey, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Io {
            context: "reading the system random source",
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// The key from its 32 secret bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(bytes))
    }

    /// The 32 secret bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key, which devices trust.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public_key().key_id_hex())
    }
}

/// A trusted bundle verifying key (ed25519 public key).
///
/// # Examples
///
/// ```
/// let public = deltaswap::SecretKey::generate()?.public_key();
/// let parsed = deltaswap::PublicKey::from_bytes(&public.to_bytes())?;
/// assert_eq!(parsed, public);
/// assert_eq!(parsed.key_id_hex().len(), 16);
/// # Ok::<(), deltaswap::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The key from its 32 bytes.
    ///
    /// # Errors
    ///
    /// [`Error::UntrustedKey`] if the bytes are not a valid or are a weak
    /// (small-order) ed25519 point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, Error> {
        match VerifyingKey::from_bytes(bytes) {
            Ok(k) if !k.is_weak() => Ok(PublicKey(k)),
            _ => Err(Error::UntrustedKey {
                key_id: hex(&key_id_of(bytes)),
            }),
        }
    }

    /// The 32 public bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The key id bundles carry: the first 8 bytes of SHA-256 of the key.
    pub fn key_id(&self) -> [u8; 8] {
        key_id_of(self.0.as_bytes())
    }

    /// [`PublicKey::key_id`] in hex.
    pub fn key_id_hex(&self) -> String {
        hex(&self.key_id())
    }

    pub(crate) fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        self.0.verify_strict(msg, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex(&self.to_bytes()))
    }
}

fn key_id_of(bytes: &[u8; 32]) -> [u8; 8] {
    let d = Sha256Digest::of(bytes);
    let mut id = [0u8; 8];
    for (o, b) in id.iter_mut().zip(d.0.iter()) {
        *o = *b;
    }
    id
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
