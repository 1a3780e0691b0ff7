//! Authenticating the code cache: the host maps compiled code as native code, so it loads only
//! files it wrote itself.
//!
//! Each cached file is `MAGIC`, then an HMAC-SHA256 tag, then the compiled code. The tag covers
//! the component's digest, the engine fingerprint and the code, under a [`CodeKey`] derived
//! from the host's own secret key (never written anywhere). Anything else found under a cache
//! name (planted code, another component's code, a file from another host, garbage, a file of
//! an older format) fails [`unseal`] and is compiled again, never loaded. The caller reads the
//! file into memory once and deserializes the very bytes that were checked, so the file cannot
//! change between the check and the use.

use hmac::{Hmac, Mac as _};
use lattice_protocol::digest::Digest;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The start of every sealed file (format version 1).
const MAGIC: &[u8; 8] = b"LATCODE1";
/// The length of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;
/// What the key derivation is for, so the host key's secret yields no other key this way.
const KEY_PURPOSE: &[u8] = b"lattice-host code cache key v1";

/// The secret a code cache authenticates its files with.
#[derive(Clone)]
pub struct CodeKey([u8; 32]);

impl std::fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeKey(..)")
    }
}

impl CodeKey {
    /// The key derived from `secret` (the host key's seed): the same across restarts, so the
    /// cache survives them, and unknown to anyone who cannot read the seed.
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(KEY_PURPOSE);
        Self(mac.finalize().into_bytes().into())
    }

    /// A key of 32 random bytes, known to this process only: its cache is compiled again after
    /// a restart.
    pub fn random() -> std::io::Result<Self> {
        use std::io::Read as _;
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(Self(key))
    }

    fn mac(&self, digest: &Digest, fingerprint: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        // Both are fixed-format strings without NUL: the separators make the input unambiguous.
        mac.update(digest.hex().as_bytes());
        mac.update(b"\0");
        mac.update(fingerprint.as_bytes());
        mac.update(b"\0");
        mac
    }
}

/// The file holding `code` compiled from `digest` for the engine with `fingerprint`.
pub(super) fn seal(key: &CodeKey, digest: &Digest, fingerprint: &str, code: &[u8]) -> Vec<u8> {
    let mut mac = key.mac(digest, fingerprint);
    mac.update(code);
    let tag = mac.finalize().into_bytes();
    let mut file = Vec::with_capacity(MAGIC.len() + TAG_LEN + code.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&tag);
    file.extend_from_slice(code);
    file
}

/// The code in `file` if this host sealed it for `digest` and `fingerprint`, or why not.
pub(super) fn unseal<'a>(
    key: &CodeKey,
    digest: &Digest,
    fingerprint: &str,
    file: &'a [u8],
) -> Result<&'a [u8], &'static str> {
    let Some(rest) = file.strip_prefix(MAGIC.as_slice()) else {
        return Err("it is not a sealed code file (written by something else, or an older host)");
    };
    if rest.len() < TAG_LEN {
        return Err("it is truncated");
    }
    let (tag, code) = rest.split_at(TAG_LEN);
    let mut mac = key.mac(digest, fingerprint);
    mac.update(code);
    // `verify_slice` compares in constant time.
    mac.verify_slice(tag)
        .map_err(|_| "its authentication tag does not match: this host did not write it")?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_this_key_sealed_for_this_digest_and_engine_opens() {
        let key = CodeKey::derive(b"SUAM...seed");
        let digest = Digest::of(b"component");
        let file = seal(&key, &digest, "fp1", b"native code");
        assert_eq!(unseal(&key, &digest, "fp1", &file), Ok(&b"native code"[..]));
        // Derived the same way again (a restart): still opens.
        let again = CodeKey::derive(b"SUAM...seed");
        assert!(unseal(&again, &digest, "fp1", &file).is_ok());

        let other_key = CodeKey::derive(b"another host");
        assert!(unseal(&other_key, &digest, "fp1", &file).is_err());
        assert!(unseal(&key, &Digest::of(b"other"), "fp1", &file).is_err());
        assert!(unseal(&key, &digest, "fp2", &file).is_err());
        let mut tampered = file.clone();
        *tampered.last_mut().expect("not empty") ^= 1;
        assert!(unseal(&key, &digest, "fp1", &tampered).is_err());
        assert!(unseal(&key, &digest, "fp1", b"\x7fELF garbage").is_err());
        assert!(unseal(&key, &digest, "fp1", &file[..20]).is_err());
        assert_eq!(format!("{key:?}"), "CodeKey(..)");
    }
}
