//! The last line of defence: whatever happens, the runtime gets a CNI error object on stdout.
//!
//! A panic is a bug, but a runtime that gets no JSON cannot tell a bug from a hung plugin and logs nothing
//! useful. [`install_panic_hook`] replaces the default hook with one that prints the spec's error object
//! (code [`crate::error::INTERNAL`], the panic message in `details`) and exits 1. The hook runs before the
//! unwinding or, in the release profile (`panic = "abort"`), before the abort, and it exits itself, so the
//! process never dies of SIGABRT with an empty stdout.
use crate::error::INTERNAL;
use crate::spec::ErrorOut;
use std::io::Write;

/// Installs the hook; `version` is the cniVersion to answer in (the config's, best effort).
pub fn install_panic_hook(version: String) {
    std::panic::set_hook(Box::new(move |info| {
        let out = ErrorOut {
            cni_version: &version,
            code: INTERNAL,
            msg: "internal error in the weft plugin (a bug; please report it with the details)".to_string(),
            details: info.to_string(),
        };
        let line = serde_json::to_string(&out).unwrap_or_else(|_| {
            format!(r#"{{"cniVersion":"1.1.0","code":{INTERNAL},"msg":"internal error in the weft plugin"}}"#)
        });
        // stdout is a reentrant lock: taking it on the panicking thread cannot deadlock on ourselves.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
        let _ = writeln!(std::io::stderr(), "weft: {info}");
        std::process::exit(1);
    }));
}

#[cfg(test)]
mod tests {
    /// The hook in a real process: this test re-runs its own test binary with only the child case selected;
    /// the child installs the hook and panics, the parent checks the answer on its stdout and the exit status.
    #[test]
    fn a_panic_still_answers_with_an_error_object_and_exit_1() {
        if std::env::var_os("WEFT_PANIC_CHILD").is_some() {
            super::install_panic_hook("0.4.0".into());
            let v: Vec<u8> = Vec::new();
            let _ = v[usize::from(v.is_empty())]; // out-of-bounds: a genuine panic, not an explicit one
            unreachable!("the hook exits");
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["--exact", "answer::tests::a_panic_still_answers_with_an_error_object_and_exit_1", "--nocapture"])
            .args(["--test-threads", "1"])
            .env("WEFT_PANIC_CHILD", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The test harness prints "test NAME ... " before the child's line.
        let at = stdout.find(r#"{"cniVersion""#).unwrap_or_else(|| panic!("no JSON in {stdout:?}"));
        let line = stdout[at..].lines().next().unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["code"], super::INTERNAL);
        assert!(v["msg"].as_str().unwrap().contains("internal error"));
        assert!(v["details"].as_str().unwrap().contains("index out of bounds"), "{v}");
    }
}
