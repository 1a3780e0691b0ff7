//! Command-line arguments of `lattice`. The NATS flags and label parsing are
//! `lattice_connect`'s, shared with `lattice-host`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lattice_connect::{NatsArgs, parse_label};

/// Lattice: a distributed actor runtime for WebAssembly components over NATS.
#[derive(Debug, Parser)]
#[command(name = "lattice", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local lattice in the foreground: nats-server, control plane and one host, with dev keys.
    Up(UpArgs),
    /// Operate a lattice: deploy, undeploy, get, status, watch, scale, label, stop, history, rollback, requeue, users, config.
    Ctl(CtlArgs),
    /// The lattice's named configs, which manifests take by name (as `wash config`): the same
    /// as `lattice ctl config`.
    Config(CtlArgs<ConfigWhat>),
    /// Manage keys.
    Keys {
        /// The key command.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Sign a component: embed claims signed by an issuer key.
    Sign(SignArgs),
    /// Show a component's claims, imports and exports, and whether its signature verifies.
    Inspect(InspectArgs),
    /// Store a component in the lattice and print its reference, or with --oci publish it to an
    /// OCI registry.
    Push(PushArgs),
    /// Fetch a component from an OCI registry into the lattice and print its digest.
    Pull(PullArgs),
    /// Compile a component ahead for the hosts of one or more targets and store the code,
    /// signed, in the lattice: hosts that find code for their engine load it instead of
    /// compiling.
    Compile(CompileArgs),
    /// Run a host: starts the `lattice-host` program with these arguments.
    Host(HostArgs),
    /// Run the control plane.
    Control(ControlArgs),
    /// Serve the live web dashboard of a lattice (hosts, apps, link graphs, queues, events) on
    /// loopback, acting as the operator whose key it is given.
    Ui(UiArgs),
    /// Write the nats-server authorization of a lattice (`lattice nats authz`).
    Nats {
        /// The NATS command.
        #[command(subcommand)]
        command: crate::nats::NatsCommand,
    },
}

/// `lattice up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Use this NATS (with JetStream) instead of starting a nats-server.
    #[arg(long, env = "LATTICE_NATS_URL")]
    pub nats_url: Option<String>,
    /// Lattice name.
    #[arg(long, env = "LATTICE_LATTICE", default_value = "default")]
    pub lattice: String,
    /// Where keys, NATS data and host state live. Default: ~/.lattice
    #[arg(long, env = "LATTICE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Port of the started nats-server (0: any free port).
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    /// Labels of the local host, `key=value`.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// More issuers (`A...`) whose components the local host runs, besides the dev issuer: a
    /// `wash` account key, for components `wash build` signed. Repeatable.
    #[arg(
        long = "trust-issuer",
        env = "LATTICE_TRUST_ISSUERS",
        value_delimiter = ','
    )]
    pub trust_issuers: Vec<String>,
    /// Serve the control plane's Prometheus metrics on this address (`HOST:PORT`, port 0 for
    /// any free one: the address bound is logged, `serving metrics addr=...`), at `/metrics`,
    /// as `lattice control --metrics-addr` does. Off by default.
    #[arg(long, env = "LATTICE_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the local host's Prometheus metrics on this address (its `--metrics-addr`), at
    /// `/metrics`. Off by default.
    #[arg(long, env = "LATTICE_HOST_METRICS_ADDR")]
    pub host_metrics_addr: Option<std::net::SocketAddr>,
}

/// `lattice ctl` (and `lattice config`, whose commands are `ctl config`'s).
#[derive(Debug, Args)]
pub struct CtlArgs<C: Subcommand = CtlCommand> {
    /// Connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The state directory of `lattice up`, whose NATS URL is used when none is given.
    #[arg(long, env = "LATTICE_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// The user key file that signs every request (`lattice keys gen user -o FILE`). Default:
    /// the admin key `lattice up` made in its state directory.
    #[arg(long, env = "LATTICE_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// The control plane's public key (`O...`, or its key file): replies signed by any other
    /// key are refused. Repeatable. Default: the one `lattice up` recorded.
    #[arg(
        long = "control-key",
        env = "LATTICE_CONTROL_KEY",
        value_delimiter = ',',
        global = true
    )]
    pub control_keys: Vec<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: C,
}

