//! Incremental updates of the whole table: `plan(old, new)` is the list of nft commands that turns the table the
//! kernel holds (`old`) into `new`, touching only what differs — one policy added, changed or removed becomes its
//! own chain, sets and counters, the element changes of the shared sets (`iso`, selections, named ports) and a
//! refill of the one dispatch bucket it hashes to (see `compile.rs`). Everything goes into one `nft -f` script,
//! which is one kernel transaction: no packet sees a half-updated table.
//!
//! Order inside the script, so every reference resolves at each step: new counters, sets (with their elements)
//! and chain declarations; element deletes, then adds (a range replaced by an overlapping one never conflicts);
//! chains whose rules changed are flushed (or only appended to, when the old rules are a prefix of the new ones)
//! and refilled; chains that are gone are flushed; then they, the sets and the counters that are gone are deleted
//! (after the rules referring to them are gone, as the kernel requires).
//!
//! `None` when a change cannot be expressed in place (another table name, a set or counter whose type or comment
//! changed under the same name, a chain whose hook changed): the caller replaces the table. The commands assume
//! the kernel holds exactly `old`; if `nft` rejects them (something changed behind our back), the caller falls
//! back to the full replace — the level-triggered repair path.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::nft::{Chain, Counter, Element, Hook, Rule, Ruleset, Set};

/// One step of an incremental update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    AddCounter(Counter),
    /// A new set with its elements.
    AddSet(Set),
    /// A new chain, declared empty (its rules follow as `AddRule`).
    AddChain {
        name: String,
        hook: Option<Hook>,
        comment: Option<String>,
    },
    DeleteElements {
        set: String,
        elements: Vec<Element>,
    },
    AddElements {
        set: String,
        elements: Vec<Element>,
    },
    FlushChain(String),
    /// Appends a rule to a chain.
    AddRule {
        chain: String,
        rule: Rule,
    },
    DeleteChain(String),
    DeleteSet(String),
    DeleteCounter(String),
}

/// The commands of one update, in order, for one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub table: String,
    pub commands: Vec<Command>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Whether only set elements change (pod churn), as opposed to rules, chains, sets or counters.
    pub fn elements_only(&self) -> bool {
        self.commands.iter().all(|c| matches!(c, Command::AddElements { .. } | Command::DeleteElements { .. }))
    }

    /// The script for `nft -f` (one transaction).
    pub fn render(&self) -> String {
        let t = &self.table;
        let mut out = String::new();
        for c in &self.commands {
            let _ = match c {
                Command::AddCounter(c) => block(&mut out, t, |o| c.write_to(o)),
                Command::AddSet(s) => block(&mut out, t, |o| s.write_to(o)),
                Command::AddChain { name, hook, comment } => {
                    let chain =
                        Chain { name: name.clone(), hook: hook.clone(), comment: comment.clone(), rules: vec![] };
                    block(&mut out, t, |o| chain.write_to(o, false))
                }
                Command::DeleteElements { set, elements } => elements_command(&mut out, "delete", t, set, elements),
                Command::AddElements { set, elements } => elements_command(&mut out, "add", t, set, elements),
                Command::FlushChain(c) => writeln!(out, "flush chain inet {t} {c}"),
                Command::AddRule { chain, rule } => writeln!(out, "add rule inet {t} {chain} {rule}"),
                Command::DeleteChain(c) => writeln!(out, "delete chain inet {t} {c}"),
                Command::DeleteSet(s) => writeln!(out, "delete set inet {t} {s}"),
                Command::DeleteCounter(c) => writeln!(out, "delete counter inet {t} {c}"),
            };
        }
        out
    }
}

/// An object declaration in its own `table { }` block (which adds the object and leaves the table as it is).
fn block(out: &mut String, table: &str, f: impl FnOnce(&mut String) -> std::fmt::Result) -> std::fmt::Result {
    writeln!(out, "table inet {table} {{")?;
    f(out)?;
    out.push_str("}\n");
    Ok(())
}

