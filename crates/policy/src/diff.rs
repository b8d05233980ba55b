//! Incremental updates. Because rules depend only on policies (see `compile.rs`), pod churn — pods starting,
//! stopping, changing labels or ports — changes set elements only. `diff_sets` then yields `delete element` /
//! `add element` commands for one `nft -f` batch (one transaction, so no packet sees a half-updated set).
//! Deletes come first so a range that is replaced by an overlapping one never conflicts.
//!
//! The commands assume the kernel holds exactly `old`; if `nft` rejects them (something changed behind our
//! back), the caller falls back to `Ruleset::render_replace` — the level-triggered repair path.

use std::fmt::Write;

use crate::nft::{Element, Ruleset};

/// `Some(commands)` (possibly empty) when `old` and `new` differ only in set elements, `None` when the structure
/// (chains, rules, counters, set declarations, table) changed and the table must be replaced.
pub fn diff_sets(old: &Ruleset, new: &Ruleset) -> Option<Vec<String>> {
    let same_sets = old.sets.len() == new.sets.len()
        && old.sets.iter().zip(&new.sets).all(|(a, b)| a.name == b.name && a.kind == b.kind && a.comment == b.comment);
    if old.table != new.table || old.chains != new.chains || old.counters != new.counters || !same_sets {
        return None;
    }
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    for (a, b) in old.sets.iter().zip(&new.sets) {
        let gone: Vec<&Element> = a.elements.difference(&b.elements).collect();
        let came: Vec<&Element> = b.elements.difference(&a.elements).collect();
        if !gone.is_empty() {
            deletes.push(command("delete", &new.table, &a.name, &gone));
        }
        if !came.is_empty() {
            adds.push(command("add", &new.table, &a.name, &came));
        }
    }
    deletes.extend(adds);
    Some(deletes)
}

fn command(verb: &str, table: &str, set: &str, elements: &[&Element]) -> String {
    let mut out = format!("{verb} element inet {table} {set} {{ ");
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{e}");
    }
    out.push_str(" }");
    out
}
