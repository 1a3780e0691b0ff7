//! A TCP proxy a test can cut: the network link between an edge and the hub.
//!
//! [`Proxy::start`] listens on a random local port and forwards every connection to a target
//! address. [`Proxy::cut`] drops every open connection at once and makes the proxy close new
//! ones as soon as it accepts them (a peer sees its connection reset or closed, as with a
//! dead link); [`Proxy::heal`] lets connections through again. The listening port stays the
//! same throughout, so whatever dials it (a NATS leaf node) reconnects by itself after a heal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A cuttable TCP proxy; stopped on drop.
#[derive(Debug)]
pub struct Proxy {
    /// The address it listens on (`127.0.0.1:<port>`).
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct State {
    cut: AtomicBool,
    /// Bumped on every cut: connections of an older generation end.
    generation: watch::Sender<u64>,
    accepted: AtomicU64,
}

impl Proxy {
    /// Starts a proxy to `target` on a random local port.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            cut: AtomicBool::new(false),
            generation: watch::channel(0).0,
            accepted: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, target, state.clone()));
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    /// Drops every connection through the proxy and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Ends the accept loop; open connections end with the generation bump.
        self.accept.abort();
        self.state.generation.send_modify(|g| *g += 1);
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, state: Arc<State>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        if state.cut.load(Ordering::SeqCst) {
            drop(inbound);
            continue;
        }
        let mut generation = state.generation.subscribe();
        let born = *generation.borrow_and_update();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (mut inbound, mut outbound) = (inbound, outbound);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = generation.wait_for(|g| *g != born) => {}
            }
            // Both sockets close here: each side sees the link go.
        });
    }
}
