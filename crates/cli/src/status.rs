//! `weftctl status`: what the agent of this node holds and programmed, from its status.json (or /status).
use anyhow::{Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use std::path::Path;

pub fn show(state_dir: &Path, json: bool) -> Result<()> {
    let p = state_dir.join("status.json");
    let bytes = std::fs::read(&p).with_context(|| format!("reading {} (is weftd running here?)", p.display()))?;
    let st: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", p.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    let s = |k: &str| st[k].as_str().unwrap_or("-").to_string();
    println!("node      {} ({})", s("node"), s("nodeIp"));
    println!("backend   {}   MTU {}", s("backend"), st["mtu"]);
    println!("lease     {} {}", s("subnet"), st["subnet6"].as_str().unwrap_or(""));
    println!("VTEP MAC  {}", s("vtepMac"));
    if let Ok(key) = weft_agent::backend::wireguard::rotate::read_public_key(state_dir) {
        println!("WireGuard public key {key} (rotate: weftctl wireguard rotate-key)");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let exp = st["leaseExpiresAtMs"].as_i64().unwrap_or(0);
    if exp > 0 {
        println!("expires   in {:.1}s", (exp - now) as f64 / 1000.0);
    }
    println!("store     {}", if st["storeUp"].as_bool() == Some(true) { "up" } else { "DOWN (dataplane kept)" });
    let pr = &st["programmed"];
    println!(
        "programmed {} routes, {} nexthops, {} neighbours, {} FDB entries",
        pr["routes"], pr["nexthops"], pr["neighbours"], pr["fdb"]
    );
    let pol = &st["policy"];
    println!(
        "policy    {} local pods ({} admitted), {} policies, {} rules, {} set elements, last load {}",
        pol["localPods"],
        pol["readyPods"],
        pol["policies"].as_array().map_or(0, Vec::len),
        pol["rules"],
        pol["elements"],
        pol["lastMode"].as_str().unwrap_or("-")
    );
    if let Some(n) = pol["fromIpam"].as_u64().filter(|&n| n > 0) {
        println!("          {n} of them compiled from the plugin's records (their Pod objects have no address yet)");
    }
    for s in pol["stranded"].as_array().into_iter().flatten() {
        println!("STRANDED  pod {}", s.as_str().unwrap_or("?"));
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["peer", "node IP", "subnet", "VTEP MAC", "path"]);
    for p in st["peers"].as_array().into_iter().flatten() {
        let g = |k: &str| p[k].as_str().unwrap_or("-").to_string();
        t.add_row([g("node"), g("nodeIp"), g("subnet"), g("vtepMac"), g("path")]);
    }
    println!("{t}");
    // The agent's own datapath (WireGuard): one session per peer.
    let tunneled: Vec<&serde_json::Value> =
        st["peers"].as_array().into_iter().flatten().filter(|p| p["tunnel"].is_object()).collect();
    if !tunneled.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(["peer", "last handshake", "rx bytes", "tx bytes", "decrypt failures"]);
        for p in tunneled {
            let w = &p["tunnel"];
            let age = w["handshakeAgeMs"]
                .as_u64()
                .map_or("never".to_string(), |ms| format!("{:.1}s ago", ms as f64 / 1000.0));
            let n = |k: &str| w[k].as_u64().unwrap_or(0).to_string();
            t.add_row([
                p["node"].as_str().unwrap_or("-").to_string(),
                age,
                n("rxBytes"),
                n("txBytes"),
                n("decryptFailures"),
            ]);
        }
        println!("{t}");
    }
    // What the agent's datapath dropped before any peer (an impostor's handshakes count as unknown peer).
    if let Some(d) = st["tunnelDropped"].as_object() {
        let n = |k: &str| d.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        println!(
            "tunnel dropped  {} unknown peer (handshake from an unknown key), {} unknown session index, {} malformed, \
             {} no route",
            n("unknownPeer"),
            n("unknownIndex"),
            n("malformed"),
            n("noRoute")
        );
    }
    // Tenant networks on this node (the networks manager's view).
    if let Some(nets) = st["networks"].as_array().filter(|a| !a.is_empty()) {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(["network", "VNI", "slot", "ready", "subnet", "used/capacity", "peers", "reason"]);
        for n in nets {
            let g = |k: &str| n[k].as_str().unwrap_or("-").to_string();
            let num = |k: &str| n[k].as_u64().map_or("-".to_string(), |v| v.to_string());
            let ready = match (n["ready"].as_bool(), n["draining"].as_bool()) {
                (_, Some(true)) => "draining",
                (Some(true), _) => "yes",
                _ => "NO",
            };
            t.add_row([
                g("name"),
                num("vni"),
                num("slot"),
                ready.to_string(),
                g("subnet"),
                format!("{}/{}", num("used"), num("capacity")),
                num("peers"),
                g("reason"),
            ]);
        }
        println!("{t}");
    }
    for e in st["networkErrors"].as_array().into_iter().flatten() {
        println!("network problem: {}", e.as_str().unwrap_or_default());
    }
    for sk in st["skippedPeers"].as_array().into_iter().flatten() {
        println!("skipped peer: {}", sk.as_str().unwrap_or_default());
    }
    // Leases admission refused: someone wrote the store who should not have, or a row is damaged.
    for r in st["rejectedPeers"].as_array().into_iter().flatten() {
        let node = r["node"].as_str().map(|n| format!(" (node {n})")).unwrap_or_default();
        println!(
            "REJECTED lease {}{node}: {}",
            r["key"].as_str().unwrap_or_default(),
            r["reason"].as_str().unwrap_or_default()
        );
    }
    match st["lastDrift"].as_array() {
        Some(d) if !d.is_empty() => {
            let age = (now - st["lastDriftAtMs"].as_i64().unwrap_or(0)) as f64 / 1000.0;
            println!("last drift repaired {age:.0}s ago ({} entries):", d.len());
            for e in d.iter().take(20) {
                println!("  {}", e.as_str().unwrap_or_default());
            }
        }
        _ => println!("drift: none found by resyncs"),
    }
    if let Some(e) = st["lastError"].as_str() {
        println!("last error: {e}");
    }
    Ok(())
}
