//! The compiler child process: the real `lattice-host` binary compiles components in
//! a child process (`__compile`) and serves the code it leaves in its cache; the child is held
//! to the host's compile limits, and a compile bomb fails only its own workload.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use std::time::Duration;

use futures::StreamExt as _;
use lattice_host::compile::{
    CacheOutcome, CodeCache, CompileLimits, Compiler, LimitHit, LoadError,
};
use lattice_host::engine::{EngineConfig, PoolSizing, Runtime};
use lattice_protocol::digest::Digest;
use lattice_protocol::envelope;
use lattice_protocol::messages::{AppState, Event, EventKind, FailureReason};
use lattice_protocol::names::AppName;
use lattice_protocol::subject::Subject;
use lattice_tests::edge::HostProcess;
use lattice_tests::{
    TestLattice, WAIT, endpoint, eventually, hello_manifest, hello_wasm, http_get, lattice_bin,
};

/// A component that the control plane and the host let through to the compiler (it parses, and
/// exports `wasi:http/incoming-handler`) and that the compiler refuses: its handler adds two
/// values it never pushed.
fn uncompilable() -> Vec<u8> {
    let mut bytes = lattice_test_guests::trapping();
    // The handler's body: its size, no locals, `unreachable`, `end`.
    let body = [0x03, 0x00, 0x00, 0x0b];
    let places: Vec<usize> = bytes
        .windows(body.len())
        .enumerate()
        .filter(|(_, w)| *w == body)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(places.len(), 1, "the handler's body is found once");
    // `unreachable` becomes `i32.add`, with an empty stack.
    bytes[places[0] + 2] = 0x6a;
    bytes
}

/// `text` without the terminal colour sequences the host's log may carry.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // `ESC [ ... m`
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The names of the files in the host's compiled-code cache.
fn compiled_files(state_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(state_dir.join("compiled"))? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

#[tokio::test]
async fn a_host_process_compiles_in_a_child_and_reports_what_it_refuses() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("gateway");
    let host = HostProcess::start_direct(&t, "gateway", &state_dir, &[])?;
    t.wait_for("the host to report", || async {
        Ok(t.ctl.hosts().await?.iter().any(|h| h.name == "gateway"))
    })
    .await?;

    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl
        .deploy(&hello_manifest(
            "hello",
            "v1",
            &image.to_string(),
            "Hi",
            "127.0.0.1:0",
        ))
        .await?;
    let addr = endpoint(&t.wait_deployed("hello").await?)?;
    let (code, body) = http_get(&addr, "/").await?;
    assert_eq!(
        (code, body.as_str()),
        (200, "Hi from Lattice (host gateway)\n")
    );
    let log_text = without_colours(&host.log_text());
    assert!(
        log_text
            .lines()
            .any(|l| l.contains("compiled component") && l.contains("in_child_process=true")),
        "{log_text}"
    );
    let files = compiled_files(&state_dir)?;
    assert!(
        files.len() == 1 && files[0].ends_with(".cwasm"),
        "only the compiled file, no temporaries: {files:?}"
    );

    // A component the compiler process refuses fails its workload with the compiler's reason;
    // the host goes on serving the rest.
    let bad = t.push(&t.sign(&uncompilable(), "bad", "0.1.0")).await?;
    t.ctl
        .deploy(&hello_manifest(
            "bad",
            "v1",
            &bad.to_string(),
            "Hi",
            "127.0.0.1:0",
        ))
        .await?;
    let status = t
        .wait_status("bad", "the app to fail", |s| {
            s.status == lattice_protocol::messages::AppState::Failed
        })
        .await?;
    assert!(
        status.message.contains("invalid component: "),
        "{}",
        status.message
    );
    let reasons: Vec<_> = status.components.iter().map(|c| c.reason).collect();
    assert_eq!(
        reasons,
        [Some(
            lattice_protocol::messages::FailureReason::CompileError
        )],
        "{status:?}"
    );
    assert_eq!(http_get(&addr, "/").await?.0, 200);
    assert_eq!(compiled_files(&state_dir)?.len(), 1, "nothing more cached");
    Ok(())
}

/// A runtime compiling with `lattice-host __compile`, as `lattice-host` does.
fn runtime_compiling_in_lattice() -> anyhow::Result<Runtime> {
    Runtime::new(&EngineConfig {
        pool: PoolSizing::OnDemand,
        compiler: Compiler::Subprocess {
            program: lattice_bin().with_file_name("lattice-host"),
            args: vec!["__compile".into()],
            limits: CompileLimits::default(),
        },
        ..EngineConfig::default()
    })
}

