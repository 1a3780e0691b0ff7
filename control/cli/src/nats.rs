//! `lattice nats authz`: writes the nats-server authorization of a lattice (its account, and a
//! user with least-privilege permissions for each control plane, host and operator), for the
//! hub and for leaf nodes. The permissions themselves are
//! [`lattice_protocol::permissions`]'s, derived from the lattice's subjects; this module reads
//! the keys, writes the files and says how to use them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use lattice_protocol::keys::{KeyPair, PublicKey};
use lattice_protocol::names::LatticeName;
use lattice_protocol::permissions::{LatticeAuthz, LeafLink, render_account, render_leaf};

/// `lattice nats ...`.
#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Write the nats-server authorization of a lattice: an account with one user per control
    /// plane, host and operator, each allowed only the subjects its role needs.
    Authz(AuthzArgs),
}

/// `lattice nats authz`.
#[derive(Debug, Args)]
pub struct AuthzArgs {
    /// Lattice name.
    #[arg(long, env = "LATTICE_LATTICE", default_value = "default")]
    pub lattice: String,
    /// The control plane's public key (O...) or key file; repeat for several.
    #[arg(long = "control-key", required = true)]
    pub control_keys: Vec<String>,
    /// A host's public key (N...) or key file (its state directory's host.nk); repeat.
    #[arg(long = "host-key")]
    pub host_keys: Vec<String>,
    /// An operator's public key (U...) or key file; repeat.
    #[arg(long = "user-key")]
    pub user_keys: Vec<String>,
    /// A NATS subject components use through messaging (e.g. `orders.>`); repeat.
    #[arg(long = "app-subject")]
    pub app_subjects: Vec<String>,
    /// A KV bucket components use through key-value, or a `blobstore-nats` link's object
    /// store (its `bucket`); repeat.
    #[arg(long = "app-bucket")]
    pub app_buckets: Vec<String>,
    /// The hub's JetStream domain, when hosts on leaf nodes reach it by domain.
    #[arg(long, env = "LATTICE_JS_DOMAIN")]
    pub js_domain: Option<String>,
    /// Also write the configuration of a leaf node with this name (and its link's user on the
    /// hub); repeat for several.
    #[arg(long = "leaf")]
    pub leaves: Vec<String>,
    /// Where leaf nodes reach the hub's leaf-node port: every node of a clustered hub
    /// (repeat, or separate with commas), so that a leaf moves to a surviving one.
    #[arg(
        long = "hub-url",
        value_delimiter = ',',
        default_value = "nats-leaf://127.0.0.1:7422"
    )]
    pub hub_urls: Vec<String>,
    /// Directory to write the files to.
    #[arg(long, short = 'o', default_value = ".")]
    pub out_dir: PathBuf,
}

/// Reads a public key given as itself or as a key file (its public line, or its seed's).
fn read_key(given: &str, flag: &str) -> anyhow::Result<PublicKey> {
    if let Ok(key) = PublicKey::parse(given) {
        return Ok(key);
    }
    let text = std::fs::read_to_string(given).with_context(|| {
        format!("--{flag} {given}: neither a public key nor a readable key file")
    })?;
    if let Some(key) = text.lines().find_map(|l| PublicKey::parse(l).ok()) {
        return Ok(key);
    }
    Ok(KeyPair::from_seed(&text)
        .with_context(|| format!("--{flag} {given}: the file holds no key"))?
        .public_key())
}

fn read_keys(given: &[String], flag: &str) -> anyhow::Result<Vec<PublicKey>> {
    given.iter().map(|g| read_key(g, flag)).collect()
}

/// The authorization `args` ask for, checked.
pub fn authz(args: &AuthzArgs) -> anyhow::Result<LatticeAuthz> {
    let authz = LatticeAuthz {
        lattice: LatticeName::new(args.lattice.clone()).context("invalid --lattice")?,
        control: read_keys(&args.control_keys, "control-key")?,
        hosts: read_keys(&args.host_keys, "host-key")?,
        operators: read_keys(&args.user_keys, "user-key")?,
        js_domain: args.js_domain.clone().filter(|d| !d.is_empty()),
        app_subjects: args.app_subjects.clone(),
        app_buckets: args.app_buckets.clone(),
    };
    authz.check()?;
    Ok(authz)
}

/// The file of the lattice's account in `dir`.
pub fn account_file(dir: &Path, lattice: &str) -> PathBuf {
    dir.join(format!("lattice-{lattice}.conf"))
}

/// The file of leaf node `leaf` of `lattice` in `dir`.
pub fn leaf_file(dir: &Path, lattice: &str, leaf: &str) -> PathBuf {
    dir.join(format!("leaf-{leaf}-{lattice}.conf"))
}

/// Writes the files (mode 0600: the leaf links' passwords are in them) and says how to use them.
pub fn write(args: &AuthzArgs) -> anyhow::Result<()> {
    let authz = authz(args)?;
    let leaves: Vec<LeafLink> = args
        .leaves
        .iter()
        .map(|name| {
            lattice_protocol::names::validate_name("leaf", name)?;
            Ok(LeafLink {
                name: name.clone(),
                password: format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                ),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let account = account_file(&args.out_dir, &args.lattice);
    write_private(&account, &render_account(&authz, &leaves))?;
    println!(
        "wrote {}: include it inside the hub's `accounts {{ }}` block",
        account.display()
    );
    for leaf in &leaves {
        let path = leaf_file(&args.out_dir, &args.lattice, &leaf.name);
        write_private(&path, &render_leaf(&authz, leaf, &args.hub_urls))?;
        println!(
            "wrote {}: include it at the top of leaf node {}'s configuration",
            path.display(),
            leaf.name
        );
    }
    println!(
        "clients connect with --nkey <their key file> (hosts: their host.nk; the control plane: its key)"
    );
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
