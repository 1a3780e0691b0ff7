//! The `keyvalue-redis` provider against a real `redis-server`: through the `Provider` trait
//! directly, and once as a real process reached over NATS, as a host reaches it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lattice_protocol::names::{AppName, ComponentName, HostId, LatticeName};
use lattice_protocol::subject::Subject;
use lattice_provider_keyvalue_redis::RedisKv;
use lattice_provider_sdk::{
    Call, CallKey, LinkDirection, LinkId, LinkInfo, Provider, ProviderError, Remote, Reply,
};
use lattice_tests::NatsServer;
use lattice_tests::redis::RedisServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// How long a call on an unreachable Redis may take before failing: the provider's connect
/// timeout (3 s) with room for a slow machine.
const UNREACHABLE_WITHIN: Duration = Duration::from_secs(10);

fn link_id(app: &str, name: &str) -> LinkId {
    LinkId {
        app: AppName::new(app).expect("valid app name"),
        component: ComponentName::new("shop").expect("valid component name"),
        name: name.to_string(),
        package: "wasi:keyvalue".into(),
        direction: lattice_provider_sdk::LinkDirection::Import,
    }
}

/// A link to `url` (none: the default) with target config `config`.
fn link(id: &LinkId, url: Option<&str>, config: &[(&str, &str)]) -> LinkInfo {
    let mut target_config: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(url) = url {
        target_config.insert("url".into(), url.into());
    }
    LinkInfo {
        id: id.clone(),
        interfaces: vec!["store".into(), "atomics".into(), "batch".into()],
        direction: LinkDirection::Import,
        source_config: BTreeMap::new(),
        target_config,
    }
}

/// A provider with one link (app `app`, link name `default`, bucket `bucket`) to `redis`.
async fn linked(redis: &RedisServer, app: &str, bucket: &str) -> (RedisKv, LinkId) {
    let kv = RedisKv::new();
    let id = link_id(app, "default");
    kv.link_put(link(&id, Some(&redis.url), &[("bucket", bucket)]))
        .await
        .expect("link_put");
    (kv, id)
}

async fn set(kv: &dyn Provider, id: &LinkId, bucket: &str, key: &str, value: &[u8]) {
    let reply = kv
        .call(
            id,
            Call::KvSet {
                bucket: bucket.into(),
                key: key.into(),
                value: value.to_vec(),
            },
        )
        .await
        .expect("set");
    assert_eq!(reply, Reply::Unit);
}

async fn get(kv: &dyn Provider, id: &LinkId, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match kv
        .call(
            id,
            Call::KvGet {
                bucket: bucket.into(),
                key: key.into(),
            },
        )
        .await
        .expect("get")
    {
        Reply::Value(v) => v.map(|b| b.into_vec()),
        other => panic!("get answered {other:?}"),
    }
}

async fn increment(
    kv: &dyn Provider,
    id: &LinkId,
    bucket: &str,
    key: &str,
    delta: u64,
) -> Result<u64, ProviderError> {
    match kv
        .call(
            id,
            Call::KvIncrement {
                bucket: bucket.into(),
                key: key.into(),
                delta,
            },
        )
        .await?
    {
        Reply::Number(n) => Ok(n),
        other => panic!("increment answered {other:?}"),
    }
}

async fn list_keys(
    kv: &dyn Provider,
    id: &LinkId,
    bucket: &str,
    cursor: Option<u64>,
) -> (Vec<String>, Option<u64>) {
    match kv
        .call(
            id,
            Call::KvListKeys {
                bucket: bucket.into(),
                cursor,
            },
        )
        .await
        .expect("list-keys")
    {
        Reply::Keys { keys, cursor } => (keys, cursor),
        other => panic!("list-keys answered {other:?}"),
    }
}

