//! `weft`, the CNI plugin binary: reads CNI_* and stdin, prints the result or the error object, exits 0 or 1.
//! All logic lives in the `weft_cni` library.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;
use weft_cni::bounded::{load_node_file, read_capped, MAX_INPUT};
use weft_cni::error::CniError;
use weft_cni::spec::Version;
use weft_cni::{answer, config, reaper, Ctx};
use weft_dataplane::pod::{NetlinkPodNet, PodNet};

fn main() -> ExitCode {
    // Before anything can panic: a panic must still answer with an error object (in 1.1.0 until stdin is read).
    answer::install_panic_hook(Version::LATEST.as_str().to_string());
    let get = |k: &str| std::env::var(k).ok();
    let pod = NetlinkPodNet::new();
    if let Some((index, name)) = reaper::requested(&get) {
        return match pod.delete_index(index, &name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let out = match read_capped(std::io::stdin().lock(), MAX_INPUT) {
        Ok(stdin) => {
            if let Some(v) = config::peek_version(&stdin).filter(|v| Version::parse(v).is_some()) {
                answer::install_panic_hook(v);
            }
            let log = |lines: &[String]| lines.iter().for_each(|l| eprintln!("{l}"));
            let ctx = Ctx {
                pod: &pod,
                reap: &reaper::spawn,
                load_node_file: &load_node_file,
                log: &log,
                now: SystemTime::now(),
            };
            weft_cni::run(&get, &stdin, &ctx)
        }
        // Oversized or unreadable: answered as "cannot decode the config" without parsing any of it.
        Err(e) => weft_cni::fail(&CniError::Decode(format!("stdin: {e}")), b""),
    };
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
