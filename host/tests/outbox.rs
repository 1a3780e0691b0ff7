//! The durable outbox (`lattice_host::queue::outbox`): order, group commit, capacity with both
//! policies, expiry, reopening (and its gauges), lane sequences and the outbox's id, a child process killed with
//! SIGKILL mid-stream, and a write failure from the kernel (a file-size limit) in a child
//! process.
//!
//! The child-process tests re-run this test binary (`std::env::current_exe()`) with one test
//! selected (`child_*`) and an environment variable saying what to do; without it those tests
//! return at once.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lattice_host::queue::outbox::{
    FullPolicy, Outbox, OutboxConfig, OutboxEntry, OutboxError, OutboxEvent, Sequence,
};
use redb::ReadableTable as _;

const HOUR: Duration = Duration::from_secs(3600);

fn entry(key: &str, payload: &str) -> OutboxEntry {
    OutboxEntry::new(key, payload.as_bytes().to_vec(), HOUR)
}

/// `e` as `peek` returns it: with the lane sequence the writer gave it.
fn with_lane_seq(mut e: OutboxEntry, lane_seq: u64) -> OutboxEntry {
    e.lane_seq = lane_seq;
    e
}

fn open(dir: &Path, config: OutboxConfig) -> Outbox {
    Outbox::open(dir.join("outbox.redb"), config).expect("open the outbox")
}

#[tokio::test]
async fn peek_returns_entries_in_order_and_remove_acks_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = open(dir.path(), OutboxConfig::default());
    let mut appended = Vec::new();
    for i in 0..20 {
        let key = if i % 2 == 0 {
            "app/a -> t"
        } else {
            "app/b -> t"
        };
        let e = entry(key, &format!("m{i}"));
        let seq = outbox.append(e.clone()).await.expect("append");
        appended.push((seq, with_lane_seq(e, i / 2 + 1)));
    }
    assert!(appended.windows(2).all(|w| w[0].0 < w[1].0));

    let all = outbox.peek(100).await.expect("peek");
    assert_eq!(all, appended, "everything, in sequence order, unchanged");
    let first5 = outbox.peek(5).await.expect("peek");
    assert_eq!(first5, appended[..5]);
    let after = outbox
        .peek_after(appended[4].0, 3)
        .await
        .expect("peek_after");
    assert_eq!(after, appended[5..8]);
    // Per stream key, the order of the appends.
    let a: Vec<_> = all
        .iter()
        .filter(|(_, e)| e.stream_key == "app/a -> t")
        .map(|(_, e)| e.payload.clone())
        .collect();
    let expected: Vec<_> = (0..20)
        .step_by(2)
        .map(|i| bytes::Bytes::from(format!("m{i}")))
        .collect();
    assert_eq!(a, expected);

    let acked: Vec<Sequence> = appended[..10].iter().map(|(s, _)| *s).collect();
    assert_eq!(outbox.remove(&acked).await.expect("remove"), 10);
    assert_eq!(outbox.remove(&acked).await.expect("remove again"), 0);
    assert_eq!(outbox.peek(100).await.expect("peek"), appended[10..]);
    let stats = outbox.stats();
    assert_eq!(stats.pending, 10);
    assert_eq!(
        stats.bytes,
        appended[10..]
            .iter()
            .map(|(_, e)| e.encoded_len() as u64)
            .sum::<u64>()
    );
    assert!(stats.oldest_age.is_some());
    assert_eq!(stats.appended_total, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_batches_concurrent_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = open(dir.path(), OutboxConfig::default());
    const TASKS: usize = 64;
    const EACH: usize = 10;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let key = format!("app/c{t} -> target");
                let mut seqs = Vec::new();
                for i in 0..EACH {
                    seqs.push(
                        outbox
                            .append(entry(&key, &i.to_string()))
                            .await
                            .expect("append"),
                    );
                }
                seqs
            })
        })
        .collect();
    let mut per_task = Vec::new();
    for t in tasks {
        per_task.push(t.await.expect("task"));
    }
    let stats = outbox.stats();
    let appends = (TASKS * EACH) as u64;
    assert_eq!(stats.appended_total, appends);
    assert_eq!(stats.pending, appends);
    eprintln!("{appends} appends in {} commits", stats.commits);
    assert!(
        stats.commits * 4 <= appends,
        "{} commits for {appends} concurrent appends: not batched",
        stats.commits
    );
    // Each task's appends keep their order.
    let all = outbox.peek(usize::MAX).await.expect("peek");
    for (t, seqs) in per_task.iter().enumerate() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        let key = format!("app/c{t} -> target");
        let payloads: Vec<_> = all
            .iter()
            .filter(|(_, e)| e.stream_key == key)
            .map(|(_, e)| String::from_utf8(e.payload.to_vec()).expect("utf8"))
            .collect();
        let expected: Vec<_> = (0..EACH).map(|i| i.to_string()).collect();
        assert_eq!(payloads, expected);
    }
}

