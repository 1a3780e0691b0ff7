//! `lattice-host`'s arguments. Every flag, its environment variable and default are what
//! `lattice host` had when the host was built by the CLI crate: scripts, the Dockerfile and
//! `deploy/` pass them unchanged.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use lattice_connect::{NatsArgs, StorageArgs};

/// What `lattice-host` does besides running a host: precompiling for gateways, and (hidden)
/// what a host runs its own binary for in child processes.
#[derive(Debug, Subcommand)]
pub enum Internal {
    /// Compile a component for the hosts of a target (what `lattice compile` runs), write the
    /// code to OUTPUT and print its target and engine fingerprint as JSON.
    Precompile(PrecompileArgs),
    /// Compile one component for this build's engine and write the code atomically.
    #[command(name = "__compile", hide = true)]
    Compile(CompileArgs),
}

/// `lattice-host precompile`.
#[derive(Debug, Args)]
pub struct PrecompileArgs {
    /// The hosts' target: `x86_64`, `aarch64` (Linux, glibc), `host`, or a target triple.
    #[arg(long, default_value = "host")]
    pub target: String,
    /// Code for hosts started with `--wasi-p3` (their engine differs).
    #[arg(long)]
    pub wasi_p3: bool,
    /// The largest component accepted, in bytes (as `--max-component-bytes` of a host).
    #[arg(long, default_value_t = lattice_host::engine::EngineConfig::default().max_component_bytes)]
    pub max_component_bytes: usize,
    /// The component (`-` for standard input).
    pub input: PathBuf,
    /// Where to write the code.
    pub output: PathBuf,
}

/// `__compile`: passed through as they are to `lattice_host::compile::compiler_main`, which
/// owns both ends of this interface.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The compiler's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// The host's flags (`lattice host` passes its arguments on to `lattice-host`).
#[derive(Debug, Args)]
pub struct HostArgs {
    /// Connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Labels, `key=value` (repeatable).
    #[arg(long = "label", value_parser = lattice_connect::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Issuer public keys (`A...`) whose components this host runs.
    #[arg(
        long = "trust-issuer",
        env = "LATTICE_TRUST_ISSUERS",
        value_delimiter = ','
    )]
    pub trust_issuers: Vec<String>,
    /// Control-plane public keys (`O...`) whose assignments this host accepts.
    #[arg(
        long = "trust-operator",
        env = "LATTICE_TRUST_OPERATORS",
        value_delimiter = ','
    )]
    pub trust_operators: Vec<String>,
    /// Where the host keeps its key, assignment, artifacts and compiled code. Default: ~/.lattice/host
    #[arg(long, env = "LATTICE_HOST_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The only directory `blobstore-fs` links keep blobs in: a link's `root` is relative to
    /// it (the app's name by default). It must not contain, nor lie inside, the state
    /// directory: the host refuses to start otherwise. Default: the state directory's sibling
    /// `<state dir>-blobs` (~/.lattice/host-blobs)
    #[arg(long, env = "LATTICE_BLOB_ROOT_BASE")]
    pub blob_root_base: Option<PathBuf>,
    /// The host's human name. Default: the machine's hostname.
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 5)]
    pub heartbeat_secs: u64,
    /// JetStream domain of the lattice's JetStream: on an edge NATS leaf node, the hub's domain
    /// (`hub` in deploy/hub.conf). Default: the server's own JetStream (`$JS.API`).
    #[arg(long, env = "LATTICE_JS_DOMAIN")]
    pub js_domain: Option<String>,
    /// The most queued calls and messages this host's outbox keeps while the hub is out of
    /// reach, all queued links together (each link's `capacity` bounds its own share). Size it
    /// for the longest outage: calls a second times its seconds.
    #[arg(
        long,
        env = "LATTICE_OUTBOX_MAX_ENTRIES",
        default_value_t = lattice_host::DEFAULT_OUTBOX_MAX_ENTRIES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub outbox_max_entries: u64,
    /// The most bytes (a plain number, e.g. 1073741824 for 1 GiB) of queued calls and messages
    /// the outbox keeps, all queued links together: each counts its encoded call or message,
    /// its link's name twice, its stream subject and 53 bytes. Leave the disk room for it.
    #[arg(
        long,
        env = "LATTICE_OUTBOX_MAX_BYTES",
        default_value_t = lattice_host::DEFAULT_OUTBOX_MAX_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub outbox_max_bytes: u64,
    /// Limits of the hub's queue and dead-letter streams and buckets this host creates.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// The largest linear memory one instance may have (`256Mi`, `1Gi`): the default of
    /// components whose manifest gives no `limits.memory`, and the most any may ask (more is
    /// lowered to it). Never above a quarter of the machine's memory.
    #[arg(long, env = "LATTICE_MAX_COMPONENT_MEMORY", default_value = "256Mi", value_parser = parse_size)]
    pub max_component_memory: usize,
    /// The longest one call may run (`60s`): the default of components whose manifest gives no
    /// `limits.timeout`, and the most any may ask (more is lowered to it).
    #[arg(long, env = "LATTICE_MAX_CALL_TIME", default_value = "60s", value_parser = parse_duration)]
    pub max_call_time: std::time::Duration,
    /// Instances of one component that may run at once on this host when its manifest gives no
    /// `limits.concurrency`; requests beyond are refused as busy.
    #[arg(
        long,
        env = "LATTICE_DEFAULT_CONCURRENCY",
        default_value_t = lattice_host::engine::DEFAULT_CONCURRENCY,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub default_concurrency: u32,
    /// Run WASI 0.3 components (`wasi:http/handler@0.3`, instances reused across requests).
    /// It makes every instance dearer, WASI 0.2 ones included (about 14 µs per HTTP request),
    /// so it is off unless asked for; code made by `lattice compile` must then be made with
    /// `--wasi-p3` too.
    #[arg(long, env = "LATTICE_WASI_P3")]
    pub wasi_p3: bool,
    /// The linear memory all components together may hold on this host (`512Mi`, `2Gi`); a
    /// request whose instance would go over it fails alone. Default: half of the machine's
    /// memory.
    #[arg(long, env = "LATTICE_GUEST_MEMORY", value_parser = parse_size)]
    pub guest_memory: Option<usize>,
    /// A join token (`LJT1....`, made by an admin with `lattice ctl hosts token`): presented in
    /// this host's heartbeats so that the control plane admits it. Without one (or an operator's
    /// `lattice ctl hosts admit ID`) the host is listed `unadmitted` and gets no work.
    #[arg(long, env = "LATTICE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Serve Prometheus metrics on this address (`HOST:PORT`, port 0 for any free one: the
    /// address bound is logged, `serving metrics addr=...`), at `/metrics`. Off by default.
    #[arg(long, env = "LATTICE_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Limits of the child process each component is compiled in.
    #[command(flatten)]
    pub compile: CompileLimitArgs,
}

