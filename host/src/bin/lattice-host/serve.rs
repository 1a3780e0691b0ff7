//! Running the host in the foreground: its configuration from the flags, compiling in a child
//! process, giving freed heap back to the system, stopping on Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use lattice_connect::Patience;
use lattice_host::HostConfig;
use lattice_host::compile::{CompileLimits, Compiler};
use lattice_protocol::keys::{KeyRole, PublicKey};

use crate::args::HostArgs;

fn keys(list: &[String], role: KeyRole, flag: &str) -> anyhow::Result<Vec<PublicKey>> {
    list.iter()
        .map(|k| PublicKey::parse_role(k, role).map_err(|e| anyhow::anyhow!("{flag} {k}: {e}")))
        .collect()
}

/// Builds a host configuration from its arguments.
fn host_config(
    args: &HostArgs,
    lattice: lattice_protocol::names::LatticeName,
    nats_url: &str,
) -> anyhow::Result<HostConfig> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| lattice_connect::default_state_dir().join("host"));
    let mut config = HostConfig::new(lattice, state_dir);
    if let Some(base) = &args.blob_root_base {
        config.blob_root_base = base.clone();
    }
    config.name = args.name.clone();
    config.labels = args.labels.iter().cloned().collect();
    config.trusted_issuers = keys(&args.trust_issuers, KeyRole::Issuer, "--trust-issuer")?;
    config.trusted_operators = keys(&args.trust_operators, KeyRole::Operator, "--trust-operator")?;
    config.heartbeat_interval = Duration::from_secs(args.heartbeat_secs.max(1));
    config.js_domain = args.js_domain.clone().filter(|d| !d.is_empty());
    config.outbox_max_entries = args.outbox_max_entries;
    config.outbox_max_bytes = args.outbox_max_bytes;
    config.storage = args.storage.storage();
    if let Some(token) = args.join_token.as_deref().filter(|t| !t.trim().is_empty()) {
        // A token that is not one is refused now, not silently in every heartbeat.
        lattice_protocol::signed::JoinToken::parse(token).context("--join-token")?;
        config.join_token = Some(token.trim().to_string());
    }
    config.metrics = args
        .metrics_addr
        .map(lattice_telemetry::metrics::MetricsEndpoint::new);
    config.engine.compiler = compiler_in_child(args.compile.limits());
    config.engine.memory_limit_bytes = args.max_component_memory;
    config.engine.execution_timeout = args.max_call_time;
    config.engine.default_concurrency = args.default_concurrency;
    config.engine.wasi_p3 = args.wasi_p3;
    config.engine.guest_memory_total = args.guest_memory;
    // Provider processes the host starts connect where it does, as it does.
    config.providers.nats_url = Some(nats_url.to_string());
    config.providers.nats = args.nats.options();
    config.providers.js_domain = config.js_domain.clone();
    if config.trusted_issuers.is_empty() {
        tracing::warn!("no --trust-issuer given: this host will refuse every component");
    }
    Ok(config)
}

/// Compiling in a child process running this binary's hidden `__compile` subcommand, so that a
/// long-running host keeps none of the compiler's memory, within `limits`.
fn compiler_in_child(limits: CompileLimits) -> Compiler {
    // `/proc/self/exe` is this very build even after its file was replaced (an upgrade while
    // running), whose code would not fit this engine; the path is only the fallback.
    let program = Some(PathBuf::from("/proc/self/exe"))
        .filter(|p| p.exists())
        .or_else(|| std::env::current_exe().ok());
    match program {
        Some(program) => Compiler::Subprocess {
            program,
            args: vec!["__compile".into()],
            limits,
        },
        None => {
            tracing::warn!("cannot find this program's executable: compiling in-process");
            Compiler::InProcess
        }
    }
}

/// Runs a host in the foreground.
pub async fn host(args: HostArgs) -> anyhow::Result<()> {
    raise_open_files_limit();
    let target = lattice_connect::target(&args.nats, None)?;
    let config = host_config(&args, target.lattice.clone(), &target.url)?;
    // A host starts even when NATS is unreachable: it serves from its saved state meanwhile.
    let client = lattice_connect::connect(
        &args.nats,
        &target.url,
        "lattice host",
        Patience::KeepTrying,
    )
    .await?;
    let _trimmer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(return_free_memory()));
    lattice_host::run(config, client, lattice_connect::shutdown_on_signal()).await
}

/// Raises this process's soft limit of open files to its hard limit. Each workload served over
/// HTTP holds a listening socket, and each connection one more: a thousand workloads do not fit
/// in the soft limit of 1,024 that many systems give a service (the hard limit is usually far
/// higher), and binding fails with "Too many open files". Go programs do the same at start.
fn raise_open_files_limit() {
    match open_files_limit_raised() {
        Ok((before, after)) if after > before => {
            tracing::debug!(before, after, "raised the limit of open files");
        }
        Ok((limit, _)) => tracing::debug!(limit, "the limit of open files is already its maximum"),
        Err(e) => tracing::warn!(error = %e,
            "cannot raise the limit of open files: serving many workloads may fail with \
             \"Too many open files\"; raise it for the host's service (`ulimit -n`, \
             systemd's `LimitNOFILE`)"),
    }
}

/// The soft limit of open files before and after setting it to the hard limit.
#[cfg(unix)]
#[expect(
    unsafe_code,
    reason = "getrlimit and setrlimit have no safe binding in the standard library"
)]
fn open_files_limit_raised() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes the struct it is given, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur >= limit.rlim_max {
        return Ok((before, before));
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `setrlimit` reads the struct it is given, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((before, limit.rlim_cur))
}

#[cfg(not(unix))]
fn open_files_limit_raised() -> std::io::Result<(u64, u64)> {
    Ok((0, 0))
}

/// How often a host gives the heap memory it no longer uses back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(2);

/// Hands the allocator's free memory back to the system every [`TRIM_EVERY`]. glibc keeps what a
/// burst of requests freed (measured: ~1.8 MiB after 64 concurrent connections, a tenth of a
/// gateway host's memory) for the life of the process; a trim costs about 0.1 ms even on a
/// fragmented heap, and what it gives back under load costs at most some page faults.
async fn return_free_memory() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        trim_heap();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(
    unsafe_code,
    reason = "glibc's malloc_trim has no safe binding in the standard library"
)]
fn trim_heap() {
    unsafe extern "C" {
        // `int malloc_trim(size_t pad)` from glibc's <malloc.h>: no preconditions, thread-safe.
        safe fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    malloc_trim(0);
}

/// Elsewhere there is no such call (musl's allocator unmaps freed memory itself).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

#[cfg(test)]
mod tests {
    #[test]
    fn the_open_files_limit_is_raised_to_its_maximum() -> std::io::Result<()> {
        let (before, after) = super::open_files_limit_raised()?;
        assert!(after >= before, "{before} -> {after}");
        // At its maximum now: nothing left to raise.
        assert_eq!(super::open_files_limit_raised()?, (after, after));
        Ok(())
    }
}