#[tokio::test]
async fn full_outbox_refuses_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = OutboxConfig {
        capacity_entries: 3,
        ..OutboxConfig::default()
    };
    let outbox = open(dir.path(), config);
    for i in 0..3 {
        outbox
            .append(entry("k", &i.to_string()))
            .await
            .expect("append");
    }
    let err = outbox.append(entry("k", "3")).await.expect_err("full");
    assert!(matches!(
        err,
        OutboxError::Full {
            pending: 3,
            capacity_entries: 3,
            ..
        }
    ));
    assert!(err.to_string().contains("outbox is full"), "{err}");
    assert_eq!(outbox.peek(10).await.expect("peek").len(), 3);
    // Room again after an ack.
    let first = outbox.peek(1).await.expect("peek")[0].0;
    outbox.remove(&[first]).await.expect("remove");
    outbox
        .append(entry("k", "4"))
        .await
        .expect("append after ack");

    // By bytes too; and an entry bigger than the outbox is refused under any policy.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let small = OutboxEntry::new("k", vec![0u8; 100], HOUR);
    let config = OutboxConfig {
        capacity_bytes: 2 * small.encoded_len() as u64,
        policy: FullPolicy::DropOldest,
        ..OutboxConfig::default()
    };
    let outbox = open(dir2.path(), config);
    let big = OutboxEntry::new("k", vec![0u8; 1000], HOUR);
    assert!(matches!(
        outbox.append(big).await,
        Err(OutboxError::TooLarge { .. })
    ));
    assert_eq!(outbox.stats().pending, 0);
}

#[tokio::test]
async fn drop_oldest_makes_room_and_reports_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let config = OutboxConfig {
        capacity_entries: 3,
        policy: FullPolicy::DropOldest,
        on_event: Some(Arc::new(move |e: &OutboxEvent| {
            seen.lock().expect("lock").push(e.clone())
        })),
        ..OutboxConfig::default()
    };
    let outbox = open(dir.path(), config);
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(
            outbox
                .append(entry("k", &i.to_string()))
                .await
                .expect("append"),
        );
    }
    let left: Vec<Sequence> = outbox
        .peek(10)
        .await
        .expect("peek")
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(left, seqs[2..]);
    let stats = outbox.stats();
    assert_eq!((stats.pending, stats.dropped_total), (3, 2));
    let dropped: Vec<Sequence> = events
        .lock()
        .expect("lock")
        .iter()
        .flat_map(|e| match e {
            OutboxEvent::Dropped(d) => d.iter().map(|r| r.seq).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(dropped, seqs[..2]);
    let dropped_lane_seqs: Vec<(String, u64)> = events
        .lock()
        .expect("lock")
        .iter()
        .flat_map(|e| match e {
            OutboxEvent::Dropped(d) => d.iter().map(|r| (r.lane.clone(), r.lane_seq)).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(
        dropped_lane_seqs,
        [("k".to_string(), 1), ("k".to_string(), 2)]
    );
}

#[tokio::test]
async fn expired_entries_are_not_returned_and_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = open(dir.path(), OutboxConfig::default());
    let short = OutboxEntry::new("k", b"short".to_vec(), Duration::from_millis(50));
    let long = entry("k", "long");
    outbox.append(short.clone()).await.expect("append");
    outbox.append(long.clone()).await.expect("append");
    assert_eq!(outbox.peek(10).await.expect("peek").len(), 2);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let left = outbox.peek(10).await.expect("peek");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1, with_lane_seq(long, 2));
    let stats = outbox.stats();
    assert_eq!((stats.pending, stats.expired_total), (1, 1));

    // sweep() on its own; an already-expired entry (ttl 0) goes at once.
    outbox
        .append(OutboxEntry::new("k", b"x".to_vec(), Duration::ZERO))
        .await
        .expect("append");
    assert_eq!(outbox.sweep().await.expect("sweep"), 1);
    assert_eq!(outbox.stats().expired_total, 2);

    // A full outbox makes room from expired entries before refusing.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let config = OutboxConfig {
        capacity_entries: 1,
        ..OutboxConfig::default()
    };
    let outbox = open(dir2.path(), config);
    outbox
        .append(OutboxEntry::new(
            "k",
            b"x".to_vec(),
            Duration::from_millis(10),
        ))
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(30)).await;
    outbox
        .append(entry("k", "y"))
        .await
        .expect("room from expiry");
    assert_eq!(outbox.stats().expired_total, 1);
}