impl<C: Subcommand> CtlArgs<C> {
    /// The same flags, with `command` made a `lattice ctl` command by `f`.
    pub fn into_ctl(self, f: impl FnOnce(C) -> CtlCommand) -> CtlArgs {
        CtlArgs {
            nats: self.nats,
            state_dir: self.state_dir,
            output: self.output,
            key: self.key,
            control_keys: self.control_keys,
            command: f(self.command),
        }
    }
}

/// `lattice ui`.
#[derive(Debug, Args)]
#[command(
    after_help = "The dashboard signs every request with the operator's key (--key): whoever can reach \
its address acts as that operator. It therefore listens on loopback only (127.0.0.1:8470), and \
refuses any other address unless --allow-remote is given; put it behind an authenticating proxy \
if others must reach it."
)]
pub struct UiArgs {
    /// Connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The state directory of `lattice up`, whose NATS URL, admin key and control-plane key are
    /// used when none is given.
    #[arg(long, env = "LATTICE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The user key file that signs every request the page makes, as `lattice ctl --key`: the
    /// control plane allows what this user's role allows. Default: the admin key of `lattice up`.
    #[arg(long, env = "LATTICE_KEY")]
    pub key: Option<PathBuf>,
    /// The control plane's public key (`O...`, or its key file), as `lattice ctl --control-key`.
    #[arg(
        long = "control-key",
        env = "LATTICE_CONTROL_KEY",
        value_delimiter = ','
    )]
    pub control_keys: Vec<String>,
    /// Where to serve the dashboard (`HOST:PORT`; port 0 for any free one, printed at start).
    /// Loopback only, unless --allow-remote: the page acts with the operator's key.
    #[arg(long, env = "LATTICE_UI_ADDR", default_value = "127.0.0.1:8470")]
    pub addr: std::net::SocketAddr,
    /// Serve on a non-loopback --addr too: anyone who reaches it acts as the operator.
    #[arg(long)]
    pub allow_remote: bool,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
    /// YAML for scripts and people.
    Yaml,
}

/// `lattice ctl ...`.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Deploy a manifest as a new version of its app.
    Deploy {
        /// The manifest (YAML); or, with --version, the name of an app whose stored version to
        /// deploy again.
        file: PathBuf,
        /// Deploy this stored version of the app named by FILE (see `ctl history`).
        #[arg(long)]
        version: Option<String>,
        /// Wait until the app is deployed (or failed), showing progress.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (e.g. 90s, 5m).
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Registry access, for images that are OCI references.
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Stop and remove an app (its versions are kept).
    Undeploy {
        /// The app.
        name: String,
    },
    /// List apps or hosts.
    Get {
        /// What to list.
        #[command(subcommand)]
        what: GetWhat,
    },
    /// One app's status, per component and host.
    Status {
        /// The app.
        name: String,
    },
    /// An app's stored versions.
    History {
        /// The app.
        name: String,
    },
    /// Print the lattice's events (deploys, hosts joining and leaving, assignments, workload
    /// state changes, refusals), each with its sequence, as they happen until Ctrl-C; with
    /// --since, the kept ones first.
    Watch {
        /// Also print every host heartbeat (live only: heartbeats are not kept).
        #[arg(long)]
        heartbeats: bool,
        /// Print kept events from here on: `seq:N` (a sequence `watch` printed; `seq:N+1`
        /// resumes after it), an RFC 3339 time (`2026-12-07T08:00:00Z`) or an age (`10m`,
        /// `3d`). Without it, only events from now on.
        #[arg(long, value_parser = crate::ctl::watch::parse_since)]
        since: Option<crate::ctl::watch::Since>,
    },
    /// Change how many instances of a component run (deploys a new version of the app).
    Scale {
        /// The app.
        app: String,
        /// The component.
        component: String,
        /// Instances.
        instances: u32,
    },
    /// Set (`key=value`) or remove (`--delete key`) labels of a host.
    Label {
        /// The host: id, id prefix or name.
        host: String,
        /// Labels to set.
        #[arg(value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Label keys to remove (repeatable).
        #[arg(long)]
        delete: Vec<String>,
    },
    /// Stop something gracefully: `stop host ID` drains a host; its movable work moves.
    Stop {
        /// What to stop.
        #[command(subcommand)]
        what: StopWhat,
    },
    /// Put a queued link's dead letters back in their queue, with fresh attempts (all of them,
    /// or those given with --id); fix the target first.
    Requeue {
        /// `app/source->target` as `get queues` shows it, or `app/target` for every sender.
        link: lattice_protocol::queue::ops::LinkSelector,
        /// A call id from `get deadletters` (repeatable); none: every dead letter of the link.
        #[arg(long = "id")]
        ids: Vec<String>,
    },
    /// Admit hosts: make a join token (`hosts token`), or admit or revoke one host.
    Hosts {
        /// The hosts command.
        #[command(subcommand)]
        what: HostsCommand,
    },
    /// Deploy a stored version again: the previous one, or `--to VERSION`.
    Rollback {
        /// The app.
        name: String,
        /// The version to go back to.
        #[arg(long)]
        to: Option<String>,
    },
    /// The lattice's named configs, which manifests take by name: put, get, del, list.
    Config {
        /// The config command.
        #[command(subcommand)]
        what: ConfigWhat,
    },
    /// Who may operate the lattice: add, list and remove users and their roles (admins only).
    Users {
        /// The users command.
        #[command(subcommand)]
        what: UsersWhat,
    },
}

