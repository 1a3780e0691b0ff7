//! The members bucket: one [`SignedMembership`] per host this control plane assigns work to,
//! which hosts read to know a queued item's signer is one of the lattice (its assignment is
//! not theirs to read; see `lattice_protocol::membership`).

use std::collections::BTreeSet;

use async_nats::jetstream::kv;
use futures::StreamExt as _;
use lattice_protocol::envelope;
use lattice_protocol::keys::KeyPair;
use lattice_protocol::membership::{Membership, SignedMembership};
use lattice_protocol::names::{HostId, LatticeName};
use tracing::warn;

/// The bucket and the hosts known to have a membership in it.
pub(super) struct Members {
    store: kv::Store,
    written: BTreeSet<HostId>,
}

impl Members {
    /// The memberships `store` holds.
    pub(super) async fn open(store: kv::Store) -> anyhow::Result<Self> {
        let mut written = BTreeSet::new();
        let mut keys = store.keys().await?;
        while let Some(key) = keys.next().await {
            if let Ok(host) = HostId::new(key?) {
                written.insert(host);
            }
        }
        Ok(Self { store, written })
    }

    /// Writes `host`'s membership unless it is there. A failure is logged and tried again at
    /// the host's next assignment: meanwhile its queued items wait in its outbox or are
    /// dead-lettered as from an unknown signer, which `ctl requeue` undoes.
    pub(super) async fn ensure(&mut self, lattice: &LatticeName, host: &HostId, key: &KeyPair) {
        if self.written.contains(host) {
            return;
        }
        let membership = Membership {
            lattice: lattice.clone(),
            host: host.clone(),
        };
        let bytes = envelope::encode(&SignedMembership::sign(&membership, key));
        match self.store.put(host.as_str(), bytes.into()).await {
            Ok(_) => {
                self.written.insert(host.clone());
            }
            Err(e) => warn!(host = %host, error = %e, "could not write a host's membership"),
        }
    }

    /// Removes a forgotten host's membership.
    pub(super) async fn remove(&mut self, host: &HostId) {
        self.written.remove(host);
        if let Err(e) = self.store.delete(host.as_str()).await {
            warn!(host = %host, error = %e, "could not remove a forgotten host's membership");
        }
    }
}