#[tokio::test]
async fn reopening_keeps_entries_and_sequences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = open(dir.path(), OutboxConfig::default());
    let mut appended = Vec::new();
    for i in 0..5 {
        let e = entry("k", &i.to_string());
        let seq = outbox.append(e.clone()).await.expect("append");
        appended.push((seq, with_lane_seq(e, i + 1)));
    }
    // Remove the last one, so the next sequence must come from what was stored, not the table.
    outbox.remove(&[appended[4].0]).await.expect("remove");
    let last = appended.pop().expect("last").0;
    drop(outbox);

    let outbox = open(dir.path(), OutboxConfig::default());
    assert_eq!(outbox.peek(10).await.expect("peek"), appended);
    assert_eq!(outbox.stats().pending, 4);
    let bytes: u64 = appended.iter().map(|(_, e)| e.encoded_len() as u64).sum();
    assert_eq!(outbox.stats().bytes, bytes);
    let next = outbox.append(entry("k", "after")).await.expect("append");
    assert!(next > last, "{next} reuses a sequence (last was {last})");
    let bytes = bytes + entry("k", "after").encoded_len() as u64;
    assert_eq!(outbox.stats().bytes, bytes);
    drop(outbox);

    // Written by a release that did not keep the pending bytes (none stored), or that changed
    // the entries without updating them (stored for another number of entries): they are
    // counted from the entries.
    let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("outbox_meta");
    let edit = |f: &dyn Fn(&mut redb::Table<'_, &str, u64>)| {
        let db = redb::Database::create(dir.path().join("outbox.redb")).expect("open the file");
        let tx = db.begin_write().expect("write");
        f(&mut tx.open_table(meta).expect("meta"));
        tx.commit().expect("commit");
    };
    edit(&|meta| {
        assert_eq!(
            meta.get("bytes").expect("get").map(|v| v.value()),
            Some(bytes)
        );
        assert_eq!(
            meta.get("bytes_of").expect("get").map(|v| v.value()),
            Some(5)
        );
        meta.remove("bytes").expect("remove");
    });
    let outbox = open(dir.path(), OutboxConfig::default());
    assert_eq!(outbox.stats().bytes, bytes);
    assert_eq!(outbox.stats().pending, 5);
    drop(outbox);
    edit(&|meta| {
        meta.insert("bytes", 1).expect("insert");
        meta.insert("bytes_of", 4).expect("insert");
    });
    let outbox = open(dir.path(), OutboxConfig::default());
    assert_eq!(outbox.stats().bytes, bytes);
}

// ---- Lanes and the outbox's id ----

/// The lane sequences of what `peek` returns, by lane.
async fn lane_seqs(outbox: &Outbox) -> BTreeMap<String, Vec<u64>> {
    let mut by_lane: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (_, e) in outbox.peek(usize::MAX).await.expect("peek") {
        by_lane.entry(e.lane).or_default().push(e.lane_seq);
    }
    by_lane
}

