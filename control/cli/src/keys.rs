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
            write_secret(path, &key.to_file_contents())
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
        write_secret(path, &key.to_file_contents())?;
        return Ok(key);
    }
    read(path, role)
}

/// Writes a new file readable by its owner only (mode 0600), and never over an existing one.
fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}
