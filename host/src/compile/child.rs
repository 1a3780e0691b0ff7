//! The compiler child process, contained: what a compile may cost, and how a child that went
//! past it is told apart from one that failed.
//!
//! A component is untrusted input to cranelift, and some inputs (a huge function of deeply
//! nested blocks, thousands of locals) make it work for minutes or allocate gigabytes. The
//! child is therefore started with, set between `fork` and `exec` so that they hold from its
//! first instruction:
//!
//! - `oom_score_adj` 1000: under memory pressure the kernel kills the compiler before the host
//!   or anything else on the machine;
//! - `RLIMIT_DATA` ([`CompileLimits::memory_bytes`]): its private writable memory (heap, thread
//!   stacks, anonymous mappings), which is what a compile dirties. Unlike `RLIMIT_AS` it does
//!   not count address space merely reserved (glibc's per-thread arenas reserve 64 MiB each),
//!   so the limit is close to what the compile really uses. (A memory cgroup would measure
//!   resident pages exactly, but needs a delegated cgroup, which a host cannot count on.) An
//!   allocation past it fails, and the child aborts saying so;
//! - `RLIMIT_CPU` ([`CompileLimits::cpu`]): CPU time over all its threads; the kernel sends
//!   `SIGXCPU` past it;
//! - an alarm ([`CompileLimits::timeout`]): `SIGALRM` past the wall-clock deadline. The kernel
//!   keeps the alarm across `exec`, so the deadline holds even if the host dies meanwhile,
//!   and the host needs no watchdog thread;
//! - `RLIMIT_CORE` 0: a killed compiler leaves no core file of its memory on the disk.
//!
//! The host learns which limit was hit from how the child ended ([`LimitHit`]), and fails
//! only that workload: compiles run off the loop that applies assignments (see the agent).

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{EXIT_INVALID_COMPONENT, LoadError};
use crate::engine::Runtime;

/// At most this much of a compiler process's standard error goes into an
/// error message: enough for any error of ours, bounded for a wild one.
pub(super) const MAX_CHILD_MESSAGE: usize = 2000;

/// What a compile in a child process may cost before the child is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Wall-clock time, from the child's start (at least 1 s; whole seconds, rounded up).
    pub timeout: Duration,
    /// CPU time over all of the child's threads (at least 1 s; whole seconds, rounded up).
    pub cpu: Duration,
    /// Private writable memory (`RLIMIT_DATA`), in bytes.
    pub memory_bytes: u64,
}

/// The default of [`CompileLimits::timeout`]: a 50 MiB component (the largest a host accepts
/// by default) compiles at 1–2 MB/s per core, so a few minutes even on a slow board.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(300);
/// The default of [`CompileLimits::cpu`]: twice the timeout, since compiling uses every core.
pub const DEFAULT_COMPILE_CPU: Duration = Duration::from_secs(600);
/// The default of [`CompileLimits::memory_bytes`]: 2 GiB. Compiling the example components
/// takes well under 100 MiB; a gateway with less memory than this still loses the compiler
/// first, by its `oom_score_adj`.
pub const DEFAULT_COMPILE_MEMORY: u64 = 2 << 30;

impl Default for CompileLimits {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_COMPILE_TIMEOUT,
            cpu: DEFAULT_COMPILE_CPU,
            memory_bytes: DEFAULT_COMPILE_MEMORY,
        }
    }
}

/// Which of its [`CompileLimits`] a compiler process went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    /// Past its wall-clock deadline.
    #[error(
        "compiling took longer than this host's limit of {}s of wall-clock time and was \
         stopped: make the component smaller or simpler, or raise --compile-timeout-secs on \
         this host",
        whole_seconds(*.0)
    )]
    Time(Duration),
    /// Past its CPU time.
    #[error(
        "compiling used more than this host's limit of {}s of CPU time and was stopped: make \
         the component smaller or simpler, or raise --compile-cpu-secs on this host",
        whole_seconds(*.0)
    )]
    Cpu(Duration),
    /// Past its memory.
    #[error(
        "compiling needed more than this host's limit of {} MiB of memory and was stopped: \
         make the component smaller or simpler, or raise --compile-memory-mib on this host",
        .0 >> 20
    )]
    Memory(u64),
}

