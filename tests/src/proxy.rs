//! A TCP proxy a test can cut: the network link between an edge and the hub.
//!
//! [`Proxy::start`] listens on a random local port and forwards every connection to a target
//! address. [`Proxy::cut`] drops every open connection at once and makes the proxy close new
//! ones as soon as it accepts them (a peer sees its connection reset or closed, as with a
//! dead link); [`Proxy::heal`] lets connections through again. The listening port stays the
//! same throughout, so whatever dials it (a NATS leaf node) reconnects by itself after a heal.
//!
//! [`Proxy::hold_replies`] makes the link one-way without closing it: bytes from the dialler to
//! the target (leaf → hub) still pass, bytes back (hub → leaf) wait in the proxy, unread, until
//! [`Proxy::release_replies`] or [`Proxy::heal`] (a [`Proxy::cut`] drops them with the
//! connections). A leaf's publishes then reach the hub, and the hub's answers (JetStream acks)
//! never come back.
//!
//! [`Proxy::freeze`] holds the bytes of both directions without closing anything: a half-open
//! link, as when a route silently drops packets. Only the peers' own pings can notice it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
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
    /// Whether target → dialler bytes are held.
    hold: watch::Sender<bool>,
    /// Whether dialler → target bytes are held.
    hold_up: watch::Sender<bool>,
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
            hold: watch::channel(false).0,
            hold_up: watch::channel(false).0,
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

    /// Lets connections through again, both ways.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        self.state.hold_up.send_replace(false);
        self.release_replies();
    }

    /// Holds the bytes of both directions on every connection, open or new, closing nothing:
    /// the link goes silent until [`Proxy::heal`].
    pub fn freeze(&self) {
        self.state.hold_up.send_replace(true);
        self.hold_replies();
    }

    /// Holds the bytes the target sends back (hub → leaf) on every connection, open or new;
    /// bytes towards the target still pass.
    pub fn hold_replies(&self) {
        self.state.hold.send_replace(true);
    }

    /// Passes the held bytes on, and all that follow.
    pub fn release_replies(&self) {
        self.state.hold.send_replace(false);
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
        let hold = state.hold.subscribe();
        let hold_up = state.hold_up.subscribe();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (from_dialler, to_dialler) = inbound.into_split();
            let (from_target, to_target) = outbound.into_split();
            tokio::select! {
                _ = async {
                    tokio::join!(
                        pipe(from_dialler, to_target, hold_up),
                        pipe(from_target, to_dialler, hold),
                    )
                } => {}
                _ = generation.wait_for(|g| *g != born) => {}
            }
            // Both sockets close here: each side sees the link go.
        });
    }
}

/// Copies `from` to `to` until either ends; a chunk read while `hold` is set waits for it to
/// clear before it is written (and nothing more is read meanwhile).
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut hold: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if hold.wait_for(|held| !held).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
