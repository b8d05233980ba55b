//! `weft-fake-apiserver`: the fake Kubernetes API server of `weft_store_kube::fake` as a process, so the lab
//! can run agents in Kubernetes mode (`--store kube+http://ADDR`) with no cluster. Plain HTTP, no
//! authentication: bind it to loopback. Not a real API server; see the crate's `fake` module for what it does
//! and does not do.
//!
//! ```text
//! weft-fake-apiserver --listen 127.0.0.1:0 --addr-file /tmp/api.addr \
//!     --node n1 --node n2=10.244.2.0/24 --network-config network.json --seed objects.yaml
//! ```
//! Admin endpoints for tests: `POST /admin/apply` (JSON or YAML objects), `POST /admin/delete`
//! (`{"kind","namespace","name"}`), `POST /admin/compact`, `POST /admin/close-watches`, `POST /admin/deny`
//! (`{"group","resource","verb"}`), `GET /admin/requests`.
use anyhow::Context;
use clap::Parser;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weft_store_kube::fake::{parse_documents, ClusterOptions, FakeApiServer, FakeOptions};

#[derive(Debug, Parser)]
#[command(name = "weft-fake-apiserver", version, about = "A fake Kubernetes API server for weft's tests and lab")]
struct Args {
    /// Address to listen on (port 0: any free port; the chosen address is printed and written to --addr-file).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the bound address (HOST:PORT) to this file once listening.
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// A Node to create: NAME, or NAME=CIDR[,CIDR6] to give it spec.podCIDRs (repeatable).
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// Objects to create at start (JSON or multi-document YAML; a List is unpacked; repeatable).
    #[arg(long = "seed")]
    seeds: Vec<PathBuf>,
    /// A network.json to store as ConfigMap weft-system/weft-config, as deploy/weft.yaml does.
    #[arg(long)]
    network_config: Option<PathBuf>,
    /// Do not create the weft-system namespace (to see how weft reports its absence).
    #[arg(long)]
    bare: bool,
    /// Interval of watch bookmarks, e.g. 1s or 250ms.
    #[arg(long, default_value = "1s", value_parser = duration)]
    bookmark_interval: Duration,
    /// End every watch after this long, whatever the client asked (forces resumes).
    #[arg(long, value_parser = duration)]
    max_watch: Option<Duration>,
    /// Change events kept for watches; older resourceVersions get 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
}

fn duration(s: &str) -> Result<Duration, String> {
    let (n, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    let v: f64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let opts = FakeOptions {
        cluster: ClusterOptions { history: args.history },
        bookmark_interval: args.bookmark_interval,
        max_watch: args.max_watch,
    };
    let server = FakeApiServer::start(args.listen, opts).await.with_context(|| format!("binding {}", args.listen))?;
    let c = server.cluster();
    if !args.bare {
        c.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "weft-system"}}))
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    for spec in &args.nodes {
        let (name, cidrs) = spec.split_once('=').unwrap_or((spec, ""));
        let cidrs: Vec<&str> = cidrs.split(',').filter(|c| !c.is_empty()).collect();
        c.add_node(name, &cidrs);
    }
    if let Some(p) = &args.network_config {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let cfg: weft_types::NetworkConfig =
            serde_json::from_str(&text).with_context(|| format!("{} is not a network config", p.display()))?;
        c.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"namespace": "weft-system", "name": weft_store_kube::CONFIG_MAP},
                       "data": {weft_store_kube::CONFIG_KEY: serde_json::to_string_pretty(&cfg)?}}))
            .map_err(|e| anyhow::anyhow!("{}: {}", p.display(), e.message))?;
    }
    for p in &args.seeds {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        for obj in parse_documents(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))? {
            c.apply(obj).map_err(|e| anyhow::anyhow!("{}: {}", p.display(), e.message))?;
        }
    }
    let addr = server.addr();
    if let Some(f) = &args.addr_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string()).and_then(|_| std::fs::rename(&tmp, f))?;
    }
    println!("weft-fake-apiserver listening on http://{addr} (store URL: {})", server.store_url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.stop().await;
    Ok(())
}
