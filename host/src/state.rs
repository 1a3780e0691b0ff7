//! What a host keeps on its own disk so that it restarts into the same state, even offline:
//! its identity key and the last assignment it accepted. An embedded redb database holds the
//! assignment; it commits durably before the host acts on a new assignment. A commit that fails
//! (a full or read-only disk) fails that assignment only: the database is closed and opened
//! again at the next save, since redb refuses every transaction after a failed write.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lattice_connect::keyfile;
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
    /// `None` after a failed write, until the next save opens it again.
    db: Option<Database>,
}

impl HostStore {
    /// Opens (creating) the state in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            db: Some(open_database(dir)?),
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
        Ok(keyfile::read_or_create(
            &self.dir.join("host.nk"),
            KeyRole::Host,
        )?)
    }

    /// Durably records the accepted assignment. On failure the previous one stays recorded.
    pub fn save_assignment(&mut self, signed: &SignedAssignment) -> anyhow::Result<()> {
        let db = match self.db.take() {
            Some(db) => db,
            None => open_database(&self.dir)?,
        };
        let bytes = envelope::encode(signed);
        let written = (|| -> anyhow::Result<()> {
            let tx = db.begin_write()?;
            {
                let mut table = tx.open_table(TABLE)?;
                table.insert(ASSIGNMENT, bytes.as_slice())?;
            }
            tx.commit()?;
            Ok(())
        })();
        match written {
            Ok(()) => {
                self.db = Some(db);
                Ok(())
            }
            Err(e) => {
                let advice = if is_disk_full(&format!("{e:#}")) {
                    ": the disk is full; free space there, or move the state directory to a \
                     larger disk"
                } else {
                    ""
                };
                Err(e.context(format!(
                    "saving the assignment in {}{advice}",
                    self.dir.display()
                )))
            }
        }
    }

    /// The last accepted assignment, if any.
    pub fn load_assignment(&self) -> anyhow::Result<Option<SignedAssignment>> {
        let db = self
            .db
            .as_ref()
            .context("the state database is closed after a failed write")?;
        let tx = db.begin_read()?;
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

/// Opens (creating) the database in `dir`.
fn open_database(dir: &Path) -> anyhow::Result<Database> {
    let path = dir.join("host.redb");
    Database::create(&path).with_context(|| {
        format!(
            "opening {}; is another host using this state directory?",
            path.display()
        )
    })
}

/// Whether `error` (its whole chain, as text: redb wraps the I/O error) says the disk is full.
pub fn is_disk_full(error: &str) -> bool {
    error.contains("os error 28") || error.contains("No space left") || error.contains("quota")
}
