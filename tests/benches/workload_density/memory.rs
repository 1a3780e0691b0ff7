//! What a process holds, from `/proc`: resident memory (`status`), its proportional and private
//! shares (`smaps_rollup`), threads and open files.

use anyhow::Context as _;

/// One reading of a process's memory, in KiB (threads and files as counts).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// `VmRSS`: every resident page mapped, shared ones counted whole.
    pub rss: u64,
    /// `RssAnon`: resident anonymous pages (heap, stacks, private copies).
    pub rss_anon: u64,
    /// `RssFile`: resident file-backed pages (the binary's code, mapped files).
    pub rss_file: u64,
    /// `Pss`: resident pages, each shared one divided among the processes that map it.
    pub pss: u64,
    /// `Pss_Anon` of `smaps_rollup`.
    pub pss_anon: u64,
    /// `Private_Clean` + `Private_Dirty`: pages no other process maps.
    pub private: u64,
    /// `VmHWM`: the highest `VmRSS` so far.
    pub hwm: u64,
    /// `VmSize`: address space mapped, reservations included (not memory).
    pub vm_size: u64,
    /// Threads of the process.
    pub threads: u64,
    /// Open file descriptors.
    pub fds: u64,
}

impl Memory {
    /// Reads process `pid` now.
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .with_context(|| format!("reading /proc/{pid}/smaps_rollup"))?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .with_context(|| format!("listing /proc/{pid}/fd"))?
            .count() as u64;
        let s = |name| field(&status, name);
        let r = |name| field(&rollup, name);
        Ok(Self {
            rss: s("VmRSS")?,
            rss_anon: s("RssAnon")?,
            rss_file: s("RssFile")?,
            pss: r("Pss")?,
            pss_anon: r("Pss_Anon")?,
            private: r("Private_Clean")? + r("Private_Dirty")?,
            hwm: s("VmHWM")?,
            vm_size: s("VmSize")?,
            threads: s("Threads")?,
            fds,
        })
    }

    /// The rows of a table: name, and the value of each reading.
    pub fn rows(readings: &[Memory]) -> Vec<(&'static str, Vec<u64>)> {
        let col = |f: fn(&Memory) -> u64| readings.iter().map(f).collect::<Vec<_>>();
        vec![
            ("VmRSS KiB", col(|m| m.rss)),
            ("  RssAnon KiB", col(|m| m.rss_anon)),
            ("  RssFile KiB", col(|m| m.rss_file)),
            ("Pss KiB", col(|m| m.pss)),
            ("  Pss_Anon KiB", col(|m| m.pss_anon)),
            ("Private KiB", col(|m| m.private)),
            ("VmHWM KiB", col(|m| m.hwm)),
            ("VmSize KiB", col(|m| m.vm_size)),
            ("threads", col(|m| m.threads)),
            ("open files", col(|m| m.fds)),
        ]
    }
}

/// The number in the line `name: <number> [kB]` of a `/proc` file.
fn field(text: &str, name: &str) -> anyhow::Result<u64> {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.split_whitespace().next()?.parse().ok())?
        })
        .with_context(|| format!("no `{name}` in the /proc file"))
}
