//! The built-in HTTP server, serving the real `hello` example component.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{Client, hello_component, small_runtime, within};
use lattice_host::engine::{EngineConfig, Runtime};
use lattice_host::http::{HttpServer, HttpWorkload, prepare_http};
use lattice_host::wasi::new_linker;
use wasmtime::component::Component;

/// Any free port on the loopback interface.
fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The hello component as an HTTP workload greeting with `greeting`.
fn hello(runtime: &Runtime, greeting: &str) -> anyhow::Result<Arc<HttpWorkload>> {
    let linker = new_linker(runtime)?;
    let component = hello_component(runtime)?;
    Ok(Arc::new(HttpWorkload {
        name: format!("test/{greeting}"),
        pre: prepare_http(runtime, &linker, &component)?,
        env: vec![
            ("GREETING".to_owned(), greeting.to_owned()),
            ("LATTICE_HOST_NAME".to_owned(), "test-host".to_owned()),
        ],
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_component_with_its_environment() -> anyhow::Result<()> {
    // The default configuration: a pool sized from this machine.
    let runtime = Runtime::new(&EngineConfig::default())?;
    let server = HttpServer::new(runtime.clone());
    let addr = within("bind", server.bind(any_port(), hello(&runtime, "Howdy")?)).await??;
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

    within("unbind", server.unbind(addr)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_served_address_swaps_the_workload_without_closing_the_port() -> anyhow::Result<()>
{
    let runtime = small_runtime()?;
    let server = HttpServer::new(runtime.clone());
    let addr = within("bind", server.bind(any_port(), hello(&runtime, "Hello")?)).await??;
    let mut client = Client::connect(addr).await?;
    assert_eq!(
        client.get("/").await?.body,
        "Hello from Lattice (host test-host)\n"
    );

    let rebound = within("rebind", server.bind(addr, hello(&runtime, "Bonjour")?)).await??;
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
    let addr = within("bind", server.bind(any_port(), hello(&runtime, "Hi")?)).await??;
    let mut idle = Client::connect(addr).await?;
    assert_eq!(idle.get("/").await?.status, 200);

    within("unbind", server.unbind(addr)).await?;
    assert!(server.addresses().is_empty());
    let refused = within("connect", tokio::net::TcpStream::connect(addr)).await?;
    let err = refused
        .err()
        .ok_or_else(|| anyhow::anyhow!("{addr} still accepts connections after unbind"))?;
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    // The idle keep-alive connection is closed too.
    assert!(idle.get("/").await.is_err());

    // Unbinding again is a no-op, and the address can be bound again.
    within("unbind again", server.unbind(addr)).await?;
    let again = within("bind again", server.bind(addr, hello(&runtime, "Hi")?)).await??;
    assert_eq!(again, addr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_is_an_error_naming_it() -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    let taken = std::net::TcpListener::bind(any_port())?;
    let addr = taken.local_addr()?;
    let server = HttpServer::new(runtime.clone());
    let err = within("bind", server.bind(addr, hello(&runtime, "Hi")?))
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
    let addr = within("bind", server.bind(any_port(), hello(&runtime, "Hi")?)).await??;
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
        message.contains("does not export wasi:http/incoming-handler@0.2.x"),
        "{message}"
    );
    Ok(())
}