/// What compiling one component may cost: past a limit, the compiler process is killed and only
/// that component's workload fails (`compile_limit`). The compiler is also the first process
/// the kernel kills under memory pressure.
#[derive(Debug, Args)]
pub struct CompileLimitArgs {
    /// Seconds of wall-clock time one compile may take.
    #[arg(
        long = "compile-timeout-secs",
        env = "LATTICE_COMPILE_TIMEOUT_SECS",
        default_value_t = lattice_host::compile::DEFAULT_COMPILE_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout_secs: u64,
    /// Seconds of CPU time one compile may use, all its threads together.
    #[arg(
        long = "compile-cpu-secs",
        env = "LATTICE_COMPILE_CPU_SECS",
        default_value_t = lattice_host::compile::DEFAULT_COMPILE_CPU.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub cpu_secs: u64,
    /// MiB of memory (heap and other private writable memory) one compile may use.
    #[arg(
        long = "compile-memory-mib",
        env = "LATTICE_COMPILE_MEMORY_MIB",
        default_value_t = lattice_host::compile::DEFAULT_COMPILE_MEMORY >> 20,
        value_parser = clap::value_parser!(u64).range(16..(1 << 40))
    )]
    pub memory_mib: u64,
}

impl CompileLimitArgs {
    /// The limits these flags set.
    pub fn limits(&self) -> lattice_host::compile::CompileLimits {
        lattice_host::compile::CompileLimits {
            timeout: std::time::Duration::from_secs(self.timeout_secs),
            cpu: std::time::Duration::from_secs(self.cpu_secs),
            memory_bytes: self.memory_mib << 20,
        }
    }
}

/// A size in bytes: a number, or one with `Ki`, `Mi` or `Gi` (`256Mi`).
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => {
            return Err(format!(
                "`{text}` is not a size: write e.g. `256Mi` or `1Gi`"
            ));
        }
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a size above 0: write e.g. `256Mi` or `1Gi`"))
}

/// A duration such as `60s` or `2m`, above 0.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be above 0: write e.g. `30s`".to_string()),
        Err(e) => Err(format!(
            "`{text}` is not a duration ({e}): write e.g. `30s` or `2m`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("256Mi"), Ok(256 << 20));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0Mi").is_err());
        assert!(parse_size("12MB").is_err());
        assert_eq!(
            parse_duration("2m"),
            Ok(std::time::Duration::from_secs(120))
        );
        assert!(parse_duration("0s").is_err());
    }
}