/// Sends one command to Redis itself and reads a simple, integer or bulk-string answer: to see
/// what the provider stored, and how, without going through it.
async fn raw(redis: &RedisServer, args: &[&str]) -> anyhow::Result<Option<Vec<u8>>> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", redis.port)).await?;
    let mut stream = BufReader::new(stream);
    let mut command = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        command.extend(format!("${}\r\n{arg}\r\n", arg.len()).bytes());
    }
    stream.get_mut().write_all(&command).await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let line = line.trim_end();
    match line.split_at(1) {
        ("$", "-1") => Ok(None),
        ("$", len) => {
            let mut value = vec![0; len.parse::<usize>()? + 2];
            stream.read_exact(&mut value).await?;
            value.truncate(value.len() - 2);
            Ok(Some(value))
        }
        ("+" | ":", rest) => Ok(Some(rest.as_bytes().to_vec())),
        _ => anyhow::bail!("Redis answered {line}"),
    }
}

#[tokio::test]
async fn open_hands_out_the_linked_bucket_by_its_names() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let kv = RedisKv::new();
    let id = link_id("store", "session");
    kv.link_put(link(&id, Some(&redis.url), &[("bucket", "carts")]))
        .await?;
    for identifier in ["", "default", "carts", "session"] {
        let reply = kv
            .call(
                &id,
                Call::KvOpen {
                    identifier: identifier.into(),
                },
            )
            .await?;
        assert_eq!(reply, Reply::Bucket("carts".into()), "open({identifier:?})");
    }
    let refused = kv
        .call(
            &id,
            Call::KvOpen {
                identifier: "orders".into(),
            },
        )
        .await;
    assert_eq!(refused, Err(ProviderError::NoSuchStore));

    // No `bucket` in the target config: the app's name, as keyvalue-nats does.
    let plain = link_id("inventory", "default");
    kv.link_put(link(&plain, Some(&redis.url), &[])).await?;
    let reply = kv
        .call(
            &plain,
            Call::KvOpen {
                identifier: String::new(),
            },
        )
        .await?;
    assert_eq!(reply, Reply::Bucket("inventory".into()));

    // A URL that cannot be one is refused when the link is put, and says which.
    let bad = link_id("store", "bad");
    let err = kv
        .link_put(link(&bad, Some("http://not-redis:80"), &[]))
        .await
        .expect_err("not a Redis URL");
    assert!(
        matches!(&err, ProviderError::Other(m) if m.contains("http://not-redis:80")),
        "{err:?}"
    );
    assert_eq!(kv.name(), "keyvalue-redis");
    Ok(())
}