#[test]
fn the_lattice_binary_compiles_code_the_host_loads() -> anyhow::Result<()> {
    let runtime = runtime_compiling_in_lattice()?;
    let dir = tempfile::tempdir()?;
    let bytes = hello_wasm();
    let digest = Digest::of(&bytes);

    let cache = CodeCache::new(dir.path().into())?;
    let (component, outcome) = cache.load(&runtime, &digest, &bytes)?;
    assert_eq!(outcome, CacheOutcome::Compiled);
    assert!(
        component
            .component_type()
            .exports(runtime.engine())
            .any(|(name, _)| name.starts_with("wasi:http/incoming-handler")),
        "the loaded code is hello's"
    );
    let (_, outcome) = CodeCache::new(dir.path().into())?.load(&runtime, &digest, &bytes)?;
    assert_eq!(outcome, CacheOutcome::Hit);

    let bad = uncompilable();
    let err = cache
        .load(&runtime, &Digest::of(&bad), &bad)
        .err()
        .ok_or_else(|| anyhow::anyhow!("an uncompilable component was loaded"))?;
    assert!(matches!(err, LoadError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("type mismatch"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
    Ok(())
}

#[test]
fn the_compiler_process_refuses_to_compile_for_another_engine() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("hello.cwasm");
    let mut child = Command::new(lattice_bin().with_file_name("lattice-host"))
        .args(["__compile", "--fingerprint", "0000000000000000"])
        .args(["--max-component-bytes", "100000000", "-"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(&hello_wasm())?;
    let output = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not for the host's engine 0000000000000000"),
        "{stderr}"
    );
    assert!(!out.exists());
    Ok(())
}

/// The compile bomb of these tests: well past the limits they set, whichever trips first.
fn bomb() -> Vec<u8> {
    lattice_test_guests::compile_bomb(BOMB_LOCALS, BOMB_DEPTH)
}

/// Measured with the debug build: about 25 s and 250 MiB for 5,000 × 50, growing with both.
const BOMB_LOCALS: u32 = 8_000;
const BOMB_DEPTH: u32 = 60;

/// A runtime compiling with `lattice-host __compile` within `limits`.
fn runtime_compiling_within(limits: CompileLimits) -> anyhow::Result<Runtime> {
    Runtime::new(&EngineConfig {
        pool: PoolSizing::OnDemand,
        compiler: Compiler::Subprocess {
            program: lattice_bin().with_file_name("lattice-host"),
            args: vec!["__compile".into()],
            limits,
        },
        ..EngineConfig::default()
    })
}

/// What loading `bytes` in a fresh cache gives with `runtime`.
fn load_in_fresh_cache(runtime: &Runtime, bytes: &[u8]) -> anyhow::Result<Result<(), LoadError>> {
    let dir = tempfile::tempdir()?;
    let cache = CodeCache::new(dir.path().into())?;
    Ok(cache.load(runtime, &Digest::of(bytes), bytes).map(drop))
}

#[test]
fn the_compile_bomb_trips_the_memory_and_cpu_limits_that_hello_fits_in() -> anyhow::Result<()> {
    // Each limit alone is tight, the others are far: the one that stops the bomb is named.
    let memory = CompileLimits {
        timeout: Duration::from_secs(600),
        cpu: Duration::from_secs(600),
        memory_bytes: 128 << 20,
    };
    let cpu = CompileLimits {
        timeout: Duration::from_secs(600),
        cpu: Duration::from_secs(3),
        memory_bytes: 16 << 30,
    };
    for limits in [memory, cpu] {
        let runtime = runtime_compiling_within(limits)?;
        // A real component compiles within the same limits.
        load_in_fresh_cache(&runtime, &hello_wasm())??;
        let err = load_in_fresh_cache(&runtime, &bomb())?
            .err()
            .ok_or_else(|| anyhow::anyhow!("the bomb compiled within {limits:?}"))?;
        let expected = if limits == memory {
            LimitHit::Memory(limits.memory_bytes)
        } else {
            LimitHit::Cpu(limits.cpu)
        };
        assert!(
            matches!(&err, LoadError::Limit(hit) if *hit == expected),
            "{limits:?}: {err:?}"
        );
    }
    Ok(())
}

/// The pids of the compiler processes (`__compile`) that `parent` runs now.
fn compilers_of(parent: u32) -> anyhow::Result<Vec<u32>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process gone meanwhile is not one of them.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; `comm` may hold anything but ends at the last `)`.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if state == Some("Z") || ppid != Some(parent.to_string().as_str()) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|arg| arg == b"__compile") {
            found.push(pid);
        }
    }
    Ok(found)
}

