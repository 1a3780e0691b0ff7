//! One single-threaded tokio runtime per core, each serving the connections
//! handed to it.
//!
//! A request's work is almost all CPU on one thread (instantiate, run the
//! guest, drop the store), so a work-stealing runtime buys little and its
//! cross-thread wake-ups cost a lot. Measured on the 2-core reference
//! machine with `hello` and `wrk -c16` on the same cores: ~37–39k
//! requests/s on per-core current-thread runtimes against ~19–27k with the
//! connections spawned on one multi-threaded runtime (same engine settings).
//! Connections are dealt round-robin by the listener's accept loop, which
//! balanced slightly better than `SO_REUSEPORT` listeners and keeps one
//! socket per address (so unbinding closes exactly one).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use super::{Site, serve_connection};

thread_local! {
    /// The index of the worker this thread is (0 on any other thread).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker thread this runs on (0 off the workers): per-thread state, such as
/// a WASI 0.3 workload's instances, is kept by it so a request never waits on another thread.
pub(super) fn current() -> usize {
    WORKER.with(Cell::get)
}

/// The number of worker threads `count` asks for (0: one per core).
pub(super) fn threads(count: usize) -> usize {
    match count {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        count => count,
    }
}

/// A connection on its way to a worker.
struct Job {
    stream: std::net::TcpStream,
    site: Arc<Site>,
    stop: watch::Receiver<bool>,
    /// The connection's slot in its listener's cap, freed when it closes.
    slot: OwnedSemaphorePermit,
}

/// The worker threads. Dropping this ends them, and with them every
/// connection they serve.
#[derive(Debug)]
pub(super) struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("stream", &self.stream).finish()
    }
}

impl Workers {
    /// Starts `count` worker threads, or one per core if `count` is 0.
    pub(super) fn start(count: usize) -> anyhow::Result<Self> {
        let count = threads(count);
        let mut queues = Vec::with_capacity(count);
        for index in 0..count {
            let (queue, jobs) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("creating an HTTP worker runtime")?;
            std::thread::Builder::new()
                .name(format!("lattice-http-{index}"))
                .spawn(move || {
                    WORKER.with(|worker| worker.set(index));
                    runtime.block_on(serve_jobs(jobs))
                })
                .context("starting an HTTP worker thread")?;
            queues.push(queue);
        }
        Ok(Self {
            queues,
            next: AtomicUsize::new(0),
        })
    }

    /// Hands a freshly accepted connection to the next worker.
    pub(super) fn dispatch(
        &self,
        stream: TcpStream,
        site: Arc<Site>,
        stop: watch::Receiver<bool>,
        slot: OwnedSemaphorePermit,
    ) {
        // Moving the socket between runtimes means leaving this one's
        // reactor; the worker registers it with its own.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(error = %err, "dropping a connection that could not be moved");
                return;
            }
        };
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        if let Some(queue) = self.queues.get(index)
            && queue
                .send(Job {
                    stream,
                    site,
                    stop,
                    slot,
                })
                .is_err()
        {
            tracing::error!(worker = index, "an HTTP worker has stopped");
        }
    }
}

/// A worker's loop: serve each connection it is given until the server
/// is dropped.
async fn serve_jobs(mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(Job {
        stream,
        site,
        stop,
        slot,
    }) = jobs.recv().await
    {
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                tokio::spawn(async move {
                    serve_connection(stream, site, stop).await;
                    drop(slot);
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "registering a connection with a worker failed");
            }
        }
    }
}
