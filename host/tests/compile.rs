//! The code cache: compile once, then load the compiled form; refuse what is
//! not a component before compiling anything.

mod common;

use common::{digest, hello_wasm, small_runtime};
use std::time::Duration;

use lattice_host::compile::{
    CacheOutcome, CodeCache, CompileLimits, Compiler, LimitHit, LoadError,
};
use lattice_host::engine::{EngineConfig, PoolSizing, Runtime};

#[test]
fn compiles_once_then_loads_the_cached_code() -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    let dir = tempfile::tempdir()?;
    let bytes = hello_wasm()?;
    let digest = digest(&bytes);

    let (_, first) = CodeCache::new(dir.path().into())?.load(&runtime, &digest, &bytes)?;
    assert_eq!(first, CacheOutcome::Compiled);

    // A new cache on the same directory (as after a restart) finds it.
    let cache = CodeCache::new(dir.path().into())?;
    let (_, second) = cache.load(&runtime, &digest, &bytes)?;
    assert_eq!(second, CacheOutcome::Hit);

    let hex = digest.hex();
    let expected = format!("{hex}-{}.cwasm", runtime.fingerprint());
    let names: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert_eq!(names, [expected], "only the compiled file, no temporaries");
    Ok(())
}

#[test]
fn a_damaged_cache_entry_is_compiled_again_and_replaced() -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    let dir = tempfile::tempdir()?;
    let cache = CodeCache::new(dir.path().into())?;
    let bytes = hello_wasm()?;
    let digest = digest(&bytes);
    cache.load(&runtime, &digest, &bytes)?;

    let hex = digest.hex();
    let path = dir
        .path()
        .join(format!("{hex}-{}.cwasm", runtime.fingerprint()));
    std::fs::write(&path, b"\x7fELF but not really")?;

    let (_, outcome) = cache.load(&runtime, &digest, &bytes)?;
    assert_eq!(outcome, CacheOutcome::Compiled);
    let (_, outcome) = cache.load(&runtime, &digest, &bytes)?;
    assert_eq!(outcome, CacheOutcome::Hit);
    Ok(())
}

#[test]
fn core_modules_and_garbage_are_refused_with_a_reason() -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    let dir = tempfile::tempdir()?;
    let cache = CodeCache::new(dir.path().into())?;

    let core_module = b"\0asm\x01\0\0\0";
    let err = cache
        .load(&runtime, &digest(core_module), core_module)
        .err()
        .ok_or_else(|| anyhow::anyhow!("a core module was accepted"))?;
    assert!(matches!(err, LoadError::CoreModule), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("not a WebAssembly component (it is a core module; wrap it with"),
        "{message}"
    );

    let garbage = b"<html>not found</html>";
    let err = cache
        .load(&runtime, &digest(garbage), garbage)
        .err()
        .ok_or_else(|| anyhow::anyhow!("garbage was accepted"))?;
    assert!(matches!(err, LoadError::NotWasm), "{err:?}");
    assert!(err.to_string().starts_with("not WebAssembly"), "{err}");

    // A valid header with a malformed body fails in the compiler.
    let truncated = b"\0asm\x0d\0\x01\0\x07";
    let err = cache
        .load(&runtime, &digest(truncated), truncated)
        .err()
        .ok_or_else(|| anyhow::anyhow!("a truncated component was accepted"))?;
    assert!(matches!(err, LoadError::Invalid(_)), "{err:?}");

    // Nothing refused was written to the cache.
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}

#[test]
fn oversized_components_are_refused_before_compiling() -> anyhow::Result<()> {
    let bytes = hello_wasm()?;
    let runtime = Runtime::new(&EngineConfig {
        max_component_bytes: bytes.len() - 1,
        pool: PoolSizing::OnDemand,
        ..EngineConfig::default()
    })?;
    let dir = tempfile::tempdir()?;
    let cache = CodeCache::new(dir.path().into())?;
    let err = cache
        .load(&runtime, &digest(&bytes), &bytes)
        .err()
        .ok_or_else(|| anyhow::anyhow!("an oversized component was accepted"))?;
    assert!(
        matches!(err, LoadError::TooLarge { size, max } if size == bytes.len() && max == size - 1),
        "{err:?}"
    );
    assert!(err.to_string().contains("more than the"), "{err}");
    Ok(())
}

/// The cache takes a `Digest`, which only a sha256 in lowercase hex parses to: a path-like
/// digest cannot reach it.
#[test]
fn digests_that_are_not_sha256_are_refused() {
    let err = lattice_protocol::digest::Digest::parse("sha256:../../escape");
    assert!(err.is_err(), "a path-like digest was accepted: {err:?}");
}

/// A runtime whose compiler is `/bin/sh -c script`, standing in for a compiler
/// process that misbehaves in a chosen way.
fn runtime_compiling_with(script: &str) -> anyhow::Result<Runtime> {
    runtime_compiling_within(script, CompileLimits::default())
}

/// [`runtime_compiling_with`], the compiler process held to `limits`.
fn runtime_compiling_within(script: &str, limits: CompileLimits) -> anyhow::Result<Runtime> {
    Runtime::new(&EngineConfig {
        pool: PoolSizing::OnDemand,
        compiler: Compiler::Subprocess {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into(), "compiler".into()],
            limits,
        },
        ..EngineConfig::default()
    })
}

/// The smallest component: a header the host lets through to the compiler.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

