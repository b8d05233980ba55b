//! The lab these tests drive: `weftctl lab up` with tenant networks, brought down on drop (also on panic), and
//! the lab's pods as the tests need them (netns, address, network).
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use weft_e2e::{bin, unique};

pub struct Lab {
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Pod {
    /// `namespace/name`.
    pub key: String,
    pub node: String,
    pub netns: String,
    pub ip: String,
    /// None: the default network.
    pub network: Option<String>,
}

impl Pod {
    pub fn net(&self) -> &str {
        self.network.as_deref().unwrap_or("default")
    }
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

impl Lab {
    /// `weftctl lab up` with `args`; panics with the output and agent logs when it fails.
    pub fn up(tag: &str, args: &[&str]) -> Lab {
        let lab = Lab { name: format!("{tag}{}", unique()) };
        let out = lab.ctl(&[&["lab", "up", "--lease-ttl", "4s"][..], args].concat());
        let said = text(&out);
        println!("{said}");
        assert!(out.status.success(), "lab up failed:\n{said}\n{}", lab.logs());
        lab
    }

    /// `weftctl --lab NAME ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("weftctl")).args(["--lab", &self.name]).args(args).output().expect("weftctl")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(out.status.success(), "weftctl {}: {}\n{}", args.join(" "), text(&out), self.logs());
        text(&out)
    }

    pub fn refused(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(!out.status.success(), "weftctl {} should have been refused: {}", args.join(" "), text(&out));
        text(&out)
    }

    pub fn dir(&self) -> PathBuf {
        PathBuf::from("/run/weft-lab").join(&self.name)
    }

    pub fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join("state.json")).expect("lab state")).expect("json")
    }

    pub fn node_ns(&self, i: usize) -> String {
        self.state()["nodes"][i]["ns"].as_str().expect("node ns").to_string()
    }

    pub fn node_file(&self, node: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir().join(node).join("node.json")).unwrap_or_default())
            .unwrap_or(Value::Null)
    }

    /// Every pod, in the lab state's order (node by node).
    pub fn pods(&self) -> Vec<Pod> {
        let st = self.state();
        let mut out = vec![];
        for n in st["nodes"].as_array().expect("nodes") {
            for p in n["pods"].as_array().expect("pods") {
                out.push(Pod {
                    key: format!("{}/{}", p["namespace"].as_str().unwrap(), p["name"].as_str().unwrap()),
                    node: n["name"].as_str().unwrap().to_string(),
                    netns: p["ns"].as_str().unwrap().to_string(),
                    ip: p["ip"].as_str().unwrap_or_default().to_string(),
                    network: p["network"].as_str().map(str::to_string),
                });
            }
        }
        out
    }

    pub fn pod(&self, key: &str) -> Pod {
        self.pods().into_iter().find(|p| p.key == key).unwrap_or_else(|| panic!("no pod {key}"))
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=4 {
            if let Ok(l) = std::fs::read_to_string(self.dir().join(format!("node{i}/weftd.log"))) {
                let lines: Vec<&str> = l.lines().collect();
                s += &format!("--- node{i} weftd.log (tail)\n{}\n", lines[lines.len().saturating_sub(25)..].join("\n"));
            }
        }
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let out = Command::new(bin("weftctl")).args(["lab", "down", "--lab", &self.name]).output();
        if let Ok(o) = out {
            if !o.status.success() {
                eprintln!("lab down failed: {}", text(&o));
            }
        }
    }
}

/// `ip netns exec NS CMD...`.
pub fn ns_exec(ns: &str, cmd: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().expect("ip netns exec")
}

/// Runs `nft -f -` with `script` inside `ns`, panicking on failure.
pub fn nft(ns: &str, script: &str) {
    let out = ns_exec(ns, &["nft", script]);
    assert!(out.status.success(), "nft in {ns}: {}", text(&out));
}

/// Packets of the named counter `name` of table `inet probe` in `ns`.
pub fn counter(ns: &str, name: &str) -> u64 {
    let out = ns_exec(ns, &["nft", "-j", "list", "counter", "inet", "probe", name]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["nftables"].as_array().into_iter().flatten().find_map(|o| o["counter"]["packets"].as_u64()).unwrap_or(0)
}
