//! `weft`, the CNI plugin binary: reads CNI_* and stdin, prints the result or the error object, exits 0 or 1.
//! All logic lives in the `weft_cni` library.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::SystemTime;
use weft_cni::{reaper, Ctx};
use weft_dataplane::pod::{NetlinkPodNet, PodNet};
use weft_types::node_file::NodeFile;

fn main() -> ExitCode {
    let get = |k: &str| std::env::var(k).ok();
    let pod = NetlinkPodNet::new();
    if let Some((index, name)) = reaper::requested(&get) {
        return match pod.delete_index(index, &name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("weft: reading stdin: {e}");
    }
    let ctx = Ctx { pod: &pod, reap: &reaper::spawn, load_node_file: &NodeFile::load, now: SystemTime::now() };
    let out = weft_cni::run(&get, &stdin, &ctx);
    let mut stdout = std::io::stdout().lock();
    if !out.stdout.is_empty() {
        let _ = writeln!(stdout, "{}", out.stdout);
    }
    let _ = stdout.flush();
    if out.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
