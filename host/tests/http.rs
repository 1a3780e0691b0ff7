//! The built-in HTTP server, serving the real `hello` example component.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, hello_component, small_runtime, within};
use lattice_host::caps::WorkloadCtx;
use lattice_host::engine::{EngineConfig, PoolSizing, Runtime};
use lattice_host::http::{HttpOptions, HttpServer, HttpWorkload, prepare_http};
use lattice_host::wasi::new_linker;
use lattice_test_guests as guests;
use wasmtime::component::Component;

/// Any free port on the loopback interface.
fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The hello component as an HTTP workload greeting with `greeting`.
fn hello(runtime: &Runtime, greeting: &str) -> anyhow::Result<Arc<HttpWorkload>> {
    let linker = new_linker(runtime)?;
    let component = hello_component(runtime)?;
    Ok(Arc::new(HttpWorkload::new(
        runtime,
        format!("test/{greeting}"),
        prepare_http(runtime, &linker, &component)?,
        WorkloadCtx::detached(&[
            ("GREETING".to_owned(), greeting.to_owned()),
            ("LATTICE_HOST_NAME".to_owned(), "test-host".to_owned()),
        ]),
    )))
}

/// `bytes` (a component) as an HTTP workload.
fn workload(runtime: &Runtime, name: &str, bytes: &[u8]) -> anyhow::Result<Arc<HttpWorkload>> {
    let component = Component::new(runtime.engine(), bytes).map_err(anyhow::Error::from)?;
    Ok(Arc::new(HttpWorkload::new(
        runtime,
        name,
        prepare_http(runtime, &new_linker(runtime)?, &component)?,
        WorkloadCtx::detached(&[]),
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_component_with_its_environment() -> anyhow::Result<()> {
    // The default configuration: a pool sized from this machine.
    let runtime = Runtime::new(&EngineConfig::default())?;
    let server = HttpServer::new(runtime.clone());
    let addr = within(
        "bind",
        server.bind(any_port(), None, hello(&runtime, "Howdy")?),
    )
    .await??;
    assert_ne!(addr.port(), 0, "bind returns the port actually bound");
    assert_eq!(server.addresses(), [addr]);

    let mut client = Client::connect(addr).await?;
    for _ in 0..3 {
        // Keep-alive: each request a fresh instance on the same connection.
        let reply = client.get("/").await?;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "Howdy from Lattice (host test-host)\n");
    }
    let health = client.get("/health?probe=1").await?;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));

    within("unbind", server.unbind(addr, None)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_served_address_swaps_the_workload_without_closing_the_port() -> anyhow::Result<()>
{
    let runtime = small_runtime()?;
    let server = HttpServer::new(runtime.clone());
    let addr = within(
        "bind",
        server.bind(any_port(), None, hello(&runtime, "Hello")?),
    )
    .await??;
    let mut client = Client::connect(addr).await?;
    assert_eq!(
        client.get("/").await?.body,
        "Hello from Lattice (host test-host)\n"
    );

    let rebound = within(
        "rebind",
        server.bind(addr, None, hello(&runtime, "Bonjour")?),
    )
    .await??;
    assert_eq!(rebound, addr);
    assert_eq!(server.addresses(), [addr]);

    // The same connection, so the listener never went away.
    assert_eq!(
        client.get("/").await?.body,
        "Bonjour from Lattice (host test-host)\n"
    );
    let mut fresh = Client::connect(addr).await?;
    assert_eq!(
        fresh.get("/").await?.body,
        "Bonjour from Lattice (host test-host)\n"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbind_closes_the_port() -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    let server = HttpServer::new(runtime.clone());
    let addr = within(
        "bind",
        server.bind(any_port(), None, hello(&runtime, "Hi")?),
    )
    .await??;
    let mut idle = Client::connect(addr).await?;
    assert_eq!(idle.get("/").await?.status, 200);

    within("unbind", server.unbind(addr, None)).await?;
    assert!(server.addresses().is_empty());
    let refused = within("connect", tokio::net::TcpStream::connect(addr)).await?;
    let err = refused
        .err()
        .ok_or_else(|| anyhow::anyhow!("{addr} still accepts connections after unbind"))?;
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    // The idle keep-alive connection is closed too: its connection task hears the stop on a
    // worker thread, so a request sent at that very moment may still be answered first.
    within("the idle connection to close", async {
        while idle.get("/").await.is_ok() {}
    })
    .await?;

    // Unbinding again is a no-op, and the address can be bound again.
    within("unbind again", server.unbind(addr, None)).await?;
    let again = within(
        "bind again",
        server.bind(addr, None, hello(&runtime, "Hi")?),
    )
    .await??;
    assert_eq!(again, addr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_is_an_error_naming_it() -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    let taken = std::net::TcpListener::bind(any_port())?;
    let addr = taken.local_addr()?;
    let server = HttpServer::new(runtime.clone());
    let err = within("bind", server.bind(addr, None, hello(&runtime, "Hi")?))
        .await?
        .err()
        .ok_or_else(|| anyhow::anyhow!("bound {addr} although it is in use"))?;
    assert!(err.to_string().contains(&addr.to_string()), "{err:#}");
    assert!(server.addresses().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_before_the_guest_runs() -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    let server = HttpServer::new(runtime.clone());
    let addr = within(
        "bind",
        server.bind(any_port(), None, hello(&runtime, "Hi")?),
    )
    .await??;
    let mut client = Client::connect(addr).await?;
    let reply = client
        .send("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000000\r\n\r\n")
        .await?;
    assert_eq!(reply.status, 413);
    Ok(())
}

#[test]
fn a_component_without_an_http_handler_is_refused() -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    let linker = new_linker(&runtime)?;
    // The smallest valid component: it exports nothing.
    let empty =
        Component::new(runtime.engine(), b"\0asm\x0d\0\x01\0").map_err(anyhow::Error::from)?;
    let err = prepare_http(&runtime, &linker, &empty)
        .err()
        .ok_or_else(|| anyhow::anyhow!("an empty component was accepted"))?;
    let message = err.to_string();
    assert!(
        message.contains(
            "exports neither wasi:http/incoming-handler@0.2.x nor wasi:http/handler@0.3.x"
        ),
        "{message}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_guest_gets_a_500_and_the_server_keeps_serving() -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    let server = HttpServer::new(runtime.clone());
    let trapping = workload(&runtime, "test/trap", &guests::trapping())?;
    let addr = within("bind", server.bind(any_port(), None, trapping)).await??;
    let mut client = Client::connect(addr).await?;
    for _ in 0..2 {
        // Twice on one connection: the trap ended the request, not the
        // connection.
        let reply = client.get("/").await?;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (500, "component failed\n")
        );
    }

    let silent = workload(&runtime, "test/silent", &guests::silent())?;
    within("rebind", server.bind(addr, None, silent)).await??;
    let reply = client.get("/").await?;
    assert_eq!((reply.status, reply.body.as_str()), (500, "no response\n"));

    within("rebind", server.bind(addr, None, hello(&runtime, "Still")?)).await??;
    let reply = client.get("/").await?;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "Still from Lattice (host test-host)\n")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_guest_times_out_without_holding_up_its_thread() -> anyhow::Result<()> {
    let runtime = Runtime::new(&EngineConfig {
        execution_timeout: Duration::from_secs(4),
        pool: PoolSizing::Pooled { instances: 16 },
        ..EngineConfig::default()
    })?;
    // One worker thread: both requests below share it.
    let server = HttpServer::with_options(
        runtime.clone(),
        HttpOptions {
            worker_threads: 1,
            ..HttpOptions::default()
        },
    );
    let looping = workload(&runtime, "test/loop", &guests::looping())?;
    let loop_addr = within("bind", server.bind(any_port(), None, looping)).await??;
    let hello_addr = within(
        "bind",
        server.bind(any_port(), None, hello(&runtime, "Hi")?),
    )
    .await??;

    // The looping request is written before the other connection exists, so
    // the worker takes it up first.
    let mut stuck = Client::connect(loop_addr).await?;
    let stuck = tokio::spawn(async move { stuck.get("/").await });
    let mut other = Client::connect(hello_addr).await?;
    let reply = tokio::time::timeout(Duration::from_secs(2), other.get("/"))
        .await
        .map_err(|_| anyhow::anyhow!("the looping guest held up its worker thread"))??;
    assert_eq!(reply.status, 200);

    let reply = within("the timed-out request", stuck).await???;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, "component timed out\n")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_grow_past_the_memory_limit() -> anyhow::Result<()> {
    let runtime = Runtime::new(&EngineConfig {
        memory_limit_bytes: 1 << 20,
        pool: PoolSizing::Pooled { instances: 16 },
        ..EngineConfig::default()
    })?;
    let server = HttpServer::new(runtime.clone());
    // 1 page + 8 pages = 576 KiB: allowed.
    let modest = workload(&runtime, "test/modest", &guests::greedy(8))?;
    let addr = within("bind", server.bind(any_port(), None, modest)).await??;
    let mut client = Client::connect(addr).await?;
    assert_eq!(client.get("/").await?.body, "no response\n");

    // 1 page + 16 pages = 1088 KiB: over the 1 MiB limit, so the growth
    // fails and the guest traps.
    let greedy = workload(&runtime, "test/greedy", &guests::greedy(16))?;
    within("rebind", server.bind(addr, None, greedy)).await??;
    assert_eq!(client.get("/").await?.body, "component failed\n");
    Ok(())
}

/// Writes `request` on a fresh connection to `addr` and reads until the server closes it.
async fn exchange_until_closed(addr: SocketAddr, request: &[u8]) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = within("connecting", tokio::net::TcpStream::connect(addr)).await??;
    within("writing", stream.write_all(request)).await??;
    let mut reply = Vec::new();
    within("the server closing", stream.read_to_end(&mut reply)).await??;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_body_bombs_and_slow_heads_fail_only_their_own_request() -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    let server = HttpServer::with_options(
        runtime.clone(),
        HttpOptions {
            max_request_body_bytes: 1024,
            max_header_bytes: 16 << 10,
            header_read_timeout: Duration::from_secs(1),
            ..HttpOptions::default()
        },
    );
    let target = within(
        "bind",
        server.bind(any_port(), None, hello(&runtime, "Hi")?),
    )
    .await??;
    let beside = within(
        "bind",
        server.bind(any_port(), None, hello(&runtime, "Next")?),
    )
    .await??;
    // A fresh connection each time: idle ones close after the (short) header-read timeout.
    let neighbour_answers = async || -> anyhow::Result<()> {
        let reply = Client::connect(beside).await?.get("/").await?;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "Next from Lattice (host test-host)\n")
        );
        Ok(())
    };
    neighbour_answers().await?;

    // Headers over the limit: 431, and the connection closes.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: test\r\nX-Bomb: {}\r\n\r\n",
        "a".repeat(32 << 10)
    );
    let reply = exchange_until_closed(target, big.as_bytes()).await?;
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    neighbour_answers().await?;

    // A body over the limit: 413 before the guest runs.
    let reply = Client::connect(target)
        .await?
        .send("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 4096\r\n\r\n")
        .await?;
    assert_eq!(reply.status, 413);
    neighbour_answers().await?;

    // A slowloris: part of a head, then nothing. The neighbour answers meanwhile; the slow
    // client gets 408 once the header-read timeout has passed.
    let slow = tokio::spawn(exchange_until_closed(target, b"GET / HTTP/1.1\r\nHost: te"));
    neighbour_answers().await?;
    let reply = within("the slow client's answer", slow).await???;
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");

    // An idle connection (no request started) is closed without an answer.
    assert_eq!(exchange_until_closed(target, b"").await?, "");

    // The target itself still serves well-formed requests.
    let reply = Client::connect(target).await?.get("/").await?;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "Hi from Lattice (host test-host)\n")
    );
    neighbour_answers().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_serves_at_most_its_connection_cap() -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    let server = HttpServer::with_options(
        runtime.clone(),
        HttpOptions {
            max_connections: 1,
            ..HttpOptions::default()
        },
    );
    let addr = within(
        "bind",
        server.bind(any_port(), None, hello(&runtime, "Hi")?),
    )
    .await??;
    let mut first = Client::connect(addr).await?;
    assert_eq!(first.get("/").await?.status, 200);

    // The kernel completes the second connection, but the server takes it only once the
    // first (kept alive) has closed.
    let mut second = Client::connect(addr).await?;
    let mut waiting = tokio::spawn(async move { second.get("/").await });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "a connection over the cap was served"
    );
    drop(first);
    let reply = within("the second connection, after the first closed", waiting).await???;
    assert_eq!(reply.status, 200);
    Ok(())
}
