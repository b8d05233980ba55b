//! nftables through `nft -f -`: weft owns whole tables and replaces each one atomically.
//!
//! Why text through the `nft` binary and not a netlink library: the only libraries are GPL or need C libraries
//! (see shared/README), and `nft -f` already gives what matters — one file is one kernel transaction. The script
//! is `table F T {}` (create if missing, no-op if present), `delete table F T`, then the new ruleset: the kernel
//! either swaps the whole table or changes nothing, and no packet ever sees a half-written table. nft 1.0.6 has no
//! `destroy`, which is why the create-then-delete pair is there; it also makes deleting a missing table a no-op.
//!
//! The process runs inside the dataplane's network namespace: it is spawned from a thread that entered it
//! ([`run_in`]), and a child inherits the namespace of the thread that forks it.
use crate::netns::{run_in, NetnsHandle};
use crate::DataplaneError;
use std::io::Write;
use std::process::{Command, Stdio};

/// The script that replaces table `family table` by `ruleset` (which holds `table family table { ... }`).
pub fn replace_script(family: &str, table: &str, ruleset: &str) -> String {
    format!("table {family} {table} {{}}\ndelete table {family} {table}\n{ruleset}\n")
}

/// The script that deletes the table, a no-op when it is missing.
pub fn delete_script(family: &str, table: &str) -> String {
    format!("table {family} {table} {{}}\ndelete table {family} {table}\n")
}

/// Refuses names that would let a caller smuggle extra commands into the script.
pub fn check_names(family: &str, table: &str) -> Result<(), DataplaneError> {
    const FAMILIES: [&str; 6] = ["ip", "ip6", "inet", "arp", "bridge", "netdev"];
    if !FAMILIES.contains(&family) {
        return Err(DataplaneError::Nft(format!("unknown family {family:?}")));
    }
    let ok = !table.is_empty()
        && table.len() <= 64
        && table.starts_with(|c: char| c.is_ascii_alphabetic())
        && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(DataplaneError::Nft(format!("invalid table name {table:?}")));
    }
    Ok(())
}

/// Replaces the table atomically inside `ns` (blocking: call from a blocking context).
///
/// Named counters keep their values across the replacement: they are read first and declared again with
/// those values in the same transaction, so a periodic re-apply (drift repair) does not reset drop counters
/// that metrics export.
pub fn apply_table(ns: &NetnsHandle, family: &str, table: &str, ruleset: &str) -> Result<(), DataplaneError> {
    check_names(family, table)?;
    let counters = list_counters(ns, family, table)?;
    run_nft(ns, &replace_script(family, table, &carry_counters(ruleset, &counters)))
}

/// Runs a script as one transaction inside `ns` (blocking).
pub fn run_script(ns: &NetnsHandle, script: &str) -> Result<(), DataplaneError> {
    run_nft(ns, script)
}

/// Named counters of the table as (name, packets, bytes); empty when the table does not exist (blocking).
pub fn list_counters(ns: &NetnsHandle, family: &str, table: &str) -> Result<Vec<(String, u64, u64)>, DataplaneError> {
    check_names(family, table)?;
    let out = run_in(ns, || Command::new("nft").args(["-j", "list", "counters", "table", family, table]).output())?
        .map_err(|e| DataplaneError::Nft(format!("running nft: {e}")))?;
    if !out.status.success() {
        return Ok(vec![]); // no such table (yet)
    }
    Ok(parse_counters(&String::from_utf8_lossy(&out.stdout)))
}

/// A fingerprint of the table as the kernel holds it (`nft -s list table`: every chain, rule, set and element,
/// without counter values), or `None` when the table does not exist (blocking).
///
/// weft compares it with the fingerprint taken right after its own last change: anything else that edited the
/// table in between (a rule or element deleted or added by hand, another tool) shows up as a difference, without
/// parsing nft's listing or predicting its formatting.
pub fn fingerprint(ns: &NetnsHandle, family: &str, table: &str) -> Result<Option<u64>, DataplaneError> {
    check_names(family, table)?;
    let out = run_in(ns, || Command::new("nft").args(["-s", "list", "table", family, table]).output())?
        .map_err(|e| DataplaneError::Nft(format!("running nft: {e}")))?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(weft_types::digest::fnv1a(&out.stdout)))
}