#[tokio::test]
async fn get_set_delete_exists_store_under_the_bucket_prefix() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (kv, id) = linked(&redis, "store", "carts").await;
    assert_eq!(get(&kv, &id, "carts", "apple").await, None);
    set(&kv, &id, "carts", "apple", b"3 red").await;
    assert_eq!(
        get(&kv, &id, "carts", "apple").await,
        Some(b"3 red".to_vec())
    );
    // Bytes that are not text survive the trip.
    set(&kv, &id, "carts", "blob", &[0, 159, 146, 150, 255]).await;
    assert_eq!(
        get(&kv, &id, "carts", "blob").await,
        Some(vec![0, 159, 146, 150, 255])
    );
    // Stored as `<bucket>:<key>`, as the crate documents.
    assert_eq!(
        raw(&redis, &["GET", "carts:apple"]).await?,
        Some(b"3 red".to_vec())
    );
    assert_eq!(raw(&redis, &["GET", "apple"]).await?, None);

    let exists = |key: &str| Call::KvExists {
        bucket: "carts".into(),
        key: key.into(),
    };
    assert_eq!(kv.call(&id, exists("apple")).await?, Reply::Bool(true));
    assert_eq!(kv.call(&id, exists("pear")).await?, Reply::Bool(false));
    let delete = |key: &str| Call::KvDelete {
        bucket: "carts".into(),
        key: key.into(),
    };
    assert_eq!(kv.call(&id, delete("apple")).await?, Reply::Unit);
    // Deleting what is not there is not an error (wasi:keyvalue says so).
    assert_eq!(kv.call(&id, delete("apple")).await?, Reply::Unit);
    assert_eq!(kv.call(&id, exists("apple")).await?, Reply::Bool(false));
    assert_eq!(get(&kv, &id, "carts", "apple").await, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn increments_are_decimal_text_and_add_up_under_concurrency() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (kv, id) = linked(&redis, "store", "counters").await;
    assert_eq!(increment(&kv, &id, "counters", "visits", 5).await?, 5);
    assert_eq!(increment(&kv, &id, "counters", "visits", 2).await?, 7);
    assert_eq!(
        get(&kv, &id, "counters", "visits").await,
        Some(b"7".to_vec())
    );
    // A number written with `set` counts on.
    set(&kv, &id, "counters", "answer", b"41").await;
    assert_eq!(increment(&kv, &id, "counters", "answer", 1).await?, 42);
    // Text that is not a number is the value's fault, said so.
    set(&kv, &id, "counters", "name", b"ada").await;
    let err = increment(&kv, &id, "counters", "name", 1)
        .await
        .expect_err("not a number");
    assert!(
        matches!(&err, ProviderError::Other(m) if m.contains("not a decimal number")),
        "{err:?}"
    );
    // Beyond Redis's i64: refused, not wrapped.
    let err = increment(&kv, &id, "counters", "huge", u64::MAX)
        .await
        .expect_err("beyond i64");
    assert!(matches!(err, ProviderError::Other(_)), "{err:?}");

    // Several tasks at once: every increment counts, and each sees a distinct total.
    let kv = Arc::new(kv);
    let (tasks, each) = (8, 50);
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (kv, id) = (kv.clone(), id.clone());
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(each);
                for _ in 0..each {
                    seen.push(increment(kv.as_ref(), &id, "counters", "hits", 1).await?);
                }
                Ok::<_, ProviderError>(seen)
            })
        })
        .collect();
    let mut seen = Vec::new();
    for handle in handles {
        seen.extend(handle.await??);
    }
    seen.sort_unstable();
    let expected: Vec<u64> = (1..=(tasks * each) as u64).collect();
    assert_eq!(seen, expected);
    assert_eq!(
        get(kv.as_ref(), &id, "counters", "hits").await,
        Some((tasks * each).to_string().into_bytes())
    );
    Ok(())
}

#[tokio::test]
async fn list_keys_pages_through_thousands_of_keys_of_one_bucket() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (kv, id) = linked(&redis, "store", "many").await;
    let (empty, cursor) = list_keys(&kv, &id, "many", None).await;
    assert!(empty.is_empty());
    assert_eq!(cursor, None);

    let all: Vec<String> = (0..2500).map(|i| format!("key-{i:05}")).collect();
    for chunk in all.chunks(500) {
        let entries = chunk
            .iter()
            .map(|k| (k.clone(), k.as_bytes().to_vec().into()))
            .collect();
        kv.call(
            &id,
            Call::KvSetMany {
                bucket: "many".into(),
                entries,
            },
        )
        .await?;
    }
    // Keys of another bucket in the same Redis, one whose name starts the same way, and one
    // with glob characters in its name: none of them is listed.
    for (bucket, key) in [("other", "key-99999"), ("many-more", "x"), ("m*", "y")] {
        let other = link_id(bucket.replace('*', "star").as_str(), "default");
        kv.link_put(link(&other, Some(&redis.url), &[("bucket", bucket)]))
            .await?;
        set(&kv, &other, bucket, key, b"not listed").await;
    }

    let mut listed = Vec::new();
    let mut cursor = None;
    let mut pages = Vec::new();
    loop {
        let (keys, next) = list_keys(&kv, &id, "many", cursor).await;
        pages.push((keys.len(), next));
        listed.extend(keys);
        match next {
            Some(_) => cursor = next,
            None => break,
        }
    }
    assert_eq!(
        pages,
        vec![(1000, Some(1000)), (1000, Some(2000)), (500, None)],
        "pages of 1000, cursors are offsets, none after the last"
    );
    assert_eq!(listed, all, "every key once, in order");
    // A cursor past the end is an empty last page.
    assert_eq!(
        list_keys(&kv, &id, "many", Some(9999)).await,
        (vec![], None)
    );
    Ok(())
}

