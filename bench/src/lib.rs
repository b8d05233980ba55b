//! What several benchmarks share: the binaries beside them and a `weftctl lab` that goes down when dropped.

use std::process::Command;

/// A binary of this build (the benchmarks run from target/release, beside weftctl, weftd, weft).
pub fn bin(name: &str) -> std::path::PathBuf {
    std::env::current_exe().expect("exe").parent().expect("dir").join(name)
}

/// A lab brought up by the benchmark; `weftctl lab down` on drop, also when the benchmark fails.
pub struct Lab(pub String);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(bin("weftctl")).args(["lab", "down", "--name", &self.0]).output();
    }
}
