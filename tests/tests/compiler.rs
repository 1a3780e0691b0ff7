//! The compiler child process: the real `lattice-host` binary compiles components in
//! a child process (`__compile`) and serves the code it leaves in its cache.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use lattice_host::compile::{CacheOutcome, CodeCache, Compiler, LoadError};
use lattice_host::engine::{EngineConfig, PoolSizing, Runtime};
use lattice_protocol::digest::Digest;
use lattice_tests::{TestLattice, endpoint, hello_manifest, hello_wasm, http_get, lattice_bin};

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

/// A `lattice-host` process logging at `info` to `log`, SIGKILLed on drop.
struct HostProcess(Child);

impl HostProcess {
    fn start(t: &TestLattice, state_dir: &Path, log: &Path) -> anyhow::Result<Self> {
        let child = Command::new(lattice_bin().with_file_name("lattice-host"))
            .args(["--nats-url", &t.nats.url, "--lattice", t.lattice.as_str()])
            .args(["--name", "gateway", "--heartbeat-secs", "1"])
            .args(["--trust-issuer", t.issuer.public_key().as_str()])
            .args(["--trust-operator", t.operator.public_key().as_str()])
            .env("LATTICE_JOIN_TOKEN", t.join_token())
            .arg("--state-dir")
            .arg(state_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        Ok(Self(child))
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let (state_dir, log) = (dir.path().join("gateway"), dir.path().join("host.log"));
    let _host = HostProcess::start(&t, &state_dir, &log)?;
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
    let log_text = without_colours(&std::fs::read_to_string(&log)?);
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