#[tokio::test]
async fn batches_get_set_and_delete_many_keys_at_once() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (kv, id) = linked(&redis, "store", "batch").await;
    let entries = vec![
        ("a".to_string(), b"1".to_vec().into()),
        ("b".to_string(), b"2".to_vec().into()),
        ("c".to_string(), b"3".to_vec().into()),
    ];
    let reply = kv
        .call(
            &id,
            Call::KvSetMany {
                bucket: "batch".into(),
                entries,
            },
        )
        .await?;
    assert_eq!(reply, Reply::Unit);
    assert_eq!(raw(&redis, &["GET", "batch:b"]).await?, Some(b"2".to_vec()));

    let get_many = |keys: &[&str]| Call::KvGetMany {
        bucket: "batch".into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
    };
    let Reply::Values(values) = kv.call(&id, get_many(&["c", "missing", "a"])).await? else {
        panic!("get-many answers values");
    };
    let values: Vec<Option<(String, Vec<u8>)>> = values
        .into_iter()
        .map(|v| v.map(|(k, b)| (k, b.into_vec())))
        .collect();
    assert_eq!(
        values,
        vec![
            Some(("c".to_string(), b"3".to_vec())),
            None,
            Some(("a".to_string(), b"1".to_vec())),
        ],
        "in the order asked, none for a missing key"
    );
    // One key and no key are batches too.
    assert_eq!(
        kv.call(&id, get_many(&["b"])).await?,
        Reply::Values(vec![Some(("b".into(), b"2".to_vec().into()))])
    );
    assert_eq!(kv.call(&id, get_many(&[])).await?, Reply::Values(vec![]));

    let delete_many = |keys: &[&str]| Call::KvDeleteMany {
        bucket: "batch".into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
    };
    assert_eq!(
        kv.call(&id, delete_many(&["a", "c", "never"])).await?,
        Reply::Unit
    );
    assert_eq!(kv.call(&id, delete_many(&[])).await?, Reply::Unit);
    assert_eq!(
        kv.call(&id, get_many(&["a", "b", "c"])).await?,
        Reply::Values(vec![None, Some(("b".into(), b"2".to_vec().into())), None])
    );
    let empty = Call::KvSetMany {
        bucket: "batch".into(),
        entries: vec![],
    };
    assert_eq!(kv.call(&id, empty).await?, Reply::Unit);
    Ok(())
}

#[tokio::test]
async fn a_bucket_the_link_does_not_name_is_access_denied() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (kv, id) = linked(&redis, "store", "mine").await;
    let calls = [
        Call::KvGet {
            bucket: "theirs".into(),
            key: "k".into(),
        },
        Call::KvSet {
            bucket: "theirs".into(),
            key: "k".into(),
            value: b"v".to_vec(),
        },
        Call::KvListKeys {
            bucket: "theirs".into(),
            cursor: None,
        },
        Call::KvIncrement {
            bucket: "theirs".into(),
            key: "k".into(),
            delta: 1,
        },
        Call::KvDeleteMany {
            bucket: "theirs".into(),
            keys: vec!["k".into()],
        },
    ];
    for call in calls {
        let what = format!("{call:?}");
        assert_eq!(
            kv.call(&id, call).await,
            Err(ProviderError::AccessDenied),
            "{what}"
        );
    }
    assert_eq!(
        raw(&redis, &["EXISTS", "theirs:k"]).await?,
        Some(b"0".to_vec())
    );
    // Not a key-value call at all.
    let publish = Call::Publish {
        subject: "s".into(),
        body: vec![],
        reply_to: None,
        headers: Vec::new(),
    };
    assert!(matches!(
        kv.call(&id, publish).await,
        Err(ProviderError::Unsupported(_))
    ));
    Ok(())
}