fn load_error(runtime: &Runtime, bytes: &[u8]) -> anyhow::Result<(LoadError, usize)> {
    let dir = tempfile::tempdir()?;
    let cache = CodeCache::new(dir.path().into())?;
    let err = cache
        .load(runtime, &digest(bytes), bytes)
        .err()
        .ok_or_else(|| anyhow::anyhow!("the component was loaded"))?;
    Ok((err, std::fs::read_dir(dir.path())?.count()))
}

#[test]
fn a_compiler_process_refusing_the_component_is_an_invalid_component() -> anyhow::Result<()> {
    let runtime = runtime_compiling_with("echo 'unknown section 0x7f' >&2; exit 65")?;
    let (err, files) = load_error(&runtime, EMPTY_COMPONENT)?;
    assert!(matches!(err, LoadError::Invalid(_)), "{err:?}");
    assert_eq!(err.to_string(), "invalid component: unknown section 0x7f");
    assert_eq!(files, 0);
    Ok(())
}

#[test]
fn a_failing_or_killed_compiler_process_is_reported_as_such() -> anyhow::Result<()> {
    let runtime = runtime_compiling_with("echo 'no space left on device' >&2; exit 1")?;
    let (err, files) = load_error(&runtime, EMPTY_COMPONENT)?;
    assert!(matches!(err, LoadError::Compiler(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "compiling in a separate process failed: the compiler process failed \
         (exit status: 1): no space left on device"
    );
    assert_eq!(files, 0);

    let runtime = runtime_compiling_with("kill -9 $$")?;
    let (err, _) = load_error(&runtime, EMPTY_COMPONENT)?;
    assert!(matches!(err, LoadError::Compiler(_)), "{err:?}");
    assert!(err.to_string().contains("was killed (SIGKILL"), "{err}");

    // Exiting without writing the code is no success either.
    let runtime = runtime_compiling_with("exit 0")?;
    let (err, _) = load_error(&runtime, EMPTY_COMPONENT)?;
    assert!(
        err.to_string()
            .contains("the compiler process wrote code this host cannot load"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_compiler_that_cannot_start_is_reported() -> anyhow::Result<()> {
    let runtime = Runtime::new(&EngineConfig {
        pool: PoolSizing::OnDemand,
        compiler: Compiler::Subprocess {
            program: "/nonexistent/lattice-compiler".into(),
            args: Vec::new(),
            limits: CompileLimits::default(),
        },
        ..EngineConfig::default()
    })?;
    let (err, _) = load_error(&runtime, EMPTY_COMPONENT)?;
    assert!(matches!(err, LoadError::Compiler(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot start /nonexistent/lattice-compiler"),
        "{err}"
    );

    // What the host refuses by itself never reaches the compiler process.
    let (err, _) = load_error(&runtime, b"\0asm\x01\0\0\0")?;
    assert!(matches!(err, LoadError::CoreModule), "{err:?}");
    Ok(())
}

/// Limits small enough to trip at once, each test raising the one it does not test.
fn tight(timeout: u64, cpu: u64, memory_mib: u64) -> CompileLimits {
    CompileLimits {
        timeout: Duration::from_secs(timeout),
        cpu: Duration::from_secs(cpu),
        memory_bytes: memory_mib << 20,
    }
}

#[test]
fn a_compiler_process_past_its_deadline_is_stopped_and_named() -> anyhow::Result<()> {
    // `exec`: the shell becomes the sleeper, which inherits the deadline (an alarm survives
    // exec) and is the process whose end the host sees.
    let limits = tight(1, 600, 1024);
    let runtime = runtime_compiling_within("exec sleep 600", limits)?;
    let (err, files) = load_error(&runtime, EMPTY_COMPONENT)?;
    assert!(
        matches!(err, LoadError::Limit(LimitHit::Time(t)) if t == limits.timeout),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("limit of 1s of wall-clock time")
            && err.to_string().contains("--compile-timeout-secs"),
        "{err}"
    );
    assert_eq!(files, 0);
    Ok(())
}

#[test]
fn a_compiler_process_past_its_cpu_time_is_stopped_and_named() -> anyhow::Result<()> {
    let limits = tight(600, 1, 1024);
    let runtime = runtime_compiling_within("while :; do :; done", limits)?;
    let (err, _) = load_error(&runtime, EMPTY_COMPONENT)?;
    assert!(
        matches!(err, LoadError::Limit(LimitHit::Cpu(t)) if t == limits.cpu),
        "{err:?}"
    );
    assert!(err.to_string().contains("--compile-cpu-secs"), "{err}");
    Ok(())
}

#[test]
fn a_compiler_process_is_the_first_to_go_and_holds_its_limits_from_the_start() -> anyhow::Result<()>
{
    // The child reports what it runs with, and fails so that its report comes back.
    let limits = tight(7, 5, 300);
    let script = "printf 'oom=%s cpu=%s data=%s core=%s' \"$(cat /proc/self/oom_score_adj)\" \
                  \"$(ulimit -t)\" \"$(ulimit -d)\" \"$(ulimit -c)\" >&2; exit 1";
    let runtime = runtime_compiling_within(script, limits)?;
    let (err, _) = load_error(&runtime, EMPTY_COMPONENT)?;
    assert!(matches!(err, LoadError::Compiler(_)), "{err:?}");
    // `ulimit -d` is in KiB.
    let expected = format!("oom=1000 cpu=5 data={} core=0", 300 * 1024);
    assert!(err.to_string().ends_with(&expected), "{err}");
    Ok(())
}
