//! What a host keeps on its own disk so that it restarts into the same state, even offline:
//! its identity key and the last assignment it accepted. An embedded redb database holds the
//! assignment; it commits durably before the host acts on a new assignment.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lattice_protocol::assignment::SignedAssignment;
use lattice_protocol::envelope;
use lattice_protocol::keys::{KeyPair, KeyRole};
use redb::{Database, ReadableDatabase, TableDefinition};

const TABLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("host");
const ASSIGNMENT: &str = "assignment";

/// The host's state directory and database.
#[derive(Debug)]
pub struct HostStore {
    dir: PathBuf,
    db: Database,
}

impl HostStore {
    /// Opens (creating) the state in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
        let path = dir.join("host.redb");
        let db = Database::create(&path).with_context(|| {
            format!(
                "opening {}; is another host using this state directory?",
                path.display()
            )
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            db,
        })
    }

    /// A subdirectory of the state directory, created if needed.
    pub fn subdir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(path)
    }

    /// The host's identity key, generated on first start (file mode 0600).
    pub fn host_key(&self) -> anyhow::Result<KeyPair> {
        let path = self.dir.join("host.nk");
        match std::fs::read_to_string(&path) {
            Ok(text) => KeyPair::from_seed_role(&text, KeyRole::Host)
                .with_context(|| format!("reading the host key {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate(KeyRole::Host);
                write_secret(&path, &key.to_file_contents())?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Durably records the accepted assignment.
    pub fn save_assignment(&self, signed: &SignedAssignment) -> anyhow::Result<()> {
        let bytes = envelope::encode(signed);
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(TABLE)?;
            table.insert(ASSIGNMENT, bytes.as_slice())?;
        }
        tx.commit().context("committing the assignment to disk")?;
        Ok(())
    }

    /// The last accepted assignment, if any.
    pub fn load_assignment(&self) -> anyhow::Result<Option<SignedAssignment>> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match table.get(ASSIGNMENT)? {
            Some(value) => Ok(Some(envelope::decode(value.value())?)),
            None => Ok(None),
        }
    }
}

/// Writes a file only its owner can read (keys).
pub fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
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
