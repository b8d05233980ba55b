//! `weftd`: parse flags, open the store and the kernel, run the agent until SIGTERM.
use anyhow::Context;
use clap::Parser;
use std::sync::Arc;
use weft_agent::{AgentConfig, Deps};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cfg = AgentConfig::parse();
    init_logs(&cfg.log_format);
    let store = open_store(&cfg.store, &cfg.etcd_security()).await?;
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

/// A node may boot before its store: keep trying (and say why) instead of crash-looping without a reason.
/// A malformed URL is a configuration error and fails at once. `kube://` URLs go to the Kubernetes store.
async fn open_store(url: &str, etcd: &weft_store::EtcdSecurityFiles) -> anyhow::Result<Arc<dyn weft_store::Store>> {
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        let opened = if weft_store_kube::handles(url) {
            weft_store_kube::open(url).await
        } else {
            weft_store::open_with(url, etcd).await
        };
        match opened {
            Ok(s) => return Ok(s),
            Err(weft_store::StoreError::Unavailable(e)) => {
                tracing::warn!(store = url, error = %e, "store unreachable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e).with_context(|| format!("opening store {url}")),
        }
    }
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

/// glibc's malloc keeps freed memory: one arena per thread that ever allocated (tokio workers plus the blocking
/// pool that runs netlink and SQLite), and the top of each heap is only returned above a 128 KiB..32 MiB
/// threshold that grows with the largest block freed. A full pass at 10 000 peers frees several MiB of
/// temporaries (diff, netlink batch, status JSON) that would otherwise stay resident until exit. Two arenas and a
/// fixed trim threshold cost nothing measurable in the agent benchmark and save 3-5 MiB there (docs-notes/mem.md).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
    }
}