fn elements_command(out: &mut String, verb: &str, table: &str, set: &str, elements: &[Element]) -> std::fmt::Result {
    write!(out, "{verb} element inet {table} {set} {{ ")?;
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write!(out, "{e}")?;
    }
    out.push_str(" }\n");
    Ok(())
}

/// The commands that turn `old` into `new` (see the module comment); `None` when the table must be replaced.
pub fn plan(old: &Ruleset, new: &Ruleset) -> Option<Plan> {
    if old.table != new.table {
        return None;
    }
    let mut adds = Vec::new();
    let (mut elem_dels, mut elem_adds) = (Vec::new(), Vec::new());
    let (mut flushes, mut rules, mut deletes) = (Vec::new(), Vec::new(), Vec::new());

    let old_counters: BTreeMap<&str, &Counter> = old.counters.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in &new.counters {
        match old_counters.get(c.name.as_str()) {
            None => adds.push(Command::AddCounter(c.clone())),
            Some(o) if o.counts != c.counts => return None,
            Some(_) => {}
        }
    }

    let old_sets: BTreeMap<&str, &Set> = old.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    for s in &new.sets {
        let Some(o) = old_sets.get(s.name.as_str()) else {
            adds.push(Command::AddSet(s.clone()));
            continue;
        };
        if o.kind != s.kind || o.comment != s.comment {
            return None;
        }
        let gone: Vec<Element> = o.elements.difference(&s.elements).copied().collect();
        let came: Vec<Element> = s.elements.difference(&o.elements).copied().collect();
        if !gone.is_empty() {
            elem_dels.push(Command::DeleteElements { set: s.name.clone(), elements: gone });
        }
        if !came.is_empty() {
            elem_adds.push(Command::AddElements { set: s.name.clone(), elements: came });
        }
    }

    let old_chains: BTreeMap<&str, &Chain> = old.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in &new.chains {
        let append = |from: usize, rules: &mut Vec<Command>| {
            rules.extend(c.rules[from..].iter().map(|r| Command::AddRule { chain: c.name.clone(), rule: r.clone() }));
        };
        match old_chains.get(c.name.as_str()) {
            None => {
                adds.push(Command::AddChain { name: c.name.clone(), hook: c.hook.clone(), comment: c.comment.clone() });
                append(0, &mut rules);
            }
            Some(o) if o.hook != c.hook || o.comment != c.comment => return None,
            Some(o) if o.rules == c.rules => {}
            Some(o) if c.rules.starts_with(&o.rules) => append(o.rules.len(), &mut rules),
            Some(_) => {
                flushes.push(Command::FlushChain(c.name.clone()));
                append(0, &mut rules);
            }
        }
    }

    let new_chains: BTreeMap<&str, &Chain> = new.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in old.chains.iter().filter(|c| !new_chains.contains_key(c.name.as_str())) {
        if !c.rules.is_empty() {
            flushes.push(Command::FlushChain(c.name.clone()));
        }
        deletes.push(Command::DeleteChain(c.name.clone()));
    }
    let new_sets: BTreeMap<&str, &Set> = new.sets.iter().map(|s| (s.name.as_str(), s)).collect();
    deletes.extend(
        old.sets.iter().filter(|s| !new_sets.contains_key(s.name.as_str())).map(|s| Command::DeleteSet(s.name.clone())),
    );
    let new_counters: BTreeMap<&str, &Counter> = new.counters.iter().map(|c| (c.name.as_str(), c)).collect();
    deletes.extend(
        old.counters
            .iter()
            .filter(|c| !new_counters.contains_key(c.name.as_str()))
            .map(|c| Command::DeleteCounter(c.name.clone())),
    );

    let mut commands = adds;
    commands.extend(elem_dels);
    commands.extend(elem_adds);
    commands.extend(flushes);
    commands.extend(rules);
    commands.extend(deletes);
    Some(Plan { table: new.table.clone(), commands })
}