#[tokio::test]
async fn lane_sequences_count_per_lane_and_come_with_peek() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = open(dir.path(), OutboxConfig::default());
    // Two lanes interleaved; lane "a" spans two stream keys, and "k" is a stream key's own lane.
    let plan = [
        ("app/x -> t", Some("a")),
        ("app/y -> t", Some("b")),
        ("app/y -> t", Some("a")),
        ("k", None),
        ("app/x -> t", Some("b")),
        ("app/x -> t", Some("a")),
        ("k", None),
    ];
    for (i, (key, lane)) in plan.iter().enumerate() {
        let mut e = entry(key, &i.to_string());
        if let Some(lane) = lane {
            e = e.in_lane(*lane);
        }
        e.lane_seq = 99; // ignored: the writer assigns it
        outbox.append(e).await.expect("append");
    }
    let peeked = outbox.peek(usize::MAX).await.expect("peek");
    let got: Vec<(&str, &str, u64)> = peeked
        .iter()
        .map(|(_, e)| (e.stream_key.as_str(), e.lane.as_str(), e.lane_seq))
        .collect();
    assert_eq!(
        got,
        [
            ("app/x -> t", "a", 1),
            ("app/y -> t", "b", 1),
            ("app/y -> t", "a", 2),
            ("k", "k", 1),
            ("app/x -> t", "b", 2),
            ("app/x -> t", "a", 3),
            ("k", "k", 2),
        ]
    );
    // peek_after carries them too.
    let after = outbox
        .peek_after(peeked[4].0, 10)
        .await
        .expect("peek_after");
    assert_eq!(after, peeked[5..]);
    assert_eq!(
        outbox.lanes().await.expect("lanes"),
        [
            ("a".to_string(), 4),
            ("b".to_string(), 3),
            ("k".to_string(), 3)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lane_sequences_are_gapless_per_lane_under_concurrent_appends() {
    // Many appends per commit: each lane still counts 1, 2, 3, … in its append order.
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = open(dir.path(), OutboxConfig::default());
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    let e = entry(&format!("app/c{t} -> t"), &i.to_string())
                        .in_lane(format!("lane{}", t % 4));
                    outbox.append(e).await.expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    assert!(outbox.stats().commits < 320, "the appends were not batched");
    let by_lane = lane_seqs(&outbox).await;
    assert_eq!(by_lane.len(), 4);
    for seqs in by_lane.values() {
        assert_eq!(*seqs, (1..=80).collect::<Vec<u64>>());
    }
}

#[tokio::test]
async fn lane_sequences_survive_removal_expiry_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = open(dir.path(), OutboxConfig::default());
    assert_eq!(outbox.lanes().await.expect("lanes"), []);
    for i in 0..3 {
        outbox
            .append(entry("k", &i.to_string()).in_lane("a"))
            .await
            .expect("append");
    }
    for i in 0..2 {
        outbox
            .append(entry("k", &i.to_string()).in_lane("b"))
            .await
            .expect("append");
    }
    // The fourth of lane "a" expires at once.
    outbox
        .append(OutboxEntry::new("k", b"x".to_vec(), Duration::ZERO).in_lane("a"))
        .await
        .expect("append");
    assert_eq!(outbox.sweep().await.expect("sweep"), 1);
    // Every entry goes: the lanes' sequences must come from what is stored for the lanes.
    let all: Vec<Sequence> = outbox
        .peek(usize::MAX)
        .await
        .expect("peek")
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(outbox.remove(&all).await.expect("remove"), 5);
    assert_eq!(outbox.stats().pending, 0);
    drop(outbox);

    let outbox = open(dir.path(), OutboxConfig::default());
    let expected = [("a".to_string(), 5), ("b".to_string(), 3)];
    assert_eq!(outbox.lanes().await.expect("lanes"), expected);
    for lane in ["a", "b", "c", "a"] {
        outbox
            .append(entry("k", lane).in_lane(lane))
            .await
            .expect("append");
    }
    let by_lane = lane_seqs(&outbox).await;
    assert_eq!(by_lane["a"], [5, 6]);
    assert_eq!(by_lane["b"], [3]);
    assert_eq!(by_lane["c"], [1]);
    assert_eq!(
        outbox.lanes().await.expect("lanes"),
        [
            ("a".to_string(), 7),
            ("b".to_string(), 4),
            ("c".to_string(), 2)
        ]
    );
}

#[tokio::test]
async fn the_outbox_id_is_kept_with_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = open(dir.path(), OutboxConfig::default());
    let id = outbox.id();
    assert_eq!(id.get_version_num(), 4);
    outbox.append(entry("k", "x")).await.expect("append");
    drop(outbox);
    assert_eq!(open(dir.path(), OutboxConfig::default()).id(), id);

    let other = tempfile::tempdir().expect("tempdir");
    assert_ne!(open(other.path(), OutboxConfig::default()).id(), id);
}

