//! `weftd`: parse flags, open the store and the kernel, run the agent until SIGTERM.
use anyhow::Context;
use clap::Parser;
use std::sync::Arc;
use weft_agent::{AgentConfig, Deps};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = AgentConfig::parse();
    init_logs(&cfg.log_format);
    let store = weft_store::open(&cfg.store).await.with_context(|| format!("opening store {}", cfg.store))?;
    let dataplane = Arc::new(weft_dataplane::netlink::NetlinkDataplane::new().context("opening netlink")?);
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    weft_agent::run(cfg, Deps { store, dataplane, listener, shutdown: rx }).await.context("weftd")?;
    Ok(())
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}