/// `lattice ctl config ...` (and `lattice config ...`).
#[derive(Debug, Subcommand)]
pub enum ConfigWhat {
    /// Store a named config, replacing what the name held: manifests take it with a `config`
    /// entry that has its name and no `properties`. Deployed apps that took it get a new
    /// version with the new values (admins only).
    Put {
        /// The config's name.
        name: String,
        /// Its values, `KEY=VALUE` (at least one).
        #[arg(value_name = "KEY=VALUE", required = true, value_parser = parse_config_pair)]
        values: Vec<(String, String)>,
    },
    /// Print a named config's values.
    Get {
        /// The config's name.
        name: String,
    },
    /// Remove a named config that no deployed app takes (admins only).
    Del {
        /// The config's name.
        name: String,
    },
    /// Every named config, with the deployed apps that take it.
    List,
}

/// `lattice ctl users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersWhat {
    /// Give a user key a role (or change the role it has).
    Add {
        /// The user's public key (`U...`, printed by `lattice keys gen user`).
        #[arg(value_name = "USER_KEY")]
        user: String,
        /// Who this is, for people reading the table.
        #[arg(long)]
        name: String,
        /// admin (everything, including roles), deployer (the apps of --apps) or viewer (read only).
        #[arg(long)]
        role: lattice_protocol::auth::Role,
        /// For a deployer: the apps it may deploy, scale, roll back and undeploy, as patterns
        /// (`*` matches anything), comma-separated, e.g. 'shop-*,blog'.
        #[arg(long, value_delimiter = ',')]
        apps: Vec<String>,
    },
    /// The role table: every user key, its name and role.
    List,
    /// Take a user key out of the role table (never the last admin).
    Remove {
        /// The user's public key.
        #[arg(value_name = "USER_KEY")]
        user: String,
    },
}

/// `lattice ctl hosts ...`.
#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Print a join token for `lattice-host --join-token` (or `LATTICE_JOIN_TOKEN`): hosts
    /// presenting it are admitted. Signed here with an admin's user key (`--key`, default the
    /// admin key of `lattice up` in the state directory); no lattice needed.
    Token {
        /// Admit only this host (its full id, `N...`).
        #[arg(long)]
        host: Option<String>,
        /// A label (`key=value`) a host must carry to be admitted with it (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// How long the token admits hosts (e.g. 1h, 7d); hosts admitted stay admitted.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        valid: std::time::Duration,
        /// Who or what it is for, shown when a host is admitted with it.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Admit a host (by full id, even before it reports; or id prefix or name).
    Admit {
        /// The host.
        host: String,
    },
    /// Revoke a host's admission: it loses its work, and its join token no longer admits it.
    Revoke {
        /// The host: id, id prefix or name.
        host: String,
    },
}