// ---- SIGKILL ----

const CHILD_ENV: &str = "LATTICE_OUTBOX_TEST_CHILD";
const DIR_ENV: &str = "LATTICE_OUTBOX_TEST_DIR";

/// Spawns this test binary running only `test`, with `mode` in [`CHILD_ENV`].
fn child(test: &str, mode: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped());
    cmd
}

/// In the child: 16 tasks append as fast as they can, printing `ACK <seq> <id>` for every
/// acknowledged append, until killed.
#[test]
fn child_appender() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("append") {
        return;
    }
    let dir = std::env::var(DIR_ENV).expect("dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let outbox = open(Path::new(&dir), OutboxConfig::default());
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    for i in 0u64.. {
                        let e = OutboxEntry::new(
                            format!("app/c{t} -> target"),
                            format!("{t}:{i}:{}", "x".repeat(200)).into_bytes(),
                            HOUR,
                        );
                        let id = e.id;
                        let seq = outbox.append(e).await.expect("append");
                        println!("ACK {seq} {id}");
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn sigkill_keeps_every_acknowledged_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proc = child("child_appender", "append", dir.path())
        .spawn()
        .expect("spawn the child");
    let stdout = proc.stdout.take().expect("stdout");
    let mut acked = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read");
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (seq, id) = rest.split_once(' ').expect("ACK seq id");
            acked.insert(seq.parse::<u64>().expect("seq"), id.to_string());
            if acked.len() >= 3000 || Instant::now() > deadline {
                break;
            }
        }
    }
    proc.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
    let status = proc.wait().expect("wait");
    assert!(
        !status.success(),
        "the child was killed, not finished: {status:?}"
    );
    assert!(
        acked.len() >= 100,
        "only {} acks before the deadline",
        acked.len()
    );

    let outbox = open(dir.path(), OutboxConfig::default());
    let peeked = outbox
        .peek(usize::MAX)
        .await_blocking()
        .expect("peek after reopen");
    // Each task's stream key is its lane: its lane sequences have no gap after the crash.
    let mut by_lane: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (_, e) in &peeked {
        by_lane.entry(e.lane.clone()).or_default().push(e.lane_seq);
    }
    for (lane, seqs) in &by_lane {
        assert_eq!(*seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{lane}");
    }
    let stored: BTreeMap<u64, String> = peeked
        .into_iter()
        .map(|(s, e)| (s.0, e.id.to_string()))
        .collect();
    let missing: Vec<_> = acked
        .iter()
        .filter(|(s, id)| stored.get(s) != Some(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged appends missing after SIGKILL, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "{} acknowledged before SIGKILL, {} stored after reopen (appends in flight may land)",
        acked.len(),
        stored.len()
    );
    // And the outbox takes appends again after the crash.
    let next = outbox
        .append(entry("k", "after"))
        .await_blocking()
        .expect("append after reopen");
    assert!(next.0 > *acked.keys().last().expect("some"));
}

// ---- A write failure from the kernel ----

/// In the child: under a file-size limit (set by the parent with `prlimit --fsize`, SIGXFSZ
/// ignored, so a write past it fails with EFBIG), append 4 KiB entries until one fails; then
/// check reads still work and print what happened.
#[test]
fn child_file_size_limit() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("fsize") {
        return;
    }
    let dir = std::env::var(DIR_ENV).expect("dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let outbox = open(Path::new(&dir), OutboxConfig::default());
        let mut acked = 0u64;
        let err = loop {
            match outbox
                .append(OutboxEntry::new("k", vec![7u8; 4096], HOUR))
                .await
            {
                Ok(seq) => {
                    acked += 1;
                    println!("ACK {seq}");
                    assert!(acked < 100_000, "the file-size limit never hit");
                }
                Err(e) => break e,
            }
        };
        println!("ERR {err}");
        assert!(matches!(err, OutboxError::Storage(_)), "{err:?}");
        // Reads still work, and see every acknowledged entry.
        let peeked = outbox
            .peek(usize::MAX)
            .await
            .expect("peek after the failure");
        println!("PEEK {}", peeked.len());
        // Lane "k" holds every entry: its sequences are 1..=n, the failed batch's (if it reached
        // the disk after all) included.
        let lane_seqs: Vec<u64> = peeked.iter().map(|(_, e)| e.lane_seq).collect();
        assert_eq!(lane_seqs, (1..=peeked.len() as u64).collect::<Vec<_>>());
        let again = outbox
            .append(OutboxEntry::new("k", vec![7u8; 4096], HOUR))
            .await;
        println!("AGAIN {}", again.is_ok());
        let stats = outbox.stats();
        println!("STATS {} {}", stats.pending, stats.storage_failures);
        // Room again after acks, within the same limit.
        let seqs: Vec<Sequence> = peeked.iter().map(|(s, _)| *s).collect();
        outbox
            .remove(&seqs)
            .await
            .expect("remove after the failure");
        let last = outbox
            .append(OutboxEntry::new("k", vec![7u8; 4096], HOUR))
            .await
            .expect("append after making room");
        // A batch that failed to commit consumed no lane sequence.
        let lane_seq = outbox
            .peek(usize::MAX)
            .await
            .expect("peek")
            .into_iter()
            .find(|(s, _)| *s == last)
            .expect("the last append")
            .1
            .lane_seq;
        let expected = peeked.len() as u64 + u64::from(again.is_ok()) + 1;
        println!("LANE {lane_seq} {expected}");
        assert_eq!(
            outbox.lanes().await.expect("lanes"),
            [("k".to_string(), lane_seq + 1)]
        );
        println!("DONE");
    });
}