#[tokio::test]
async fn a_deleted_link_is_unknown_and_others_on_the_same_redis_go_on() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let (kv, id) = linked(&redis, "store", "shared").await;
    let second = link_id("store", "second");
    kv.link_put(link(&second, Some(&redis.url), &[("bucket", "shared")]))
        .await?;
    set(&kv, &id, "shared", "k", b"v").await;
    assert_eq!(get(&kv, &second, "shared", "k").await, Some(b"v".to_vec()));
    // Two links to one Redis share one connection: ours, and the one asking.
    let clients = raw(&redis, &["INFO", "clients"]).await?.unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&clients).contains("connected_clients:2"),
        "{}",
        String::from_utf8_lossy(&clients)
    );

    kv.link_del(&id).await;
    let get_k = Call::KvGet {
        bucket: "shared".into(),
        key: "k".into(),
    };
    assert!(matches!(
        kv.call(&id, get_k.clone()).await,
        Err(ProviderError::UnknownLink(_))
    ));
    assert_eq!(get(&kv, &second, "shared", "k").await, Some(b"v".to_vec()));
    // Deleting twice, or a link never put, is harmless.
    kv.link_del(&id).await;
    let never = link_id("never", "default");
    kv.link_del(&never).await;
    assert!(matches!(
        kv.call(
            &never,
            Call::KvOpen {
                identifier: String::new()
            }
        )
        .await,
        Err(ProviderError::UnknownLink(_))
    ));
    // Put again, it serves again.
    kv.link_put(link(&id, Some(&redis.url), &[("bucket", "shared")]))
        .await?;
    assert_eq!(get(&kv, &id, "shared", "k").await, Some(b"v".to_vec()));
    Ok(())
}