/// `lattice ctl stop ...`.
#[derive(Debug, Subcommand)]
pub enum StopWhat {
    /// A host, by id, id prefix or name.
    Host {
        /// The host.
        host: String,
    },
}

/// `lattice ctl get ...`.
#[derive(Debug, Subcommand)]
pub enum GetWhat {
    /// Apps with their version and status.
    Apps,
    /// Hosts with their labels and state.
    Hosts,
    /// Every placed component: app, host, instances, state.
    Components,
    /// What one host runs (by id, id prefix or name).
    Inventory {
        /// The host.
        host: String,
    },
    /// Queued links: calls waiting on each sending host, in flight at the hub, dead-lettered.
    Queues,
    /// An app's stored manifest (the desired version, or --version), secret values shown as
    /// `<secret>`.
    Manifest {
        /// The app.
        name: String,
        /// A stored version (see `ctl history`).
        #[arg(long)]
        version: Option<String>,
    },
    /// A queued link's dead letters: id, when, attempts, function, last error.
    #[command(name = "deadletters", alias = "dead-letters")]
    Deadletters {
        /// `app/source->target` as `get queues` shows it, or `app/target` for every sender.
        link: lattice_protocol::queue::ops::LinkSelector,
    },
}

/// `lattice keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key pair.
    Gen {
        /// issuer (signs components), operator (the control plane), host, or user (signs `lattice ctl` requests).
        role: String,
        /// Write the key to this file (mode 0600) instead of printing the seed.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// `lattice sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The component to sign.
    pub input: PathBuf,
    /// Where to write the signed component.
    #[arg(short, long)]
    pub output: PathBuf,
    /// The issuer key file (`lattice keys gen issuer -o FILE`).
    #[arg(long, env = "LATTICE_ISSUER_KEY")]
    pub issuer: PathBuf,
    /// Name in the claims. Default: the file name without extension.
    #[arg(long)]
    pub name: Option<String>,
    /// Version in the claims.
    #[arg(long, default_value = "0.1.0")]
    pub version: String,
    /// An interface it may import beyond WASI's base (repeatable), e.g. wasi:http or wasi:keyvalue/store.
    #[arg(long = "allow")]
    pub allow: Vec<String>,
    /// Validity from now, e.g. 30d or 12h. Default: no expiry.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires_in: Option<std::time::Duration>,
    /// Not valid until this long from now.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub not_before_in: Option<std::time::Duration>,
}

/// `lattice inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The component.
    pub file: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `lattice push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The component.
    pub file: PathBuf,
    /// Tag to point at it (`name:version`). Default: from its signed claims.
    #[arg(long)]
    pub tag: Option<String>,
    /// Publish to this OCI reference (`registry/org/name:tag`) instead of the lattice, in the
    /// media types wasmCloud uses; the component must be signed.
    #[arg(long, value_name = "REF")]
    pub oci: Option<String>,
    /// Registry access (with --oci).
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The state directory of `lattice up`, whose NATS URL is used when none is given.
    #[arg(long, env = "LATTICE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `lattice compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The component: a file (pushed too, as `lattice push` would), or a digest or
    /// `name:version` tag already in the lattice.
    pub component: String,
    /// The issuer key that signs the code (`lattice keys gen issuer -o FILE`); hosts load only
    /// code an issuer they trust signed.
    #[arg(long, env = "LATTICE_ISSUER_KEY")]
    pub issuer: PathBuf,
    /// A target to compile for (repeatable): `x86_64`, `aarch64` (Linux, glibc), `host`, or a
    /// target triple. Default: x86_64 and aarch64.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// Code for hosts started with `--wasi-p3` (WASI 0.3 on: their engine differs).
    #[arg(long)]
    pub wasi_p3: bool,
    /// The state directory of `lattice up`, whose NATS URL is used when none is given.
    #[arg(long, env = "LATTICE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `lattice pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The OCI reference (`registry/org/name:tag`, `...@sha256:<hex>`, `oci://...`).
    pub reference: String,
    /// Tag to point at it in the lattice (`name:version`). Default: from its signed claims.
    #[arg(long)]
    pub tag: Option<String>,
    /// Registry access.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The state directory of `lattice up`, whose NATS URL is used when none is given.
    #[arg(long, env = "LATTICE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// How to reach OCI registries: credentials (else those of `docker login`, from
/// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, else anonymous) and which registries
/// speak plain HTTP.
#[derive(Clone, Default, Args)]
pub struct RegistryArgs {
    /// A registry (`host:port`) reached over plain HTTP instead of HTTPS. Repeatable.
    #[arg(
        long = "insecure-registry",
        env = "LATTICE_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub insecure: Vec<String>,
    /// User name for the registry's basic authentication (with --registry-password).
    #[arg(long, env = "LATTICE_REGISTRY_USER")]
    pub registry_user: Option<String>,
    /// Password for the registry's basic authentication.
    #[arg(long, env = "LATTICE_REGISTRY_PASSWORD", hide_env_values = true)]
    pub registry_password: Option<String>,
    /// A bearer token for the registry (instead of a user and password).
    #[arg(long, env = "LATTICE_REGISTRY_TOKEN", hide_env_values = true)]
    pub registry_token: Option<String>,
}

impl std::fmt::Debug for RegistryArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password or the token.
        f.debug_struct("RegistryArgs")
            .field("insecure", &self.insecure)
            .field("registry_user", &self.registry_user)
            .finish_non_exhaustive()
    }
}

/// `lattice host`: every argument goes to the `lattice-host` program as it is (see
/// `lattice-host --help`), so the two take the same flags by construction.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct HostArgs {
    /// The arguments of `lattice-host`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// `lattice control`.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The operator key file (`lattice keys gen operator -o FILE`).
    #[arg(long, env = "LATTICE_CONTROL_KEY")]
    pub key: PathBuf,
    /// Limits of the hub's streams and buckets the control plane creates or updates.
    #[command(flatten)]
    pub storage: lattice_connect::StorageArgs,
    /// The most bytes (a plain number) the artifact store holds; a push beyond it is refused.
    #[arg(long, env = "LATTICE_ARTIFACTS_MAX_BYTES",
          default_value_t = lattice_protocol::jetstream::Storage::default().artifacts_max_bytes,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub artifacts_max_bytes: i64,
    /// The most bytes (a plain number) the events stream keeps (`lattice ctl watch --since`);
    /// past it, the oldest events go.
    #[arg(long, env = "LATTICE_EVENTS_MAX_BYTES",
          default_value_t = lattice_protocol::jetstream::Storage::default().events_max_bytes,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub events_max_bytes: i64,
    /// How long events are kept (`7d`, `12h`, ...).
    #[arg(long, env = "LATTICE_EVENTS_MAX_AGE", default_value = "7d",
          value_parser = humantime::parse_duration)]
    pub events_max_age: std::time::Duration,
    /// An admin's public user key (`U...`; repeatable, or comma-separated in the variable): an
    /// admin of the role table when it is new (someone must be able to grant roles; ignored once
    /// the table exists), and join tokens it signs admit hosts.
    #[arg(long = "admin", env = "LATTICE_ADMINS", value_delimiter = ',')]
    pub admins: Vec<String>,
    /// Serve Prometheus metrics on this address (`HOST:PORT`, port 0 for any free one: the
    /// address bound is logged, `serving metrics addr=...`), at `/metrics`. Off by default.
    #[arg(long, env = "LATTICE_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// A config value, `KEY=VALUE`: any non-empty key (config keys are the component's, such as
/// `DB_URL` or `greeting`), the value as given (it may hold `=`).
fn parse_config_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` must be `KEY=VALUE`, with a key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn lattice_host_passes_every_argument_on() -> Result<(), clap::Error> {
        let args = [
            "--nats-url",
            "nats://h:4222",
            "--label",
            "zone=edge",
            "--help",
        ];
        let cli = Cli::try_parse_from(["lattice", "host"].into_iter().chain(args))?;
        let Command::Host(host) = cli.command else {
            panic!("not `host`: {cli:?}");
        };
        assert_eq!(host.args, args.map(OsString::from));
        Ok(())
    }
}
