//! `lattice keys gen`.

use std::path::Path;

use anyhow::Context;
use lattice_protocol::keys::{KeyPair, KeyRole};

/// Generates a key of `role`; prints it, or writes it to `output` (mode 0600) and prints the public key.
pub fn generate(role: &str, output: Option<&Path>) -> anyhow::Result<()> {
    let role: KeyRole = role.parse()?;
    let key = KeyPair::generate(role);
    match output {
        Some(path) => {
            if path.exists() {
                anyhow::bail!(
                    "{} already exists; choose another file or remove it first (keys are never overwritten)",
                    path.display()
                );
            }
            lattice_host::state::write_secret(path, &key.to_file_contents())
                .with_context(|| format!("writing {}", path.display()))?;
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
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {} key {}", role.name(), path.display()))?;
    KeyPair::from_seed_role(&text, role).with_context(|| format!("in {}", path.display()))
}

/// Reads a key file, generating it first when missing (dev keys of `lattice up`).
pub fn read_or_create(path: &Path, role: KeyRole) -> anyhow::Result<KeyPair> {
    if !path.exists() {
        let key = KeyPair::generate(role);
        lattice_host::state::write_secret(path, &key.to_file_contents())?;
        return Ok(key);
    }
    read(path, role)
}