/// A call on `link` that fails because Redis is not there: within bounded time, saying where.
async fn fails_quickly_naming(kv: &RedisKv, id: &LinkId, url: &str) {
    let started = Instant::now();
    let result = kv
        .call(
            id,
            Call::KvGet {
                bucket: "b".into(),
                key: "k".into(),
            },
        )
        .await;
    let took = started.elapsed();
    assert!(took < UNREACHABLE_WITHIN, "took {took:?}");
    match result {
        Err(ProviderError::Other(message)) => {
            assert!(message.contains(url), "{message}");
            assert!(message.contains("Redis"), "{message}");
        }
        other => panic!("expected an error naming {url}, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_redis_fails_calls_quickly_and_says_where() -> anyhow::Result<()> {
    let kv = RedisKv::new();
    // Nothing listens there: refused at once.
    let closed = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        format!("redis://127.0.0.1:{port}")
    };
    // Something that accepts connections and never answers: the connect timeout's case.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let silent = format!("redis://{}", listener.local_addr()?);
    let black_hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    for (i, url) in [&closed, &silent].into_iter().enumerate() {
        let id = link_id("store", &format!("link-{i}"));
        // Accepting the link does not need Redis; its calls do.
        kv.link_put(link(&id, Some(url), &[("bucket", "b")]))
            .await?;
        fails_quickly_naming(&kv, &id, url).await;
        // And again: a failed connection is tried anew, not remembered.
        fails_quickly_naming(&kv, &id, url).await;
    }
    black_hole.abort();
    Ok(())
}

#[tokio::test]
async fn a_redis_that_hangs_or_goes_away_fails_calls_rather_than_hang() -> anyhow::Result<()> {
    // A Redis that hangs under a working link (SIGSTOP): calls fail after the response
    // timeout rather than wait for it, and go on once it answers again.
    let redis = RedisServer::start().await?;
    let (kv, id) = linked(&redis, "store", "b").await;
    set(&kv, &id, "b", "k", b"v").await;
    let signal = |name: &str| {
        Command::new("kill")
            .args([name, &redis.pid().to_string()])
            .status()
    };
    assert!(signal("-STOP")?.success());
    fails_quickly_naming(&kv, &id, &redis.url).await;
    assert!(signal("-CONT")?.success());
    assert_eq!(get(&kv, &id, "b", "k").await, Some(b"v".to_vec()));
    drop(redis);

    // A Redis that goes away under a working link: calls fail, bounded, rather than hang.
    let redis = RedisServer::start().await?;
    let (kv, id) = linked(&redis, "store", "b").await;
    set(&kv, &id, "b", "k", b"v").await;
    let url = redis.url.clone();
    drop(redis);
    fails_quickly_naming(&kv, &id, &url).await;
    Ok(())
}

/// The provider binary built next to this test (`cargo build --bins`; `make test` does).
fn provider_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    // target/<profile>/deps/<test> -> target/<profile>/lattice-provider-keyvalue-redis
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("lattice-provider-keyvalue-redis"))
        .expect("a target directory");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` first (`make test` does)",
        bin.display()
    );
    bin
}

/// A provider process, killed on drop.
struct ProviderProcess(Child);

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_provider_process_serves_over_nats() -> anyhow::Result<()> {
    let (nats, redis) = (NatsServer::start().await?, RedisServer::start().await?);
    let lattice = LatticeName::new("redis-test")?;
    let host = HostId::new("NTESTHOST")?;
    let mut process = ProviderProcess(
        Command::new(provider_bin())
            .env("LATTICE_NATS_URL", &nats.url)
            .env("LATTICE_LATTICE", lattice.as_str())
            .env("LATTICE_HOST_ID", host.as_str())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    // Its call key, as a host hands it over.
    let key = CallKey::generate();
    std::io::Write::write_all(
        process.0.stdin.as_mut().expect("piped"),
        key.to_line().as_bytes(),
    )?;
    let name = ComponentName::new("keyvalue-redis")?;
    let subject = Subject::provider(&lattice, &host, &name).to_string();
    let remote = Remote::new(
        "keyvalue-redis",
        nats.client().await?,
        subject,
        Duration::from_secs(5),
        key,
    );

    // Ready once it has subscribed: ping until it answers.
    let deadline = Instant::now() + lattice_tests::WAIT;
    loop {
        match remote.ping().await {
            Ok(links) => {
                assert_eq!(links, 0);
                break;
            }
            // "No responders" until it has subscribed.
            Err(_) if Instant::now() < deadline => {
                if let Some(status) = process.0.try_wait()? {
                    panic!("the provider exited: {status}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the provider never answered: {e}"),
        }
    }

    let id = link_id("store", "default");
    remote
        .link_put(link(&id, Some(&redis.url), &[("bucket", "remote")]))
        .await?;
    assert_eq!(remote.ping().await?, 1);
    let open = remote
        .call(
            &id,
            Call::KvOpen {
                identifier: "default".into(),
            },
        )
        .await?;
    assert_eq!(open, Reply::Bucket("remote".into()));
    set(&remote, &id, "remote", "greeting", b"hello").await;
    assert_eq!(
        get(&remote, &id, "remote", "greeting").await,
        Some(b"hello".to_vec())
    );
    assert_eq!(
        raw(&redis, &["GET", "remote:greeting"]).await?,
        Some(b"hello".to_vec())
    );
    // Errors cross the wire as themselves.
    let denied = remote
        .call(
            &id,
            Call::KvGet {
                bucket: "elsewhere".into(),
                key: "k".into(),
            },
        )
        .await;
    assert_eq!(denied, Err(ProviderError::AccessDenied));
    Ok(())
}

#[tokio::test]
async fn a_wildcard_url_under_wasmclouds_key_means_this_machine() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let port = redis.url.rsplit(':').next().expect("the URL has a port");
    let kv = RedisKv::new();
    // As wasmCloud's key-value examples write it: key `URL`, host `0.0.0.0`.
    let id = link_id("counter", "default");
    let wildcard = format!("redis://0.0.0.0:{port}");
    kv.link_put(link(&id, None, &[("URL", &wildcard), ("bucket", "counts")]))
        .await?;
    set(&kv, &id, "counts", "visits", b"1").await;
    assert_eq!(
        raw(&redis, &["GET", "counts:visits"]).await?,
        Some(b"1".to_vec())
    );

    // Failures name the loopback address the wildcard was taken for.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let gone = link_id("counter", "gone");
    kv.link_put(link(
        &gone,
        Some(&format!("redis://0.0.0.0:{closed}")),
        &[("bucket", "b")],
    ))
    .await?;
    fails_quickly_naming(&kv, &gone, &format!("redis://127.0.0.1:{closed}")).await;
    Ok(())
}