/// Whether process `pid` still runs (exited and not yet reaped counts as gone).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Waits (at most [`WAIT`]) for an event on `events` that `wanted` accepts.
async fn next_event(
    events: &mut async_nats::Subscriber,
    wanted: impl Fn(&Event) -> bool,
) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, async {
        while let Some(msg) = events.next().await {
            if envelope::decode::<Event>(&msg.payload).is_ok_and(|e| wanted(&e)) {
                return Ok(());
            }
        }
        anyhow::bail!("the event stream ended")
    })
    .await?
}

#[tokio::test]
async fn a_compile_bomb_fails_alone_while_a_stop_and_a_start_apply() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("gateway");
    // hello compiles in well under a second; the bomb runs into the deadline.
    let host =
        HostProcess::start_direct(&t, "gateway", &state_dir, &["--compile-timeout-secs", "30"])?;
    let host_pid = host.pid();
    t.wait_for("the host to report", || async {
        Ok(t.ctl.hosts().await?.iter().any(|h| h.name == "gateway"))
    })
    .await?;
    let hello = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let t = &t;
    let deploy = |app: &'static str, greeting: &'static str| {
        let manifest = hello_manifest(app, "v1", &hello.to_string(), greeting, "127.0.0.1:0");
        async move { t.ctl.deploy(&manifest).await }
    };
    deploy("neighbour", "Hi").await?;
    deploy("old", "Old").await?;
    let neighbour = endpoint(&t.wait_deployed("neighbour").await?)?;
    let old = endpoint(&t.wait_deployed("old").await?)?;

    let mut events = t
        .client
        .subscribe(Subject::events(&t.lattice).to_string())
        .await?;
    lattice_tests::synced(&t.client).await?;
    let bomb = t.push(&t.sign(&bomb(), "bomb", "0.1.0")).await?;
    t.ctl
        .deploy(&hello_manifest(
            "bomb",
            "v1",
            &bomb.to_string(),
            "Boom",
            "127.0.0.1:0",
        ))
        .await?;

    // The bomb's compiler runs, first in line for the kernel's OOM killer.
    let mut compiler = None;
    eventually(WAIT, "the bomb's compiler process to start", || {
        compiler = compilers_of(host_pid)
            .ok()
            .and_then(|pids| pids.first().copied());
        std::future::ready(Ok(compiler.is_some()))
    })
    .await?;
    let compiler = compiler.ok_or_else(|| anyhow::anyhow!("no compiler process"))?;
    let adj = std::fs::read_to_string(format!("/proc/{compiler}/oom_score_adj"))?;
    assert_eq!(adj.trim(), "1000");

    // While it compiles, one app stops and another starts.
    t.ctl.undeploy(&AppName::new("old")?).await?;
    deploy("new", "New").await?;
    let new = endpoint(&t.wait_deployed("new").await?)?;
    assert_eq!(
        http_get(&new, "/").await?,
        (200, "New from Lattice (host gateway)\n".to_owned())
    );
    eventually(WAIT, "the old app to stop serving", || async {
        Ok(http_get(&old, "/").await.is_err())
    })
    .await?;
    assert!(
        runs(compiler),
        "the bomb's compile was over before the stop and the start applied: make it bigger"
    );

    // The bomb fails by the limit, with its reason and an event; the others serve on.
    let status = t
        .wait_status("bomb", "the bomb to fail", |s| s.status == AppState::Failed)
        .await?;
    let reasons: Vec<_> = status.components.iter().map(|c| c.reason).collect();
    assert_eq!(reasons, [Some(FailureReason::CompileLimit)], "{status:?}");
    assert!(
        status.message.contains("limit of 30s of wall-clock time")
            && status.message.contains("--compile-timeout-secs"),
        "{}",
        status.message
    );
    next_event(&mut events, |e| {
        e.kind == EventKind::Workload
            && e.app.as_ref().is_some_and(|a| a.as_str() == "bomb")
            && e.message.contains("failed")
    })
    .await?;
    assert!(!runs(compiler), "the bomb's compiler process is gone");
    for (addr, greeting) in [(&neighbour, "Hi"), (&new, "New")] {
        assert_eq!(
            http_get(addr, "/").await?,
            (200, format!("{greeting} from Lattice (host gateway)\n"))
        );
    }
    Ok(())
}