/// `duration` in whole seconds, rounded up, at least 1: what the kernel's limits take.
fn whole_seconds(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
        .max(1)
}

/// Runs the compiler process on `bytes`, within `limits`; it writes the compiled form on its
/// standard output. Returns that code, or why there is none.
pub(super) fn compile_in_child(
    (program, args): (&Path, &[OsString]),
    limits: &CompileLimits,
    runtime: &Runtime,
    bytes: &[u8],
) -> Result<Vec<u8>, LoadError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .arg("--fingerprint")
        .arg(runtime.fingerprint());
    if runtime.config().wasi_p3 {
        command.arg("--wasi-p3");
    }
    command
        .arg("--max-component-bytes")
        .arg(runtime.config().max_component_bytes.to_string())
        .arg("-")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    contain(&mut command, limits);
    let mut child = command
        .spawn()
        .map_err(|err| LoadError::Compiler(format!("cannot start {}: {err}", program.display())))?;
    // Writing all of stdin before reading stderr cannot deadlock: the child
    // reads its whole input before it writes anything but a short usage
    // error. A child that exits early closes the pipe; its status says why.
    if let Some(mut stdin) = child.stdin.take() {
        match stdin.write_all(bytes) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LoadError::Compiler(format!(
                    "sending the component to {}: {err}",
                    program.display()
                )));
            }
        }
    }
    // Bounded: the alarm set in `contain` ends the child at its deadline.
    let output = child
        .wait_with_output()
        .map_err(|err| LoadError::Compiler(format!("waiting for {}: {err}", program.display())))?;
    if output.status.success() && output.stdout.is_empty() {
        return Err(LoadError::Compiler(format!(
            "the compiler process wrote code this host cannot load: {} sent none on its \
             standard output (it must be the same build as the host)",
            program.display()
        )));
    }
    if output.status.success() {
        return Ok(output.stdout);
    }
    let message = child_message(&output.stderr);
    let signal = exit_signal(&output.status);
    if let Some(hit) = limit_hit(signal, &message, limits) {
        return Err(LoadError::Limit(hit));
    }
    if output.status.code() == Some(i32::from(EXIT_INVALID_COMPONENT)) {
        return Err(LoadError::Invalid(anyhow::anyhow!(message)));
    }
    let how = match signal {
        Some(9) => "was killed (SIGKILL: out of memory, or killed by an operator)".to_owned(),
        Some(signal) => format!("was killed by signal {signal}"),
        None => format!("failed ({})", output.status),
    };
    Err(LoadError::Compiler(if message.is_empty() {
        format!("the compiler process {how}")
    } else {
        format!("the compiler process {how}: {message}")
    }))
}

/// Which limit a child that ended by `signal` (if any), saying `message`, went past, if any.
fn limit_hit(signal: Option<i32>, message: &str, limits: &CompileLimits) -> Option<LimitHit> {
    #[cfg(unix)]
    match signal {
        Some(libc::SIGALRM) => return Some(LimitHit::Time(limits.timeout)),
        Some(libc::SIGXCPU) => return Some(LimitHit::Cpu(limits.cpu)),
        _ => {}
    }
    #[cfg(not(unix))]
    let _ = signal;
    // Rust's allocation failure (the child aborts), or a thread or mapping refused.
    let out_of_memory = [
        "memory allocation of",
        "Cannot allocate memory",
        "out of memory",
    ]
    .iter()
    .any(|needle| message.contains(needle));
    out_of_memory.then_some(LimitHit::Memory(limits.memory_bytes))
}