#[test]
fn write_failure_fails_the_append_and_keeps_the_outbox_readable() {
    // Not a full disk: making ENOSPC for real needs a small filesystem (tmpfs, a loop mount),
    // i.e. root. RLIMIT_FSIZE makes the kernel fail writes past a size with EFBIG instead,
    // which reaches redb through the same path (an io::Error from write or set_len during a
    // commit). The limit is set on the child alone, with util-linux `prlimit`.
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `prlimit` (util-linux) is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new("sh")
        .arg("-c")
        // An ignored signal stays ignored across exec: the writes fail instead of killing.
        .arg(r#"trap '' XFSZ; exec prlimit --fsize=4194304 -- "$@""#)
        .arg("sh")
        .arg(exe)
        .args([
            "child_file_size_limit",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "fsize")
        .env(DIR_ENV, dir.path())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("DONE"),
        "child failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    let acked = stdout.lines().filter(|l| l.starts_with("ACK ")).count();
    let err = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ERR "))
        .expect("ERR line");
    let peeked: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PEEK "))
        .expect("PEEK line")
        .parse()
        .expect("number");
    eprintln!("{acked} appends acknowledged under a 4 MiB file limit, then: {err}\n{stdout}");
    assert!(acked > 10, "{stdout}");
    assert!(err.contains("storage failed"), "{err}");
    // Every acknowledged entry is readable after the failure. The failed batch may be there
    // too: an error from a commit does not say that nothing reached the disk (at least once).
    assert!(
        peeked == acked || peeked == acked + 1,
        "{peeked} entries readable, {acked} acknowledged"
    );
    let (lane_seq, expected) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LANE "))
        .and_then(|l| l.split_once(' '))
        .expect("LANE line");
    assert_eq!(
        lane_seq, expected,
        "the append after the failure got the wrong lane sequence"
    );
}

/// Lets the synchronous tests await.
trait AwaitBlocking: std::future::Future + Sized {
    fn await_blocking(self) -> Self::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(self)
    }
}
impl<F: std::future::Future> AwaitBlocking for F {}
