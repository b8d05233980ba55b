//! The weft CNI plugin as a library; `src/bin/weft.rs` is a thin shell around [`run`].
//!
//! A request flows through three layers, each in its own module:
//! 1. **parse** — [`env`] (CNI_* variables) and [`config`] (stdin) become one typed [`command::Command`];
//!    every validation happens here, before anything changes on the node.
//! 2. **plan** — [`plan`] (pure) derives the kernel state of the attachment ([`weft_dataplane::pod::PodSpec`])
//!    and the CNI result; [`names`] derives the deterministic names and MACs; [`ipam::pool`] the address math.
//! 3. **execute** — [`verbs`] runs ADD/DEL/CHECK/GC/STATUS against the [`weft_dataplane::pod::PodNet`] trait and
//!    the crash-safe file store [`ipam::store`].
//!
//! [`spec`] holds the wire types and their per-version shapes, [`error`] the one error enum and its CNI codes,
//! [`reaper`] the detached helper that finishes veth deletion after DEL returns, [`bounded`] the size-capped,
//! non-blocking reads of stdin and the node file, [`answer`] the panic hook that still prints an error object.
// `unsafe` is denied everywhere but in `reaper` (one fork, documented there).
#![deny(unsafe_code)]

pub mod answer;
pub mod bounded;
pub mod command;
pub mod config;
pub mod env;
pub mod error;
pub mod ipam;
pub mod names;
pub mod plan;
#[allow(unsafe_code)]
pub mod reaper;
pub mod spec;
pub mod subnet;
pub mod tenant;
pub mod verbs;

pub use verbs::Ctx;

use spec::{ErrorOut, Version};
use weft_dataplane::pod::PodNet;

/// What the binary prints and whether it exits 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub ok: bool,
}

/// Parses and executes one invocation. Errors become the spec's error object, in the config's cniVersion when
/// it can be read (else the newest).
pub fn run<P: PodNet>(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8], ctx: &Ctx<P>) -> Outcome {
    match command::parse(get, stdin).and_then(|cmd| verbs::execute(ctx, &cmd)) {
        Ok(out) => Outcome { stdout: out.unwrap_or_default(), ok: true },
        Err(e) => fail(&e, stdin),
    }
}

/// The error object for `e`, in the cniVersion of `stdin` when it can be read (else the newest).
pub fn fail(e: &error::CniError, stdin: &[u8]) -> Outcome {
    let version = config::peek_version(stdin)
        .filter(|v| Version::parse(v).is_some())
        .unwrap_or_else(|| Version::LATEST.as_str().to_string());
    let out = ErrorOut { cni_version: &version, code: e.code(), msg: e.to_string(), details: e.details() };
    Outcome { stdout: serde_json::to_string(&out).expect("serializes"), ok: false }
}
