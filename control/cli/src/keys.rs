//! `lattice keys gen`.

use std::path::Path;

use lattice_connect::keyfile;
use lattice_protocol::keys::{KeyPair, KeyRole};

/// Generates a key of `role`; prints it, or writes it to `output` (mode 0600) and prints the public key.
pub fn generate(role: &str, output: Option<&Path>) -> anyhow::Result<()> {
    let role: KeyRole = role.parse()?;
    let key = KeyPair::generate(role);
    match output {
        Some(path) => {
            keyfile::create(path, &key)?;
            eprintln!(
                "wrote the {} key to {} (mode 0600)",
                role.name(),
                path.display()
            );
            println!("{}", key.public_key());
        }
        None => {
            println!("public: {}", key.public_key());
            println!("seed:   {}", key.seed());
        }
    }
    Ok(())
}

/// Reads a key file of `role`.
pub fn read(path: &Path, role: KeyRole) -> anyhow::Result<KeyPair> {
    Ok(keyfile::read(path, role)?)
}

/// Reads a key file, generating it first when missing (dev keys of `lattice up`).
pub fn read_or_create(path: &Path, role: KeyRole) -> anyhow::Result<KeyPair> {
    Ok(keyfile::read_or_create(path, role)?)
}