/// Extracts (name, packets, bytes) from `nft -j list counters` output without a JSON dependency: each counter
/// object is `{"counter": {"family": .., "name": "N", "table": .., "handle": .., "packets": P, "bytes": B}}`.
pub fn parse_counters(json: &str) -> Vec<(String, u64, u64)> {
    let field = |obj: &str, key: &str| -> Option<String> {
        let i = obj.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = obj[i..].trim_start();
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim().trim_matches('"').to_string())
    };
    json.split("{\"counter\":")
        .skip(1)
        .filter_map(|obj| {
            let obj = &obj[..obj.find('}').map_or(obj.len(), |i| i + 1)];
            Some((field(obj, "name")?, field(obj, "packets")?.parse().ok()?, field(obj, "bytes")?.parse().ok()?))
        })
        .collect()
}

/// Declares each counter of `ruleset` that has a known value with that value (`counter N { packets P bytes B`).
pub fn carry_counters(ruleset: &str, counters: &[(String, u64, u64)]) -> String {
    let mut out = ruleset.to_string();
    for (name, packets, bytes) in counters {
        if *packets == 0 && *bytes == 0 {
            continue;
        }
        let decl = format!("counter {name} {{");
        if let Some(i) = out.find(&decl) {
            out.insert_str(i + decl.len(), &format!(" packets {packets} bytes {bytes}\n"));
        }
    }
    out
}

/// Deletes the table inside `ns`; a missing table is not an error (blocking).
pub fn delete_table(ns: &NetnsHandle, family: &str, table: &str) -> Result<(), DataplaneError> {
    check_names(family, table)?;
    run_nft(ns, &delete_script(family, table))
}

fn run_nft(ns: &NetnsHandle, script: &str) -> Result<(), DataplaneError> {
    let output = run_in(ns, || -> std::io::Result<std::process::Output> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // nft reads the whole script before acting; a write error shows up as its exit status below.
        let _ = stdin.write_all(script.as_bytes());
        drop(stdin);
        child.wait_with_output()
    })?
    .map_err(|e| DataplaneError::Nft(format!("running nft: {e}")))?;
    if !output.status.success() {
        return Err(DataplaneError::Nft(String::from_utf8_lossy(&output.stderr).trim().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_script_creates_deletes_then_defines() {
        let s = replace_script("inet", "weft", "table inet weft {\n}");
        assert_eq!(s, "table inet weft {}\ndelete table inet weft\ntable inet weft {\n}\n");
    }

    #[test]
    fn counters_are_parsed_and_carried_over() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "inet", "name": "vxlan_rejected", "table": "weft", "handle": 2, "packets": 7, "bytes": 882}}, {"counter": {"family": "inet", "name": "drop_in", "table": "weft", "handle": 3, "packets": 0, "bytes": 0}}]}"#;
        let c = parse_counters(json);
        assert_eq!(c, vec![("vxlan_rejected".into(), 7, 882), ("drop_in".into(), 0, 0)]);
        let r = carry_counters("table inet weft {\n  counter vxlan_rejected { }\n  counter drop_in { }\n}", &c);
        assert!(r.contains("counter vxlan_rejected { packets 7 bytes 882\n }"), "{r}");
        assert!(r.contains("counter drop_in { }"));
    }

    #[test]
    fn names_that_could_inject_commands_are_refused() {
        assert!(check_names("inet", "weft_nat").is_ok());
        assert!(check_names("inet", "weft; flush ruleset").is_err());
        assert!(check_names("inet", "").is_err());
        assert!(check_names("inet", "1abc").is_err());
        assert!(check_names("bogus", "weft").is_err());
    }
}