/// Sets up `command` to run within `limits` (see the module doc), first thing in the child.
#[cfg(unix)]
#[expect(
    unsafe_code,
    reason = "the limits are set between fork and exec, where only raw system calls are allowed"
)]
fn contain(command: &mut Command, limits: &CompileLimits) {
    use std::os::unix::process::CommandExt as _;

    let to_rlim = |n: u64| libc::rlim_t::try_from(n).unwrap_or(libc::RLIM_INFINITY);
    let cpu = to_rlim(whole_seconds(limits.cpu));
    let memory = to_rlim(limits.memory_bytes);
    let alarm = libc::c_uint::try_from(whole_seconds(limits.timeout)).unwrap_or(libc::c_uint::MAX);
    let set = |resource, soft: libc::rlim_t, hard: libc::rlim_t| {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `setrlimit` reads the struct it is given, which lives across the call.
        if unsafe { libc::setrlimit(resource, &limit) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let setup = move || {
        // Best effort: without /proc (not Linux), the limits below still hold.
        // SAFETY: a NUL-terminated path and a buffer of the given length, both static; the
        // descriptor is closed before returning.
        unsafe {
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::write(fd, b"1000".as_ptr().cast(), 4);
                libc::close(fd);
            }
        }
        set(libc::RLIMIT_CORE, 0, 0)?;
        // The hard limit a second later: SIGKILL, should SIGXCPU be ignored.
        set(libc::RLIMIT_CPU, cpu, cpu.saturating_add(1))?;
        set(libc::RLIMIT_DATA, memory, memory)?;
        // SAFETY: `alarm` has no preconditions; it survives `exec`.
        unsafe { libc::alarm(alarm) };
        Ok(())
    };
    // SAFETY: `setup` only makes async-signal-safe system calls (open, write, close,
    // setrlimit, alarm) on values computed before the fork; it allocates nothing.
    unsafe { command.pre_exec(setup) };
}

/// Elsewhere the compiler runs unconstrained.
#[cfg(not(unix))]
fn contain(_: &mut Command, _: &CompileLimits) {}

#[cfg(unix)]
fn exit_signal(status: &std::process::ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(status)
}

#[cfg(not(unix))]
fn exit_signal(_: &std::process::ExitStatus) -> Option<i32> {
    None
}

/// The gist of a child's standard error: trimmed, on one line, bounded.
pub(super) fn child_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(MAX_CHILD_MESSAGE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_messages_are_one_bounded_line() {
        assert_eq!(child_message(b"  error:\n  bad\tbody\n"), "error: bad body");
        let long = child_message("é".repeat(3 * MAX_CHILD_MESSAGE).as_bytes());
        assert_eq!(long.chars().count(), MAX_CHILD_MESSAGE + 1);
    }

    #[test]
    fn how_a_child_ended_names_the_limit() {
        let limits = CompileLimits {
            timeout: Duration::from_millis(1500),
            cpu: Duration::from_secs(3),
            memory_bytes: 64 << 20,
        };
        let hit = |signal, message| limit_hit(signal, message, &limits);
        assert_eq!(
            hit(Some(libc::SIGALRM), ""),
            Some(LimitHit::Time(limits.timeout))
        );
        assert_eq!(
            hit(Some(libc::SIGXCPU), ""),
            Some(LimitHit::Cpu(limits.cpu))
        );
        assert_eq!(
            hit(
                Some(libc::SIGABRT),
                "memory allocation of 4096 bytes failed"
            ),
            Some(LimitHit::Memory(64 << 20))
        );
        assert_eq!(hit(Some(libc::SIGKILL), ""), None);
        assert_eq!(hit(None, "type mismatch"), None);
        let text = LimitHit::Time(limits.timeout).to_string();
        assert!(
            text.contains("limit of 2s") && text.contains("--compile-timeout-secs"),
            "{text}"
        );
        let text = LimitHit::Memory(64 << 20).to_string();
        assert!(
            text.contains("64 MiB") && text.contains("--compile-memory-mib"),
            "{text}"
        );
    }
}
