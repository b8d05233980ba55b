//! Fwmark slots: which 8-bit slot (mark `S << 24`, mask `0xff00_0000`) each tenant network uses on this node.
//!
//! Node-local and never in the store: the slot only has to be stable on this node, because the isolation
//! firewall sets it and the rules read it in the same kernel. It must never change under running pods (a remap
//! between the firewall's mark and the rule's lookup would send a network's packets into another's table for a
//! moment), so: on start the map is recovered from the kernel's own rules (`fwmark S<<24/0xff000000 lookup T`,
//! T encodes the VNI); while running a network keeps its slot until its state is gone; a new network takes the
//! lowest free slot.
use std::collections::{BTreeMap, BTreeSet};
use weft_dataplane::networks::{is_tenant_table, Rule};

pub const MARK_MASK: u32 = 0xff00_0000;
pub const MAX_SLOT: u8 = 255;

pub fn mark_of(slot: u8) -> u32 {
    u32::from(slot) << 24
}

/// VNI → slot as the kernel's rules say. A rule that does not decode cleanly (not weft's mask, slot 0, a
/// non-tenant table) is ignored; of two slots claiming one VNI (or one slot claimed twice) the lowest wins and
/// the other rule is left to the diff, which removes it.
pub fn recover(rules: &BTreeSet<Rule>) -> BTreeMap<u32, u8> {
    let mut out: BTreeMap<u32, u8> = BTreeMap::new();
    let mut taken: BTreeSet<u8> = BTreeSet::new();
    for r in rules {
        let Some((mark, mask)) = r.fwmark else { continue };
        if mask != MARK_MASK || mark & !MARK_MASK != 0 || !is_tenant_table(r.table) {
            continue;
        }
        let slot = (mark >> 24) as u8;
        let vni = r.table & 0x00ff_ffff;
        if slot == 0 || taken.contains(&slot) || out.contains_key(&vni) {
            continue;
        }
        taken.insert(slot);
        out.insert(vni, slot);
    }
    out
}

/// Gives every VNI of `wanted` a slot: the one it has, else the lowest free one. Slots of VNIs no longer
/// wanted are released. Returns the new map and the VNIs left without a slot (more than 255 networks).
pub fn assign(current: &BTreeMap<u32, u8>, wanted: &BTreeSet<u32>) -> (BTreeMap<u32, u8>, Vec<u32>) {
    let mut out: BTreeMap<u32, u8> =
        current.iter().filter(|(v, _)| wanted.contains(v)).map(|(v, s)| (*v, *s)).collect();
    let mut used: BTreeSet<u8> = out.values().copied().collect();
    let mut missing = Vec::new();
    for &vni in wanted {
        if out.contains_key(&vni) {
            continue;
        }
        match (1..=MAX_SLOT).find(|s| !used.contains(s)) {
            Some(s) => {
                used.insert(s);
                out.insert(vni, s);
            }
            None => missing.push(vni),
        }
    }
    (out, missing)
}

/// The (VNI, slot) pairs of `next` that `current` did not have: slots given to a network now, whose conntrack
/// zone may still hold entries of the network that had the slot before.
pub fn newly_assigned(current: &BTreeMap<u32, u8>, next: &BTreeMap<u32, u8>) -> Vec<(u32, u8)> {
    next.iter().filter(|(v, s)| current.get(v) != Some(s)).map(|(v, s)| (*v, *s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(slot: u32, vni: u32) -> Rule {
        Rule {
            v6: false,
            priority: 1000,
            fwmark: Some((slot << 24, MARK_MASK)),
            iif: None,
            dst: None,
            table: 0x5700_0000 | vni,
        }
    }

    #[test]
    fn recovered_from_rules_and_kept_on_restart() {
        let rules: BTreeSet<Rule> = [rule(3, 100), rule(1, 200), rule(3, 300), rule(0, 400)].into();
        let rec = recover(&rules);
        // slot 3 twice: the first rule in order (vni 100) keeps it; slot 0 is not a slot.
        assert_eq!(rec, [(100, 3), (200, 1)].into());
        let mut foreign = rule(5, 500);
        foreign.table = 254;
        assert!(recover(&[foreign].into()).is_empty());

        // A restart with one more network: the recovered ones keep their slots, the new one takes the lowest free.
        let (m, missing) = assign(&rec, &[100, 200, 150].into());
        assert_eq!(m, [(100, 3), (150, 2), (200, 1)].into());
        assert!(missing.is_empty());
    }

    #[test]
    fn never_remapped_while_running_released_when_gone() {
        let (m, _) = assign(&BTreeMap::new(), &[10, 20, 30].into());
        assert_eq!(m, [(10, 1), (20, 2), (30, 3)].into());
        // 10 goes away: 20 and 30 keep theirs; a new network reuses the freed slot 1, and only it is new.
        let (m2, _) = assign(&m, &[20, 30, 40].into());
        assert_eq!(m2, [(20, 2), (30, 3), (40, 1)].into());
        assert_eq!(newly_assigned(&m, &m2), [(40, 1)]);
        assert!(newly_assigned(&m2, &m2).is_empty(), "a network keeping its slot is never flushed");
    }

    #[test]
    fn more_than_255_networks_are_reported() {
        let wanted: BTreeSet<u32> = (1..=300).collect();
        let (m, missing) = assign(&BTreeMap::new(), &wanted);
        assert_eq!((m.len(), missing.len()), (255, 45));
    }
}
