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
