//! `lattice-otlp-sink [ADDR]`: an OTLP/HTTP trace receiver that only counts, for the
//! observability benchmark (`scripts/bench-observability.sh`). It listens on `ADDR` (default
//! `127.0.0.1:0`), prints `listening http://HOST:PORT` on stdout once bound (the value for
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), takes `POST /v1/traces` (protobuf) and answers `GET /stats`
//! with one line: `spans=N traces=T roots=R` and a count per span name. It runs until SIGTERM
//! or Ctrl-C, then prints the same line on stdout.

use std::io::Write as _;

use anyhow::Context as _;
use lattice_tests::otlp::OtlpReceiver;

fn main() -> anyhow::Result<()> {
    let addr = match std::env::args().nth(1) {
        Some(a) if a == "-h" || a == "--help" => {
            println!("usage: lattice-otlp-sink [HOST:PORT]   (default 127.0.0.1:0)");
            return Ok(());
        }
        Some(a) => a
            .parse()
            .with_context(|| format!("`{a}` is not HOST:PORT (e.g. 127.0.0.1:4318)"))?,
        None => "127.0.0.1:0".parse()?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let sink = OtlpReceiver::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        println!("listening {}", sink.endpoint());
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r?,
        }
        println!("{}", sink.stats());
        anyhow::Ok(())
    })
}
