//! Key files: the seed on the first line, the public key on the second
//! ([`KeyPair::to_file_contents`]), created readable by their owner only (mode 0600), written
//! to disk before they are used, and never overwritten. The `lattice` CLI (`keys gen`, `lattice
//! up`'s keys, `--key`) and the host (its identity key) read and write them here.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use lattice_protocol::keys::{KeyError, KeyPair, KeyRole};

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("reading the {role} key {}: {source}", path.display())]
    Read {
        /// The role expected.
        role: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no key of the expected role.
    #[error("in {}: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
    /// The file exists already: keys are never overwritten.
    #[error(
        "{} already exists; choose another file or remove it first (keys are never overwritten)",
        path.display()
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be created or written.
    #[error("creating {}: {source}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads the key of `role` in `path`.
pub fn read(path: &Path, role: KeyRole) -> Result<KeyPair, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        role: role.name(),
        path: path.to_path_buf(),
        source,
    })?;
    KeyPair::from_seed_role(&text, role).map_err(|source| KeyFileError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `key` to a new file at `path` (its directory created if needed), mode 0600, synced.
pub fn create(path: &Path, key: &KeyPair) -> Result<(), KeyFileError> {
    let failed = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            KeyFileError::Create {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.write_all(key.to_file_contents().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)
}

/// Reads the key of `role` in `path`, generating and writing it first when the file is missing.
pub fn read_or_create(path: &Path, role: KeyRole) -> Result<KeyPair, KeyFileError> {
    match read(path, role) {
        Err(KeyFileError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate(role);
            create(path, &key)?;
            Ok(key)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_created_key_is_owner_only_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("issuer.nk");
        let key = read_or_create(&path, KeyRole::Issuer).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read(&path, KeyRole::Issuer).unwrap().public_key(),
            key.public_key()
        );
        // Created once: a second call reads the same key.
        let again = read_or_create(&path, KeyRole::Issuer).unwrap();
        assert_eq!(again.public_key(), key.public_key());
    }

    #[test]
    fn keys_are_never_overwritten_and_roles_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.nk");
        let key = KeyPair::generate(KeyRole::Host);
        create(&path, &key).unwrap();
        let err = create(&path, &KeyPair::generate(KeyRole::Host)).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err}");
        assert_eq!(
            read(&path, KeyRole::Host).unwrap().public_key(),
            key.public_key()
        );
        let err = read(&path, KeyRole::User).unwrap_err();
        assert!(matches!(err, KeyFileError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("lattice keys gen user"), "{err}");
    }
}
