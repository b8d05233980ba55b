//! weft-policy: Kubernetes `networking.k8s.io/v1` NetworkPolicy compiled into one nftables table per node.
//!
//! Pure: no kernel, no I/O. The agent feeds it the model from the store and applies the output with `nft -f`;
//! the CLI uses [`explain`]. Layout, in the order data flows:
//! - [`model`]: serde types mirroring the Kubernetes objects, plus pods and namespaces as the store keeps them.
//! - `parse` / `validate`: manifests (multi-document YAML, JSON, Lists) → validated policies.
//! - `selector`: label selector semantics.
//! - `ranges`: ipBlock `cidr` minus `except` as disjoint ranges (nft interval sets cannot subtract), and the union
//!   that merges every ipBlock of a rule into one interval set.
//! - [`k8s_names`]: Kubernetes name, label and port-name syntax, checked on policies, pods and namespaces.
//! - [`eval`]: resolves policies against the model once — the single source of truth for selection, peers and
//!   named ports that both the compiler and `explain` use, so they cannot disagree.
//! - [`compile()`] → [`nft::Ruleset`]: structured table (chains, sets, counters) rendered to nft text; see
//!   `compile.rs` for the table design and why rule count does not grow with pods.
//! - `naming`: stable nft names (hashes of what an object stands for), so one change renames nothing else.
//! - [`plan()`]: the in-place update from the table the kernel holds to a new one (pod churn, and one policy
//!   added/changed/removed, as a few commands in one transaction); [`diff_sets`]: the element-only subset.
//! - [`explain()`]: which policy and rule allow or deny a connection.
//!
//! Semantics chosen where Kubernetes leaves room: ipBlock matches by address, pod addresses included (like
//! Calico); traffic between a node and its own pods is never filtered (probes keep working, and egress policy
//! does not restrict pod → own node); replies of allowed connections pass through conntrack; same-node and
//! cross-node traffic get the same checks (egress on the source's node, ingress on the destination's). Service
//! traffic is checked after kube-proxy's DNAT (the forward hook sees the backend pod). Namespaces always carry
//! the implied `kubernetes.io/metadata.name` label. The model should not contain hostNetwork pods (their
//! addresses are the node's, and Kubernetes does not apply policy to them).
//!
//! Operating notes for the agent:
//! - Apply `Ruleset::render_replace()` with `nft -f` (atomic) the first time; afterwards apply
//!   `plan(old, new).render()` when it returns `Some`, and fall back to the full replace if `nft` rejects it.
//! - Models from the store: call `Pod::validate` / `Namespace::validate` and skip (and report) what fails;
//!   parsing already validates policies.
//! - New pods: with `default_deny_new_pods` (default), forwarded traffic from/to `wf*` interfaces whose address
//!   is not in `@ready_v4/_v6` (the node's pods in the model) is dropped, so a pod is default-deny until the
//!   agent has compiled it; the CNI plugin does not need to wait for the agent.
//! - Metrics: `drop_in`/`drop_out`/`drop_unready` count all drops; `drop_in_<P>`/`drop_out_<P>` count drops of
//!   pods selected by policy P ([`nft::Ruleset::counters`] maps names to policies). A drop is the union of all
//!   selecting policies saying no, so it increments the counter of every policy selecting the pod. In-place
//!   updates keep counters; a policy's counters start at zero when it is added.
#![forbid(unsafe_code)]

mod compile;
mod diff;
mod error;
pub mod eval;
mod explain;
pub mod isolation;
pub mod k8s_names;
pub mod model;
mod naming;
pub mod nft;
mod parse;
pub mod plan;
mod ranges;
mod selector;
mod validate;

pub use compile::{compile, CompileOptions, BUCKETS};
pub use diff::diff_sets;
pub use error::{PolicyError, Problem};
pub use eval::Direction;
pub use explain::{
    explain, explain_endpoints, explain_in, explain_ips, DirectionVerdict, Endpoint, ExplainError, Verdict,
};
pub use model::*;
pub use nft::Ruleset;
pub use parse::{parse_policies_json, parse_policies_yaml};
pub use plan::{plan, Command, Plan};
pub use ranges::AddrRange;
